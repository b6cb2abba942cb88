import sys

from policylearn.cli import main

sys.exit(main())
