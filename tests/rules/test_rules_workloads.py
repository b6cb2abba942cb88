"""The shipped policies against a simulated Xen host with a real Prometheus.

Every workload of the simulator runs for real in its own guest, several at once, scraped by the
real exporter every second and judged by the shipped rules; each must fire exactly the policies
it should and no others (`firing`, that is: a pending alert is a signal that has not yet held
for its `for:`).

One change to the shipped configuration, and it is the one an operator would make: the CPU-hog
bars (rules/thresholds.yml). The simulated guests share this machine's two real cores with the
rest of the test suite, so a busy loop gets a fifth to a half of a core, not the whole pinned
CPU it would get from Xen; the bars are lowered to what the machine can give. The unit tests
(prometheus/tests/) pin the shipped numbers; this run checks what each policy tells apart.

Phases, one heavy workload each (a flood or the hog takes a whole real core), beside a web
client and server and a bulk transfer that run throughout and must fire nothing.
JUDICATOR_RULES_SOAK_SECONDS sets each phase's length (default 45: about 5.5 minutes in all; the
issue's "a few minutes per workload" is JUDICATOR_RULES_SOAK_SECONDS=300, about 17 minutes).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.services import Prometheus, run_prometheus, wait_until
from tests.support import require_binary, require_root
from xensim import model
from xensim.configs import SIMULATION_INTERVALS
from xensim.stack import SimHost, judicator_sim, run_exporter, simulated_host

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "prometheus" / "rules"
PHASE_SECONDS = float(os.environ.get("JUDICATOR_RULES_SOAK_SECONDS", "45"))
POLL_SECONDS = 2.0
# The longest `for:` among the policies plus the rate window and a margin: by then every
# expected alert fires.
FIRE_WITHIN_SECONDS = 60.0
# What a busy loop gets on this shared two-core machine (see the module docstring).
# The timer bar is the CPU bar seen through the same relation as the shipped pair (an idle CPU's
# timer plus the timer of each busy CPU-second), so that both forms still judge the same hog.
CPU_BAR = 0.12
TEST_CPU_HOG_BARS = {
    "cpu_seconds_per_second_per_vcpu": CPU_BAR,
    "timer_interrupts_per_second_per_vcpu": round(
        model.CPU_BASELINE_PER_SECOND["apic timer interrupts"]
        + CPU_BAR * model.PER_CPU_SECOND["apic timer interrupts"]
    ),
}

# guest -> (workload, target, rate). Guest i is pinned alone to CPU i. One heavy workload per
# phase (a flood or the hog takes a real core), beside the benign ones that run throughout.
Phase = dict[str, tuple[str, str | None, float | None]]
BENIGN: Phase = {
    "guest5": ("web", "guest6", 100),  # a busy client; guest6 runs the web server
    "guest7": ("bulk", "guest8", 20e6),  # 20 MB/s in large packets; guest8 runs the sink
}
PHASES: list[tuple[str, Phase, set[tuple[str, str]]]] = [
    (
        "ping flood",  # guest2 answers every echo: it must not be taken for the attacker
        {"guest1": ("pingflood", "guest2", None), "guest9": ("idle", None, None), **BENIGN},
        {("XenNetworkFloodPerfc", "guest1"), ("XenNetworkFloodVif", "guest1")},
    ),
    (
        # guest4 runs the sink and receives it all. A sender that waits for nothing is never
        # woken (measured on a real Xen, docs/simulator.md): the perf form judges it by the
        # packets behind its interrupts, not by context switches.
        "UDP flood",
        {"guest3": ("udpflood", "guest4", None), **BENIGN},
        {("XenNetworkFloodPerfc", "guest3"), ("XenNetworkFloodVif", "guest3")},
    ),
    (
        "CPU hog on its own CPU",  # harms nobody: not capped (cap for harm, not for use)
        {"guest9": ("cpuhog", None, None), "guest1": ("idle", None, None), **BENIGN},
        set(),
    ),
    (
        "two CPU hogs sharing a CPU",  # guest1 is pinned beside guest9 (SHARED_CPU): both harm
        {"guest9": ("cpuhog", None, None), "guest1": ("cpuhog", None, None), **BENIGN},
        {
            ("XenCpuHogPerfc", "guest9"),
            ("XenCpuHogCpuTime", "guest9"),
            ("XenCpuHogPerfc", "guest1"),
            ("XenCpuHogCpuTime", "guest1"),
        },
    ),
]
# Phases in which a guest's vCPU is moved onto another guest's CPU: phase -> (guest, CPU, home).
SHARED_CPU = {"two CPU hogs sharing a CPU": ("guest1", 9, 1)}


# Shown when a phase fails: the rates the policies judged, per domain.
DIAGNOSTIC_RATES = {
    "interrupts": "instance_domain:xen_perfc_interrupts:rate10s",
    "ctxsw": "instance_domain:xen_perfc_sched_context_switches:rate10s",
    "timer": "instance_domain:xen_perfc_apic_timer_interrupts:rate10s",
    "pagetable": "instance_domain:xen_perfc_page_table_operations:rate10s",
    "sent": "instance_domain:domain_network_transmit_packets:rate10s",
    "received": "instance_domain:domain_network_receive_packets:rate10s",
    "bytes/pkt": "instance_domain:domain_network_transmit_bytes_per_packet:rate10s",
    "initiated": "instance_domain:domain_network_transmit_initiated_packets:rate10s",
    "others": "instance_domain:xen_pcpu_others_share:max",
    "cpu/vcpu": "instance_domain:domain_cpu_seconds_per_vcpu:rate10s",
}


@dataclass
class Observation:
    """What fired during a phase: first and last poll each (alert, domain) was seen firing."""

    first: dict[tuple[str, str], float] = field(default_factory=dict)
    last: dict[tuple[str, str], float] = field(default_factory=dict)
    polls: int = 0
    rates: str = ""


def _rates(prometheus: Prometheus) -> str:
    table: dict[str, dict[str, float]] = {}
    for column, expr in DIAGNOSTIC_RATES.items():
        for labels, value in prometheus.query(expr):
            table.setdefault(labels.get("domain", "?"), {})[column] = value
    lines = ["domain    " + " ".join(f"{c:>10}" for c in DIAGNOSTIC_RATES)]
    for domain in sorted(table):
        row = table[domain]
        lines.append(
            f"{domain:<9} "
            + " ".join(f"{row.get(c, float('nan')):>10.4g}" for c in DIAGNOSTIC_RATES)
        )
    return "\n".join(lines)


# The pulsing forms judge the last two minutes: a phase's flood (or memory churn, or disk
# abuse) is still evidence against its attacker in the next phase until it has left that window.
FLOOD_EVIDENCE = (
    "count_over_time(instance_domain:judicator_network_flood_perfc:active[2m])"
    " or count_over_time(instance_domain:judicator_network_flood_vif:active[2m])"
    " or count_over_time(instance_domain:judicator_memory_abuse_perfc:active[2m])"
    " or count_over_time(instance_domain:judicator_disk_abuse_vbd:active[2m])"
)


def _quiet(prometheus: Prometheus) -> bool:
    """Nothing fires, and no flood is left in the pulsing forms' window."""
    return not _firing(prometheus) and not prometheus.query(FLOOD_EVIDENCE)


