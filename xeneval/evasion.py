"""The evasion report: what rhythm and what rate of abuse the SHIPPED policies never throttle.

Real traffic is slow and noisy for this (a 2-minute run per point); the rules themselves are
exact and cheap to evaluate. So each abuse has a synthetic profile: what one guest does each
second (CPU it wants, packets it sends and receives, faults, block requests, memory growth),
turned into the exporter's series with the simulator's calibrated counter model
(xensim/model.py, docs/simulator.md: an idle CPU's and an idle domain's rates, per busy
CPU-second, per packet sent and per packet received, per page fault), and `promtool test
rules` evaluates the shipped rule files (prometheus/rules/*.yml, unchanged, thresholds read from
them) over it at Prometheus's 1 s evaluation interval, `for:` and `keep_firing_for` as shipped.

Every alert the rules send to the remediator (`severity: remediate`) is judged, alone and with
the other forms of its policy: per evidence (`perf_counters`: what a host with perf counters
runs, `stock`: a distribution hypervisor) and all together (`any`): the remediator throttles a
guest whichever alert fires, so a form's gap only matters where no other form covers it.

- pulsing: the abuse pulsed at PEAK_FACTORS x the policy's threshold (10x, and 1.25x: just
  above it; never more than the abuse can do, e.g. a CPU hog at one full CPU), on for duty x
  period of every period, for ATTACK_SECONDS, for periods of 2 to 60 s. Reported per period,
  peak and form: the largest duty never throttled and the smallest throttled, bisected to
  1/64, and what that duty averages (duty x peak, in thresholds).
- sustained: the abuse held constant; reported: the highest rate never throttled and the
  lowest throttled, bisected between 0 and 3 x the threshold to 3/64 of it.
- latency: constant abuse at 1.25x, 3x and 10x the threshold; seconds from its start to the
  alert firing, against the alert's `for:` + 2 s.

CPU hogs are judged where it matters (the policies cap for harm, not for use): next to a light
neighbour on the same physical CPU (it asks for 10 % of it), next to a busier one (30 %: once
the CPU is full the hog gets 70 % and the neighbour waits; the contention form, from the CPU's
idle time, judges it), next to one that wants the whole CPU too (credit2 gives each half: an
equal split, never to be capped), and alone on a CPU of its own (never to be capped).

Bisection assumes that more abuse is never less visible (a larger duty at the same period and
peak, a higher constant rate): true of threshold rules on rates, which these policies are.

One promtool run per round holds every case (each on a host of its own, its `instance`; one
`alert_rule_test` per evaluation time expecting no alert); the alerts promtool reports instead
are the ones that fired. A profile is only as good as the counter model it comes from: the
harness's real-traffic scenarios confirm a few points.
"""

from __future__ import annotations

import concurrent.futures
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from exporter.perfc import metric_name
from xensim import model

RULES_DIR = Path(__file__).resolve().parents[1] / "prometheus" / "rules"
THRESHOLDS_GROUP = "judicator-policy-thresholds"
THRESHOLD_SERIES = "judicator:policy_threshold:constant"
PROMTOOL = "promtool"
PROMTOOL_TIMEOUT = 900.0

WARMUP_SECONDS = 12
# Longer than the pulsing forms' two-minute window, so that they judge two full minutes of
# pulses at several phases.
ATTACK_SECONDS = 150
CHECK_EVERY = 5
TAIL_SECONDS = 10
PEAK_FACTORS = (10.0, 1.25)
PERIODS = (2.0, 5.0, 10.0, 14.0, 20.0, 30.0, 60.0)
# Sustained rates are searched between these multiples of the threshold.
RATE_RANGE = (0.0, 3.0)
# Each round halves the bracket: 6 rounds give duty to 1/64 and rate to 3/64 of a threshold.
BISECT_ROUNDS = 6
# Constant abuse at these multiples of the threshold: seconds to the alert.
LATENCY_FACTORS = (1.25, 3.0, 10.0)
LATENCY_SECONDS = 75
# The goals of issue 17: a duty cycle of this much or more over two minutes is throttled (at
# the largest peak), constant abuse within `for:` + this many seconds.
GOAL_DUTY = 0.25
GOAL_LATENCY_SLACK = 2.0
JOBS = 2

JOB = "xen"
GUEST = "abuser"
NEIGHBOUR = "neighbour"
CPU = "1"
ANY = "any"


class EvasionError(RuntimeError):
    """promtool is missing, the rules lack what a profile needs, or promtool failed for another
    reason than an alert that fired."""


