"""judicator-exporter's --platform flag: flags of the other platform fail at start, and a KVM
exporter serves the kvm_* metrics of a fake host over HTTP."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from exporter.cli import build_parser, resolve_platform
from tests.exporter.test_exporter_serving import get, serving
from tests.kvmtools.fakehost import FakeVm, build, probe_debugfs, read_args
from tests.support import REPO


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--platform=kvm", "--collector.perfc"], "--collector.perfc is for --platform=xen"),
        (["--platform=kvm", "--no-collector.perfc"], "--collector.perfc is for --platform=xen"),
        (["--platform=kvm", "--xl.path=/usr/sbin/xl"], "--xl.path is for --platform=xen"),
        (["--platform=kvm", "--perfc.reader=xenperf"], "--perfc.reader is for --platform=xen"),
        (["--platform=kvm", "--toolstack.reader=xl"], "--toolstack.reader is for --platform=xen"),
        (["--platform=kvm", "--xenperf.path=x"], "--xenperf.path is for --platform=xen"),
        (
            ["--platform=kvm", "--collector.perfc.include=.*"],
            "--collector.perfc.include is for --platform=xen",
        ),
        (["--collector.kvmstat"], "--collector.kvmstat is for --platform=kvm, not xen"),
        (["--path.procfs=/proc"], "--path.procfs is for --platform=kvm, not xen"),
        (["--path.debugfs=/d"], "--path.debugfs is for --platform=kvm, not xen"),
        (["--collector.kvmstat.include=x"], "--collector.kvmstat.include is for --platform=kvm"),
        (["--platform=kvm", "--collector.kvmstat.include=("], "--collector.kvmstat.include '('"),
        (["--kvmstat.source=qmp"], "--kvmstat.source is for --platform=kvm, not xen"),
        (["--platform=kvm", "--kvmstat.source=stats-fd"], "invalid choice: 'stats-fd'"),
        (["--platform=hyperv"], "invalid choice: 'hyperv'"),
    ],
)
def test_platform_flags_fail_at_start(flags: Sequence[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "exporter", *flags],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
    )
    assert result.returncode == 2
    assert message in result.stderr


@pytest.mark.parametrize(
    ("flags", "enabled", "off"),
    [
        ([], {"collector_perfc": True}, ["collector_kvmstat"]),
        (["--platform=kvm"], {"collector_kvmstat": True, "procfs": "/proc"}, ["collector_perfc"]),
        (["--platform=kvm", "--no-collector.kvmstat"], {"collector_kvmstat": False}, []),
        (["--platform=kvm"], {"kvmstat_source": "auto"}, []),
        (["--platform=kvm", "--kvmstat.source=qmp"], {"kvmstat_source": "qmp"}, []),
    ],
)
def test_platform_defaults(flags: list[str], enabled: dict[str, object], off: list[str]) -> None:
    args = build_parser().parse_args(flags)
    assert resolve_platform(args) == []
    for dest, value in enabled.items():
        assert getattr(args, dest) == value
    for dest in off:
        assert getattr(args, dest) is False


def test_kvm_exporter_serves_a_fake_host(tmp_path: Path) -> None:
    proc, debug = build(
        tmp_path,
        FakeVm(
            4240,
            read_args("handmade-plain-kvmlab.args"),
            vcpus={0: (100, 50)},
            debugfs=probe_debugfs(),
        ),
    )
    with serving(
        "--platform=kvm",
        f"--path.procfs={proc}",
        f"--path.debugfs={debug}",
        f"--path.sysfs={tmp_path / 'sys'}",
        "--collector.kvmstat.include=exits|pages_4k",
    ) as base:
        status, text = get(base + "/metrics")
    assert status == 200
    assert 'kvm_domain_info{domain="guest1",pid="4240",uuid=""} 1.0\n' in text
    assert 'kvm_vm_exits_total{domain="guest1"} 84882.0\n' in text
    assert 'kvm_vm_pages_4k{domain="guest1"} 61440.0\n' in text
    for collector in ("domain", "network", "block", "kvmstat"):
        assert f'xen_exporter_collector_success{{collector="{collector}"}} 1.0' in text
    assert "xen_domain_" not in text and "perfc" not in text
