"""The remediator's view of the one runner (`xentools.command.run_command`): argv lists, never
a shell, always with a timeout that kills the command's whole process group, so an operator
script's children cannot outlive it and act after a rollback."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Protocol

from remediator.plan import Command
from xentools.command import CommandError, CommandTimeout, run_command

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int  # -1 when it could not start or timed out
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def describe(self) -> str:
        if self.timed_out:
            return f"{self.argv[0]} timed out after {self.seconds:.1f}s"
        tail = (self.stderr or self.stdout).strip().splitlines()[-1:] or [""]
        return f"{self.argv[0]} exited {self.returncode}: {tail[0][:200]}"


class Runner(Protocol):
    def run(self, command: Command) -> Result: ...


class Observer(Protocol):
    """Notified of every command run, for metrics."""

    def __call__(self, result: Result) -> None: ...


class SubprocessRunner:
    """Runs argv lists with a timeout; the child gets a minimal environment plus the command's."""

    def __init__(self, on_result: Observer | None = None) -> None:
        self._on_result = on_result

    def run(self, command: Command) -> Result:
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LC_ALL": "C"}
        env.update(command.env)
        started = time.monotonic()
        try:
            completed = run_command(command.argv, command.timeout, env=env)
            result = Result(
                argv=command.argv,
                returncode=completed.returncode,
                stdout=completed.stdout,
                stderr=completed.stderr,
                seconds=time.monotonic() - started,
            )
        except CommandTimeout:
            result = Result(command.argv, -1, "", "", time.monotonic() - started, timed_out=True)
        except CommandError as error:
            result = Result(command.argv, -1, "", str(error), time.monotonic() - started)
        log.debug("ran %s: rc=%s in %.3fs", command.argv, result.returncode, result.seconds)
        if self._on_result is not None:
            self._on_result(result)
        return result
