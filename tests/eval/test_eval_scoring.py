"""Scoring: verdicts, time to throttle, victims' harm and the totals, on hand-made records."""

from __future__ import annotations

from xeneval.scenario import Scenario, load_scenario
from xeneval.scoring import GuestSample, RunRecord, score, totals, window_rates

SCENARIO = load_scenario(
    """
tags: [attack, network]
duration: 40
baseline: 10
guests:
  - {name: attacker, cpus: [1], role: attacker}
  - {name: victim, cpus: [2], role: victim}
  - {name: bystander, cpus: [3]}
workloads:
  - {guest: attacker, kind: pingflood, target: victim, duration: 30}
""",
    "flood.yaml",
)


def _record(throttles: dict[str, list[tuple[float, str]]]) -> RunRecord:
    record = RunRecord(scenario="flood", throttles=throttles)
    for second in range(41):
        attacking = max(0, second - 10)
        record.samples.append(
            (
                float(second),
                {
                    # The attacker sends 1000 packets/s from second 10.
                    "attacker": GuestSample(0.5 * attacking, 1000 * attacking, 0),
                    # The victim serves 100 answers/s, 40 once flooded, and receives the flood.
                    "victim": GuestSample(
                        0.1 * second,
                        100 * min(second, 10) + 40 * attacking,
                        100 * second + 1000 * attacking,
                    ),
                    "bystander": GuestSample(0.0, 0, 0),
                },
            )
        )
    return record


def test_window_rates_are_differences_over_the_window() -> None:
    rates = window_rates(_record({}).samples, "attacker", 10.0, 40.0)
    assert rates is not None
    assert {k: rates[k] for k in ("cpu", "sent_pps", "received_pps")} == {
        "cpu": 0.5,
        "sent_pps": 1000.0,
        "received_pps": 0.0,
    }
    assert window_rates(_record({}).samples, "attacker", 39.5, 40.0) is None


def test_a_caught_attacker_and_spared_others() -> None:
    result = score(SCENARIO, _record({"attacker": [(27.5, "network_shape")]}))
    verdicts = {g.guest: g.verdict for g in result.guests}
    assert verdicts == {"attacker": "caught", "victim": "spared", "bystander": "spared"}
    attacker = result.guests[0]
    assert attacker.time_to_throttle == 17.5
    assert attacker.achieved is not None
    assert attacker.achieved["sent_pps"] == 1000.0
    assert attacker.achieved["cpu"] == 0.5
    assert result.passed


def test_the_victims_harm_against_its_own_baseline() -> None:
    victim = score(SCENARIO, _record({})).guests[1]
    assert victim.harm is not None
    # 60 answers/s lost and 1000 packets/s pushed at it, over the 30 s attack.
    assert victim.harm["packets_sent_lost"] == 1800
    assert victim.harm["packets_received_extra"] == 30000
    assert victim.harm["cpu_seconds_lost"] == 0.0


def test_a_miss_and_a_false_throttle_fail_the_scenario() -> None:
    result = score(SCENARIO, _record({"bystander": [(20.0, "cpu_cap")]}))
    verdicts = {g.guest: g.verdict for g in result.guests}
    assert verdicts == {"attacker": "missed", "victim": "spared", "bystander": "false_throttle"}
    assert result.guests[0].time_to_throttle is None
    assert not result.passed


def test_totals_count_guests_and_summarize_time_to_throttle_per_class() -> None:
    caught = score(SCENARIO, _record({"attacker": [(25.0, "network_shape")]}))
    missed = score(SCENARIO, _record({"victim": [(30.0, "network_shape")]}))
    summary = totals([caught, missed])
    assert summary["confusion"] == {
        "caught": 1,
        "missed": 1,
        "inconclusive": 0,
        "false_throttle": 1,
        "spared": 3,
    }
    assert summary["detection_rate"] == 0.5
    assert summary["false_throttle_rate"] == 0.25
    assert summary["time_to_throttle"]["network"]["median"] == 15.0
    assert summary["scenarios_passed"] == 1


