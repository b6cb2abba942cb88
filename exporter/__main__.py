"""`python -m exporter`: the same as `judicator-exporter`."""

import sys

from exporter.cli import main

sys.exit(main())
