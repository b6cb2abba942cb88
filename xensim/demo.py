"""`make demo`: the published experiment, end to end, on a simulated Xen host.

    python -m xensim.demo [--scenario ping-flood|udp-flood|cpu-hog|memory|disk] [--output DIR]

A host shaped like the paper's (4 physical CPUs, Domain-0 on CPU 0, guest1..3 pinned one per
CPU), the real exporter, Prometheus with the shipped rules, Alertmanager with the shipped
routing and the remediator with the shipped config, all started and stopped here. Then:

1. baseline: every guest quiet until the rates settle;
2. abuse: guest1 attacks (ping -f to guest2 in the published experiment);
3. the policy fires, Alertmanager delivers it, the remediator throttles guest1;
4. the abuse goes on, throttled: its rates fall, guest2's load falls, guest3 is untouched;
5. the abuse stops, the alert resolves, after the hold the throttle is released.

The figures of each phase, the latencies and a PNG go to the output directory with every
component's log; the exit status is 0 only if the victim was protected (docs/demo.md).
`tests/e2e/` runs the same `run_experiment` with other settings.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import math
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from xensim.stack import (
    REPO_ROOT,
    ServiceError,
    SimError,
    SimHost,
    Stack,
    host_leftovers,
    run_stack,
    simulated_host,
)

log = logging.getLogger(__name__)

ATTACKER, VICTIM, BYSTANDER = "guest1", "guest2", "guest3"
RATE_WINDOW_SECONDS = 5.0  # the recording rules' rate window: a phase's figures start after it
POLL_SECONDS = 0.5
PROGRESS_SECONDS = 3.0
# A rate that moves less than this between phases is noise, whatever its relative change.
ABSOLUTE_NOISE = {"interrupts": 40.0, "cpu": 0.05, "received_pps": 20.0, "sent_pps": 20.0}
RELATIVE_NOISE = 0.35


# --- what is measured -----------------------------------------------------------------------


@dataclass(frozen=True)
class Measure:
    """A per-domain rate the recording rules publish, and the policy threshold that bounds it."""

    key: str
    label: str
    record: str
    threshold_signal: str | None = None


MEASURES = {
    m.key: m
    for m in (
        Measure(
            "sent_pps",
            "packets sent/s",
            "instance_domain:xen_domain_network_transmit_packets:rate10s",
            "sent_packets_per_second",
        ),
        Measure(
            "received_pps",
            "packets received/s",
            "instance_domain:xen_domain_network_receive_packets:rate10s",
        ),
        Measure(
            "interrupts",
            "interrupts/s",
            "instance_domain:xen_perfc_interrupts:rate10s",
            "interrupts_per_second",
        ),
        Measure(
            "context_switches",
            "context switches/s",
            "instance_domain:xen_perfc_sched_context_switches:rate10s",
            "context_switches_per_second",
        ),
        Measure(
            "timer",
            "timer interrupts/s",
            "instance_domain:xen_perfc_apic_timer_interrupts:rate10s",
            "timer_interrupts_per_second_per_vcpu",
        ),
        Measure("cpu", "CPU s/s", "instance_domain:xen_domain_cpu_seconds:rate10s"),
        Measure(
            "page_faults",
            "page faults/s",
            "instance_domain:xen_perfc_page_faults:rate10s",
            "page_faults_per_second",
        ),
        Measure(
            "block_requests",
            "block requests/s",
            "instance_domain:xen_domain_block_requests:rate10s",
            "block_requests_per_second",
        ),
    )
}


@dataclass(frozen=True)
class Scenario:
    """One abuse class: what guest1 runs, which policy should catch it and how it is throttled."""

    name: str
    title: str
    workload: str
    policy: str
    remediation: str  # network_shape or cpu_cap
    headline: str  # the attacker's measure that must fall
    min_fall: float  # by at least this factor once throttled
    attacker_measures: tuple[str, ...]
    victim_measures: tuple[str, ...] = ()
    target: str | None = None

    @property
    def victim(self) -> str | None:
        return self.target


SCENARIOS = {
    s.name: s
    for s in (
        Scenario(
            name="ping-flood",
            title="guest1 ping-floods guest2 (ping -f), the published experiment",
            workload="pingflood",
            target=VICTIM,
            policy="network_flood",
            remediation="network_shape",
            headline="sent_pps",
            min_fall=10.0,
            attacker_measures=("sent_pps", "interrupts", "context_switches", "cpu"),
            # The victim pays its own kernel's work for every answer (docs/simulator.md).
            victim_measures=("interrupts", "received_pps", "cpu"),
        ),
        Scenario(
            name="udp-flood",
            title="guest1 floods guest2 with small UDP datagrams",
            workload="udpflood",
            target=VICTIM,
            policy="network_flood",
            remediation="network_shape",
            headline="sent_pps",
            min_fall=10.0,
            attacker_measures=("sent_pps", "interrupts", "context_switches"),
            victim_measures=("interrupts", "received_pps"),
        ),
        Scenario(
            name="cpu-hog",
            title="guest1 spins on its CPU",
            workload="cpuhog",
            policy="cpu_hog",
            remediation="cpu_cap",
            headline="cpu",
            min_fall=1.5,  # capped at 50% of one CPU
            attacker_measures=("cpu", "timer", "context_switches"),
        ),
        Scenario(
            name="memory",
            title="guest1 touches fresh memory over and over (page faults)",
            workload="memhog",
            policy="memory_abuse",
            remediation="cpu_cap",
            headline="page_faults",
            min_fall=2.0,  # capped at 25% of one CPU
            attacker_measures=("page_faults", "cpu"),
        ),
        Scenario(
            name="disk",
            title="guest1 writes and fsyncs files over and over",
            workload="diskhog",
            policy="disk_abuse",
            remediation="cpu_cap",
            headline="block_requests",
            min_fall=2.0,  # capped at 10% of one CPU
            attacker_measures=("block_requests", "cpu"),
        ),
    )
}

PHASES = ("baseline", "abuse", "throttled", "after")
PHASE_TITLES = {
    "baseline": "1 baseline",
    "abuse": "2 abuse, before remediation",
    "throttled": "4 abuse, remediated",
    "after": "5 abuse stopped",
}


@dataclass
class Settings:
    """How one run goes; the demo's defaults take about 3-4 minutes in all."""

    scenario: Scenario
    host_name: str = field(default_factory=lambda: f"demo{os.getpid() % 100_000}")
    dom0_netns: bool = False
    baseline_seconds: float = 25.0
    throttled_seconds: float = 20.0
    after_release_seconds: float = 4.0
    detect_timeout: float = 120.0
    resolve_timeout: float = 150.0
    hold_seconds: float = 5.0
    seed: int | None = 7
    output_dir: Path | None = None
    plot: bool = True
    say: Callable[[str], None] = print


