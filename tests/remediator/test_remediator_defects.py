"""One regression test per defect of the remediator review (issue 13), on the fake host.

Each failed before its fix (checked by reverting the fix once; docs/reliability.md lists them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from flask import Flask
from flask.testing import FlaskClient

from tests.remediator.fakehost import FakeDomain, FakeHost
from tests.remediator.helpers import AUTH, TOKEN, Clock, alert, base_config, engine_of, payload
from tests.remediator.helpers import settle as settle_app

FP1, FP2 = "00000000000000f1", "00000000000000f2"
T1, T2 = "2026-11-26T12:00:00Z", "2026-11-26T13:00:00Z"


def post(client: FlaskClient, *alerts: dict[str, str]) -> list[str]:
    response = client.post("/alerts", data=payload(*alerts), headers=AUTH)
    assert response.status_code == 200, response.data
    return [a["decision"] for a in response.get_json()["alerts"]]


def cap(status: str = "firing", **labels: str) -> dict[str, str]:
    fields = {"domain": "web02", "remediation": "cpu_cap", "cap": "40", "fingerprint": FP1}
    fields.update(labels)
    return alert(status, **fields)


def pause(status: str = "firing", **labels: str) -> dict[str, str]:
    return alert(status, domain="web02", remediation="pause", fingerprint=FP1, **labels)


def live_states(app: Flask) -> list[tuple[str, str]]:
    return [(t.domain, t.state) for t in engine_of(app).store.live()]


def settle(app: Flask) -> None:
    settle_app(app)


# 1 -------------------------------------------------------------------------------------------


def test_1_releasing_a_vanished_domains_throttle_keeps_other_guests_ifbs(
    app: Flask, client: FlaskClient, fake_host: FakeHost
) -> None:
    assert post(client, alert(domain="web01", fingerprint=FP1)) == ["accepted"]
    assert post(client, cap(fingerprint=FP2)) == ["accepted"]
    settle(app)
    assert fake_host.shaped("web01") and fake_host.domains["web02"].cap == 40
    fake_host.destroy("web02")  # web02 shuts down while capped
    engine_of(app).reconcile()
    settle(app)
    assert live_states(app) == [("web01", "active")]
    assert fake_host.shaped("web01"), "web01's ifbs were deleted by web02's release"


def test_1_stray_removal_keeps_the_ifbs_of_a_throttle_admitted_during_reconcile(
    app: Flask, client: FlaskClient, fake_host: FakeHost
) -> None:
    engine = engine_of(app)
    assert post(client, alert(domain="web01", fingerprint=FP1)) == ["accepted"]
    settle(app)
    real_live = engine.store.live
    calls = []

    def live_then_admit() -> list:  # type: ignore[type-arg]
        # reconcile reads the live throttles, then web02's throttle is admitted and applied
        # before it observes the host
        records = real_live()
        if not calls:
            calls.append(1)
            assert post(client, alert(domain="web02", fingerprint=FP2)) == ["accepted"]
            assert engine.wait_idle(5)
        return records

    engine.store.live = live_then_admit  # type: ignore[method-assign]
    try:
        engine.reconcile()
    finally:
        engine.store.live = real_live  # type: ignore[method-assign]
    settle(app)
    assert fake_host.shaped("web01") and fake_host.shaped("web02")


# 2 -------------------------------------------------------------------------------------------


def test_2_a_pause_that_timed_out_after_taking_effect_is_undone(
    app: Flask, client: FlaskClient, fake_host: FakeHost
) -> None:
    fake_host.timeout_after.add("xl pause")
    assert post(client, pause()) == ["accepted"]
    settle(app)
    (ended,) = engine_of(app).store.recent(1)
    assert (ended.state, ended.end_reason) == ("failed", "apply_failed")
    assert fake_host.domains["web02"].pauses == 0, "left paused by a failed throttle"


def test_2_a_pause_whose_check_cannot_read_the_host_is_undone(
    app: Flask, client: FlaskClient, fake_host: FakeHost
) -> None:
    def unreadable_after_pause(argv: tuple[str, ...]) -> None:
        if argv[:2] == ("xl", "pause"):
            fake_host.observe_failures = 1  # the verification's observation

    fake_host.before_run = unreadable_after_pause
    assert post(client, pause()) == ["accepted"]
    settle(app)
    assert fake_host.domains["web02"].pauses == 0
    assert engine_of(app).store.live() == []


# 3 -------------------------------------------------------------------------------------------


def test_3_a_late_resolution_of_an_earlier_episode_leaves_the_next_episode_throttled(
    app: Flask, client: FlaskClient, fake_host: FakeHost, clock: Clock
) -> None:
    assert post(client, cap(starts_at=T1)) == ["accepted"]
    settle(app)
    assert post(client, cap("resolved", starts_at=T1)) == ["scheduled_release"]
    clock.now += 1.01
    settle(app)
    assert fake_host.domains["web02"].cap == 0
    assert post(client, cap(starts_at=T2)) == ["accepted"]
    settle(app)
    # an HA peer's copy of E1's resolution, or a retry after a 503, arrives late
    assert post(client, cap("resolved", starts_at=T1)) == ["not_throttled"]
    clock.now += 10
    settle(app)
    assert fake_host.domains["web02"].cap == 40
    (throttle,) = engine_of(app).store.live()
    assert throttle.release_at is None


# 4 -------------------------------------------------------------------------------------------


def test_4_a_firing_that_arrives_during_a_release_is_throttled_after_it(
    app: Flask, client: FlaskClient, fake_host: FakeHost, clock: Clock
) -> None:
    assert post(client, cap(starts_at=T1)) == ["accepted"]
    settle(app)
    assert post(client, cap("resolved", starts_at=T1)) == ["scheduled_release"]
    decisions: list[str] = []

    def new_episode_during_release(argv: tuple[str, ...]) -> None:
        if argv[:2] == ("xl", "sched-credit2") and argv[-1] == "0" and not decisions:
            decisions.extend(post(client, cap(starts_at=T2)))

    fake_host.before_run = new_episode_during_release
    clock.now += 1.01
    settle(app)
    settle(app)
    assert decisions == ["queued"]
    assert live_states(app) == [("web02", "active")]
    assert fake_host.domains["web02"].cap == 40, "the new episode was lost"
    assert post(client, cap(starts_at=T2)) == ["duplicate"]


# 5 -------------------------------------------------------------------------------------------


def test_5_a_throttle_that_never_became_active_leaves_its_episode_open(
    app: Flask, client: FlaskClient, fake_host: FakeHost
) -> None:
    fake_host.fail["tc qdisc replace"] = "RTNETLINK answers: Device or resource busy"
    assert post(client, alert(domain="web02", fingerprint=FP1)) == ["accepted"]
    settle(app)
    assert engine_of(app).store.recent(1)[0].state == "failed"
    del fake_host.fail["tc qdisc replace"]
    # Alertmanager's repeat_interval re-sends the same episode
    assert post(client, alert(domain="web02", fingerprint=FP1)) == ["accepted"]
    settle(app)
    assert fake_host.shaped("web02")


# 6 -------------------------------------------------------------------------------------------


def test_6_an_attack_outlasting_max_throttle_is_readmitted_after_the_cooldown(
    make_app: Callable[..., Flask], fake_host: FakeHost, clock: Clock
) -> None:
    app = make_app(hold={"base": "1s", "max": "3s", "max_throttle": "1h", "readmit_after": "10m"})
    client = app.test_client()
    assert post(client, cap()) == ["accepted"]
    settle(app)
    clock.now += 3600.5
    settle(app)
    assert fake_host.domains["web02"].cap == 0
    assert engine_of(app).store.recent(1)[0].end_reason == "max_duration"
    metric = engine_of(app).metrics.registry.get_sample_value(
        "judicator_remediator_max_throttle_reached_total", {"kind": "cpu_cap"}
    )
    assert metric == 1
    assert post(client, cap()) == ["already_handled"]  # within hold.readmit_after
    clock.now += 600
    assert post(client, cap()) == ["accepted"], "the attacker escaped for good"
    settle(app)
    assert fake_host.domains["web02"].cap == 40


# 7 -------------------------------------------------------------------------------------------


def test_7_a_release_keeps_the_operators_ingress_qdisc(
    app: Flask, client: FlaskClient, fake_host: FakeHost, clock: Clock
) -> None:
    fake_host.links["vif8.0"].ingress = True  # the operator's (a policer, say)
    assert post(client, alert(domain="web02", fingerprint=FP1)) == ["accepted"]
    settle(app)
    assert fake_host.shaped("web02")
    assert post(client, alert("resolved", domain="web02", fingerprint=FP1)) == ["scheduled_release"]
    clock.now += 1.01
    settle(app)
    link = fake_host.links["vif8.0"]
    assert link.ingress, "the operator's ingress qdisc was deleted"
    assert link.redirects == [] and "jifb8" not in fake_host.links
    assert engine_of(app).store.live() == []


# 8 -------------------------------------------------------------------------------------------


def test_8_a_cap_never_loosens_the_operators_stricter_cap_and_restores_it(
    app: Flask, client: FlaskClient, fake_host: FakeHost, clock: Clock
) -> None:
    fake_host.domains["batch03"].cap = 10
    labels = {"domain": "batch03", "cap": "50"}
    assert post(client, cap(**labels)) == ["accepted"]
    settle(app)
    assert fake_host.domains["batch03"].cap == 10
    assert post(client, cap("resolved", **labels)) == ["scheduled_release"]
    clock.now += 1.01
    settle(app)
    assert fake_host.domains["batch03"].cap == 10
    assert engine_of(app).store.live() == []


def test_8_a_stricter_alert_tightens_a_looser_live_cap_and_release_restores_exactly(
    app: Flask, client: FlaskClient, fake_host: FakeHost, clock: Clock
) -> None:
    fake_host.domains["batch03"].cap = 80
    assert post(client, cap(domain="batch03", cap="50")) == ["accepted"]
    settle(app)
    assert fake_host.domains["batch03"].cap == 50
    assert post(client, cap(domain="batch03", cap="20", fingerprint=FP2)) == ["attached"]
    settle(app)
    assert fake_host.domains["batch03"].cap == 20
    post(client, cap("resolved", domain="batch03", cap="50"))
    post(client, cap("resolved", domain="batch03", cap="20", fingerprint=FP2))
    clock.now += 1.01
    settle(app)
    assert fake_host.domains["batch03"].cap == 80


# 9 -------------------------------------------------------------------------------------------


def test_9_one_throttle_that_cannot_be_planned_does_not_stop_reconcile_for_the_others(
    app: Flask, client: FlaskClient, fake_host: FakeHost
) -> None:
    assert post(client, cap(domain="batch03")) == ["accepted"]
    assert post(client, alert(domain="web02", fingerprint=FP2)) == ["accepted"]
    settle(app)
    fake_host.domains["batch03"].scheduler = "rtds"  # its pool moved: no cap to check
    fake_host.links["vif8.0"].ingress = False  # web02's shaping drifted away
    fake_host.links["vif8.0"].redirects = []
    engine_of(app).reconcile()
    settle(app)
    assert fake_host.shaped("web02"), "web02's drift was never repaired"


# 10 ------------------------------------------------------------------------------------------


def test_10_domid_0_is_never_touched_whatever_its_name(
    make_app: Callable[..., Flask], fake_host: FakeHost
) -> None:
    fake_host.create(FakeDomain("control", 0))
    app = make_app()
    for labels in (
        {"remediation": "cpu_cap", "cap": "10"},
        {"remediation": "pause"},
        {"remediation": "network_shape", "rate": "1mbit"},
    ):
        post(app.test_client(), alert(domain="control", fingerprint=FP1, **labels))
        settle(app)
    assert fake_host.calls == []
    assert {t.end_reason for t in engine_of(app).store.recent(3)} == {"protected_domain"}


def test_10_a_new_domain_reusing_a_throttled_name_is_not_throttled(
    app: Flask, client: FlaskClient, fake_host: FakeHost
) -> None:
    assert post(client, cap()) == ["accepted"]
    settle(app)
    fake_host.destroy("web02")
    fake_host.create(FakeDomain("web02", 20))  # another tenant's new VM, another uuid
    engine_of(app).reconcile()
    settle(app)
    assert fake_host.domains["web02"].cap == 0
    assert engine_of(app).store.live() == []
    assert engine_of(app).store.recent(1)[0].end_reason == "domain_replaced"


def test_10_a_reboot_keeps_the_uuid_and_is_throttled_again(
    app: Flask, client: FlaskClient, fake_host: FakeHost
) -> None:
    assert post(client, cap()) == ["accepted"]
    settle(app)
    fake_host.reboot("web02", 21)
    engine_of(app).reconcile()
    settle(app)
    assert fake_host.domains["web02"].cap == 40


# 12 ------------------------------------------------------------------------------------------


def test_12_a_json_integer_beyond_pythons_digit_limit_is_a_400(client: FlaskClient) -> None:
    body = b'{"version": "4", "alerts": [], "truncatedAlerts": ' + b"9" * 5000 + b"}"
    response = client.post("/alerts", data=body, headers=AUTH)
    assert response.status_code == 400


def test_12_the_state_file_takes_one_serve_process(tmp_path: Path) -> None:
    from remediator.store import StateLocked, lock_state

    state = str(tmp_path / "state.db")
    fd = lock_state(state)
    try:
        with pytest.raises(StateLocked):
            lock_state(state)
        token = tmp_path / "token"
        token.write_text(TOKEN)
        raw = base_config(tmp_path / "state.db", auth={"bearer_token_file": str(token)})
        config = tmp_path / "remediator.yml"
        config.write_text(yaml.safe_dump(json.loads(json.dumps(raw))))
        argv = [sys.executable, "-m", "remediator", "--config.file", str(config), "serve",
                "--web.listen-address", f"unix:{tmp_path}/r.sock", "--dry-run"]  # fmt: skip
        try:
            second = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
        except subprocess.TimeoutExpired:
            pytest.fail("a second serve process started on a locked state file")
        assert second.returncode == 2
        assert "in use by another serve process" in second.stderr
    finally:
        os.close(fd)


# retention (issue 11) ------------------------------------------------------------------------


def test_old_records_are_pruned_after_the_retention(
    make_app: Callable[..., Flask], fake_host: FakeHost, clock: Clock
) -> None:
    app = make_app(limits={"retention": "2h", "reconcile_interval": "1h"})
    client = app.test_client()
    post(client, cap())
    settle(app)
    post(client, cap("resolved"))
    clock.now += 2
    settle(app)
    store = engine_of(app).store
    assert store.table_sizes()["throttles"] == 1
    clock.now += 3 * 3600
    settle(app)  # the tick reconciles (interval 1h) and prunes
    assert store.table_sizes() == {
        "throttles": 0, "throttle_alerts": 0, "episodes": 0, "waiting": 0, "decisions": 0,
    }  # fmt: skip


# found by the stateful test ------------------------------------------------------------------


def test_max_throttle_reached_while_the_domain_rebooted_still_readmits_the_episode(
    make_app: Callable[..., Flask], fake_host: FakeHost, clock: Clock
) -> None:
    app = make_app(
        hold={"base": "1s", "max": "3s", "max_throttle": "1h", "readmit_after": "10m"},
        limits={"reconcile_interval": "100h"},  # the release, not a reconcile, meets the reboot
    )
    client = app.test_client()
    assert post(client, cap()) == ["accepted"]
    settle(app)
    fake_host.reboot("web02", 30)  # before any reconcile notices
    clock.now += 3600.5
    settle(app)  # max_throttle: released, and the rebooted domain is no reason to forget it
    assert engine_of(app).store.recent(1)[0].end_reason == "max_duration"
    clock.now += 600
    assert post(client, cap()) == ["accepted"]
    settle(app)
    assert fake_host.domains["web02"].cap == 40


# found by the restart test (tests/reliability): one attack under two startsAt ----------------


RESTARTED, ENDED = "2026-11-26T12:05:00Z", "2026-11-26T12:10:00Z"


@pytest.mark.parametrize(("resolved_as", "late_firing"), [(T1, RESTARTED), (RESTARTED, T1)])
def test_a_restart_splits_one_attack_in_two_startsats_and_one_resolution_ends_both(
    app: Flask,
    client: FlaskClient,
    fake_host: FakeHost,
    clock: Clock,
    resolved_as: str,
    late_firing: str,
) -> None:
    """Prometheus restarted: its alert starts again at RESTARTED, the Alertmanager that kept
    the alert merges it under T1, a restarted peer knows only RESTARTED. The peers' shared log
    sends the one resolution once, under either startsAt; the other peer's late firing must
    not throttle again."""
    assert post(client, cap(starts_at=T1)) == ["accepted"]
    settle(app)
    assert post(client, cap(starts_at=RESTARTED)) == ["attached"]
    assert post(client, cap(starts_at=T1)) == ["attached"]  # the peers' copies alternate
    resolution = cap("resolved", starts_at=resolved_as, ends_at=ENDED)
    assert post(client, resolution) == ["scheduled_release"]
    clock.now += 10
    settle(app)
    assert fake_host.domains["web02"].cap == 0
    assert post(client, cap(starts_at=late_firing)) == ["already_handled"]
    settle(app)
    assert not engine_of(app).store.live()
    assert fake_host.domains["web02"].cap == 0
    # The next attack starts after the last one ended: a throttle of its own.
    assert post(client, cap(starts_at=T2)) == ["accepted"]
    settle(app)
    assert fake_host.domains["web02"].cap == 40


def test_a_late_resolution_that_ended_before_the_next_episode_began_keeps_its_throttle(
    app: Flask, client: FlaskClient, fake_host: FakeHost, clock: Clock
) -> None:
    assert post(client, cap(starts_at=T1)) == ["accepted"]
    assert post(client, cap("resolved", starts_at=T1, ends_at="2026-11-26T12:30:00Z")) == [
        "scheduled_release"
    ]
    clock.now += 10
    settle(app)
    assert post(client, cap(starts_at=T2)) == ["accepted"]
    settle(app)
    assert post(client, cap("resolved", starts_at=T1, ends_at="2026-11-26T12:30:00Z")) == [
        "not_throttled"
    ]
    clock.now += 10
    settle(app)
    assert fake_host.domains["web02"].cap == 40
