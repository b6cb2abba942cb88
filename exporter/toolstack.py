"""What the collectors need from the Xen toolstack, and one scrape's view of it.

The collectors see the host through the small `Toolstack` protocol below (tests give them
fakes); `xentools.toolstack` implements it, shared with the remediator. `Scrape` asks each
question at most once per scrape and shares the answer between collectors; it keeps nothing
from one scrape to the next (what is worth keeping, the toolstack and the collectors keep
themselves, and say so).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Protocol, TypeVar

from xentools.toolstack import DOMAIN_STATES, DomainStats, HostInfo, VcpuPlacement

__all__ = [
    "DOMAINS",
    "DOMAIN_STATES",
    "INFO",
    "POOL_CPUS",
    "VCPU_LIST",
    "DomainStats",
    "HostInfo",
    "Scrape",
    "ScrapeTimeout",
    "Toolstack",
    "VcpuPlacement",
]

T = TypeVar("T")


class Toolstack(Protocol):
    def info(self, timeout: float) -> HostInfo: ...

    def vcpu_list(self, timeout: float) -> Sequence[VcpuPlacement]: ...

    def pool_cpus(self, timeout: float) -> frozenset[int]:
        """The CPUs of every cpupool (the online CPUs assigned to pools)."""
        ...

    def domains(self, timeout: float) -> Sequence[DomainStats]: ...

    def cpu_idle(self, timeout: float) -> Mapping[int, float] | None:
        """Seconds each physical CPU has been idle, by CPU id; None where the toolstack
        cannot tell (xl)."""
        ...


class ScrapeTimeout(TimeoutError):
    """The scrape's time budget is spent."""


INFO = "xl info"
VCPU_LIST = "xl vcpu-list"
POOL_CPUS = "xl cpupool-list"
DOMAINS = "xl list"
CPU_IDLE = "xc_getcpuinfo"


class Scrape:
    """One scrape: its deadline, and each toolstack answer (or error) computed at most once.

    Collectors run one after the other in the scrape's thread. Questions a collector will ask
    can be started early in `executor`'s threads (`start`), so that several `xl` runs overlap
    each other and the reading of the counters instead of adding up; the collector then waits
    for the answer, never past the scrape's deadline.
    """

    def __init__(
        self,
        toolstack: Toolstack,
        deadline: float,
        command_timeout: float,
        executor: Executor | None = None,
    ) -> None:
        self.toolstack = toolstack
        self.deadline = deadline
        self.command_timeout = command_timeout
        self._executor = executor
        self._answers: dict[str, Future[Any]] = {}
        self._questions: dict[str, Callable[[float], Any]] = {
            INFO: toolstack.info,
            VCPU_LIST: toolstack.vcpu_list,
            POOL_CPUS: toolstack.pool_cpus,
            DOMAINS: toolstack.domains,
            CPU_IDLE: toolstack.cpu_idle,
        }

    def timeout(self) -> float:
        """The timeout for the next command: the per-command limit, within the deadline."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0.05:
            raise ScrapeTimeout("the scrape's time budget is spent")
        return min(self.command_timeout, remaining)

    def start(self, *keys: str) -> None:
        """Ask these questions now in the background (inline later if there is no executor)."""
        if self._executor is None:
            return
        for key in keys:
            if key not in self._answers:
                self._answers[key] = self._executor.submit(self._ask, self._questions[key])

    def _ask(self, compute: Callable[[float], T]) -> T:
        # the timeout is taken when the command starts, not when it was queued
        return compute(self.timeout())

    def once(self, key: str, compute: Callable[[float], T]) -> T:
        future = self._answers.get(key)
        if future is None:
            future = self._answers[key] = Future()
            try:
                future.set_result(compute(self.timeout()))
            except Exception as error:
                future.set_exception(error)
        try:
            answer: T = future.result(timeout=max(0.0, self.deadline - time.monotonic()))
        except FutureTimeout:
            raise ScrapeTimeout(f"{key}: no answer within the scrape's time budget") from None
        return answer

    def info(self) -> HostInfo:
        return self.once(INFO, self.toolstack.info)

    def vcpu_list(self) -> Sequence[VcpuPlacement]:
        return self.once(VCPU_LIST, self.toolstack.vcpu_list)

    def pool_cpus(self) -> frozenset[int]:
        return self.once(POOL_CPUS, self.toolstack.pool_cpus)

    def domains(self) -> Sequence[DomainStats]:
        return self.once(DOMAINS, self.toolstack.domains)

    def cpu_idle(self) -> Mapping[int, float] | None:
        return self.once(CPU_IDLE, self.toolstack.cpu_idle)
