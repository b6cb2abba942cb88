"""The exporter on a KVM host (`--platform=kvm`): collectors of the kvm_* metrics (docs/kvm.md).

The VMs are QEMU processes holding a KVM VM fd (`kvmtools.proc.list_vms`), listed once per
scrape and shared by every collector through the scrape (`KvmHost.vms`), as the Xen collectors
share one `xl list`. Everything is read from /proc, sysfs and debugfs, no process per scrape;
KVM's statistics also from QMP where asked (`--kvmstat.source`, exporter.kvmqmp). Every series is
labelled by the VM's name; its pid (the "domid", which changes when the VM restarts) and
uuid are in `kvm_domain_info`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence

from prometheus_client.core import Metric

from exporter.collector import Degraded
from exporter.domains import network_families
from exporter.exposition import SeriesCache, SeriesFamily, counter_family, gauge_family
from exporter.kvmqmp import QmpSource, VcpuFamilies, success_family
from exporter.toolstack import DomainStats, HostInfo, Scrape, VcpuPlacement
from kvmtools.debugfs import DebugfsLockedDown, Kind, VmStat, classify, read_vm_stats
from kvmtools.proc import (
    BoundedCmdlines,
    KvmVm,
    VcpuThread,
    list_vms,
    read_io,
    read_rss_bytes,
    read_thread_cpu_seconds,
    read_thread_wait_seconds,
)
from xentools.sysfs import Vif, read_vif_stats

log = logging.getLogger(__name__)

VMS = "kvm vms"
_PUBLISHED = (Kind.CUMULATIVE, Kind.INSTANT)
# What the shipped policies and dashboards read; '.*' for every statistic.
DEFAULT_KVMSTAT_INCLUDE = (
    "exits|irq_injections|irq_exits|halt_exits|halt_wakeup|io_exits|mmio_exits"
    "|irq_window_exits|request_irq_exits|signal_exits|nmi_injections|insn_emulation"
    "|host_state_reload|pf_taken|hypercalls"
)


class NoXenToolstack:
    """The `Toolstack` of a KVM host: it has none. A collector that asks is a Xen collector
    enabled on KVM, which the command line refuses; this is the second line."""

    def _refuse(self) -> RuntimeError:
        return RuntimeError("no Xen toolstack on a KVM host (--platform=kvm)")

    def info(self, timeout: float) -> HostInfo:
        raise self._refuse()

    def vcpu_list(self, timeout: float) -> Sequence[VcpuPlacement]:
        raise self._refuse()

    def pool_cpus(self, timeout: float) -> frozenset[int]:
        raise self._refuse()

    def domains(self, timeout: float) -> Sequence[DomainStats]:
        raise self._refuse()

    def cpu_idle(self, timeout: float) -> Mapping[int, float] | None:
        raise self._refuse()


class KvmHost:
    """The host's roots, and the VM list of a scrape (listed at most once per scrape).

    The VMs' command lines are read once each, never waited on for more than a second: a
    QEMU stuck in D state must not hang every scrape (`kvmtools.proc.BoundedCmdlines`).
    """

    def __init__(self, proc: str = "/proc", debugfs: str = "/sys/kernel/debug") -> None:
        self.proc = proc
        self.debugfs = debugfs
        self._cmdlines = BoundedCmdlines()

    def vms(self, scrape: Scrape) -> Sequence[KvmVm]:
        return scrape.once(
            VMS, lambda timeout: list_vms(self.proc, self.debugfs, cmdlines=self._cmdlines)
        )


class _KvmCollector:
    def __init__(self, host: KvmHost) -> None:
        self._host = host
        # Each VM's series text and labels, made once (the state between scrapes).
        self._series = SeriesCache()


class KvmDomainCollector(_KvmCollector):
    """Per-VM facts, CPU time of its vCPU threads, and its QEMU's resident memory.

    Sample::

        # HELP kvm_domain_info Facts about a VM (value 1) ...
        # TYPE kvm_domain_info gauge
        kvm_domain_info{domain="guest1",pid="4240",uuid=""} 1.0
        # TYPE kvm_domain_cpu_seconds_total counter
        kvm_domain_cpu_seconds_total{domain="guest1"} 12.3
        # TYPE kvm_vcpu_cpu_seconds_total counter
        kvm_vcpu_cpu_seconds_total{domain="guest1",vcpu="0"} 10.1
        # TYPE kvm_vcpu_wait_seconds_total counter
        kvm_vcpu_wait_seconds_total{domain="guest1",vcpu="0"} 0.42

    The wait is what the CPU-hog policy's KVM form judges contention by (docs/kvm.md#cpu-hog-
    on-kvm): a vCPU thread waits on a runqueue only while it wants a CPU that runs something
    else. A kernel without schedstat (no CONFIG_SCHED_INFO) has no wait series.
    """

    name = "domain"

    def collect(self, scrape: Scrape) -> Iterator[Metric]:
        info = gauge_family(
            "kvm_domain_info",
            "Facts about a VM (value 1): its QEMU's pid (changes when the VM restarts) and "
            "-uuid (empty when not given)",
            ["domain", "pid", "uuid"],
            self._series,
        )
        cpu = counter_family(
            "kvm_domain_cpu_seconds_total",
            "CPU time the VM's vCPU threads used, user and system (/proc task stat; QEMU's "
            "other threads, I/O and emulation, left out as Xen leaves out Dom0's work)",
            ["domain"],
            self._series,
        )
        vcpu_cpu = counter_family(
            "kvm_vcpu_cpu_seconds_total",
            "CPU time one vCPU thread used, user and system (/proc task stat)",
            ["domain", "vcpu"],
            self._series,
        )
        vcpu_wait = counter_family(
            "kvm_vcpu_wait_seconds_total",
            "Time one vCPU thread was runnable but waited for a host CPU (/proc task schedstat "
            "run_delay; the guest sees it as steal time)",
            ["domain", "vcpu"],
            self._series,
        )
        vcpus = gauge_family(
            "kvm_domain_vcpus",
            "The VM's vCPU threads (named CPU <n>/KVM by QEMU's debug-threads=on, else from "
            "KVM's debugfs)",
            ["domain"],
            self._series,
        )
        memory = gauge_family(
            "kvm_domain_memory_bytes",
            "Resident memory of the VM's QEMU process (/proc status VmRSS)",
            ["domain"],
            self._series,
        )
        vanished = 0
        for vm in self._host.vms(scrape):
            try:
                seconds = [
                    read_thread_cpu_seconds(vm.pid, v.tid, self._host.proc) for v in vm.vcpus
                ]
                rss = read_rss_bytes(vm.pid, self._host.proc)
            except FileNotFoundError:
                vanished += 1  # ended (or a vCPU was unplugged) since the list was made
                continue
            info.add_metric([vm.name, str(vm.pid), vm.uuid or ""], 1)
            cpu.add_metric([vm.name], sum(seconds))
            for vcpu, value in zip(vm.vcpus, seconds, strict=True):
                vcpu_cpu.add_metric([vm.name, str(vcpu.index)], value)
            for vcpu, value in self._waits(vm):
                vcpu_wait.add_metric([vm.name, str(vcpu.index)], value)
            vcpus.add_metric([vm.name], len(vm.vcpus))
            if rss is not None:
                memory.add_metric([vm.name], rss)
        if vanished:
            log.debug("%d VMs ended while being read", vanished)
        yield from (info, cpu, vcpu_cpu, vcpu_wait, vcpus, memory)

    def _waits(self, vm: KvmVm) -> list[tuple[VcpuThread, float]]:
        """Each vCPU's wait; none for a VM whose threads have no schedstat (a kernel without
        CONFIG_SCHED_INFO, or a thread that ended since its CPU time was read): the VM's
        other series stand."""
        try:
            return [(v, read_thread_wait_seconds(vm.pid, v.tid, self._host.proc)) for v in vm.vcpus]
        except FileNotFoundError:
            return []


class KvmNetworkCollector(_KvmCollector):
    """Per-tap counters from the host's sysfs, in the guest's direction (a tap's rx is what
    the guest sent), as Xen's vifs.

    Sample::

        # TYPE kvm_domain_network_transmit_bytes_total counter
        kvm_domain_network_transmit_bytes_total{domain="guest1",interface="vnet0"} 1.8e+09
    """

    name = "network"

    def __init__(self, host: KvmHost, sysfs_root: str) -> None:
        super().__init__(host)
        self._sysfs = sysfs_root

    def collect(self, scrape: Scrape) -> Iterator[Metric]:
        families = network_families("kvm", "tap", "the host's", self._series)
        for vm in self._host.vms(scrape):
            for index, tap in enumerate(vm.taps):
                try:
                    stats = read_vif_stats(Vif(tap, vm.pid, index, False), self._sysfs)
                except FileNotFoundError:
                    continue  # vanished since it was listed
                for attribute, family in families.values():
                    family.add_metric([vm.name, tap], getattr(stats, attribute))
        yield from (family for _, family in families.values())


class KvmBlockCollector(_KvmCollector):
    """What each VM's QEMU read from and wrote to storage (/proc/<pid>/io read_bytes and
    write_bytes: block-layer I/O the process caused; network storage QEMU reaches itself,
    such as NBD or librbd, does not count).

    Sample::

        # TYPE kvm_domain_block_read_bytes_total counter
        kvm_domain_block_read_bytes_total{domain="guest1"} 4.2e+08
    """

    name = "block"

    def collect(self, scrape: Scrape) -> Iterator[Metric]:
        read = counter_family(
            "kvm_domain_block_read_bytes_total",
            "Bytes the VM's QEMU process caused to be read from storage (/proc io read_bytes)",
            ["domain"],
            self._series,
        )
        written = counter_family(
            "kvm_domain_block_written_bytes_total",
            "Bytes the VM's QEMU process caused to be written to storage (/proc io write_bytes)",
            ["domain"],
            self._series,
        )
        for vm in self._host.vms(scrape):
            try:
                io = read_io(vm.pid, self._host.proc)
            except FileNotFoundError:
                continue
            read.add_metric([vm.name], io["read_bytes"])
            written.add_metric([vm.name], io["write_bytes"])
        yield from (read, written)


class KvmStatCollector(_KvmCollector):
    """KVM's per-VM statistics (vCPU ones summed over the VM's vCPUs, as debugfs has them):
    cumulative ones as counters, instant ones as gauges, from the kernel's descriptors
    (kvmtools.debugfs) or QEMU's schema (kvmtools.qmpstats); those `include` matches (the name
    without kvm_vm_ and _total). `source` (docs/kvm.md, "Two sources"): debugfs, qmp (also
    kvm_vcpu_<stat> per vCPU, exporter.kvmqmp), or auto: debugfs, and QMP for each VM whose
    debugfs directory is absent or refuses its counters (kernel lockdown).

    Sample::

        # HELP kvm_vm_exits_total KVM statistic exits (cumulative, summed over vCPUs; ...)
        # TYPE kvm_vm_exits_total counter
        kvm_vm_exits_total{domain="guest1"} 84882.0
        # TYPE kvm_vm_pages_4k gauge
        kvm_vm_pages_4k{domain="guest1"} 61440.0

    A VM whose statistics no source gave fails the collector for the scrape, with what could
    be read still served.
    """

    name = "kvmstat"

    def __init__(self, host: KvmHost, include: re.Pattern[str], source: str = "debugfs") -> None:
        super().__init__(host)
        self._include = include
        self._source = source
        self._qmp = QmpSource() if source != "debugfs" else None

    def collect(self, scrape: Scrape) -> Iterator[Metric]:
        families: dict[str, SeriesFamily] = {}
        problems: list[str] = []
        vms = self._host.vms(scrape)
        by_qmp: list[KvmVm] = []
        # auto: what debugfs gave of a VM asked over QMP, served if QMP does not answer
        fallback: dict[int, Sequence[VmStat]] = {}
        for vm in vms:
            stats, problem = self._debugfs(vm) if self._source != "qmp" else ([], "")
            if self._source == "qmp" and vm.qmp_socket is None:
                problem = f"{vm.name}: no QMP unix socket on its command line"
            if (
                self._qmp is not None
                and vm.qmp_socket is not None
                and (problem or self._source == "qmp")
            ):
                by_qmp.append(vm)
                fallback[vm.pid] = stats
                continue
            self._add(families, vm.name, stats)
            if problem:
                problems.append(problem)
        vcpus = VcpuFamilies(self._series)
        if by_qmp and self._qmp is not None:
            answers = self._qmp.read(by_qmp, scrape, [vm.pid for vm in vms])
            problems.extend(answers.problems)
            for vm in by_qmp:
                qmp_stats = answers.stats.get(vm.pid)
                if qmp_stats is None:
                    self._add(families, vm.name, fallback[vm.pid])
                else:
                    self._add(families, vm.name, qmp_stats.vm)
                    vcpus.add(vm.name, qmp_stats, self._include)
            yield success_family(answers.success)
        yield from (families[name] for name in sorted(families))
        yield from vcpus
        if problems:
            raise Degraded("; ".join(problems))

    def _debugfs(self, vm: KvmVm) -> tuple[Sequence[VmStat], str]:
        """The VM's statistics from debugfs, and what went wrong ("" if nothing)."""
        if vm.stats_dir is None:
            return [], f"{vm.name}: no KVM debugfs directory (is debugfs mounted?)"
        problem = ""
        try:
            values = read_vm_stats(vm.stats_dir)
        except FileNotFoundError:
            return [], ""  # the VM ended since it was listed
        except DebugfsLockedDown as error:
            problem = f"{vm.name}: {error}"
            values = error.partial
        return classify(vm.stats_dir, values), problem

    def _add(self, families: dict[str, SeriesFamily], vm: str, stats: Iterable[VmStat]) -> None:
        for stat in stats:
            # peaks and histograms are not published: see kvmtools.debugfs
            if stat.kind in _PUBLISHED and self._include.fullmatch(stat.name):
                family = families.get(stat.name)
                if family is None:
                    family = families[stat.name] = self._family(stat.name, stat.kind)
                family.add_metric([vm], stat.value)

    def _family(self, name: str, kind: Kind) -> SeriesFamily:
        if kind is Kind.CUMULATIVE:
            return counter_family(
                f"kvm_vm_{name}_total",
                f"KVM statistic {name} (cumulative, summed over the VM's vCPUs where it is "
                "a vCPU statistic; debugfs kvm/<pid>-<fd> or QMP query-stats; restarts at 0 "
                "with the VM)",
                ["domain"],
                self._series,
            )
        return gauge_family(
            f"kvm_vm_{name}",
            f"KVM statistic {name} (instant value, summed over the VM's vCPUs where it is "
            "a vCPU statistic; debugfs kvm/<pid>-<fd> or QMP query-stats)",
            ["domain"],
            self._series,
        )


class KvmTaps:
    """The flowdirection collector's interfaces on KVM: the VMs' taps, keyed by QEMU pid.

    The scrape's own VM list (no second /proc walk) is taken in `prefetch`, before the
    background read that counts its taps starts.
    """

    kind = "tap"

    def __init__(self, host: KvmHost) -> None:
        self._host = host
        self._taps: list[Vif] = []

    def prefetch(self, scrape: Scrape) -> None:
        try:
            vms = self._host.vms(scrape)
        except Exception as error:  # reported by collect, which asks again and fails
            log.debug("flowdirection: no VM list: %s", error)
            return
        self._taps = [
            Vif(tap, vm.pid, index, False) for vm in vms for index, tap in enumerate(vm.taps)
        ]

    def interfaces(self) -> Sequence[Vif]:
        return list(self._taps)

    def owners(self, scrape: Scrape) -> Mapping[int, str]:
        return {vm.pid: vm.name for vm in self._host.vms(scrape)}
