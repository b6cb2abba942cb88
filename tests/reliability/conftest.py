"""Reliability tests: `soak`-marked ones are long and run only under `make soak`
(JUDICATOR_SOAK=1); `make test` runs the bounded versions beside them."""

from __future__ import annotations

import os

import pytest

SOAK = os.environ.get("JUDICATOR_SOAK") == "1"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "soak: long reliability run, only under `make soak`")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if SOAK:
        return
    # Deselected, not skipped: a soak run is not a test that could not run here.
    kept = [item for item in items if item.get_closest_marker("soak") is None]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in kept])
        items[:] = kept