# The bars of the shipped rules, per class (xeneval.cli reads them from prometheus/rules).
BARS = {"network": 10_000.0, "cpu": 0.8, "memory": 10_000.0, "disk": 2_000.0}


def _flood_record(pps: int, throttled_at: float | None = None) -> RunRecord:
    """The attacker sends `pps` from second 10; after a throttle only 1000 pps leave its
    shaping (its ifb), though it keeps offering them all."""
    throttles = {} if throttled_at is None else {"attacker": [(throttled_at, "network_shape")]}
    record = RunRecord(scenario="flood", throttles=throttles)
    for second in range(41):
        attacking = max(0, second - 10)
        shaped = 0 if throttled_at is None else 1000 * max(0, second - int(throttled_at))
        record.samples.append(
            (
                float(second),
                {
                    "attacker": GuestSample(
                        0.2 * attacking,
                        pps * attacking,
                        0,
                        shaped_packets=shaped,
                        shaped_bytes=125 * shaped,
                    ),
                    "victim": GuestSample(0.0, 0, pps * attacking),
                    "bystander": GuestSample(0.0, 0, 0),
                },
            )
        )
    return record


def test_a_miss_below_the_bar_is_inconclusive_and_counted_apart() -> None:
    result = score(SCENARIO, _flood_record(6000), BARS)
    attacker = result.guests[0]
    assert attacker.verdict == "inconclusive"
    assert attacker.bar == {
        "measure": "sent_pps",
        "threshold": 10_000.0,
        "achieved": 6000.0,
        "reached": False,
    }
    assert not result.passed
    assert result.inconclusive
    summary = totals([result])
    assert summary["confusion"]["inconclusive"] == 1
    assert summary["confusion"]["missed"] == 0
    assert summary["detection_rate"] is None  # no attacker judged
    assert summary["scenarios_inconclusive"] == 1


def test_a_miss_above_the_bar_stays_a_miss() -> None:
    result = score(SCENARIO, _flood_record(12_000), BARS)
    assert result.guests[0].verdict == "missed"
    assert result.guests[0].bar is not None and result.guests[0].bar["reached"]
    assert not result.inconclusive


def test_without_bars_a_miss_is_a_miss() -> None:
    # No thresholds known (or no measurement): never silently excused.
    assert score(SCENARIO, _flood_record(6000)).guests[0].verdict == "missed"


def test_a_catch_below_the_bar_is_still_caught() -> None:
    result = score(SCENARIO, _flood_record(6000, throttled_at=30.0), BARS)
    assert result.guests[0].verdict == "caught"
    assert result.passed


def test_a_scenario_bar_overrides_the_class_threshold() -> None:
    text = """
tags: [attack, network]
duration: 40
baseline: 10
guests:
  - {name: attacker, cpus: [1], role: attacker, bar: 13500}
  - {name: victim, cpus: [2], role: victim}
  - {name: bystander, cpus: [3]}
workloads:
  - {guest: attacker, kind: udpflood, target: victim, pad_size: 1472, pad_every: 5, duration: 30}
"""
    padded = load_scenario(text, "padded.yaml")
    assert score(padded, _flood_record(12_000), BARS).guests[0].verdict == "inconclusive"
    assert score(padded, _flood_record(14_000), BARS).guests[0].verdict == "missed"


def test_the_cpu_bar_is_per_vcpu() -> None:
    text = """
tags: [attack, cpu]
duration: 40
baseline: 10
guests:
  - {name: attacker, cpus: [1, 2], vcpus: 2, role: attacker}
  - {name: victim, cpus: [1], role: victim}
  - {name: bystander, cpus: [3]}
workloads:
  - {guest: attacker, kind: cpuhog, threads: 2, duration: 30}
"""
    hog = load_scenario(text, "hog.yaml")
    record = RunRecord(scenario="hog")
    for second in range(41):
        busy = 1.5 * max(0, second - 10)  # 1.5 CPU s/s over two vCPUs: 0.75 each
        record.samples.append((float(second), {"attacker": GuestSample(busy, 0, 0)}))
    attacker = score(hog, record, BARS).guests[0]
    assert attacker.bar is not None and attacker.bar["achieved"] == 0.75
    assert attacker.verdict == "inconclusive"


