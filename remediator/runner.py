"""The remediator's view of the one runner (`xentools.command.run_command`): argv lists, never
a shell, always with a timeout that kills the command's whole process group, so an operator
script's children cannot outlive it and act after a rollback.

`batched` joins consecutive tc (or ip) commands of a plan into one `tc -batch -` (`ip -batch
-`): one process instead of one per step. The lines are the argv lists' words; a word a batch
line could not carry as is (a blank, a quote) keeps its command out of any batch. tc and ip
stop at the first failing line and exit non-zero, as running the commands one by one stops at
the first failure."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
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


BATCH_TOOLS = frozenset({"tc", "ip"})


def batch_word(word: str) -> bool:
    """Can `word` be one token of a `tc -batch`/`ip -batch` line as it is? (No blank, quote,
    backslash or comment sign; Linux refuses blanks in interface names anyway.)"""
    return bool(word) and not any(c.isspace() or c in "\"'\\#" for c in word)


def _batchable(command: Command) -> bool:
    return (
        os.path.basename(command.argv[0]) in BATCH_TOOLS
        and not command.env
        and command.stdin is None
        and len(command.argv) > 1
        and not command.argv[1].startswith("-")
        and all(batch_word(word) for word in command.argv[1:])
    )


def batched(commands: Sequence[Command]) -> list[Command]:
    """The commands, each run of two or more consecutive batchable commands of one program
    (and one timeout) joined into one `PROGRAM -batch -` whose timeout is their sum."""
    groups: list[list[Command]] = []
    for command in commands:
        last = groups[-1][-1] if groups else None
        if (
            last is not None
            and _batchable(command)
            and _batchable(last)
            and last.argv[0] == command.argv[0]
        ):
            groups[-1].append(command)
        else:
            groups.append([command])
    return [group[0] if len(group) == 1 else _join(group) for group in groups]


def _join(group: Sequence[Command]) -> Command:
    return replace(
        group[0],
        argv=(group[0].argv[0], "-batch", "-"),
        timeout=sum(c.timeout for c in group),
        stdin="".join(" ".join(c.argv[1:]) + "\n" for c in group),
    )


def as_batch(command: Command, program: str) -> Command | None:
    """`command` as a `PROGRAM -batch -` (it is one, or one batchable line of PROGRAM); None
    when it is neither."""
    if os.path.basename(command.argv[0]) != program:
        return None
    if command.argv[1:] == ("-batch", "-") and command.stdin is not None:
        return command
    return _join([command]) if _batchable(command) else None


def merged(plans: Sequence[Sequence[Command]]) -> list[Command]:
    """The plans of several throttles (on different domains: their devices are disjoint) as one
    list, each plan's own order kept: every plan's first run of one program's commands, then
    every plan's second, and so on; within a step the runs of one program are next to each
    other. `batched` then makes each step one `ip -batch -` and one `tc -batch -` whatever the
    number of plans (shaping a vif: ip, then tc)."""
    runs: list[list[list[Command]]] = []
    for plan in plans:
        own: list[list[Command]] = []
        for command in plan:
            if (
                own
                and _batchable(command)
                and _batchable(own[-1][-1])
                and (own[-1][-1].argv[0] == command.argv[0])
            ):
                own[-1].append(command)
            else:
                own.append([command])
        runs.append(own)
    commands: list[Command] = []
    for step in range(max((len(own) for own in runs), default=0)):
        at_step = [own[step] for own in runs if step < len(own)]
        for run in sorted(at_step, key=lambda run: run[0].argv[0]):  # stable: plan order kept
            commands += run
    return commands


class Observer(Protocol):
    """Notified of every command run, for metrics."""

    def __call__(self, result: Result) -> None: ...


class SubprocessRunner:
    """Runs argv lists with a timeout; the child gets a minimal environment plus the command's.

    `batches`: the engine may hand it `batched` commands (real tc and ip read batches)."""

    batches = True

    def __init__(self, on_result: Observer | None = None) -> None:
        self._on_result = on_result

    def run(self, command: Command) -> Result:
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LC_ALL": "C"}
        env.update(command.env)
        started = time.monotonic()
        try:
            completed = run_command(command.argv, command.timeout, env=env, stdin=command.stdin)
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
