"""`python -m xenlab`: the lab's command line (xenlab.cli)."""

import sys

from xenlab.cli import main

sys.exit(main())
