"""The webhook end to end against the fake host: admission, action, hold, release, replays."""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask
from flask.testing import FlaskClient

from tests.remediator.fakehost import FakeHost
from tests.remediator.helpers import AUTH, Clock, alert, engine_of, payload, settle


def post(client: FlaskClient, body: bytes, headers: dict[str, str] | None = None) -> tuple:
    response = client.post(
        "/alerts", data=body, headers=AUTH if headers is None else headers,
        content_type="application/json",
    )  # fmt: skip
    return response.status_code, response.get_json(silent=True)


def test_firing_network_alert_shapes_every_vif_then_resolution_releases_after_hold(
    app: Flask, client: FlaskClient, fake_host: FakeHost, clock: Clock
) -> None:
    status, body = post(client, payload(alert()))
    assert status == 200
    assert body["alerts"][0]["decision"] == "accepted"
    settle(app)
    assert fake_host.shaped("web01")  # vif7.0 and vif7.0-emu, both into one ifb
    assert "jifb7" in fake_host.links
    assert fake_host.clean("web02")
    throttle = engine_of(app).store.live()[0]
    assert throttle.state == "active"

    status, body = post(client, payload(alert("resolved")))
    assert (status, body["alerts"][0]["decision"]) == (200, "scheduled_release")
    settle(app)
    assert fake_host.shaped("web01"), "released before the hold ran out"
    clock.now += 1.01  # hold.base = 1s for a first offence
    settle(app)
    assert fake_host.clean("web01")
    assert engine_of(app).store.live() == []
    ended = engine_of(app).store.get(throttle.id)
    assert ended is not None and (ended.state, ended.end_reason) == ("released", "resolved")


def test_replaying_the_same_payload_100_times_changes_nothing_after_the_first(
    app: Flask, client: FlaskClient, fake_host: FakeHost
) -> None:
    body = payload(alert(), alert(domain="batch03", fingerprint="00000000000000bb",
                                  remediation="cpu_cap", cap="50"))  # fmt: skip
    assert post(client, body)[0] == 200
    settle(app)
    calls_after_first = list(fake_host.calls)
    assert calls_after_first and fake_host.domains["batch03"].cap == 50
    for _ in range(100):
        status, answer = post(client, body)
        assert status == 200
        assert {a["decision"] for a in answer["alerts"]} == {"duplicate"}
    settle(app)
    assert fake_host.calls == calls_after_first
    assert len(engine_of(app).store.live()) == 2


def test_cpu_cap_uses_the_domains_scheduler_and_restores_the_previous_cap(
    app: Flask, client: FlaskClient, fake_host: FakeHost, clock: Clock
) -> None:
    fake_host.domains["batch03"].cap = 300  # an operator's own cap, to be restored
    post(client, payload(alert(domain="batch03", remediation="cpu_cap", cap="50")))
    settle(app)
    assert fake_host.domains["batch03"].cap == 50
    assert ("xl", "sched-credit", "-d", "9", "-c", "50") in fake_host.calls
    post(client, payload(alert("resolved", domain="batch03", remediation="cpu_cap", cap="50")))
    clock.now += 2
    settle(app)
    assert fake_host.domains["batch03"].cap == 300


def test_pause_and_unpause_balance_even_when_someone_else_paused_too(
    app: Flask, client: FlaskClient, fake_host: FakeHost, clock: Clock
) -> None:
    fake_host.domains["web02"].pauses = 1  # an operator's pause, not ours
    post(client, payload(alert(domain="web02", remediation="pause")))
    settle(app)
    assert fake_host.domains["web02"].pauses == 2
    post(client, payload(alert(domain="web02", remediation="pause")))  # duplicate
    settle(app)
    assert fake_host.domains["web02"].pauses == 2
    post(client, payload(alert("resolved", domain="web02", remediation="pause")))
    clock.now += 2
    settle(app)
    assert fake_host.domains["web02"].pauses == 1, "we must undo only our own pause"
    assert [c for c in fake_host.calls if c[1] in ("pause", "unpause")] == [
        ("xl", "pause", "8"),
        ("xl", "unpause", "8"),
    ]


def test_cpu_pin_restores_each_vcpus_previous_affinity(
    app: Flask, client: FlaskClient, fake_host: FakeHost, clock: Clock
) -> None:
    fake_host.domains["batch03"].affinity = ["0", "1", "all", "0-1"]
    post(client, payload(alert(domain="batch03", remediation="cpu_pin", cpus="3")))
    settle(app)
    assert fake_host.domains["batch03"].affinity == ["3"] * 4
    post(client, payload(alert("resolved", domain="batch03", remediation="cpu_pin", cpus="3")))
    clock.now += 2
    settle(app)
    assert fake_host.domains["batch03"].affinity == ["0", "1", "all", "0-1"]


def test_operator_command_gets_validated_values_in_its_environment_only(
    app: Flask, client: FlaskClient, fake_host: FakeHost, clock: Clock
) -> None:
    post(client, payload(alert(domain="web02", remediation="command", command="notify")))
    settle(app)
    assert fake_host.calls == [("/usr/local/bin/notify", "--on")]
    post(client, payload(alert("resolved", domain="web02", remediation="command")))
    clock.now += 2
    settle(app)
    assert fake_host.calls[-1] == ("/usr/local/bin/notify", "--off")


