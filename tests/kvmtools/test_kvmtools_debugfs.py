"""kvmtools.debugfs: reading a VM's statistics directory, and their kinds from the kernel's
descriptors (built in tmp_path from the `*-debugfs.txt` fixtures, modes included)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kvmtools.debugfs import (
    STAT_KINDS,
    DebugfsLockedDown,
    Kind,
    classify,
    read_vm_stats,
    stat_kind,
)
from tests.kvmtools.fakehost import FIXTURES, debugfs_lines, lock_down_debugfs


def build_dir(tmp_path: Path, fixture: str) -> tuple[str, dict[str, str]]:
    """The fixture as a directory (EPERM files get their mode and a placeholder value)."""
    stats = tmp_path / "kvm" / "165-12"
    stats.mkdir(parents=True)
    values = {}
    for name, mode, value in debugfs_lines(fixture):
        (stats / name).write_text(("0" if value == "EPERM" else value) + "\n")
        os.chmod(stats / name, mode)
        values[name] = value
    (stats / "vcpu0").mkdir()
    (stats / "vcpu0" / "pid").write_text("170\n")
    (stats / "mmu_rmaps_stat").write_text("level 4k: 1 2 3\n")
    return str(stats), values


def test_probe_values_and_kinds(tmp_path: Path) -> None:
    stats_dir, _ = build_dir(tmp_path, "handmade-probe-run6-debugfs.txt")
    values = read_vm_stats(stats_dir)
    assert values["exits"] == 84882
    assert values["irq_injections"] == 15673
    assert values["halt_wakeup"] == 5738
    assert "mmu_rmaps_stat" not in values and "vcpu0" not in values
    kinds = {s.name: s.kind for s in classify(stats_dir, values)}
    assert kinds["exits"] is Kind.CUMULATIVE
    assert kinds["pages_4k"] is Kind.INSTANT
    assert kinds["blocking"] is Kind.INSTANT
    assert kinds["max_mmu_rmap_size"] is Kind.PEAK
    assert kinds["halt_wait_hist"] is Kind.HISTOGRAM


def test_table_agrees_with_modes_kvm_gives_files() -> None:
    """KVM makes instant statistics 0444 and the others 0644 (kvm_stats_debugfs_mode): the
    captured 6.18 directory's modes agree with the 6.1 table for every statistic both have."""
    for name, mode, _ in debugfs_lines("captured-pvm-kvm-S-debugfs.txt"):
        kind = STAT_KINDS.get(name)
        if kind is not None:
            assert (mode == 0o444) == (kind is Kind.INSTANT), name


def test_unknown_statistics_by_mode(tmp_path: Path) -> None:
    stats_dir, _ = build_dir(tmp_path, "handmade-probe-run6-debugfs.txt")
    Path(stats_dir, "newer_instant").write_text("7\n")
    os.chmod(Path(stats_dir, "newer_instant"), 0o444)
    Path(stats_dir, "pf_parked").write_text("3\n")  # 6.18's, 0644: cumulative or peak?
    os.chmod(Path(stats_dir, "pf_parked"), 0o644)
    kinds = {s.name: s.kind for s in classify(stats_dir, read_vm_stats(stats_dir))}
    assert kinds["newer_instant"] is Kind.INSTANT
    assert "pf_parked" not in kinds
    assert stat_kind("pf_parked", 0o100644) is None


def test_lockdown_refuses_writable_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The captured lockdown: debugfs refuses every file that is not 0444 with EPERM (root here
    cannot be refused by tmpfs, so open() says what debugfs said on the capture's kernel)."""
    stats_dir, captured = build_dir(tmp_path, "captured-pvm-kvm-S-debugfs.txt")
    lock_down_debugfs(monkeypatch)
    with pytest.raises(DebugfsLockedDown) as raised:
        read_vm_stats(stats_dir)
    # mmu_rmaps_stat is x86's text file beside the statistics: never read
    refused = sorted(n for n, v in captured.items() if v == "EPERM" and n != "mmu_rmaps_stat")
    assert sorted(raised.value.refused) == refused
    assert raised.value.partial == {n: int(v) for n, v in captured.items() if v != "EPERM"}
    assert "exits" in raised.value.refused and "lockdown" in str(raised.value)


def test_gone_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_vm_stats(str(tmp_path / "kvm" / "1-1"))


def test_fixture_files_follow_the_format() -> None:
    for path in FIXTURES.glob("*-debugfs.txt"):
        for name, mode, value in debugfs_lines(path.name):
            assert mode in (0o444, 0o644), (path.name, name)
            assert value == "EPERM" or value.isdigit(), (path.name, name)
