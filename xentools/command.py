"""Run a toolstack command (xl, xenperf) with a timeout that really holds.

`subprocess.run(timeout=...)` kills the child but then waits for its pipes to close, which a
grandchild (a wrapper script's `sleep`, a hung helper) can hold open forever. The command is
started in its own session and, when time is up, its whole process group is killed. The
exporter's readers and `xentools.xl.Xl` both run commands through `run_command`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Sequence


class CommandError(RuntimeError):
    """The command could not be started or did not finish in time."""


class CommandNotStarted(CommandError):
    """The program could not be executed (missing, not executable)."""


class CommandTimeout(CommandError):
    """The command did not finish within its timeout; its process group was killed."""

    def __init__(self, argv: Sequence[str], timeout: float) -> None:
        super().__init__(f"{' '.join(argv)} did not finish within {timeout:.1f}s")
        self.timeout = timeout


def run_command(argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run `argv` (no shell) with stdin closed; its exit status is the caller's to judge."""
    argv = list(argv)
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
    except OSError as error:
        raise CommandNotStarted(f"cannot run {argv[0]}: {error.strerror}") from None
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        raise CommandTimeout(argv, timeout) from None
    except BaseException:
        _kill_group(process)
        raise
    return subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)


def _kill_group(process: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    # The group is dead, so the pipes close; this wait is short.
    process.communicate()
