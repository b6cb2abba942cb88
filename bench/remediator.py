"""Remediator: webhook alerts accepted per second, and receipt -> throttle in place.

    python -m bench.remediator [--guests 100] [--single 20] [--flushes 30] [--results NAME]

Real, not dry-run: the remediator (hypercorn, the shipped deploy/remediator.yml bound to the host by
xensim.stack, with `limits.max_active_throttles` raised to let every throttle live) shapes real
vifs with tc in the Dom0 namespace of a simulated host with `--guests` guests (each its own
namespace and vif). Every throttle is a network_shape of 1mbit on what the guest sends.

1. one domain at a time: `--single` guests, one after the other, each waited for (the shipped
   routing's group, alertname + instance + domain: one alert per POST), then released;
2. every guest at once, in one notification: Alertmanager's group by (alertname, instance),
   every guest of the host flooding;
3. `--flushes` re-flushes of that group from 8 client threads: Alertmanager sends all of a
   group's alerts in each flush, so each POST carries `--guests` alerts (decision `duplicate`):
   the accepted alerts per second with batched POSTs;
4. the same alerts one per POST (the shipped routing's groups).

Receipt -> in place = the throttle's `created_at` (admitted, before the 200) to `applied_at`
(after the host shows it), from `judicator-remediator list --json --all`. The plans' commands'
own times (a `tc -batch -` is one) come from `judicator_remediator_command_duration_seconds`.
The remediator now reads domains through libxenctrl/libxenstore (the simulator's stub): the
simulator's Python `xl` (tens of milliseconds a call; Xen's is C) is no longer on the shaping
path; the base commit read `xl list -v` twice per throttle.

Run the base commit's bench first with `--results remediator-before`: its figures are shown
beside this run's (bench/results/remediator-before.json).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from bench.common import REPO_ROOT, fmt, percentile, table, wait_for, write_results
from remediator.config import Config

log = logging.getLogger(__name__)

CLIENT_THREADS = 8
INSTANCE = "127.0.0.1:10170"


def _alert(domain: str, status: str, now: str) -> tuple[dict[str, str], dict[str, Any]]:
    labels = {
        "alertname": "XenNetworkFloodPerfc",
        "severity": "remediate",
        "policy": "network_flood",
        "evidence": "perf_counters",
        "remediation": "network_shape",
        "rate": "1mbit",
        "burst": "32kb",
        "direction": "send",
        "domain": domain,
        "instance": INSTANCE,
        "job": "xen",
    }
    fingerprint = hashlib.sha256(json.dumps(labels, sort_keys=True).encode()).hexdigest()[:16]
    alert = {
        "status": status,
        "labels": labels,
        "annotations": {},
        "startsAt": now,
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.invalid/graph",
        "fingerprint": fingerprint,
    }
    return labels, alert


def group_payload(
    domains: Sequence[str], status: str = "firing", now: str | None = None
) -> dict[str, Any]:
    """One Alertmanager 0.25 webhook notification (version 4) for one group of alerts.

    One domain: the shipped routing's group (alertname, instance, domain). Several: a group by
    (alertname, instance), every guest of the host in one notification; Alertmanager sends all
    of a group's alerts in each flush, so a re-flush repeats them all.
    """
    now = now or datetime.now(UTC).isoformat().replace("+00:00", "Z")
    alerts = [_alert(d, status, now) for d in domains]
    common = dict(alerts[0][0])
    if len(domains) > 1:
        del common["domain"]
    group = {"alertname": common["alertname"], "instance": INSTANCE}
    if len(domains) == 1:
        group["domain"] = domains[0]
    return {
        "version": "4",
        "groupKey": '{}/{severity="remediate"}:'
        + "{"
        + ", ".join(f'{k}="{v}"' for k, v in sorted(group.items()))
        + "}",
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "judicator-remediator",
        "groupLabels": group,
        "commonLabels": common,
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.invalid",
        "alerts": [alert for _, alert in alerts],
    }


def alert_payload(domain: str, status: str = "firing", now: str | None = None) -> dict[str, Any]:
    """One notification of the shipped routing's group (alertname, instance, domain)."""
    return group_payload([domain], status, now)


def _post(remediator: Any, token: str, payload: dict[str, Any]) -> tuple[int, float, list[str]]:
    """POST one notification: (status, seconds, each alert's decision)."""
    started = time.perf_counter()
    status, body = remediator.request(
        "POST", "/alerts", body=payload, headers={"Authorization": f"Bearer {token}"}
    )
    elapsed = time.perf_counter() - started
    decisions: list[str] = []
    if status == 200:
        decisions = [str(d.get("decision", "")) for d in json.loads(body).get("alerts") or []]
    return status, elapsed, decisions


