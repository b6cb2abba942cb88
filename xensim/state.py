"""The simulated host's toolstack state: what a Xen toolstack knows about host and domains.

One JSON file, ``$XENSIM_STATE_DIR/state.json``, shared by the fake ``xl``, the simulator's
daemon and ``judicator-sim``. Every read-modify-write holds ``flock(LOCK_EX)`` on
``state.lock`` beside it, readers hold ``LOCK_SH``, and every write is an atomic rename, so no
writer loses another's update and no reader sees half a file.

Usage::

    store = StateStore(state_dir)
    store.initialize(new_host("sim0", nr_cpus=4))        # once, by `judicator-sim up`
    with store.transaction() as host:                      # read, modify, saved on success
        web = host.add_domain("web01", vcpus=1, memory_kib=512 * 1024, pinned_cpus=[1])
        web.netns, web.cgroup, web.vifs = "sim-web01", "judicator-sim/web01", [0]
    host = store.read()                                    # a snapshot, changes are not saved
    host.domain("web01").domid                             # by name or by domid ("7")

Who writes what:

- ``judicator-sim`` creates the host and the domains and binds them to namespaces and cgroups
  (``Domain.netns``, ``Domain.cgroup``, ``Domain.vifs``).
- The simulator's daemon keeps the dynamic facts current: ``Domain.cpu_time_ns``,
  ``Vcpu.time_ns``, ``Vcpu.running`` / ``Vcpu.blocked`` and, for vCPUs whose hard affinity
  spans several CPUs, ``Vcpu.cpu``.
- The fake ``xl`` changes what xl would change: affinities (and ``Vcpu.cpu`` so that it lies
  in the new hard set, as the hypervisor moves a vCPU), weight and cap, pause count, memory
  target. It never changes the daemon's fields otherwise.

Conventions (as Xen has them):

- CPUs: ``HostState.nr_cpus`` is the number of physical CPU ids (``max_cpu_id + 1``);
  ``online_cpus`` lists those online. ``xl info``'s ``nr_cpus`` is ``len(online_cpus)``.
- Affinities are kept as the strings ``xl vcpu-list`` prints (``all``, ``none``, ``2``,
  ``2-3``, ``0,2-3``), over ``nr_cpus`` CPUs; ``cpulist_string`` and ``cpulist_set`` convert.
- Domain ids grow: a new domain or a rebooted one gets ``next_domid``; a reboot keeps the
  name and uuid. Domain-0 has domid 0.
- Memory is in KiB. ``memory_kib`` is the current allocation (= balloon target here).
- ``pause_count`` is the toolstack's pause reference count (0..255); a domain is paused when
  it is above 0.
- ``shutdown_reason`` is None while the domain is not shut down, else one of
  ``SHUTDOWN_REASONS``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

# The fake xl imports this module on every call: keep its imports cheap (no tempfile, pathlib,
# uuid at import time).

DEFAULT_STATE_DIR = "/run/judicator-sim/default"
STATE_FILE = "state.json"
LOCK_FILE = "state.lock"
FORMAT_VERSION = 1

MAX_PAUSE_COUNT = 255
SHUTDOWN_REASONS = ("poweroff", "reboot", "suspend", "crash", "watchdog", "soft_reset")
SCHEDULERS = ("credit", "credit2")
DOM0_NAME = "Domain-0"


class StateError(Exception):
    """The state file is missing, unreadable, or a request contradicts it."""


class DomainNotFound(StateError, KeyError):
    """No domain has that name or domid."""

    def __init__(self, ref: str) -> None:
        super().__init__(ref)
        self.ref = ref

    def __str__(self) -> str:
        return f"no domain {self.ref!r}"


@dataclass
class Vcpu:
    id: int
    online: bool = True
    cpu: int = 0
    hard: str = "all"
    soft: str = "all"
    time_ns: int = 0
    running: bool = False
    blocked: bool = True


@dataclass
class CpuPool:
    name: str
    scheduler: str = "credit2"
    cpus: list[int] = field(default_factory=list)
    # Scheduler parameters xl prints on the pool line of `xl sched-credit*`.
    tslice_ms: int = 30
    ratelimit_us: int = 1000
    migration_delay_us: int = 0


@dataclass
class Domain:
    name: str
    domid: int
    uuid: str
    memory_kib: int
    max_memory_kib: int
    vcpus: list[Vcpu] = field(default_factory=list)
    pause_count: int = 0
    shutdown_reason: str | None = None
    dying: bool = False
    weight: int = 256
    cap: int = 0
    pool: str = "Pool-0"
    cpu_time_ns: int = 0
    netns: str | None = None
    cgroup: str | None = None
    vifs: list[int] = field(default_factory=list)
    emu_vif: bool = False
    vifname: str | None = None
    domain_type: str = "pvh"
    ssidref: int = 0

    @property
    def paused(self) -> bool:
        return self.pause_count > 0

    @property
    def online_vcpus(self) -> int:
        return sum(1 for v in self.vcpus if v.online)

    @property
    def running(self) -> bool:
        """Xen's XEN_DOMINF_running: some vCPU is running."""
        return any(v.online and v.running for v in self.vcpus)

    @property
    def blocked(self) -> bool:
        """Xen's XEN_DOMINF_blocked: no online vCPU is runnable."""
        online = [v for v in self.vcpus if v.online]
        return bool(online) and all(v.blocked and not v.running for v in online)

    def mac(self, devid: int) -> str:
        """The MAC address of vif ``devid``: Xen's OUI 00:16:3e, the rest fixed by the uuid
        (so that it survives a reboot, as a configured MAC does)."""
        digits = self.uuid.replace("-", "")
        first, second, third = (int(digits[i : i + 2], 16) for i in (0, 2, 4))
        return f"00:16:3e:{first & 0x7F:02x}:{second:02x}:{(third + devid) & 0xFF:02x}"

    def interface_name(self, devid: int) -> str:
        """Dom0's name for the backend of vif ``devid`` (``vifname=`` wins, as in xl.cfg)."""
        if self.vifname is not None:
            return self.vifname if devid == 0 else f"{self.vifname}.{devid}"
        return f"vif{self.domid}.{devid}"