# --- what happened --------------------------------------------------------------------------


@dataclass
class Check:
    what: str
    ok: bool
    detail: str


@dataclass
class Result:
    scenario: Scenario
    settings: Settings
    events: dict[str, float] = field(default_factory=dict)  # name -> epoch seconds
    # (role, measure) -> [(epoch, value)] from Prometheus; ("attacker", "vif_pps") from the host
    series: dict[tuple[str, str], list[tuple[float, float]]] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)  # measure -> threshold
    phases: dict[str, dict[tuple[str, str], float | None]] = field(default_factory=dict)
    fired: set[str] = field(default_factory=set)  # alert names that fired for the attacker
    throttled_things: set[str] = field(default_factory=set)  # vifs/guests ever throttled
    attacker_vifs: set[str] = field(default_factory=set)
    applied: list[dict[str, Any]] = field(default_factory=list)  # the remediator's audit
    collector_failures: int = 0
    error: str | None = None
    leftovers: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    output_dir: Path | None = None
    report_png: Path | None = None

    def since_start(self, event: str) -> float | None:
        start, at = self.events.get("abuse_start"), self.events.get(event)
        return None if start is None or at is None else at - start

    @property
    def protected(self) -> bool:
        return self.error is None and bool(self.checks) and all(c.ok for c in self.checks)

    def phase_value(self, phase: str, role: str, measure: str) -> float | None:
        return self.phases.get(phase, {}).get((role, measure))


def _roles(scenario: Scenario) -> dict[str, str]:
    roles = {"attacker": ATTACKER, "bystander": BYSTANDER}
    if scenario.victim:
        roles["victim"] = scenario.victim
    return roles


def _role_measures(scenario: Scenario) -> list[tuple[str, str]]:
    pairs = [("attacker", m) for m in scenario.attacker_measures]
    pairs += [("victim", m) for m in scenario.victim_measures]
    pairs += [("bystander", m) for m in ("interrupts", "cpu")]
    return pairs


# --- observing the host and the stack -------------------------------------------------------


def throttled_now(host: SimHost, scenario: Scenario) -> dict[str, str]:
    """What is throttled on the host right now, seen from Dom0: vif -> qdiscs, or guest -> cap."""
    if scenario.remediation == "network_shape":
        return {vif: "+".join(kinds) for vif, kinds in host.shaped_links().items()}
    return {guest: f"cap {cap}%" for guest, cap in host.caps().items() if cap}


