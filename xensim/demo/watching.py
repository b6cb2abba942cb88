"""Watching a running demo: the host's throttles, the vif counters, the alerts, the audit.

`Watcher.poll` tells what changed (alert firing or resolved, throttle applied or released, what
the remediator did) and records the moments in the run's `Result`; `VifSampler` reads the
guests' packet counters from Dom0 (the demo's ground truth, independent of the exporter);
`Progress` prints one line of rates every few seconds.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from xensim.demo.scenarios import (
    ATTACKER,
    MEASURES,
    Result,
    Scenario,
    fmt,
    role_measures,
    role_names,
)
from xensim.services import ServiceError
from xensim.simhost import SimError, SimHost
from xensim.stack import Stack

log = logging.getLogger(__name__)

PROGRESS_SECONDS = 3.0


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
        roles = role_names(self.scenario)
        if self.scenario.remediation == "network_shape":
            parts.append(f"{ATTACKER} sends {fmt(self.vifs.latest(ATTACKER))} pkt/s")
        shown = {m for _, m in role_measures(self.scenario) if m != "sent_pps"}
        values = {m: _instant(self.stack, m) for m in sorted(shown)}
        for role, measure in role_measures(self.scenario):
            if measure == "sent_pps":
                continue
            value = values[measure].get(roles[role])
            parts.append(f"{roles[role]} {fmt(value)} {MEASURES[measure].label}")
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
