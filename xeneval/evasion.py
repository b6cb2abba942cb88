"""The evasion report: what rhythm and what rate of abuse the SHIPPED policies never throttle.

Real traffic is slow and noisy for this (a 2-minute run per point); the rules themselves are
exact and cheap to evaluate. So each abuse class has a synthetic counter profile (per-second
increments of the exporter's series for one guest, from the counter model of
docs/simulator.md: per packet sent 0.5 interrupts and 0.8 context switches, per packet received
1 and 0.8, per busy CPU-second 1000 timer interrupts), and `promtool test rules` evaluates the
shipped rule files (prometheus/rules/*.yml, unchanged) over it at Prometheus's 1 s evaluation
interval, with `keep_firing_for` and `for:` exactly as shipped:

- pulsing: the abuse at PEAK_FACTOR x the policy's threshold (a CPU hog at one full CPU, the
  most it can use), on for duty x period of every period, for ATTACK_SECONDS (two minutes),
  for periods of 2 to 60 s. Reported per period and alert: the largest duty never throttled
  and the smallest throttled, bisected to 1/128.
- sustained: the abuse held constant; reported: the highest rate never throttled and the
  lowest throttled, bisected between 0 and 3 x the threshold to 3/128 of it.

Bisection assumes that more abuse is never less visible (a larger duty at the same period and
peak, a higher constant rate): true of threshold rules on rates, which these policies are.

One promtool run per class holds every case (a test per case, one `alert_rule_test` per
evaluation time expecting no alert); the cases it reports as failing are the ones that fired.
A profile is only as good as the counter model it comes from: the harness's real-traffic
scenarios (pulse-short, pulse-long, short-bursts, udp-flood-paced) confirm a few points.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

RULES_DIR = Path(__file__).resolve().parents[1] / "prometheus" / "rules"
THRESHOLDS_GROUP = "judicator-policy-thresholds"
PROMTOOL = "promtool"
PROMTOOL_TIMEOUT = 600.0

WARMUP_SECONDS = 12
ATTACK_SECONDS = 120
CHECK_EVERY = 5
PEAK_FACTOR = 10.0
PERIODS = (2.0, 5.0, 10.0, 14.0, 20.0, 30.0, 60.0)
# Sustained rates are searched between these multiples of the threshold.
RATE_RANGE = (0.0, 3.0)
# Each round halves the bracket: 7 rounds give duty to 1/128 and rate to 3/128 of a threshold.
BISECT_ROUNDS = 7

JOB = "xen"
GUEST = "abuser"


class EvasionError(RuntimeError):
    """promtool is missing or failed for another reason than an alert that fired."""


Key = tuple[str, tuple[tuple[str, str], ...]]
Increments = dict[Key, float]


def _key(metric: str, **labels: str) -> Key:
    return metric, tuple(sorted(labels.items()))


def _perfc(
    interrupts: float, switches: float, timer: float, faults: float, mmu: float
) -> Increments:
    cpu = {"cpu": "1", "domain": GUEST}
    return {
        _key("xen_perfc_interrupts_total", **cpu): interrupts,
        _key("xen_perfc_sched_context_switches_total", **cpu): switches,
        _key("xen_perfc_apic_timer_interrupts_total", **cpu): timer,
        _key("xen_perfc_page_faults_total", **cpu): faults,
        _key("xen_perfc_calls_to_mmu_update_total", **cpu): mmu,
        _key("xen_perfc_calls_to_mmuext_op_total", **cpu): 0.0,
        _key("xen_perfc_calls_to_update_va_map_total", **cpu): 0.0,
    }


def _domain(
    cpu_seconds: float,
    sent: float = 0.0,
    sent_bytes: float = 0.0,
    received: float = 0.0,
    received_bytes: float = 0.0,
    block_requests: float = 0.0,
    block_bytes: float = 0.0,
) -> Increments:
    vif = {"domain": GUEST, "interface": "vif1.0"}
    vbd = {"domain": GUEST, "device": "xvda"}
    half_requests, half_bytes = block_requests / 2, block_bytes / 2
    return {
        _key("xen_domain_cpu_seconds_total", domain=GUEST): cpu_seconds,
        _key("xen_domain_network_transmit_packets_total", **vif): sent,
        _key("xen_domain_network_transmit_bytes_total", **vif): sent_bytes,
        _key("xen_domain_network_receive_packets_total", **vif): received,
        _key("xen_domain_network_receive_bytes_total", **vif): received_bytes,
        _key("xen_domain_block_read_requests_total", **vbd): half_requests,
        _key("xen_domain_block_write_requests_total", **vbd): half_requests,
        _key("xen_domain_block_read_bytes_total", **vbd): half_bytes,
        _key("xen_domain_block_written_bytes_total", **vbd): half_bytes,
        # Grant-table operations of the backends (host-wide), ~12 per block request.
        _key("xen_perfc_hypercalls_total", hypercall="grant_table_op", index="20"): (
            12.0 * block_requests
        ),
    }


# What an idle guest shows each second (docs/simulator.md's idle profile).
IDLE_TIMER = 100.0
IDLE_SWITCHES = 60.0
IDLE_FAULTS = 20.0
IDLE_MMU = 5.0
IDLE_CPU = 0.01


def network_flood(pps: float) -> Increments:
    """A ping flood sending `pps` echo requests and receiving as many replies (98-byte
    packets), busy sending: the published experiment's attacker."""
    busy = min(1.0, IDLE_CPU + pps / 40_000)
    return {
        **_perfc(
            interrupts=IDLE_TIMER + 1.5 * pps,
            switches=IDLE_SWITCHES + 1.6 * pps,
            timer=IDLE_TIMER + 900 * busy,
            faults=IDLE_FAULTS,
            mmu=IDLE_MMU,
        ),
        **_domain(busy, sent=pps, sent_bytes=98 * pps, received=pps, received_bytes=98 * pps),
    }


