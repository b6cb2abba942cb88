"""judicator-kvmctl: every argument validated; as root, a real QEMU paused, continued and capped
through it, and a pid that is not the named VM refused.

There is no usable /dev/kvm here, so the QEMU runs under TCG and holds no `anon_inode:kvm-vm`
fd: the tests give kvmctl `is_vm` (kvmtools.proc.list_vms' seam) accepting QEMU's signalfd
instead, which a `sleep` does not hold. Everything else (the /proc reads, the name check, QMP,
the cgroup) is the real thing.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvmtools import cgroup, ctl, qmp
from kvmtools.proc import KvmVm, VcpuThread
from tests.kvmtools.test_kvmtools_cgroup import sleeping_process_in_own_cgroup
from tests.support import require_binary, require_root, wait_for


def _signalfd(link: str) -> bool:
    return link == "anon_inode:[signalfd]"


def kvmctl(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = ctl.main(list(argv), is_vm=_signalfd)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    "argv",
    [
        ["pause", "--pid", "0", "--name", "web"],
        ["pause", "--pid", "-1", "--name", "web"],
        ["pause", "--pid", "4194305", "--name", "web"],
        ["pause", "--pid", "12", "--name", ""],
        ["pause", "--pid", "12", "--name", "a\nb"],
        ["pause", "--pid", "12"],
        ["cap", "--pid", "12", "--name", "web", "-5"],
        ["cap", "--pid", "12", "--name", "web", "50%"],
        ["cap", "--pid", "12", "--name", "web", "409601"],
        ["pin", "--pid", "12", "--name", "web", "--vcpu", "x", "1"],
        ["pin", "--pid", "12", "--name", "web", "--vcpu", "0", "all"],
        ["pin", "--pid", "12", "--name", "web", "--vcpu", "0", "^1"],
        ["pin", "--pid", "12", "--name", "web", "0-1"],
        ["reboot", "--pid", "12", "--name", "web"],
    ],
)
def test_a_malformed_command_line_exits_2_before_anything_is_read(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        ctl.main(argv, is_vm=lambda _link: pytest.fail("read the host"))  # type: ignore[misc]
    assert exit_.value.code == 2


@contextlib.contextmanager
def qemu(tmp_path: Path, name: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A real QEMU (TCG, no disk, no devices) with a QMP socket; killed afterwards."""
    binary = require_binary("qemu-system-x86_64")
    socket_path = str(tmp_path / "vm.qmp")
    process = subprocess.Popen(
        [binary, "-accel", "tcg", "-name", f"guest={name}", "-m", "64",
         "-qmp", f"unix:{socket_path},server=on,wait=off", "-nodefaults", "-display", "none"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: _answers(socket_path), 30, "QEMU's QMP monitor")
        yield process, socket_path
    finally:
        process.kill()
        process.wait(10)


def _answers(path: str) -> bool:
    try:
        return qmp.query_status(path, 2) == "running"
    except qmp.QmpError:
        return False


def test_a_real_qemu_is_paused_and_continued_by_pid_and_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require_root()
    with qemu(tmp_path, "kvmctl-guest") as (vm, socket_path):
        pid = str(vm.pid)
        code, out, _ = kvmctl(capsys, "list")
        listed = {row["pid"]: row for row in json.loads(out)}
        assert code == 0 and listed[vm.pid]["name"] == "kvmctl-guest"
        assert (listed[vm.pid]["paused"], listed[vm.pid]["qmp_socket"]) == (False, socket_path)

        assert kvmctl(capsys, "pause", "--pid", pid, "--name", "kvmctl-guest")[0] == 0
        assert qmp.query_status(socket_path) == "paused"
        assert kvmctl(capsys, "pause", "--pid", pid, "--name", "kvmctl-guest")[0] == 0
        assert kvmctl(capsys, "unpause", "--pid", pid, "--name", "kvmctl-guest")[0] == 0
        assert qmp.query_status(socket_path) == "running"

        code, _, err = kvmctl(capsys, "pause", "--pid", pid, "--name", "other-guest")
        assert code == 1
        assert err == f"judicator-kvmctl: process {pid} is VM 'kvmctl-guest', not 'other-guest'\n"
        assert qmp.query_status(socket_path) == "running"


def test_a_pid_that_is_no_vm_or_no_process_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    require_root()
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        code, _, err = kvmctl(capsys, "pause", "--pid", str(sleeper.pid), "--name", "web")
        assert (code, err) == (1, f"judicator-kvmctl: process {sleeper.pid} is not a KVM VM\n")
    finally:
        sleeper.kill()
        sleeper.wait(10)
    code, _, err = kvmctl(capsys, "pause", "--pid", str(sleeper.pid), "--name", "web")
    assert (code, err) == (1, f"judicator-kvmctl: no process {sleeper.pid}\n")


def test_a_real_qemu_in_its_own_cgroup_is_capped_and_a_shared_one_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require_root()
    name = f"judicator-kvmctl-{os.getpid()}"
    with (
        qemu(tmp_path, "capped-guest") as (vm, _),
        sleeping_process_in_own_cgroup(name) as (sleeper, directory),
    ):
        # The sleeper out, QEMU in: the cgroup is the VM's own.
        parent = os.path.dirname(directory)
        Path(parent, "cgroup.procs").write_text(f"{sleeper.pid}\n")
        Path(directory, "cgroup.procs").write_text(f"{vm.pid}\n")
        try:
            found, _ = cgroup.vm_cgroup(vm.pid)
            target = ("--pid", str(vm.pid), "--name", "capped-guest")
            assert kvmctl(capsys, "cap", *target, "40")[0] == 0
            capped = cgroup.read_cpu_max(directory, found.version)
            assert cgroup.cap_percent(capped) == 40
            assert kvmctl(capsys, "cap", *target, "0")[0] == 0
            assert cgroup.read_cpu_max(directory, found.version).quota_us is None

            Path(directory, "cgroup.procs").write_text(f"{sleeper.pid}\n")
            code, _, err = kvmctl(capsys, "cap", *target, "40")
            assert code == 1 and f"also holds processes [{sleeper.pid}]" in err
            assert cgroup.read_cpu_max(directory, found.version).quota_us is None
        finally:
            # Back to the parent, so that the cgroup can be removed.
            for pid in (vm.pid, sleeper.pid):
                with contextlib.suppress(OSError):
                    Path(parent, "cgroup.procs").write_text(f"{pid}\n")


def test_pin_sets_the_affinity_of_the_vcpu_thread_only() -> None:
    require_root()
    # TCG names its vCPU threads "CPU 0/TCG", not "CPU 0/KVM": a thread of ours stands in.
    cpus = sorted(os.sched_getaffinity(0))
    started = threading.Event()
    stop = threading.Event()
    tids: list[int] = []

    def vcpu() -> None:
        tids.append(threading.get_native_id())
        started.set()
        stop.wait(30)

    thread = threading.Thread(target=vcpu)
    thread.start()
    try:
        assert started.wait(10)
        vm = KvmVm("web", os.getpid(), None, (VcpuThread(0, tids[0]),), (), None, None, None)
        ctl._pin(vm, 0, frozenset(cpus[:1]))
        assert os.sched_getaffinity(tids[0]) == set(cpus[:1])
        assert os.sched_getaffinity(0) == set(cpus)
        with pytest.raises(ctl.CtlError, match="no vCPU thread 3"):
            ctl._pin(vm, 3, frozenset(cpus[:1]))
    finally:
        stop.set()
        thread.join(10)


def test_the_console_script_is_declared() -> None:
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert 'judicator-kvmctl = "kvmtools.ctl:main"' in pyproject