def _attacker_things(host: SimHost, scenario: Scenario) -> set[str]:
    if scenario.remediation == "network_shape":
        return set(host.guests[ATTACKER].interfaces)
    return {ATTACKER}


class VifSampler:
    """Packets each guest sends, read from its vifs' counters in Dom0 once a second.

    The demo's own ground truth, independent of the exporter: Dom0's rx on a vif is what the
    guest sent.
    """

    def __init__(self, host: SimHost) -> None:
        self.host = host
        self.samples: dict[str, list[tuple[float, int]]] = {g: [] for g in host.guests}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vif-sampler", daemon=True)

    def __enter__(self) -> VifSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            try:
                counters = self.host.link_counters()
            except (SimError, OSError, ValueError) as error:
                log.debug("vif sample failed: %s", error)
                continue
            now = time.time()
            for guest in self.host.guests.values():
                total = sum(counters.get(v, {}).get("rx_packets", 0) for v in guest.interfaces)
                self.samples[guest.name].append((now, total))

    def rates(self, guest: str) -> list[tuple[float, float]]:
        points = self.samples[guest]
        return [
            (t1, (n1 - n0) / (t1 - t0))
            for (t0, n0), (t1, n1) in itertools.pairwise(points)
            if t1 > t0 and n1 >= n0
        ]

    def latest(self, guest: str) -> float | None:
        rates = self.rates(guest)
        return rates[-1][1] if rates else None


class Watcher:
    """Polls the alerts, the host's throttles and the remediator, and tells what changed."""

    def __init__(
        self, stack: Stack, scenario: Scenario, result: Result, say: Callable[[str], None]
    ):
        self.stack = stack
        self.scenario = scenario
        self.result = result
        self.say = say
        self.firing: set[str] = set()
        self.pending: set[str] = set()
        self.throttled: dict[str, str] = {}
        self._audit_seen = 0

    def _policy_alerts(self) -> tuple[set[str], set[str]]:
        firing: set[str] = set()
        pending: set[str] = set()
        for alert in self.stack.prometheus.alerts():
            labels = alert.get("labels", {})
            if labels.get("policy") != self.scenario.policy or labels.get("domain") != ATTACKER:
                continue
            (firing if alert.get("state") == "firing" else pending).add(labels["alertname"])
        return firing, pending

    def poll(self) -> None:
        now = time.time()
        events = self.result.events
        firing, pending = self._policy_alerts()
        for name in sorted(firing - self.firing):
            self.result.fired.add(name)
            if "firing" not in events:
                events["firing"] = now
            self.say(f"  >> FIRING   {name} for {ATTACKER} {self._after(now)}")
        if self.firing and not firing:
            events["resolved"] = now
            self.say(f"  >> RESOLVED {', '.join(sorted(self.firing))} {self._after(now)}")
        self.firing, self.pending = firing, pending

        throttled = throttled_now(self.stack.host, self.scenario)
        self.result.throttled_things |= set(throttled)
        attacker_things = _attacker_things(self.stack.host, self.scenario)
        if throttled and not self.throttled:
            events.setdefault("throttled", now)
            what = ", ".join(f"{k} ({v})" for k, v in sorted(throttled.items()))
            self.say(f"  >> THROTTLED on the host: {what} {self._after(now)}")
        if self.throttled and not throttled:
            events["released"] = now
            self.say(f"  >> RELEASED  {', '.join(sorted(self.throttled))} {self._after(now)}")
        stray = set(throttled) - attacker_things
        if stray:
            self.say(f"  !! throttled what is not {ATTACKER}'s: {', '.join(sorted(stray))}")
        self.throttled = throttled

        audit = self.stack.remediator.audit()
        for record in audit[self._audit_seen :]:
            self._tell_audit(record)
        self._audit_seen = len(audit)

    def _tell_audit(self, record: Mapping[str, Any]) -> None:
        event = record.get("event")
        if event == "alert":
            self.say(
                f"  >> remediator received {record.get('alertname')} ({record.get('status')})"
                f" for {record.get('domain')}: {record.get('decision')}"
            )
        elif event == "applied":
            self.result.applied.append(dict(record))
            self.say(f"  >> remediator applied {record.get('kind')} to {record.get('domain')}:")
            for argv in record.get("argv") or []:
                program, *rest = argv
                self.say(f"       {' '.join([os.path.basename(program), *rest])}")
        elif event == "ended":
            self.say(
                f"  >> remediator released throttle {record.get('throttle')} of"
                f" {record.get('domain')} ({record.get('reason')})"
            )

    def _after(self, now: float) -> str:
        start = self.result.events.get("abuse_start")
        return "" if start is None else f"({now - start:.1f} s after the abuse started)"


