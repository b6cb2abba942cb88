"""Fake sources for exporter tests: a scripted perfc reader and an in-memory toolstack."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from exporter.readers import PerfcError, PerfcUnavailable
from exporter.toolstack import DomainStats, HostInfo, VcpuPlacement
from xentools.xenperf import PerfcSnapshot, parse_xenperf

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
XENPERF_FIXTURES = FIXTURES / "xenperf"
SYSFS_FIXTURE = str(FIXTURES / "sysfs")


def fixture_snapshot(name: str) -> PerfcSnapshot:
    return parse_xenperf((XENPERF_FIXTURES / name).read_text())


class FakeReader:
    """Returns the snapshots (or raises the errors) it was given, one per read; repeats the last."""

    name = "fake"

    def __init__(self, *results: PerfcSnapshot | Exception) -> None:
        self.results = list(results)
        self.reads = 0

    def read(self, nr_cpus: int, max_cpu_id: int, timeout: float) -> PerfcSnapshot:
        result = self.results[min(self.reads, len(self.results) - 1)]
        self.reads += 1
        if isinstance(result, Exception):
            raise result
        return result


def enosys() -> PerfcUnavailable:
    return PerfcUnavailable("Error getting number of perf counters: 38 (Function not implemented)")


def broken() -> PerfcError:
    return PerfcError("xenperf -f failed: Error opening xc interface: 13 (Permission denied)")


def vcpu(
    domain: str,
    domid: int,
    cpu: int | None,
    hard: Sequence[int] | None,
    seconds: float = 0.0,
    number: int = 0,
) -> VcpuPlacement:
    return VcpuPlacement(
        domain, domid, number, cpu, None if hard is None else frozenset(hard), seconds
    )


def pinned_host_vcpus(seconds: float = 0.0) -> list[VcpuPlacement]:
    """The published experiment's shape: Domain-0 on CPU 0, one guest pinned to each other CPU."""
    return [
        vcpu("Domain-0", 0, 0, [0], seconds),
        vcpu("guest1", 1, 1, [1], seconds),
        vcpu("guest2", 2, 2, [2], seconds),
        vcpu("guest3", 3, 3, [3], seconds),
    ]


def domain(name: str, domid: int, **overrides: object) -> DomainStats:
    values: dict[str, object] = {
        "name": name,
        "domid": domid,
        "uuid": f"00000000-0000-4000-8000-{domid:012x}",
        "memory_bytes": 512 << 20,
        "max_memory_bytes": 1024 << 20,
        "vcpus": 1,
        "cpu_seconds": 10.5,
        "states": frozenset({"blocked"}),
    }
    values.update(overrides)
    return DomainStats(**values)  # type: ignore[arg-type]


@dataclass
class FakeToolstack:
    host: HostInfo = field(default_factory=lambda: HostInfo(4, 3, "4.17.7"))
    vcpus: list[VcpuPlacement] = field(default_factory=pinned_host_vcpus)
    pools: frozenset[int] | None = None
    domain_list: list[DomainStats] = field(
        default_factory=lambda: [
            domain("Domain-0", 0),
            domain("guest1", 1),
            domain("guest2", 2),
            domain("guest3", 3),
        ]
    )
    failing: set[str] = field(default_factory=set)
    calls: list[str] = field(default_factory=list)
    # What xc_getcpuinfo would say; None as xl (no idle time).
    idle: dict[int, float] | None = None

    def _call(self, what: str) -> None:
        self.calls.append(what)
        if what in self.failing:
            raise RuntimeError(f"xl {what} failed")

    def info(self, timeout: float) -> HostInfo:
        self._call("info")
        return self.host

    def vcpu_list(self, timeout: float) -> Sequence[VcpuPlacement]:
        self._call("vcpu-list")
        return list(self.vcpus)

    def pool_cpus(self, timeout: float) -> frozenset[int]:
        self._call("cpupool-list")
        if self.pools is None:
            raise RuntimeError("no pools configured in the fake")
        return self.pools

    def domains(self, timeout: float) -> Sequence[DomainStats]:
        self._call("list")
        return list(self.domain_list)

    def cpu_idle(self, timeout: float) -> dict[int, float] | None:
        if self.idle is None:
            return None
        self._call("getcpuinfo")
        return dict(self.idle)
