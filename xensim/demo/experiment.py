"""The published experiment on a simulated Xen host, run and judged.

A host shaped like the paper's (4 physical CPUs, Domain-0 on CPU 0, guest1..3 pinned one per
CPU), the real exporter, Prometheus with the shipped rules, Alertmanager with the shipped
routing and the remediator with the shipped config, all started and stopped here. Then:

1. baseline: every guest quiet until the rates settle;
2. abuse: guest1 attacks (ping -f to guest2 in the published experiment);
3. the policy fires, Alertmanager delivers it, the remediator throttles guest1;
4. the abuse goes on, throttled: its rates fall, guest2's load falls, guest3 is untouched;
5. the abuse stops, the alert resolves, after the hold the throttle is released.

`run_experiment` returns a `Result` with every check and its figures; `make demo`
(`xensim.demo`) and `tests/e2e/` run it with different settings.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from xensim.demo.scenarios import (
    ATTACKER,
    BYSTANDER,
    MEASURES,
    PHASE_TITLES,
    PHASES,
    Check,
    Result,
    Settings,
    fmt,
    role_measures,
    role_names,
)
from xensim.demo.watching import Progress, VifSampler, Watcher
from xensim.poll import wait_until
from xensim.services import ServiceError
from xensim.simhost import SimError, host_leftovers, simulated_host
from xensim.stack import Stack, run_stack

log = logging.getLogger(__name__)

RATE_WINDOW_SECONDS = 5.0  # the recording rules' rate window: a phase's figures start after it
POLL_SECONDS = 0.5
# A rate that moves less than this between phases is noise, whatever its relative change.
ABSOLUTE_NOISE = {"interrupts": 40.0, "cpu": 0.05, "received_pps": 20.0, "sent_pps": 20.0}
RELATIVE_NOISE = 0.35


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

    def step() -> bool:
        try:
            watcher.poll()
        except (ServiceError, SimError, OSError, ValueError) as error:
            log.debug("poll failed: %s", error)
        progress.maybe(phase, say)
        return until()

    try:
        wait_until(step, timeout=timeout, what=what, interval=POLL_SECONDS, retry_on=())
    except TimeoutError as error:
        raise Timeout(str(error)) from None


def _drive(stack: Stack, settings: Settings, result: Result) -> None:
    scenario, say, events = settings.scenario, settings.say, result.events
    host = stack.host
    with VifSampler(host) as vifs:
        watcher = Watcher(stack, scenario, result, say)
        progress = Progress(stack, scenario, vifs, watcher)

        def run_phase(phase: str, until: Callable[[], bool], *, timeout: float, what: str) -> None:
            _run_phase(
                until,
                timeout=timeout,
                what=what,
                phase=phase,
                watcher=watcher,
                progress=progress,
                say=say,
            )

        def keep_watching(phase: str, seconds: float, what: str) -> None:
            end = time.monotonic() + seconds
            run_phase(phase, lambda: time.monotonic() >= end, timeout=seconds + 5, what=what)

        try:
            events["stack_ready"] = time.time()
            say(f"\nPhase 1: quiet baseline, {settings.baseline_seconds:.0f} s")
            keep_watching("baseline", settings.baseline_seconds, "baseline")
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
            run_phase(
                "abuse",
                lambda: "firing" in events and "throttled" in events,
                timeout=settings.detect_timeout,
                what=f"the {scenario.policy} policy firing and {scenario.remediation} applied",
            )
            say(f"\nPhase 4: the abuse goes on, throttled, for {settings.throttled_seconds:.0f} s")
            keep_watching("throttled", settings.throttled_seconds, "throttled phase")
            host.stop_workloads(ATTACKER)
            events["abuse_stop"] = time.time()
            say(
                "\nPhase 5: the abuse stopped; waiting for the alert to resolve"
                f" (keep_firing_for) and the release after the {settings.hold_seconds:g} s hold"
            )
            run_phase(
                "after",
                lambda: "released" in events and not watcher.firing,
                timeout=settings.resolve_timeout,
                what="the alert resolved and the throttle released",
            )
            keep_watching("after", settings.after_release_seconds, "after release")
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
    roles = role_names(scenario)
    for measure in sorted({m for _, m in role_measures(scenario)}):
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
    return abs(now - before) <= limit, f"{fmt(before)} -> {fmt(now)} (noise limit ±{fmt(limit)})"


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
            f"{fmt(before)} -> {fmt(after)} ({factor})",
        )
    )
    if scenario.victim:
        v_before = result.phase_value("abuse", "victim", "interrupts")
        v_after = result.phase_value("throttled", "victim", "interrupts")
        checks.append(
            Check(
                f"{scenario.victim}'s load fell",
                v_before is not None and v_after is not None and v_after * 2 <= v_before,
                f"interrupts/s {fmt(v_before)} -> {fmt(v_after)}",
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
            f"resolved {fmt(result.since_start('resolved'))} s, released"
            f" {fmt(result.since_start('released'))} s after the abuse started",
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
