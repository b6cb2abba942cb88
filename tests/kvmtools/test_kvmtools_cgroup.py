"""kvmtools.cgroup: the pure parts on fixtures, the VM's cgroup found in a fake /proc and
cgroupfs, and (as root) a real cgroup of this machine capped and uncapped."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvmtools import cgroup
from kvmtools.cgroup import CpuCgroup, CpuMax
from kvmtools.proc import parse_stat_is_kernel_thread
from tests.support import require, require_root

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.mark.parametrize(
    ("text", "expected", "percent"),
    [
        ("max 100000\n", CpuMax(None, 100000), 0),
        ("50000 100000\n", CpuMax(50000, 100000), 50),
        ("250000 100000", CpuMax(250000, 100000), 250),
        ("1000 100000", CpuMax(1000, 100000), 1),
        ("333 100000", CpuMax(333, 100000), 1),  # below 1 % still reads as capped
    ],
)
def test_cpu_max_parses_to_a_percentage_of_one_cpu(
    text: str, expected: CpuMax, percent: int
) -> None:
    assert cgroup.parse_cpu_max(text) == expected
    assert cgroup.cap_percent(expected) == percent


@pytest.mark.parametrize("text", ["", "max", "0 100000", "-5 100000", "max 999", "50 x"])
def test_a_cpu_max_the_kernel_would_not_print_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        cgroup.parse_cpu_max(text)


def test_v1_cfs_files_mean_the_same() -> None:
    assert cgroup.parse_cfs("-1\n", "100000\n") == CpuMax(None, 100000)
    assert cgroup.parse_cfs("20000\n", "50000\n") == CpuMax(20000, 50000)
    with pytest.raises(ValueError):
        cgroup.parse_cfs("0", "100000")


def test_a_cap_keeps_the_period_and_refuses_a_quota_below_one_millisecond() -> None:
    assert cgroup.with_cap(CpuMax(None, 100000), 50) == CpuMax(50000, 100000)
    assert cgroup.with_cap(CpuMax(30000, 100000), 0) == CpuMax(None, 100000)
    assert cgroup.format_cpu_max(CpuMax(50000, 100000)) == "50000 100000\n"
    assert cgroup.format_cpu_max(CpuMax(None, 100000)) == "max 100000\n"
    with pytest.raises(ValueError):
        cgroup.with_cap(CpuMax(None, 10000), 5)  # 500 us
    with pytest.raises(ValueError):
        cgroup.with_cap(CpuMax(None, 100000), -1)


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("kvm/captured-pvm-kvm-S-cgroup.txt", CpuCgroup(1, "/")),  # hybrid: cpu on v1
        ("kvm/handmade-kvmlab-cgroup.txt", CpuCgroup(2, "/machine.slice/kvmlab-guest1.scope")),
        (
            "kvm/handmade-libvirt-cgroup.txt",
            CpuCgroup(2, "/machine.slice/machine-qemu\\x2d3\\x2dweb\\x2c01.scope/libvirt/emulator"),
        ),
    ],
)
def test_the_cpu_controllers_cgroup_of_a_process(fixture: str, expected: CpuCgroup) -> None:
    assert cgroup.parse_proc_cgroup((FIXTURES / fixture).read_text()) == expected


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("cgroup-v2-unified.txt", {2: ("/", "/sys/fs/cgroup")}),
        (
            "cgroup-v1-comounted.txt",
            {2: ("/", "/sys/fs/cgroup/unified"), 1: ("/", "/sys/fs/cgroup/cpu,cpuacct")},
        ),
        (
            "cgroup-v1-debian-container.txt",
            {2: ("/", "/sys/fs/cgroup/unified"), 1: ("/", "/sys/fs/cgroup/cpu")},
        ),
    ],
)
def test_the_cpu_hierarchies_in_mountinfo(
    fixture: str, expected: dict[int, tuple[str, str]]
) -> None:
    text = (FIXTURES / "mountinfo" / fixture).read_text()
    assert cgroup.parse_cpu_mounts(text) == expected


def test_libvirts_vcpu_cgroups_make_the_vms_own_cgroup_the_one_to_cap() -> None:
    scope = "/machine.slice/machine-qemu-1-web.scope/libvirt"
    threads = [CpuCgroup(2, f"{scope}/emulator"), CpuCgroup(2, f"{scope}/vcpu0")]
    assert cgroup.common_cgroup(threads) == CpuCgroup(2, scope)
    assert cgroup.common_cgroup([CpuCgroup(2, "/a/b"), CpuCgroup(2, "/c")]).path == "/"
    with pytest.raises(cgroup.CgroupError):
        cgroup.common_cgroup([CpuCgroup(2, "/a"), CpuCgroup(1, "/a")])


def _fake_host(tmp_path: Path, pid: int, threads: dict[int, str], procs: dict[str, str]) -> str:
    """A /proc with one process's threads in cgroups, and a cgroup2 mount in tmp_path."""
    proc, mount = tmp_path / "proc", tmp_path / "cgroup"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "mountinfo").write_text(
        f"30 23 0:26 / {mount} rw,relatime shared:4 - cgroup2 cgroup2 rw\n"
    )
    for tid, path in threads.items():
        (proc / str(pid) / "task" / str(tid)).mkdir(parents=True)
        (proc / str(pid) / "task" / str(tid) / "cgroup").write_text(f"0::{path}\n")
    for path, text in procs.items():
        (mount / path.strip("/")).mkdir(parents=True, exist_ok=True)
        (mount / path.strip("/") / "cgroup.procs").write_text(text)
    mount.mkdir(exist_ok=True)
    (mount / "cgroup.procs").write_text("1\n")
    return str(proc)


