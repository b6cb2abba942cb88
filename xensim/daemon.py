"""The simulated hypervisor's clock: measure what guests did, advance the counters, ~10 Hz.

Started detached by `judicator-sim up` as `python -m xensim.daemon --state-dir DIR`. Each tick
it measures every domain (packets on its vifs from Dom0's /proc/net/dev, CPU time and page
faults of its cgroup), asks `xensim.model` what Xen would have counted, adds that to the
counter file through `xensim.perfc`, moves the domains' CPU times forward in the state, and
(once a second) rewrites the simulated blkback statistics. It writes its pid to
`DIR/daemon.pid`, exits cleanly on SIGTERM, and keeps going when a guest vanishes under it.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import random
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from xensim import cgroups, counters, model, perfc
from xensim.cli import LOG_LEVELS
from xensim.host import enter_netns
from xensim.state import Domain, HostState, StateError, StateStore, cpulist_set

log = logging.getLogger(__name__)

PIDFILE = "daemon.pid"
VBD_DEVICE = 51712  # xvda: major 202, minor 0, as blkback names it (vbd-<domid>-51712)
SECTOR = 512
VBD_EVERY_SECONDS = 1.0
# A blkback request without indirect descriptors carries at most 11 segments of 4 KiB.
REQUEST_BYTES = 11 * 4096
DAEMON_NICE = -10


@dataclass(frozen=True)
class InterfaceStats:
    rx_bytes: int
    rx_packets: int
    tx_bytes: int
    tx_packets: int


def parse_net_dev(text: str) -> dict[str, InterfaceStats]:
    """Parse /proc/net/dev (two header lines, then `name: rx... tx...`)."""
    stats: dict[str, InterfaceStats] = {}
    for line in text.splitlines()[2:]:
        name, sep, rest = line.partition(":")
        fields = rest.split()
        if not sep or len(fields) < 16:
            continue
        stats[name.strip()] = InterfaceStats(
            rx_bytes=int(fields[0]),
            rx_packets=int(fields[1]),
            tx_bytes=int(fields[8]),
            tx_packets=int(fields[9]),
        )
    return stats


@dataclass
class _Sample:
    """Cumulative readings of one domain incarnation (name + domid), for deltas."""

    cpu_ns: int = 0
    page_faults: int = 0
    sent_packets: int = 0
    received_packets: int = 0


@dataclass
class _DiskAccount:
    """A guest incarnation's block I/O as blkback would count it, since its domid started.

    Real blkio figures when the kernel accounts them for the cgroup; otherwise the bytes the
    guest's processes read and wrote at the storage layer (/proc/<pid>/io), accumulated per
    process, cut into blkback requests of at most `REQUEST_BYTES`.
    """

    domid: int
    blkio_base: cgroups.BlockIO
    seen: dict[int, tuple[int, int]] = field(default_factory=dict)
    read_bytes: int = 0
    write_bytes: int = 0

    def update(self, cgroup: str) -> cgroups.BlockIO:
        blkio = cgroups.block_io(cgroup)
        if blkio != cgroups.BlockIO():
            base = self.blkio_base
            return cgroups.BlockIO(
                blkio.read_requests - base.read_requests,
                blkio.write_requests - base.write_requests,
                blkio.read_bytes - base.read_bytes,
                blkio.write_bytes - base.write_bytes,
            )
        current = cgroups.process_io(cgroup)
        for pid, (read, written) in current.items():
            old_read, old_written = self.seen.get(pid, (0, 0))
            self.read_bytes += max(read - old_read, 0)
            self.write_bytes += max(written - old_written, 0)
        self.seen = current
        return cgroups.BlockIO(
            -(-self.read_bytes // REQUEST_BYTES),
            -(-self.write_bytes // REQUEST_BYTES),
            self.read_bytes,
            self.write_bytes,
        )


@dataclass
class Daemon:
    state_dir: Path
    interval: float = 0.1
    seed: int | None = None
    samples: dict[tuple[str, int], _Sample] = field(default_factory=dict)
    disks: dict[str, _DiskAccount] = field(default_factory=dict)
    last_vbd: float = 0.0
    stopping: bool = False

    def __post_init__(self) -> None:
        self.store = StateStore(self.state_dir)
        self.rng = random.Random(self.seed)
        self.last_tick = time.monotonic()

    # -- measuring --

    def _measure(self, domain: Domain, net: dict[str, InterfaceStats]) -> _Sample:
        sample = _Sample()
        if domain.cgroup:
            with contextlib.suppress(OSError, ValueError, cgroups.CgroupError):
                sample.cpu_ns = cgroups.cpu_usage_ns(domain.cgroup)
            sample.page_faults = cgroups.page_faults(domain.cgroup)
        for interface in _interfaces(domain):
            stats = net.get(interface)
            if stats is not None:
                # Dom0's rx on a vif is what the guest sent; its tx is what the guest got.
                sample.sent_packets += stats.rx_packets
                sample.received_packets += stats.tx_packets
        return sample

    def _activity(
        self, host: HostState, net: dict[str, InterfaceStats]
    ) -> list[model.DomainActivity]:
        activities = []
        seen: set[tuple[str, int]] = set()
        for domain in host.domains:
            key = (domain.name, domain.domid)
            seen.add(key)
            now = self._measure(domain, net)
            before = self.samples.get(key, now)
            self.samples[key] = now
            activities.append(
                model.DomainActivity(
                    name=domain.name,
                    vcpu_cpus=tuple(v.cpu for v in domain.vcpus if v.online),
                    is_dom0=domain.domid == 0,
                    paused=domain.paused or domain.shutdown_reason is not None,
                    cpu_ns=max(0, now.cpu_ns - before.cpu_ns),
                    sent_packets=max(0, now.sent_packets - before.sent_packets),
                    received_packets=max(0, now.received_packets - before.received_packets),
                    page_faults=max(0, now.page_faults - before.page_faults),
                    weight=domain.weight,
                )
            )
        for key in set(self.samples) - seen:
            del self.samples[key]
        return activities

    # -- one tick --

    def tick(self) -> None:
        now = time.monotonic()
        seconds, self.last_tick = now - self.last_tick, now
        net = _read_net_dev()
        # One transaction for the whole tick: the CPU positions used for the counters and the
        # state they come from cannot change under it (`offline-cpu` takes the same lock
        # before the counter file's, as this does).
        with self.store.transaction() as host:
            activity = self._activity(host, net)
            increments = model.step(
                model.Tick(
                    seconds=seconds,
                    online_cpus=tuple(host.online_cpus),
                    domains=tuple(activity),
                    shadow=bool(host.extra.get("shadow", False)),
                ),
                self.rng,
            )
            _apply_counters(self.state_dir, host, increments)
            _advance_state(host, activity, increments, seconds)
        disks = self._account_disks(host)
        if now - self.last_vbd >= VBD_EVERY_SECONDS:
            self.last_vbd = now
            self._write_vbds(disks)

    def _account_disks(self, host: HostState) -> dict[int, cgroups.BlockIO]:
        """Every tick, so that short-lived processes' I/O is seen before they exit."""
        found: dict[int, cgroups.BlockIO] = {}
        for domain in host.domains:
            if domain.domid == 0 or not domain.cgroup:
                continue
            disk = self.disks.get(domain.name)
            if disk is None or disk.domid != domain.domid:
                # blkback's counters start at 0 with each domid; blkio's do not.
                base = cgroups.block_io(domain.cgroup) if disk is not None else cgroups.BlockIO()
                disk = _DiskAccount(domain.domid, base)
                self.disks[domain.name] = disk
            found[domain.domid] = disk.update(domain.cgroup)
        for name in set(self.disks) - {d.name for d in host.domains}:
            del self.disks[name]
        return found

    def _write_vbds(self, disks: dict[int, cgroups.BlockIO]) -> None:
        root = self.state_dir / "sysfs" / "bus" / "xen-backend" / "devices"
        root.mkdir(parents=True, exist_ok=True)
        wanted: set[str] = set()
        for domid, io in disks.items():
            directory = root / f"vbd-{domid}-{VBD_DEVICE}"
            wanted.add(directory.name)
            stats = directory / "statistics"
            stats.mkdir(parents=True, exist_ok=True)
            values = {
                "rd_req": io.read_requests,
                "wr_req": io.write_requests,
                "rd_sect": io.read_bytes // SECTOR,
                "wr_sect": io.write_bytes // SECTOR,
                "oo_req": 0,
                "f_req": 0,
                "ds_req": 0,
            }
            for name, value in values.items():
                _write_atomically(stats / name, f"{max(value, 0)}\n")
        for stale in root.iterdir():
            if stale.name.startswith("vbd-") and stale.name not in wanted:
                _remove_tree(stale)

    # -- loop --

    def run(self) -> None:
        next_tick = time.monotonic()
        while not self.stopping:
            if not self.store.exists():
                log.info("state %s is gone; stopping", self.store.path)
                return
            try:
                self.tick()
            except StateError as error:
                log.warning("tick skipped: %s", error)
            except (OSError, KeyError, IndexError, ValueError) as error:
                # A guest vanishing mid-tick (cgroup or netns removed) or a CPU going offline
                # between measuring and counting must not stop the host: the next tick is fine.
                log.warning("tick failed: %s", error)
            next_tick += self.interval
            delay = next_tick - time.monotonic()
            if delay < 0:
                next_tick = time.monotonic()
                continue
            time.sleep(delay)


