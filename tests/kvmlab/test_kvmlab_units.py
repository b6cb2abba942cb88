"""The KVM lab's pure parts, without a VM: QEMU command lines, the images' contents, parsers."""

from __future__ import annotations

import gzip
import ipaddress
import shutil
import subprocess
from pathlib import Path

import pytest

from kvmlab import images
from kvmlab.flood import delta, parse_ping_summary
from kvmlab.paths import DEFAULT_CACHE, KvmLabPaths
from kvmlab.vm import (
    IFNAMSIZ,
    L2Spec,
    find_stats_dir,
    l1_argv,
    l2_argv,
    parse_counters,
    proc_state,
    standard_guests,
)
from tests.support import require
from xenlab.vm import LabState, stop_state

LAB_NET = ipaddress.ip_network("198.18.0.0/15")


def _state() -> LabState:
    return LabState(pid=0, agent_port=41001, exporter_port=41002, remediator_port=41003,
                    console="/tmp/console.log", hypervisor="kvm", smp=2)  # fmt: skip


def test_l1_runs_under_multithreaded_tcg_with_svm_and_forwards_the_three_ports() -> None:
    argv = l1_argv(KvmLabPaths(Path("/c")), _state())
    joined = " ".join(argv)
    assert argv[argv.index("-accel") + 1] == "tcg,thread=multi"
    assert argv[argv.index("-cpu") + 1] == "max,-smap"
    assert argv[argv.index("-smp") + 1] == "2"
    assert argv[argv.index("-m") + 1] == "3072"
    assert argv[argv.index("-machine") + 1] == "pc"
    assert "-no-reboot" in argv and "panic=-1" in argv[argv.index("-append") + 1]
    for host, guest in ((41001, 8000), (41002, 10170), (41003, 9095)):
        assert f"hostfwd=tcp:127.0.0.1:{host}-:{guest}" in joined
    assert "restrict=on" in joined
    assert argv[argv.index("-serial") + 1] == "file:/tmp/console.log"
    assert argv[argv.index("-initrd") + 1] == "/c/boot/l1.cpio.gz"


def test_l2_moves_into_its_scope_then_runs_qemu_with_kvm_a_tap_and_qmp() -> None:
    spec = L2Spec("l2a", "198.18.88.11", "52:54:00:18:88:0b")
    argv = l2_argv(spec)
    assert argv[:3] == ["/usr/lib/kvmlab/l2-start", "l2a", "qemu-system-x86_64"]
    assert argv[argv.index("-name") + 1] == "guest=l2a"
    for flag in ("-enable-kvm", "-nodefaults", "-no-reboot"):
        assert flag in argv
    assert argv[argv.index("-cpu") + 1] == "host"
    assert argv[argv.index("-m") + 1] == "256"
    assert argv[argv.index("-netdev") + 1] == ("tap,id=n0,ifname=tapl2a,script=no,downscript=no")
    assert argv[argv.index("-device") + 1] == (
        "virtio-net-pci,netdev=n0,mac=52:54:00:18:88:0b,romfile="
    )
    assert argv[argv.index("-qmp") + 1] == "unix:/run/kvmlab/l2a.qmp,server=on,wait=off"
    assert argv[argv.index("-serial") + 1] == "file:/run/kvmlab/l2a.console"
    assert "kvmlab.ip=198.18.88.11" in argv[argv.index("-append") + 1]
    assert spec.scope == "/sys/fs/cgroup/machine.slice/kvmlab-l2a.scope"


def test_a_tap_name_longer_than_the_kernel_allows_is_refused() -> None:
    with pytest.raises(ValueError, match="longer than 15"):
        l2_argv(L2Spec("a-very-long-name", "198.18.88.11", "52:54:00:18:88:0b"))


def test_standard_guests_stay_in_the_lab_network_with_distinct_macs_and_short_taps() -> None:
    guests = standard_guests(4)
    assert [g.name for g in guests] == ["l2a", "l2b", "l2c", "l2d"]
    assert all(ipaddress.ip_address(g.ip) in LAB_NET for g in guests)
    assert len({g.mac for g in guests}) == len({g.ip for g in guests}) == 4
    assert all(len(g.tap) <= IFNAMSIZ for g in guests)


def test_parse_counters_reads_grep_h_output() -> None:
    text = "/sys/kernel/debug/kvm/175-9/exits:7736\n/x/halt_exits:12\ngarbage\n/x/name:abc\n"
    assert parse_counters(text) == {"exits": 7736, "halt_exits": 12}


