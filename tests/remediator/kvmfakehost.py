"""A model KVM host for unit tests: `FakeHost`'s tc and ip, with VMs that behave as QEMU does.

A VM's "domid" is its QEMU pid, its interfaces are taps, its cap is its cgroup's (scheduler
"cgroup"), and it answers `judicator-kvmctl` argv as kvmctl would: refused unless the pid is
the named VM now; `pause`/`unpause` are QMP stop/cont, which do not count (a second stop is a
no-op, one cont resumes whoever paused). A VM without a QMP monitor has an unknown run state.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from remediator.host import HostState
from tests.remediator.fakehost import FakeDomain, FakeHost

KVMCTL = "judicator-kvmctl"


@dataclass
class FakeVm(FakeDomain):
    scheduler: str = "cgroup"
    qmp: bool = True  # has a QMP monitor of its own

    def vif_names(self) -> list[tuple[str, int, bool]]:
        return [(f"tap{self.domid}i{devid}", devid, False) for devid, _emu in self.vifs]


class FakeKvmHost(FakeHost):
    def observe(self, names: Iterable[str], kinds: Iterable[str]) -> HostState:
        state = super().observe(names, kinds)
        for name, dom in list(state.domains.items()):
            vm = self.domains[name]
            if isinstance(vm, FakeVm) and not vm.qmp:
                state.domains[name] = replace(dom, paused=None)
        return state

    def _execute(self, argv: list[str]) -> None:
        if argv[0] != KVMCTL:
            super()._execute(argv)
            return
        verb, rest = argv[1], argv[2:]
        pid, name = rest[rest.index("--pid") + 1], rest[rest.index("--name") + 1]
        vm = self._domain(pid)
        if vm.name != name:
            raise ValueError(f"process {pid} is VM {vm.name!r}, not {name!r}")
        if verb == "cap":
            vm.cap = int(rest[-1])
        elif verb == "pin":
            vcpu = rest[rest.index("--vcpu") + 1]
            if vcpu == "all":
                vm.affinity = [rest[-1]] * vm.vcpus
            else:
                vm.affinity[int(vcpu)] = rest[-1]
        elif verb in ("pause", "unpause"):
            if isinstance(vm, FakeVm) and not vm.qmp:
                raise ValueError(f"VM {name!r} has no QMP socket")
            vm.pauses = 1 if verb == "pause" else 0
        else:
            raise ValueError(f"kvmctl {verb}")
