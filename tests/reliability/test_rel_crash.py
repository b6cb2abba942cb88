"""kill -9 at every step of an action, for network shaping, a CPU cap and a pause, applying and
releasing: afterwards the host and the record agree and the throttle was applied once and
released once.

The remediator's tc, ip and xl paths point at wrappers (tests/remediator/simhost.py) that, at
step N, signal the test and block, either before running the real command (the crash falls
between recording and applying) or after it (between applying and recording); the test then
SIGKILLs the whole server there and starts a fresh one on the same state file.

`make test` crashes before every step and after the last one: after step k and before step k+1
leave the same host and the same record, so these already cover every distinct state. `make
soak` adds "after" at every step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.remediator.helpers import alert, payload
from tests.remediator.simhost import (
    INSTANCE,
    Host,
    Launcher,
    audit_events,
)
from tests.support import wait_for

pytestmark = [pytest.mark.host, pytest.mark.slow]


@dataclass(frozen=True)
class Spec:
    labels: dict[str, str]
    fingerprint: str
    apply_steps: int
    release_steps: int
    prepare: Callable[[Host], None]
    applied: Callable[[Host], bool]
    released: Callable[[Host], bool]


def _vif(host: Host) -> str:
    return f"vif{host.domid('guest1')}.0"


def _shaped_once(host: Host) -> bool:
    ifb = f"jifb{host.domid('guest1')}"
    return host.redirects(_vif(host)) == 1 and ifb in host.links()


def _unshaped(host: Host) -> bool:
    roots = [q for q in host.tc_json("qdisc", "show", "dev", _vif(host)) if q.get("root")]
    return (
        not host.shaped(_vif(host))
        and not [link for link in host.links() if link.startswith("jifb")]
        and all(q.get("handle") != "d1c:" for q in roots)
    )


SPECS = {
    # ip -batch (link add, link set up), tc -batch (qdisc replace: tbf on the ifb, qdisc add
    # ingress, filter add); released by tc qdisc del ingress, ip link del.
    "network_shape": Spec(
        {"domain": "guest1", "remediation": "network_shape", "rate": "256kbit", "burst": "16kb"},
        "1111111111111111", 2, 2, lambda host: None, _shaped_once, _unshaped,
    ),
    "cpu_cap": Spec(
        {"domain": "guest2", "remediation": "cpu_cap", "cap": "20"},
        "2222222222222222", 1, 1,
        lambda host: host.xl("sched-credit2", "-d", "guest2", "-c", "80") and None,
        lambda host: host.cap("guest2") == 20,
        lambda host: host.cap("guest2") == 80,
    ),
    "pause": Spec(
        {"domain": "guest3", "remediation": "pause"},
        "3333333333333333", 1, 1, lambda host: None,
        lambda host: host.paused("guest3"),
        lambda host: host.pause_count_is_zero("guest3"),
    ),
}  # fmt: skip


def _cases() -> Iterator[Any]:
    for kind, spec in SPECS.items():
        for phase, steps in (("apply", spec.apply_steps), ("release", spec.release_steps)):
            for step in range(1, steps + 1):
                for mode in ("before", "after"):
                    soak = mode == "after" and step < steps
                    yield pytest.param(
                        kind, phase, step, mode,
                        id=f"{kind}-{phase}-{mode}-step{step}",
                        marks=[pytest.mark.soak] if soak else [],
                    )  # fmt: skip


def _live(records: list[dict[str, Any]], state: str) -> bool:
    return len(records) == 1 and records[0]["state"] == state


@pytest.mark.parametrize(("kind", "phase", "step", "mode"), list(_cases()))
def test_kill_9_at_every_step_then_restart_host_and_record_agree(
    host: Host, servers: Launcher, kind: str, phase: str, step: int, mode: str
) -> None:
    spec = SPECS[kind]
    spec.prepare(host)
    labels = {"instance": INSTANCE, **spec.labels}
    firing = payload(alert(fingerprint=spec.fingerprint, **labels))
    resolved = payload(alert("resolved", fingerprint=spec.fingerprint, **labels))
    wrappers = servers.wrappers

    first = servers.start()
    if phase == "release":
        assert first.post(firing)[0] == 200
        wait_for(lambda: _live(first.records(), "active"), 20, "the throttle to be active")
        assert spec.applied(host)
        wrappers.arm(step, mode)
        assert first.post(resolved)[0] == 200
    else:
        wrappers.arm(step, mode)
        status, answer = first.post(firing)
        assert (status, answer["alerts"][0]["decision"]) == (200, "accepted")
    reached = wait_for(wrappers.reached, 20, f"step {step} of the {phase}")
    first.kill9()
    assert len(wrappers.steps()) == step, (reached, wrappers.steps())
    (record,) = first.records()
    assert record["state"] == ("applying" if phase == "apply" else "releasing"), record

    wrappers.disarm()
    second = servers.start()
    if phase == "apply":
        wait_for(lambda: _live(second.records(), "active"), 20, "the restart to finish the apply")
        assert spec.applied(host)
        assert second.post(resolved)[0] == 200
    wait_for(lambda: second.records() == [], 20, "the release to finish")
    assert spec.released(host)
    (ended,) = second.records(everything=True)
    assert (ended["state"], ended["end_reason"], ended["error"]) == ("released", "resolved", None)
    applied = [e for s in servers.servers for e in audit_events(s.log, "applied")]
    assert len(applied) == 1, applied
