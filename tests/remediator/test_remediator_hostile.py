"""Hostile and broken input: the right status, a recorded refusal, and no command run."""

from __future__ import annotations

import json

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.remediator.fakehost import FakeHost
from tests.remediator.helpers import AUTH, alert, engine_of, payload, settle


def post(client: FlaskClient, body: bytes, headers: dict[str, str] | None = None) -> int:
    response = client.post(
        "/alerts", data=body, headers=AUTH if headers is None else headers,
        content_type="application/json",
    )  # fmt: skip
    return response.status_code


def last_decision(app: Flask) -> dict[str, object]:
    return engine_of(app).store.decisions(1)[0]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "malformed"),
        (b"\xff\xfe\x00garbage", "malformed"),
        (b"[]", "malformed"),
        (b'"just a string"', "malformed"),
        (b"[" * 100_00 + b"]" * 100_00, "malformed"),
        (payload(alert(), version="3"), "version"),
        (payload(alert(), version=4), "version"),
        (json.dumps({"version": "4"}).encode(), "malformed"),
        (json.dumps({"version": "4", "alerts": {"a": 1}}).encode(), "malformed"),
        (json.dumps({"version": "4", "alerts": [1]}).encode(), "malformed"),
        (payload({**alert(), "status": "exploded"}), "malformed"),
        (payload({**alert(), "labels": {"domain": ["web01"]}}), "malformed"),
        (payload({**alert(), "labels": {"domain": None}}), "malformed"),
        (payload(alert(), truncatedAlerts=-1), "malformed"),
    ],
)
def test_a_payload_we_can_never_accept_gets_400_and_a_recorded_rejection(
    app: Flask, client: FlaskClient, fake_host: FakeHost, body: bytes, reason: str
) -> None:
    assert post(client, body) == 400
    decision = last_decision(app)
    assert (decision["decision"], decision["reason"]) == ("rejected", reason)
    settle(app)
    assert fake_host.calls == [] and fake_host.observations <= 1


def test_a_huge_body_gets_413_without_being_read_whole(
    app: Flask, client: FlaskClient, fake_host: FakeHost
) -> None:
    huge = payload(alert(), padding="x" * 200_000)  # limit is 64 KiB in the test config
    assert post(client, huge) == 413
    assert last_decision(app)["reason"] == "too_large"
    assert fake_host.calls == []


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Basic czNjcmV0"},
        {"Authorization": AUTH["Authorization"] + "x"},
        {"Authorization": AUTH["Authorization"].lower()},
    ],
)
def test_without_the_right_token_nothing_is_read(
    client: FlaskClient, fake_host: FakeHost, headers: dict[str, str]
) -> None:
    assert post(client, payload(alert()), headers) == 401
    assert fake_host.calls == []