def _advance_state(
    host: HostState,
    activity: list[model.DomainActivity],
    increments: model.Increments,
    seconds: float,
) -> None:
    """CPU time into domains and vCPUs, vCPU run states, vCPUs kept on allowed CPUs."""
    busy = {a.name: a for a in activity}
    online = set(host.online_cpus)
    idle = host.cpu_idle_ns
    idle.extend([0] * (host.nr_cpus - len(idle)))
    del idle[host.nr_cpus :]
    for cpu, added_idle in increments.idle_ns.items():
        if 0 <= cpu < host.nr_cpus:
            idle[cpu] += added_idle
    # What the domains wanted of a saturated CPU and did not get (credit2's runnable time);
    # the simulator's own bookkeeping, for docs and tests, not shown by any toolstack call.
    waiting = host.extra.setdefault("cpu_waiting_ns", {})
    for name, added_wait in increments.waiting_ns.items():
        waiting[name] = int(waiting.get(name, 0)) + added_wait
    for name in set(waiting) - {d.name for d in host.domains}:
        del waiting[name]
    for domain in host.domains:
        _keep_vcpus_placed(host, domain, online)
        added = increments.cpu_time_ns.get(domain.name, 0)
        online_vcpus = [v for v in domain.vcpus if v.online]
        if not online_vcpus:
            continue
        domain.cpu_time_ns += added
        share = added // len(online_vcpus)
        utilisation = share / (seconds * 1e9) if seconds > 0 else 0.0
        for vcpu in online_vcpus:
            vcpu.time_ns += share
            if domain.domid == 0 and vcpu.id == 0:
                # The toolstack asking runs on Dom0's first vCPU.
                vcpu.running, vcpu.blocked = True, False
            elif domain.name in busy and not busy[domain.name].paused:
                vcpu.running = utilisation > 0.5
                vcpu.blocked = utilisation < 0.05
            else:
                vcpu.running, vcpu.blocked = False, True


