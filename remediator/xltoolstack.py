"""The remediator's `Toolstack`: `xentools.toolstack.open_toolstack("auto", ...)`, the same
reading as the exporter's (domains, names and vCPU affinity through libxenctrl and libxenstore,
no process per question; `xl` where they do not load, and for schedulers and caps, which only
xl answers). Commands it runs go through the remediator's runner so that its metrics count them;
its failures become `ObserveError` (the action waits rather than act blind)."""

from __future__ import annotations

from collections.abc import Sequence

from remediator.observe import ObserveError, ToolstackDomain
from remediator.plan import Command, Tools
from remediator.runner import Runner
from xentools import toolstack


class XlToolstack:
    def __init__(self, runner: Runner, tools: Tools, reader: str = "auto") -> None:
        self._runner = runner
        self._timeout = tools.timeout
        self._toolstack = toolstack.open_toolstack(reader, tools.xl, run=self._run)

    def _run(self, argv: Sequence[str], timeout: float) -> str:
        result = self._runner.run(Command(argv=tuple(argv), timeout=timeout))
        if not result.ok:
            raise toolstack.ToolstackError(result.describe())
        return result.stdout

    def domains(self) -> list[ToolstackDomain]:
        try:
            rows = self._toolstack.domains(self._timeout, max_memory=False)
        except toolstack.ToolstackError as error:
            raise ObserveError(str(error)) from None
        return [
            ToolstackDomain(
                name=d.name, domid=d.domid, paused=d.paused, vcpus=d.vcpus, uuid=d.uuid or None
            )
            for d in rows
        ]

    def paused(self, domid: int) -> bool:
        # xl's listing always says; asked only if a listing left it unknown.
        for dom in self.domains():
            if dom.domid == domid and dom.paused is not None:
                return dom.paused
        raise ObserveError(f"domain {domid} is not running")

    def scheduler(self, domid: int) -> str:
        try:
            return self._toolstack.scheduler(domid, self._timeout)
        except toolstack.ToolstackError as error:
            raise ObserveError(str(error)) from None

    def cap(self, domid: int, scheduler: str) -> int:
        try:
            return self._toolstack.cap(domid, scheduler, self._timeout)
        except toolstack.ToolstackError as error:
            raise ObserveError(str(error)) from None

    def hard_affinity(self, domid: int) -> list[str]:
        try:
            return self._toolstack.hard_affinity(domid, self._timeout)
        except toolstack.ToolstackError as error:
            raise ObserveError(str(error)) from None