def _firing(prometheus: Prometheus) -> set[tuple[str, str]]:
    return {
        (alert["labels"]["alertname"], alert["labels"].get("domain", ""))
        for alert in prometheus.alerts()
        if alert["state"] == "firing"
    }


def _observe(prometheus: Prometheus, seconds: float) -> Observation:
    observation = Observation()
    start = time.monotonic()
    while (elapsed := time.monotonic() - start) < seconds:
        for key in _firing(prometheus):
            observation.first.setdefault(key, elapsed)
            observation.last[key] = elapsed
        observation.polls += 1
        if observation.polls % 10 == 5:
            observation.rates = _rates(prometheus)
        time.sleep(POLL_SECONDS)
    return observation


def _run_phase(host: SimHost, phase: Phase, seconds: float) -> None:
    for guest, (kind, target, rate) in phase.items():
        # The workload outlives the observation a little; the next phase stops it anyway.
        args = ["run", "--name", host.name, guest, kind, "--duration", f"{seconds + 30:g}"]
        if target is not None:
            args += ["--target", target]
        if rate is not None:
            args += ["--rate", f"{rate:g}"]
        judicator_sim(*args)


def _pin(host: SimHost, guest: str, cpu: int) -> None:
    """Hard-pin the guest's only vCPU to `cpu`, as an operator would with xl."""
    subprocess.run(
        [host.env["XENSIM_XL"], "vcpu-pin", guest, "0", str(cpu)],
        check=True,
        capture_output=True,
        timeout=30,
    )


def _stop_all(host: SimHost) -> None:
    for guest in host.guests:
        host.stop_workloads(guest)


