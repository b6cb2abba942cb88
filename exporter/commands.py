"""Run a command with a timeout that really holds.

`subprocess.run(timeout=...)` kills the child but then waits for its pipes to close, which a
grandchild (a wrapper script's `sleep`) can hold open forever. We start the command in its own
process group and kill the whole group when time is up.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Sequence


class CommandError(RuntimeError):
    """The command could not be started or did not finish in time."""


def run_command(argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
    except OSError as error:
        raise CommandError(f"cannot run {argv[0]}: {error.strerror}") from None
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        raise CommandError(f"{' '.join(argv)} did not finish within {timeout:.1f}s") from None
    except BaseException:
        _kill_group(process)
        raise
    return subprocess.CompletedProcess(list(argv), process.returncode, stdout, stderr)


def _kill_group(process: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    # The group is dead, so the pipes close; this wait is short.
    process.communicate()
