"""Many policies: Prometheus's rule evaluation time per cycle for 1-1000 policies, 4-256 domains.

    python -m bench.policies [--policies 1,10,100,1000] [--domains 4,64,256] [--samples 6]
                             [--modes rules,simple,simple+overrides] [--overrides 1000]
                             [--rules-max 100] [--cpu-rounds 3] [--cpu-cycles 40]

One real Prometheus per host size scrapes a synthetic exporter (bench/synthetic.py: the real
exposition scaled to N domains on N CPUs) every second and evaluates, every second, the shipped
rules with N policies written one of three ways, side by side on the same data:

  rules             N alerting rules (the way to add a policy before simple policies): the
                    shipped policy group as it ships (its rates first, shared by every policy)
                    with its alerts cloned round-robin under new names until there are N
  simple            the shipped rules as they ship, plus N simple policies
                    (prometheus/simple-policies.yml, compiled by tools/compile-policies):
                    round-robin over the signals, three classes, thresholds above every
                    synthetic rate (as in `rules`, nothing fires: the steady state)
  simple+overrides  the same with --overrides per-domain thresholds
                    (rules/thresholds-domains.yml) on the shipped policies' thresholds

The rule files are swapped with /-/reload, so one Prometheus measures every point on warm data.
Figures are Prometheus's own, sampled once per evaluation: each group's
`prometheus_rule_group_last_duration_seconds` and each rule's `evaluationTime`. Groups evaluated
every cycle count in full; the threshold groups evaluated every 10 s (rules/thresholds-*.yml,
the simple policies' thresholds) count a tenth of their duration per cycle, and their own
duration is reported apart. Medians of the samples, with missed iterations and Prometheus's own
CPU, memory and series.
"""

from __future__ import annotations

import argparse
import copy
import functools
import importlib.machinery
import importlib.util
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from bench.common import REPO_ROOT, fmt, median, table, wait_for, write_results
from bench.synthetic import _LABEL, SyntheticExporter, scaled_exposition
from xensim.stack import Prometheus, run_prometheus

log = logging.getLogger(__name__)

RULES_DIR = REPO_ROOT / "prometheus" / "rules"
SHARED_RULE_FILES = ("recording.yml", "thresholds.yml", "thresholds-effective.yml")
POLICY_GROUP = "judicator-policies"
SIMPLE_GROUP = "judicator-simple-policies"
INTERVAL_SECONDS = 1.0
RATE_WINDOW_SECONDS = 5.0
READY_TIMEOUT_SECONDS = 90.0
MODES = ("rules", "simple", "simple+overrides")
# Three classes of simple policies (for:, keep_firing_for:, remediation), taken in turn.
SIMPLE_CLASSES: tuple[dict[str, Any], ...] = (
    {"for": "15s", "keep_firing_for": "30s", "remediation": "network_shape", "rate": "1mbit",
     "burst": "32kb", "direction": "send"},
    {"for": "30s", "keep_firing_for": "60s", "remediation": "cpu_cap", "cap": 50},
    {"for": "30s", "keep_firing_for": "60s", "remediation": "cpu_cap", "cap": 10},
)  # fmt: skip