def test_each_alert_is_judged_by_its_own_status_not_the_groups(
    app: Flask, client: FlaskClient, fake_host: FakeHost, clock: Clock
) -> None:
    post(client, payload(alert(domain="web02", fingerprint="00000000000000f2")))
    settle(app)
    mixed = payload(
        alert("resolved", domain="web02", fingerprint="00000000000000f2"),
        alert("firing", domain="batch03", fingerprint="00000000000000f3",
              remediation="cpu_cap", cap="20"),
    )  # fmt: skip
    status, body = post(client, mixed)
    assert status == 200
    assert [a["decision"] for a in body["alerts"]] == ["scheduled_release", "accepted"]
    clock.now += 2
    settle(app)
    assert fake_host.clean("web02")
    assert fake_host.domains["batch03"].cap == 20


def test_a_repeat_offender_is_held_longer_each_time_up_to_the_cap(
    app: Flask, client: FlaskClient, fake_host: FakeHost, clock: Clock
) -> None:
    holds = []
    for episode in range(4):
        start = f"2026-11-26T12:0{episode}:00Z"
        post(client, payload(alert(domain="web02", starts_at=start)))
        settle(app)
        post(client, payload(alert("resolved", domain="web02", starts_at=start)))
        (throttle,) = engine_of(app).store.live()
        assert throttle.release_at is not None and throttle.resolved_at is not None
        holds.append(throttle.release_at - throttle.resolved_at)
        clock.now += holds[-1] + 0.01
        settle(app)
        assert fake_host.clean("web02")
    assert holds == [1.0, 2.0, 3.0, 3.0]  # base 1s, factor 2, max 3s


def test_max_duration_releases_without_resolution_and_a_resend_does_not_reapply(
    make_app: Callable[..., Flask], fake_host: FakeHost, clock: Clock
) -> None:
    app = make_app(hold={"base": "1s", "max": "1s", "max_throttle": "10s"})
    client = app.test_client()
    post(client, payload(alert(domain="web02")))
    settle(app)
    assert fake_host.shaped("web02")
    clock.now += 10.5
    settle(app)
    assert fake_host.clean("web02")
    ended = engine_of(app).store.recent(1)[0]
    assert ended.end_reason == "max_duration"
    status, body = post(client, payload(alert(domain="web02")))  # repeat_interval re-send
    assert status == 200
    assert body["alerts"][0]["decision"] == "already_handled"
    settle(app)
    assert fake_host.clean("web02")


def test_host_wide_limit_refuses_beyond_n_concurrent_throttles(
    app: Flask, client: FlaskClient, fake_host: FakeHost
) -> None:
    alerts = [
        alert(domain="web01", fingerprint="0000000000000001"),
        alert(domain="web02", fingerprint="0000000000000002"),
        alert(domain="batch03", fingerprint="0000000000000003", remediation="pause"),
        alert(domain="web02", fingerprint="0000000000000004", remediation="cpu_cap", cap="10"),
    ]
    status, body = post(client, payload(*alerts))
    assert status == 200
    assert [a["decision"] for a in body["alerts"]] == ["accepted"] * 3 + ["refused"]
    assert body["alerts"][3]["reason"] == "throttle_limit"
    settle(app)
    assert fake_host.domains["web02"].cap == 0


def test_operator_release_wins_and_the_resent_alert_does_not_reapply(
    app: Flask, client: FlaskClient, fake_host: FakeHost
) -> None:
    post(client, payload(alert(domain="web02", remediation="pause")))
    settle(app)
    (throttle,) = engine_of(app).store.live()
    assert engine_of(app).release_now(throttle.id)
    settle(app)
    assert fake_host.domains["web02"].pauses == 0
    assert (
        post(client, payload(alert(domain="web02", remediation="pause")))[1]["alerts"][0][
            "decision"
        ]
        == "already_handled"
    )


def test_a_failing_command_is_rolled_back_and_recorded(
    app: Flask, client: FlaskClient, fake_host: FakeHost
) -> None:
    fake_host.fail["tc filter add"] = "RTNETLINK answers: Operation not supported"
    post(client, payload(alert(domain="web02")))
    settle(app)
    assert fake_host.clean("web02"), "half-applied shaping must be rolled back"
    ended = engine_of(app).store.recent(1)[0]
    assert ended.state == "failed"
    assert ended.error is not None and "Operation not supported" in ended.error


def test_dry_run_plans_and_runs_nothing(
    make_app: Callable[..., Flask], fake_host: FakeHost
) -> None:
    app = make_app(dry_run=True)
    client = app.test_client()
    assert post(client, payload(alert(domain="web02")))[0] == 200
    settle(app)
    assert fake_host.calls == []
    assert engine_of(app).store.recent(1)[0].state == "dry_run"


def test_status_page_metrics_and_health(
    app: Flask, client: FlaskClient, fake_host: FakeHost
) -> None:
    post(client, payload(alert(domain="web02")))
    settle(app)
    page = client.get("/", headers=AUTH)
    assert page.status_code == 200 and b"web02" in page.data and b"network_shape" in page.data
    metrics = client.get("/metrics", headers=AUTH).data.decode()
    assert 'judicator_remediator_active_throttles{kind="network_shape",state="active"} 1.0' in (
        metrics
    )
    assert (
        'judicator_remediator_throttle_since_timestamp_seconds{domain="web02",'
        'kind="network_shape",state="active"}' in metrics
    )
    assert (
        'judicator_remediator_actions_total{kind="network_shape",phase="apply",result="ok"} 1.0'
        in metrics
    )
    assert client.get("/-/healthy").status_code == 200
    assert client.get("/-/ready").status_code == 200
    assert client.get("/metrics").status_code == 401
    assert client.get("/").status_code == 401


def test_not_ready_answers_503_so_alertmanager_retries(
    make_app: Callable[..., Flask], fake_host: FakeHost
) -> None:
    app = make_app(start=False)
    client = app.test_client()
    assert client.get("/-/ready").status_code == 503
    assert post(client, payload(alert()))[0] == 503
    assert fake_host.calls == []
