"""The shipped alertmanager.yml in a real Alertmanager 0.25: delivery to the remediator's webhook
(bearer token, timing, resolution) and inhibition. Routing per policy is `amtool config routes
test` in tools/check-configs."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.services import Alertmanager, run_alertmanager, wait_until

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "alertmanager" / "alertmanager.yml"
TOKEN = "rules-test-token"
POLICY_LABELS = {
    "alertname": "XenNetworkFloodPerfc",
    "severity": "remediate",
    "policy": "network_flood",
    "evidence": "perf_counters",
    "remediation": "network_shape",
    "rate": "1mbit",
    "burst": "32kb",
    "direction": "send",
    "domain": "guest1",
    "instance": "127.0.0.1:10170",
    "job": "xen",
}


class Webhook:
    """A stand-in for the remediator's POST /alerts: records each delivery and when it came."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[float, str, dict[str, Any]]] = []
        self.lock = threading.Lock()
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with webhook.lock:
                    webhook.deliveries.append(
                        (time.monotonic(), self.headers.get("Authorization", ""), json.loads(body))
                    )
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the test reports what matters."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"

    def received(self, status: str) -> list[tuple[float, str, dict[str, Any]]]:
        with self.lock:
            return [d for d in self.deliveries if d[2]["status"] == status]


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    thread = threading.Thread(target=hook.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        hook.server.shutdown()
        hook.server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def alertmanager(webhook: Webhook) -> Iterator[Alertmanager]:
    config = yaml.safe_load(SHIPPED.read_text())
    (receiver,) = [r for r in config["receivers"] if r["name"] == "judicator-remediator"]
    (hook,) = receiver["webhook_configs"]
    hook["url"] = webhook.url
    hook["http_config"]["authorization"]["credentials_file"] = "{workdir}/remediator.token"
    text = yaml.safe_dump(config, sort_keys=False)
    with run_alertmanager(text, files={"remediator.token": TOKEN + "\n"}) as manager:
        yield manager


def _alert(labels: dict[str, str], *, ends_in: float = 300) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "labels": labels,
        "annotations": {"summary": "test"},
        "startsAt": (now - timedelta(seconds=5)).isoformat(),
        "endsAt": (now + timedelta(seconds=ends_in)).isoformat(),
    }


def test_a_policy_alert_reaches_the_remediator_at_once_and_its_resolution_promptly(
    alertmanager: Alertmanager, webhook: Webhook
) -> None:
    sent = time.monotonic()
    alertmanager.post_alerts([_alert(POLICY_LABELS)])
    wait_until(lambda: webhook.received("firing"), timeout=10, what="the firing notification")
    arrived, authorization, payload = webhook.received("firing")[0]
    # group_wait 0s: well within the 1-2 s the policies promise (the rest is Prometheus's).
    assert arrived - sent < 2.0
    assert authorization == f"Bearer {TOKEN}"
    assert payload["receiver"] == "judicator-remediator"
    assert payload["groupLabels"] == {
        "alertname": "XenNetworkFloodPerfc",
        "domain": "guest1",
        "instance": "127.0.0.1:10170",
    }
    (alert,) = payload["alerts"]
    assert alert["labels"] == POLICY_LABELS
    assert alert["fingerprint"]

    # Resolution: Prometheus sends the alert with endsAt in the past.
    resolved_at = time.monotonic()
    alertmanager.post_alerts([_alert(POLICY_LABELS, ends_in=-1)])
    wait_until(lambda: webhook.received("resolved"), timeout=10, what="the resolved notification")
    arrived, _, payload = webhook.received("resolved")[0]
    # group_interval 1s: the release follows within a couple of seconds.
    assert arrived - resolved_at < 3.0
    assert payload["alerts"][0]["status"] == "resolved"
    assert payload["alerts"][0]["labels"]["domain"] == "guest1"


def test_each_guest_is_its_own_notification(alertmanager: Alertmanager, webhook: Webhook) -> None:
    alertmanager.post_alerts(
        [_alert({**POLICY_LABELS, "domain": "guest1"}), _alert({**POLICY_LABELS, "domain": "g2"})]
    )
    wait_until(lambda: len(webhook.received("firing")) >= 2, timeout=10, what="two notifications")
    domains = sorted(d[2]["groupLabels"]["domain"] for d in webhook.received("firing"))
    assert domains == ["g2", "guest1"]


def test_alerts_for_people_never_reach_the_remediator(
    alertmanager: Alertmanager, webhook: Webhook
) -> None:
    alertmanager.post_alerts(
        [
            _alert({"alertname": "XenDomainQuiet", "severity": "warning", "domain": "guest1"}),
            _alert({**POLICY_LABELS, "domain": "marker"}),
        ]
    )
    # Posted together, so a misrouted quiet alert would arrive with the marker; a second marker
    # sent after the first arrived closes the window for anything still on its way.
    wait_until(lambda: webhook.received("firing"), timeout=10, what="the first marker")
    alertmanager.post_alerts([_alert({**POLICY_LABELS, "domain": "marker2"})])
    wait_until(lambda: len(webhook.received("firing")) >= 2, timeout=10, what="the second marker")
    names = {a["labels"]["alertname"] for d in webhook.deliveries for a in d[2]["alerts"]}
    assert names == {"XenNetworkFloodPerfc"}


def test_a_paused_guest_does_not_also_page_for_being_quiet(alertmanager: Alertmanager) -> None:
    common = {"instance": "127.0.0.1:10170", "job": "xen"}
    alertmanager.post_alerts(
        [
            _alert({"alertname": "XenDomainPaused", "severity": "info", "domain": "g1", **common}),
            _alert(
                {"alertname": "XenDomainQuiet", "severity": "warning", "domain": "g1", **common}
            ),
            _alert(
                {"alertname": "XenDomainQuiet", "severity": "warning", "domain": "g2", **common}
            ),
        ]
    )

    def states() -> dict[tuple[str, str], dict[str, Any]]:
        return {
            (a["labels"]["alertname"], a["labels"]["domain"]): a["status"]
            for a in alertmanager.all_alerts()
        }

    wait_until(
        lambda: states().get(("XenDomainQuiet", "g1"), {}).get("state") == "suppressed",
        timeout=15,
        what="the paused guest's quiet alert to be inhibited",
    )
    current = states()
    assert current[("XenDomainQuiet", "g1")]["inhibitedBy"]
    assert current[("XenDomainQuiet", "g2")]["state"] == "active"
    assert current[("XenDomainPaused", "g1")]["state"] == "active"
