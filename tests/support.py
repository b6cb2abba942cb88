"""Helpers every test module may import: `from tests.support import require_root`.

A test that cannot run here (no root, no binary, no namespaces) skips on a developer's machine
but fails under CI=true: a green CI run that skipped would be a lie.
"""

from __future__ import annotations

import os
import shutil

import pytest

IN_CI = os.environ.get("CI") == "true"


def require(condition: object, why: str) -> None:
    """Skip (or, under CI=true, fail) the calling test unless `condition` holds."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"cannot run under CI=true: {why}")
    pytest.skip(why)


def require_root() -> None:
    require(os.geteuid() == 0, "needs root (network namespaces, tc, cgroups)")


def require_binary(name: str) -> str:
    path = shutil.which(name)
    require(path, f"needs the {name} binary on PATH")
    assert path is not None
    return path
