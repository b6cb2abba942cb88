"""Fixtures shared by every test directory (pytest finds them here; never import this module).

Helpers that are not fixtures live in `tests/support.py` (requirements, `sim`, `wait_for`).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.support import require_root, require_simulated_host
from xensim.simhost import SimHost, simulated_host


@pytest.fixture
def sim_host() -> Iterator[SimHost]:
    """A fresh simulated host for one test: 4 CPUs, Domain-0 and guest1..2, Dom0 in a netns."""
    require_simulated_host()
    with simulated_host(f"tc{os.getpid() % 100_000_000}", dom0_netns=True, guests=2) as host:
        yield host


@pytest.fixture
def netns() -> Iterator[str]:
    """An empty network namespace of this test's own, deleted afterwards."""
    require_root()
    name = f"test-{os.getpid()}-{int(time.monotonic() * 1000) % 100000}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False, timeout=10)
