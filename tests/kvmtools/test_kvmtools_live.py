"""kvmtools against real QEMU processes on this machine's real /proc, and QMP against them.

What is honest here: QEMU's command line, threads, cgroup, status, io and tun fds are this
kernel's own. Whether a process holds a KVM VM depends on /dev/kvm: with TCG it holds none, so
the real list must leave it out, and with an injected VM check it is read like a VM. Where
/dev/kvm can create a VM (this machine's PVM-flavoured KVM can, though it cannot run a guest:
the VM stays stopped with -S), the list is checked with no injection at all.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from exporter.collector import Exporter, SourceCollector
from exporter.kvm import (
    KvmBlockCollector,
    KvmDomainCollector,
    KvmHost,
    KvmNetworkCollector,
    KvmStatCollector,
    NoXenToolstack,
)
from kvmtools import qmp
from kvmtools.proc import KvmVm, list_vms, parse_cgroup_v2, read_thread_cpu_seconds
from tests.support import require, require_binary, require_root, wait_for

QEMU = "qemu-system-x86_64"
Start = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture
def start_qemu(tmp_path: Path) -> Iterator[Start]:
    """Starts `qemu-system-x86_64 ARGS -qmp unix:<tmp>/NAME.qmp ... -S`; always killed."""
    binary = require_binary(QEMU)
    started: list[subprocess.Popen[bytes]] = []

    def start(name: str, *args: str) -> subprocess.Popen[bytes]:
        socket = tmp_path / f"{name}.qmp"
        with (tmp_path / f"{name}.stderr").open("wb") as stderr:
            process = subprocess.Popen(
                [
                    binary,
                    *args,
                    "-name",
                    f"guest={name},debug-threads=on",
                    "-qmp",
                    f"unix:{socket},server=on,wait=off",
                    "-nodefaults",
                    "-display",
                    "none",
                    "-m",
                    "64",
                    "-S",
                ],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        started.append(process)
        wait_for(lambda: socket.exists() or process.poll() is not None, 20, "QMP socket")
        if process.poll() is not None:
            stderr = (tmp_path / f"{name}.stderr").read_text()
            pytest.fail(f"qemu exited {process.returncode}: {stderr}")
        return process

    try:
        yield start
    finally:
        for process in started:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture
def tap() -> Iterator[str]:
    """A tap device of this test's own (root), deleted afterwards."""
    require_root()
    name = f"jkt{os.getpid() % 100000}"
    subprocess.run(["ip", "tuntap", "add", "dev", name, "mode", "tap"], check=True, timeout=10)
    try:
        yield name
    finally:
        subprocess.run(["ip", "link", "del", name], check=False, timeout=10)


def own_cgroup(pid: int) -> str | None:
    return parse_cgroup_v2(Path(f"/proc/{pid}/cgroup").read_text())


def test_tcg_qemu_is_no_kvm_vm_but_reads_like_one(start_qemu: Start, tmp_path: Path) -> None:
    process = start_qemu("t1", "-accel", "tcg")
    task = Path(f"/proc/{process.pid}/task")
    wait_for(
        lambda: any((t / "comm").read_text() == "CPU 0/TCG\n" for t in task.iterdir()),
        20,
        "QEMU's TCG vCPU thread",
    )
    assert process.pid not in {vm.pid for vm in list_vms()}
    # any fd QEMU surely holds stands in for the VM fd: everything else is read for real
    vms = list_vms(is_vm=lambda link: link == "anon_inode:[eventfd]")
    (vm,) = [vm for vm in vms if vm.pid == process.pid]
    assert vm.name == "t1"
    assert vm.qmp_socket == str(tmp_path / "t1.qmp")
    assert vm.cgroup == own_cgroup(process.pid)
    assert vm.vcpus == ()  # TCG's vCPU threads are "CPU 0/TCG": not KVM vCPUs
    assert vm.taps == () and vm.stats_dir is None


def test_qmp_status_stop_cont(start_qemu: Start, tmp_path: Path) -> None:
    start_qemu("t2", "-accel", "tcg")
    socket = str(tmp_path / "t2.qmp")
    assert qmp.query_status(socket) == "prelaunch"  # -S: never started
    qmp.cont(socket)
    assert qmp.query_status(socket) == "running"
    qmp.stop(socket)
    qmp.stop(socket)  # idempotent
    assert qmp.query_status(socket) == "paused"
    qmp.cont(socket)
    assert qmp.query_status(socket) == "running"
    with pytest.raises(qmp.QmpError, match="no-such-command"):
        qmp.execute(socket, "no-such-command")


