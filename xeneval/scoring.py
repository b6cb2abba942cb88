"""Scoring a run: each guest's verdict against its expectation, time to throttle, victims' harm.

Pure: a `RunRecord` (what the runner observed) in, a `ScenarioScore` out; no I/O.

Verdicts per guest: an attacker throttled is a true positive (`caught`), an attacker never
throttled a false negative (`missed`); a victim or benign guest throttled is a false positive
(`false_throttle`), spared a true negative (`spared`). An attacker never throttled whose abuse
never reached its policy's bar (on a loaded machine a Python flood may not) is `inconclusive`:
the run says nothing about the policy, it is counted apart and never as a pass; rerun it.

The bar is the policy's threshold on what the harness measures of the attacker over the attack
(`Bar`): packets/s it sent, CPU s/s per vCPU, page faults/s, block requests/s. The average over
the attack is the right measure for pulsing attacks too: the pulsing forms want the two-minute
average above the same bar. A CPU hog has a second ground, as the policy has (contention): it
reached its bar too when it took at least `min_share_of_a_saturated_cpu` of a physical CPU it
shares, busy at least `busy_fraction_of_a_shared_cpu` with others' share at least
`min_others_share_of_a_cpu`, each guest's CPU time spread evenly over the CPUs it is pinned to.

A victim's harm compares its rates during the attack with its own baseline (before the attack):
CPU it lost (ran less) or was made to spend (ran more), packets it stopped sending (a service
that could not answer) and unwanted packets it received, over the attack's length.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from xeneval.scenario import GuestSpec, Scenario

VERDICT_NAMES = {
    ("throttled", True): "caught",
    ("throttled", False): "missed",
    ("spared", True): "false_throttle",
    ("spared", False): "spared",
}
VERDICTS = ("caught", "missed", "inconclusive", "false_throttle", "spared")
# The abuse class of an attacker's workload kinds, and what its bar is measured on.
KIND_CLASS = {
    "pingflood": "network",
    "udpflood": "network",
    "cpuhog": "cpu",
    "memhog": "memory",
    "diskhog": "disk",
}
# The earliest a rate has a value after the stack is up: the baseline window starts here.
WARMUP_SECONDS = 3.0


@dataclass(frozen=True)
class GuestSample:
    """Cumulative counters of one guest: CPU seconds, packets it sent and received (Dom0 view),
    page faults, block requests, and packets that left its shaping (its ifbs' transmit)."""

    cpu_seconds: float
    sent_packets: int
    received_packets: int
    page_faults: int = 0
    block_requests: int = 0
    shaped_packets: int = 0
    shaped_bytes: int = 0


@dataclass(frozen=True)
class Bar:
    """A policy's bar on one achieved rate: `measure` (a key of `window_rates`, `cpu` per vCPU)
    above `threshold`."""

    measure: str
    threshold: float
    # A CPU hog's contention ground: (busy, share, others' share) of one of its physical CPUs.
    contention: tuple[float, float, float] | None = None


# What the harness measures per class, and the shipped threshold (policy, signal) it is held to.
BAR_MEASURES = {"network": "sent_pps", "cpu": "cpu", "memory": "faults_ps", "disk": "block_rps"}
BAR_SIGNALS = {
    "network": ("network_flood", "sent_packets_per_second"),
    "cpu": ("cpu_hog", "cpu_seconds_per_second_per_vcpu"),
    "memory": ("memory_abuse", "page_faults_per_second"),
    "disk": ("disk_abuse", "block_requests_per_second"),
}


# The CPU-hog policy's contention ground: keys of `class_thresholds` beside the classes'.
CONTENTION_SIGNALS = {
    "cpu_saturated_busy": ("cpu_hog", "busy_fraction_of_a_shared_cpu"),
    "cpu_saturated_share": ("cpu_hog", "min_share_of_a_saturated_cpu"),
    "cpu_others_share": ("cpu_hog", "min_others_share_of_a_cpu"),
}


def class_thresholds(thresholds: Mapping[tuple[str, str], float]) -> dict[str, float]:
    """Each class's bar from the rules' thresholds ((policy, signal) -> value), and the CPU-hog
    policy's contention thresholds (CONTENTION_SIGNALS)."""
    signals = BAR_SIGNALS | CONTENTION_SIGNALS
    return {key: thresholds[sig] for key, sig in signals.items() if sig in thresholds}


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
    # The bar the attacker had to pass (its class's), and whether it did.
    bar: dict[str, Any] | None = None
    # A shaped attacker, from 3 s after its throttle to the attack's end: packets/s it offered,
    # packets/s and bits/s that left its shaping (the per-domain cap at work).
    after_throttle: dict[str, float] | None = None
    abuse_class: str | None = None


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

    @property
    def inconclusive(self) -> bool:
        """Not failed, but not judged either: an attack never reached its bar (rerun it)."""
        return (
            self.error is None
            and any(g.verdict == "inconclusive" for g in self.guests)
            and all(g.verdict in ("caught", "spared", "inconclusive") for g in self.guests)
        )

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["passed"] = self.passed
        data["inconclusive"] = self.inconclusive
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
        "faults_ps": max(0, b.page_faults - a.page_faults) / seconds,
        "block_rps": max(0, b.block_requests - a.block_requests) / seconds,
        "shaped_pps": max(0, b.shaped_packets - a.shaped_packets) / seconds,
        "shaped_bps": 8 * max(0, b.shaped_bytes - a.shaped_bytes) / seconds,
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


def attacker_class(scenario: Scenario, guest: str) -> str | None:
    """The abuse class of an attacker's workloads (the first abusive kind it runs)."""
    for spec in scenario.workloads:
        if spec.guest == guest and spec.kind in KIND_CLASS:
            return KIND_CLASS[spec.kind]
    return None


def bar_for(scenario: Scenario, guest: GuestSpec, thresholds: Mapping[str, float]) -> Bar | None:
    """The bar an attacker must pass for its run to judge the policy: the scenario's `bar` for
    the guest, else its class's threshold; None when neither is known."""
    cls = attacker_class(scenario, guest.name)
    if cls is None:
        return None
    value = guest.bar if guest.bar is not None else thresholds.get(cls)
    if value is None:
        return None
    contention = None
    if cls == "cpu" and guest.bar is None and all(k in thresholds for k in CONTENTION_SIGNALS):
        busy, share, others = (thresholds[k] for k in CONTENTION_SIGNALS)
        contention = (busy, share, others)
    return Bar(BAR_MEASURES[cls], float(value), contention)


def achieved_measure(bar: Bar, achieved: Mapping[str, float], vcpus: int) -> float:
    value = float(achieved.get(bar.measure, 0.0))
    return value / max(1, vcpus) if bar.measure == "cpu" else value


def saturated_share(
    scenario: Scenario,
    samples: Sequence[tuple[float, Mapping[str, GuestSample]]],
    guest: GuestSpec,
    start: float,
    end: float,
    contention: tuple[float, float, float],
) -> float:
    """The largest share `guest` took, over [start, end], of one of its physical CPUs that was
    saturated and shared (the CPU-hog policy's contention ground); 0 where none was. Each
    guest's CPU s/s is spread evenly over the CPUs it is pinned to; a CPU's busy fraction is the
    sum of what its guests ran there (Domain-0 has CPU 0, where no guest runs)."""
    busy_bar, _, others_bar = contention
    on_cpu: dict[int, dict[str, float]] = {}
    for spec in scenario.guests:
        rates = window_rates(samples, spec.name, start, end)
        if rates is None:
            continue
        for cpu in spec.cpus:
            on_cpu.setdefault(cpu, {})[spec.name] = rates["cpu"] / len(spec.cpus)
    best = 0.0
    for cpu in guest.cpus:
        used = on_cpu.get(cpu, {})
        busy = sum(used.values())
        if guest.name not in used or busy <= 0 or busy < busy_bar:
            continue
        share = used[guest.name] / busy
        if 1.0 - share >= others_bar:
            best = max(best, share)
    return best


def verdict(expected: str, throttled: bool, reached: bool | None) -> str:
    """A guest's verdict; a miss is `inconclusive` when the attack is known not to have reached
    its bar (`reached` False; None, no measurement or no bar: a miss stays a miss)."""
    name = VERDICT_NAMES[(expected, throttled)]
    if name != "missed" or reached is None:
        return name
    return name if reached else "inconclusive"


def score(
    scenario: Scenario, record: RunRecord, thresholds: Mapping[str, float] | None = None
) -> ScenarioScore:
    """Score one run. `thresholds`: the shipped policies' bar per abuse class (network: packets
    sent per second, cpu: CPU s/s per vCPU, memory: page faults/s, disk: block requests/s)."""
    bars_by_class = thresholds or {}
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
        own = [w for w in scenario.workloads if w.guest == spec.name]
        ttt = None
        if spec.role == "attacker" and first is not None and own:
            # From this attacker's own start (several attackers may start apart).
            ttt = round(first - min(w.start for w in own), 1)
        guest_harm = None
        if spec.role == "victim" and attack_start is not None and attack_end is not None:
            base = (min(WARMUP_SECONDS, attack_start), attack_start)
            guest_harm = harm(record, spec.name, base, (attack_start, attack_end))
        achieved = bar_info = after = None
        bar = None
        reached: bool | None = None
        if spec.role == "attacker" and own:
            start = min(w.start for w in own)
            end = min(max(w.end for w in own), scenario.duration)
            rates = window_rates(record.samples, spec.name, start, end)
            achieved = None if rates is None else {k: round(v, 2) for k, v in rates.items()}
            bar = bar_for(scenario, spec, bars_by_class)
            if bar is not None:
                bar_info = {"measure": bar.measure, "threshold": bar.threshold}
                if achieved is not None:
                    value = achieved_measure(bar, achieved, spec.vcpus)
                    bar_info["achieved"] = round(value, 3)
                    reached = value > bar.threshold
                    if bar.contention is not None:
                        share = saturated_share(
                            scenario, record.samples, spec, start, end, bar.contention
                        )
                        bar_info["saturated_share"] = round(share, 3)
                        bar_info["min_saturated_share"] = bar.contention[1]
                        reached = reached or share >= bar.contention[1]
                    bar_info["reached"] = reached
            if first is not None and first + 3.0 < end:
                shaped = window_rates(record.samples, spec.name, first + 3.0, end)
                if shaped is not None:
                    after = {
                        "sent_pps": round(shaped["sent_pps"], 1),
                        "shaped_pps": round(shaped["shaped_pps"], 1),
                        "shaped_bps": round(shaped["shaped_bps"]),
                        "cpu": round(shaped["cpu"], 3),
                    }
        guests.append(
            GuestScore(
                guest=spec.name,
                role=spec.role,
                expected=spec.expect,
                throttled=throttled,
                verdict=verdict(spec.expect, throttled, reached),
                throttled_at=None if first is None else round(first, 1),
                time_to_throttle=ttt,
                alerts=sorted(record.alerts.get(spec.name, {})),
                harm=guest_harm,
                achieved=achieved,
                bar=bar_info,
                after_throttle=after,
                abuse_class=attacker_class(scenario, spec.name)
                if spec.role == "attacker"
                else None,
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
    """The confusion matrix over every guest of every scenario (inconclusive attackers apart:
    they count neither as caught nor as missed), and time to throttle per abuse class."""
    matrix = {name: sum(s.count(name) for s in scores) for name in VERDICTS}
    per_class: dict[str, list[float]] = {}
    for s in scores:
        for g in s.guests:
            if g.time_to_throttle is not None:
                cls = g.abuse_class or scenario_class(s.tags)
                per_class.setdefault(cls, []).append(g.time_to_throttle)
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
        "scenarios_inconclusive": sum(1 for s in scores if s.inconclusive),
        "errors": sum(1 for s in scores if s.error),
        "confusion": matrix,
        "detection_rate": round(matrix["caught"] / attackers, 3) if attackers else None,
        "false_throttle_rate": round(matrix["false_throttle"] / benign, 3) if benign else None,
        "time_to_throttle": times,
    }
