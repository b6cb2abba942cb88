"""The remediator's `Toolstack` on a KVM host (`platform: kvm`): the VMs `kvmtools.proc` finds in
/proc, a VM's "domid" being its QEMU pid.

- run state: QMP `query-status` on the VM's own monitor, asked only when a pause needs it
  (`paused`): a VM without a monitor, or one that does not answer in time, is unknown, and only
  a pause on it waits (ObserveError); shaping and caps do not need it.
- scheduler: "cgroup" when the cgroup holding all the VM's threads is its own and has CPU
  bandwidth control, else "none" (a cap is refused, `unsupported_scheduler`); the cap is that
  cgroup's quota as a percentage of one CPU (0 = none), what `judicator-kvmctl cap` writes.
- hard affinity: each vCPU thread's allowed CPUs, in vCPU order.
- interfaces: the VM's taps as `Vif`s (name = tap, domid = pid, devid = index), so the
  shaping plans run on them unchanged.

Every read goes through the configured /proc root.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from kvmtools import cgroup, qmp
from kvmtools.proc import KvmVm, is_vm_link, list_vms, read_thread_affinity
from remediator.observe import ObserveError, ToolstackDomain
from remediator.plan import KVM_CGROUP_SCHEDULER
from xentools.sysfs import Vif

log = logging.getLogger(__name__)

NO_CGROUP = "none"


class KvmToolstack:
    def __init__(
        self,
        proc: str = "/proc",
        debugfs: str = "/sys/kernel/debug",
        timeout: float = 5.0,
        *,
        is_vm: Callable[[str], bool] = is_vm_link,
    ) -> None:
        """`is_vm`: which fd link makes a process a KVM VM (`kvmtools.proc.list_vms`)."""
        self._proc = proc
        self._debugfs = debugfs
        self._timeout = timeout
        self._is_vm = is_vm

    def _vms(self) -> list[KvmVm]:
        try:
            # debugfs: the vCPU threads of a QEMU run without -name debug-threads=on.
            return list_vms(self._proc, self._debugfs, is_vm=self._is_vm)
        except OSError as error:
            raise ObserveError(f"listing the KVM VMs failed: {error}") from None

    def _vm(self, pid: int) -> KvmVm:
        for vm in self._vms():
            if vm.pid == pid:
                return vm
        raise ObserveError(f"VM process {pid} is gone")

    def domains(self) -> list[ToolstackDomain]:
        return [
            ToolstackDomain(
                name=vm.name, domid=vm.pid, paused=None, vcpus=len(vm.vcpus), uuid=vm.uuid
            )
            for vm in self._vms()
        ]

    def paused(self, domid: int) -> bool:
        vm = self._vm(domid)
        if vm.qmp_socket is None:
            raise ObserveError(f"VM {vm.name} has no QMP monitor to ask")
        try:
            return qmp.query_status(vm.qmp_socket, self._timeout) == "paused"
        except qmp.QmpError as error:
            raise ObserveError(f"VM {vm.name}: {error}") from None

    def _cgroup(self, domid: int) -> tuple[cgroup.CpuCgroup, str] | None:
        try:
            found = cgroup.vm_cgroup(domid, self._proc)
            if cgroup.foreign_processes(found[1], domid, self._proc):
                return None
            return found
        except cgroup.CgroupError as error:
            log.debug("process %d: %s", domid, error)
            return None
        except OSError as error:
            raise ObserveError(f"reading the cgroup of process {domid}: {error}") from None

    def scheduler(self, domid: int) -> str:
        found = self._cgroup(domid)
        if found is None:
            return NO_CGROUP
        try:
            cgroup.read_cpu_max(found[1], found[0].version)
        except FileNotFoundError:
            return NO_CGROUP  # the cpu controller is not enabled there
        except (OSError, ValueError) as error:
            raise ObserveError(f"reading the CPU cap of process {domid}: {error}") from None
        return KVM_CGROUP_SCHEDULER

    def cap(self, domid: int, scheduler: str) -> int:
        if scheduler != KVM_CGROUP_SCHEDULER:
            return 0
        found = self._cgroup(domid)
        if found is None:
            raise ObserveError(f"the cgroup of process {domid} changed while being read")
        try:
            return cgroup.cap_percent(cgroup.read_cpu_max(found[1], found[0].version))
        except (OSError, ValueError) as error:
            raise ObserveError(f"reading the CPU cap of process {domid}: {error}") from None

    def hard_affinity(self, domid: int) -> list[str]:
        vm = self._vm(domid)
        # The plans address vCPUs by position (`plan_release`): a gap would pin the wrong one.
        if [t.index for t in vm.vcpus] != list(range(len(vm.vcpus))):
            raise ObserveError(f"VM {vm.name}: vCPU threads {[t.index for t in vm.vcpus]}")
        try:
            return [read_thread_affinity(domid, t.tid, self._proc) for t in vm.vcpus]
        except (OSError, ValueError) as error:
            raise ObserveError(f"VM {vm.name}: vCPU affinity: {error}") from None

    def list_taps(self) -> list[Vif]:
        """Every VM's taps, as the observer takes Xen's vifs."""
        return [
            Vif(name=tap, domid=vm.pid, devid=devid, emulated=False)
            for vm in self._vms()
            for devid, tap in enumerate(vm.taps)
        ]
