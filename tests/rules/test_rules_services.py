"""The test helper itself: real Prometheus and Alertmanager start, answer, and leave nothing."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.services import ServiceDied, run_alertmanager, run_prometheus, wait_until

SELF_SCRAPE = """
global: {scrape_interval: 1s, evaluation_interval: 1s}
scrape_configs:
  - job_name: self
    static_configs: [{targets: ["127.0.0.1:1"]}]
"""

RULES = """
groups:
  - name: helper
    interval: 1s
    rules:
      - alert: AlwaysFiring
        expr: vector(1)
        labels: {severity: test}
"""

AM_CONFIG = """
route: {receiver: blackhole, group_wait: 0s}
receivers: [{name: blackhole}]
"""


def _listens(port: int, netns: str | None = None) -> bool:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    out = subprocess.run(
        [*prefix, "ss", "-Hltn", f"sport = :{port}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout
    return bool(out.strip())


def test_prometheus_evaluates_rules_and_answers_queries(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES)
    with run_prometheus(SELF_SCRAPE, rule_files=[rules]) as prom:
        workdir, port = prom.workdir, prom.port
        assert prom.query("1 + 1") == [({}, 2.0)]
        firing = wait_until(
            lambda: [a for a in prom.alerts() if a["state"] == "firing"],
            timeout=30,
            what="AlwaysFiring to fire",
        )
        assert firing[0]["labels"] == {"alertname": "AlwaysFiring", "severity": "test"}
        assert [g["name"] for g in prom.rules()] == ["helper"]
    assert not workdir.exists()
    assert not _listens(port)


def test_alertmanager_accepts_alerts_and_cleans_up() -> None:
    with run_alertmanager(AM_CONFIG) as am:
        workdir, pid = am.workdir, am.process.pid
        am.post_alerts([{"labels": {"alertname": "Probe", "domain": "guest1"}}])
        alerts = wait_until(am.alerts, timeout=20, what="the posted alert")
        assert alerts[0]["labels"] == {"alertname": "Probe", "domain": "guest1"}
    assert not workdir.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_failed_start_reports_the_output_and_cleans_up() -> None:
    with (
        pytest.raises(ServiceDied, match="no_such_field") as caught,
        run_prometheus({"scrape_configs": [{"no_such_field": 1}]}, ready_timeout=20),
    ):
        pass
    assert "prometheus exited" in str(caught.value)
    assert not list(Path(tempfile.gettempdir()).glob(f"judicator-prometheus-{os.getpid()}-*"))


def test_services_inside_a_namespace_are_queried_from_the_root_namespace(
    netns: str, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES)
    with (
        run_alertmanager(AM_CONFIG, netns=netns) as am,
        run_prometheus(
            SELF_SCRAPE, rule_files=[rules], netns=netns, alertmanager=am.address
        ) as prom,
    ):
        assert not _listens(prom.port), "the port must be inside the namespace only"
        assert _listens(prom.port, netns)
        assert prom.query("vector(3)") == [({}, 3.0)]
        alerts = wait_until(am.alerts, timeout=30, what="Prometheus to deliver AlwaysFiring")
        assert alerts[0]["labels"]["alertname"] == "AlwaysFiring"
