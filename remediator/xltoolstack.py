"""The remediator's `Toolstack`: xl run through our runner (one runner, one timeout policy),
parsed by the shared `xentools.xl` parsers (nothing parses xl output twice)."""

from __future__ import annotations

from remediator.observe import ObserveError, ToolstackDomain
from remediator.plan import Command, Tools
from remediator.runner import Runner
from xentools.xl import parse_cpupool_list, parse_list, parse_sched, parse_vcpu_list


class XlToolstack:
    def __init__(self, runner: Runner, tools: Tools) -> None:
        self._runner = runner
        self._tools = tools

    def _xl(self, *args: str) -> str:
        result = self._runner.run(
            Command(argv=(self._tools.xl, *args), timeout=self._tools.timeout)
        )
        if not result.ok:
            raise ObserveError(result.describe())
        return result.stdout

    def domains(self) -> list[ToolstackDomain]:
        return [
            ToolstackDomain(name=d.name, domid=d.domid, paused=d.state.paused, vcpus=d.vcpus)
            for d in parse_list(self._xl("list"))
        ]

    def scheduler(self, domid: int) -> str:
        rows = parse_list(self._xl("list", "-c", str(domid)))
        if len(rows) != 1 or rows[0].pool is None:
            raise ObserveError(f"xl list -c {domid}: expected one row with a cpupool")
        for pool in parse_cpupool_list(self._xl("cpupool-list")):
            if pool.name == rows[0].pool and pool.scheduler is not None:
                return pool.scheduler
        raise ObserveError(f"cpupool {rows[0].pool!r} of domain {domid} not in xl cpupool-list")

    def cap(self, domid: int, scheduler: str) -> int:
        if scheduler not in ("credit", "credit2"):
            raise ObserveError(f"scheduler {scheduler!r} has no cap")
        rows = parse_sched(self._xl(f"sched-{scheduler}", "-d", str(domid)))
        if len(rows) != 1:
            raise ObserveError(f"xl sched-{scheduler} -d {domid}: expected one row")
        return rows[0].cap

    def hard_affinity(self, domid: int) -> list[str]:
        vcpus = sorted(parse_vcpu_list(self._xl("vcpu-list", str(domid))), key=lambda v: v.vcpu)
        return [v.hard_affinity for v in vcpus]