def _rules_with_test_bars(directory: Path) -> list[Path]:
    thresholds = yaml.safe_load((RULES / "thresholds.yml").read_text())
    changed = set()
    for group in thresholds["groups"]:
        for rule in group["rules"]:
            labels = rule.get("labels", {})
            if labels.get("policy") == "cpu_hog" and labels["signal"] in TEST_CPU_HOG_BARS:
                rule["expr"] = f"vector({TEST_CPU_HOG_BARS[labels['signal']]})"
                changed.add(labels["signal"])
    assert changed == set(TEST_CPU_HOG_BARS), "the shipped thresholds lost a CPU-hog bar"
    (directory / "thresholds.yml").write_text(yaml.safe_dump(thresholds, sort_keys=False))
    return [directory / "thresholds.yml"] + [
        path for path in sorted(RULES.glob("*.yml")) if path.name != "thresholds.yml"
    ]


@pytest.fixture(scope="module")
def judged_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SimHost, Prometheus]]:
    require_root()
    require_binary("prometheus")
    rules = _rules_with_test_bars(tmp_path_factory.mktemp("rules"))
    name = f"rules{os.getpid() % 100000}"
    sink = f"jdfs{name}"[:15]
    try:
        with (
            simulated_host(name, dom0_netns=False, cpus=10, guests=9) as host,
            run_exporter(
                host.env, extra_args=("--collector.flowdirection", f"--flowdirection.sink={sink}")
            ) as exporter,
        ):
            config = {
                "global": SIMULATION_INTERVALS,
                "scrape_configs": [
                    {"job_name": "xen", "static_configs": [{"targets": [exporter.address]}]}
                ],
            }
            with run_prometheus(config, rule_files=rules) as prometheus:
                wait_until(
                    lambda: prometheus.query('up{job="xen"} == 1'),
                    timeout=30,
                    what="Prometheus to scrape the exporter",
                )
                try:
                    yield host, prometheus
                finally:
                    _stop_all(host)
    finally:
        # The exporter's counting sink device (gone already where tc has act_gact).
        subprocess.run(["ip", "link", "del", sink], capture_output=True, timeout=10)


# A flood that lasts long enough is also a pulse of one: its average over the pulsing forms'
# two minutes passes their bar too, so they may fire beside the constant forms (never alone).
ALSO_PULSING = {
    "XenNetworkFloodPerfc": "XenNetworkFloodPerfcPulsing",
    "XenNetworkFloodVif": "XenNetworkFloodVifPulsing",
    "XenMemoryAbusePerfc": "XenMemoryAbusePerfcPulsing",
    "XenMemoryAbuseBalloon": "XenMemoryAbuseBalloonPulsing",
    "XenDiskAbuseVbd": "XenDiskAbuseVbdPulsing",
}


def _assert_phase(observation: Observation, expected: set[tuple[str, str]], what: str) -> None:
    fired = set(observation.first)
    fired -= {(ALSO_PULSING[name], domain) for name, domain in expected if name in ALSO_PULSING}
    context = f"\nrates during the phase:\n{observation.rates}"
    assert fired - expected == set(), f"{what}: policies fired that should not have{context}"
    assert expected - fired == set(), f"{what}: policies did not fire: {fired=}{context}"
    for key in expected:
        assert observation.first[key] <= FIRE_WITHIN_SECONDS, f"{what}: {key} fired late{context}"
        # Still firing at the end of the phase: the workload is judged for as long as it runs.
        assert observation.last[key] >= PHASE_SECONDS - 3 * POLL_SECONDS, (
            f"{what}: {key} stopped firing at {observation.last[key]:.0f}s{context}"
        )


@pytest.mark.host
@pytest.mark.slow
def test_each_workload_fires_exactly_its_policies(
    judged_host: tuple[SimHost, Prometheus],
) -> None:
    host, prometheus = judged_host
    # A quiet start: nothing fires on idle guests.
    quiet = _observe(prometheus, 20)
    assert not quiet.first, f"policies fired on an idle host: {set(quiet.first)}"
    for number, (what, phase, expected) in enumerate(PHASES):
        if number:
            # keep_firing_for holds the last phase's alerts for a while after it stopped, and the
            # pulsing forms still see its flood for two minutes.
            wait_until(
                lambda: _quiet(prometheus),
                timeout=240,
                what="the policies to resolve and the last flood to leave the two-minute window",
            )
        moved = SHARED_CPU.get(what)
        if moved is not None:
            _pin(host, moved[0], moved[1])
        _run_phase(host, phase, PHASE_SECONDS)
        observation = _observe(prometheus, PHASE_SECONDS)
        _stop_all(host)
        if moved is not None:
            _pin(host, moved[0], moved[2])
        _assert_phase(observation, expected, f"{what} beside web, bulk and idle guests")