def cpu_hog(cpu: float) -> Increments:
    """A guest busy `cpu` of its one vCPU, yielding rarely, touching no memory or network."""
    busy = max(IDLE_CPU, min(1.0, cpu))
    return {
        **_perfc(
            interrupts=IDLE_TIMER + 900 * busy,
            switches=IDLE_SWITCHES,
            timer=IDLE_TIMER + 900 * busy,
            faults=IDLE_FAULTS,
            mmu=IDLE_MMU,
        ),
        **_domain(busy),
    }


def memory_abuse(faults: float) -> Increments:
    """A guest faulting `faults` fresh pages a second, one page-table update per 4 faults."""
    return {
        **_perfc(
            interrupts=IDLE_TIMER + 900,
            switches=IDLE_SWITCHES,
            timer=IDLE_TIMER + 800,
            faults=IDLE_FAULTS + faults,
            mmu=IDLE_MMU + faults / 4,
        ),
        **_domain(0.9),
    }


def disk_abuse(requests: float) -> Increments:
    """A guest submitting `requests` 4 KiB block requests a second."""
    return {
        **_perfc(
            interrupts=IDLE_TIMER + requests,
            switches=IDLE_SWITCHES + requests,
            timer=IDLE_TIMER + 300,
            faults=IDLE_FAULTS,
            mmu=IDLE_MMU,
        ),
        **_domain(0.3, block_requests=requests, block_bytes=4096 * requests),
    }


@dataclass(frozen=True)
class Profile:
    name: str
    alerts: tuple[str, ...]
    unit: str
    threshold: float  # the policy's bar on the profile's rate (the stock form's, where two)
    peak: float  # the rate of the pulses
    increments: Callable[[float], Increments]
    gauges: Mapping[str, float]


GAUGES = {"xen_domain_vcpus": 1.0, "xen_pcpu_domain_share_ratio": 1.0}

PROFILES = (
    Profile(
        "network_flood",
        ("XenNetworkFloodPerfc", "XenNetworkFloodVif"),
        "packets/s sent",
        10_000.0,
        10_000.0 * PEAK_FACTOR,
        network_flood,
        GAUGES,
    ),
    Profile(
        "cpu_hog",
        ("XenCpuHogPerfc", "XenCpuHogCpuTime"),
        "CPU s/s per vCPU",
        0.8,
        1.0,
        cpu_hog,
        GAUGES,
    ),
    Profile(
        "memory_abuse",
        ("XenMemoryAbusePerfc",),
        "page faults/s",
        10_000.0,
        10_000.0 * PEAK_FACTOR,
        memory_abuse,
        GAUGES,
    ),
    Profile(
        "disk_abuse",
        ("XenDiskAbusePerfc", "XenDiskAbuseVbd"),
        "block requests/s",
        2_000.0,
        2_000.0 * PEAK_FACTOR,
        disk_abuse,
        GAUGES,
    ),
)


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


