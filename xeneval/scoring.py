"""Scoring a run: each guest's verdict against its expectation, time to throttle, victims' harm.

Pure: a `RunRecord` (what the runner observed) in, a `ScenarioScore` out; no I/O.

Verdicts per guest: an attacker throttled is a true positive (`caught`), an attacker never
throttled a false negative (`missed`); a victim or benign guest throttled is a false positive
(`false_throttle`), spared a true negative (`spared`).

A victim's harm compares its rates during the attack with its own baseline (before the attack):
CPU it lost (ran less) or was made to spend (ran more), packets it stopped sending (a service
that could not answer) and unwanted packets it received, over the attack's length.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from xeneval.scenario import Scenario

VERDICT_NAMES = {
    ("throttled", True): "caught",
    ("throttled", False): "missed",
    ("spared", True): "false_throttle",
    ("spared", False): "spared",
}
# The earliest a rate has a value after the stack is up: the baseline window starts here.
WARMUP_SECONDS = 3.0


@dataclass(frozen=True)
class GuestSample:
    """Cumulative counters of one guest: CPU seconds, packets it sent and received (Dom0 view)."""

    cpu_seconds: float
    sent_packets: int
    received_packets: int


@dataclass
class RunRecord:
    """What the runner saw in one run; times are seconds since the run began."""

    scenario: str
    samples: list[tuple[float, dict[str, GuestSample]]] = field(default_factory=list)
    # guest -> [(time it was throttled, what: "network_shape" / "cpu_cap" ...)]
    throttles: dict[str, list[tuple[float, str]]] = field(default_factory=dict)
    # guest -> {alertname: first time seen firing}
    alerts: dict[str, dict[str, float]] = field(default_factory=dict)
    # workload -> what it did (its start time as launched, seconds into the run)
    started: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    wall_seconds: float = 0.0


@dataclass
class GuestScore:
    guest: str
    role: str
    expected: str
    throttled: bool
    verdict: str
    throttled_at: float | None
    time_to_throttle: float | None
    alerts: list[str]
    harm: dict[str, float] | None = None
    # An attacker's CPU s/s and packets/s over the attack: what the abuse achieved here.
    achieved: dict[str, float] | None = None


@dataclass
class ScenarioScore:
    scenario: str
    tags: list[str]
    description: str
    attack_start: float | None
    attack_end: float | None
    guests: list[GuestScore]
    error: str | None
    wall_seconds: float

    def count(self, verdict: str) -> int:
        return sum(1 for g in self.guests if g.verdict == verdict)

    @property
    def passed(self) -> bool:
        return self.error is None and all(g.verdict in ("caught", "spared") for g in self.guests)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["passed"] = self.passed
        return data


def _value_at(
    samples: Sequence[tuple[float, Mapping[str, GuestSample]]], guest: str, at: float, last: bool
) -> tuple[float, GuestSample] | None:
    """The sample nearest `at` from inside the window: the first at or after (or last before)."""
    chosen = None
    for when, values in samples:
        if guest not in values:
            continue
        if last:
            if when <= at:
                chosen = (when, values[guest])
        elif when >= at:
            return when, values[guest]
    return chosen


def window_rates(
    samples: Sequence[tuple[float, Mapping[str, GuestSample]]],
    guest: str,
    start: float,
    end: float,
) -> dict[str, float] | None:
    """CPU seconds/s, sent and received packets/s of `guest` between `start` and `end`."""
    first = _value_at(samples, guest, start, last=False)
    final = _value_at(samples, guest, end, last=True)
    if first is None or final is None or final[0] - first[0] < 1.0:
        return None
    seconds = final[0] - first[0]
    a, b = first[1], final[1]
    return {
        "cpu": max(0.0, b.cpu_seconds - a.cpu_seconds) / seconds,
        "sent_pps": max(0, b.sent_packets - a.sent_packets) / seconds,
        "received_pps": max(0, b.received_packets - a.received_packets) / seconds,
    }


def harm(
    record: RunRecord, guest: str, baseline: tuple[float, float], attack: tuple[float, float]
) -> dict[str, float] | None:
    """A victim's harm over the attack, against its baseline; None without both windows."""
    before = window_rates(record.samples, guest, *baseline)
    during = window_rates(record.samples, guest, *attack)
    if before is None or during is None:
        return None
    seconds = attack[1] - attack[0]
    return {
        "cpu_seconds_lost": round(max(0.0, before["cpu"] - during["cpu"]) * seconds, 2),
        "cpu_seconds_extra": round(max(0.0, during["cpu"] - before["cpu"]) * seconds, 2),
        "packets_sent_lost": round(max(0.0, before["sent_pps"] - during["sent_pps"]) * seconds),
        "packets_received_extra": round(
            max(0.0, during["received_pps"] - before["received_pps"]) * seconds
        ),
        "baseline_cpu": round(before["cpu"], 3),
        "attack_cpu": round(during["cpu"], 3),
        "baseline_sent_pps": round(before["sent_pps"], 1),
        "attack_sent_pps": round(during["sent_pps"], 1),
        "attack_received_pps": round(during["received_pps"], 1),
    }


