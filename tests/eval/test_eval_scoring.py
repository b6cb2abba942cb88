"""Scoring: verdicts, time to throttle, victims' harm and the totals, on hand-made records."""

from __future__ import annotations

from xeneval.scenario import load_scenario
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
    assert rates == {"cpu": 0.5, "sent_pps": 1000.0, "received_pps": 0.0}
    assert window_rates(_record({}).samples, "attacker", 39.5, 40.0) is None


def test_a_caught_attacker_and_spared_others() -> None:
    result = score(SCENARIO, _record({"attacker": [(27.5, "network_shape")]}))
    verdicts = {g.guest: g.verdict for g in result.guests}
    assert verdicts == {"attacker": "caught", "victim": "spared", "bystander": "spared"}
    attacker = result.guests[0]
    assert attacker.time_to_throttle == 17.5
    assert attacker.achieved == {"cpu": 0.5, "sent_pps": 1000.0, "received_pps": 0.0}
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
    assert summary["confusion"] == {"caught": 1, "missed": 1, "false_throttle": 1, "spared": 3}
    assert summary["detection_rate"] == 0.5
    assert summary["false_throttle_rate"] == 0.25
    assert summary["time_to_throttle"]["network"]["median"] == 15.0
    assert summary["scenarios_passed"] == 1
