"""Running one scenario: a simulated host with its guests, the shipped stack, the workloads.

The host and the stack are xensim's (`judicator-sim up --scenario`, `xensim.stack.run_stack`:
the shipped prometheus.yml, rules, alertmanager.yml and remediator config, rendered for the
run); this module adds the schedule (each workload started at its second), the observation
(Dom0's vif counters and the guests' CPU time once a second, the firing alerts, the
remediator's audit of what it applied) and nothing else. Everything is taken down after each
scenario, also when it fails.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from policylearn.cli import DOMAINS_FILE
from remediator.host import IFB_PREFIX
from xeneval.scenario import Scenario, WorkloadSpec, workload_argv
from xeneval.scoring import GuestSample, RunRecord
from xensim import cgroups, simhost
from xensim.host import HostError, Names, guest_address, start_in_guest
from xensim.stack import (
    SHIPPED_RULES_DIR,
    ServiceError,
    SimError,
    SimHost,
    Stack,
    host_leftovers,
    run_stack,
    wait_until,
)
from xensim.state import StateError, StateStore
from xensim.workloads import MAX_DURATION, NEEDS_SERVER
from xensim.workloads import workload_argv as server_argv

log = logging.getLogger(__name__)

SAMPLE_SECONDS = 1.0
PROGRESS_SECONDS = 5.0
TICK_SECONDS = 0.25
READY_TIMEOUT = 90.0
# Servers start this long before the run, so their clients find them listening.
SERVER_HEADSTART = 1.5
# The remediator's hold after an alert resolves: short, as in the demo.
HOLD_SECONDS = 5.0

Say = Callable[[str], None]


def sim_scenario(scenario: Scenario, host_name: str) -> dict[str, Any]:
    """The judicator-sim scenario file for this scenario's host (guests only, no workloads)."""
    return {
        "name": host_name,
        "cpus": scenario.cpus,
        "dom0_netns": True,
        "guests": [
            {"name": g.name, "cpus": list(g.cpus), "vcpus": g.vcpus, "vifs": g.vifs}
            for g in scenario.guests
        ],
    }


@contextlib.contextmanager
def rules_with_domain_thresholds(thresholds_domains: Path) -> Iterator[Path]:
    """The shipped rules with `thresholds_domains` (a `judicator-policy learn` output, or an
    operator's) in place of the shipped per-domain thresholds, in a scratch folder."""
    with tempfile.TemporaryDirectory(prefix="xeneval-rules-") as scratch:
        rules = Path(scratch) / "rules"
        shutil.copytree(SHIPPED_RULES_DIR, rules)
        shutil.copyfile(thresholds_domains, rules / DOMAINS_FILE)
        yield rules


@contextlib.contextmanager
def simulated_host(scenario: Scenario, host_name: str, log_dir: Path | None) -> Iterator[SimHost]:
    """`judicator-sim up --scenario` a host with the scenario's guests; always `down`."""
    with tempfile.TemporaryDirectory(prefix="xeneval-") as scratch:
        path = Path(scratch) / "host.yaml"
        path.write_text(yaml.safe_dump(sim_scenario(scenario, host_name), sort_keys=False))
        with simhost.simulated_host(
            host_name, dom0_netns=True, scenario=path, log_dir=log_dir
        ) as host:
            yield host


@dataclass
class Launch:
    """One program to start in a guest at `start` seconds into the run."""

    label: str
    guest: str
    kind: str
    start: float
    spec: WorkloadSpec | None  # None for a server started for its clients
    duration: float


def schedule(scenario: Scenario) -> list[Launch]:
    """Every launch of the run in order: each client's server first, then the workloads."""
    launches: list[Launch] = []
    servers: set[tuple[str, str]] = set()
    for spec in scenario.workloads:
        server = NEEDS_SERVER.get(spec.kind)
        if server is None or spec.target is None or (spec.target, server) in servers:
            continue
        servers.add((spec.target, server))
        duration = min(scenario.duration + SERVER_HEADSTART + 5.0, MAX_DURATION)
        launches.append(Launch(f"{spec.target}/{server}", spec.target, server, 0.0, None, duration))
    for index, spec in enumerate(scenario.workloads):
        label = f"{spec.guest}/{spec.kind}#{index}"
        launches.append(Launch(label, spec.guest, spec.kind, spec.start, spec, spec.duration))
    return sorted(launches, key=lambda launch: (launch.start, launch.spec is not None))