def test_proc_state_reads_the_letter_after_the_command() -> None:
    assert proc_state("175 (qemu-system-x86) S 1 175 175 0 -1") == "S"
    assert proc_state("42 (a (b) c) Z 1 0") == "Z"
    assert proc_state("") == ""


def test_find_stats_dir_matches_the_pid_exactly() -> None:
    listing = "1750-12\n175-9\n17-3\nvcpu0\n"
    assert find_stats_dir(listing, 175) == "/sys/kernel/debug/kvm/175-9"
    assert find_stats_dir(listing, 17) == "/sys/kernel/debug/kvm/17-3"
    assert find_stats_dir(listing, 18) is None


def test_parse_ping_summary_of_a_flood() -> None:
    text = (
        "PING 198.18.88.12 (198.18.88.12) 56(84) bytes of data.\n\n"
        "--- 198.18.88.12 ping statistics ---\n"
        "695 packets transmitted, 694 received, 0.143885% packet loss, time 14998ms\n"
        "rtt min/avg/max/mdev = 1.0/2.0/3.0/0.5 ms, ipg/ewma 21.6/2.2 ms\nrc=0 end 81.2\n"
    )
    summary = parse_ping_summary(text)
    assert summary["transmitted"] == 695 and summary["received"] == 694
    assert summary["seconds"] == pytest.approx(14.998)
    assert summary["pps"] == pytest.approx(46.34, abs=0.01)
    with pytest.raises(ValueError):
        parse_ping_summary("running\n")


def test_delta_keeps_the_keys_of_both() -> None:
    assert delta({"a": 5, "b": 3}, {"a": 2}) == {"a": 3}


def test_l1_loads_kvm_amd_with_nested_paging_and_the_tc_chains_modules() -> None:
    lines = images.l1_module_lines()
    assert lines.index("kvm") < lines.index("kvm_amd npt=1")
    assert "ifb numifbs=0" in lines
    names = {line.split()[0] for line in lines}
    assert {"tun", "bridge", "sch_tbf", "sch_htb", "sch_ingress", "cls_u32", "act_mirred",
            "virtio_net", "virtio_pci"} <= names  # fmt: skip
    assert images.L2_MODULES == ("virtio_pci", "virtio_net")


def test_l1_holds_the_project_and_what_qemu_machine_pc_loads() -> None:
    packages = images.project_packages()
    assert {"exporter", "remediator", "xentools", "xenlab", "kvmlab"} <= set(packages)
    names = {Path(f).name for f in images.QEMU_FIRMWARE}
    assert {"bios-256k.bin", "kvmvapic.bin", "linuxboot_dma.bin"} <= names
    assert "/usr/bin/qemu-system-x86_64" in images.L1_HOST_BINARIES
    assert {"ping", "iperf"} <= {Path(b).name for b in images.L2_HOST_BINARIES}


@pytest.mark.parametrize("script", ["l1-init.sh", "l2-init.sh", "l2-ctl.sh", "l2-start.sh"])
def test_image_scripts_parse(script: str) -> None:
    path = Path(images.__file__).parent / "image" / script
    result = subprocess.run(["sh", "-n", str(path)], capture_output=True, text=True, timeout=10)
    assert result.returncode == 0, result.stderr


def test_l2_start_joins_its_scope_before_exec() -> None:
    text = (Path(images.__file__).parent / "image" / "l2-start.sh").read_text()
    assert text.index('> "$scope/cgroup.procs"') < text.index('exec "$@"')


def test_the_l2_image_holds_its_init_tools_and_virtio_modules(tmp_path: Path) -> None:
    lab = KvmLabPaths(DEFAULT_CACHE).lab
    require(lab.kernel_release_file.exists(), "run `make kvmlab-deps` (Debian's kernel)")
    require(shutil.which("cpio"), "needs cpio")
    paths = KvmLabPaths(tmp_path, lab)
    images.build_l2(paths)
    listing = subprocess.run(
        ["cpio", "-t", "--quiet"],
        input=gzip.decompress(paths.l2_initrd.read_bytes()),
        capture_output=True,
        timeout=60,
        check=True,
    ).stdout.decode()
    names = set(listing.split())
    assert {"init", "ctl.sh", "usr/bin/ping", "usr/bin/iperf", "usr/bin/busybox"} <= names
    assert any(n.endswith("virtio_net.ko") for n in names), sorted(names)[:20]


def test_stopping_when_nothing_runs_is_safe(tmp_path: Path) -> None:
    stop_state(tmp_path / "state.json")  # no file: nothing to do
    assert not (tmp_path / "state.json").exists()
