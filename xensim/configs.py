"""The shipped configuration (prometheus.yml, alertmanager.yml, deploy/remediator.yml), rendered
for one simulated stack: its ports, token files, paths and 1 s intervals. The policies are
never changed.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from xensim.services import REPO_ROOT, ServiceError

SHIPPED_PROMETHEUS_CONFIG = REPO_ROOT / "prometheus" / "prometheus.yml"
SHIPPED_RULES_DIR = REPO_ROOT / "prometheus" / "rules"
SHIPPED_ALERTMANAGER_CONFIG = REPO_ROOT / "alertmanager" / "alertmanager.yml"
SHIPPED_REMEDIATOR_CONFIG = REPO_ROOT / "deploy" / "remediator.yml"
REMEDIATOR_RECEIVER = "judicator-remediator"

# The demo, the tests and the benchmarks scrape and evaluate every second, so that a throttle
# shows within seconds; the shipped prometheus.yml's production intervals
# (docs/policies.md#production-settings) are the same since 2026-12-01, and a run on a
# simulated host still sets these, whatever the shipped file says.
INTERVAL_SETTINGS = ("scrape_interval", "scrape_timeout", "evaluation_interval")
SIMULATION_INTERVALS = dict.fromkeys(INTERVAL_SETTINGS, "1s")


def render_prometheus_config(
    shipped: Mapping[str, Any],
    *,
    targets: Mapping[str, str],
    rules_dir: Path,
    credentials_files: Mapping[str, Path] | None = None,
    intervals: Mapping[str, str] = SIMULATION_INTERVALS,
) -> dict[str, Any]:
    """The shipped prometheus.yml with each job's target replaced and the rules made absolute.

    `targets` maps a job name to its "host:port"; "{listen}" stands for Prometheus's own.
    `credentials_files` maps a job name to the bearer token file it scrapes with (the shipped
    one names /etc/judicator/…, which a simulated host does not have). `intervals` replace the
    shipped global intervals (the simulation's 1 s unless told otherwise). Jobs and rules stay
    as shipped.
    """
    settings: dict[str, Any] = json.loads(json.dumps(shipped))
    settings["global"] = {**settings.get("global", {}), **intervals}
    jobs = {job["job_name"]: job for job in settings.get("scrape_configs", [])}
    missing = sorted(set(targets) - set(jobs))
    if missing:
        raise ServiceError(f"the shipped prometheus.yml has no job {', '.join(missing)}")
    for job_name, target in targets.items():
        jobs[job_name]["static_configs"] = [{"targets": [target]}]
    for job_name, path in (credentials_files or {}).items():
        jobs[job_name].setdefault("authorization", {})["credentials_file"] = str(path)
    settings["rule_files"] = [
        str(rules_dir / Path(pattern).name) for pattern in settings.get("rule_files", [])
    ]
    return settings


def render_alertmanager_config(
    shipped: Mapping[str, Any], *, remediator_url: str, token_file: str
) -> dict[str, Any]:
    """The shipped alertmanager.yml with the remediator's webhook URL and token file replaced."""
    settings: dict[str, Any] = json.loads(json.dumps(shipped))
    receivers = [r for r in settings.get("receivers", []) if r["name"] == REMEDIATOR_RECEIVER]
    if len(receivers) != 1 or len(receivers[0].get("webhook_configs", [])) != 1:
        raise ServiceError(
            f"the shipped alertmanager.yml needs one {REMEDIATOR_RECEIVER} webhook receiver"
        )
    webhook = receivers[0]["webhook_configs"][0]
    webhook["url"] = remediator_url
    webhook.setdefault("http_config", {}).setdefault("authorization", {})
    webhook["http_config"]["authorization"]["credentials_file"] = token_file
    return settings


def render_remediator_config(
    shipped: Mapping[str, Any],
    *,
    instance: str,
    host_env: Mapping[str, str],
    hold_seconds: float,
) -> dict[str, Any]:
    """The shipped deploy/remediator.yml bound to this stack and simulated host.

    Its state and token go into its workdir; the toolstack is the simulated host's xl and sysfs;
    the hold is short (a demo wants to see the release). Bounds and actions stay as shipped.
    """
    settings: dict[str, Any] = json.loads(json.dumps(shipped))
    settings["instances"] = [instance]
    settings["state_path"] = "{workdir}/throttles.sqlite"
    settings.setdefault("auth", {})["bearer_token_file"] = "{workdir}/remediator.token"
    hold = settings.setdefault("hold", {})
    hold["base"] = f"{hold_seconds:g}s"
    hold["max"] = f"{max(hold_seconds * 4, 1):g}s"
    settings["paths"] = {
        "xl": host_env["XENSIM_XL"],
        "tc": shutil.which("tc") or "/usr/sbin/tc",
        "ip": shutil.which("ip") or "/usr/sbin/ip",
        "sysfs": host_env["XENSIM_SYSFS"],
    }
    return settings
