"""The KVM collectors (`--platform=kvm`) on a fake /proc, sysfs and debugfs in tmp_path:
exact exposition text, one VM list per scrape, failures through the collector success metric."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from exporter import kvm
from exporter.collector import Exporter, SourceCollector
from exporter.kvm import (
    KvmBlockCollector,
    KvmDomainCollector,
    KvmHost,
    KvmNetworkCollector,
    KvmStatCollector,
    KvmTaps,
    NoXenToolstack,
)
from exporter.toolstack import Scrape
from tests.kvmtools.fakehost import FakeVm, build, guest1, lock_down_debugfs

UUID = "1b2c3d4e-5f60-4a7b-8c9d-0e1f2a3b4c5d"


@pytest.fixture
def host(tmp_path: Path) -> tuple[KvmHost, str]:
    proc, debug = build(
        tmp_path,
        guest1(),
        FakeVm(
            5100,
            ["qemu-system-x86_64", "-name", "guest=web,,01", "-uuid", UUID],
            vm_fd=14,
            vcpus={0: (0, 0)},
            rss_kb=1024,
            read_bytes=0,
            write_bytes=1 << 30,
            debugfs={"exits": (0o644, 7), "pages_4k": (0o444, 512)},
        ),
    )
    statistics = tmp_path / "sys" / "class" / "net" / "kvmtap1" / "statistics"
    statistics.mkdir(parents=True)
    counters = {"rx_bytes": 1000, "rx_packets": 10, "rx_dropped": 1}
    counters |= {"tx_bytes": 2000, "tx_packets": 20, "tx_dropped": 2}
    for name, value in counters.items():
        (statistics / name).write_text(f"{value}\n")
    return KvmHost(proc, debug), str(tmp_path / "sys")


def render(*collectors: SourceCollector) -> tuple[str, dict[str, str]]:
    """The kvm_ lines of one scrape, and each collector's success value."""
    text = Exporter(list(collectors), NoXenToolstack(), 2, 5).render().decode()
    kvm_lines = [
        line
        for line in text.splitlines()
        if line.startswith(("kvm_", "# HELP kvm_", "# TYPE kvm_"))
    ]
    success = dict(re.findall(r'xen_exporter_collector_success\{collector="(\w+)"\} (\S+)', text))
    return "\n".join(kvm_lines) + "\n", success


def test_domain_collector(host: tuple[KvmHost, str]) -> None:
    text, success = render(KvmDomainCollector(host[0]))
    assert success == {"domain": "1.0"}
    assert text == (
        "# HELP kvm_domain_info Facts about a VM (value 1): its QEMU's pid (changes when the VM "
        "restarts) and -uuid (empty when not given)\n"
        "# TYPE kvm_domain_info gauge\n"
        'kvm_domain_info{domain="guest1",pid="4240",uuid=""} 1.0\n'
        f'kvm_domain_info{{domain="web,01",pid="5100",uuid="{UUID}"}} 1.0\n'
        "# HELP kvm_domain_cpu_seconds_total CPU time the VM's vCPU threads used, user and system "
        "(/proc task stat; QEMU's other threads, I/O and emulation, left out as Xen leaves out "
        "Dom0's work)\n"
        "# TYPE kvm_domain_cpu_seconds_total counter\n"
        'kvm_domain_cpu_seconds_total{domain="guest1"} 1.65\n'
        'kvm_domain_cpu_seconds_total{domain="web,01"} 0.0\n'
        "# HELP kvm_vcpu_cpu_seconds_total CPU time one vCPU thread used, user and system "
        "(/proc task stat)\n"
        "# TYPE kvm_vcpu_cpu_seconds_total counter\n"
        'kvm_vcpu_cpu_seconds_total{domain="guest1",vcpu="0"} 1.5\n'
        'kvm_vcpu_cpu_seconds_total{domain="guest1",vcpu="1"} 0.15\n'
        'kvm_vcpu_cpu_seconds_total{domain="web,01",vcpu="0"} 0.0\n'
        "# HELP kvm_vcpu_wait_seconds_total Time one vCPU thread was runnable but waited for a "
        "host CPU (/proc task schedstat run_delay; the guest sees it as steal time)\n"
        "# TYPE kvm_vcpu_wait_seconds_total counter\n"
        'kvm_vcpu_wait_seconds_total{domain="guest1",vcpu="0"} 0.25\n'
        'kvm_vcpu_wait_seconds_total{domain="guest1",vcpu="1"} 1.5e-06\n'
        'kvm_vcpu_wait_seconds_total{domain="web,01",vcpu="0"} 0.0\n'
        "# HELP kvm_domain_vcpus The VM's vCPU threads (named CPU <n>/KVM by QEMU's "
        "debug-threads=on, else from KVM's debugfs)\n"
        "# TYPE kvm_domain_vcpus gauge\n"
        'kvm_domain_vcpus{domain="guest1"} 2.0\n'
        'kvm_domain_vcpus{domain="web,01"} 1.0\n'
        "# HELP kvm_domain_memory_bytes Resident memory of the VM's QEMU process (/proc status "
        "VmRSS)\n"
        "# TYPE kvm_domain_memory_bytes gauge\n"
        'kvm_domain_memory_bytes{domain="guest1"} 2.68435456e+08\n'
        'kvm_domain_memory_bytes{domain="web,01"} 1.048576e+06\n'
    )