def _throttles(remediator: Any) -> dict[str, dict[str, Any]]:
    """The latest throttle of each domain."""
    latest: dict[str, dict[str, Any]] = {}
    for row in remediator.throttles(everything=True):
        if row["domain"] not in latest or row["id"] > latest[row["domain"]]["id"]:
            latest[row["domain"]] = row
    return latest


def _command_times(remediator: Any, token: str) -> dict[str, tuple[float, float]]:
    """program -> (count, mean seconds) from the remediator's own histogram."""
    status, body = remediator.request(
        "GET", "/metrics", headers={"Authorization": f"Bearer {token}"}
    )
    if status != 200:
        return {}
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(body.decode()):
        if family.name != "judicator_remediator_command_duration_seconds":
            continue
        for sample in family.samples:
            program = os.path.basename(sample.labels.get("program", "?"))
            if sample.name.endswith("_sum"):
                sums[program] = sums.get(program, 0.0) + sample.value
            elif sample.name.endswith("_count"):
                counts[program] = counts.get(program, 0.0) + sample.value
    return {p: (counts[p], sums.get(p, 0.0) / counts[p]) for p in counts if counts[p]}


def _latencies(rows: dict[str, dict[str, Any]], domains: Sequence[str]) -> list[float]:
    return [
        rows[d]["applied_at"] - rows[d]["created_at"]
        for d in domains
        if d in rows and rows[d].get("applied_at")
    ]


def run(
    guests: int = 100, single: int = 20, flushes: int = 30, results: str = "remediator"
) -> list[str]:
    from xensim.stack import (
        SHIPPED_REMEDIATOR_CONFIG,
        render_remediator_config,
        run_remediator,
        simulated_host,
    )

    name = f"brem{os.getpid() % 100_000}"
    token = secrets.token_urlsafe(32)
    load_before = os.getloadavg()
    with simulated_host(name, dom0_netns=True, cpus=4, guests=guests, seed=7) as host:
        config = render_remediator_config(
            yaml.safe_load(SHIPPED_REMEDIATOR_CONFIG.read_text()),
            instance=INSTANCE,
            host_env=host.env,
            hold_seconds=600,
        )
        config["limits"]["max_active_throttles"] = guests + single
        with run_remediator(
            config, token=token, host_env=host.env, netns=host.dom0_netns
        ) as remediator:
            names = sorted(host.guests, key=lambda g: host.guests[g].domid)
            one_at_a_time = names[:single]
            for domain in one_at_a_time:
                status, _, _ = _post(remediator, token, alert_payload(domain))
                if status != 200:
                    raise RuntimeError(f"remediator answered {status} for {domain}")
                wait_for(
                    lambda d=domain: _throttles(remediator).get(d, {}).get("applied_at"),
                    timeout=60,
                    what=f"{domain} shaped",
                    interval=0.02,
                )
            single_rows = _throttles(remediator)
            single_commands = _command_times(remediator, token)
            # Release the first ones, so every guest is a fresh throttle in the burst.
            ids = [str(single_rows[d]["id"]) for d in one_at_a_time]
            _release(remediator, ids)
            wait_for(
                lambda: (
                    not any(
                        r["state"] not in ("released",)
                        for d, r in _throttles(remediator).items()
                        if d in one_at_a_time
                    )
                ),
                timeout=120,
                what="the single-domain throttles released",
                interval=0.2,
            )
            # 2. Every guest at once, in one notification (a group by alertname, instance).
            burst = names[:guests]
            group = group_payload(burst)
            burst_answer = _post(remediator, token, group)
            first_new = max(int(i) for i in ids)
            wait_for(
                lambda: (
                    len(
                        [
                            r
                            for d, r in _throttles(remediator).items()
                            if d in burst and r["applied_at"] and r["id"] > first_new
                        ]
                    )
                    == len(burst)
                ),
                timeout=300,
                what=f"{len(burst)} guests shaped",
                interval=0.1,
            )
            burst_rows = _throttles(remediator)
            burst_commands = _command_times(remediator, token)
            # 3. Alertmanager's re-flushes of that group (every alert again, `duplicate`).
            started = time.perf_counter()
            with ThreadPoolExecutor(CLIENT_THREADS) as pool:
                batched = list(pool.map(lambda _: _post(remediator, token, group), range(flushes)))
            batched_seconds = time.perf_counter() - started
            # 4. The shipped routing's groups: one alert per POST.
            singles = [alert_payload(d, now=group["alerts"][0]["startsAt"]) for d in burst]
            started = time.perf_counter()
            with ThreadPoolExecutor(CLIENT_THREADS) as pool:
                one_each = list(pool.map(lambda p: _post(remediator, token, p), singles))
            one_each_seconds = time.perf_counter() - started
            shaped = len(host.shaped_links())
    figures = {
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "single": {
            "latencies": _latencies(single_rows, one_at_a_time),
            "commands": single_commands,
        },
        "burst": {
            "domains": len(burst),
            "status": burst_answer[0],
            "accepted": burst_answer[2].count("accepted"),
            "response_seconds": burst_answer[1],
            "latencies": _latencies(burst_rows, burst),
            "shaped_vifs_seen": shaped,
            "commands": burst_commands,
        },
        "batched": {
            "posts": flushes,
            "alerts_per_post": len(burst),
            "statuses": sorted({s for s, _, _ in batched}),
            "decisions": sorted({d for _, _, ds in batched for d in ds}),
            "alerts_per_second": flushes * len(burst) / batched_seconds,
            "response_seconds": [t for _, t, _ in batched],
        },
        "one_per_post": {
            "posts": len(singles),
            "statuses": sorted({s for s, _, _ in one_each}),
            "decisions": sorted({d for _, _, ds in one_each for d in ds}),
            "alerts_per_second": len(singles) / one_each_seconds,
            "response_seconds": [t for _, t, _ in one_each],
        },
        "workers": config["limits"].get("workers", Config.workers),
    }
    tables = report(figures, _previous(f"{results}-before"))
    write_results(
        results,
        {
            "guests": guests,
            "single": single,
            "flushes": flushes,
            "client_threads": CLIENT_THREADS,
            "action": "network_shape 1mbit send (ifb + tbf + ingress redirect)",
        },
        figures,
        tables,
    )
    return tables


