"""The remediator for real: hypercorn in the simulated host's Dom0 namespace, the fake xl, real tc.

The server listens on a unix socket (reachable from the root namespace, where the test runs) and
is started and killed per test; the simulated host serves the whole module. Crashes at every step
of an action are in tests/reliability/test_rel_crash.py.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.remediator.helpers import alert, payload
from tests.remediator.simhost import INSTANCE, Host, Launcher
from tests.support import sim, wait_for

pytestmark = [pytest.mark.host, pytest.mark.slow]


def net_alert(status: str = "firing", **labels: str) -> dict[str, Any]:
    base = {"domain": "guest1", "instance": INSTANCE, "rate": "256kbit", "burst": "16kb"}
    base.update(labels)
    return alert(status, fingerprint="1111111111111111", **base)


def test_network_alert_shapes_the_flooder_10x_leaves_neighbours_and_releases_after_hold(
    host: Host, servers: Launcher
) -> None:
    server = servers.start()
    sim("run", "--name", host.name, "guest1", "pingflood", "--target", "guest2", "--duration", "40")
    sim("run", "--name", host.name, "guest3", "pingflood", "--target", "guest2", "--duration", "40")
    wait_for(lambda: host.rate("vif1.0", 0.5) > 500, 15, "guest1's flood to start")
    flood_before, neighbour_before = host.rate("vif1.0"), host.rate("vif3.0")

    status, answer = server.post(payload(net_alert()))
    assert (status, answer["alerts"][0]["decision"]) == (200, "accepted")
    wait_for(lambda: [t for t in server.throttles() if t["state"] == "active"], 15, "active")
    assert host.shaped("vif1.0")
    assert "jifb1" in host.links()
    assert not host.shaped("vif2.0") and not host.shaped("vif3.0")
    flood_after, neighbour_after = host.rate("vif1.0"), host.rate("vif3.0")
    assert flood_after * 10 <= flood_before, (flood_before, flood_after)
    assert neighbour_after >= neighbour_before * 0.5, (neighbour_before, neighbour_after)

    status, answer = server.post(payload(net_alert("resolved")))
    assert (status, answer["alerts"][0]["decision"]) == (200, "scheduled_release")
    resolved = time.monotonic()
    wait_for(lambda: not host.shaped("vif1.0"), 15, "the shaping to be removed")
    assert time.monotonic() - resolved >= 0.9, "released before the 1s hold"
    # The release's two steps: the ingress qdisc, then the ifb (not one instant under load).
    wait_for(lambda: "jifb1" not in host.links(), 15, "the ifb to be removed")
    wait_for(lambda: server.throttles() == [], 15, "the release to be recorded")


def test_replaying_100_times_changes_nothing_after_the_first(host: Host, servers: Launcher) -> None:
    server = servers.start()
    body = payload(net_alert())
    assert server.post(body)[0] == 200
    wait_for(lambda: [t for t in server.throttles() if t["state"] == "active"], 15, "active")
    qdiscs = host.tc_json("qdisc", "show", "dev", "vif1.0")
    filters = host.tc_json("filter", "show", "dev", "vif1.0", "parent", "ffff:")
    for _ in range(100):
        status, answer = server.post(body)
        assert (status, answer["alerts"][0]["decision"]) == (200, "duplicate")
    time.sleep(2.5)  # one reconcile interval: it must not "repair" anything either
    assert host.tc_json("qdisc", "show", "dev", "vif1.0") == qdiscs
    assert host.tc_json("filter", "show", "dev", "vif1.0", "parent", "ffff:") == filters
    assert len(server.audit("applied")) == 1
    assert len(server.throttles(everything=True)) == 1


def test_cpu_cap_is_applied_and_restored(host: Host, servers: Launcher) -> None:
    host.xl("sched-credit2", "-d", "guest2", "-c", "80")  # the operator's own cap
    server = servers.start()
    labels = {"domain": "guest2", "instance": INSTANCE, "remediation": "cpu_cap", "cap": "20"}
    server.post(payload(alert(fingerprint="2222222222222222", **labels)))
    wait_for(lambda: host.cap("guest2") == 20, 15, "the cap")
    server.post(payload(alert("resolved", fingerprint="2222222222222222", **labels)))
    wait_for(lambda: host.cap("guest2") == 80, 15, "the previous cap back")


def test_pause_and_unpause_balance(host: Host, servers: Launcher) -> None:
    server = servers.start()
    labels = {"domain": "guest3", "instance": INSTANCE, "remediation": "pause"}
    server.post(payload(alert(fingerprint="3333333333333333", **labels)))
    wait_for(lambda: host.paused("guest3"), 15, "the pause")
    server.post(payload(alert(fingerprint="3333333333333333", **labels)))  # duplicate
    server.post(payload(alert("resolved", fingerprint="3333333333333333", **labels)))
    wait_for(lambda: not host.paused("guest3"), 15, "the unpause")
    wait_for(lambda: server.throttles() == [], 15, "the record to end")
    # Exactly one pause and one unpause: one more unpause is refused by xl.
    assert host.pause_count_is_zero("guest3")


def test_guests_alerted_together_are_shaped_in_one_round_and_a_failed_round_one_by_one(
    host: Host, servers: Launcher
) -> None:
    server = servers.start()

    def alerts(status: str, starts_at: str) -> bytes:
        return payload(
            *(
                alert(status, fingerprint=f"{n}{n}{n}{n}aaaabbbbcccc", starts_at=starts_at,
                      domain=f"guest{n}", instance=INSTANCE, rate="256kbit", burst="16kb")
                for n in (1, 2, 3)
            )
        )  # fmt: skip

    def active() -> bool:
        return sorted(t["domain"] for t in server.throttles() if t["state"] == "active") == [
            "guest1", "guest2", "guest3"
        ]  # fmt: skip

    servers.wrappers.disarm()
    assert server.post(alerts("firing", "2026-12-01T10:00:00Z"))[0] == 200
    wait_for(active, 15, "three throttles active")
    # One round: one ip batch (the three ifbs) and one tc batch (their shaping, then the check).
    assert [step.split(" ", 1)[0] for step in servers.wrappers.steps()] == ["ip", "tc"]
    assert all(host.shaped(f"vif{n}.0") for n in (1, 2, 3))
    assert len(server.audit("applied")) == 3

    server.post(alerts("resolved", "2026-12-01T10:00:00Z"))
    wait_for(lambda: server.throttles() == [], 20, "the three released")
    # The next episode's round fails at its tc batch: each throttle is finished on its own.
    servers.wrappers.arm(2, "fail")
    assert server.post(alerts("firing", "2026-12-01T11:00:00Z"))[0] == 200
    wait_for(active, 20, "three throttles active again")
    assert all(host.shaped(f"vif{n}.0") for n in (1, 2, 3))
    assert len(server.audit("applied")) == 6
