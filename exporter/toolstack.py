"""What the collectors need from the Xen toolstack, and one scrape's view of it.

The collectors see the host through the small `Toolstack` protocol below (tests give them fakes);
`exporter.xl_toolstack.XlToolstack` implements it with `xentools.xl`, the one place that runs and
parses `xl`. `Scrape` asks each question at most once per scrape and shares the answer between
collectors: nothing is kept from one scrape to the next.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class HostInfo:
    """`xl info`: `nr_cpus` is the number of online CPUs, `max_cpu_id` the highest CPU id."""

    nr_cpus: int
    max_cpu_id: int
    xen_version: str = ""


@dataclass(frozen=True)
class VcpuPlacement:
    """One vCPU from `xl vcpu-list`. `cpu` is None for an offline vCPU; `hard` None = all CPUs."""

    domain: str
    domid: int
    vcpu: int
    cpu: int | None
    hard: frozenset[int] | None
    time_seconds: float


@dataclass(frozen=True)
class DomainStats:
    """One domain as `xl list` and friends describe it."""

    name: str
    domid: int
    uuid: str
    memory_bytes: int
    max_memory_bytes: int | None
    vcpus: int
    cpu_seconds: float
    states: frozenset[str]  # those of DOMAIN_STATES that hold
    extra_info: dict[str, str] = field(default_factory=dict)


DOMAIN_STATES = ("running", "blocked", "paused", "shutdown", "crashed", "dying")


class Toolstack(Protocol):
    def info(self, timeout: float) -> HostInfo: ...

    def vcpu_list(self, timeout: float) -> Sequence[VcpuPlacement]: ...

    def pool_cpus(self, timeout: float) -> frozenset[int]:
        """The CPUs of every cpupool (the online CPUs assigned to pools)."""
        ...

    def domains(self, timeout: float) -> Sequence[DomainStats]: ...


class ScrapeTimeout(TimeoutError):
    """The scrape's time budget is spent."""


class Scrape:
    """One scrape: its deadline, and each toolstack answer (or error) computed at most once.

    A scrape runs its collectors one after the other in one thread, so no locking is needed.
    """

    def __init__(self, toolstack: Toolstack, deadline: float, command_timeout: float) -> None:
        self.toolstack = toolstack
        self.deadline = deadline
        self.command_timeout = command_timeout
        self._answers: dict[str, tuple[bool, object]] = {}

    def timeout(self) -> float:
        """The timeout for the next command: the per-command limit, within the deadline."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0.05:
            raise ScrapeTimeout("the scrape's time budget is spent")
        return min(self.command_timeout, remaining)

    def once(self, key: str, compute: Callable[[float], T]) -> T:
        if key not in self._answers:
            try:
                self._answers[key] = (True, compute(self.timeout()))
            except Exception as error:
                self._answers[key] = (False, error)
        ok, value = self._answers[key]
        if not ok:
            assert isinstance(value, BaseException)
            raise value
        return value  # type: ignore[return-value]

    def info(self) -> HostInfo:
        return self.once("xl info", self.toolstack.info)

    def vcpu_list(self) -> Sequence[VcpuPlacement]:
        return self.once("xl vcpu-list", self.toolstack.vcpu_list)

    def pool_cpus(self) -> frozenset[int]:
        return self.once("xl cpupool-list", self.toolstack.pool_cpus)

    def domains(self) -> Sequence[DomainStats]:
        return self.once("xl list", self.toolstack.domains)