class Observer:
    """Reads the host's and the stack's state; each read is cheap enough for once a second."""

    def __init__(self, stack: Stack, store: StateStore, guests: list[str]) -> None:
        self.stack = stack
        self.store = store
        self.guests = guests
        self._audit_seen = 0

    def sample(self) -> dict[str, GuestSample]:
        counters = self.stack.host.link_counters()
        state = self.store.read()
        values = {}
        for name in self.guests:
            guest = self.stack.host.guests[name]
            domain = state.find_domain(name)
            cpu = domain.cpu_time_ns / 1e9 if domain is not None else 0.0
            # Dom0's receive on a vif is what the guest sent; its transmit, what it received.
            sent = sum(counters.get(v, {}).get("rx_packets", 0) for v in guest.interfaces)
            received = sum(counters.get(v, {}).get("tx_packets", 0) for v in guest.interfaces)
            faults = blocks = shaped = shaped_bytes = 0
            if domain is not None:
                faults = cgroups.page_faults(domain.cgroup) if domain.cgroup else 0
                blocks = self._block_requests(domain.domid)
                # What left the remediator's shaping of this domain (its ifbs' transmit).
                ifbs = [c for link, c in counters.items() if owned_ifb(link, domain.domid)]
                shaped = sum(c.get("tx_packets", 0) for c in ifbs)
                shaped_bytes = sum(c.get("tx_bytes", 0) for c in ifbs)
            values[name] = GuestSample(cpu, sent, received, faults, blocks, shaped, shaped_bytes)
        return values

    def _block_requests(self, domid: int) -> int:
        """Reads and writes of the domain's vbd, from the statistics the simulator writes."""
        stats = Path(self.store.dir) / "sysfs/bus/xen-backend/devices"
        total = 0
        for vbd in stats.glob(f"vbd-{domid}-*"):
            for name in ("rd_req", "wr_req"):
                with contextlib.suppress(OSError, ValueError):
                    total += int((vbd / "statistics" / name).read_text())
        return total

    def firing(self) -> set[tuple[str, str]]:
        """(domain, alertname) of every firing policy alert."""
        return {
            (a["labels"]["domain"], a["labels"]["alertname"])
            for a in self.stack.prometheus.alerts()
            if a.get("state") == "firing" and "domain" in a.get("labels", {})
        }

    def applied(self) -> list[tuple[str, str]]:
        """(domain, kind) of every throttle the remediator applied since the last call."""
        audit = self.stack.remediator.audit()
        new = audit[self._audit_seen :]
        self._audit_seen = len(audit)
        return [
            (str(r.get("domain")), str(r.get("kind"))) for r in new if r.get("event") == "applied"
        ]


def owned_ifb(link: str, domid: int) -> bool:
    """Is `link` one of the remediator's ifbs for `domid` (`jifb<domid>`, or the per-vif
    `jifb<domid>.<devid>` of older remediators)?"""
    prefix = f"{IFB_PREFIX}{domid}"
    return link == prefix or link.startswith(prefix + ".")


def _launch(launch: Launch, names: Names, store: StateStore, log_dir: Path, say: Say) -> bool:
    state = store.read()
    spec = launch.spec
    try:
        if spec is None:
            argv = server_argv(launch.kind, duration=launch.duration)
        else:
            target = guest_address(names, state, spec.target) if spec.target else None
            argv = workload_argv(spec, target_address=target)
        with warnings.catch_warnings():
            # start_in_guest leaves the workload running detached and drops its Popen (as the
            # `judicator-sim run` process does on exit); the daemon and `down` reap it.
            warnings.simplefilter("ignore", ResourceWarning)
            start_in_guest(store, launch.guest, launch.kind, argv, log_dir)
    except (HostError, StateError, ValueError, OSError) as error:
        say(f"    !! could not start {launch.label}: {error}")
        return False
    return True


def _due(launch: Launch) -> float:
    """When to start it: servers a head start before their clients."""
    return launch.start - (SERVER_HEADSTART if launch.spec is None else 0.0)


