"""Reconciliation with the fake host: restarts mid-action, reboots, vanished domains, strays."""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask

from remediator.engine import Engine
from remediator.host import Qdisc
from tests.remediator.fakehost import FakeHost, FakeLink
from tests.remediator.helpers import AUTH, alert, engine_of, payload, settle


def throttle_web02(app: Flask, **labels: str) -> None:
    response = app.test_client().post(
        "/alerts", data=payload(alert(domain="web02", **labels)), headers=AUTH
    )
    assert response.status_code == 200
    settle(app)


def test_a_rebooted_domain_is_throttled_again_in_its_new_incarnation(
    app: Flask, fake_host: FakeHost
) -> None:
    throttle_web02(app)
    assert fake_host.shaped("web02")
    fake_host.reboot("web02", 18)  # vif8.0 gone, vif18.0 new; jifb8 left behind
    engine_of(app).reconcile()
    settle(app)
    assert fake_host.shaped("web02")
    assert "jifb18" in fake_host.links and "jifb8" not in fake_host.links
    (throttle,) = engine_of(app).store.live()
    assert (throttle.state, throttle.domid) == ("active", 18)


def test_a_vanished_domain_ends_its_throttle_and_its_ifb_goes(
    app: Flask, fake_host: FakeHost
) -> None:
    throttle_web02(app)
    del fake_host.domains["web02"]
    fake_host.links.pop("vif8.0")
    engine_of(app).reconcile()
    settle(app)
    assert engine_of(app).store.live() == []
    assert engine_of(app).store.recent(1)[0].end_reason == "domain_gone"
    assert "jifb8" not in fake_host.links


def test_drift_is_repaired_and_strays_removed(app: Flask, fake_host: FakeHost) -> None:
    throttle_web02(app)
    fake_host.links["vif8.0"].ingress = False  # someone flushed the vif's ingress
    fake_host.links["vif8.0"].redirects = []
    fake_host.links["jifb99.0"] = FakeLink(up=True)  # left over from a crash long ago
    engine_of(app).reconcile()
    settle(app)
    assert fake_host.shaped("web02")
    assert "jifb99.0" not in fake_host.links


def test_restart_finishes_work_recorded_before_the_crash(
    make_app: Callable[..., Flask], fake_host: FakeHost
) -> None:
    first = make_app()
    engine: Engine = engine_of(first)
    # As if killed between recording and applying: admitted and recorded, nothing run yet.
    engine.stop()
    response = first.test_client().post(
        "/alerts", data=payload(alert(domain="batch03", remediation="cpu_cap", cap="40")),
        headers=AUTH,
    )  # fmt: skip
    assert response.status_code == 200
    assert fake_host.calls == []
    assert engine.store.live()[0].state == "pending"
    second = make_app()  # same state file
    settle(second)
    assert fake_host.domains["batch03"].cap == 40
    assert engine_of(second).store.live()[0].state == "active"


def test_receive_shaping_is_one_ifb_per_domain_and_an_older_layout_moves_to_it(
    app: Flask, fake_host: FakeHost
) -> None:
    throttle_web02(app, direction="both")
    vif = fake_host.links["vif8.0"]
    assert fake_host.shaped("web02")
    assert vif.root is not None and vif.root.kind == "htb"
    assert [r.to_dev for r in vif.egress_redirects] == ["jifb8r"]
    assert "jifb8r" in fake_host.links
    # What a remediator before the shared receive limit left on the vif: its own tbf.
    vif.root = Qdisc("tbf", "d1c:", True, 1_000_000, 32768)
    vif.egress_redirects = []
    engine_of(app).reconcile()
    settle(app)
    assert vif.root.kind == "htb" and [r.to_dev for r in vif.egress_redirects] == ["jifb8r"]
    (throttle,) = engine_of(app).store.live()
    assert engine_of(app).release_now(throttle.id)
    settle(app)
    assert fake_host.clean("web02")