def _interfaces(domain: Domain) -> list[str]:
    names = [domain.interface_name(devid) for devid in domain.vifs]
    if domain.emu_vif and domain.vifs:
        names.append(f"{domain.interface_name(domain.vifs[0])}-emu")
    return names


def _keep_vcpus_placed(host: HostState, domain: Domain, online: set[int]) -> None:
    """A vCPU only runs on an online CPU of its hard affinity and its pool, as Xen ensures."""
    try:
        pool_cpus = set(host.pool(domain.pool).cpus) or online
    except StateError:
        pool_cpus = online
    for vcpu in domain.vcpus:
        allowed = sorted(cpulist_set(vcpu.hard, host.nr_cpus) & online & pool_cpus)
        if not allowed:
            # Xen breaks the affinity rather than strand the vCPU ("Breaking affinity for
            # %pv" in cpu_disable_scheduler): the hard affinity becomes all CPUs.
            vcpu.hard = "all"
            allowed = sorted(online & pool_cpus) or sorted(online)
        if vcpu.cpu not in allowed:
            vcpu.cpu = allowed[vcpu.id % len(allowed)]


def _read_net_dev() -> dict[str, InterfaceStats]:
    return parse_net_dev(Path("/proc/net/dev").read_text())


def _apply_counters(state_dir: Path, host: HostState, increments: model.Increments) -> None:
    """Add the increments to the counter file, CPU ids mapped to online-CPU positions.

    The model speaks of every counter it knows; a build without some (shadow paging, credit
    schedulers) simply does not count them.
    """
    catalogue = counters.CATALOGUES.get(str(host.extra.get("catalogue", "")), counters.DEBIAN_12)
    known = {c.name for c in catalogue.counters}
    position = {cpu: index for index, cpu in enumerate(sorted(host.online_cpus))}
    per_cpu = {
        (name, position[cpu]): value
        for (name, cpu), value in increments.per_cpu.items()
        if cpu in position and name in known
    }
    arrays = {key: value for key, value in increments.arrays.items() if key[0] in known}
    perfc.update(state_dir / perfc.STATE_FILE, per_cpu=per_cpu, arrays=arrays)


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    temporary.replace(path)


def _remove_tree(directory: Path) -> None:
    for path in sorted(directory.rglob("*"), reverse=True):
        with contextlib.suppress(OSError):
            path.rmdir() if path.is_dir() else path.unlink()
    with contextlib.suppress(OSError):
        directory.rmdir()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m xensim.daemon", description=__doc__)
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between ticks")
    parser.add_argument("--dom0-netns", help="Dom0's network namespace, when it has its own")
    parser.add_argument("--seed", type=int, help="seed of the model's noise (reproducible runs)")
    parser.add_argument("--log.level", dest="log_level", choices=list(LOG_LEVELS), default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=LOG_LEVELS[args.log_level], format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.dom0_netns:
        enter_netns(args.dom0_netns)
    # The simulated hypervisor must not be starved by the guests it simulates: a late tick
    # makes counters arrive in bursts that readers would take for the guests' behaviour.
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, DAEMON_NICE)
    daemon = Daemon(args.state_dir, interval=args.interval, seed=args.seed)

    def stop(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping", signum)
        daemon.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    pidfile = args.state_dir / PIDFILE
    _write_atomically(pidfile, f"{os.getpid()}\n")
    log.info("ticking every %.3fs for %s", args.interval, args.state_dir)
    try:
        daemon.run()
    finally:
        with contextlib.suppress(OSError):
            if pidfile.read_text().strip() == str(os.getpid()):
                pidfile.unlink()


if __name__ == "__main__":
    main()