Key = tuple[str, tuple[tuple[str, str], ...]]
Sample = dict[Key, float]


def _key(metric: str, **labels: str) -> Key:
    return metric, tuple(sorted(labels.items()))


# ── The counter model (docs/simulator.md) ───────────────────────────────────────────────────


@dataclass(frozen=True)
class Activity:
    """What one guest does in one second."""

    cpu: float = 0.0  # CPU it wants, seconds per second of its one vCPU
    sent: float = 0.0  # packets (Dom0's rx on its vif)
    sent_bytes: float = 0.0
    received: float = 0.0
    received_bytes: float = 0.0
    requests: float = 0.0  # sent packets that open an exchange (echo requests, SYNs)
    faults: float = 0.0
    block_requests: float = 0.0
    block_bytes: float = 0.0
    memory_growth: float = 0.0  # bytes per second


# The per-CPU counters the policies read, each from the simulator's calibrated model
# (xensim/model.py: an idle CPU, each running domain, each CPU-second burnt, each packet sent or
# received, each page fault), so that the profiles and the simulated host agree.
MODELLED_COUNTERS = (
    "#interrupts",
    "apic timer interrupts",
    "sched: context switches",
    "page faults",
    "calls to mmu_update",
    "calls to mmuext_op",
    "calls to update_va_map",
)
# Block I/O is not in the simulator's per-CPU model (a simulated guest's disk shows in its vbd
# statistics only): the backends' grant copies and the guest's completions are this harness's
# own assumption.
GRANT_OPS_PER_BLOCK_REQUEST = 12.0
PER_BLOCK_REQUEST = {"#interrupts": 1.0, "sched: context switches": 1.0}
MEMORY_START = 512 * 1024 * 1024


def cpu_split(want: float, neighbour: float) -> tuple[float, float]:
    """What two vCPUs on one physical CPU get of it (credit2, equal weights): each what it
    wants while both fit; otherwise one that wants less than half keeps it, else half each."""
    if want + neighbour <= 1.0:
        return want, neighbour
    if neighbour <= 0.5:
        return 1.0 - neighbour, neighbour
    if want <= 0.5:
        return want, 1.0 - want
    return 0.5, 0.5


def host_sample(act: Activity, neighbour: float | None) -> tuple[Sample, Sample]:
    """(counter increments, gauge values) of one second: the guest on CPU 1, with a neighbour
    wanting `neighbour` of that CPU (None: the guest has it to itself)."""
    want = min(1.0, act.cpu)
    got, other = cpu_split(want, neighbour or 0.0)
    packets = act.sent + act.received
    domains = {GUEST: got} | ({NEIGHBOUR: other} if neighbour is not None else {})
    busy = sum(domains.values())
    cpu = {"cpu": CPU}
    per_cpu = {
        f"{metric_name(counter)}_total": model.CPU_BASELINE_PER_SECOND.get(counter, 0.0)
        + model.DOMAIN_BASELINE_PER_SECOND.get(counter, 0.0) * len(domains)
        + model.PER_CPU_SECOND.get(counter, 0.0) * busy
        + model.GUEST_PER_SENT_PACKET.get(counter, 0.0) * act.sent
        + model.GUEST_PER_RECEIVED_PACKET.get(counter, 0.0) * act.received
        + model.PER_PAGE_FAULT.get(counter, 0.0) * act.faults
        + PER_BLOCK_REQUEST.get(counter, 0.0) * act.block_requests
        for counter in MODELLED_COUNTERS
    }
    counters = {_key(metric, **cpu): value for metric, value in per_cpu.items()}
    vif = {"domain": GUEST, "interface": "vif1.0"}
    vbd = {"domain": GUEST, "device": "xvda"}
    counters |= {
        _key("xen_domain_network_transmit_packets_total", **vif): act.sent,
        _key("xen_domain_network_transmit_bytes_total", **vif): act.sent_bytes,
        _key("xen_domain_network_receive_packets_total", **vif): act.received,
        _key("xen_domain_network_receive_bytes_total", **vif): act.received_bytes,
        _key("xen_domain_network_transmit_flow_packets_total", packet="echo_request", **vif): (
            act.requests
        ),
        _key("xen_domain_block_read_requests_total", **vbd): act.block_requests / 2,
        _key("xen_domain_block_write_requests_total", **vbd): act.block_requests / 2,
        _key("xen_domain_block_read_bytes_total", **vbd): act.block_bytes / 2,
        _key("xen_domain_block_written_bytes_total", **vbd): act.block_bytes / 2,
        _key("xen_perfc_hypercalls_total", hypercall="grant_table_op", index="20"): (
            GRANT_OPS_PER_BLOCK_REQUEST * act.block_requests
            + model.HYPERCALLS_PER_SENT_PACKET[model.HYPERCALL_GRANT_TABLE_OP] * act.sent
            + model.HYPERCALLS_PER_RECEIVED_PACKET[model.HYPERCALL_GRANT_TABLE_OP] * act.received
        ),
        # Not a counter, but it only grows here: its increments are the growth.
        _key("xen_domain_memory_bytes", domain=GUEST): act.memory_growth,
    }
    # The CPU's idle time (xc_getcpuinfo): what it did not deliver; none once saturated.
    delivered = busy + model.GUEST_CPU_BASELINE * len(domains)
    counters[_key("xen_pcpu_idle_seconds_total", **cpu)] = max(0.0, 1.0 - delivered)
    gauges: Sample = {}
    for name, share in domains.items():
        extra = model.GUEST_CPU_PER_PACKET * packets if name == GUEST else 0.0
        own = model.GUEST_CPU_BASELINE + share
        counters[_key("xen_domain_cpu_seconds_total", domain=name)] = own + extra
        gauges[_key("xen_domain_vcpus", domain=name)] = 1.0
        ratio = own / delivered
        gauges[_key("xen_pcpu_domain_share_ratio", domain=name, **cpu)] = round(ratio, 6)
    return counters, gauges


