"""Domain, network and block collectors through a fresh registry, with fake xl and fixture sysfs."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from exporter.collector import Exporter
from exporter.domains import BlockCollector, DomainCollector, NetworkCollector
from tests.exporter.fakes import SYSFS_FIXTURE, FakeToolstack, domain


def collect(toolstack: FakeToolstack) -> CollectorRegistry:
    exporter = Exporter(
        [DomainCollector(), NetworkCollector(SYSFS_FIXTURE), BlockCollector(SYSFS_FIXTURE)],
        toolstack,
        command_timeout=2,
        scrape_timeout=5,
    )
    return exporter.registry()


def test_domain_facts_and_state() -> None:
    toolstack = FakeToolstack()
    toolstack.domain_list[1] = domain(
        "guest1", 1, states=frozenset({"shutdown", "crashed"}), cpu_seconds=42.5, vcpus=2
    )
    value = collect(toolstack).get_sample_value
    uuid = "00000000-0000-4000-8000-000000000001"
    assert value("xen_domain_info", {"domain": "guest1", "domid": "1", "uuid": uuid}) == 1
    assert value("xen_domain_cpu_seconds_total", {"domain": "guest1"}) == 42.5
    assert value("xen_domain_vcpus", {"domain": "guest1"}) == 2
    assert value("xen_domain_memory_bytes", {"domain": "guest1"}) == 512 << 20
    assert value("xen_domain_memory_max_bytes", {"domain": "guest1"}) == 1024 << 20
    states = {
        state: value("xen_domain_state", {"domain": "guest1", "state": state})
        for state in ("running", "blocked", "paused", "shutdown", "crashed", "dying")
    }
    assert states == {
        "running": 0,
        "blocked": 0,
        "paused": 0,
        "shutdown": 1,
        "crashed": 1,
        "dying": 0,
    }


def test_network_direction_is_the_guests() -> None:
    value = collect(FakeToolstack()).get_sample_value
    vif = {"domain": "guest1", "interface": "vif1.0"}
    # Dom0 received 1887458304 bytes on vif1.0: the guest sent them
    assert value("xen_domain_network_transmit_bytes_total", vif) == 1887458304
    assert value("xen_domain_network_receive_bytes_total", vif) == 95560704
    assert value("xen_domain_network_receive_dropped_total", vif) == 3
    assert value("xen_domain_network_transmit_packets_total", vif) == 1300123
    renamed = {"domain": "guest2", "interface": "web01"}
    assert value("xen_domain_network_transmit_bytes_total", renamed) == 5
    emulated = {"domain": "guest3", "interface": "vif3.0-emu"}
    assert value("xen_domain_network_transmit_bytes_total", emulated) == 100


def test_vifs_of_unknown_domains_are_skipped_and_domids_follow_reboots() -> None:
    toolstack = FakeToolstack()
    # guest1 rebooted as domid 9: vif1.0 is a stale backend now, nothing is attributed to it
    toolstack.domain_list[1] = domain("guest1", 9)
    value = collect(toolstack).get_sample_value
    assert (
        value(
            "xen_domain_network_transmit_bytes_total", {"domain": "guest1", "interface": "vif1.0"}
        )
        is None
    )


def test_block_counters_in_bytes() -> None:
    value = collect(FakeToolstack()).get_sample_value
    xvda = {"domain": "guest1", "device": "xvda"}
    assert value("xen_domain_block_read_requests_total", xvda) == 120034
    assert value("xen_domain_block_write_requests_total", xvda) == 88123
    assert value("xen_domain_block_read_bytes_total", xvda) == 4123456 * 512
    assert value("xen_domain_block_written_bytes_total", xvda) == 2233441 * 512
    assert (
        value("xen_domain_block_read_requests_total", {"domain": "guest3", "device": "xvdr"}) == 1
    )


def test_failing_xl_list_fails_the_three_collectors_but_not_the_scrape() -> None:
    toolstack = FakeToolstack(failing={"list"})
    families = list(collect(toolstack).collect())  # one scrape
    assert toolstack.calls.count("list") == 1  # asked once per scrape, shared
    success = {
        sample.labels["collector"]: sample.value
        for family in families
        if family.name == "xen_exporter_collector_success"
        for sample in family.samples
    }
    assert success == {"domain": 0, "network": 0, "block": 0}


def test_cpu_idle_time_is_served_when_the_toolstack_has_it_and_absent_when_not() -> None:
    with_idle = collect(FakeToolstack(idle={0: 12.5, 1: 3.0}))
    assert with_idle.get_sample_value("xen_pcpu_idle_seconds_total", {"cpu": "0"}) == 12.5
    assert with_idle.get_sample_value("xen_pcpu_idle_seconds_total", {"cpu": "1"}) == 3.0
    assert with_idle.get_sample_value("xen_domain_vcpus", {"domain": "guest1"}) is not None
    without = collect(FakeToolstack())  # xl: no idle time
    assert without.get_sample_value("xen_pcpu_idle_seconds_total", {"cpu": "0"}) is None
    assert without.get_sample_value("xen_domain_vcpus", {"domain": "guest1"}) is not None


def test_failing_cpu_idle_keeps_the_domain_facts_but_reports_the_failure() -> None:
    toolstack = FakeToolstack(idle={0: 1.0}, failing={"getcpuinfo"})
    registry = collect(toolstack)
    assert registry.get_sample_value("xen_domain_vcpus", {"domain": "guest1"}) is not None
    assert registry.get_sample_value("xen_pcpu_idle_seconds_total", {"cpu": "0"}) is None
    success = registry.get_sample_value("xen_exporter_collector_success", {"collector": "domain"})
    assert success == 0