def score(scenario: Scenario, record: RunRecord) -> ScenarioScore:
    window = scenario.attack_window()
    attack_start = attack_end = None
    if window is not None:
        attack_start, attack_end = window
        attack_end = min(attack_end, scenario.duration)
    guests = []
    for spec in scenario.guests:
        times = sorted(t for t, _ in record.throttles.get(spec.name, []))
        throttled = bool(times)
        first = times[0] if times else None
        ttt = None
        if spec.role == "attacker" and first is not None and attack_start is not None:
            ttt = round(first - attack_start, 1)
        guest_harm = None
        if spec.role == "victim" and attack_start is not None and attack_end is not None:
            base = (min(WARMUP_SECONDS, attack_start), attack_start)
            guest_harm = harm(record, spec.name, base, (attack_start, attack_end))
        achieved = None
        if spec.role == "attacker" and attack_start is not None and attack_end is not None:
            rates = window_rates(record.samples, spec.name, attack_start, attack_end)
            achieved = None if rates is None else {k: round(v, 2) for k, v in rates.items()}
        guests.append(
            GuestScore(
                guest=spec.name,
                role=spec.role,
                expected=spec.expect,
                throttled=throttled,
                verdict=VERDICT_NAMES[(spec.expect, throttled)],
                throttled_at=None if first is None else round(first, 1),
                time_to_throttle=ttt,
                alerts=sorted(record.alerts.get(spec.name, {})),
                harm=guest_harm,
                achieved=achieved,
            )
        )
    return ScenarioScore(
        scenario=scenario.name,
        tags=list(scenario.tags),
        description=scenario.description,
        attack_start=attack_start,
        attack_end=attack_end,
        guests=guests,
        error=record.error,
        wall_seconds=round(record.wall_seconds, 1),
    )


def scenario_class(tags: Sequence[str]) -> str:
    """The abuse class a scenario exercises, from its tags (for time-to-throttle per class)."""
    for name in ("network", "cpu", "memory", "disk", "mixed"):
        if name in tags:
            return name
    return "other"


def totals(scores: Sequence[ScenarioScore]) -> dict[str, Any]:
    """The confusion matrix over every guest of every scenario, and time to throttle per class."""
    matrix = {
        name: sum(s.count(name) for s in scores)
        for name in ("caught", "missed", "false_throttle", "spared")
    }
    per_class: dict[str, list[float]] = {}
    for s in scores:
        for g in s.guests:
            if g.time_to_throttle is not None:
                per_class.setdefault(scenario_class(s.tags), []).append(g.time_to_throttle)
    times = {
        name: {
            "count": len(values),
            "median": round(statistics.median(values), 1),
            "max": round(max(values), 1),
            "min": round(min(values), 1),
        }
        for name, values in sorted(per_class.items())
    }
    attackers = matrix["caught"] + matrix["missed"]
    benign = matrix["false_throttle"] + matrix["spared"]
    return {
        "scenarios": len(scores),
        "scenarios_passed": sum(1 for s in scores if s.passed),
        "errors": sum(1 for s in scores if s.error),
        "confusion": matrix,
        "detection_rate": round(matrix["caught"] / attackers, 3) if attackers else None,
        "false_throttle_rate": round(matrix["false_throttle"] / benign, 3) if benign else None,
        "time_to_throttle": times,
    }
