"""Payloads recorded from a real Alertmanager 0.25 (tests/fixtures/alertmanager/README.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from remediator.alerts import parse_notification
from tests.remediator.fakehost import FakeDomain, FakeHost
from tests.remediator.helpers import AUTH, engine_of, settle

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "alertmanager"


def fixture(name: str) -> bytes:
    return (FIXTURES / f"{name}.json").read_bytes()


@pytest.mark.parametrize(
    ("name", "group_status", "alerts", "truncated"),
    [
        ("firing", "firing", [("guest1", "firing")], 0),
        ("resolved", "resolved", [("guest1", "resolved")], 0),
        ("mixed", "firing", [("guest2", "resolved"), ("guest3", "firing")], 0),
        ("truncated", "firing", [("guest1", "firing"), ("guest2", "firing")], 1),
    ],
)
def test_recorded_payloads_parse(
    name: str, group_status: str, alerts: list[tuple[str, str]], truncated: int
) -> None:
    notification = parse_notification(fixture(name))
    assert notification.status == group_status
    assert notification.truncated_alerts == truncated
    assert [(a.labels["domain"], a.status) for a in notification.alerts] == alerts
    assert all(len(a.fingerprint) == 16 for a in notification.alerts)


def test_the_recorded_user_agent_is_alertmanager_0_25() -> None:
    headers = json.loads((FIXTURES / "headers.json").read_text())
    assert headers["User-Agent"] == "Alertmanager/0.25.0"


def test_recorded_sequence_applies_and_releases_per_alert(
    app: Flask, client: FlaskClient, fake_host: FakeHost, clock: object
) -> None:
    for number, name in enumerate(("guest1", "guest2", "guest3"), start=1):
        dom = FakeDomain(name, 20 + number)
        fake_host.domains[name] = dom
        fake_host.plug(dom)
    answer = client.post("/alerts", data=fixture("firing"), headers=AUTH).get_json()
    assert [a["decision"] for a in answer["alerts"]] == ["accepted"]
    settle(app)
    assert fake_host.shaped("guest1")
    answer = client.post("/alerts", data=fixture("resolved"), headers=AUTH).get_json()
    assert [a["decision"] for a in answer["alerts"]] == ["scheduled_release"]
    # mixed: guest2 was never throttled here, guest3 gets its cap
    answer = client.post("/alerts", data=fixture("mixed"), headers=AUTH).get_json()
    assert [a["decision"] for a in answer["alerts"]] == ["not_throttled", "accepted"]
    settle(app)
    assert fake_host.domains["guest3"].cap == 50
    assert fake_host.domains["guest2"].cap == 0
    live = {(t.domain, t.kind) for t in engine_of(app).store.live()}
    assert live == {("guest1", "network_shape"), ("guest3", "cpu_cap")}


@pytest.mark.parametrize(
    ("sent", "canonical"),
    [
        ("2026-11-26T14:40:01.12345Z", "2026-11-26T14:40:01.12345Z"),  # Go's RFC3339Nano
        ("2026-11-26T14:40:01.123450Z", "2026-11-26T14:40:01.12345Z"),  # Python's isoformat
        ("2026-11-26T14:40:01.123450000Z", "2026-11-26T14:40:01.12345Z"),
        ("2026-11-26T15:40:01.12345+01:00", "2026-11-26T14:40:01.12345Z"),
        ("2026-11-26T14:40:01.000Z", "2026-11-26T14:40:01Z"),
        ("2026-11-26t14:40:01z", "2026-11-26T14:40:01Z"),
        ("2026-11-26T14:40:01.123456789Z", "2026-11-26T14:40:01.123456789Z"),  # nanoseconds kept
        ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00Z"),  # Go's zero time
        ("0001-01-01T00:00:00+01:00", "0001-01-01T00:00:00+01:00"),  # before year 1: as sent
        ("2026-02-31T00:00:00Z", "2026-02-31T00:00:00Z"),  # no such day: as sent
        ("yesterday", "yesterday"),
    ],
)
def test_an_episode_start_has_one_spelling_per_instant(sent: str, canonical: str) -> None:
    body = {"version": "4", "alerts": [{"status": "firing", "fingerprint": "ab", "startsAt": sent}]}
    (parsed,) = parse_notification(json.dumps(body).encode()).alerts
    assert parsed.starts_at == canonical