@functools.cache
def _compiler() -> Any:
    """tools/compile-policies as a module (a script without a .py suffix)."""
    path = REPO_ROOT / "tools" / "compile-policies"
    loader = importlib.machinery.SourceFileLoader("compile_policies", str(path))
    spec = importlib.util.spec_from_loader("compile_policies", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    loader.exec_module(module)
    return module


def simple_policies(count: int) -> list[dict[str, Any]]:
    """`count` simple policies over every signal in turn, above every synthetic rate."""
    signals = sorted(_compiler().SIGNALS)
    policies = []
    for index in range(count):
        signal = signals[index % len(signals)]
        # Far above anything the synthetic host does (a CPU share is at most 1 per vCPU).
        above = 0.99 + index * 1e-6 if signal.startswith("cpu_seconds") else 1e9 + index
        policies.append(
            {"name": f"bench_{index}", "signal": signal, "above": above,
             **SIMPLE_CLASSES[index % len(SIMPLE_CLASSES)]}
        )  # fmt: skip
    return policies


def simple_rules(count: int) -> str:
    compiler = _compiler()
    policies = compiler.parse({"policies": simple_policies(count)})
    return str(compiler.render(compiler.rules(policies), "bench"))


def domain_overrides(count: int, domains: int) -> dict[str, Any]:
    """`count` per-domain thresholds on the shipped policies' overridable thresholds."""
    effective = yaml.safe_load((RULES_DIR / "thresholds-effective.yml").read_text())
    pairs = [
        (rule["labels"]["policy"], rule["labels"]["signal"])
        for group in effective["groups"]
        for rule in group["rules"]
        if rule.get("record") == "judicator:policy_threshold:effective"
    ]
    rules = []
    for index in range(min(count, len(pairs) * max(domains - 1, 1))):
        policy, signal = pairs[index % len(pairs)]
        domain = f"guest{index // len(pairs) % max(domains - 1, 1) + 1}"
        rules.append(
            {
                "record": "judicator:policy_threshold:domain",
                "expr": f"vector({1e9 + index:g})",
                "labels": {"policy": policy, "signal": signal, "domain": domain},
            }
        )
    shipped = yaml.safe_load((RULES_DIR / "thresholds-domains.yml").read_text())
    shipped["groups"][0]["rules"] = rules
    return dict(shipped)


def policy_rules(count: int) -> dict[str, Any]:
    """The shipped policy group, its rates and `count` alerting rules (clones renamed)."""
    shipped = yaml.safe_load((RULES_DIR / "policies.yml").read_text())
    group = next(g for g in shipped["groups"] if g["name"] == POLICY_GROUP)
    rates = [rule for rule in group["rules"] if "record" in rule]
    alerts = [rule for rule in group["rules"] if "alert" in rule]
    rules = []
    for index in range(count):
        rule = copy.deepcopy(alerts[index % len(alerts)])
        if index >= len(alerts):
            rule["alert"] = f"{rule['alert']}Clone{index}"
        rules.append(rule)
    return {"groups": [{"name": POLICY_GROUP, "rules": [*rates, *rules]}]}


def _rule_times(prometheus: Prometheus) -> dict[tuple[str, str], tuple[bool, float]]:
    """(group, rule name) -> (alerting?, seconds of its last evaluation), every group. Rules
    with one name (an alert's constant and pulsing forms share none; recording rules might)
    add up."""
    times: dict[tuple[str, str], tuple[bool, float]] = {}
    for group in prometheus.rules():
        for rule in group["rules"]:
            key = (group["name"], rule["name"])
            alerting = rule.get("type") == "alerting"
            seconds = float(rule.get("evaluationTime", 0.0))
            times[key] = (alerting, times.get(key, (alerting, 0.0))[1] + seconds)
    return times


def _alerting_seconds(times: dict[tuple[str, str], tuple[bool, float]]) -> float:
    """Seconds of the policy group's last evaluation spent on its alerting rules."""
    return sum(
        s for (group, _), (alerting, s) in times.items() if group == POLICY_GROUP and alerting
    )


SLOWEST_RULES = 12


def prometheus_metrics(prometheus: Prometheus) -> dict[str, list[tuple[dict[str, str], float]]]:
    status, body = prometheus.request("GET", "/metrics")
    if status != 200:
        raise RuntimeError(f"prometheus /metrics: HTTP {status}")
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def _one(samples: dict[str, list[tuple[dict[str, str], float]]], name: str) -> float:
    return sum(value for _, value in samples.get(name, []))


def _group_values(
    samples: dict[str, list[tuple[dict[str, str], float]]], name: str
) -> dict[str, float]:
    return {
        labels["rule_group"].rsplit(";", 1)[1]: value for labels, value in samples.get(name, [])
    }


def _groups_ready(prometheus: Prometheus, alerts: int, since: float) -> bool:
    """Every group evaluated since the reload, without errors, with `alerts` alerting rules."""
    groups = prometheus.rules()
    count = sum(1 for group in groups for rule in group["rules"] if rule.get("type") == "alerting")
    return count == alerts and all(
        not group.get("lastEvaluation", "0001").startswith("0001")
        and _epoch(group["lastEvaluation"]) > since
        and all(rule.get("health") == "ok" for rule in group["rules"])
        for group in groups
    )


def _rule_errors(prometheus: Prometheus) -> list[str]:
    return sorted(
        {
            str(rule.get("lastError"))
            for group in prometheus.rules()
            for rule in group["rules"]
            if rule.get("health") not in ("ok", "unknown")
        }
    )[:3]


def _epoch(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def rule_files(mode: str, count: int, domains: int, overrides: int) -> dict[str, str]:
    """The rules directory's files for one point: name -> YAML text."""
    compiler = _compiler()
    files = {name: (RULES_DIR / name).read_text() for name in SHARED_RULE_FILES}
    shipped_domains = yaml.safe_load((RULES_DIR / "thresholds-domains.yml").read_text())
    files["thresholds-domains.yml"] = yaml.safe_dump(shipped_domains, sort_keys=False)
    if mode == "rules":
        files["policies.yml"] = yaml.safe_dump(policy_rules(count), sort_keys=False)
        files["simple-policies.yml"] = str(compiler.render(compiler.rules([]), "bench"))
        return files
    files["policies.yml"] = (RULES_DIR / "policies.yml").read_text()
    files["simple-policies.yml"] = simple_rules(count)
    if mode == "simple+overrides":
        overridden = domain_overrides(overrides, domains)
        files["thresholds-domains.yml"] = yaml.safe_dump(overridden, sort_keys=False)
    return files


def _alerts_in(files: dict[str, str]) -> int:
    return sum(
        1
        for text in files.values()
        for group in (yaml.safe_load(text) or {}).get("groups") or []
        for rule in group.get("rules") or []
        if "alert" in rule
    )


def _write(rules_dir: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (rules_dir / name).write_text(text)


def measure_host(
    domains: int,
    policy_counts: Sequence[int],
    samples_per_point: int,
    modes: Sequence[str] = MODES,
    overrides: int = 1000,
    rules_max: int | None = None,
) -> list[dict[str, Any]]:
    """Every mode and policy count on one Prometheus scraping a synthetic host of `domains`
    (policies as alerting rules only up to `rules_max`, when given)."""
    points = []
    rules_dir = Path(tempfile.mkdtemp(prefix="judicator-bench-policies-"))
    try:
        first = rule_files(modes[0], policy_counts[0], domains, overrides)
        _write(rules_dir, first)
        with SyntheticExporter(domains) as target:
            config = {
                "global": {
                    "scrape_interval": f"{INTERVAL_SECONDS:g}s",
                    "scrape_timeout": f"{INTERVAL_SECONDS:g}s",
                    "evaluation_interval": f"{INTERVAL_SECONDS:g}s",
                },
                "scrape_configs": [
                    {"job_name": "xen", "static_configs": [{"targets": [target.address]}]}
                ],
            }
            with run_prometheus(
                yaml.safe_dump(config), rule_files=[rules_dir / name for name in first]
            ) as prometheus:
                # Every rate needs its window of samples before its cost is the steady one.
                wait_for(
                    lambda: prometheus.query("instance_domain:xen_perfc_interrupts:rate10s"),
                    timeout=60,
                    what="recorded rates",
                )
                time.sleep(RATE_WINDOW_SECONDS)
                for mode in modes:
                    for count in policy_counts:
                        if mode == "rules" and rules_max is not None and count > rules_max:
                            continue
                        files = rule_files(mode, count, domains, overrides)
                        points.append(
                            _measure_point(
                                prometheus,
                                rules_dir,
                                files,
                                mode,
                                domains,
                                count,
                                samples_per_point,
                            )
                        )
    finally:
        shutil.rmtree(rules_dir, ignore_errors=True)
    return points


def _slow(name: str) -> bool:
    """The groups evaluated every 10 s rather than every cycle."""
    return name.startswith("judicator-policy-thresholds-") or name == (
        "judicator-simple-policy-thresholds"
    )


def _measure_point(
    prometheus: Prometheus,
    rules_dir: Path,
    files: dict[str, str],
    mode: str,
    domains: int,
    count: int,
    samples: int,
) -> dict[str, Any]:
    _write(rules_dir, files)
    reloaded = time.time()
    try:
        status, body = prometheus.request("POST", "/-/reload")
    except TimeoutError:
        # The reload waits for the groups it replaces to finish their evaluation, which takes
        # seconds when they are far over their cycle; it goes on without us.
        log.warning("%s, %s policies: the reload is slow to answer", mode, count)
    else:
        if status != 200:
            raise RuntimeError(f"prometheus reload: HTTP {status}: {body!r}")
    base = {"mode": mode, "domains": domains, "policies": count}
    if mode == "simple+overrides":
        base["overrides"] = sum(
            len(group["rules"])
            for group in yaml.safe_load(files["thresholds-domains.yml"])["groups"]
        )
    try:
        wait_for(
            lambda: _groups_ready(prometheus, _alerts_in(files), reloaded),
            timeout=READY_TIMEOUT_SECONDS,
            what=f"{mode}: {count} policies evaluated",
        )
    except TimeoutError as error:
        # Too many rules for the cycle (or for this machine): say so, and go on.
        log.warning("%s, %s policies over %s domains: %s", mode, count, domains, error)
        return {**base, "unfinished": str(error), "rule_errors": _rule_errors(prometheus)}
    time.sleep(INTERVAL_SECONDS)  # one full cycle after the reload's first
    first = prometheus_metrics(prometheus)
    durations: dict[str, list[float]] = {}
    per_cycle: list[float] = []
    policy_alerting: list[float] = []
    rule_seconds: dict[tuple[str, str], list[float]] = {}
    started = time.monotonic()
    last = first
    for _ in range(samples):
        time.sleep(INTERVAL_SECONDS)
        last = prometheus_metrics(prometheus)
        groups = _group_values(last, "prometheus_rule_group_last_duration_seconds")
        for name, seconds in groups.items():
            durations.setdefault(name, []).append(seconds)
        per_cycle.append(
            sum(seconds / 10 if _slow(name) else seconds for name, seconds in groups.items())
        )
        times = _rule_times(prometheus)
        policy_alerting.append(_alerting_seconds(times))
        for key, (_, seconds) in times.items():
            rule_seconds.setdefault(key, []).append(seconds)
    elapsed = time.monotonic() - started
    missed_before = _group_values(first, "prometheus_rule_group_iterations_missed_total")
    missed_after = _group_values(last, "prometheus_rule_group_iterations_missed_total")
    cpu = _one(last, "process_cpu_seconds_total") - _one(first, "process_cpu_seconds_total")
    group_medians = {name: median(values) for name, values in durations.items()}
    point = {
        **base,
        "group_eval_seconds": group_medians,
        "policy_group_seconds": group_medians.get(POLICY_GROUP),
        "policy_group_alerting_seconds": median(policy_alerting),
        "simple_group_seconds": group_medians.get(SIMPLE_GROUP),
        "slow_groups_seconds": sum(
            value or 0.0 for name, value in group_medians.items() if _slow(name)
        ),
        "per_cycle_seconds": median(per_cycle),
        "samples": len(per_cycle),
        "missed_iterations": sum(missed_after.values()) - sum(missed_before.values()),
        "prometheus_cpu_share": cpu / elapsed,
        "head_series": _one(last, "prometheus_tsdb_head_series"),
        "resident_bytes": _one(last, "process_resident_memory_bytes"),
        "loadavg": os.getloadavg()[0],
        # Where a cycle goes: the costliest rules, the median of their evaluations.
        "slowest_rules": [
            {"group": group, "rule": rule, "seconds": seconds}
            for (group, rule), seconds in sorted(
                ((key, median(values) or 0.0) for key, values in rule_seconds.items()),
                key=lambda item: -item[1],
            )[:SLOWEST_RULES]
        ],
    }
    log.info("policies %s", point)
    return point


PROMTOOL_CYCLES = 40
PROMTOOL_HOST = {"job": "xen", "instance": "h1:10170"}


def promtool_test(domains: int, rules_dir: Path, rule_names: Sequence[str], cycles: int) -> str:
    """A promtool test that evaluates `rule_names` for `cycles` 1 s cycles over the synthetic
    host (the same series and rates as the synthetic exporter), and checks nothing else."""
    _, series = scaled_exposition(domains)
    inputs = []
    for one in series:
        labels = dict(_LABEL.findall(one.labels), **PROMTOOL_HOST)
        rendered = ",".join(f'{key}="{value}"' for key, value in labels.items())
        inputs.append(
            {
                "series": f"{one.name}{{{rendered}}}",
                "values": f"{one.start:g}+{one.rate:g}x{cycles}",
            }
        )
    document = {
        "rule_files": [str(rules_dir / name) for name in rule_names],
        "evaluation_interval": "1s",
        "tests": [
            {
                "interval": "1s",
                "input_series": inputs,
                "promql_expr_test": [
                    {
                        "expr": "vector(1)",
                        "eval_time": f"{cycles}s",
                        "exp_samples": [{"labels": "{}", "value": 1}],
                    }
                ],
            }
        ],
    }
    return yaml.safe_dump(document, sort_keys=False)


def promtool_cpu_seconds(test: Path) -> float:
    """CPU seconds (user and system) one `promtool test rules` run takes."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(
        ["promtool", "test", "rules", str(test)], capture_output=True, text=True, check=False
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise RuntimeError(f"promtool test rules {test}: {result.stdout[-2000:]}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _slow_only(files: dict[str, str]) -> dict[str, str]:
    """The rule files cut down to the groups evaluated every 10 s (and the defaults they read)."""
    kept = {}
    for name, text in files.items():
        document = yaml.safe_load(text) or {}
        groups = [
            group
            for group in document.get("groups") or []
            if _slow(group["name"]) or group["name"] == "judicator-policy-thresholds"
        ]
        if groups:
            kept[name] = yaml.safe_dump({"groups": groups}, sort_keys=False)
    return kept


def measure_cpu(
    domains: int,
    policy_counts: Sequence[int],
    modes: Sequence[str],
    overrides: int,
    rules_max: int | None,
    cycles: int = PROMTOOL_CYCLES,
    rounds: int = 3,
) -> list[dict[str, Any]]:
    """Rule evaluation CPU per cycle, measured as promtool's CPU time: the same rules over the
    same synthetic host, evaluated in one process, minus a run without rules (loading the
    series). CPU time, unlike the wall time Prometheus reports, hardly moves when other
    processes compete for the CPUs. promtool evaluates every group at every cycle, the groups
    Prometheus evaluates every 10 s too: a second run of those alone measures them, and a
    cycle counts a tenth of them. Points are interleaved over `rounds`; medians."""
    runs: dict[tuple[str, int], list[tuple[float, float]]] = {}
    workdir = Path(tempfile.mkdtemp(prefix="judicator-bench-promtool-"))

    def cpu_of(directory: Path, files: dict[str, str]) -> float:
        directory.mkdir(exist_ok=True)
        _write(directory, files)
        test = directory / "test.yml"
        test.write_text(promtool_test(domains, directory, list(files), cycles))
        return promtool_cpu_seconds(test)

    try:
        plan = [
            (mode, count)
            for count in policy_counts
            for mode in modes
            if not (mode == "rules" and rules_max is not None and count > rules_max)
        ]
        baseline: list[float] = []
        for _ in range(rounds):
            baseline.append(cpu_of(workdir / "empty", {"none.yml": "groups: []\n"}))
            for mode, count in plan:
                files = rule_files(mode, count, domains, overrides)
                total = cpu_of(workdir / f"{mode}-{count}", files)
                slow = cpu_of(workdir / f"{mode}-{count}-slow", _slow_only(files))
                runs.setdefault((mode, count), []).append((total, slow))
                log.info(
                    "promtool %s %s: %.2f s CPU, %.2f s the 10 s groups", mode, count, total, slow
                )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    floor = median(baseline) or 0.0
    points = []
    for (mode, count), values in runs.items():
        total = (median(v[0] for v in values) or 0.0) - floor
        slow = (median(v[1] for v in values) or 0.0) - floor
        points.append(
            {
                "mode": mode,
                "domains": domains,
                "policies": count,
                "cpu_seconds_per_cycle": (total - 0.9 * slow) / cycles,
                "every_cycle_groups_cpu_seconds_per_cycle": (total - slow) / cycles,
                "ten_second_groups_cpu_seconds_per_evaluation": slow / cycles,
                "runs_cpu_seconds": values,
                "baseline_cpu_seconds": baseline,
                "cycles": cycles,
                "loadavg": os.getloadavg()[0],
            }
        )
    return points


def report_cpu(points: list[dict[str, Any]]) -> str:
    rows = []
    for p in points:
        rows.append(
            [
                p["domains"],
                p["mode"],
                p["policies"],
                fmt(p["cpu_seconds_per_cycle"] * 1000, 3),
                fmt(p["every_cycle_groups_cpu_seconds_per_cycle"] * 1000, 3),
                fmt(p["ten_second_groups_cpu_seconds_per_evaluation"] * 1000, 3),
                fmt(p["loadavg"], 3),
            ]
        )
    cycles = points[0]["cycles"] if points else PROMTOOL_CYCLES
    return table(
        f"Rule evaluation CPU per cycle (promtool's CPU time over {cycles} cycles, minus loading "
        "the series; the 10 s groups count a tenth; medians of interleaved runs)",
        [
            "domains",
            "policies as",
            "policies",
            "CPU ms per cycle",
            "every-cycle groups ms",
            "10 s groups ms per evaluation",
            "load average",
        ],
        rows,
    )


def report(points: list[dict[str, Any]]) -> list[str]:
    rows: list[list[object]] = []
    for p in points:
        mode = p["mode"] + (f" ({p['overrides']})" if "overrides" in p else "")
        if "unfinished" in p:
            unfinished = f"none in {READY_TIMEOUT_SECONDS:g} s"
            rows.append([p["domains"], mode, p["policies"], unfinished, *["-"] * 9])
            continue
        per_cycle = p["per_cycle_seconds"]
        rows.append(
            [
                p["domains"],
                mode,
                p["policies"],
                fmt(per_cycle * 1000, 3),
                fmt((p["policy_group_seconds"] or 0) * 1000, 3),
                fmt(p["policy_group_alerting_seconds"] * 1000, 3),
                fmt((p["simple_group_seconds"] or 0) * 1000, 3),
                fmt(p["slow_groups_seconds"] * 1000, 3),
                fmt(per_cycle / INTERVAL_SECONDS * 100, 3),
                int(p["missed_iterations"]),
                fmt(p["prometheus_cpu_share"] * 100, 3),
                int(p["head_series"]),
                fmt(p["loadavg"], 3),
            ]
        )
    return [
        table(
            "Rule evaluation per 1 s cycle (medians of prometheus_rule_group_last_duration_seconds;"
            " groups evaluated every 10 s count a tenth per cycle)",
            [
                "domains (=CPUs)",
                "policies as",
                "policies",
                "per cycle ms",
                "policy group ms",
                "its alerts ms",
                "simple-policy group ms",
                "10 s groups ms",
                "% of the cycle",
                "missed cycles",
                "Prometheus CPU %",
                "head series",
                "load average",
            ],
            rows,
        ),
        *_slowest_table(points),
    ]


def _slowest_table(points: list[dict[str, Any]]) -> list[str]:
    """Where the largest measured point's cycle goes, rule by rule."""
    measured = [p for p in points if p.get("slowest_rules")]
    if not measured:
        return []
    largest = max(measured, key=lambda p: (p["domains"], p["policies"]))
    return [
        table(
            f"The costliest rules at {largest['domains']} domains, {largest['policies']}"
            f" policies ({largest['mode']}): median ms of one evaluation",
            ["group", "rule", "ms"],
            [
                [r["group"], r["rule"], fmt(r["seconds"] * 1000, 3)]
                for r in largest["slowest_rules"]
            ],
        )
    ]


def run(
    policy_counts: Sequence[int] = (1, 10, 100, 1000),
    domain_counts: Sequence[int] = (4, 64, 256),
    samples: int = 6,
    modes: Sequence[str] = MODES,
    overrides: int = 1000,
    rules_max: int | None = None,
    cpu_rounds: int = 3,
    cpu_cycles: int = PROMTOOL_CYCLES,
) -> list[str]:
    points: list[dict[str, Any]] = []
    cpu_points: list[dict[str, Any]] = []
    for domains in domain_counts:
        if cpu_rounds > 0:
            cpu_points.extend(
                measure_cpu(
                    domains, policy_counts, modes, overrides, rules_max, cpu_cycles, cpu_rounds
                )
            )
        if samples > 0:
            points.extend(
                measure_host(domains, policy_counts, samples, modes, overrides, rules_max)
            )
    tables = report(points) if points else []
    if cpu_points:
        tables.append(report_cpu(cpu_points))
    write_results(
        "policies",
        {
            "policy_counts": list(policy_counts),
            "domain_counts": list(domain_counts),
            "modes": list(modes),
            "overrides": overrides,
            "rules_max": rules_max,
            "cpu_rounds": cpu_rounds,
            "cpu_cycles": cpu_cycles,
            "samples_per_point": samples,
            "scrape_and_evaluation_interval_seconds": INTERVAL_SECONDS,
        },
        {"prometheus": points, "promtool_cpu": cpu_points},
        tables,
    )
    return tables


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.policies", description=__doc__)
    parser.add_argument("--policies", type=_ints, default=[1, 10, 100, 1000])
    parser.add_argument("--domains", type=_ints, default=[4, 64, 256])
    parser.add_argument(
        "--samples",
        type=int,
        default=6,
        help="samples per point of the real Prometheus's wall time (0: skip that part)",
    )
    parser.add_argument("--modes", type=lambda text: text.split(","), default=list(MODES))
    parser.add_argument("--overrides", type=int, default=1000)
    parser.add_argument(
        "--cpu-rounds",
        type=int,
        default=3,
        help="rounds of the CPU-time measurement with promtool (0: skip it)",
    )
    parser.add_argument("--cpu-cycles", type=int, default=PROMTOOL_CYCLES)
    parser.add_argument(
        "--rules-max",
        type=int,
        help="measure policies as alerting rules only up to this many (1000 over 256 domains "
        "is minutes of a loaded machine's CPU)",
    )
    args = parser.parse_args(argv)
    unknown = set(args.modes) - set(MODES)
    if unknown:
        parser.error(f"--modes: unknown {', '.join(sorted(unknown))}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for text in run(
        args.policies,
        args.domains,
        args.samples,
        args.modes,
        args.overrides,
        args.rules_max,
        args.cpu_rounds,
        args.cpu_cycles,
    ):
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
