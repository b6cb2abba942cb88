"""The QMP source on a real QEMU holding a real KVM VM on this machine (stopped with -S: the
PVM-flavoured /dev/kvm here creates VMs and vCPUs but cannot run a guest, so every statistic
is 0; what is real is QEMU's answers, their schema and the vCPU map)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from exporter.collector import Exporter
from exporter.kvm import KvmHost, KvmStatCollector, NoXenToolstack
from exporter.toolstack import Scrape
from kvmtools.proc import KvmVm, list_vms
from kvmtools.qmpstats import QmpStatsReader
from tests.kvmtools import test_kvmtools_live as live
from tests.support import require, wait_for

start_qemu = live.start_qemu  # the fixture: QEMU with -S and a QMP socket, always killed


class OnlyOurs(KvmHost):
    """This machine's real /proc, but only the test's own QEMU: other VMs here are not ours
    to ask (a QMP monitor serves one client at a time)."""

    def __init__(self, pid: int, debugfs: str) -> None:
        super().__init__("/proc", debugfs)
        self._pid = pid

    def vms(self, scrape: Scrape) -> Sequence[KvmVm]:
        return [vm for vm in super().vms(scrape) if vm.pid == self._pid]


def test_qmp_source_on_a_real_kvm_qemu(start_qemu: live.Start, tmp_path: Path) -> None:
    require(live.kvm_creates_vms(), "needs a /dev/kvm that opens")
    process = start_qemu("q1", "-accel", "kvm", "-smp", "2")
    no_debugfs = str(tmp_path / "no-debugfs")  # auto must then ask QMP
    wait_for(
        lambda: any(
            vm.pid == process.pid and len(vm.vcpus) == 2 for vm in list_vms(debugfs=no_debugfs)
        ),
        20,
        "the VM and its two vCPU threads",
    )
    stats = QmpStatsReader().read(process.pid, str(tmp_path / "q1.qmp"), 3)
    assert list(stats.vcpus) == [0, 1]
    assert {stat.name for stat in stats.vm} >= {"exits", "irq_injections", "pages_4k", "blocking"}

    collector = KvmStatCollector(
        OnlyOurs(process.pid, no_debugfs), re.compile("exits|blocking"), "auto"
    )
    text = Exporter([collector], NoXenToolstack(), 3, 9).render().decode()
    assert 'xen_exporter_collector_success{collector="kvmstat"} 1.0' in text
    assert 'xen_exporter_kvmstat_qmp_success{domain="q1"} 1.0' in text
    assert 'kvm_vm_exits_total{domain="q1"} 0.0' in text
    assert 'kvm_vm_blocking{domain="q1"} ' in text
    for vcpu in (0, 1):
        assert f'kvm_vcpu_exits_total{{domain="q1",vcpu="{vcpu}"}} 0.0' in text
