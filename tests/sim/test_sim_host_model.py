"""The counter model and the simulated host's pure parsers (no root needed)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from xensim import cgroups, model
from xensim.daemon import InterfaceStats, parse_net_dev
from xensim.host import HostError, Names

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
ONLINE = (0, 1, 2, 3)


def domains(**changes: model.DomainActivity) -> tuple[model.DomainActivity, ...]:
    """Domain-0 on CPU 0 and guest1..3 on CPUs 1..3, idle unless replaced."""
    base = {
        "Domain-0": model.DomainActivity("Domain-0", (0,), is_dom0=True),
        "guest1": model.DomainActivity("guest1", (1,)),
        "guest2": model.DomainActivity("guest2", (2,)),
        "guest3": model.DomainActivity("guest3", (3,)),
    }
    base.update(changes)
    return tuple(base.values())


def run(
    activity: tuple[model.DomainActivity, ...],
    *,
    seconds: float = 1.0,
    online: tuple[int, ...] = ONLINE,
    shadow: bool = False,
    seed: int = 1,
) -> model.Increments:
    return model.step(model.Tick(seconds, online, activity, shadow), random.Random(seed))


def on(increments: model.Increments, name: str, cpu: int) -> int:
    return increments.per_cpu.get((name, cpu), 0)


IDLE = run(domains())


def test_idle_host_counts_the_documented_baseline_on_every_online_cpu() -> None:
    # the lab's idle CPU (docs/simulator.md, "Lab calibration"): 6-12 timer interrupts/s, as
    # many interrupts or a few more, ~12 context switches/s; over 10 s to see the small rates
    idle = run(domains(), seconds=10.0)
    for cpu in ONLINE:
        assert 60 <= on(idle, "apic timer interrupts", cpu) <= 120
        assert on(idle, "#interrupts", cpu) >= on(idle, "apic timer interrupts", cpu) * 0.8
        assert 100 <= on(idle, "sched: context switches", cpu) <= 170
        assert on(idle, "page faults", cpu) > 0
    assert all(value > 0 and isinstance(value, int) for value in idle.per_cpu.values())


@pytest.mark.parametrize(
    ("flood", "description"),
    [
        (
            model.DomainActivity("guest1", (1,), sent_packets=50_000, received_packets=50_000),
            "ping",
        ),
        (model.DomainActivity("guest1", (1,), sent_packets=80_000), "udp out only"),
    ],
)
def test_packet_flood_shows_on_its_cpu_and_in_dom0_but_not_elsewhere(
    flood: model.DomainActivity, description: str
) -> None:
    flooded = run(domains(guest1=flood))
    assert on(flooded, "#interrupts", 1) >= 10 * on(IDLE, "#interrupts", 1), description
    switches, idle_switches = (on(r, "sched: context switches", 1) for r in (flooded, IDLE))
    if flood.received_packets:
        # every reply wakes the sender, as it wakes the guest that answers
        assert switches >= 10 * idle_switches
    else:
        # a sender that waits for nothing is never woken (the lab's UDP flood: no context switch
        # per datagram, docs/simulator.md)
        assert switches <= 1.5 * idle_switches
    assert on(flooded, "#interrupts", 0) >= 10 * on(IDLE, "#interrupts", 0), "netback in Dom0"
    # The published finding: page-table activity stays flat during a network flood.
    assert on(flooded, "page faults", 1) <= max(1.5 * on(IDLE, "page faults", 1), 3)
    assert on(flooded, "calls to mmu_update", 1) <= 2 * max(on(IDLE, "calls to mmu_update", 1), 5)
    for other in (2, 3):
        assert on(flooded, "#interrupts", other) <= 1.3 * on(IDLE, "#interrupts", other)
    packets = flood.sent_packets + flood.received_packets
    assert flooded.arrays[("hypercalls", model.HYPERCALL_GRANT_TABLE_OP)] >= 0.9 * packets
    assert flooded.arrays[("hypercalls", model.HYPERCALL_EVENT_CHANNEL_OP)] >= packets
    assert flooded.cpu_time_ns["Domain-0"] > IDLE.cpu_time_ns["Domain-0"]


def test_cpu_time_drives_timer_and_scheduler_counters_in_proportion() -> None:
    half = run(domains(guest3=model.DomainActivity("guest3", (3,), cpu_ns=500_000_000)))
    full = run(domains(guest3=model.DomainActivity("guest3", (3,), cpu_ns=1_000_000_000)))
    idle_timer = on(IDLE, "apic timer interrupts", 3)
    assert on(full, "apic timer interrupts", 3) >= 8 * idle_timer
    extra_half = on(half, "apic timer interrupts", 3) - idle_timer
    extra_full = on(full, "apic timer interrupts", 3) - idle_timer
    assert 1.6 <= extra_full / extra_half <= 2.4
    assert full.cpu_time_ns["guest3"] >= 1_000_000_000
    assert on(full, "apic timer interrupts", 1) <= 1.3 * on(IDLE, "apic timer interrupts", 1)


def test_paused_domain_adds_nothing_but_its_cpu_keeps_xens_own_baseline() -> None:
    busy = model.DomainActivity(
        "guest1", (1,), paused=True, cpu_ns=10**9, sent_packets=10**5, page_faults=10**4
    )
    paused = run(domains(guest1=busy))
    assert paused.cpu_time_ns["guest1"] == 0
    assert on(paused, "#interrupts", 1) <= 1.3 * on(IDLE, "apic timer interrupts", 1)
    assert on(paused, "page faults", 1) == 0
    assert on(paused, "sched: context switches", 1) < on(IDLE, "sched: context switches", 1)


def test_counts_land_where_the_vcpus_are_and_split_over_them() -> None:
    two = model.DomainActivity("guest1", (1, 2), received_packets=40_000)
    split = run(domains(guest1=two, guest2=model.DomainActivity("guest2", (3,))))
    first, second = on(split, "#interrupts", 1), on(split, "#interrupts", 2)
    assert 0.8 <= first / second <= 1.25
    assert first >= 10 * on(IDLE, "#interrupts", 1)


def test_offline_cpus_get_nothing_and_vcpus_claiming_them_count_nowhere() -> None:
    stranded = model.DomainActivity("guest3", (3,), received_packets=50_000)
    result = run(domains(guest3=stranded), online=(0, 1, 2))
    assert not [key for key in result.per_cpu if key[1] == 3]
    assert result.cpu_time_ns["guest3"] == 0


def test_page_faults_feed_page_fault_exceptions_and_shadow_counters_only_with_shadow() -> None:
    faulting = model.DomainActivity("guest2", (2,), page_faults=20_000)
    plain = run(domains(guest2=faulting))
    shadow = run(domains(guest2=faulting), shadow=True)
    assert on(plain, "page faults", 2) >= 19_000
    assert plain.arrays[("exceptions", model.VECTOR_PAGE_FAULT)] >= 19_000
    assert on(plain, "calls to shadow_fault", 2) == 0
    assert on(shadow, "calls to shadow_fault", 2) >= 19_000
    baseline = run(domains(), shadow=True, seconds=10.0)
    assert on(baseline, "calls to shadow_fault", 1) > 0, "baseline faults are shadow faults too"


def test_same_seed_same_counts_and_noise_stays_small() -> None:
    assert run(domains(), seed=3) == run(domains(), seed=3)
    values = [
        on(run(domains(), seconds=10.0, seed=s), "apic timer interrupts", 2) for s in range(20)
    ]
    expected = 10.0 * model.CPU_BASELINE_PER_SECOND["apic timer interrupts"]
    assert all(0.8 * expected <= v <= 1.2 * expected for v in values)
    assert len(set(values)) > 1


def test_parse_net_dev_reads_dom0s_view_of_the_vifs() -> None:
    stats = parse_net_dev((FIXTURES / "net-dev" / "dom0-after-pingflood.txt").read_text())
    assert set(stats) == {"lo", "xenbr0", "vif1.0", "vif2.0"}
    assert stats["vif1.0"] == InterfaceStats(
        rx_bytes=8638768, rx_packets=88152, tx_bytes=8639644, tx_packets=88162
    )


@pytest.mark.parametrize(
    ("fixture", "controllers", "unified", "v1"),
    [
        (
            "cgroup-v1-debian-container.txt",
            [],
            None,
            {c: f"/sys/fs/cgroup/{c}" for c in ("cpu", "cpuacct", "freezer", "blkio", "memory")},
        ),
        (
            "cgroup-v1-comounted.txt",
            [],
            None,
            {
                "cpu": "/sys/fs/cgroup/cpu,cpuacct",
                "cpuacct": "/sys/fs/cgroup/cpu,cpuacct",
                "freezer": "/sys/fs/cgroup/freezer",
                "blkio": "/sys/fs/cgroup/blkio",
                "memory": "/sys/fs/cgroup/memory",
            },
        ),
        ("cgroup-v2-unified.txt", ["cpuset", "cpu", "io", "memory"], "/sys/fs/cgroup", {}),
    ],
)
def test_parse_mountinfo_finds_each_controllers_hierarchy(
    fixture: str, controllers: list[str], unified: str | None, v1: dict[str, str]
) -> None:
    text = (FIXTURES / "mountinfo" / fixture).read_text()
    layout = cgroups.parse_mountinfo(text, controllers_of=lambda _path: controllers)
    assert layout.unified == (Path(unified) if unified else None)
    assert {k: str(v) for k, v in layout.v1.items()} == v1
    assert layout.roots(), "every layout has somewhere to create cgroups"


def test_parse_mountinfo_through_init_prefixes_every_path() -> None:
    text = (FIXTURES / "mountinfo" / "cgroup-v1-comounted.txt").read_text()
    layout = cgroups.parse_mountinfo(text, prefix="/proc/1/root", controllers_of=lambda _p: [])
    assert layout.path("freezer", "judicator-sim/h/g") == Path(
        "/proc/1/root/sys/fs/cgroup/freezer/judicator-sim/h/g"
    )


def test_block_io_parsers_agree_on_v1_and_v2_formats() -> None:
    directory = FIXTURES / "cgroup-io"
    v1 = cgroups.parse_blkio_v1(
        (directory / "blkio.throttle.io_serviced").read_text(),
        (directory / "blkio.throttle.io_service_bytes").read_text(),
    )
    v2 = cgroups.parse_io_stat_v2((directory / "io.stat").read_text())
    assert v1 == cgroups.BlockIO(192, 353, 1459200, 314773504)
    assert v2 == cgroups.BlockIO(192 + 8950, 353 + 1252, 1459200 + 90430464, 314773504 + 299008000)


@pytest.mark.parametrize("cgroup", ["", "/", "a/../b", "../etc"])
def test_cgroup_names_cannot_escape_the_hierarchy(cgroup: str) -> None:
    with pytest.raises(cgroups.CgroupError):
        cgroups.Layout(unified=Path("/sys/fs/cgroup"), v1={}).path("cpu", cgroup)


def test_names_derive_everything_from_the_host_name() -> None:
    names = Names.for_host("lab1", dom0_netns=True)
    assert names.dom0_netns == "jsim-lab1-dom0"
    assert names.guest_netns("guest2") == "jsim-lab1-guest2"
    assert names.guest_cgroup("guest2") == "judicator-sim/lab1/guest2"
    assert names.bridge == "xenbr0"
    assert Names.for_host("lab1", dom0_netns=False).bridge == "jsbr-lab1"
    assert str(names.state_dir) == "/run/judicator-sim/lab1"
    k = names.subnet_index
    assert 1 <= k <= 250
    assert names.guest_address(3) == f"198.18.{k}.13"
    assert names.bridge_address == f"198.18.{k}.1"


@pytest.mark.parametrize("bad", ["", "Lab", "1lab", "lab-1", "abcdefghijk", "a b"])
def test_host_names_that_would_break_interface_names_are_refused(bad: str) -> None:
    with pytest.raises(HostError):
        Names.for_host(bad, dom0_netns=False)


def test_the_guest_answering_a_flood_pays_its_own_kernels_work() -> None:
    # A victim answering 5000 requests in a second: no process of its own burns CPU, yet its
    # kernel receives and replies (the measured real-Xen costs, docs/simulator.md).
    answering = model.DomainActivity("guest2", (2,), sent_packets=5_000, received_packets=5_000)
    result = run(domains(guest2=answering))
    answered = 5_000
    assert result.cpu_time_ns["guest2"] >= 0.8 * answered * 2 * model.GUEST_CPU_PER_PACKET * 1e9
    interrupts = on(result, "#interrupts", 2) - on(IDLE, "#interrupts", 2)
    ipis = on(result, "#IPIs", 2) - on(IDLE, "#IPIs", 2)
    assert 1.8 <= interrupts / answered <= 2.2
    assert 1.75 <= ipis / answered <= 2.15
    # Its timer barely moves: kernel work in short bursts keeps a tickless CPU's timer quiet.
    assert on(result, "apic timer interrupts", 2) <= on(IDLE, "apic timer interrupts", 2) + 600


def test_kernel_work_never_exceeds_the_vcpus_time() -> None:
    swamped = model.DomainActivity("guest2", (2,), sent_packets=10**6, received_packets=10**6)
    result = run(domains(guest2=swamped))
    assert result.cpu_time_ns["guest2"] <= 1.01e9


@pytest.mark.parametrize(
    ("wants", "capacity", "expected"),
    [
        ({}, 1.0, {}),
        ({"a": 0.2, "b": 0.3}, 1.0, {"a": 0.2, "b": 0.3}),
        ({"a": 1.0, "b": 1.0}, 1.0, {"a": 0.5, "b": 0.5}),
        ({"hog": 1.0, "neighbour": 0.3}, 1.0, {"hog": 0.7, "neighbour": 0.3}),
        ({"a": 1.0, "b": 0.1, "c": 1.0}, 1.0, {"a": 0.45, "b": 0.1, "c": 0.45}),
        ({"a": 0.0, "b": 2.0}, 1.0, {"a": 0.0, "b": 1.0}),
    ],
)
def test_fair_split_is_max_min_fair(
    wants: dict[str, float], capacity: float, expected: dict[str, float]
) -> None:
    given = model.fair_split(wants, capacity)
    assert given == pytest.approx(expected)
    assert sum(given.values()) <= capacity + 1e-9


def sharing(hog_ns: int, neighbour_ns: int) -> model.Increments:
    """guest1 and guest2 both on CPU 1; CPU 2 has nobody."""
    return run(
        domains(
            guest1=model.DomainActivity("guest1", (1,), cpu_ns=hog_ns),
            guest2=model.DomainActivity("guest2", (1,), cpu_ns=neighbour_ns),
        )
    )


def test_fair_split_honours_credit2_weights() -> None:
    # A domain at weight 512 gets twice the time of one at 256 when both want all of it.
    given = model.fair_split({"a": 1.0, "b": 1.0}, 1.0, {"a": 512, "b": 256})
    assert given == pytest.approx({"a": 2 / 3, "b": 1 / 3})
    # One that wants less than its weighted split still gets only what it wants.
    given = model.fair_split({"a": 0.1, "b": 1.0}, 1.0, {"a": 512, "b": 256})
    assert given == pytest.approx({"a": 0.1, "b": 0.9})


def test_a_shared_cpu_delivers_one_second_per_second_split_max_min_fair() -> None:
    tick = sharing(1_000_000_000, 300_000_000)
    hog, neighbour = tick.cpu_time_ns["guest1"], tick.cpu_time_ns["guest2"]
    assert hog + neighbour <= 1_000_000_000
    # The neighbour wants less than half and gets all it wants (and its baseline).
    assert neighbour == pytest.approx(302_000_000, rel=0.01)
    assert hog == pytest.approx(698_000_000, rel=0.01)
    assert tick.waiting_ns["guest1"] == pytest.approx(304_000_000, rel=0.01)
    assert tick.waiting_ns["guest2"] == 0
    assert tick.idle_ns[1] == 0
    both = sharing(1_000_000_000, 1_000_000_000)
    assert both.cpu_time_ns["guest1"] == both.cpu_time_ns["guest2"] == 500_000_000


def test_idle_time_is_what_each_cpu_did_not_deliver() -> None:
    assert IDLE.idle_ns[2] == pytest.approx(1e9 * (1 - model.GUEST_CPU_BASELINE))
    assert IDLE.idle_ns[0] == pytest.approx(1e9 * (1 - model.DOM0_CPU_BASELINE))
    busy = run(domains(guest3=model.DomainActivity("guest3", (3,), cpu_ns=600_000_000)))
    assert busy.idle_ns[3] == pytest.approx(1e9 * (1 - 0.6 - model.GUEST_CPU_BASELINE))
    assert set(run(domains(), online=(0, 1)).idle_ns) == {0, 1}


def test_cpu_time_counters_follow_the_delivered_time_not_the_wanted() -> None:
    alone = run(domains(guest1=model.DomainActivity("guest1", (1,), cpu_ns=1_000_000_000)))
    shared = sharing(1_000_000_000, 1_000_000_000)
    timer_alone = on(alone, "apic timer interrupts", 1)
    assert 0.85 * timer_alone <= on(shared, "apic timer interrupts", 1) <= 1.15 * timer_alone
