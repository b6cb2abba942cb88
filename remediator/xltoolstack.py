"""The remediator's `Toolstack`: `xentools.toolstack.XlToolstack` (the one reading of xl, shared
with the exporter), its commands run through the remediator's runner so that its metrics count
them, and its failures turned into `ObserveError` (the action waits rather than act blind)."""

from __future__ import annotations

from collections.abc import Sequence

from remediator.observe import ObserveError, ToolstackDomain
from remediator.plan import Command, Tools
from remediator.runner import Runner
from xentools import toolstack


class XlToolstack:
    def __init__(self, runner: Runner, tools: Tools) -> None:
        self._runner = runner
        self._timeout = tools.timeout
        self._xl = toolstack.XlToolstack(tools.xl, run=self._run)

    def _run(self, argv: Sequence[str], timeout: float) -> str:
        result = self._runner.run(Command(argv=tuple(argv), timeout=timeout))
        if not result.ok:
            raise toolstack.ToolstackError(result.describe())
        return result.stdout

    def domains(self) -> list[ToolstackDomain]:
        try:
            rows = self._xl.domains(self._timeout, max_memory=False)
        except toolstack.ToolstackError as error:
            raise ObserveError(str(error)) from None
        return [
            ToolstackDomain(
                name=d.name, domid=d.domid, paused=d.paused, vcpus=d.vcpus, uuid=d.uuid or None
            )
            for d in rows
        ]

    def scheduler(self, domid: int) -> str:
        try:
            return self._xl.scheduler(domid, self._timeout)
        except toolstack.ToolstackError as error:
            raise ObserveError(str(error)) from None

    def cap(self, domid: int, scheduler: str) -> int:
        try:
            return self._xl.cap(domid, scheduler, self._timeout)
        except toolstack.ToolstackError as error:
            raise ObserveError(str(error)) from None

    def hard_affinity(self, domid: int) -> list[str]:
        try:
            return self._xl.hard_affinity(domid, self._timeout)
        except toolstack.ToolstackError as error:
            raise ObserveError(str(error)) from None
