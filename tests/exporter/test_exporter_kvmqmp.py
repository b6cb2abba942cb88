"""The kvmstat collector's QMP source (`--kvmstat.source`) on a fake /proc and debugfs, with
fake QMP monitors answering from fixtures (tests/kvmtools/fakeqmp.py) or staying silent."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from exporter.collector import Exporter
from exporter.kvm import KvmHost, KvmStatCollector, NoXenToolstack
from tests.kvmtools.fakehost import FakeVm, build, lock_down_debugfs, probe_debugfs
from tests.kvmtools.fakeqmp import FakeQmp, fake_qmp, qmp_answers

INCLUDE = re.compile("exits|blocking|pages_4k")


def qemu_argv(name: str, socket: Path | None) -> list[str]:
    argv = ["qemu-system-x86_64", "-name", f"guest={name},debug-threads=on"]
    return argv + (["-qmp", f"unix:{socket},server=on,wait=off"] if socket else [])


class Host:
    """VM `a` (the probe's debugfs; QMP answers as run6.log's L2a) and VM `b` (QMP answers
    as the captured -smp 2 QEMU, or silent)."""

    def __init__(self, root: Path, stack: ExitStack, b_silent: bool = False) -> None:
        self.a = stack.enter_context(fake_qmp(root / "a.qmp", qmp_answers("handmade-probe-run6")))
        answers = None if b_silent else qmp_answers("captured-pvm-kvm-S-smp2")
        self.b = stack.enter_context(fake_qmp(root / "b.qmp", answers))
        proc, debug = build(
            root,
            FakeVm(
                6100, qemu_argv("a", root / "a.qmp"), vcpus={0: (1, 1)}, debugfs=probe_debugfs()
            ),
            FakeVm(
                6200,
                qemu_argv("b", root / "b.qmp"),
                vcpus={0: (1, 1), 1: (1, 1)},
                debugfs={"exits": (0o644, 7), "pages_4k": (0o444, 512)},
            ),
        )
        self.kvm = KvmHost(proc, debug)

    def monitors(self) -> list[FakeQmp]:
        return [self.a, self.b]


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    with ExitStack() as stack:
        yield Host(tmp_path, stack)


def scrape(host: Host, source: str, command_timeout: float = 2) -> str:
    collector = KvmStatCollector(host.kvm, INCLUDE, source)
    return Exporter([collector], NoXenToolstack(), command_timeout, 5).render().decode()


def samples(text: str, prefix: str) -> dict[str, str]:
    return dict(line.rsplit(" ", 1) for line in text.splitlines() if line.startswith(prefix))


def test_qmp_source_publishes_vm_and_vcpu_statistics(host: Host) -> None:
    text = scrape(host, "qmp")
    assert 'xen_exporter_collector_success{collector="kvmstat"} 1.0' in text
    # VM level: what query-stats said (84885), not debugfs (84882); b's from its two vCPUs
    assert samples(text, "kvm_vm_") == {
        'kvm_vm_blocking{domain="a"}': "0.0",
        'kvm_vm_blocking{domain="b"}': "0.0",
        'kvm_vm_exits_total{domain="a"}': "84885.0",
        'kvm_vm_exits_total{domain="b"}': "0.0",
        'kvm_vm_pages_4k{domain="a"}': "0.0",
        'kvm_vm_pages_4k{domain="b"}': "0.0",
    }
    assert samples(text, "kvm_vcpu_") == {
        'kvm_vcpu_blocking{domain="a",vcpu="0"}': "0.0",
        'kvm_vcpu_blocking{domain="b",vcpu="0"}': "0.0",
        'kvm_vcpu_blocking{domain="b",vcpu="1"}': "0.0",
        'kvm_vcpu_exits_total{domain="a",vcpu="0"}': "84885.0",
        'kvm_vcpu_exits_total{domain="b",vcpu="0"}': "0.0",
        'kvm_vcpu_exits_total{domain="b",vcpu="1"}': "0.0",
    }
    assert "# TYPE kvm_vcpu_exits_total counter" in text
    assert "# TYPE kvm_vcpu_blocking gauge" in text  # instant, by QEMU's schema
    assert samples(text, "xen_exporter_kvmstat_qmp_success") == {
        'xen_exporter_kvmstat_qmp_success{domain="a"}': "1.0",
        'xen_exporter_kvmstat_qmp_success{domain="b"}': "1.0",
    }


def test_auto_reads_debugfs_where_it_works_and_asks_no_qmp(host: Host) -> None:
    text = scrape(host, "auto")
    assert 'xen_exporter_collector_success{collector="kvmstat"} 1.0' in text
    assert 'kvm_vm_exits_total{domain="a"} 84882.0' in text  # debugfs's value
    assert "kvm_vcpu_" not in text and "kvmstat_qmp_success" not in text
    assert all(not monitor.asked for monitor in host.monitors())


def test_auto_under_lockdown_takes_the_counters_from_qmp(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock_down_debugfs(monkeypatch)
    assert "kvm_vm_exits_total" not in scrape(host, "debugfs")
    text = scrape(host, "auto")
    assert 'xen_exporter_collector_success{collector="kvmstat"} 1.0' in text
    assert 'kvm_vm_exits_total{domain="a"} 84885.0' in text
    assert 'kvm_vcpu_exits_total{domain="b",vcpu="1"} 0.0' in text


def test_auto_without_debugfs_or_socket_fails_the_collector(tmp_path: Path) -> None:
    proc, debug = build(tmp_path, FakeVm(6300, qemu_argv("c", None), vcpus={0: (1, 1)}))
    text = (
        Exporter([KvmStatCollector(KvmHost(proc, debug), INCLUDE, "auto")], NoXenToolstack(), 2, 5)
        .render()
        .decode()
    )
    assert 'xen_exporter_collector_success{collector="kvmstat"} 0.0' in text
    qmp_text = (
        Exporter([KvmStatCollector(KvmHost(proc, debug), INCLUDE, "qmp")], NoXenToolstack(), 2, 5)
        .render()
        .decode()
    )
    assert 'xen_exporter_collector_success{collector="kvmstat"} 0.0' in qmp_text
    assert "kvm_vm_" not in text + qmp_text


@pytest.mark.parametrize("silent", [["b"], ["a", "b"]])
def test_a_silent_monitor_costs_at_most_the_timeout_and_is_reported(
    tmp_path: Path, silent: list[str]
) -> None:
    """A unix socket that accepts and never greets (a hung QEMU): left out of the scrape after
    the command timeout, counted in qmp_success 0; the other VM is served. Two silent ones
    cost one timeout, not two: they are asked in parallel."""
    timeout = 0.5
    with ExitStack() as stack:
        host = Host(tmp_path, stack, b_silent=True)
        if "a" in silent:
            host.a.answers = None
        started = time.monotonic()
        text = scrape(host, "qmp", command_timeout=timeout)
        took = time.monotonic() - started
    assert timeout <= took < timeout + 0.4
    assert 'xen_exporter_collector_success{collector="kvmstat"} 0.0' in text
    assert 'xen_exporter_kvmstat_qmp_success{domain="b"} 0.0' in text
    assert 'kvm_vm_exits_total{domain="b"}' not in text
    if "a" in silent:
        assert 'xen_exporter_kvmstat_qmp_success{domain="a"} 0.0' in text
    else:
        assert 'kvm_vm_exits_total{domain="a"} 84885.0' in text
