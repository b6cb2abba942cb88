"""A fake KVM host as files: /proc entries of QEMU processes and KVM's debugfs, in tmp_path.

fd links are real symlinks whose text is what the kernel shows (`anon_inode:kvm-vm`,
`/dev/net/tun`), so the readers' `os.readlink` reads them as on a host.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kvmtools import debugfs

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "kvm"

STATUS = "Name:\tqemu-system-x86\nTgid:\t{pid}\nVmRSS:\t  {rss_kb} kB\nCpus_allowed_list:\t{cpus}\n"
IO = (
    "rchar: 1000\nwchar: 2000\nsyscr: 10\nsyscw: 20\n"
    "read_bytes: {read}\nwrite_bytes: {write}\ncancelled_write_bytes: 0\n"
)


def stat_line(tid: int, comm: str, utime: int, stime: int, start: int = 6892169) -> str:
    return (
        f"{tid} ({comm}) S 1 {tid} 1 0 -1 138412096 120 0 0 0 {utime} {stime} 0 0 20 0 3 0 "
        f"{start} 441020416 8427 18446744073709551615 1 1 0 0 0 0 0 4100 16963 0 0 0 -1 1 0 0 0\n"
    )


def read_args(name: str) -> list[str]:
    return (FIXTURES / name).read_text().splitlines()


def debugfs_lines(name: str) -> list[tuple[str, int, str]]:
    """(stat, mode, value) of a `*-debugfs.txt` fixture."""
    rows = []
    for line in (FIXTURES / name).read_text().splitlines():
        if line and not line.startswith("#"):
            stat, mode, value = line.split()
            rows.append((stat, int(mode, 8), value))
    return rows


@dataclass
class FakeVm:
    pid: int
    argv: list[str]
    vm_fd: int | None = 12
    vcpus: dict[int, tuple[int, int]] = field(default_factory=dict)  # index -> (utime, stime)
    taps: list[str] = field(default_factory=list)
    cgroup: str = "0::/machine.slice/kvmlab-guest.scope\n"
    rss_kb: int = 262144
    read_bytes: int = 4096
    write_bytes: int = 8192
    cpus: str = "0-3"
    debugfs: dict[str, tuple[int, int]] | None = None  # stat -> (mode, value)
    waits_ns: dict[int, int] = field(default_factory=dict)  # vCPU index -> schedstat run_delay
    schedstat: bool = True  # False: a kernel without CONFIG_SCHED_INFO
    start_ticks: int = 6892169  # the process's start time (a reused pid has another)


def build(root: Path, *vms: FakeVm) -> tuple[str, str]:
    """Writes `root/proc` and `root/debug`; returns their paths."""
    proc, debug = root / "proc", root / "debug"
    (debug / "kvm").mkdir(parents=True, exist_ok=True)
    (proc / "1").mkdir(parents=True, exist_ok=True)  # init: no fds we may read
    (proc / "self").mkdir(exist_ok=True)
    for vm in vms:
        base = proc / str(vm.pid)
        (base / "fd").mkdir(parents=True)
        (base / "fdinfo").mkdir()
        (base / "cmdline").write_bytes(b"".join(arg.encode() + b"\0" for arg in vm.argv))
        (base / "cgroup").write_text(vm.cgroup)
        (base / "status").write_text(STATUS.format(pid=vm.pid, rss_kb=vm.rss_kb, cpus=vm.cpus))
        (base / "io").write_text(IO.format(read=vm.read_bytes, write=vm.write_bytes))
        (base / "stat").write_text(stat_line(vm.pid, "qemu-system-x86", 5, 2, vm.start_ticks))
        os.symlink("/dev/null", base / "fd" / "0")
        os.symlink("/dev/kvm", base / "fd" / "8")
        if vm.vm_fd is not None:
            os.symlink("anon_inode:kvm-vm", base / "fd" / str(vm.vm_fd))
        for offset, tap in enumerate(vm.taps):
            fd = 30 + offset
            os.symlink("/dev/net/tun", base / "fd" / str(fd))
            (base / "fdinfo" / str(fd)).write_text(
                f"pos:\t0\nflags:\t0104002\nmnt_id:\t24\nino:\t104\niff:\t{tap}\n"
            )
        threads = {vm.pid: ("qemu-system-x86", 5, 2, 0)}
        for index, (utime, stime) in vm.vcpus.items():
            wait = vm.waits_ns.get(index, 0)
            threads[vm.pid + 10 + index] = (f"CPU {index}/KVM", utime, stime, wait)
        for tid, (comm, utime, stime, wait) in threads.items():
            task = base / "task" / str(tid)
            task.mkdir(parents=True)
            (task / "comm").write_text(comm + "\n")
            (task / "stat").write_text(stat_line(tid, comm, utime, stime))
            if vm.schedstat:
                # run time in ns as the ticks say (CLK_TCK 100), one timeslice per tick
                run_ns = (utime + stime) * 10_000_000
                (task / "schedstat").write_text(f"{run_ns} {wait} {utime + stime}\n")
            (task / "status").write_text(STATUS.format(pid=vm.pid, rss_kb=vm.rss_kb, cpus=vm.cpus))
        if vm.debugfs is not None and vm.vm_fd is not None:
            stats = debug / "kvm" / f"{vm.pid}-{vm.vm_fd}"
            stats.mkdir()
            for stat, (mode, value) in vm.debugfs.items():
                (stats / stat).write_text(f"{value}\n")
                os.chmod(stats / stat, mode)
            (stats / "vcpu0").mkdir()
            (stats / "vcpu0" / "pid").write_text(f"{vm.pid + 10}\n")
    return str(proc), str(debug)


def probe_debugfs() -> dict[str, tuple[int, int]]:
    return {
        stat: (mode, int(value))
        for stat, mode, value in debugfs_lines("handmade-probe-run6-debugfs.txt")
    }


def guest1() -> FakeVm:
    """The lab's guest1 (handmade-plain-kvmlab.args): two vCPUs that ran, tap kvmtap1, the
    probe's debugfs statistics."""
    return FakeVm(
        4240,
        read_args("handmade-plain-kvmlab.args"),
        vcpus={0: (100, 50), 1: (10, 5)},
        taps=["kvmtap1"],
        debugfs=probe_debugfs(),
        waits_ns={0: 250_000_000, 1: 1_500},
    )


def lock_down_debugfs(monkeypatch: pytest.MonkeyPatch) -> None:
    """kvmtools.debugfs opens files as under kernel lockdown: every file whose mode is not
    0444 refused with EPERM (fs/debugfs/file.c `debugfs_locked_down`); root here otherwise
    opens anything, so the refusal is simulated."""
    real_open = os.open

    def locked_down(path: str, flags: int, *args: int) -> int:
        if os.stat(path).st_mode & 0o222:
            raise PermissionError(errno.EPERM, "Operation not permitted", path)
        return real_open(path, flags, *args)

    monkeypatch.setattr(debugfs.os, "open", locked_down)