@dataclass
class HostState:
    name: str
    nr_cpus: int
    online_cpus: list[int]
    total_memory_kib: int
    pools: list[CpuPool]
    domains: list[Domain] = field(default_factory=list)
    next_domid: int = 1
    xen_version: str = "4.17.7"
    dom0_netns: str | None = None
    cgroup_root: str | None = None
    cpu_mhz: int = 2394
    cores_per_socket: int = 0
    threads_per_core: int = 1
    # Dom0's kernel as `xl info` reports it (uname of Dom0). `judicator-sim up` records the
    # machine's own; anything generated for a fixture sets fixed values, so that no capture
    # carries the identity of the machine it was made on.
    dom0_kernel_release: str = "6.1.0-37-amd64"
    dom0_kernel_version: str = "#1 SMP PREEMPT_DYNAMIC Debian 6.1.140-1 (2025-05-22)"
    machine: str = "x86_64"
    # Idle time of each physical CPU in ns, indexed by CPU id (what XEN_SYSCTL_getcpuinfo
    # reports: the idle vCPU's running time); the daemon adds each tick's undelivered time.
    cpu_idle_ns: list[int] = field(default_factory=list)
    # Reserved for the simulator's own bookkeeping; the fake xl ignores it.
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def max_cpu_id(self) -> int:
        return self.nr_cpus - 1

    def find_domain(self, ref: str | int) -> Domain | None:
        """The domain named ``ref``, or whose domid ``ref`` is; xl accepts either."""
        text = str(ref)
        for domain in self.domains:
            if domain.name == text:
                return domain
        if text.isdigit():
            domid = int(text)
            for domain in self.domains:
                if domain.domid == domid:
                    return domain
        return None

    def domain(self, ref: str | int) -> Domain:
        found = self.find_domain(ref)
        if found is None:
            raise DomainNotFound(str(ref))
        return found

    def pool(self, name: str) -> CpuPool:
        for pool in self.pools:
            if pool.name == name:
                return pool
        raise StateError(f"no cpupool {name!r}")

    def scheduler_of(self, domain: Domain) -> str:
        return self.pool(domain.pool).scheduler

    def add_domain(
        self,
        name: str,
        vcpus: int = 1,
        memory_kib: int = 512 * 1024,
        pinned_cpus: Sequence[int] | None = None,
        *,
        max_memory_kib: int | None = None,
        pool: str = "Pool-0",
        uuid: str | None = None,
        weight: int = 256,
        cap: int = 0,
        vifs: Iterable[int] = (0,),
        netns: str | None = None,
        cgroup: str | None = None,
        domain_type: str = "pvh",
    ) -> Domain:
        """Create a domain with the next domid and a fresh uuid, as `xl create` would.

        ``pinned_cpus`` becomes every vCPU's hard affinity (xl.cfg ``cpus=``); vCPU i starts
        on ``pinned_cpus[i % len]``. Without it vCPUs may run anywhere in their pool.
        """
        if not name or any(c.isspace() for c in name) or name.isdigit():
            raise StateError(f"invalid domain name {name!r}")
        if self.find_domain(name) is not None:
            raise StateError(f"domain {name!r} already exists")
        if vcpus < 1:
            raise StateError(f"domain {name!r}: needs at least one vCPU, not {vcpus}")
        pool_cpus = self.pool(pool).cpus or self.online_cpus
        if pinned_cpus:
            bad = [c for c in pinned_cpus if not 0 <= c < self.nr_cpus]
            if bad:
                raise StateError(f"domain {name!r}: CPUs {bad} do not exist")
            hard = cpulist_string(pinned_cpus, self.nr_cpus)
            placement = list(pinned_cpus)
        else:
            hard = "all"
            placement = list(pool_cpus)
        domain = Domain(
            name=name,
            domid=self.next_domid,
            uuid=uuid or new_uuid(),
            memory_kib=memory_kib,
            max_memory_kib=max_memory_kib if max_memory_kib is not None else memory_kib,
            vcpus=[Vcpu(id=i, cpu=placement[i % len(placement)], hard=hard) for i in range(vcpus)],
            weight=weight,
            cap=cap,
            pool=pool,
            vifs=list(vifs),
            netns=netns,
            cgroup=cgroup,
            domain_type=domain_type,
        )
        self.next_domid += 1
        self.domains.append(domain)
        return domain

    def reboot_domain(self, ref: str | int) -> Domain:
        """Give the domain a new domid (same name, uuid and config) as a Xen reboot does."""
        domain = self.domain(ref)
        if domain.domid == 0:
            raise StateError("Domain-0 cannot be rebooted by the toolstack")
        domain.domid = self.next_domid
        self.next_domid += 1
        domain.pause_count = 0
        domain.shutdown_reason = None
        domain.dying = False
        domain.cpu_time_ns = 0
        for vcpu in domain.vcpus:
            vcpu.time_ns = 0
            vcpu.running = False
            vcpu.blocked = True
        return domain

    def destroy_domain(self, ref: str | int) -> Domain:
        domain = self.domain(ref)
        if domain.domid == 0:
            raise StateError("Domain-0 cannot be destroyed")
        self.domains.remove(domain)
        return domain

    def to_json(self) -> str:
        data = asdict(self)
        data["format"] = FORMAT_VERSION
        return json.dumps(data, indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> HostState:
        data = json.loads(text)
        version = data.pop("format", None)
        if version != FORMAT_VERSION:
            raise StateError(f"state format {version!r}, expected {FORMAT_VERSION}")
        data["pools"] = [CpuPool(**p) for p in data["pools"]]
        domains = []
        for raw in data["domains"]:
            raw["vcpus"] = [Vcpu(**v) for v in raw["vcpus"]]
            domains.append(Domain(**raw))
        data["domains"] = domains
        return cls(**data)


def new_uuid() -> str:
    import uuid

    return str(uuid.uuid4())


def new_host(
    name: str,
    nr_cpus: int = 4,
    *,
    online_cpus: Sequence[int] | None = None,
    total_memory_kib: int = 16 * 1024 * 1024,
    scheduler: str = "credit2",
    dom0_vcpus: int | None = None,
    dom0_memory_kib: int = 2 * 1024 * 1024,
    dom0_pinned_cpus: Sequence[int] | None = None,
) -> HostState:
    """A fresh host: every online CPU in Pool-0, Domain-0 running, no guests."""
    if not 1 <= nr_cpus <= 4096:
        raise StateError(f"nr_cpus must be 1..4096, not {nr_cpus}")
    if scheduler not in SCHEDULERS:
        raise StateError(f"scheduler must be one of {SCHEDULERS}, not {scheduler!r}")
    online = sorted(set(online_cpus)) if online_cpus is not None else list(range(nr_cpus))
    if not online or online[0] < 0 or online[-1] >= nr_cpus:
        raise StateError(f"online CPUs {online} must be a non-empty subset of 0..{nr_cpus - 1}")
    host = HostState(
        name=name,
        nr_cpus=nr_cpus,
        online_cpus=online,
        total_memory_kib=total_memory_kib,
        pools=[CpuPool(name="Pool-0", scheduler=scheduler, cpus=list(online))],
    )
    dom0 = host.add_domain(
        "Domain-0-tmp",
        vcpus=dom0_vcpus or len(online),
        memory_kib=dom0_memory_kib,
        pinned_cpus=dom0_pinned_cpus,
        vifs=(),
        uuid="00000000-0000-0000-0000-000000000000",
    )
    dom0.name = DOM0_NAME
    dom0.domid = 0
    dom0.domain_type = "pv"
    dom0.vcpus[0].running = True
    dom0.vcpus[0].blocked = False
    host.next_domid = 1
    return host


def cpulist_string(cpus: Iterable[int], nr_cpus: int) -> str:
    """The string xl's print_bitmap makes of a CPU set over ``nr_cpus`` CPUs."""
    present = sorted({c for c in cpus if 0 <= c < nr_cpus})
    if not present:
        return "none"
    if present == list(range(nr_cpus)):
        return "all"
    ranges: list[str] = []
    start = prev = present[0]
    for cpu in [*present[1:], -2]:
        if cpu == prev + 1:
            prev = cpu
            continue
        ranges.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = cpu
    return ",".join(ranges)


def cpulist_set(text: str, nr_cpus: int) -> set[int]:
    """The CPU set of a string ``cpulist_string`` made (``all``, ``none``, ``0,2-3``)."""
    if text == "all":
        return set(range(nr_cpus))
    if text == "none":
        return set()
    cpus: set[int] = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return cpus


class StateStore:
    """The state file in ``state_dir``, read and written under its lock."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.dir = os.fspath(state_dir)
        self.path = os.path.join(self.dir, STATE_FILE)
        self.lock_path = os.path.join(self.dir, LOCK_FILE)

    @classmethod
    def from_environment(cls) -> StateStore:
        return cls(os.environ.get("XENSIM_STATE_DIR") or DEFAULT_STATE_DIR)

    @contextlib.contextmanager
    def _locked(self, mode: int) -> Iterator[None]:
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise StateError(f"cannot open {self.lock_path}: {e.strerror}") from e
        try:
            fcntl.flock(fd, mode)
            yield
        finally:
            os.close(fd)

    def _load(self) -> HostState:
        try:
            with open(self.path) as f:
                text = f.read()
        except FileNotFoundError:
            raise StateError(f"no simulated host state at {self.path}") from None
        try:
            return HostState.from_json(text)
        except (ValueError, TypeError, KeyError) as e:
            raise StateError(f"{self.path}: {e}") from e

    def _save(self, host: HostState) -> None:
        # Only the lock holder writes, so a per-process name cannot collide.
        tmp = os.path.join(self.dir, f".state.{os.getpid()}.tmp")
        try:
            with open(tmp, "w") as f:
                f.write(host.to_json())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def initialize(self, host: HostState) -> None:
        """Write ``host`` as the state, replacing any previous one."""
        os.makedirs(self.dir, exist_ok=True)
        with self._locked(fcntl.LOCK_EX):
            self._save(host)

    def read(self) -> HostState:
        """A consistent snapshot of the state; changing it changes nothing on disk."""
        with self._locked(fcntl.LOCK_SH):
            return self._load()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[HostState]:
        """Yield the state for changing; saved when the block ends without an exception."""
        with self._locked(fcntl.LOCK_EX):
            host = self._load()
            yield host
            self._save(host)
