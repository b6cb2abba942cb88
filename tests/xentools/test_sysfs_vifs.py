"""xentools.sysfs on a fixture Dom0 sysfs tree (tests/fixtures/sysfs, see its README)."""

from __future__ import annotations

from pathlib import Path

import pytest

from xentools.sysfs import (
    Vif,
    list_vbds,
    list_vifs,
    parse_nodename,
    parse_vif_name,
    read_links,
    read_vif_stats,
    vbd_device_name,
)

SYSFS = str(Path(__file__).resolve().parents[1] / "fixtures" / "sysfs")


def test_list_vifs_matches_like_libxenstat() -> None:
    assert list_vifs(SYSFS) == [
        Vif("vif1.0", 1, 0, emulated=False),
        Vif("web01", 2, 1, emulated=False),
        Vif("vif3.0", 3, 0, emulated=False),
        Vif("vif3.0-emu", 3, 0, emulated=True),
    ]


def test_vif_counters_are_dom0s_view() -> None:
    stats = read_vif_stats(Vif("vif1.0", 1, 0, emulated=False), SYSFS)
    assert (stats.rx_bytes, stats.rx_packets, stats.rx_dropped) == (1887458304, 1300123, 0)
    assert (stats.tx_bytes, stats.tx_packets, stats.tx_dropped) == (95560704, 71234, 3)


def test_vanished_vif_raises() -> None:
    with pytest.raises(OSError):
        read_vif_stats(Vif("vif9.0", 9, 0, emulated=False), SYSFS)


def test_missing_sysfs_means_no_devices(tmp_path: Path) -> None:
    assert list_vifs(str(tmp_path)) == []
    assert list_vbds(str(tmp_path)) == []
    assert read_links(["vif1.0"], str(tmp_path)) == (frozenset(), {})


def test_read_links_reads_only_the_flags_asked_for(tmp_path: Path) -> None:
    net = tmp_path / "class" / "net"
    for name, flags in [("vif1.0", "0x1003"), ("vif2.0", "0x1002"), ("jifb1", "0x1003")]:
        (net / name).mkdir(parents=True)
        (net / name / "flags").write_text(flags + "\n")
    (net / "vif3.0").mkdir()  # vanished while being read: no flags file
    names, up = read_links(["vif1.0", "vif2.0", "vif3.0", "vif9.0"], str(tmp_path))
    assert names == {"vif1.0", "vif2.0", "vif3.0", "jifb1"}
    assert up == {"vif1.0": True, "vif2.0": False}


def test_list_vbds() -> None:
    vbds = list_vbds(SYSFS)
    assert [(v.domid, v.devid, v.device) for v in vbds] == [
        (1, 51712, "xvda"),
        (3, 268439808, "xvdr"),
    ]
    first = vbds[0]
    assert (first.read_requests, first.write_requests) == (120034, 88123)
    assert (first.read_sectors, first.write_sectors, first.out_of_requests) == (4123456, 2233441, 0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("backend/vif/7/0\n", (7, 0)),
        ("backend/vif/12/3", (12, 3)),
        ("device/vif/0", None),
        ("backend/vbd/7/51712", None),
        ("", None),
    ],
)
def test_parse_nodename(text: str, expected: tuple[int, int] | None) -> None:
    assert parse_nodename(text) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("vif7.0", (7, 0)),
        ("vif7.0-emu", (7, 0)),
        ("vif12.3", (12, 3)),
        ("vif7", None),
        ("vifx.0", None),
        ("xvif7i0", None),
        ("eth0", None),
    ],
)
def test_parse_vif_name(name: str, expected: tuple[int, int] | None) -> None:
    assert parse_vif_name(name) == expected


@pytest.mark.parametrize(
    ("devid", "name"),
    [
        (51712, "xvda"),
        (51713, "xvda1"),
        (51728, "xvdb"),
        ((1 << 28) | (27 << 8), "xvdab"),
        ((8 << 8) | 16, "sdb"),
        ((3 << 8) | 64, "hdb"),
        ((22 << 8) | 1, "hdc1"),
        (12345 << 8, str(12345 << 8)),
    ],
)
def test_vbd_device_name(devid: int, name: str) -> None:
    assert vbd_device_name(devid) == name
