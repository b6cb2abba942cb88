"""kvmtools.proc's readers on a fake /proc and debugfs built in tmp_path (fakehost.py)."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest

from kvmtools import proc as kvmproc
from kvmtools.proc import (
    BoundedCmdlines,
    KvmVm,
    VcpuThread,
    list_vms,
    read_io,
    read_rss_bytes,
    read_thread_affinity,
    read_thread_cpu_seconds,
    read_thread_wait_seconds,
)
from tests.kvmtools.fakehost import FakeVm, build, guest1, probe_debugfs, read_args


def test_list_vms_finds_the_kvm_vm_holders(tmp_path: Path) -> None:
    proc, debug = build(
        tmp_path,
        guest1(),
        FakeVm(5000, read_args("handmade-libvirt-fd-monitor.args"), vm_fd=None),  # TCG
        FakeVm(
            3100,
            ["qemu-system-x86_64", "-enable-kvm"],
            vm_fd=15,
            taps=["vnet1", "vnet0"],
            cgroup="0::/\n",
        ),
    )
    assert list_vms(proc, debug) == [
        KvmVm(
            name="qemu-3100",
            pid=3100,
            uuid=None,
            vcpus=(),
            taps=("vnet0", "vnet1"),
            qmp_socket=None,
            cgroup="/",
            stats_dir=None,  # no debugfs directory: not mounted, or locked away
        ),
        KvmVm(
            name="guest1",
            pid=4240,
            uuid=None,
            vcpus=(VcpuThread(0, 4250), VcpuThread(1, 4251)),
            taps=("kvmtap1",),
            qmp_socket="/run/kvmlab/guest1.qmp",
            cgroup="/machine.slice/kvmlab-guest.scope",
            stats_dir=str(Path(debug) / "kvm" / "4240-12"),
        ),
    ]


def test_vcpus_from_debugfs_when_threads_are_unnamed(tmp_path: Path) -> None:
    """QEMU without debug-threads=on (the probe's command line): debugfs' vcpu<n>/pid."""
    proc, debug = build(
        tmp_path, FakeVm(165, read_args("handmade-plain-probe.args"), debugfs=probe_debugfs())
    )
    (vm,) = list_vms(proc, debug)
    assert (vm.name, vm.vcpus) == ("l2a", (VcpuThread(0, 175),))


def test_injected_vm_check(tmp_path: Path) -> None:
    proc, debug = build(tmp_path, FakeVm(77, ["qemu", "-name", "x"], vm_fd=None))
    assert list_vms(proc, debug) == []
    (vm,) = list_vms(proc, debug, is_vm=lambda link: link == "/dev/kvm")
    assert (vm.name, vm.pid) == ("x", 77)


def test_a_process_that_vanishes_is_left_out(tmp_path: Path) -> None:
    proc, debug = build(tmp_path, FakeVm(9, ["qemu"]))
    shutil.rmtree(Path(proc) / "9" / "task")
    (Path(proc) / "9" / "cmdline").unlink()  # exited between the fd scan and the read
    assert list_vms(proc, debug) == []


def test_thread_and_process_readers(tmp_path: Path) -> None:
    proc, _ = build(
        tmp_path,
        FakeVm(
            50,
            ["qemu"],
            vcpus={0: (250, 150)},
            cpus="2-3",
            read_bytes=7,
            write_bytes=9,
            waits_ns={0: 1_250_000_000},
        ),
    )
    assert read_thread_cpu_seconds(50, 60, proc) == 4.0  # (250 + 150) / CLK_TCK 100
    assert read_thread_wait_seconds(50, 60, proc) == 1.25
    assert read_thread_affinity(50, 60, proc) == "2-3"
    assert read_rss_bytes(50, proc) == 262144 * 1024
    io = read_io(50, proc)
    assert (io["read_bytes"], io["write_bytes"]) == (7, 9)


def test_a_bounded_reader_reads_each_command_line_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proc, debug = build(tmp_path, guest1(), FakeVm(5100, ["qemu", "-name", "web"], vm_fd=14))
    reads: list[str] = []
    real = kvmproc._read

    def counted(path: str) -> bytes:
        if path.endswith("cmdline"):
            reads.append(path)
        return real(path)

    monkeypatch.setattr(kvmproc, "_read", counted)
    cmdlines = BoundedCmdlines()
    unbounded = list_vms(proc, debug)
    assert len(reads) == 2
    assert list_vms(proc, debug, cmdlines=cmdlines) == unbounded
    assert list_vms(proc, debug, cmdlines=cmdlines) == unbounded
    assert len(reads) == 4  # once more per VM, then from memory
    shutil.rmtree(Path(proc) / "5100")  # web ended; a new process takes its pid
    build(tmp_path, FakeVm(5100, ["qemu", "-name", "db"], vm_fd=14, start_ticks=7000000))
    assert [vm.name for vm in list_vms(proc, debug, cmdlines=cmdlines)] == ["guest1", "db"]


def test_a_command_line_that_blocks_leaves_only_its_vm_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read of /proc/<pid>/cmdline behind a held mmap lock blocks: bounded, not repeated."""
    proc, debug = build(tmp_path, guest1(), FakeVm(5100, ["qemu", "-name", "web"], vm_fd=14))
    release = threading.Event()
    started: list[str] = []
    real = kvmproc._read

    def blocking(path: str) -> bytes:
        if path.endswith("5100/cmdline"):
            started.append(path)
            release.wait(10)
        return real(path)

    monkeypatch.setattr(kvmproc, "_read", blocking)
    cmdlines = BoundedCmdlines(timeout=0.1)
    try:
        assert [vm.name for vm in list_vms(proc, debug, cmdlines=cmdlines)] == ["guest1"]
        begun = time.monotonic()
        assert [vm.name for vm in list_vms(proc, debug, cmdlines=cmdlines)] == ["guest1"]
        assert time.monotonic() - begun < 0.1  # not waited on again
        assert len(started) == 1  # and no second thread
    finally:
        release.set()
    deadline = time.monotonic() + 5
    while len(list_vms(proc, debug, cmdlines=cmdlines)) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [vm.name for vm in list_vms(proc, debug, cmdlines=cmdlines)] == ["guest1", "web"]
