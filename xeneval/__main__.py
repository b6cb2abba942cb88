import sys

from xeneval.cli import main

sys.exit(main())
