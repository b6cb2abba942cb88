"""The lab's end-to-end test runs only under `make lab-test` (XENLAB_TEST=1), not in `make test`
nor CI yet (docs/lab.md, "CI": it has not passed; its time budgets depend on the machine's load).
It needs `make lab-deps` first. A plain `pytest` collects only the lab's pure unit tests here."""

import os

collect_ignore_glob = [] if os.environ.get("XENLAB_TEST") == "1" else ["test_lab_e2e.py"]
