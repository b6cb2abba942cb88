"""The report's tables: verdicts with inconclusive runs apart, the evasion verdicts."""

from __future__ import annotations

from pathlib import Path

import pytest

from xeneval import report
from xeneval.scenario import load_scenario
from xeneval.scoring import GuestSample, RunRecord, score, totals

SCENARIO = load_scenario(
    """
tags: [attack, network]
duration: 40
baseline: 10
guests:
  - {name: attacker, cpus: [1], role: attacker}
  - {name: victim, cpus: [2], role: victim}
workloads:
  - {guest: attacker, kind: udpflood, target: victim, duration: 30}
""",
    "flood.yaml",
)


def _record(pps: int) -> RunRecord:
    record = RunRecord(scenario="flood")
    for second in range(41):
        attacking = max(0, second - 10)
        record.samples.append(
            (float(second), {"attacker": GuestSample(0.1 * attacking, pps * attacking, 0)})
        )
    return record


def test_a_cpu_hogs_bar_names_both_grounds() -> None:
    hog = load_scenario(
        """
tags: [attack, cpu]
duration: 40
baseline: 10
guests:
  - {name: attacker, cpus: [1], role: attacker}
  - {name: neighbour, cpus: [1], role: victim}
workloads:
  - {guest: attacker, kind: cpuhog, threads: 1, duration: 30}
""",
        "hog.yaml",
    )
    record = RunRecord(scenario="hog")
    for second in range(41):
        on = max(0, second - 10)
        record.samples.append(
            (
                float(second),
                {
                    "attacker": GuestSample(0.7 * on, 0, 0),
                    "neighbour": GuestSample(0.3 * second, 0, 0),
                },
            )
        )
    bars = {
        "cpu": 0.8,
        "cpu_saturated_busy": 0.95,
        "cpu_saturated_share": 0.6,
        "cpu_others_share": 0.05,
    }
    scores = [score(hog, record, bars)]
    text = report.table(scores, totals(scores))
    assert "cpu 0.7 (use bar 0.8), share 0.7 of a saturated CPU (bar 0.6): reached" in text


def test_the_table_says_why_a_run_is_inconclusive() -> None:
    scores = [score(SCENARIO, _record(6000), {"network": 10_000.0})]
    text = report.table(scores, totals(scores))
    assert "attacker INCONCLUSIVE (below bar)" in text
    assert "sent_pps 6000 NOT above bar 10000" in text
    assert "(+1 inconclusive: attack below its bar)" in text
    assert "inconclusive 1" in text


def _evasion(goal: bool) -> dict:
    row = {
        "peak": 100_000.0,
        "peak_factor": 10.0,
        "period": 14.0,
        "max_undetected_duty": 0.094 if goal else 0.4,
        "min_detected_duty": 0.109 if goal else 0.41,
        "max_undetected_average": 0.94 if goal else 4.0,
    }
    form = {
        "alerts": ["A", "B"],
        "pulsing": [row],
        "sustained": {"max_undetected": 9800.0, "min detected": 10_000.0},
        "latency": {"10": 16.0},
        "for_seconds": 15.0,
    }
    summary = {
        "goal_met": goal,
        "largest_undetected_duty_at_top_peak": row["max_undetected_duty"],
        "largest_undetected_average": row["max_undetected_average"],
        "sustained_max_undetected": 9800.0,
        "latency_at_top_factor": 16.0,
        "for_seconds": 15.0,
    }
    return {
        "profiles": {"udp_flood": {"forms": {"any": form}, "summary": summary}},
        "settings": {"periods": [14.0]},
        "uncovered": ["XenNew"],
    }


@pytest.mark.parametrize(("goal", "mark"), [(True, " ok "), (False, " MISS ")])
def test_the_evasion_table_gives_each_profiles_goal(goal: bool, mark: str) -> None:
    text = report.evasion_table(_evasion(goal))
    line = next(x for x in text.splitlines() if x.startswith("udp_flood "))
    assert mark in line
    assert "16 s (15 s)" in line
    assert "NOT SEARCHED (no profile): XenNew" in text


def test_the_picture_draws_without_error(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    scores = [score(SCENARIO, _record(6000), {"network": 10_000.0})]
    assert report.plot(tmp_path / "eval.png", scores, _evasion(True))
    assert (tmp_path / "eval.png").stat().st_size > 0