def _instant(stack: Stack, measure: str) -> dict[str, float]:
    try:
        samples = stack.prometheus.query(MEASURES[measure].record)
    except (ServiceError, OSError, ValueError):
        return {}
    return {labels.get("domain", ""): value for labels, value in samples}


def _fmt(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.1f}"
    return f"{value:.2f}"


class Progress:
    """One line every few seconds: the phase, the rates that matter, the alert's state."""

    def __init__(self, stack: Stack, scenario: Scenario, vifs: VifSampler, watcher: Watcher):
        self.stack, self.scenario, self.vifs, self.watcher = stack, scenario, vifs, watcher
        self.started = time.monotonic()
        self._last = 0.0

    def maybe(self, phase: str, say: Callable[[str], None]) -> None:
        now = time.monotonic()
        if now - self._last < PROGRESS_SECONDS:
            return
        self._last = now
        parts = [f"[{now - self.started:5.0f}s] {phase:<10}"]
        roles = _roles(self.scenario)
        if self.scenario.remediation == "network_shape":
            parts.append(f"{ATTACKER} sends {_fmt(self.vifs.latest(ATTACKER))} pkt/s")
        shown = {m for _, m in _role_measures(self.scenario) if m != "sent_pps"}
        values = {m: _instant(self.stack, m) for m in sorted(shown)}
        for role, measure in _role_measures(self.scenario):
            if measure == "sent_pps":
                continue
            value = values[measure].get(roles[role])
            parts.append(f"{roles[role]} {_fmt(value)} {MEASURES[measure].label}")
        state = (
            f"FIRING {','.join(sorted(self.watcher.firing))}"
            if self.watcher.firing
            else f"pending {','.join(sorted(self.watcher.pending))}"
            if self.watcher.pending
            else "no alert"
        )
        parts.append(state)
        if self.watcher.throttled:
            parts.append("throttled: " + ",".join(sorted(self.watcher.throttled)))
        say(" | ".join(parts))


# --- the experiment -------------------------------------------------------------------------


class Timeout(Exception):
    """A phase did not reach its condition in time."""


def _run_phase(
    until: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    phase: str,
    watcher: Watcher,
    progress: Progress,
    say: Callable[[str], None],
) -> None:
    """Poll the watcher (and print progress) until `until()` holds; Timeout after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            watcher.poll()
        except (ServiceError, SimError, OSError, ValueError) as error:
            log.debug("poll failed: %s", error)
        progress.maybe(phase, say)
        if until():
            return
        if time.monotonic() >= deadline:
            raise Timeout(f"{what}: not within {timeout:.0f}s")
        time.sleep(POLL_SECONDS)


def _drive(stack: Stack, settings: Settings, result: Result) -> None:
    scenario, say, events = settings.scenario, settings.say, result.events
    host = stack.host
    with VifSampler(host) as vifs:
        watcher = Watcher(stack, scenario, result, say)
        progress = Progress(stack, scenario, vifs, watcher)
        try:
            events["stack_ready"] = time.time()
            say(f"\nPhase 1: quiet baseline, {settings.baseline_seconds:.0f} s")
            baseline_end = time.monotonic() + settings.baseline_seconds
            _run_phase(
                lambda: time.monotonic() >= baseline_end,
                timeout=settings.baseline_seconds + 5,
                what="baseline",
                phase="baseline",
                watcher=watcher,
                progress=progress,
                say=say,
            )
            say(f"\nPhase 2: {scenario.title}")
            duration = settings.detect_timeout + settings.throttled_seconds + 60
            host.run_workload(
                ATTACKER, scenario.workload, duration=duration, target=scenario.target
            )
            events["abuse_start"] = time.time()
            say(
                f"\nPhase 3: waiting for the {scenario.policy} policy to fire and the remediator"
                f" to apply {scenario.remediation}"
            )
            _run_phase(
                lambda: "firing" in events and "throttled" in events,
                timeout=settings.detect_timeout,
                what=f"the {scenario.policy} policy firing and {scenario.remediation} applied",
                phase="abuse",
                watcher=watcher,
                progress=progress,
                say=say,
            )
            say(f"\nPhase 4: the abuse goes on, throttled, for {settings.throttled_seconds:.0f} s")
            throttled_end = time.monotonic() + settings.throttled_seconds
            _run_phase(
                lambda: time.monotonic() >= throttled_end,
                timeout=settings.throttled_seconds + 5,
                what="throttled phase",
                phase="throttled",
                watcher=watcher,
                progress=progress,
                say=say,
            )
            host.stop_workloads(ATTACKER)
            events["abuse_stop"] = time.time()
            say(
                "\nPhase 5: the abuse stopped; waiting for the alert to resolve"
                f" (keep_firing_for) and the release after the {settings.hold_seconds:g} s hold"
            )
            _run_phase(
                lambda: "released" in events and not watcher.firing,
                timeout=settings.resolve_timeout,
                what="the alert resolved and the throttle released",
                phase="after",
                watcher=watcher,
                progress=progress,
                say=say,
            )
            after_end = time.monotonic() + settings.after_release_seconds
            _run_phase(
                lambda: time.monotonic() >= after_end,
                timeout=settings.after_release_seconds + 5,
                what="after release",
                phase="after",
                watcher=watcher,
                progress=progress,
                say=say,
            )
        except Timeout as error:
            result.error = str(error)
            say(f"\n!! {error}")
        finally:
            events["end"] = time.time()
            with contextlib.suppress(SimError):
                host.stop_workloads(ATTACKER)
        result.series[("attacker", "vif_pps")] = vifs.rates(ATTACKER)
        if scenario.victim:
            result.series[("victim", "vif_pps")] = vifs.rates(scenario.victim)
        result.series[("bystander", "vif_pps")] = vifs.rates(BYSTANDER)
    _collect(stack, settings, result)


def _collect(stack: Stack, settings: Settings, result: Result) -> None:
    """The rates over the whole run from Prometheus, the thresholds, the collectors' health."""
    scenario = settings.scenario
    start, end = result.events["stack_ready"], result.events["end"]
    roles = _roles(scenario)
    for measure in sorted({m for _, m in _role_measures(scenario)}):
        try:
            series = stack.prometheus.query_range(MEASURES[measure].record, start, end)
        except (ServiceError, OSError, ValueError) as error:
            log.warning("range query for %s failed: %s", measure, error)
            continue
        by_domain = {labels.get("domain", ""): points for labels, points in series}
        for role, domain in roles.items():
            result.series[(role, measure)] = by_domain.get(domain, [])
    with contextlib.suppress(ServiceError, OSError, ValueError):
        for labels, value in stack.prometheus.query(
            f'judicator:policy_threshold:constant{{policy="{scenario.policy}"}}'
        ):
            for candidate in MEASURES.values():
                if candidate.threshold_signal == labels.get("signal"):
                    result.thresholds[candidate.key] = value
    with contextlib.suppress(ServiceError, OSError, ValueError):
        failures = stack.prometheus.query(
            f"sum(count_over_time((xen_exporter_collector_success == 0)[{end - start:.0f}s:1s]))"
        )
        result.collector_failures = int(failures[0][1]) if failures else 0