def test_without_schedstat_the_vm_has_no_wait_but_everything_else(tmp_path: Path) -> None:
    """A kernel without CONFIG_SCHED_INFO has no /proc/<pid>/task/<tid>/schedstat."""
    proc, debug = build(
        tmp_path, FakeVm(77, ["qemu", "-name", "x"], vcpus={0: (1, 1)}, schedstat=False)
    )
    text, success = render(KvmDomainCollector(KvmHost(proc, debug)))
    assert success == {"domain": "1.0"}
    assert 'kvm_vcpu_cpu_seconds_total{domain="x",vcpu="0"} 0.02' in text
    assert "# TYPE kvm_vcpu_wait_seconds_total counter\n# HELP kvm_domain_vcpus" in text


def test_network_collector_is_in_the_guests_direction(host: tuple[KvmHost, str]) -> None:
    text, success = render(KvmNetworkCollector(*host))
    assert success == {"network": "1.0"}
    series = [line for line in text.splitlines() if not line.startswith("#")]
    tap = '{domain="guest1",interface="kvmtap1"}'
    assert series == [
        f"kvm_domain_network_transmit_bytes_total{tap} 1000.0",
        f"kvm_domain_network_transmit_packets_total{tap} 10.0",
        f"kvm_domain_network_transmit_dropped_total{tap} 1.0",
        f"kvm_domain_network_receive_bytes_total{tap} 2000.0",
        f"kvm_domain_network_receive_packets_total{tap} 20.0",
        f"kvm_domain_network_receive_dropped_total{tap} 2.0",
    ]
    assert (
        "# HELP kvm_domain_network_transmit_bytes_total Bytes sent by the guest on the domain's "
        "tap (the host's sysfs class/net statistics rx_bytes; restarts at 0 when the interface "
        "is recreated)\n# TYPE kvm_domain_network_transmit_bytes_total counter\n"
    ) in text


def test_block_collector(host: tuple[KvmHost, str]) -> None:
    text, success = render(KvmBlockCollector(host[0]))
    assert success == {"block": "1.0"}
    assert text == (
        "# HELP kvm_domain_block_read_bytes_total Bytes the VM's QEMU process caused to be read "
        "from storage (/proc io read_bytes)\n"
        "# TYPE kvm_domain_block_read_bytes_total counter\n"
        'kvm_domain_block_read_bytes_total{domain="guest1"} 4096.0\n'
        'kvm_domain_block_read_bytes_total{domain="web,01"} 0.0\n'
        "# HELP kvm_domain_block_written_bytes_total Bytes the VM's QEMU process caused to be "
        "written to storage (/proc io write_bytes)\n"
        "# TYPE kvm_domain_block_written_bytes_total counter\n"
        'kvm_domain_block_written_bytes_total{domain="guest1"} 8192.0\n'
        'kvm_domain_block_written_bytes_total{domain="web,01"} 1.073741824e+09\n'
    )


