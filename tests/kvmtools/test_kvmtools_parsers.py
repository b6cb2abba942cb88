"""kvmtools' pure parsers on the fixtures of tests/fixtures/kvm (see its README)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvmtools.proc import (
    QemuCmdline,
    Schedstat,
    parse_cgroup_v2,
    parse_cmdline_bytes,
    parse_fdinfo_iff,
    parse_io,
    parse_qemu_cmdline,
    parse_schedstat,
    parse_stat_cpu_ticks,
    parse_stat_start_ticks,
    parse_status_field,
    parse_status_rss_bytes,
    parse_vcpu_comm,
    split_qemu_opts,
)
from tests.kvmtools.fakehost import FIXTURES, read_args


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        (
            "handmade-libvirt-fd-monitor.args",
            QemuCmdline("web,01", "1b2c3d4e-5f60-4a7b-8c9d-0e1f2a3b4c5d", None),
        ),
        (
            "handmade-libvirt-path-monitor.args",
            QemuCmdline(
                "web02",
                "0a1b2c3d-4e5f-4061-8273-94a5b6c7d8e9",
                "/var/lib/libvirt/qemu/domain-1-web02/monitor.sock",
            ),
        ),
        ("handmade-plain-probe.args", QemuCmdline("l2a", None, None)),
        ("handmade-plain-kvmlab.args", QemuCmdline("guest1", None, "/run/kvmlab/guest1.qmp")),
    ],
)
def test_qemu_cmdlines(fixture: str, expected: QemuCmdline) -> None:
    assert parse_qemu_cmdline(read_args(fixture)) == expected


def test_captured_cmdline() -> None:
    argv = parse_cmdline_bytes((FIXTURES / "captured-pvm-kvm-S-cmdline.bin").read_bytes())
    assert argv[0] == "qemu-system-x86_64"
    assert parse_qemu_cmdline(argv) == QemuCmdline(
        "capture1", "6f1c2a9e-3b7d-4c55-9e0a-2d4b8c1e7f30", "/run/jcapture1.qmp"
    )


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        # no -name: the caller names it qemu-<pid>
        (["qemu", "-m", "256"], QemuCmdline(None, None, None)),
        # --name is -name; a bare name with process= after it
        (["qemu", "--name", "db1,process=qemu-db1"], QemuCmdline("db1", None, None)),
        # a name with a newline would forge exposition lines: refused
        (["qemu", "-name", "guest=a\nb"], QemuCmdline(None, None, None)),
        (["qemu", "-name", "guest="], QemuCmdline(None, None, None)),
        (["qemu", "-uuid", "not-a-uuid"], QemuCmdline(None, None, None)),
        # a relative socket path is QEMU's cwd's: not trusted
        (["qemu", "-qmp", "unix:qmp.sock,server=on"], QemuCmdline(None, None, None)),
        # -mon without mode=control is the human monitor
        (
            ["qemu", "-chardev", "socket,id=m,path=/run/m.sock,server=on", "-mon", "chardev=m"],
            QemuCmdline(None, None, None),
        ),
        (
            ["qemu", "-chardev", "socket,id=m,path=/run/m.sock", "-mon", "chardev=m,mode=control"],
            QemuCmdline(None, None, "/run/m.sock"),
        ),
        # the option is the last argument: no value to read
        (["qemu", "-name"], QemuCmdline(None, None, None)),
    ],
)
def test_qemu_cmdline_odd_cases(argv: list[str], expected: QemuCmdline) -> None:
    assert parse_qemu_cmdline(argv) == expected


def test_qemu_opts_double_comma() -> None:
    assert split_qemu_opts("guest=a,,b,debug-threads=on") == ["guest=a,b", "debug-threads=on"]
    assert split_qemu_opts("") == [""]


def test_captured_tun_fdinfo() -> None:
    text = (FIXTURES / "captured-pvm-kvm-S-fdinfo-tun-jcaptap0.txt").read_text()
    assert parse_fdinfo_iff(text) == "jcaptap0"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("pos:\t0\nflags:\t02\niff:\t\n", None),  # tun fd not attached: empty name
        ("pos:\t0\nflags:\t02\nmnt_id:\t15\n", None),  # not a tun fd
        ("iff:\tvnet12\n", "vnet12"),
        ("iff:\ta/b\n", None),
        ("iff:\tabcdefghijklmnop\n", None),  # 16 bytes: longer than IFNAMSIZ allows
    ],
)
def test_fdinfo_odd_cases(text: str, expected: str | None) -> None:
    assert parse_fdinfo_iff(text) == expected


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("captured-pvm-kvm-S-cgroup.txt", "/"),
        (
            "handmade-libvirt-cgroup.txt",
            "/machine.slice/machine-qemu\\x2d3\\x2dweb\\x2c01.scope/libvirt/emulator",
        ),
        ("handmade-kvmlab-cgroup.txt", "/machine.slice/kvmlab-guest1.scope"),
    ],
)
def test_cgroup_v2(fixture: str, expected: str) -> None:
    assert parse_cgroup_v2((FIXTURES / fixture).read_text()) == expected


@pytest.mark.parametrize(
    "text", ["1:cpu:/\n", "0::machine.slice\n", "0::/a/../../etc\n", ""], ids=repr
)
def test_cgroup_v2_absent_or_invalid(text: str) -> None:
    assert parse_cgroup_v2(text) is None


@pytest.mark.parametrize(
    ("fixture", "ticks"),
    [
        ("captured-pvm-kvm-S-vcpu0-stat.txt", 0),  # stopped with -S: never ran
        ("handmade-vcpu-ran-stat.txt", 1234 + 567),
        ("handmade-odd-comm-stat.txt", 7 + 3),
    ],
)
def test_thread_cpu_ticks(fixture: str, ticks: int) -> None:
    assert parse_stat_cpu_ticks((FIXTURES / fixture).read_text()) == ticks


def test_stat_start_time() -> None:
    """Field 22: what tells a reused pid from the process that had it before."""
    text = (FIXTURES / "captured-pvm-kvm-S-vcpu0-stat.txt").read_text()
    assert parse_stat_start_ticks(text) == 6892931
    assert parse_stat_start_ticks((FIXTURES / "handmade-odd-comm-stat.txt").read_text()) > 0


def test_stat_without_fields_is_an_error() -> None:
    with pytest.raises(ValueError, match="not a /proc stat line"):
        parse_stat_cpu_ticks("12 (x) S 1")
    with pytest.raises(ValueError, match="not a /proc stat line"):
        parse_stat_start_ticks("12 (x) S 1")


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("captured-pvm-init-schedstat.txt", Schedstat(262654677, 83336841, 1416)),
        ("handmade-vcpu-waited-schedstat.txt", Schedstat(812345678901, 3456789012, 291004)),
    ],
)
def test_schedstat(fixture: str, expected: Schedstat) -> None:
    assert parse_schedstat((FIXTURES / fixture).read_text()) == expected


def test_schedstat_takes_the_first_three_fields() -> None:
    assert parse_schedstat("1 2 3 4\n") == Schedstat(1, 2, 3)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1 2\n",  # two fields: not this file
        "1 -2 3\n",
        "a b c\n",
    ],
    ids=repr,
)
def test_schedstat_odd_lines_are_errors(text: str) -> None:
    with pytest.raises(ValueError, match="not a /proc schedstat line"):
        parse_schedstat(text)


def test_status_and_io_captured() -> None:
    status = (FIXTURES / "captured-pvm-kvm-S-vcpu0-status.txt").read_text()
    assert parse_status_field(status, "Cpus_allowed_list") == "0-1"
    assert parse_status_rss_bytes(status) == 33912 * 1024
    io = parse_io((FIXTURES / "captured-pvm-kvm-S-io.txt").read_text())
    assert (io["read_bytes"], io["write_bytes"]) == (278528, 24576)


def test_zombie_status_has_no_rss() -> None:
    assert parse_status_rss_bytes("Name:\tqemu\nState:\tZ (zombie)\n") is None


@pytest.mark.parametrize(
    ("comm", "index"),
    [("CPU 0/KVM\n", 0), ("CPU 17/KVM", 17), ("CPU 0/TCG", None), ("qemu-system-x86", None)],
)
def test_vcpu_comm(comm: str, index: int | None) -> None:
    assert parse_vcpu_comm(comm) == index


# Every capture dropped into the folder (captured-*, real-*) is read by these, by name pattern.
CAPTURES = [p for p in sorted(FIXTURES.iterdir()) if p.name.startswith(("captured-", "real-"))]


@pytest.mark.parametrize(
    "path", [p for p in CAPTURES if p.name.endswith("-fdinfo-tun-" + p.name.split("-")[-1])]
)
def test_every_captured_tun_fdinfo_names_its_tap(path: Path) -> None:
    tap = path.name.rsplit("-fdinfo-tun-", 1)[1].removesuffix(".txt")
    assert parse_fdinfo_iff(path.read_text()) == tap


@pytest.mark.parametrize("path", [p for p in CAPTURES if p.name.endswith("-cmdline.bin")])
def test_every_captured_cmdline_has_a_name(path: Path) -> None:
    assert parse_qemu_cmdline(parse_cmdline_bytes(path.read_bytes())).name


@pytest.mark.parametrize("path", [p for p in CAPTURES if p.name.endswith("-stat.txt")])
def test_every_captured_thread_stat_parses(path: Path) -> None:
    assert parse_stat_cpu_ticks(path.read_text()) >= 0


@pytest.mark.parametrize("path", [p for p in CAPTURES if p.name.endswith("-schedstat.txt")])
def test_every_captured_schedstat_parses(path: Path) -> None:
    assert parse_schedstat(path.read_text()).timeslices >= 0
