"""Many policies: Prometheus's rule evaluation time per cycle for 1-1000 policies, 4-256 domains.

    python -m bench.policies [--policies 1,10,100,1000] [--domains 4,64,256] [--samples 6]

One real Prometheus per host size scrapes a synthetic exporter (bench/synthetic.py: the real
exposition scaled to N domains on N CPUs) every second and evaluates, every second, the shipped
policy group as it ships (its rates first, shared by every policy) with N policies: the shipped
ones, cloned round-robin under new alert names until there are N, plus the shipped thresholds
and host rates. The policy file is swapped with /-/reload, so one Prometheus measures every
policy count on warm data. Figures are Prometheus's own, sampled once per evaluation: each
rule's `evaluationTime` (the rates apart from the policies) and each group's
`prometheus_rule_group_last_duration_seconds`; the median of the samples is reported, with
missed iterations and Prometheus's own CPU, memory and series.
"""

from __future__ import annotations

import argparse
import copy
import logging
import shutil
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from bench.common import REPO_ROOT, fmt, median, table, wait_for, write_results
from bench.synthetic import SyntheticExporter
from xensim.stack import Prometheus, run_prometheus

log = logging.getLogger(__name__)

RULES_DIR = REPO_ROOT / "prometheus" / "rules"
SHARED_RULE_FILES = ("recording.yml", "thresholds.yml")
POLICY_GROUP = "judicator-policies"
INTERVAL_SECONDS = 1.0
RATE_WINDOW_SECONDS = 5.0
READY_TIMEOUT_SECONDS = 90.0


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


def _evaluation_split(prometheus: Prometheus) -> tuple[float, float]:
    """Seconds of the last evaluation spent on recording rules and on alerting rules."""
    recording = alerting = 0.0
    for group in prometheus.rules():
        for rule in group["rules"]:
            seconds = float(rule.get("evaluationTime", 0.0))
            if rule.get("type") == "alerting":
                alerting += seconds
            else:
                recording += seconds
    return recording, alerting


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


def _policy_group_ready(prometheus: Prometheus, count: int, since: float) -> bool:
    for group in prometheus.rules():
        if group["name"] == POLICY_GROUP:
            evaluated = group.get("lastEvaluation", "")
            alerts = [rule for rule in group["rules"] if rule.get("type") == "alerting"]
            return (
                len(alerts) == count
                and not evaluated.startswith("0001")
                and all(rule.get("health") == "ok" for rule in group["rules"])
                and _epoch(evaluated) > since
            )
    return False


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


def measure_host(
    domains: int, policy_counts: Sequence[int], samples_per_point: int
) -> list[dict[str, Any]]:
    """Every policy count on one Prometheus scraping a synthetic host of `domains` domains."""
    points = []
    rules_dir = Path(tempfile.mkdtemp(prefix="judicator-bench-policies-"))
    try:
        for name in SHARED_RULE_FILES:
            shutil.copyfile(RULES_DIR / name, rules_dir / name)
        policies_file = rules_dir / "policies.yml"
        policies_file.write_text(yaml.safe_dump(policy_rules(policy_counts[0]), sort_keys=False))
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
            rule_files = [rules_dir / name for name in (*SHARED_RULE_FILES, "policies.yml")]
            with run_prometheus(yaml.safe_dump(config), rule_files=rule_files) as prometheus:
                # Every rate needs its window of samples before its cost is the steady one.
                wait_for(
                    lambda: prometheus.query("instance_domain:xen_perfc_interrupts:rate10s"),
                    timeout=60,
                    what="recorded rates",
                )
                time.sleep(RATE_WINDOW_SECONDS)
                for count in policy_counts:
                    points.append(
                        _measure_point(prometheus, policies_file, domains, count, samples_per_point)
                    )
    finally:
        shutil.rmtree(rules_dir, ignore_errors=True)
    return points


