"""`python -m xensim`: the same as `judicator-sim`."""

import sys

from xensim.cli import main

sys.exit(main())