def _previous(name: str) -> dict[str, Any] | None:
    """The figures of an earlier run (the base commit's, run first) to show beside these."""
    path = REPO_ROOT / "bench" / "results" / f"{name}.json"
    if not path.exists():
        return None
    document: dict[str, Any] = json.loads(path.read_text())
    return document


def _release(remediator: Any, ids: list[str]) -> None:
    """`judicator-remediator release ID...`: the running server acts within a second."""
    argv = [
        sys.executable,
        "-m",
        "remediator",
        "--config.file",
        str(remediator.config_file),
        "release",
        *ids,
    ]
    subprocess.run(argv, check=True, timeout=60, cwd=REPO_ROOT, capture_output=True)


def _goals(figures: dict[str, Any]) -> list[str]:
    ms = 1000.0

    def q(values: list[float], fraction: float) -> str:
        value = percentile(values, fraction)
        return fmt(None if value is None else value * ms, 3)

    single, burst = figures["single"]["latencies"], figures["burst"]["latencies"]
    return [
        fmt(figures["batched"]["alerts_per_second"], 4),
        fmt(figures["one_per_post"]["alerts_per_second"], 3),
        f"{q(single, 0.5)} / {q(single, 0.99)}",
        f"{q(burst, 0.5)} / {q(burst, 0.99)}",
    ]


def report(figures: dict[str, Any], before: dict[str, Any] | None = None) -> list[str]:
    burst, batched = figures["burst"], figures["batched"]
    guests = burst["domains"]
    headers = [
        "run",
        f"alerts/s, {batched['alerts_per_post']} a POST",
        "alerts/s, 1 a POST",
        "1 guest p50 / p99 ms",
        f"{guests} at once p50 / p99 ms",
    ]
    rows = [["goal", ">= 1000", "-", "- / <= 100", "- / <= 2000"]]
    if before is not None:
        load = before["figures"].get("load_average_before", before["machine"]["loadavg_at_start"])
        rows.append([f"before (load {load[0]:.1f})", *_goals(before["figures"])])
    rows.append([f"now (load {figures['load_average_before'][0]:.1f})", *_goals(figures)])
    command_rows = [
        [program, int(count), fmt(mean * 1000.0, 3)]
        for program, (count, mean) in sorted(burst["commands"].items())
    ]
    return [
        table(
            "Remediator: alerts accepted per second, receipt -> throttle in place "
            f"({figures['workers']} workers, real tc in the Dom0 namespace, load = 1-min average)",
            headers,
            rows,
        ),
        table(
            "Remediator plan commands up to the burst, mean ms per call (a batch is one call)",
            ["program", "calls", "mean ms"],
            command_rows,
        ),
        f"\n{guests} alerts in one POST answered in {burst['response_seconds'] * 1000:.1f} ms "
        f"(status {burst['status']}, {burst['accepted']} accepted); re-flushes: "
        f"{batched['decisions']}, 1 a POST: {figures['one_per_post']['decisions']}",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.remediator", description=__doc__)
    parser.add_argument("--guests", type=int, default=100)
    parser.add_argument("--single", type=int, default=20)
    parser.add_argument("--flushes", type=int, default=30)
    parser.add_argument(
        "--results",
        default="remediator",
        help="bench/results/NAME.json; NAME-before.json, if there, is shown beside it",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for text in run(args.guests, args.single, args.flushes, args.results):
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