# ── The abuses ──────────────────────────────────────────────────────────────────────────────

ETHERNET_IP_UDP = 14 + 20 + 8
FULL_FRAME = 1514


def ping_flood(pps: float) -> Activity:
    """`ping -f`: echo requests (98-byte frames) answered by as many replies; the sender spins."""
    return Activity(
        cpu=0.01 + pps / 40_000,
        sent=pps,
        sent_bytes=98 * pps,
        received=pps,
        received_bytes=98 * pps,
        requests=pps,
    )


def udp_flood(payload: int, pad_every: int = 0) -> Callable[[float], Activity]:
    """Datagrams of `payload` bytes, every `pad_every`th one full-sized; nothing comes back."""

    def activity(pps: float) -> Activity:
        small = ETHERNET_IP_UDP + payload
        mean = small if not pad_every else ((pad_every - 1) * small + FULL_FRAME) / pad_every
        return Activity(cpu=0.01 + pps / 40_000, sent=pps, sent_bytes=mean * pps)

    return activity


def cpu_hog(cpu: float) -> Activity:
    return Activity(cpu=cpu)


def memory_abuse(faults: float) -> Activity:
    """Touching fresh pages: `faults` a second, busy doing it."""
    return Activity(cpu=0.9, faults=faults)


def balloon(growth: float) -> Activity:
    """Claiming host memory through the balloon at `growth` bytes a second."""
    return Activity(cpu=0.05, memory_growth=growth)


def disk_abuse(requests: float) -> Activity:
    """4 KiB block requests, `requests` a second."""
    return Activity(cpu=0.3, block_requests=requests, block_bytes=4096 * requests)


@dataclass(frozen=True)
class Profile:
    name: str
    policy: str  # the `policy` label of the alerts that judge it
    description: str
    unit: str
    signal: str  # the threshold (policy, signal) its rate is measured against
    activity: Callable[[float], Activity]
    neighbour: float | None = None  # what a neighbour on its CPU wants of it
    most: float | None = None  # the most the abuse can do (a CPU hog: one CPU)
    expect: str = "throttled"  # "spared": abuse that harms nobody, never to be throttled

    def peaks(self, threshold: float) -> list[float]:
        peaks = {round(min(self.most or float("inf"), f * threshold), 6) for f in PEAK_FACTORS}
        return sorted(peaks, reverse=True)


