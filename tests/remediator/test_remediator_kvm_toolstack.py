"""KvmToolstack on a fake /proc (tests/kvmtools/fakehost.py): VMs as domains, taps as vifs,
vCPU affinity, the cgroup scheduler, and a run state asked only when a pause needs it."""

from __future__ import annotations

from pathlib import Path

import pytest

from remediator.kvmtoolstack import NO_CGROUP, KvmToolstack
from remediator.observe import HostObserver, ObserveError, ToolstackDomain
from remediator.plan import KVM_CGROUP_SCHEDULER, Tools
from remediator.runner import Result
from tests.kvmtools.fakehost import FakeVm, build, read_args
from xentools.sysfs import Vif

UUID = "1b2c3d4e-5f60-4a7b-8c9d-0e1f2a3b4c5d"


def _host(tmp_path: Path) -> KvmToolstack:
    web = ["qemu-system-x86_64", "-name", "guest=web01,debug-threads=on", "-uuid", UUID,
           "-qmp", f"unix:{tmp_path}/web01.qmp,server=on,wait=off"]  # fmt: skip
    proc, debug = build(
        tmp_path,
        FakeVm(100, web, vcpus={0: (1, 1), 1: (2, 2)}, taps=["vnet3", "vnet4"], cpus="2-3"),
        FakeVm(200, read_args("handmade-plain-kvmlab.args"), taps=["tap-b"]),
        FakeVm(300, ["qemu-system-x86_64", "-name", "gapped"], vcpus={0: (1, 1), 2: (1, 1)}),
    )
    return KvmToolstack(proc, debug, timeout=1.0)


def test_vms_are_domains_by_pid_with_their_taps_as_vifs(tmp_path: Path) -> None:
    kvm = _host(tmp_path)
    domains = {d.name: d for d in kvm.domains()}
    assert domains["web01"] == ToolstackDomain("web01", 100, None, 2, UUID)
    assert domains["web01"].paused is None  # QMP is asked only for a pause
    assert [vif for vif in kvm.list_taps() if vif.domid == 100] == [
        Vif("vnet3", 100, 0, False),
        Vif("vnet4", 100, 1, False),
    ]
    assert kvm.hard_affinity(100) == ["2-3", "2-3"]


def test_gaps_in_vcpu_indexes_and_a_silent_monitor_are_unreadable(tmp_path: Path) -> None:
    kvm = _host(tmp_path)
    with pytest.raises(ObserveError, match="vCPU threads"):
        kvm.hard_affinity(300)
    with pytest.raises(ObserveError, match="web01"):
        kvm.paused(100)  # its socket path has nobody listening
    with pytest.raises(ObserveError, match="no QMP monitor"):
        kvm.paused(300)


def test_a_vm_in_a_cgroup_that_is_not_its_own_has_no_cap(tmp_path: Path) -> None:
    kvm = _host(tmp_path)
    # The fake /proc has no mount table: no cpu hierarchy, so nothing to cap.
    assert kvm.scheduler(100) == NO_CGROUP != KVM_CGROUP_SCHEDULER
    assert kvm.cap(100, NO_CGROUP) == 0


class _NoCommands:
    def run(self, command: object) -> Result:
        raise AssertionError(f"ran {command}")


def test_an_unknown_run_state_is_unknown_only_for_a_pause(tmp_path: Path) -> None:
    kvm = _host(tmp_path)
    observer = HostObserver(
        kvm, _NoCommands(), Tools(), lambda: [], lambda _wanted: (frozenset(), {})
    )
    assert observer.observe(["web01"], ["cpu_pin"]).domains["web01"].paused is None
    seen = observer.observe(["web01", "gapped"], ["pause"]).domains
    # Each VM's own answer (none here): the other VMs of a read are not held up.
    assert (seen["web01"].paused, seen["gapped"].paused) == (None, None)
    assert seen["web01"].hard_affinity == ()
