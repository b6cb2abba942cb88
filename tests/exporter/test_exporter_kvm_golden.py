"""A whole scrape of a fake KVM host, as `--platform=kvm` assembles it, compared with a golden
exposition file (tests/fixtures/expected/kvm-exporter.prom, README there).

Refresh it only on purpose (UPDATE_GOLDEN=1 .venv/bin/python -m pytest
tests/exporter/test_exporter_kvm_golden.py) and review the diff. `promtool check metrics` must
accept it without a single warning.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from exporter.cli import build_parser, kvm_collectors, resolve_platform
from exporter.collector import Exporter
from exporter.kvm import DEFAULT_KVMSTAT_INCLUDE
from tests.exporter.test_exporter_golden import assert_promtool_accepts, stable
from tests.kvmtools.fakehost import FakeVm, build, guest1

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "expected" / "kvm-exporter.prom"
UUID = "0a1b2c3d-4e5f-4061-8273-94a5b6c7d8e9"


def fake_host(root: Path) -> list[str]:
    """guest1 (the lab's, two vCPUs, a tap, the probe's debugfs statistics) and web02 (libvirt
    style: a uuid, one vCPU that waited, no tap); the flags that point the exporter at them."""
    proc, debug = build(
        root,
        guest1(),
        FakeVm(
            5100,
            ["qemu-system-x86_64", "-name", "guest=web02,debug-threads=on", "-uuid", UUID],
            vm_fd=14,
            vcpus={0: (4000, 1000)},
            waits_ns={0: 12_500_000_000},
            debugfs={"exits": (0o644, 7), "irq_injections": (0o644, 3), "pages_4k": (0o444, 512)},
        ),
    )
    statistics = root / "sys" / "class" / "net" / "kvmtap1" / "statistics"
    statistics.mkdir(parents=True)
    for name, value in {"rx_bytes": 1000, "rx_packets": 10, "rx_dropped": 1}.items():
        (statistics / name).write_text(f"{value}\n")
    for name, value in {"tx_bytes": 2000, "tx_packets": 20, "tx_dropped": 2}.items():
        (statistics / name).write_text(f"{value}\n")
    return [
        "--platform=kvm",
        f"--path.procfs={proc}",
        f"--path.debugfs={debug}",
        f"--path.sysfs={root / 'sys'}",
    ]


def whole_scrape(root: Path) -> str:
    args = build_parser().parse_args(fake_host(root))
    assert resolve_platform(args) == []  # the platform's defaults, as the command line sets them
    collectors, toolstack = kvm_collectors(args, re.compile(DEFAULT_KVMSTAT_INCLUDE))
    exporter = Exporter(collectors, toolstack, command_timeout=5, scrape_timeout=20)
    return stable(exporter.render().decode())


def test_golden_exposition_of_a_fake_kvm_host(tmp_path: Path) -> None:
    text = whole_scrape(tmp_path)
    for collector in ("domain", "network", "block", "kvmstat"):
        assert f'xen_exporter_collector_success{{collector="{collector}"}} 1.0' in text
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), "exposition changed: review, then UPDATE_GOLDEN=1"


def test_promtool_accepts_the_kvm_golden_file_without_warnings() -> None:
    assert_promtool_accepts(GOLDEN.read_text())