def _drive(stack: Stack, scenario: Scenario, record: RunRecord, say: Say) -> None:
    prometheus = stack.prometheus
    wait_until(
        lambda: any(v == 1 for _, v in prometheus.query('up{job="xen"}')),
        timeout=READY_TIMEOUT,
        what="Prometheus to scrape the exporter",
    )
    # The policies compare each domain with its effective threshold, which the rules resolve
    # every 10 s (rules/thresholds-effective.yml): until then no policy can fire.
    wait_until(
        lambda: prometheus.query("judicator:policy_threshold:effective"),
        timeout=READY_TIMEOUT,
        what="the first evaluation of the shipped rules",
    )
    names = Names.for_host(stack.host.name, dom0_netns=True)
    store = StateStore(names.state_dir)
    logs = names.state_dir / "logs"
    pending = schedule(scenario)
    observer = Observer(stack, store, [g.name for g in scenario.guests])
    window = scenario.attack_window()
    t0 = time.time() + SERVER_HEADSTART
    next_sample = next_progress = t0
    throttled: set[str] = set()
    while True:
        now = time.time()
        rel = now - t0
        if rel >= scenario.duration:
            break
        while pending and pending[0].start <= rel + (
            SERVER_HEADSTART if not pending[0].spec else 0
        ):
            launch = pending.pop(0)
            if _launch(launch, names, store, logs, say):
                record.started[launch.label] = round(max(rel, 0.0), 2)
        if now >= next_sample:
            next_sample += SAMPLE_SECONDS
            try:
                if rel >= 0:
                    record.samples.append((round(rel, 2), observer.sample()))
                for domain, alertname in observer.firing():
                    record.alerts.setdefault(domain, {}).setdefault(alertname, round(rel, 1))
                for domain, kind in observer.applied():
                    record.throttles.setdefault(domain, []).append((round(rel, 1), kind))
                    throttled.add(domain)
            except (ServiceError, SimError, StateError, OSError, ValueError) as error:
                log.warning("observation failed: %s", error)
        if now >= next_progress and rel >= 0:
            next_progress += PROGRESS_SECONDS
            phase = "baseline"
            if window is not None and window[0] <= rel < window[1]:
                phase = "ATTACK"
            elif window is not None and rel >= window[1]:
                phase = "after"
            firing = sorted({f"{a}({d})" for d, names_ in record.alerts.items() for a in names_})
            say(
                f"    +{rel:4.0f}s {phase:<8} firing so far: {', '.join(firing) or '-'};"
                f" throttled: {', '.join(sorted(throttled)) or '-'}"
            )
        time.sleep(TICK_SECONDS)
    _refine_throttle_times(stack, record, t0)


def _refine_throttle_times(stack: Stack, record: RunRecord, t0: float) -> None:
    """The remediator's own applied_at for each throttle (the audit was read once a second)."""
    try:
        rows = stack.remediator.throttles(everything=True)
    except ServiceError as error:
        log.warning("remediator list: %s", error)
        return
    precise: dict[str, list[tuple[float, str]]] = {}
    for row in rows:
        applied = row.get("applied_at")
        if not isinstance(applied, int | float) or applied < 1e9:
            continue
        kind = str((row.get("action") or {}).get("kind", "?"))
        precise.setdefault(str(row.get("domain")), []).append((round(applied - t0, 1), kind))
    for domain, times in precise.items():
        record.throttles[domain] = sorted(times)


def run_scenario(
    scenario: Scenario,
    *,
    host_name: str,
    log_dir: Path | None,
    say: Say,
    rules_dir: Path = SHIPPED_RULES_DIR,
) -> RunRecord:
    """Run one scenario end to end and return what was observed (never raises for a failure
    of the run itself: it is recorded in `error`). Prometheus loads the rules in `rules_dir`."""
    record = RunRecord(scenario=scenario.name)
    started = time.monotonic()
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
    try:
        with (
            simulated_host(scenario, host_name, log_dir) as host,
            run_stack(
                host, hold_seconds=HOLD_SECONDS, log_dir=log_dir, rules_dir=rules_dir
            ) as stack,
        ):
            _drive(stack, scenario, record, say)
    except (ServiceError, SimError, HostError, StateError, TimeoutError, OSError) as error:
        record.error = f"{type(error).__name__}: {error}"
        say(f"    !! {record.error}")
    finally:
        left = host_leftovers(host_name)
        if left:
            record.error = (record.error or "") + f" leftovers: {', '.join(left)}"
    record.wall_seconds = time.monotonic() - started
    return record