def _measure_point(
    prometheus: Prometheus, policies_file: Path, domains: int, count: int, samples: int
) -> dict[str, Any]:
    policies_file.write_text(yaml.safe_dump(policy_rules(count), sort_keys=False))
    reloaded = time.time()
    status, body = prometheus.request("POST", "/-/reload")
    if status != 200:
        raise RuntimeError(f"prometheus reload: HTTP {status}: {body!r}")
    try:
        wait_for(
            lambda: _policy_group_ready(prometheus, count, reloaded),
            timeout=READY_TIMEOUT_SECONDS,
            what=f"{count} policies evaluated",
        )
    except TimeoutError as error:
        # Too many rules for the cycle (or for this machine): say so, and go on.
        log.warning("%s policies over %s domains: %s", count, domains, error)
        return {
            "domains": domains,
            "policies": count,
            "unfinished": str(error),
            "rule_errors": _rule_errors(prometheus),
        }
    time.sleep(INTERVAL_SECONDS)  # one full cycle after the reload's first
    first = prometheus_metrics(prometheus)
    policy_durations: list[float] = []
    shared_durations: list[float] = []
    total_durations: list[float] = []
    started = time.monotonic()
    last = first
    for _ in range(samples):
        time.sleep(INTERVAL_SECONDS)
        last = prometheus_metrics(prometheus)
        durations = _group_values(last, "prometheus_rule_group_last_duration_seconds")
        recording, alerting = _evaluation_split(prometheus)
        policy_durations.append(alerting)
        shared_durations.append(recording)
        total_durations.append(sum(durations.values()))
    elapsed = time.monotonic() - started
    missed_before = _group_values(first, "prometheus_rule_group_iterations_missed_total")
    missed_after = _group_values(last, "prometheus_rule_group_iterations_missed_total")
    cpu = _one(last, "process_cpu_seconds_total") - _one(first, "process_cpu_seconds_total")
    point = {
        "domains": domains,
        "policies": count,
        "policy_eval_seconds": median(policy_durations),
        "shared_recording_eval_seconds": median(shared_durations),
        "total_eval_seconds": median(total_durations),
        "samples": len(policy_durations),
        "missed_iterations": sum(missed_after.values()) - sum(missed_before.values()),
        "prometheus_cpu_share": cpu / elapsed,
        "head_series": _one(last, "prometheus_tsdb_head_series"),
        "resident_bytes": _one(last, "process_resident_memory_bytes"),
        "scraped_samples": _one(last, "scrape_samples_scraped")
        if "scrape_samples_scraped" in last
        else None,
    }
    log.info("policies %s", point)
    return point


def report(points: list[dict[str, Any]]) -> list[str]:
    rows: list[list[object]] = []
    for p in points:
        if "unfinished" in p:
            unfinished = f"none in {READY_TIMEOUT_SECONDS:g} s"
            rows.append([p["domains"], p["policies"], "-", "-", unfinished, *["-"] * 6])
            continue
        total = p["total_eval_seconds"]
        rows.append(
            [
                p["domains"],
                p["policies"],
                fmt(p["shared_recording_eval_seconds"] * 1000, 3),
                fmt(p["policy_eval_seconds"] * 1000, 3),
                fmt(total * 1000, 3),
                fmt(p["policy_eval_seconds"] * 1e6 / p["policies"], 3),
                fmt(total / INTERVAL_SECONDS * 100, 3),
                int(p["missed_iterations"]),
                fmt(p["prometheus_cpu_share"] * 100, 3),
                int(p["head_series"]),
                fmt(p["resident_bytes"] / 2**20, 3),
            ]
        )
    return [
        table(
            "Rule evaluation per 1 s cycle (medians of Prometheus's rule evaluationTime and "
            "prometheus_rule_group_last_duration_seconds)",
            [
                "domains (=CPUs)",
                "policies",
                "shared recording ms",
                "policies ms",
                "total ms",
                "µs per policy",
                "% of the cycle",
                "missed cycles",
                "Prometheus CPU %",
                "head series",
                "Prometheus RSS MiB",
            ],
            rows,
        )
    ]


def run(
    policy_counts: Sequence[int] = (1, 10, 100, 1000),
    domain_counts: Sequence[int] = (4, 64, 256),
    samples: int = 6,
) -> list[str]:
    points: list[dict[str, Any]] = []
    for domains in domain_counts:
        points.extend(measure_host(domains, policy_counts, samples))
    tables = report(points)
    write_results(
        "policies",
        {
            "policy_counts": list(policy_counts),
            "domain_counts": list(domain_counts),
            "samples_per_point": samples,
            "scrape_and_evaluation_interval_seconds": INTERVAL_SECONDS,
        },
        points,
        tables,
    )
    return tables


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.policies", description=__doc__)
    parser.add_argument("--policies", type=_ints, default=[1, 10, 100, 1000])
    parser.add_argument("--domains", type=_ints, default=[4, 64, 256])
    parser.add_argument("--samples", type=int, default=6)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for text in run(args.policies, args.domains, args.samples):
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