def test_after_the_throttle_what_leaves_the_shaping() -> None:
    attacker = score(SCENARIO, _flood_record(12_000, throttled_at=25.0), BARS).guests[0]
    assert attacker.verdict == "caught"
    assert attacker.after_throttle is not None
    assert attacker.after_throttle["sent_pps"] == 12_000.0
    assert attacker.after_throttle["shaped_pps"] == 1000.0
    assert attacker.after_throttle["shaped_bps"] == 1_000_000  # 125-byte packets: 1 Mbit/s


CONTENTION = {"cpu_saturated_busy": 0.95, "cpu_saturated_share": 0.6, "cpu_others_share": 0.05}


def test_class_thresholds_from_the_rules() -> None:
    from xeneval.evasion import load_rules
    from xeneval.scoring import class_thresholds

    assert class_thresholds(load_rules().thresholds) == BARS | CONTENTION


def _shared_cpu_record(hog: float, neighbour: float) -> RunRecord:
    """From second 10 the attacker runs `hog` CPU s/s on CPU 1, the neighbour `neighbour`."""
    record = RunRecord(scenario="hog")
    for second in range(41):
        on = max(0, second - 10)
        record.samples.append(
            (
                float(second),
                {
                    "attacker": GuestSample(hog * on, 0, 0),
                    "neighbour": GuestSample(neighbour * second, 0, 0),
                },
            )
        )
    return record


def _hog_scenario(neighbour_cpu: int) -> Scenario:
    text = f"""
tags: [attack, cpu]
duration: 40
baseline: 10
guests:
  - {{name: attacker, cpus: [1], role: attacker}}
  - {{name: neighbour, cpus: [{neighbour_cpu}], role: victim}}
workloads:
  - {{guest: attacker, kind: cpuhog, threads: 1, duration: 30}}
"""
    return load_scenario(text, "hog.yaml")


def test_a_cpu_hog_reached_its_bar_by_contention_below_the_use_bar() -> None:
    # 0.7 of a CPU a neighbour wants 0.3 of: below the 0.8 use bar, but the CPU is saturated
    # and shared and the hog took more than 0.6 of it: the contention form's ground.
    bars = BARS | CONTENTION
    attacker = score(_hog_scenario(1), _shared_cpu_record(0.7, 0.3), bars).guests[0]
    assert attacker.bar is not None
    assert attacker.bar["achieved"] == 0.7
    assert attacker.bar["saturated_share"] == 0.7
    assert attacker.bar["reached"] is True
    assert attacker.verdict == "missed"


def test_a_cpu_hog_below_both_grounds_is_inconclusive() -> None:
    bars = BARS | CONTENTION
    # An equal split of a saturated CPU: share 0.5, below 0.6.
    split = score(_hog_scenario(1), _shared_cpu_record(0.5, 0.5), bars).guests[0]
    assert split.bar is not None and split.bar["saturated_share"] == 0.5
    assert split.verdict == "inconclusive"
    # 0.7 beside a neighbour on another CPU: its own CPU is not saturated.
    alone = score(_hog_scenario(2), _shared_cpu_record(0.7, 0.3), bars).guests[0]
    assert alone.bar is not None and alone.bar["saturated_share"] == 0.0
    assert alone.verdict == "inconclusive"
    # Without the contention thresholds only the use bar counts.
    use_only = score(_hog_scenario(1), _shared_cpu_record(0.7, 0.3), BARS).guests[0]
    assert use_only.bar is not None and "saturated_share" not in use_only.bar
    assert use_only.verdict == "inconclusive"
