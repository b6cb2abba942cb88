"""Run a host command (xl, xenperf, tc, an operator's script) with a timeout that really holds.

This is the one runner of the product: the exporter's readers, the toolstack and the
remediator's `SubprocessRunner` all start their commands here.

`subprocess.run(timeout=...)` kills the child but then waits for its pipes to close, which a
grandchild (a wrapper script's `sleep`, a hung helper) can hold open forever, and the
grandchild lives on to act after the caller gave up. The command is started in its own session
and, when time is up, its whole process group is killed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence


class CommandError(RuntimeError):
    """The command could not be started or did not finish in time."""


class CommandNotStarted(CommandError):
    """The program could not be executed (missing, not executable)."""


class CommandTimeout(CommandError):
    """The command did not finish within its timeout; its process group was killed."""

    def __init__(self, argv: Sequence[str], timeout: float) -> None:
        super().__init__(f"{' '.join(argv)} did not finish within {timeout:.1f}s")
        self.timeout = timeout


def run_command(
    argv: Sequence[str],
    timeout: float,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `argv` (no shell) with `stdin` as its input (None: closed); its exit status is the
    caller's to judge.

    `env` None inherits this process's environment. Undecodable output is replaced, not fatal.
    """
    argv = list(argv)
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            env=None if env is None else dict(env),
            start_new_session=True,
        )
    except OSError as error:
        raise CommandNotStarted(f"cannot run {argv[0]}: {error.strerror}") from None
    try:
        stdout, stderr = process.communicate(stdin, timeout=timeout)
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