def test_qmp_errors_are_qmp_errors(tmp_path: Path) -> None:
    with pytest.raises(qmp.QmpError):
        qmp.query_status(str(tmp_path / "absent.qmp"), timeout=1)


def kvm_creates_vms() -> bool:
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC))
    except OSError:
        return False
    return True


def test_kvm_qemu_is_listed_for_real(start_qemu: Start, tmp_path: Path) -> None:
    require(kvm_creates_vms(), "needs a /dev/kvm that opens")
    process = start_qemu("k1", "-accel", "kvm", "-smp", "2")

    def listed() -> KvmVm | None:
        # QEMU opens its QMP socket before it creates the VM and its vCPU threads
        vms = {vm.pid: vm for vm in list_vms(debugfs=str(tmp_path / "no-debugfs"))}
        vm = vms.get(process.pid)
        return vm if vm is not None and len(vm.vcpus) == 2 else None

    vm = wait_for(listed, 20, "the VM and its two vCPU threads")
    assert (vm.name, vm.qmp_socket) == ("k1", str(tmp_path / "k1.qmp"))
    assert [vcpu.index for vcpu in vm.vcpus] == [0, 1]
    for vcpu in vm.vcpus:
        assert read_thread_cpu_seconds(vm.pid, vcpu.tid) >= 0
    assert qmp.query_status(str(tmp_path / "k1.qmp")) == "prelaunch"


def test_tap_of_a_real_qemu(start_qemu: Start, tap: str) -> None:
    process = start_qemu(
        "t3",
        "-accel",
        "tcg",
        "-netdev",
        f"tap,id=n0,ifname={tap},script=no,downscript=no",
        "-device",
        "virtio-net-pci,netdev=n0,romfile=",
    )

    def taps() -> tuple[str, ...]:
        # QEMU opens its taps (late backends) after its QMP socket (early ones)
        vms = list_vms(is_vm=lambda link: link == "anon_inode:[eventfd]")
        return next((vm.taps for vm in vms if vm.pid == process.pid), ())

    assert wait_for(taps, 20, "the tap in QEMU's fds") == (tap,)  # from tun's own fdinfo


def test_exporter_on_a_real_kvm_process_and_tap(
    start_qemu: Start, tap: str, tmp_path: Path
) -> None:
    """The KVM collectors on this machine's real /proc and sysfs: a QEMU holding a real KVM VM
    (stopped with -S: the PVM-flavoured /dev/kvm here cannot run a guest) and a real tap,
    which the host sends packets into. debugfs is not mounted here, so kvmstat must fail."""
    require(kvm_creates_vms(), "needs a /dev/kvm that opens")
    process = start_qemu(
        "k2",
        "-accel",
        "kvm",
        "-netdev",
        f"tap,id=n0,ifname={tap},script=no,downscript=no",
        "-device",
        "virtio-net-pci,netdev=n0,romfile=",
    )
    wait_for(lambda: any(vm.taps for vm in list_vms() if vm.pid == process.pid), 20, "the tap")
    subprocess.run(["ip", "link", "set", tap, "up"], check=True, timeout=10)
    subprocess.run(["ip", "addr", "add", "169.254.77.1/30", "dev", tap], check=True, timeout=10)
    # the host sends into the tap: what the guest receives (tap tx)
    subprocess.run(
        ["ping", "-c", "3", "-i", "0.2", "-W", "1", "169.254.77.2"],
        capture_output=True,
        timeout=20,
    )
    host = KvmHost(debugfs=str(tmp_path / "no-debugfs"))
    collectors: list[SourceCollector] = [
        KvmDomainCollector(host),
        KvmNetworkCollector(host, "/sys"),
        KvmBlockCollector(host),
        KvmStatCollector(host, re.compile("exits")),
    ]
    value = Exporter(collectors, NoXenToolstack(), 2, 5).registry().get_sample_value
    assert value("kvm_domain_info", {"domain": "k2", "pid": str(process.pid), "uuid": ""}) == 1
    assert value("kvm_domain_vcpus", {"domain": "k2"}) == 1
    assert value("kvm_domain_memory_bytes", {"domain": "k2"}) > 0
    labels = {"domain": "k2", "interface": tap}
    assert value("kvm_domain_network_receive_packets_total", labels) > 0
    assert value("kvm_domain_network_transmit_packets_total", labels) is not None
    assert value("kvm_domain_block_read_bytes_total", {"domain": "k2"}) is not None
    assert value("xen_exporter_collector_success", {"collector": "domain"}) == 1
    assert value("xen_exporter_collector_success", {"collector": "kvmstat"}) == 0