def _window(result: Result, phase: str) -> tuple[float, float] | None:
    """The part of the run whose rates stand for `phase` (each after the rates' window)."""
    ev = result.events
    settle = RATE_WINDOW_SECONDS + 1
    spans = {
        "baseline": (ev.get("stack_ready"), ev.get("abuse_start")),
        # Without a throttle (the policy never fired) the abuse lasted until the run stopped it.
        "abuse": (
            _plus(ev.get("abuse_start"), settle),
            ev.get("throttled") or ev.get("abuse_stop") or ev.get("end"),
        ),
        "throttled": (_plus(ev.get("throttled"), settle), ev.get("abuse_stop")),
        "after": (_plus(ev.get("abuse_stop"), settle), ev.get("end")),
    }
    first, last = spans[phase]
    if phase == "baseline" and first is not None:
        first += 10  # the first scrapes before every rate has its window
    if first is None or last is None or last <= first:
        return None
    return first, last


def _plus(value: float | None, delta: float) -> float | None:
    return None if value is None else value + delta


def summarize(result: Result) -> None:
    """Each phase's mean of every series."""
    for phase in PHASES:
        window = _window(result, phase)
        figures: dict[tuple[str, str], float | None] = {}
        for key, points in result.series.items():
            values = [v for t, v in points if window and window[0] <= t <= window[1]]
            values = [v for v in values if not math.isnan(v)]
            figures[key] = statistics.fmean(values) if values else None
        result.phases[phase] = figures


def _noise_ok(before: float | None, now: float | None, measure: str) -> tuple[bool, str]:
    if before is None or now is None:
        return False, "no data"
    limit = max(RELATIVE_NOISE * abs(before), ABSOLUTE_NOISE.get(measure, 0.0))
    return abs(now - before) <= limit, f"{_fmt(before)} -> {_fmt(now)} (noise limit ±{_fmt(limit)})"


