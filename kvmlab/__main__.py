import sys

from kvmlab.cli import main

sys.exit(main())