def series_values(increments: Sequence[float]) -> str:
    """Cumulative values from per-second increments, in promtool's compact `a+bxn` runs."""
    values = [0.0]
    for inc in increments:
        values.append(values[-1] + inc)
    parts = []
    i = 0
    while i < len(values):
        j = i
        step = values[i + 1] - values[i] if i + 1 < len(values) else 0.0
        while j + 1 < len(values) and abs((values[j + 1] - values[j]) - step) < 1e-9:
            j += 1
        parts.append(f"{values[i]:.6g}+{step:.6g}x{j - i}")
        i = j + 1
    return " ".join(parts)


def _selector(key: Key, instance: str) -> str:
    metric, labels = key
    every = {"instance": instance, "job": JOB, **dict(labels)}
    return metric + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(every.items())) + "}"


def case_series(
    instance: str, profile: Profile, intensity: Sequence[float]
) -> list[dict[str, str]]:
    """The input series of one case: the guest at `profile.peak * intensity[t]` each second,
    alone on a host of its own (`instance`), so that cases never meet in a rule."""
    per_second = [profile.increments(profile.peak * x) for x in intensity]
    series = [
        {
            "series": _selector(key, instance),
            "values": series_values([p.get(key, 0.0) for p in per_second]),
        }
        for key in sorted(profile.increments(0.0))
    ]
    for metric, value in profile.gauges.items():
        labels = {"domain": GUEST}
        if metric == "xen_pcpu_domain_share_ratio":
            labels["cpu"] = "1"
        series.append(
            {
                "series": _selector(_key(metric, **labels), instance),
                "values": f"{value:g}+0x{len(intensity)}",
            }
        )
    return series


# promtool's report of a failed check: the alert, the time, and the alerts it got instead.
_FAILED_CHECK = re.compile(
    r"alertname: (\S+?), time: (\S+?),\s*\n\s*exp:.*?got:\[(.*?)\n\s*\]", re.S
)
_LABELS = re.compile(r"Labels:\{([^}]*)\}")
_PAIR = re.compile(r'(\w+)="([^"]*)"')


def rule_files(rules_dir: Path) -> tuple[list[str], list[str]]:
    """The shipped rule files and their groups, the thresholds' group first."""
    files = sorted(str(p) for p in rules_dir.glob("*.yml"))
    groups = []
    for path in files:
        for group in (yaml.safe_load(Path(path).read_text()) or {}).get("groups", []):
            groups.append(group["name"])
    groups.sort(key=lambda g: g != THRESHOLDS_GROUP)
    return files, groups