@pytest.mark.parametrize(
    ("labels", "reason"),
    [
        ({"domain": "web01; rm -rf /"}, "bad_domain"),
        ({"domain": "$(reboot)"}, "bad_domain"),
        ({"domain": "`id`"}, "bad_domain"),
        ({"domain": "../../etc/passwd"}, "bad_domain"),
        ({"domain": "web01\n"}, "bad_domain"),
        ({"domain": "web\x0001"}, "bad_domain"),
        ({"domain": "wéb01"}, "bad_domain"),
        ({"domain": "web01 "}, "bad_domain"),
        ({"domain": "-c"}, "bad_domain"),
        ({"domain": ""}, "bad_domain"),
        ({"domain": "Domain-0"}, "protected_domain"),
        ({"domain": "infra"}, "protected_domain"),
        ({"remediation": "reboot"}, "unknown_action"),
        ({"remediation": "network_shape; ls"}, "unknown_action"),
        ({"rate": "1mbit; ls"}, "bad_parameter"),
        ({"rate": "1mbit burst 1 dev lo"}, "bad_parameter"),
        ({"rate": "1kbit"}, "bad_parameter"),  # below rate_min
        ({"rate": "100gbit"}, "bad_parameter"),  # above rate_max
        ({"rate": "-1mbit"}, "bad_parameter"),
        ({"burst": "99999mb"}, "bad_parameter"),
        ({"direction": "sideways"}, "bad_parameter"),
        ({"remediation": "cpu_cap", "cap": "0"}, "bad_parameter"),
        ({"remediation": "cpu_cap", "cap": "401"}, "bad_parameter"),
        ({"remediation": "cpu_cap", "cap": "50 -d 0"}, "bad_parameter"),
        ({"remediation": "cpu_cap", "cap": "\uff15\uff10"}, "bad_parameter"),
        ({"remediation": "cpu_pin", "cpus": "0"}, "bad_parameter"),  # outside 2-3
        ({"remediation": "cpu_pin", "cpus": "all"}, "bad_parameter"),
        ({"remediation": "cpu_pin", "cpus": "2,^3"}, "bad_parameter"),
        ({"remediation": "command", "command": "../../bin/sh"}, "bad_parameter"),
        ({"remediation": "command", "command": "undefined"}, "bad_parameter"),
    ],
)
def test_unsafe_or_out_of_bounds_labels_are_refused_and_recorded(
    app: Flask,
    client: FlaskClient,
    fake_host: FakeHost,
    labels: dict[str, str],
    reason: str,
) -> None:
    response = client.post("/alerts", data=payload(alert(**labels)), headers=AUTH)
    assert response.status_code == 200  # accepted as a notification; the alert is refused
    answer = response.get_json()["alerts"][0]
    assert (answer["decision"], answer["reason"]) == ("refused", reason)
    decision = last_decision(app)
    assert (decision["decision"], decision["reason"]) == ("refused", reason)
    settle(app)
    assert fake_host.calls == []
    assert fake_host.observations <= 1  # the reconcile at start; never for the alert


def test_an_alert_for_another_host_is_ignored_and_recorded(
    app: Flask, client: FlaskClient, fake_host: FakeHost
) -> None:
    response = client.post("/alerts", data=payload(alert(instance="dom0-b:10170")), headers=AUTH)
    assert response.status_code == 200
    assert response.get_json()["alerts"][0]["decision"] == "ignored"
    assert last_decision(app)["reason"] == "other_host"
    settle(app)
    assert fake_host.calls == []


def test_an_unknown_domain_is_refused_after_looking_and_nothing_runs(
    app: Flask, client: FlaskClient, fake_host: FakeHost
) -> None:
    assert post(client, payload(alert(domain="ghost42"))) == 200
    settle(app)
    assert fake_host.calls == []
    ended = engine_of(app).store.recent(1)[0]
    assert (ended.state, ended.end_reason) == ("failed", "unknown_domain")


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    body=st.one_of(
        st.binary(max_size=300),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=20),
            lambda children: (
                st.lists(children, max_size=4)
                | st.dictionaries(st.text(max_size=10), children, max_size=4)
            ),
            max_leaves=20,
        ).map(lambda v: json.dumps(v).encode()),
        st.builds(
            lambda labels, status, fp: payload(
                {**alert(), "labels": labels, "status": status, "fingerprint": fp}
            ),
            st.dictionaries(
                st.sampled_from(
                    [
                        "domain",
                        "instance",
                        "remediation",
                        "rate",
                        "cap",
                        "cpus",
                        "command",
                        "direction",
                        "burst",
                    ]
                ),
                st.text(max_size=30),
            ),
            st.sampled_from(["firing", "resolved", "bogus"]),
            st.text(max_size=20),
        ),
    )
)
def test_property_arbitrary_payloads_never_run_a_command_or_fail_with_5xx(
    app: Flask, client: FlaskClient, fake_host: FakeHost, body: bytes
) -> None:
    # None of these can name a running guest on this host (instance is random or absent).
    status = post(client, body)
    assert status in (200, 400)
    assert fake_host.calls == []
    assert engine_of(app).store.live() == [] or all(
        t.domain not in fake_host.domains for t in engine_of(app).store.live()
    )