PROFILES = (
    Profile(
        "ping_flood", "network_flood", "ping -f (98-byte echo requests, replies back)",
        "echo requests/s", "sent_packets_per_second", ping_flood,
    ),
    Profile(
        "udp_flood", "network_flood", "64-byte UDP datagrams, nothing back",
        "packets/s sent", "sent_packets_per_second", udp_flood(64),
    ),
    Profile(
        "udp_flood_padded", "network_flood", "64-byte UDP datagrams, every 5th one 1472 bytes",
        "packets/s sent", "sent_packets_per_second", udp_flood(64, pad_every=5),
    ),
    Profile(
        "udp_flood_mtu", "network_flood", "1472-byte UDP datagrams (full-sized frames)",
        "packets/s sent", "sent_packets_per_second", udp_flood(1472),
    ),
    Profile(
        "cpu_hog", "cpu_hog", "a CPU hog on a physical CPU a neighbour wants 10 % of",
        "CPU s/s it wants", "cpu_seconds_per_second_per_vcpu", cpu_hog,
        neighbour=0.1, most=1.0,
    ),
    Profile(
        "cpu_hog_busy_neighbour", "cpu_hog",
        "a CPU hog on a physical CPU a neighbour wants 30 % of (once it is full, the hog gets "
        "70 % and the neighbour waits)",
        "CPU s/s it wants", "cpu_seconds_per_second_per_vcpu", cpu_hog,
        neighbour=0.3, most=1.0,
    ),
    Profile(
        "cpu_hog_equal_neighbour", "cpu_hog",
        "a CPU-bound guest on a physical CPU a neighbour wants all of too (credit2: half each, "
        "an equal split takes nothing from anyone)",
        "CPU s/s it wants", "cpu_seconds_per_second_per_vcpu", cpu_hog,
        neighbour=1.0, most=1.0, expect="spared",
    ),
    Profile(
        "cpu_hog_dedicated", "cpu_hog", "a CPU hog alone on its physical CPU (harms nobody)",
        "CPU s/s it wants", "cpu_seconds_per_second_per_vcpu", cpu_hog,
        most=1.0, expect="spared",
    ),
    Profile(
        "memory_abuse", "memory_abuse", "touching fresh pages (page faults, mmu_update)",
        "page faults/s", "page_faults_per_second", memory_abuse,
    ),
    Profile(
        "balloon", "memory_abuse", "growing its memory through the balloon",
        "bytes/s of growth", "memory_growth_bytes_per_second", balloon,
    ),
    Profile(
        "disk_abuse", "disk_abuse", "4 KiB block requests",
        "block requests/s", "block_requests_per_second", disk_abuse,
    ),
)  # fmt: skip


# ── The shipped rules ───────────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class Rules:
    files: list[str]
    groups: list[str]
    thresholds: dict[tuple[str, str], float]
    # alert -> its labels and `for:` in seconds, for every alert sent to the remediator
    alerts: dict[str, dict[str, Any]] = field(default_factory=dict)

    def forms(self, policy: str) -> dict[str, tuple[str, ...]]:
        """Every judgement of a policy: each alert alone, each evidence's alerts together,
        and all of them (ANY)."""
        mine = [a for a, v in self.alerts.items() if v["labels"].get("policy") == policy]
        forms: dict[str, tuple[str, ...]] = {a: (a,) for a in mine}
        for evidence in sorted({self.alerts[a]["labels"].get("evidence", "") for a in mine}):
            together = tuple(
                a for a in mine if self.alerts[a]["labels"].get("evidence") == evidence
            )
            if len(together) > 1:
                forms[f"{evidence} forms"] = together
        if mine:
            forms[ANY] = tuple(mine)
        return forms


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def seconds(duration: str) -> float:
    """A Prometheus/Go duration (`15s`, `1m30s`, `2m`, `500ms`) in seconds."""
    total, end = 0.0, 0
    for match in _DURATION.finditer(duration):
        if match.start() != end:
            break
        total += float(match.group(1)) * _UNIT[match.group(2)]
        end = match.end()
    if end != len(duration) or not duration:
        raise ValueError(f"not a duration: {duration!r}")
    return total


_VECTOR = re.compile(r"^\s*vector\(\s*([0-9.eE+-]+)\s*\)\s*$")


# The forms that read another platform's counters (the KVM forms, docs/kvm.md): the profiles
# here are a simulated Xen host's series, on which those never have anything to judge. Known
# by their evidence (kvm_stats: KVM's own statistics) or, for a KVM form on what every KVM
# host has (evidence stock: KvmCpuHogCpuTime reads vCPU threads' waits), by their name: an
# alert of one platform only is named after it (the neutral ones kept their Xen names).
OTHER_PLATFORMS_EVIDENCE = frozenset({"kvm_stats"})
OTHER_PLATFORMS_PREFIX = "Kvm"