def test_the_vms_cgroup_and_whoever_else_is_in_it(tmp_path: Path) -> None:
    scope = "/machine.slice/vm.scope"
    proc = _fake_host(
        tmp_path, 40, {40: f"{scope}/emulator", 41: f"{scope}/vcpu0"},
        {scope: "", f"{scope}/emulator": "40\n", f"{scope}/vcpu0": "40\n"},
    )  # fmt: skip
    found, directory = cgroup.vm_cgroup(40, proc)
    assert found == CpuCgroup(2, scope)
    assert directory == str(tmp_path / "cgroup" / "machine.slice" / "vm.scope")
    assert cgroup.foreign_processes(directory, 40, proc) == []
    # KVM's per-VM worker, a kernel thread KVM attached to the VM's cgroup: the VM's own.
    _stat(proc, 778, "kvm-nx-lpage-re", flags=0x00208040)
    (Path(directory) / "emulator" / "cgroup.procs").write_text("40\n778\n")
    assert cgroup.foreign_processes(directory, 40, proc) == []
    _stat(proc, 777, "sleep", flags=0x00400000)
    (Path(directory) / "vcpu0" / "cgroup.procs").write_text("40\n777\n")
    assert cgroup.foreign_processes(directory, 40, proc) == [777]


def _stat(proc: str, pid: int, comm: str, flags: int) -> None:
    """A /proc/<pid>/stat line with its comm and flags (field 9), the rest zeros."""
    Path(proc, str(pid)).mkdir(parents=True, exist_ok=True)
    rest = " ".join(["S", "2", "0", "0", "0", "-1", str(flags)] + ["0"] * 44)
    Path(proc, str(pid), "stat").write_text(f"{pid} ({comm}) {rest}\n")


def test_a_process_in_the_root_cgroup_has_none_to_cap(tmp_path: Path) -> None:
    proc = _fake_host(tmp_path, 40, {40: "/"}, {})
    with pytest.raises(cgroup.CgroupError, match="root cgroup"):
        cgroup.vm_cgroup(40, proc)


# -- real cgroups (root) --------------------------------------------------------------------


@contextlib.contextmanager
def sleeping_process_in_own_cgroup(name: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A real `sleep` moved into a new child cgroup of this machine's cpu hierarchy (v2 where
    the cpu controller is there, else v1); the process killed and the cgroup removed after."""
    mounts = cgroup.parse_cpu_mounts(Path("/proc/self/mountinfo").read_text())
    own = cgroup.parse_proc_cgroup(Path("/proc/self/cgroup").read_text())
    require(own is not None and own.version in mounts, "no cgroup hierarchy with cpu mounted")
    assert own is not None
    point = mounts[own.version][1]
    directory = os.path.join(point, name)
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        os.mkdir(directory)
        try:
            Path(directory, "cgroup.procs").write_text(f"{sleeper.pid}\n")
            yield sleeper, directory
        finally:
            sleeper.kill()
            sleeper.wait(10)
            os.rmdir(directory)  # empty once the process died
    finally:
        sleeper.kill()
        sleeper.wait(10)


def test_a_real_cgroup_is_capped_read_back_and_uncapped() -> None:
    require_root()
    with sleeping_process_in_own_cgroup(f"judicator-test-{os.getpid()}") as (sleeper, where):
        found, directory = cgroup.vm_cgroup(sleeper.pid)
        assert directory == where
        require(
            os.path.exists(os.path.join(directory, "cpu.max" if found.version == 2 else
                                        "cpu.cfs_quota_us")),
            "the cpu controller is not enabled for a child cgroup here",
        )  # fmt: skip
        assert cgroup.foreign_processes(directory, sleeper.pid) == []
        before = cgroup.read_cpu_max(directory, found.version)
        assert cgroup.cap_percent(before) == 0
        cgroup.write_cpu_max(directory, found.version, cgroup.with_cap(before, 30))
        capped = cgroup.read_cpu_max(directory, found.version)
        assert capped == CpuMax(before.period_us * 30 // 100, before.period_us)
        assert cgroup.cap_percent(capped) == 30
        cgroup.write_cpu_max(directory, found.version, cgroup.with_cap(capped, 0))
        assert cgroup.read_cpu_max(directory, found.version) == before
        # Another process in the same cgroup makes it shared.
        Path(directory, "cgroup.procs").write_text(f"{os.getpid()}\n")
        try:
            assert cgroup.foreign_processes(directory, sleeper.pid) == [os.getpid()]
        finally:
            Path(os.path.dirname(directory), "cgroup.procs").write_text(f"{os.getpid()}\n")


def test_kernel_threads_are_told_from_processes_on_the_real_proc() -> None:
    assert not parse_stat_is_kernel_thread(Path(f"/proc/{os.getpid()}/stat").read_text())
    # kthreadd, the parent of every kernel thread, where this pid namespace shows it.
    kthreadd = []
    for pid_dir in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            if (pid_dir / "comm").read_text().strip() == "kthreadd":
                kthreadd.append((pid_dir / "stat").read_text())
    assert all(parse_stat_is_kernel_thread(text) for text in kthreadd)
