"""Helpers every test module may import: `from tests.support import require_root`.

A test that cannot run here (no root, no binary, no namespaces) skips on a developer's machine
but fails under CI=true: a green CI run that skipped would be a lie.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from xensim.poll import wait_until

T = TypeVar("T")

IN_CI = os.environ.get("CI") == "true"
# `make test-fast` (JUDICATOR_LANE=fast): the daily lane leaves out every test that needs root or
# a running Prometheus/Alertmanager; `make test`, which CI runs, leaves out nothing.
FAST_LANE = os.environ.get("JUDICATOR_LANE") == "fast"
SERVICE_BINARIES = frozenset({"prometheus", "prometheus-alertmanager"})


def require(condition: object, why: str) -> None:
    """Skip (or, under CI=true, fail) the calling test unless `condition` holds."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"cannot run under CI=true: {why}")
    pytest.skip(why)


def outside_fast_lane(why: str) -> None:
    """Skips the calling test in the fast lane, which is never CI's."""
    if FAST_LANE:
        if IN_CI:
            pytest.fail("CI runs `make test`, not the fast lane (JUDICATOR_LANE=fast)")
        pytest.skip(f"fast lane: {why} (`make test` runs it)")


def require_root() -> None:
    outside_fast_lane("needs root")
    require(os.geteuid() == 0, "needs root (network namespaces, tc, cgroups)")


def require_binary(name: str) -> str:
    if name in SERVICE_BINARIES:
        outside_fast_lane(f"starts {name}")
    path = shutil.which(name)
    require(path, f"needs the {name} binary on PATH")
    assert path is not None
    return path


REPO = Path(__file__).resolve().parents[1]
# The Makefile exports these; a plain `.venv/bin/pytest` from the repository falls back to them.
XENPERF = Path(
    os.environ.get("XENSIM_XENPERF") or REPO / ".cache/xen/root/usr/lib/xen-4.17/bin/xenperf"
)
STUB = Path(os.environ.get("XENSIM_STUB_DIR") or REPO / "build/stub") / "libxenctrl.so.4.17"


def assert_promtool_accepts_rules(path: Path) -> None:
    """`promtool check rules` passes on the rules file at `path`."""
    result = subprocess.run(
        [require_binary("promtool"), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def require_simulated_host() -> None:
    """Root, the real xenperf and the stub libxenctrl: what `judicator-sim up` needs."""
    require_root()
    require(XENPERF.exists(), f"needs the real xenperf at {XENPERF} (make deps)")
    require(STUB.exists(), f"needs the stub at {STUB} (make deps)")


def sim(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Runs `judicator-sim ARGS`; with `check`, a failure raises with its output quoted."""
    result = subprocess.run(
        [sys.executable, "-m", "xensim.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"judicator-sim {' '.join(args)}: {result.stderr}{result.stdout}")
    return result


def wait_for(condition: Callable[[], T], timeout: float, what: str) -> T:
    """`xensim.poll.wait_until` at a test's pace: a condition's exceptions fail the test at once."""
    return wait_until(condition, timeout=timeout, what=what, interval=0.05, retry_on=())


def project_packages() -> set[str]:
    """The repository's top-level Python packages."""
    return {p.name for p in REPO.iterdir() if (p / "__init__.py").is_file()}


def imported_project_packages(*roots: str) -> set[str]:
    """`roots` and every project package they import, directly or through one another (read
    from the sources: what an image must carry for them to start)."""
    needed = set(roots)
    pending = list(roots)
    while pending:
        found: set[str] = set()
        for source in (REPO / pending.pop()).rglob("*.py"):
            for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    found.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    found.add(node.module.split(".")[0])
        for package in (found & project_packages()) - needed:
            needed.add(package)
            pending.append(package)
    return needed