def load_rules(rules_dir: Path = RULES_DIR) -> Rules:
    """The shipped rule files, their groups (thresholds first), the thresholds' numbers and
    the alerts that remediate on a Xen host (the other platforms' forms left out)."""
    files = sorted(str(p) for p in rules_dir.glob("*.yml"))
    groups: list[str] = []
    thresholds: dict[tuple[str, str], float] = {}
    alerts: dict[str, dict[str, Any]] = {}
    for path in files:
        for group in (yaml.safe_load(Path(path).read_text()) or {}).get("groups", []):
            groups.append(group["name"])
            for rule in group.get("rules", []):
                labels = rule.get("labels") or {}
                if rule.get("record") == THRESHOLD_SERIES:
                    match = _VECTOR.match(str(rule.get("expr", "")))
                    if match:
                        thresholds[(labels.get("policy", ""), labels.get("signal", ""))] = float(
                            match.group(1)
                        )
                elif (
                    "alert" in rule
                    and labels.get("severity") == "remediate"
                    and labels.get("evidence") not in OTHER_PLATFORMS_EVIDENCE
                    and not rule["alert"].startswith(OTHER_PLATFORMS_PREFIX)
                ):
                    alerts[rule["alert"]] = {
                        "labels": dict(labels),
                        "for": seconds(str(rule.get("for", "0s"))),
                        "keep_firing_for": seconds(str(rule.get("keep_firing_for", "0s"))),
                    }
    groups.sort(key=lambda g: g != THRESHOLDS_GROUP)
    return Rules(files, groups, thresholds, alerts)


def threshold(rules: Rules, profile: Profile) -> float:
    try:
        return rules.thresholds[(profile.policy, profile.signal)]
    except KeyError:
        raise EvasionError(
            f"profile {profile.name}: no threshold {profile.policy}/{profile.signal} in the rules"
        ) from None


def uncovered_alerts(rules: Rules, profiles: Iterable[Profile] = PROFILES) -> list[str]:
    """Alerts that remediate but that no profile exercises (a new policy needs a profile)."""
    policies = {p.policy for p in profiles}
    return sorted(a for a, v in rules.alerts.items() if v["labels"].get("policy") not in policies)


# ── Series and promtool ─────────────────────────────────────────────────────────────────────


def on_fraction(second: int, *, start: int, duty: float, period: float) -> float:
    """How much of [second, second + 1) lies in an on-phase of the pulse train from `start`."""
    if second < start:
        return 0.0
    total = 0.0
    lo, hi = float(second - start), float(second - start + 1)
    k = int(lo // period)
    while k * period < hi:
        on_lo, on_hi = k * period, k * period + duty * period
        total += max(0.0, min(hi, on_hi) - max(lo, on_lo))
        k += 1
    return min(1.0, total)


def _runs(values: Sequence[float]) -> str:
    parts = []
    i = 0
    while i < len(values):
        j = i
        step = values[i + 1] - values[i] if i + 1 < len(values) else 0.0
        while j + 1 < len(values) and abs((values[j + 1] - values[j]) - step) < 1e-9:
            j += 1
        # promtool writes a falling run as `a-bxn` (never `a+-bxn`).
        sign = "-" if step < 0 else "+"
        parts.append(f"{values[i]:.6g}{sign}{abs(step):.6g}x{j - i}")
        i = j + 1
    return " ".join(parts)


def series_values(increments: Sequence[float], start: float = 0.0) -> str:
    """Cumulative values from per-second increments, in promtool's compact `a+bxn` runs."""
    values = [start]
    for inc in increments:
        values.append(values[-1] + inc)
    return _runs(values)


def gauge_values(values: Sequence[float]) -> str:
    """A gauge's value each second (the first repeated at time 0), as promtool runs."""
    return _runs([values[0], *values] if values else [0.0])


def _selector(key: Key, instance: str) -> str:
    metric, labels = key
    every = {"instance": instance, "job": JOB, **dict(labels)}
    return metric + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(every.items())) + "}"


def case_series(instance: str, profile: Profile, rates: Sequence[float]) -> list[dict[str, str]]:
    """The input series of one case: the guest at `rates[t]` each second, alone (with its
    neighbour) on a host of its own (`instance`), so that cases never meet in a rule."""
    seconds_ = [host_sample(profile.activity(r), profile.neighbour) for r in rates]
    series = []
    for key in sorted(seconds_[0][0]):
        start = MEMORY_START if key[0] == "xen_domain_memory_bytes" else 0.0
        values = series_values([s[0].get(key, 0.0) for s in seconds_], start)
        series.append({"series": _selector(key, instance), "values": values})
    for key in sorted(seconds_[0][1]):
        values = gauge_values([s[1].get(key, 0.0) for s in seconds_])
        series.append({"series": _selector(key, instance), "values": values})
    return series


