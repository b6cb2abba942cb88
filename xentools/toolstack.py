"""The Xen toolstack as the exporter and the remediator read it, shared by both.

Two implementations of the same methods:

- `XlToolstack` runs `xl` (through `xentools.command.run_command`, or the caller's runner) and
  parses what xl prints with `xentools.xl`'s parsers, so nothing runs or parses xl twice. The
  maximum memory (`xl list -l`, xl's costliest answer) is kept between calls: asked again when
  the set of domids changes, and every `MAX_MEMORY_REFRESH_CALLS` calls.
- `LibraryToolstack` makes the calls xl itself makes, through libxenctrl (host CPUs, domains,
  vCPUs and their affinity) and libxenstore (names), with ctypes: no process per question.
  What those libraries do not answer cheaply (cpupools, schedulers, caps) it asks its
  `XlToolstack`.

`open_toolstack("auto", ...)` is the library where both load, else xl. Every method takes the
timeout of the commands it may run; a failure of any kind (xl missing, killed at its timeout,
exiting non-zero, printing what the parser refuses, a library call failing) is a
`ToolstackError` naming the command or call.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from xentools import libxenctrl, xenstore, xl
from xentools.command import CommandError, run_command
from xentools.cpulist import format_cpulist

log = logging.getLogger(__name__)

T = TypeVar("T")

MIB = 1 << 20
KIB = 1 << 10
MAX_MEMORY_REFRESH_CALLS = 30
NS = 1e9
TOOLSTACK_READERS = ("auto", "libxenctrl", "xl")
DOMAIN_STATES = ("running", "blocked", "paused", "shutdown", "crashed", "dying")


class ToolstackError(RuntimeError):
    """The toolstack could not answer: xl failed, timed out, or printed something unparsable."""


@dataclass(frozen=True)
class HostInfo:
    """`nr_cpus` is the number of online CPUs, `max_cpu_id` the highest CPU id."""

    nr_cpus: int
    max_cpu_id: int
    xen_version: str = ""


@dataclass(frozen=True)
class VcpuPlacement:
    """One vCPU: `cpu` is None for an offline vCPU; `hard` (hard affinity) None = all CPUs."""

    domain: str
    domid: int
    vcpu: int
    cpu: int | None
    hard: frozenset[int] | None
    time_seconds: float


@dataclass(frozen=True)
class DomainStats:
    """One domain, as `xl list -v` (and `-l` for the maximum memory) describes it."""

    name: str
    domid: int
    uuid: str
    memory_bytes: int
    max_memory_bytes: int | None
    vcpus: int
    cpu_seconds: float
    states: frozenset[str]  # those of DOMAIN_STATES that hold
    extra_info: dict[str, str] = field(default_factory=dict)

    @property
    def paused(self) -> bool:
        return "paused" in self.states


Run = Callable[[Sequence[str], float], str]
"""Runs an argv list within a timeout and returns its stdout; raises ToolstackError."""


def run_tool(argv: Sequence[str], timeout: float) -> str:
    """The default `Run`: `run_command`, a non-zero exit being an error."""
    try:
        result = run_command(argv, timeout=timeout)
    except CommandError as error:
        raise ToolstackError(str(error)) from None
    if result.returncode != 0:
        detail = result.stderr.strip().splitlines()
        raise ToolstackError(
            f"{' '.join(argv)} exited {result.returncode}" + (f": {detail[-1]}" if detail else "")
        )
    return result.stdout


class XlToolstack:
    """The toolstack through `xl` at `path`."""

    def __init__(self, path: str = "xl", run: Run = run_tool) -> None:
        self.path = path
        self._run = run
        self._max_cpu_id: int | None = None
        self._lock = threading.Lock()
        self._max_memory: dict[int, int] = {}
        self._max_memory_domids: frozenset[int] | None = None
        self._max_memory_age = 0

    def _output(self, timeout: float, *args: str) -> str:
        return self._run([self.path, *args], timeout)

    def cpu_idle(self, timeout: float) -> dict[int, float] | None:
        """None: `xl` prints no per-CPU idle time (only libxenctrl's `xc_getcpuinfo` has it)."""
        return None

    def info(self, timeout: float) -> HostInfo:
        """`xl info`."""
        try:
            parsed = xl.parse_info(self._output(timeout, "info"))
        except xl.XlParseError as error:
            raise ToolstackError(f"xl info: {error}") from None
        self._max_cpu_id = parsed.max_cpu_id
        return HostInfo(parsed.nr_cpus, parsed.max_cpu_id, parsed.xen_version)

    def vcpu_list(self, timeout: float) -> list[VcpuPlacement]:
        """`xl vcpu-list`: every vCPU's placement (affinities read against the last `info`)."""
        try:
            rows = xl.parse_vcpu_list(self._output(timeout, "vcpu-list"))
            nr_cpus = (self._max_cpu_id or 0) + 1
            return [
                VcpuPlacement(
                    domain=row.name,
                    domid=row.domid,
                    vcpu=row.vcpu,
                    cpu=row.cpu if row.online else None,
                    hard=None if row.hard_affinity == "all" else row.hard_cpus(nr_cpus),
                    time_seconds=row.time_seconds,
                )
                for row in rows
            ]
        except (xl.XlParseError, xl.CpuListError) as error:
            raise ToolstackError(f"xl vcpu-list: {error}") from None

    def hard_affinity(self, domid: int, timeout: float) -> list[str]:
        """The domain's hard affinity per vCPU, in vCPU order, as xl prints it (`all`, `2-3`)."""
        try:
            rows = xl.parse_vcpu_list(self._output(timeout, "vcpu-list", str(domid)))
        except xl.XlParseError as error:
            raise ToolstackError(f"xl vcpu-list {domid}: {error}") from None
        return [row.hard_affinity for row in sorted(rows, key=lambda row: row.vcpu)]

    def pool_cpus(self, timeout: float) -> frozenset[int]:
        """The CPUs of every cpupool (`xl cpupool-list -c`)."""
        try:
            pools = xl.parse_cpupool_list(self._output(timeout, "cpupool-list", "-c"))
        except xl.XlParseError as error:
            raise ToolstackError(f"xl cpupool-list -c: {error}") from None
        return frozenset(cpu for pool in pools for cpu in pool.cpus or ())

    def scheduler(self, domid: int, timeout: float) -> str:
        """The scheduler (`credit`, `credit2`...) of the cpupool the domain runs in."""
        try:
            rows = xl.parse_list(self._output(timeout, "list", "-c", str(domid)))
            if len(rows) != 1 or rows[0].pool is None:
                raise ToolstackError(f"xl list -c {domid}: expected one row with a cpupool")
            pools = xl.parse_cpupool_list(self._output(timeout, "cpupool-list"))
        except xl.XlParseError as error:
            raise ToolstackError(str(error)) from None
        for pool in pools:
            if pool.name == rows[0].pool and pool.scheduler is not None:
                return pool.scheduler
        raise ToolstackError(f"cpupool {rows[0].pool!r} of domain {domid} not in xl cpupool-list")

    def cap(self, domid: int, scheduler: str, timeout: float) -> int:
        """The domain's CPU cap (`xl sched-credit[2] -d`), percent of a CPU, 0 = none."""
        if scheduler not in xl.SCHEDULERS:
            raise ToolstackError(f"scheduler {scheduler!r} has no cap")
        command = f"sched-{scheduler}"
        try:
            rows = xl.parse_sched(self._output(timeout, command, "-d", str(domid)))
        except xl.XlParseError as error:
            raise ToolstackError(f"xl {command} -d {domid}: {error}") from None
        if len(rows) != 1:
            raise ToolstackError(f"xl {command} -d {domid}: expected one row")
        return rows[0].cap

    def domains(self, timeout: float, *, max_memory: bool = True) -> list[DomainStats]:
        """`xl list -v`, with each domain's maximum memory (`xl list -l`, kept) if asked."""
        try:
            rows = xl.parse_list_verbose(self._output(timeout, "list", "-v"))
        except xl.XlParseError as error:
            raise ToolstackError(f"xl list -v: {error}") from None
        maxima = (
            self._max_memory_of(frozenset(row.domid for row in rows), timeout) if max_memory else {}
        )
        return [
            DomainStats(
                name=row.name,
                domid=row.domid,
                uuid=row.uuid,
                memory_bytes=row.memory_mib * MIB,
                max_memory_bytes=maxima.get(row.domid),
                vcpus=row.vcpus,
                cpu_seconds=row.cpu_seconds,
                states=frozenset(row.state.names),
            )
            for row in rows
        ]

    def _max_memory_of(self, domids: frozenset[int], timeout: float) -> dict[int, int]:
        """domid -> maximum memory in bytes, from `xl list -l` when it may have changed."""
        with self._lock:
            fresh = self._max_memory_age < MAX_MEMORY_REFRESH_CALLS
            if domids == self._max_memory_domids and fresh:
                self._max_memory_age += 1
                return self._max_memory
        try:
            long_rows = xl.parse_list_long(self._output(timeout, "list", "-l"))
        except xl.XlParseError as error:
            raise ToolstackError(f"xl list -l: {error}") from None
        max_memory = {
            row.domid: row.max_memory_kib * KIB
            for row in long_rows
            if row.max_memory_kib is not None
        }
        with self._lock:
            # keyed by the domids -v showed, so a domain created in between is asked next time
            self._max_memory = max_memory
            self._max_memory_domids = domids
            self._max_memory_age = 1
        return max_memory


class Toolstack(Protocol):
    """What `XlToolstack` and `LibraryToolstack` both answer."""

    def info(self, timeout: float) -> HostInfo: ...

    def cpu_idle(self, timeout: float) -> dict[int, float] | None: ...

    def vcpu_list(self, timeout: float) -> list[VcpuPlacement]: ...

    def hard_affinity(self, domid: int, timeout: float) -> list[str]: ...

    def pool_cpus(self, timeout: float) -> frozenset[int]: ...

    def scheduler(self, domid: int, timeout: float) -> str: ...

    def cap(self, domid: int, scheduler: str, timeout: float) -> int: ...

    def domains(self, timeout: float, *, max_memory: bool = True) -> list[DomainStats]: ...


class LibraryToolstack:
    """libxenctrl and libxenstore through ctypes, `fallback` (xl) for the rest.

    One connection to each, opened on first use and again after a failure; calls are
    serialised (the handles are not for concurrent use). Library calls take no timeout: they
    are hypercalls and a xenstore read, not processes.
    """

    def __init__(
        self,
        xenctrl: libxenctrl.LibXenCtrl,
        store: xenstore.LibXenStore,
        fallback: XlToolstack,
    ) -> None:
        self._xenctrl = xenctrl
        self._xenstore = store
        self._fallback = fallback
        self._lock = threading.Lock()
        self._ctrl: libxenctrl.Interface | None = None
        self._store: xenstore.XenStore | None = None

    def _handles(self) -> tuple[libxenctrl.Interface, xenstore.XenStore]:
        if self._ctrl is None:
            self._ctrl = self._xenctrl.open()
        if self._store is None:
            self._store = self._xenstore.open()
        return self._ctrl, self._store

    def _reset(self) -> None:
        for handle in (self._ctrl, self._store):
            if handle is not None:
                handle.close()
        self._ctrl = self._store = None

    def _call(
        self, what: str, compute: Callable[[libxenctrl.Interface, xenstore.XenStore], T]
    ) -> T:
        with self._lock:
            try:
                return compute(*self._handles())
            except OSError as error:  # XenCtrlError, XenStoreError
                self._reset()
                raise ToolstackError(f"{what}: {error}") from None

    def close(self) -> None:
        with self._lock:
            self._reset()

    def cpu_idle(self, timeout: float) -> dict[int, float] | None:
        """Seconds each physical CPU has been idle, by CPU id (`xc_getcpuinfo`); offline
        CPUs (whose idle time Xen reports as 0) are left out."""

        def compute(ctrl: libxenctrl.Interface, _: xenstore.XenStore) -> dict[int, float]:
            physinfo = ctrl.physinfo()
            idle = ctrl.cpu_idle_ns(physinfo.max_cpu_id + 1)
            return {cpu: ns / 1e9 for cpu, ns in enumerate(idle) if ns > 0}

        return self._call("xc_getcpuinfo", compute)

    def info(self, timeout: float) -> HostInfo:
        physinfo = self._call("xc_physinfo", lambda ctrl, _: ctrl.physinfo())
        return HostInfo(physinfo.nr_cpus, physinfo.max_cpu_id)

    @staticmethod
    def _named(
        ctrl: libxenctrl.Interface, store: xenstore.XenStore
    ) -> list[tuple[str, libxenctrl.XcDomain]]:
        named = []
        for domain in ctrl.domains():
            name = store.domain_name(domain.domid)
            if name is None:  # being built or torn down: xl would print no name either
                log.debug("domain %d has no name in xenstore yet; skipped", domain.domid)
                continue
            named.append((name, domain))
        return named

    def vcpu_list(self, timeout: float) -> list[VcpuPlacement]:
        def compute(ctrl: libxenctrl.Interface, store: xenstore.XenStore) -> list[VcpuPlacement]:
            every_cpu = (1 << (ctrl.physinfo().max_cpu_id + 1)) - 1
            size = ctrl.cpumap_size()
            placements = []
            for name, domain in self._named(ctrl, store):
                for vcpu in _vcpu_ids(domain):
                    info = ctrl.vcpu(domain.domid, vcpu)
                    hard = ctrl.hard_affinity_mask(domain.domid, vcpu, size) & every_cpu
                    placements.append(
                        VcpuPlacement(
                            domain=name,
                            domid=domain.domid,
                            vcpu=vcpu,
                            cpu=info.cpu if info.online else None,
                            hard=None if hard == every_cpu else libxenctrl.mask_cpus(hard),
                            time_seconds=info.cpu_time_ns / NS,
                        )
                    )
            return placements

        return self._call("vCPU placement (xc_vcpu_getinfo)", compute)

    def hard_affinity(self, domid: int, timeout: float) -> list[str]:
        def compute(ctrl: libxenctrl.Interface, _: xenstore.XenStore) -> list[str]:
            nr_cpus = ctrl.physinfo().max_cpu_id + 1
            for domain in ctrl.domains():
                if domain.domid == domid:
                    return [
                        format_cpulist(ctrl.hard_affinity(domid, vcpu), nr_cpus)
                        for vcpu in _vcpu_ids(domain)
                    ]
            raise ToolstackError(f"no domain {domid}")

        return self._call(f"vCPU affinity of domain {domid} (xc_vcpu_getaffinity)", compute)

    def domains(self, timeout: float, *, max_memory: bool = True) -> list[DomainStats]:
        def compute(ctrl: libxenctrl.Interface, store: xenstore.XenStore) -> list[DomainStats]:
            return [
                DomainStats(
                    name=name,
                    domid=domain.domid,
                    uuid=domain.uuid,
                    memory_bytes=domain.memory_bytes,
                    max_memory_bytes=domain.max_memory_bytes if max_memory else None,
                    vcpus=domain.online_vcpus,
                    cpu_seconds=domain.cpu_time_ns / NS,
                    states=domain.states,
                )
                for name, domain in self._named(ctrl, store)
            ]

        return self._call("domains (xc_domain_getinfolist)", compute)

    def pool_cpus(self, timeout: float) -> frozenset[int]:
        return self._fallback.pool_cpus(timeout)

    def scheduler(self, domid: int, timeout: float) -> str:
        return self._fallback.scheduler(domid, timeout)

    def cap(self, domid: int, scheduler: str, timeout: float) -> int:
        return self._fallback.cap(domid, scheduler, timeout)


def _vcpu_ids(domain: libxenctrl.XcDomain) -> range:
    """vCPUs 0 .. max_vcpu_id, as xl vcpu-list lists them (offline ones too)."""
    return range(0 if domain.max_vcpu_id is None else domain.max_vcpu_id + 1)


def open_toolstack(kind: str, xl_path: str = "xl", run: Run = run_tool) -> Toolstack:
    """The toolstack `kind` names; "auto" is the libraries where both load and answer, else xl.

    Raises `LibraryNotFound` (or `ToolstackError`) for "libxenctrl" when they do not.
    """
    if kind not in TOOLSTACK_READERS:
        raise ValueError(f"unknown toolstack reader {kind!r}, expected one of {TOOLSTACK_READERS}")
    fallback = XlToolstack(xl_path, run=run)
    if kind == "xl":
        return fallback
    try:
        library = LibraryToolstack(
            libxenctrl.LibXenCtrl.load(), xenstore.LibXenStore.load(), fallback
        )
        library.info(timeout=0)  # both open and answer
    except (libxenctrl.LibraryNotFound, ToolstackError) as error:
        if kind == "libxenctrl":
            raise
        log.info("libxenctrl/libxenstore not usable (%s); reading domains with %s", error, xl_path)
        return fallback
    log.info("reading domains and vCPUs through libxenctrl and libxenstore")
    return library
