"""The engine with `platform: kvm` against a model KVM host (`kvmfakehost.FakeKvmHost`): the
same admission, state, idempotence, reconcile and release as on Xen, with kvmctl argv."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from remediator.app import create_app
from remediator.config import load_config
from tests.remediator.helpers import TOKEN, Clock, alert, base_config, engine_of, payload, settle
from tests.remediator.kvmfakehost import KVMCTL, FakeKvmHost, FakeVm
from tests.remediator.test_remediator_webhook import post

PID = 4242


@pytest.fixture
def kvm_host() -> FakeKvmHost:
    return FakeKvmHost(
        FakeVm("web01", PID, vcpus=2, affinity=["0-3", "0-3"], vifs=[(0, False), (1, False)]),
        FakeVm("web02", 5151, qmp=False),
    )


@pytest.fixture
def kvm_app(tmp_path: Path, kvm_host: FakeKvmHost, clock: Clock) -> Iterator[Flask]:
    raw = base_config(tmp_path / "state.db", platform="kvm", paths={"kvmctl": KVMCTL})
    app = create_app(load_config(raw), kvm_host, token=TOKEN, host=kvm_host, clock=clock)
    engine = engine_of(app)
    engine.start()
    assert engine.ready.wait(5)
    yield app
    engine.stop()
    engine.store.close()


@pytest.fixture
def kvm_client(kvm_app: Flask) -> FlaskClient:
    return kvm_app.test_client()


def _kvmctl(host: FakeKvmHost) -> list[tuple[str, ...]]:
    return [c for c in host.calls if c[0] == KVMCTL]


def _fire(client: FlaskClient, app: Flask, clock: Clock, **labels: str) -> None:
    assert post(client, payload(alert(**labels)))[0] == 200
    settle(app)


def _resolve(client: FlaskClient, app: Flask, clock: Clock, **labels: str) -> None:
    post(client, payload(alert("resolved", **labels)))
    clock.now += 2  # past hold.base (1 s)
    settle(app)


def test_a_cap_is_kvmctl_on_the_pid_and_restores_the_operators_cap(
    kvm_app: Flask, kvm_client: FlaskClient, kvm_host: FakeKvmHost, clock: Clock
) -> None:
    kvm_host.domains["web01"].cap = 150  # the operator's own cgroup quota: 1.5 CPUs
    labels = {"remediation": "cpu_cap", "cap": "50"}
    _fire(kvm_client, kvm_app, clock, **labels)
    assert kvm_host.domains["web01"].cap == 50
    assert engine_of(kvm_app).store.live()[0].state == "active"
    _fire(kvm_client, kvm_app, clock, **labels)  # a duplicate: nothing more
    engine_of(kvm_app).reconcile()  # nothing drifted: nothing runs
    settle(kvm_app)
    _resolve(kvm_client, kvm_app, clock, **labels)
    assert kvm_host.domains["web01"].cap == 150
    assert _kvmctl(kvm_host) == [
        (KVMCTL, "cap", "--pid", str(PID), "--name", "web01", "50"),
        (KVMCTL, "cap", "--pid", str(PID), "--name", "web01", "150"),
    ]


def test_a_pin_restores_each_vcpus_affinity(
    kvm_app: Flask, kvm_client: FlaskClient, kvm_host: FakeKvmHost, clock: Clock
) -> None:
    kvm_host.domains["web01"].affinity = ["0", "0-3"]
    labels = {"remediation": "cpu_pin", "cpus": "2-3"}
    _fire(kvm_client, kvm_app, clock, **labels)
    assert kvm_host.domains["web01"].affinity == ["2-3", "2-3"]
    _resolve(kvm_client, kvm_app, clock, **labels)
    assert kvm_host.domains["web01"].affinity == ["0", "0-3"]
    assert _kvmctl(kvm_host)[1:] == [
        (KVMCTL, "pin", "--pid", str(PID), "--name", "web01", "--vcpu", "0", "0"),
        (KVMCTL, "pin", "--pid", str(PID), "--name", "web01", "--vcpu", "1", "0-3"),
    ]


def test_a_pause_is_stop_then_cont_and_a_vm_paused_before_stays_paused(
    kvm_app: Flask, kvm_client: FlaskClient, kvm_host: FakeKvmHost, clock: Clock
) -> None:
    labels = {"remediation": "pause"}
    _fire(kvm_client, kvm_app, clock, **labels)
    assert kvm_host.domains["web01"].pauses == 1
    _resolve(kvm_client, kvm_app, clock, **labels)
    assert kvm_host.domains["web01"].pauses == 0
    assert [c[1] for c in _kvmctl(kvm_host)] == ["pause", "unpause"]

    # Paused by the operator: QEMU does not count pauses, so ours would be theirs to lose.
    kvm_host.domains["web01"].pauses = 1
    kvm_host.calls.clear()
    later = {**labels, "fingerprint": "b1b2c3d4e5f60718", "starts_at": "2026-11-26T13:00:00Z"}
    _fire(kvm_client, kvm_app, clock, **later)
    assert [t.state for t in engine_of(kvm_app).store.live()] == ["active"]
    _resolve(kvm_client, kvm_app, clock, **later)
    assert kvm_host.domains["web01"].pauses == 1, "the operator's pause was undone"
    assert _kvmctl(kvm_host) == []
    assert engine_of(kvm_app).store.live() == []


def test_a_vm_without_qmp_waits_for_a_pause_but_is_shaped_and_capped(
    kvm_app: Flask, kvm_client: FlaskClient, kvm_host: FakeKvmHost, clock: Clock
) -> None:
    _fire(kvm_client, kvm_app, clock, domain="web02", remediation="pause")
    (waiting,) = engine_of(kvm_app).store.live()
    assert waiting.state == "pending" and "run state of web02 is unknown" in str(waiting.error)
    assert _kvmctl(kvm_host) == []
    engine_of(kvm_app).reconcile()  # still unknown: still waiting, nothing run
    settle(kvm_app)
    assert _kvmctl(kvm_host) == []

    net = {"domain": "web02", "fingerprint": "c1b2c3d4e5f60718"}
    _fire(kvm_client, kvm_app, clock, **net)
    cap = {"domain": "web02", "remediation": "cpu_cap", "cap": "30"}
    _fire(kvm_client, kvm_app, clock, fingerprint="d1b2c3d4e5f60718", **cap)
    states = {t.kind: t.state for t in engine_of(kvm_app).store.live()}
    assert states == {"pause": "pending", "network_shape": "active", "cpu_cap": "active"}
    assert kvm_host.shaped("web02") and "jifb5151" in kvm_host.links


def test_shaping_is_the_xen_chain_on_the_vms_taps_and_released_exactly(
    kvm_app: Flask, kvm_client: FlaskClient, kvm_host: FakeKvmHost, clock: Clock
) -> None:
    _fire(kvm_client, kvm_app, clock)
    assert kvm_host.shaped("web01") and "jifb4242" in kvm_host.links
    for tap in ("tap4242i0", "tap4242i1"):
        assert ("tc", "qdisc", "add", "dev", tap, "ingress") in kvm_host.calls
    _resolve(kvm_client, kvm_app, clock)
    assert not any(n.startswith("jifb") for n in kvm_host.links)
    for tap in ("tap4242i0", "tap4242i1"):
        link = kvm_host.links[tap]
        assert not link.ingress and not link.redirects and link.root.kind == "noqueue"


def test_a_restarted_vm_is_a_new_pid_and_is_throttled_again_there(
    kvm_app: Flask, kvm_client: FlaskClient, kvm_host: FakeKvmHost, clock: Clock
) -> None:
    labels = {"remediation": "cpu_cap", "cap": "50"}
    _fire(kvm_client, kvm_app, clock, **labels)
    kvm_host.reboot("web01", 7777)  # QEMU restarted: a new process, uncapped
    engine_of(kvm_app).reconcile()
    settle(kvm_app)
    assert kvm_host.domains["web01"].cap == 50
    assert _kvmctl(kvm_host)[-1] == (KVMCTL, "cap", "--pid", "7777", "--name", "web01", "50")


def test_kvmctl_refusing_a_reused_pid_fails_the_apply_and_touches_nothing(
    kvm_app: Flask, kvm_client: FlaskClient, kvm_host: FakeKvmHost, clock: Clock
) -> None:
    # Between the read and kvmctl, web01's pid became another VM's: kvmctl refuses it.
    def swap(argv: tuple[str, ...]) -> None:
        if argv[0] == KVMCTL:
            kvm_host.domains["web01"].name = "other"

    kvm_host.before_run = swap
    _fire(kvm_client, kvm_app, clock, remediation="cpu_cap", cap="50")
    (ended,) = engine_of(kvm_app).store.recent(1)
    assert ended.state == "failed" and "not 'web01'" in str(ended.error)
    assert kvm_host.domains["web01"].cap == 0
