"""The kvmstat collector's second source: QMP `query-stats` of each VM (docs/kvm.md, "Two
sources"), for hosts whose debugfs refuses KVM's counters (kernel lockdown) or is not mounted,
and for the per-vCPU statistics debugfs does not have.

Per scrape, each VM asked is one short connection to its QMP socket (kvmtools.qmpstats), all
VMs in parallel threads: a VM whose QEMU does not answer costs its own connection's timeout
(the command timeout, within the scrape's budget), never the other VMs' answers, and is
reported in `xen_exporter_kvmstat_qmp_success{domain} 0`. Threads rather than one VM after
another within the deadline because a hung VM then delays nobody; on speed they measured even
to 2x better (bench/kvmqmp.py, docs/kvm.md "Two sources": ~1 ms of exporter CPU per 2-vCPU
VM, ~5 ms per 16-vCPU VM, QEMU's JSON being most of it).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.exposition import SeriesCache, SeriesFamily, counter_family, gauge_family
from exporter.toolstack import Scrape
from kvmtools.debugfs import Kind
from kvmtools.proc import KvmVm
from kvmtools.qmpstats import QmpStatsReader, QmpVmStats

log = logging.getLogger(__name__)

SOURCES = ("auto", "debugfs", "qmp")
# VMs asked at once. A VM that never answers holds a thread until its command timeout, so
# this many hung VMs delay the others' start, never past the scrape's deadline.
QMP_THREADS = 8


@dataclass
class QmpAnswers:
    """One scrape's QMP reads: statistics by pid, and each asked VM's name and outcome."""

    stats: dict[int, QmpVmStats] = field(default_factory=dict)
    success: dict[str, bool] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


class QmpSource:
    """Reads the statistics of the VMs given, in parallel, within the scrape's deadline."""

    def __init__(self, reader: QmpStatsReader | None = None, threads: int = QMP_THREADS) -> None:
        self._reader = reader or QmpStatsReader()
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="qmp")

    def read(self, vms: Sequence[KvmVm], scrape: Scrape, alive: Sequence[int]) -> QmpAnswers:
        """`vms` each have a QMP socket; `alive` are every VM's pids (the rest are forgotten)."""
        self._reader.forget_others(alive)
        answers = QmpAnswers()
        futures: dict[Future[QmpVmStats], KvmVm] = {
            self._executor.submit(self._read_one, vm, scrape): vm for vm in vms
        }
        done, _ = wait(futures, timeout=max(0.0, scrape.deadline - time.monotonic()))
        for future, vm in futures.items():
            error = future.exception() if future in done else None
            if future in done and error is None:
                answers.stats[vm.pid] = future.result()
                answers.success[vm.name] = True
                continue
            answers.success[vm.name] = False
            reason = error or "no answer within the scrape's time budget"
            answers.problems.append(f"{vm.name}: QMP {vm.qmp_socket}: {reason}")
        return answers

    def _read_one(self, vm: KvmVm, scrape: Scrape) -> QmpVmStats:
        assert vm.qmp_socket is not None
        # taken when the connection starts, not when it was queued behind hung VMs
        return self._reader.read(vm.pid, vm.qmp_socket, scrape.timeout())


def success_family(success: Mapping[str, bool]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "xen_exporter_kvmstat_qmp_success",
        "1 if the VM's QMP monitor answered query-stats in this scrape, else 0 (only VMs the "
        "kvmstat collector asked over QMP; --kvmstat.source)",
        labels=["domain"],
    )
    for name, ok in sorted(success.items()):
        family.add_metric([name], 1 if ok else 0)
    return family


class VcpuFamilies:
    """kvm_vcpu_<stat>_total (cumulative) and kvm_vcpu_<stat> (instant) per vCPU, from QMP's
    vcpu target; those `include` matches, as for the VM-level ones.

    Sample::

        # TYPE kvm_vcpu_exits_total counter
        kvm_vcpu_exits_total{domain="guest1",vcpu="0"} 84885.0
    """

    def __init__(self, series: SeriesCache) -> None:
        self._series = series
        self._families: dict[str, SeriesFamily] = {}

    def add(self, vm: str, stats: QmpVmStats, include: re.Pattern[str]) -> None:
        for index, vcpu_stats in stats.vcpus.items():
            for stat in vcpu_stats:
                if stat.kind in (Kind.CUMULATIVE, Kind.INSTANT) and include.fullmatch(stat.name):
                    self._family(stat.name, stat.kind).add_metric([vm, str(index)], stat.value)

    def _family(self, name: str, kind: Kind) -> SeriesFamily:
        family = self._families.get(name)
        if family is not None:
            return family
        if kind is Kind.CUMULATIVE:
            family = counter_family(
                f"kvm_vcpu_{name}_total",
                f"KVM vCPU statistic {name} (cumulative; QMP query-stats target vcpu, kind from "
                "QEMU's query-stats-schemas; restarts at 0 with the VM)",
                ["domain", "vcpu"],
                self._series,
            )
        else:
            family = gauge_family(
                f"kvm_vcpu_{name}",
                f"KVM vCPU statistic {name} (instant value; QMP query-stats target vcpu)",
                ["domain", "vcpu"],
                self._series,
            )
        self._families[name] = family
        return family

    def __iter__(self) -> Iterator[Metric]:
        return (self._families[name] for name in sorted(self._families))
