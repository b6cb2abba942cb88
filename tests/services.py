"""Real Prometheus and Alertmanager processes for tests, started and always stopped.

    with run_prometheus(config, rule_files=[...]) as prom:
        wait_until(lambda: prom.query("up == 1"), timeout=30, what="a successful scrape")

The launch code lives in `xensim.services` (the demo uses it too: one piece of code, not two); this
module only adds the tests' rule that a missing binary skips locally and fails under CI=true.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.support import require_binary
from xensim import services
from xensim.poll import wait_until
from xensim.services import (
    ALERTMANAGER_BINARY,
    PROMETHEUS_BINARY,
    READY_TIMEOUT_SECONDS,
    Alertmanager,
    Prometheus,
    Sample,
    ServiceDied,
    ServiceError,
)

__all__ = [
    "Alertmanager",
    "Prometheus",
    "Sample",
    "ServiceDied",
    "ServiceError",
    "run_alertmanager",
    "run_prometheus",
    "wait_until",
]


def run_prometheus(
    config: str | Mapping[str, Any],
    *,
    rule_files: Sequence[str | os.PathLike[str]] = (),
    alertmanager: str | None = None,
    netns: str | None = None,
    extra_args: Sequence[str] = (),
    ready_timeout: float = READY_TIMEOUT_SECONDS,
    storage_path: Path | None = None,
) -> contextlib.AbstractContextManager[Prometheus]:
    """`xensim.services.run_prometheus`, skipping (failing under CI) without the binary."""
    require_binary(PROMETHEUS_BINARY)
    return services.run_prometheus(
        config,
        rule_files=rule_files,
        alertmanager=alertmanager,
        netns=netns,
        extra_args=extra_args,
        ready_timeout=ready_timeout,
        storage_path=storage_path,
    )


def run_alertmanager(
    config: str | Mapping[str, Any],
    *,
    files: Mapping[str, str] | None = None,
    netns: str | None = None,
    extra_args: Sequence[str] = (),
    ready_timeout: float = READY_TIMEOUT_SECONDS,
) -> contextlib.AbstractContextManager[Alertmanager]:
    """`xensim.services.run_alertmanager`, skipping (failing under CI) without the binary."""
    require_binary(ALERTMANAGER_BINARY)
    return services.run_alertmanager(
        config,
        files=files,
        netns=netns,
        extra_args=extra_args,
        ready_timeout=ready_timeout,
    )