def evaluate(result: Result) -> None:
    """Decide whether the victim was protected; every check is kept with its figures."""
    scenario, ev, checks = result.scenario, result.events, result.checks
    checks.append(
        Check(
            f"the {scenario.policy} policy fired for {ATTACKER}",
            bool(result.fired),
            ", ".join(sorted(result.fired)) or "no alert fired",
        )
    )
    checks.append(
        Check(
            f"{scenario.remediation} applied to {ATTACKER} only",
            "throttled" in ev and result.throttled_things <= _expected_things(result),
            f"throttled over the run: {', '.join(sorted(result.throttled_things)) or 'nothing'}",
        )
    )
    headline = (
        ("attacker", "vif_pps")
        if scenario.headline == "sent_pps"
        else (
            "attacker",
            scenario.headline,
        )
    )
    before = result.phase_value("abuse", *headline)
    after = result.phase_value("throttled", *headline)
    fell = before is not None and after is not None and after * scenario.min_fall <= before
    factor = f"{before / after:.1f}x" if before and after else "n/a"
    checks.append(
        Check(
            f"{ATTACKER}'s {MEASURES[scenario.headline].label} fell >= {scenario.min_fall:g}x",
            fell,
            f"{_fmt(before)} -> {_fmt(after)} ({factor})",
        )
    )
    if scenario.victim:
        v_before = result.phase_value("abuse", "victim", "interrupts")
        v_after = result.phase_value("throttled", "victim", "interrupts")
        checks.append(
            Check(
                f"{scenario.victim}'s load fell",
                v_before is not None and v_after is not None and v_after * 2 <= v_before,
                f"interrupts/s {_fmt(v_before)} -> {_fmt(v_after)}",
            )
        )
    for phase in ("abuse", "throttled"):
        ok, detail = _noise_ok(
            result.phase_value("baseline", "bystander", "interrupts"),
            result.phase_value(phase, "bystander", "interrupts"),
            "interrupts",
        )
        checks.append(Check(f"{BYSTANDER} untouched ({PHASE_TITLES[phase]})", ok, detail))
    resolved, released = ev.get("resolved"), ev.get("released")
    checks.append(
        Check(
            "released after the alert resolved",
            resolved is not None and released is not None and released >= resolved,
            f"resolved {_fmt(result.since_start('resolved'))} s, released"
            f" {_fmt(result.since_start('released'))} s after the abuse started",
        )
    )
    checks.append(
        Check(
            "nothing left behind",
            not result.leftovers,
            ", ".join(result.leftovers) or "no netns, link, cgroup, process or state left",
        )
    )


def _expected_things(result: Result) -> set[str]:
    if result.scenario.remediation == "network_shape":
        return set(result.attacker_vifs)
    return {ATTACKER}


# --- leftovers ------------------------------------------------------------------------------


def _our_links() -> set[str]:
    """Links in the machine's namespace that the remediator names (its ifbs)."""
    out = subprocess.run(
        ["ip", "-j", "link", "show"], capture_output=True, text=True, timeout=15, check=False
    ).stdout
    return {link["ifname"] for link in json.loads(out or "[]") if link["ifname"].startswith("jifb")}


def _our_processes(host_name: str) -> list[str]:
    """Processes still naming this run's host or its services' temporary directories."""
    found = []
    needles = (f"/run/judicator-sim/{host_name}".encode(), f"judicator-sim-{host_name}".encode())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ours = b"judicator-" in cmdline and f"-{os.getpid()}-".encode() in cmdline
        if ours or any(needle in cmdline for needle in needles):
            text = cmdline.replace(b"\0", b" ").decode(errors="replace")
            found.append(f"process {entry.name}: {text[:80]}")
    return found


# --- the whole run --------------------------------------------------------------------------


def run_experiment(settings: Settings) -> Result:
    """Bring everything up, run the five phases, take everything down, and judge the outcome."""
    scenario, say = settings.scenario, settings.say
    result = Result(scenario=scenario, settings=settings)
    logs = None
    if settings.output_dir is not None:
        result.output_dir = settings.output_dir
        logs = settings.output_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
    links_before = _our_links()
    say(
        f"Judicator demo: {scenario.name}. Simulated Xen host {settings.host_name!r}: 4 CPUs,"
        f" Domain-0 on CPU 0, guest1..3 pinned to CPUs 1..3"
        f" ({'Dom0 in its own namespace' if settings.dom0_netns else 'Dom0 = this machine'})."
    )
    try:
        with simulated_host(
            settings.host_name,
            dom0_netns=settings.dom0_netns,
            seed=settings.seed,
            log_dir=logs,
        ) as host:
            result.attacker_vifs = set(host.guests[ATTACKER].interfaces)
            say("Starting the exporter, the remediator, Alertmanager and Prometheus ...")
            with run_stack(host, hold_seconds=settings.hold_seconds, log_dir=logs) as stack:
                say(
                    f"  exporter {stack.exporter.url}, remediator {stack.remediator.url},"
                    f" alertmanager {stack.alertmanager.url}, prometheus {stack.prometheus.url}"
                    + (f" (in netns {host.dom0_netns})" if host.dom0_netns else "")
                )
                _drive(stack, settings, result)
            say("Stopped the services; taking the simulated host down ...")
    except (ServiceError, SimError, TimeoutError) as error:
        result.error = f"{type(error).__name__}: {error}"
        say(f"\n!! {result.error}")
    finally:
        result.leftovers = host_leftovers(settings.host_name)
        result.leftovers += sorted(f"link {link}" for link in _our_links() - links_before)
        result.leftovers += _our_processes(settings.host_name)
    summarize(result)
    evaluate(result)
    return result