def promtool_fired(
    profile: Profile, cases: Mapping[str, Sequence[float]], rules_dir: Path = RULES_DIR
) -> dict[str, set[str]]:
    """Evaluate the shipped rules over every case at once with promtool (one test, each case
    a host of its own); return case name -> the profile's alerts that fired in it."""
    promtool = shutil.which(PROMTOOL)
    if promtool is None:
        raise EvasionError("needs promtool on PATH (`make deps` installs prometheus)")
    files, groups = rule_files(rules_dir)
    seconds = max(len(x) for x in cases.values())
    input_series = []
    for name, intensity in cases.items():
        padded = [*intensity, *([0.0] * (seconds - len(intensity)))]
        input_series += case_series(name, profile, padded)
    checks = [
        {"eval_time": f"{t}s", "alertname": alert, "exp_alerts": []}
        for t in range(CHECK_EVERY, seconds, CHECK_EVERY)
        for alert in profile.alerts
    ]
    test = {
        "name": profile.name,
        "interval": "1s",
        "input_series": input_series,
        "alert_rule_test": checks,
    }
    document = {
        "rule_files": files,
        "evaluation_interval": "1s",
        "group_eval_order": groups,
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
    fired: dict[str, set[str]] = {name: set() for name in cases}
    for alert, _time, got in _FAILED_CHECK.findall(output):
        for labels in _LABELS.findall(got):
            instance = dict(_PAIR.findall(labels)).get("instance")
            if instance in fired:
                fired[instance].add(alert)
    if result.returncode != 0 and not any(fired.values()):
        raise EvasionError(f"promtool failed without an alert to show:\n{output[-2000:]}")
    return fired


def _pulse_case(period: float, duty: float) -> list[float]:
    seconds = WARMUP_SECONDS + ATTACK_SECONDS + CHECK_EVERY
    return [
        on_fraction(t, start=WARMUP_SECONDS, duty=duty, period=period)
        if t < WARMUP_SECONDS + ATTACK_SECONDS
        else 0.0
        for t in range(seconds)
    ]


def _steady_case(profile: Profile, factor: float) -> list[float]:
    seconds = WARMUP_SECONDS + ATTACK_SECONDS + CHECK_EVERY
    level = factor * profile.threshold / profile.peak
    return [0.0 if t < WARMUP_SECONDS else level for t in range(seconds)]


@dataclass
class Bracket:
    """What bisection knows of one alert and one search: quiet at `lo`, fired at `hi`."""

    lo: float
    hi: float
    hi_fired: bool | None = None

    def mid(self) -> float:
        return (self.lo + self.hi) / 2


def evaluate(profile: Profile, rules_dir: Path = RULES_DIR) -> dict[str, Any]:
    """Bisect, for every alert of the profile at once, the largest undetected duty per period
    and the largest undetected sustained rate; BISECT_ROUNDS promtool runs after one that
    checks the upper ends (a search whose upper end never fires stops there)."""
    searches = [f"p{period:g}" for period in PERIODS] + ["rate"]
    brackets = {
        (alert, key): Bracket(0.0, 1.0) if key != "rate" else Bracket(*RATE_RANGE)
        for alert in profile.alerts
        for key in searches
    }

    def case(key: str, x: float) -> list[float]:
        if key == "rate":
            return _steady_case(profile, x)
        return _pulse_case(float(key[1:]), x)

    # Round 0: the upper ends.
    cases = {f"{key}-hi": case(key, RATE_RANGE[1] if key == "rate" else 1.0) for key in searches}
    fired = promtool_fired(profile, cases, rules_dir)
    for (alert, key), bracket in brackets.items():
        bracket.hi_fired = alert in fired[f"{key}-hi"]
    for _ in range(BISECT_ROUNDS):
        # One case per (alert, search) midpoint; alerts of a profile share the case when
        # their brackets agree.
        wanted = {
            f"{key}-{b.mid():.6f}": (key, b.mid()) for (_, key), b in brackets.items() if b.hi_fired
        }
        if not wanted:
            break
        fired = promtool_fired(profile, {n: case(k, x) for n, (k, x) in wanted.items()}, rules_dir)
        for (alert, key), bracket in brackets.items():
            if not bracket.hi_fired:
                continue
            mid = bracket.mid()
            if alert in fired[f"{key}-{mid:.6f}"]:
                bracket.hi = mid
            else:
                bracket.lo = mid
    result: dict[str, Any] = {}
    for alert in profile.alerts:
        pulsing = []
        for period in PERIODS:
            b = brackets[(alert, f"p{period:g}")]
            pulsing.append(
                {
                    "period": period,
                    "max_undetected_duty": round(b.lo if b.hi_fired else b.hi, 3),
                    "min_detected_duty": round(b.hi, 3) if b.hi_fired else None,
                }
            )
        b = brackets[(alert, "rate")]
        result[alert] = {
            "profile": profile.name,
            "pulsing": pulsing,
            "pulse_rate": profile.peak,
            "sustained": {
                "unit": profile.unit,
                "threshold": profile.threshold,
                "max_undetected": _scaled(b.lo if b.hi_fired else b.hi, profile.threshold),
                "min_detected": _scaled(b.hi, profile.threshold) if b.hi_fired else None,
            },
        }
    return result


def _scaled(factor: float | None, threshold: float) -> float | None:
    return None if factor is None else round(factor * threshold, 3)


def run(*, say: Callable[[str], None], rules_dir: Path = RULES_DIR) -> dict[str, Any]:
    """Every profile; returns {"policies": {alertname: {...}}, "settings": {...}}."""
    policies: dict[str, Any] = {}
    for profile in PROFILES:
        say(f"    {profile.name}: {', '.join(profile.alerts)} ...")
        policies.update(evaluate(profile, rules_dir))
    return {
        "policies": policies,
        "settings": {
            "attack_seconds": ATTACK_SECONDS,
            "peak_factor": PEAK_FACTOR,
            "periods": list(PERIODS),
            "rate_range": list(RATE_RANGE),
            "bisect_rounds": BISECT_ROUNDS,
            "method": "promtool test rules over synthetic series (xeneval/evasion.py)",
        },
    }
