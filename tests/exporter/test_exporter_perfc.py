"""The perfc collector through a fresh registry with fake sources, and its pure decisions."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytest
from prometheus_client import CollectorRegistry

from exporter.collector import Exporter
from exporter.perfc import (
    PerfcCollector,
    WrapAccumulator,
    cpu_shares,
    exclusive_owners,
    map_cpu_ids,
    metric_name,
)
from exporter.toolstack import HostInfo
from tests.exporter.fakes import (
    FakeReader,
    FakeToolstack,
    broken,
    enosys,
    fixture_snapshot,
    vcpu,
)
from xentools.xenperf import PerfcSnapshot, snapshot_from_descriptors

UINT32 = 1 << 32


def snapshot(**per_name: Sequence[int]) -> PerfcSnapshot:
    names = {"interrupts": "#interrupts", "ipis": "#IPIs", "hypercalls": "hypercalls"}
    return snapshot_from_descriptors([(names.get(k, k), list(v)) for k, v in per_name.items()])


def registry_for(reader: FakeReader, toolstack: FakeToolstack) -> tuple[PerfcCollector, Exporter]:
    collector = PerfcCollector(reader, include=".*")  # every counter: the mechanics, not the choice
    return collector, Exporter([collector], toolstack, command_timeout=2, scrape_timeout=5)


def scrape(exporter: Exporter) -> CollectorRegistry:
    registry = exporter.registry()
    # get_sample_value collects each time; freeze one scrape so state advances once
    frozen = CollectorRegistry(auto_describe=False)
    families = list(registry.collect())

    class Frozen:
        def collect(self):  # type: ignore[no-untyped-def]
            return families

    frozen.register(Frozen())
    return frozen


def test_pinned_host_counters_carry_cpu_and_domain() -> None:
    _, exporter = registry_for(FakeReader(fixture_snapshot("4.17-4cpu-f.txt")), FakeToolstack())
    registry = scrape(exporter)
    value = registry.get_sample_value
    assert value("xen_perfc_interrupts_total", {"cpu": "0", "domain": "Domain-0"}) == 4440326
    assert value("xen_perfc_interrupts_total", {"cpu": "1", "domain": "guest1"}) == 1014098
    assert value("xen_perfc_interrupts_total", {"cpu": "3", "domain": "guest3"}) == 1058297
    assert value(
        "xen_perfc_hypercalls_total", {"index": "32", "hypercall": "event_channel_op"}
    ) == (2055752)
    assert value("xen_pcpu_domain_share_ratio", {"cpu": "2", "domain": "guest2"}) == 1.0
    assert value("xen_perfc_available") == 1
    assert value("xen_exporter_collector_success", {"collector": "perfc"}) == 1
    assert value("xen_exporter_collector_duration_seconds", {"collector": "perfc"}) >= 0


def test_shared_cpus_have_no_domain_and_shares_follow_vcpu_time() -> None:
    toolstack = FakeToolstack()
    # Domain-0 may run anywhere: no CPU belongs to one domain any more
    toolstack.vcpus = [
        vcpu("Domain-0", 0, 1, None, 100.0),
        vcpu("guest1", 1, 1, [1], 50.0),
        vcpu("guest2", 2, 2, [2], 10.0),
    ]
    reader = FakeReader(snapshot(interrupts=[1, 2, 3, 4]))
    _, exporter = registry_for(reader, toolstack)
    first = scrape(exporter)
    assert first.get_sample_value("xen_perfc_interrupts_total", {"cpu": "1"}) == 2
    # first scrape: no interval yet, shares by number of vCPUs
    assert first.get_sample_value(
        "xen_pcpu_domain_share_ratio", {"cpu": "1", "domain": "guest1"}
    ) == pytest.approx(0.5)
    toolstack.vcpus = [
        vcpu("Domain-0", 0, 1, None, 101.0),
        vcpu("guest1", 1, 1, [1], 53.0),
        vcpu("guest2", 2, 2, [2], 10.0),
    ]
    second = scrape(exporter)
    share = second.get_sample_value
    assert share("xen_pcpu_domain_share_ratio", {"cpu": "1", "domain": "guest1"}) == 0.75
    assert share("xen_pcpu_domain_share_ratio", {"cpu": "1", "domain": "Domain-0"}) == 0.25
    assert share("xen_pcpu_domain_share_ratio", {"cpu": "2", "domain": "guest2"}) == 1.0


def test_wrap_is_accumulated_into_64_bits() -> None:
    reader = FakeReader(
        fixture_snapshot("4.17-wrapped-before-f.txt"), fixture_snapshot("4.17-wrapped-after-f.txt")
    )
    _, exporter = registry_for(reader, FakeToolstack())
    before = scrape(exporter).get_sample_value
    after = scrape(exporter).get_sample_value
    labels = {"cpu": "2", "domain": "guest2"}
    assert (
        after("xen_perfc_interrupts_total", labels) - before("xen_perfc_interrupts_total", labels)
        == 1000
    )
    hypercall = {"index": "32", "hypercall": "event_channel_op"}
    assert after("xen_perfc_hypercalls_total", hypercall) == UINT32 - 5000 + 10**6
    cpu0 = {"cpu": "0", "domain": "Domain-0"}
    assert after("xen_perfc_interrupts_total", cpu0) - before(
        "xen_perfc_interrupts_total", cpu0
    ) == (5000)


def test_cpu_offline_maps_values_to_cpu_ids_from_the_pools() -> None:
    toolstack = FakeToolstack()
    reader = FakeReader(snapshot(interrupts=[10, 20, 30, 40]), snapshot(interrupts=[11, 21, 41]))
    _, exporter = registry_for(reader, toolstack)
    scrape(exporter)
    toolstack.host = HostInfo(3, 3, "4.17.7")
    toolstack.pools = frozenset({0, 1, 3})
    toolstack.vcpus = [v for v in toolstack.vcpus if v.cpu != 2]
    value = scrape(exporter).get_sample_value
    assert value("xen_perfc_interrupts_total", {"cpu": "3", "domain": "guest3"}) == 41
    assert value("xen_perfc_interrupts_total", {"cpu": "1", "domain": "guest1"}) == 21
    assert value("xen_perfc_interrupts_total", {"cpu": "2", "domain": "guest2"}) is None


def test_cpu_back_online_restarts_from_zero_without_a_spike() -> None:
    toolstack = FakeToolstack()
    reader = FakeReader(
        snapshot(interrupts=[10, 20, 30, 40]),
        snapshot(interrupts=[11, 21, 41]),
        snapshot(interrupts=[12, 22, 5, 42]),
    )
    _, exporter = registry_for(reader, toolstack)
    scrape(exporter)
    toolstack.host, toolstack.pools = HostInfo(3, 3), frozenset({0, 1, 3})
    scrape(exporter)
    toolstack.host = HostInfo(4, 3)
    value = scrape(exporter).get_sample_value
    assert value("xen_perfc_interrupts_total", {"cpu": "2", "domain": "guest2"}) == 35


def test_array_sums_shrinking_with_a_departed_cpu_are_not_wraps() -> None:
    toolstack = FakeToolstack()
    hypercalls_before = [0] * 64
    hypercalls_before[20] = 1000
    hypercalls_after = [0] * 64
    hypercalls_after[20] = 700  # the departed CPU's 300 vanished from the sum
    reader = FakeReader(
        snapshot(interrupts=[1, 2, 3, 4], hypercalls=hypercalls_before),
        snapshot(interrupts=[1, 2, 4], hypercalls=hypercalls_after),
    )
    _, exporter = registry_for(reader, toolstack)
    scrape(exporter)
    toolstack.host, toolstack.pools = HostInfo(3, 3), frozenset({0, 1, 3})
    value = scrape(exporter).get_sample_value
    assert (
        value("xen_perfc_hypercalls_total", {"index": "20", "hypercall": "grant_table_op"}) == 1000
    )


def test_a_reset_of_every_counter_is_not_read_as_wraps(caplog: pytest.LogCaptureFixture) -> None:
    reader = FakeReader(
        snapshot(interrupts=[100, 200, 300, 400], ipis=[50, 60, 70, 80]),
        snapshot(interrupts=[1, 2, 3, 4], ipis=[0, 0, 1, 0]),
    )
    _, exporter = registry_for(reader, FakeToolstack())
    scrape(exporter)
    with caplog.at_level(logging.WARNING):
        value = scrape(exporter).get_sample_value
    assert value("xen_perfc_interrupts_total", {"cpu": "0", "domain": "Domain-0"}) == 101
    assert "reset" in caplog.text


def test_status_counter_is_a_signed_gauge() -> None:
    reader = FakeReader(fixture_snapshot("4.17-shadow-f.txt"))
    _, exporter = registry_for(reader, FakeToolstack())
    assert scrape(exporter).get_sample_value("xen_perfc_number_of_shadow_pages_in_use") == 1100


def test_enosys_is_logged_once_and_served_as_a_gauge(caplog: pytest.LogCaptureFixture) -> None:
    reader = FakeReader(enosys())
    _, exporter = registry_for(reader, FakeToolstack())
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            value = scrape(exporter).get_sample_value
            assert value("xen_perfc_available") == 0
            assert value("xen_exporter_collector_success", {"collector": "perfc"}) == 1
    assert caplog.text.count("no hypervisor performance counters") == 1


def test_reader_failure_fails_only_its_collector(caplog: pytest.LogCaptureFixture) -> None:
    from exporter.domains import DomainCollector

    toolstack = FakeToolstack()
    exporter = Exporter([PerfcCollector(FakeReader(broken())), DomainCollector()], toolstack, 2, 5)
    with caplog.at_level(logging.ERROR):
        for _ in range(2):
            value = scrape(exporter).get_sample_value
            assert value("xen_exporter_collector_success", {"collector": "perfc"}) == 0
            assert value("xen_exporter_collector_success", {"collector": "domain"}) == 1
            assert value("xen_domain_vcpus", {"domain": "guest1"}) == 1
    assert caplog.text.count("collector perfc failed") == 1
    assert "Permission denied" in caplog.text


def test_unknown_cpu_ids_label_by_position_without_domains() -> None:
    toolstack = FakeToolstack(host=HostInfo(3, 3))
    reader = FakeReader(snapshot(interrupts=[1, 2, 3]))
    _, exporter = registry_for(reader, toolstack)  # no pools: cannot tell which CPU is offline
    value = scrape(exporter).get_sample_value
    assert value("xen_perfc_interrupts_total", {"cpu": "index2"}) == 3


def test_domain_reboot_keeps_the_series() -> None:
    toolstack = FakeToolstack()
    reader = FakeReader(snapshot(interrupts=[1, 2, 3, 4]), snapshot(interrupts=[2, 3, 4, 5]))
    _, exporter = registry_for(reader, toolstack)
    scrape(exporter)
    toolstack.vcpus = [
        v if v.domain != "guest1" else vcpu("guest1", 7, 1, [1]) for v in toolstack.vcpus
    ]
    value = scrape(exporter).get_sample_value
    assert value("xen_perfc_interrupts_total", {"cpu": "1", "domain": "guest1"}) == 3


@pytest.mark.parametrize(
    ("counter", "name"),
    [
        ("#interrupts", "xen_perfc_interrupts"),
        ("sched: context switches", "xen_perfc_sched_context_switches"),
        ("shadow_fault emulate for CR0.WP=0", "xen_perfc_shadow_fault_emulate_for_cr0_wp_0"),
        ("PG_need_flush tlb flushes", "xen_perfc_pg_need_flush_tlb_flushes"),
        ("shadow A&D bit update", "xen_perfc_shadow_a_d_bit_update"),
    ],
)
def test_metric_name(counter: str, name: str) -> None:
    assert metric_name(counter) == name


@pytest.mark.parametrize(
    ("nr_values", "max_cpu_id", "pools", "expected"),
    [
        (4, 3, None, (0, 1, 2, 3)),
        (3, 3, frozenset({0, 1, 3}), (0, 1, 3)),
        (3, 3, frozenset({0, 1}), None),  # an online CPU outside every pool
        (3, 3, None, None),
    ],
)
def test_map_cpu_ids(
    nr_values: int, max_cpu_id: int, pools: frozenset[int] | None, expected: tuple[int, ...] | None
) -> None:
    assert map_cpu_ids(nr_values, max_cpu_id, pools) == expected


def test_exclusive_owners_by_hard_affinity() -> None:
    vcpus = [
        vcpu("a", 1, 0, [0, 1]),
        vcpu("a", 1, 1, [0, 1], number=1),
        vcpu("b", 2, 2, [2, 3]),
        vcpu("c", 3, 3, [3]),
        vcpu("d", 4, None, None),  # offline vCPU: may run nowhere now
    ]
    assert exclusive_owners(vcpus, range(5)) == {0: "a", 1: "a", 2: "b"}


def test_cpu_shares_add_up_to_one() -> None:
    previous = {("a", 1, 0): 10.0, ("b", 2, 0): 10.0, ("c", 3, 0): 5.0}
    vcpus = [vcpu("a", 1, 0, None, 13.0), vcpu("b", 2, 0, None, 11.0), vcpu("c", 3, 1, None, 5.0)]
    shares = cpu_shares(vcpus, previous, {})
    assert shares == {(0, "a"): 0.75, (0, "b"): 0.25, (1, "c"): 1.0}


def test_accumulator_rules() -> None:
    accumulator = WrapAccumulator()
    assert accumulator.update({("x", 0): UINT32 - 10, ("x", 1): 5}) == {
        ("x", 0): UINT32 - 10,
        ("x", 1): 5,
    }
    assert accumulator.update({("x", 0): 10, ("x", 1): 6}) == {("x", 0): UINT32 + 10, ("x", 1): 6}