# --- the report -----------------------------------------------------------------------------


def table(result: Result) -> str:
    """The phases' figures as a Markdown table, with the latencies and the verdict."""
    scenario = result.scenario
    roles = _roles(scenario)
    rows = []
    keys: list[tuple[str, str]] = []
    if scenario.remediation == "network_shape":
        keys.append(("attacker", "vif_pps"))
    keys += [k for k in _role_measures(scenario) if k != ("attacker", "sent_pps")]
    if scenario.victim:
        keys.append(("victim", "vif_pps"))
    header = "| " + " | ".join(["", *(PHASE_TITLES[p] for p in PHASES)]) + " |"
    rows.append(header)
    rows.append("|" + "---|" * (len(PHASES) + 1))
    for role, measure in keys:
        label = "packets sent/s (on its vif)" if measure == "vif_pps" else MEASURES[measure].label
        cells = [_fmt(result.phase_value(p, role, measure)) for p in PHASES]
        rows.append(f"| {role} {roles[role]}: {label} | " + " | ".join(cells) + " |")
    lines = ["\n".join(rows), ""]
    lines.append(f"- detection latency (abuse start -> alert firing): {_latency(result, 'firing')}")
    lines.append(
        f"- remediation latency (abuse start -> {scenario.remediation} in place):"
        f" {_latency(result, 'throttled')}"
    )
    lines.append(f"- alert resolved: {_latency(result, 'resolved')} after the abuse started")
    lines.append(f"- throttle released: {_latency(result, 'released')} after the abuse started")
    lines.append(f"- policies fired: {', '.join(sorted(result.fired)) or 'none'}")
    if result.collector_failures:
        lines.append(
            f"- exporter collector failures seen by Prometheus: {result.collector_failures}"
            " (collector-scrapes with xen_exporter_collector_success 0)"
        )
    lines.append("")
    for check in result.checks:
        lines.append(f"- [{'x' if check.ok else ' '}] {check.what}: {check.detail}")
    if result.error:
        lines.append(f"- error: {result.error}")
    verdict = "PROTECTED" if result.protected else "NOT PROTECTED"
    lines.append(f"\nVerdict: {verdict}")
    return "\n".join(lines)


def _latency(result: Result, event: str) -> str:
    value = result.since_start(event)
    return "never" if value is None else f"{value:.1f} s"


def write_report(result: Result) -> None:
    """report.md, timeline.json and (with matplotlib) report.png in the output directory."""
    if result.output_dir is None:
        return
    out = result.output_dir
    (out / "report.md").write_text(
        f"# Judicator demo: {result.scenario.name}\n\n{result.scenario.title}\n\n"
        + table(result)
        + "\n"
    )
    (out / "timeline.json").write_text(
        json.dumps(
            {
                "scenario": result.scenario.name,
                "events": result.events,
                "thresholds": result.thresholds,
                "series": {f"{r}/{m}": points for (r, m), points in result.series.items()},
                "checks": [c.__dict__ for c in result.checks],
                "error": result.error,
            },
            indent=1,
        )
    )
    if result.settings.plot:
        result.report_png = plot(result, out / "report.png")