def test_kvmstat_counters_and_gauges(host: tuple[KvmHost, str]) -> None:
    # max_mmu_rmap_size is a peak and halt_wait_hist a histogram: never published
    include = re.compile("exits|pages_4k|max_mmu_rmap_size|halt_wait_hist")
    text, success = render(KvmStatCollector(host[0], include))
    assert success == {"kvmstat": "1.0"}
    assert text == (
        "# HELP kvm_vm_exits_total KVM statistic exits (cumulative, summed over the VM's vCPUs "
        "where it is a vCPU statistic; debugfs kvm/<pid>-<fd> or QMP query-stats; restarts at 0 "
        "with the VM)\n"
        "# TYPE kvm_vm_exits_total counter\n"
        'kvm_vm_exits_total{domain="guest1"} 84882.0\n'
        'kvm_vm_exits_total{domain="web,01"} 7.0\n'
        "# HELP kvm_vm_pages_4k KVM statistic pages_4k (instant value, summed over the VM's vCPUs "
        "where it is a vCPU statistic; debugfs kvm/<pid>-<fd> or QMP query-stats)\n"
        "# TYPE kvm_vm_pages_4k gauge\n"
        'kvm_vm_pages_4k{domain="guest1"} 61440.0\n'
        'kvm_vm_pages_4k{domain="web,01"} 512.0\n'
    )


def test_kvmstat_under_lockdown_serves_the_instant_values_and_fails(
    host: tuple[KvmHost, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    lock_down_debugfs(monkeypatch)
    text, success = render(KvmStatCollector(host[0], re.compile("exits|pages_4k")))
    assert success == {"kvmstat": "0.0"}
    assert "kvm_vm_exits_total" not in text
    assert 'kvm_vm_pages_4k{domain="guest1"} 61440.0' in text


def test_kvmstat_without_debugfs_fails(host: tuple[KvmHost, str]) -> None:
    shutil.rmtree(Path(host[0].debugfs) / "kvm")
    text, success = render(KvmStatCollector(host[0], re.compile(".*")), KvmBlockCollector(host[0]))
    assert success == {"kvmstat": "0.0", "block": "1.0"}
    assert "kvm_vm_" not in text


def test_one_vm_list_per_scrape_and_fresh_families(
    host: tuple[KvmHost, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    real = kvm.list_vms

    def counted(proc: str, debug: str, **options: object) -> object:
        calls.append(proc)
        return real(proc, debug, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(kvm, "list_vms", counted)
    collectors = [
        KvmDomainCollector(host[0]),
        KvmNetworkCollector(*host),
        KvmBlockCollector(host[0]),
        KvmStatCollector(host[0], re.compile("exits")),
    ]
    exporter = Exporter(collectors, NoXenToolstack(), 2, 5)
    assert b'kvm_domain_vcpus{domain="web,01"}' in exporter.render()
    assert len(calls) == 1
    shutil.rmtree(Path(host[0].proc) / "5100")  # the VM ended
    second = exporter.render()
    assert len(calls) == 2
    assert b'domain="web,01"' not in second and b'domain="guest1"' in second


def test_a_failing_vm_list_fails_every_collector_not_the_scrape(
    host: tuple[KvmHost, str],
) -> None:
    broken = KvmHost(str(Path(host[0].proc) / "absent"), host[0].debugfs)
    text, success = render(KvmDomainCollector(broken), KvmBlockCollector(broken))
    assert success == {"domain": "0.0", "block": "0.0"}
    assert "kvm_" not in text


def test_flowdirection_taps_come_from_the_scrapes_vm_list(host: tuple[KvmHost, str]) -> None:
    taps = KvmTaps(host[0])
    assert taps.interfaces() == []
    scrape = Scrape(NoXenToolstack(), deadline=1e12, command_timeout=2)
    taps.prefetch(scrape)
    assert [(vif.name, vif.domid) for vif in taps.interfaces()] == [("kvmtap1", 4240)]
    assert taps.owners(scrape) == {4240: "guest1", 5100: "web,01"}
