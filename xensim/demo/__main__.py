"""`python -m xensim.demo`: see xensim.demo.cli."""

import sys

from xensim.demo.cli import main

sys.exit(main())