# promtool's report of a failed check: the alert, the time, and the alerts it got instead.
_FAILED_CHECK = re.compile(
    r"alertname: (\S+?), time: (\S+?),\s*\n\s*exp:.*?got:\[(.*?)\n\s*\]", re.S
)
_LABELS = re.compile(r"Labels:\{([^}]*)\}")
_PAIR = re.compile(r'(\w+)="([^"]*)"')


def parse_fired(output: str, cases: Iterable[str]) -> dict[str, dict[str, float]]:
    """From promtool's failures: case -> {alert: the first check time it was seen firing};
    alerts about another domain than the guest (its neighbour) are not the guest's."""
    fired: dict[str, dict[str, float]] = {name: {} for name in cases}
    for alert, when, got in _FAILED_CHECK.findall(output):
        for labels in _LABELS.findall(got):
            pairs = dict(_PAIR.findall(labels))
            instance = pairs.get("instance")
            if instance in fired and pairs.get("domain") == GUEST:
                at = seconds(when)
                fired[instance][alert] = min(at, fired[instance].get(alert, at))
    return fired


def promtool_fired(
    profile: Profile,
    cases: Mapping[str, Sequence[float]],
    rules: Rules,
    alerts: Sequence[str],
    *,
    every: int = CHECK_EVERY,
) -> dict[str, dict[str, float]]:
    """Evaluate the shipped rules over every case at once with promtool (one test, each case a
    host of its own, `rates` per second); return case -> {alert: first time seen firing}."""
    promtool = shutil.which(PROMTOOL)
    if promtool is None:
        raise EvasionError("needs promtool on PATH (`make deps` installs prometheus)")
    length = max(len(x) for x in cases.values())
    input_series = []
    for name, rates in cases.items():
        padded = [*rates, *([0.0] * (length - len(rates)))]
        input_series += case_series(name, profile, padded)
    checks = [
        {"eval_time": f"{t}s", "alertname": alert, "exp_alerts": []}
        for t in range(every, length, every)
        for alert in alerts
    ]
    test = {
        "name": profile.name,
        "interval": "1s",
        "input_series": input_series,
        "alert_rule_test": checks,
    }
    document = {
        "rule_files": rules.files,
        "evaluation_interval": "1s",
        "group_eval_order": rules.groups,
        "tests": [test],
    }
    with tempfile.TemporaryDirectory(prefix="xeneval-evasion-") as scratch:
        path = Path(scratch) / "evasion_test.yml"
        path.write_text(yaml.safe_dump(document, sort_keys=False, width=1 << 20))
        try:
            result = subprocess.run(
                [promtool, "test", "rules", str(path)],
                capture_output=True,
                text=True,
                timeout=PROMTOOL_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise EvasionError(f"promtool: {error}") from error
    output = result.stdout + result.stderr
    fired = parse_fired(output, cases)
    # A failure that names no alert (a parse error of the series, a rule that cannot load) is
    # not "nothing fired": every case of the run would read as quiet.
    if result.returncode != 0 and "alertname:" not in output:
        raise EvasionError(f"promtool failed without an alert to show:\n{output[-2000:]}")
    return fired


# ── The searches ────────────────────────────────────────────────────────────────────────────


def pulse_rates(peak: float, period: float, duty: float) -> list[float]:
    length = WARMUP_SECONDS + ATTACK_SECONDS + TAIL_SECONDS
    return [
        peak * on_fraction(t, start=WARMUP_SECONDS, duty=duty, period=period)
        if t < WARMUP_SECONDS + ATTACK_SECONDS
        else 0.0
        for t in range(length)
    ]


def steady_rates(rate: float, attack: int = ATTACK_SECONDS) -> list[float]:
    length = WARMUP_SECONDS + attack + TAIL_SECONDS
    return [rate if WARMUP_SECONDS <= t < WARMUP_SECONDS + attack else 0.0 for t in range(length)]


@dataclass
class Bracket:
    """What bisection knows of one form and one search: quiet at `lo`, fired at `hi`."""

    lo: float
    hi: float
    hi_fired: bool | None = None

    def mid(self) -> float:
        return (self.lo + self.hi) / 2


@dataclass(frozen=True)
class Search:
    """One bisection: a pulse train (peak, period; x = duty) or a constant rate (x = factor)."""

    name: str
    peak: float | None = None
    period: float | None = None

    def rates(self, x: float, bar: float) -> list[float]:
        if self.peak is None or self.period is None:
            return steady_rates(x * bar)
        return pulse_rates(self.peak, self.period, x)


def _fired(alerts_fired: Mapping[str, float], form: Sequence[str]) -> bool:
    return any(a in alerts_fired for a in form)


def bisect(
    profile: Profile,
    rules: Rules,
    forms: Mapping[str, tuple[str, ...]],
    searches: Sequence[Search],
    bar: float,
    run: Callable[..., dict[str, dict[str, float]]] = promtool_fired,
) -> dict[tuple[str, str], Bracket]:
    """Bisect every (form, search) at once; BISECT_ROUNDS runs after one that checks the
    upper ends (a search whose upper end never fires stops there)."""
    alerts = sorted({a for form in forms.values() for a in form})
    brackets = {
        (form, s.name): Bracket(*RATE_RANGE) if s.peak is None else Bracket(0.0, 1.0)
        for form in forms
        for s in searches
    }
    by_name = {s.name: s for s in searches}
    cases = {
        f"{s.name}-hi": s.rates(brackets[(next(iter(forms)), s.name)].hi, bar) for s in searches
    }
    fired = run(profile, cases, rules, alerts)
    for (form, name), bracket in brackets.items():
        bracket.hi_fired = _fired(fired[f"{name}-hi"], forms[form])
    for _ in range(BISECT_ROUNDS):
        wanted = {
            f"{name}-{b.mid():.6f}": (name, b.mid())
            for (_, name), b in brackets.items()
            if b.hi_fired
        }
        if not wanted:
            break
        cases = {n: by_name[name].rates(x, bar) for n, (name, x) in wanted.items()}
        fired = run(profile, cases, rules, alerts)
        for (form, name), bracket in brackets.items():
            if not bracket.hi_fired:
                continue
            mid = bracket.mid()
            if _fired(fired[f"{name}-{mid:.6f}"], forms[form]):
                bracket.hi = mid
            else:
                bracket.lo = mid
    return brackets


def latency(
    profile: Profile,
    rules: Rules,
    forms: Mapping[str, tuple[str, ...]],
    bar: float,
    run: Callable[..., dict[str, dict[str, float]]] = promtool_fired,
) -> tuple[dict[str, dict[str, float | None]], set[str]]:
    """Constant abuse at LATENCY_FACTORS x the threshold (at most what it can do): seconds from
    its start to each form's first alert, checked every second; and the alerts that fired at
    the top level."""
    levels = sorted({min(profile.most or float("inf"), f * bar) for f in LATENCY_FACTORS})
    cases = {f"lat-{level:.6g}": steady_rates(level, LATENCY_SECONDS) for level in levels}
    alerts = sorted({a for form in forms.values() for a in form})
    fired = run(profile, cases, rules, alerts, every=1)
    result: dict[str, dict[str, float | None]] = {}
    for form, members in forms.items():
        result[form] = {}
        for level in levels:
            times = [
                fired[f"lat-{level:.6g}"][a] for a in members if a in fired[f"lat-{level:.6g}"]
            ]
            factor = f"{level / bar:.3g}"
            result[form][factor] = round(min(times) - WARMUP_SECONDS, 1) if times else None
    return result, set(fired[f"lat-{levels[-1]:.6g}"])


def evaluate(
    profile: Profile,
    rules: Rules,
    run: Callable[..., dict[str, dict[str, float]]] = promtool_fired,
) -> dict[str, Any]:
    """Every form of the profile's policy: pulsing (per peak and period), sustained, latency."""
    bar = threshold(rules, profile)
    forms = rules.forms(profile.policy)
    if not forms:
        raise EvasionError(f"profile {profile.name}: no alert of policy {profile.policy}")
    peaks = profile.peaks(bar)
    searches = [
        Search(f"pk{peak:.6g}-p{period:g}", peak, period) for peak in peaks for period in PERIODS
    ] + [Search("rate")]
    brackets = bisect(profile, rules, forms, searches, bar, run)
    lat, fired_constant = latency(profile, rules, forms, bar, run)
    result: dict[str, Any] = {
        "profile": profile.name,
        "policy": profile.policy,
        "description": profile.description,
        "unit": profile.unit,
        "threshold": bar,
        "expect": profile.expect,
        "neighbour_wants": profile.neighbour,
        "forms": {},
    }
    for form, members in forms.items():
        pulsing = []
        for s in searches[:-1]:
            assert s.peak is not None and s.period is not None
            b = brackets[(form, s.name)]
            undetected = b.lo if b.hi_fired else 1.0
            pulsing.append(
                {
                    "peak": s.peak,
                    "peak_factor": round(s.peak / bar, 3),
                    "period": s.period,
                    "max_undetected_duty": round(undetected, 3),
                    "min_detected_duty": round(b.hi, 3) if b.hi_fired else None,
                    # What the largest undetected duty averages, in thresholds.
                    "max_undetected_average": round(undetected * s.peak / bar, 3),
                }
            )
        b = brackets[(form, "rate")]
        for_seconds = max(rules.alerts[a]["for"] for a in members)
        # Judged against the constant forms that judge this abuse (those that fired on it),
        # not a form of the policy that never sees it (the page-fault form for a balloon).
        constant = [a for a in members if not a.endswith("Pulsing")]
        constant = [a for a in constant if a in fired_constant] or constant
        constant_for = min((rules.alerts[a]["for"] for a in constant), default=for_seconds)
        result["forms"][form] = {
            "alerts": list(members),
            "pulsing": pulsing,
            "sustained": {
                "max_undetected": _scaled(b.lo if b.hi_fired else b.hi, bar),
                "min_detected": _scaled(b.hi, bar) if b.hi_fired else None,
            },
            "latency": lat[form],
            "for_seconds": constant_for,
        }
    result["summary"] = summarize(result)
    return result


def summarize(result: Mapping[str, Any]) -> dict[str, Any]:
    """The verdict on the issue's goals, for the policy's forms together (ANY)."""
    form = result["forms"].get(ANY) or next(iter(result["forms"].values()))
    rows = form["pulsing"]
    top = max(r["peak"] for r in rows)
    worst_duty = max(r["max_undetected_duty"] for r in rows if r["peak"] == top)
    worst_average = max(r["max_undetected_average"] for r in rows)
    latencies = form["latency"]
    fastest = latencies.get(max(latencies, key=float)) if latencies else None
    summary: dict[str, Any] = {
        "largest_undetected_duty_at_top_peak": worst_duty,
        "largest_undetected_average": worst_average,
        "sustained_max_undetected": form["sustained"]["max_undetected"],
        "latency_at_top_factor": fastest,
        "for_seconds": form["for_seconds"],
    }
    if result["expect"] == "spared":
        summary["goal_met"] = form["sustained"]["min_detected"] is None and all(
            r["min_detected_duty"] is None for r in rows
        )
    else:
        summary["goal_met"] = worst_duty < GOAL_DUTY and (
            fastest is not None and fastest <= form["for_seconds"] + GOAL_LATENCY_SLACK
        )
    return summary


def _scaled(factor: float | None, bar: float) -> float | None:
    return None if factor is None else round(factor * bar, 3)


def run(
    *,
    say: Callable[[str], None],
    rules_dir: Path = RULES_DIR,
    profiles: Sequence[Profile] = PROFILES,
) -> dict[str, Any]:
    """Every profile; returns {"profiles": {name: {...}}, "uncovered": [...], "settings": {...}}."""
    rules = load_rules(rules_dir)

    def one(profile: Profile) -> dict[str, Any]:
        started = time.monotonic()
        result = evaluate(profile, rules)
        summary = result["summary"]
        alerts = ", ".join(a for a in rules.forms(profile.policy) if a in rules.alerts)
        say(
            f"    {profile.name}: {alerts}:"
            f" goal {'met' if summary['goal_met'] else 'MISSED'}"
            f" ({time.monotonic() - started:.0f} s)"
        )
        return result

    # Two promtool runs at a time (each is one process; the machine has two cores).
    with concurrent.futures.ThreadPoolExecutor(max_workers=JOBS) as pool:
        done = list(pool.map(one, profiles))
    results = {profile.name: result for profile, result in zip(profiles, done, strict=True)}
    return {
        "profiles": results,
        "uncovered": uncovered_alerts(rules, profiles),
        "settings": {
            "attack_seconds": ATTACK_SECONDS,
            "peak_factors": list(PEAK_FACTORS),
            "periods": list(PERIODS),
            "rate_range": list(RATE_RANGE),
            "bisect_rounds": BISECT_ROUNDS,
            "latency_factors": list(LATENCY_FACTORS),
            "goal_duty": GOAL_DUTY,
            "goal_latency_slack": GOAL_LATENCY_SLACK,
            "method": "promtool test rules over synthetic series (xeneval/evasion.py)",
        },
    }
