"""The demo's scenarios (one per abuse class), the rates it measures and what a run records.

`Settings` says how a run goes, `Result` what happened in it (events, series, phase figures,
checks); `xensim.experiment` fills a Result, `xensim.report` prints it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ATTACKER, VICTIM, BYSTANDER = "guest1", "guest2", "guest3"


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
            "instance_domain:domain_network_transmit_packets:rate10s",
            "sent_packets_per_second",
        ),
        Measure(
            "received_pps",
            "packets received/s",
            "instance_domain:domain_network_receive_packets:rate10s",
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
        Measure("cpu", "CPU s/s", "instance_domain:domain_cpu_seconds:rate10s"),
        Measure(
            "page_faults",
            "page faults/s",
            "instance_domain:xen_perfc_page_faults:rate10s",
            "page_faults_per_second",
        ),
        Measure(
            "block_requests",
            "block requests/s",
            "instance_domain:domain_block_requests:rate10s",
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


def role_names(scenario: Scenario) -> dict[str, str]:
    roles = {"attacker": ATTACKER, "bystander": BYSTANDER}
    if scenario.victim:
        roles["victim"] = scenario.victim
    return roles


def role_measures(scenario: Scenario) -> list[tuple[str, str]]:
    pairs = [("attacker", m) for m in scenario.attacker_measures]
    pairs += [("victim", m) for m in scenario.victim_measures]
    pairs += [("bystander", m) for m in ("interrupts", "cpu")]
    return pairs


def fmt(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.1f}"
    return f"{value:.2f}"
