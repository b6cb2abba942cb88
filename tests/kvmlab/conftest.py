"""Prints the KVM lab's record of attempts (kvmlab.flood: emulation faults retried) at the end
of a session that ran the end-to-end module, so every run's retries are in its output."""

from __future__ import annotations

import json
import time

import pytest

from kvmlab.paths import DEFAULT_CACHE, KvmLabPaths

_SESSION_START = time.time()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    record_file = KvmLabPaths(DEFAULT_CACHE).retries_file
    if not record_file.exists() or record_file.stat().st_mtime < _SESSION_START:
        return
    record = json.loads(record_file.read_text())
    terminalreporter.section("KVM lab attempts")
    terminalreporter.write_line(
        f"runs: {record['attempts']}, retries after an emulation fault: {record['retries']}, "
        f"wall time {record.get('wall_s')} s"
    )
    for fault in record["faults"]:
        terminalreporter.write_line(f"  fault: {fault[:500]}")