def plot(result: Result, path: Path) -> Path | None:
    """Rates over time, the policy thresholds and the moments of firing, throttling and release."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        result.settings.say("(matplotlib is not installed: no PNG; `pip install .[demo]`)")
        return None
    scenario = result.scenario
    roles = _roles(scenario)
    origin = result.events.get("abuse_start") or result.events.get("stack_ready", 0.0)
    panels: list[list[tuple[str, str]]] = []
    if scenario.remediation == "network_shape":
        panels.append([("attacker", "vif_pps"), ("victim", "received_pps")])
    panels.append([("attacker", m) for m in scenario.attacker_measures if m != "sent_pps"])
    others = [("victim", m) for m in scenario.victim_measures if m != "received_pps"]
    panels.append([*others, ("bystander", "interrupts")])
    figure, axes = plt.subplots(len(panels), 1, figsize=(11, 3.2 * len(panels)), sharex=True)
    colours = {"attacker": "tab:red", "victim": "tab:blue", "bystander": "tab:green"}
    styles = ["-", "--", ":"]
    for axis, keys in zip(axes, panels, strict=True):
        for index, (role, measure) in enumerate(keys):
            points = result.series.get((role, measure), [])
            if not points:
                continue
            label = "packets sent/s (vif)" if measure == "vif_pps" else MEASURES[measure].label
            axis.plot(
                [t - origin for t, _ in points],
                [v for _, v in points],
                styles[index % len(styles)],
                color=colours[role],
                label=f"{roles[role]} ({role}): {label}",
            )
            threshold = result.thresholds.get("sent_pps" if measure == "vif_pps" else measure)
            if role == "attacker" and threshold is not None:
                axis.axhline(threshold, color="grey", linestyle="-.", linewidth=1)
                axis.annotate(
                    f"policy threshold {_fmt(threshold)} {label}",
                    (0, threshold),
                    xytext=(4, 3),
                    textcoords="offset points",
                    fontsize=8,
                    color="grey",
                )
        axis.set_yscale("symlog", linthresh=10)
        axis.set_ylim(bottom=0)
        axis.grid(True, alpha=0.3)
        axis.legend(loc="upper right", fontsize=8)
        for event, colour in (
            ("abuse_start", "black"),
            ("firing", "orange"),
            ("throttled", "red"),
            ("abuse_stop", "black"),
            ("resolved", "purple"),
            ("released", "green"),
        ):
            at = result.events.get(event)
            if at is not None:
                axis.axvline(at - origin, color=colour, linestyle="--", linewidth=1)
    for event in ("abuse_start", "firing", "throttled", "abuse_stop", "resolved", "released"):
        at = result.events.get(event)
        if at is not None:
            axes[0].annotate(
                event.replace("_", " "),
                (at - origin, 1),
                xycoords=("data", "axes fraction"),
                rotation=90,
                va="top",
                ha="right",
                fontsize=8,
            )
    axes[-1].set_xlabel("seconds since the abuse started")
    verdict = "victim protected" if result.protected else "victim NOT protected"
    axes[0].set_title(f"Judicator demo: {scenario.title} — {verdict}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


# --- command line ---------------------------------------------------------------------------


@contextlib.contextmanager
def _interrupt_on_sigterm() -> Iterator[None]:
    """SIGTERM (and SIGHUP) unwind like Ctrl-C, so every `finally` takes its part down."""

    def interrupt(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m xensim.demo",
        description="Judicator's published experiment, end to end, on a simulated Xen host.",
    )
    parser.add_argument(
        "--scenario", choices=sorted(SCENARIOS), default="ping-flood", help="the abuse class"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=REPO_ROOT / "demo-output",
        help="where the report and logs go (default %(default)s)",
    )
    parser.add_argument(
        "--baseline", type=float, default=25.0, help="seconds of quiet baseline (default 25)"
    )
    parser.add_argument(
        "--throttled",
        type=float,
        default=20.0,
        help="seconds the abuse goes on once throttled (default 20)",
    )
    parser.add_argument("--hold", type=float, default=5.0, help="remediator hold (default 5 s)")
    parser.add_argument(
        "--dom0-netns",
        action="store_true",
        help="run Dom0 (and the whole stack) in a namespace of its own",
    )
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")
    parser.add_argument("--log-level", default="WARNING", help="DEBUG, INFO, WARNING, ERROR")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="demo: %(levelname)s: %(message)s")
    if os.geteuid() != 0:
        print(
            "the demo must run as root (namespaces, tc, cgroups): sudo make demo", file=sys.stderr
        )
        return 2
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    output = args.output / f"{args.scenario}-{stamp}"
    settings = Settings(
        scenario=SCENARIOS[args.scenario],
        dom0_netns=args.dom0_netns,
        baseline_seconds=args.baseline,
        throttled_seconds=args.throttled,
        hold_seconds=args.hold,
        output_dir=output,
        plot=not args.no_plot,
        say=lambda line: print(line, flush=True),
    )
    try:
        with _interrupt_on_sigterm():
            result = run_experiment(settings)
    except KeyboardInterrupt:
        print("\ninterrupted: everything the demo started has been stopped", file=sys.stderr)
        left = host_leftovers(settings.host_name)
        if left:
            print(f"still present: {', '.join(left)}", file=sys.stderr)
        return 130
    write_report(result)
    print("\n" + table(result))
    print(f"\nReport: {output / 'report.md'}")
    if result.report_png is not None:
        print(f"Plot:   {result.report_png}")
    print(f"Logs:   {output / 'logs'}")
    return 0 if result.protected else 1


if __name__ == "__main__":
    sys.exit(main())
