"""The remediator against a model Dom0, in random interleavings (hypothesis stateful testing).

The real `Engine`, `Store` (SQLite file) and planner drive the fake host (`fakehost.FakeHost`),
which executes the argv lists as xl/tc/ip would. The rules deliver firing and resolved alerts
(duplicates, both HA peers, late copies of earlier episodes), arm command failures, timeouts
that took effect, unreadable observations and a crash at the next command (then a restart on the
same state file), make domains vanish, reboot or have their name reused, let an operator change
caps and add an ingress qdisc, deliver an alert in the middle of another action, and move the
clock past holds, `max_throttle` and `readmit_after`. One rule per situation behind a defect of
issue 13 plays its few steps in a row, so that 60 examples find each defect when its fix is
reverted. The invariants (docs/reliability.md) are checked after every step. `make test` runs
EXAMPLES examples; `make soak` many more.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from remediator.alerts import parse_notification
from remediator.config import load_config
from remediator.engine import Engine
from remediator.host import FILTER_PREF, IFB_PREFIX, QDISC_HANDLE, ifb_name, is_per_vif_ifb
from remediator.metrics import Metrics
from remediator.store import Store
from tests.remediator.fakehost import FakeDomain, FakeHost, new_uuid
from tests.remediator.helpers import Clock, alert, base_config, payload

SOAK = os.environ.get("JUDICATOR_SOAK") == "1"
EXAMPLES = int(os.environ.get("JUDICATOR_STATEFUL_EXAMPLES", "1000" if SOAK else "60"))
STEPS = 40

GUESTS = ("web01", "web02", "batch03")
ELIGIBLE = GUESTS
TARGETS = (*GUESTS, "infra", "control")  # infra is protected by name, control is domid 0
KINDS = ("network_shape", "cpu_cap", "pause")
LABELS = {
    "network_shape": {"rate": "1mbit"},
    "cpu_cap": {"cap": "40"},
    "pause": {},
}
STRICT = {"network_shape": {"rate": "512kbit"}, "cpu_cap": {"cap": "20"}, "pause": {}}
DOMIDS = {"web01": 7, "web02": 8, "batch03": 9, "infra": 3, "control": 0}
COMMAND_PREFIXES = (
    "ip link add", "ip link set", "ip link del", "tc qdisc replace", "tc qdisc add",
    "tc qdisc del", "tc filter add", "tc filter del", "xl sched-credit", "xl pause",
    "xl unpause",
)  # fmt: skip
HOLD = {"base": "1s", "factor": 2, "max": "3s", "repeat_window": "1h"}
MAX_THROTTLE, READMIT = 60.0, 30.0
HOLD_MAX = 3.0  # hold.max: every hold has ended after it


class Crash(Exception):
    """Raised by the host at a command: the worker stops there, as a kill -9 would stop it."""


def fingerprint(domain: str, kind: str) -> str:
    return f"{TARGETS.index(domain) + 1:02x}{KINDS.index(kind) + 1:02x}00000000aaaa"


def starts_at(episode: int) -> str:
    return f"2026-11-26T12:{episode // 60:02d}:{episode % 60:02d}Z"


def new_host() -> FakeHost:
    return FakeHost(
        FakeDomain("web01", 7, vifs=[(0, False), (0, True)]),
        FakeDomain("web02", 8),
        FakeDomain("batch03", 9, scheduler="credit", vcpus=4, affinity=["all"] * 4),
        FakeDomain("infra", 3),
        FakeDomain("control", 0),
    )


class RemediatorMachine(RuleBasedStateMachine):
    workdir: Path

    def __init__(self) -> None:
        super().__init__()
        DOMIDS.update({"web01": 7, "web02": 8, "batch03": 9, "infra": 3, "control": 0})
        RemediatorMachine.runs += 1
        self.state_path = self.workdir / f"state-{RemediatorMachine.runs}.db"
        raw = base_config(
            self.state_path,
            hold={**HOLD, "max_throttle": f"{MAX_THROTTLE:g}s", "readmit_after": f"{READMIT:g}s"},
            limits={"max_active_throttles": 20, "reconcile_interval": "1h", "workers": 2},
        )
        self.config = load_config(raw)
        self.host = new_host()
        self.clock = Clock()
        self.engine = self._engine()
        self.next_domid = 20
        self.episode: dict[tuple[str, str], int] = {}  # current episode of each alert
        self.firing: set[tuple[str, str]] = set()
        self.last_episode = 0
        self.operator_cap = {name: 0 for name in TARGETS}
        self.operator_ingress: set[str] = set()
        self.crash_armed = False
        self.drifted: set[str] = set()  # domains whose tc state someone flushed
        self.no_cap: set[str] = set()  # moved to a cpupool whose scheduler has no cap

    runs = 0

    def _engine(self) -> Engine:
        store = Store(str(self.state_path))
        engine = Engine(self.config, store, self.host, self.host, Metrics(), clock=self.clock)
        # A delivery armed to land during the next command may land during this reconcile: it
        # must reach this engine, not the one just stopped (its store is closed).
        self.engine = engine
        engine.reconcile()
        self._idle(engine)
        return engine

    def _idle(self, engine: Engine | None = None) -> None:
        assert (engine or self.engine).wait_idle(20), "an action never finished"

    def teardown(self) -> None:
        self.host.before_run = None
        self.engine.stop()
        self.engine.store.close()

    # -- deliveries ----------------------------------------------------------------------------

    def _deliver(self, domain: str, kind: str, status: str, episode: int, **extra: str) -> None:
        labels = {"remediation": kind, **LABELS[kind], **extra}
        body = payload(
            alert(status, domain=domain, fingerprint=fingerprint(domain, kind),
                  starts_at=starts_at(episode), **labels)
        )  # fmt: skip
        self.engine.handle(parse_notification(body))

    @rule(
        domain=st.sampled_from(TARGETS),
        kind=st.sampled_from(KINDS),
        peers=st.integers(1, 2),
        strict=st.booleans(),
        operator_ingress=st.booleans(),
    )
    def fire(
        self, domain: str, kind: str, peers: int, strict: bool, operator_ingress: bool
    ) -> None:
        key = (domain, kind)
        if operator_ingress and kind == "network_shape" and domain in GUESTS:
            self.operator_adds_an_ingress_qdisc(domain)  # an operator's policer was there first
        if key not in self.firing:
            self.last_episode += 1
            self.episode[key] = self.last_episode
            self.firing.add(key)
        extra = STRICT[kind] if strict else {}
        for _ in range(peers):  # an HA pair delivers it twice
            self._deliver(domain, kind, "firing", self.episode[key], **extra)
        self._idle()

    @rule(domain=st.sampled_from(TARGETS), kind=st.sampled_from(KINDS), peers=st.integers(1, 2))
    def resolve(self, domain: str, kind: str, peers: int) -> None:
        key = (domain, kind)
        if key not in self.episode:
            return
        self.firing.discard(key)
        for _ in range(peers):
            self._deliver(domain, kind, "resolved", self.episode[key])
        self._idle()

    @rule(domain=st.sampled_from(TARGETS), kind=st.sampled_from(KINDS), back=st.integers(1, 3))
    def late_copy_of_an_earlier_episode(self, domain: str, kind: str, back: int) -> None:
        key = (domain, kind)
        if key not in self.episode or self.episode[key] - back < 1:
            return
        status = "resolved" if back % 2 else "firing"
        if status == "firing":
            return  # a late firing of an ended episode is indistinguishable from a re-fire
        self._deliver(domain, kind, status, self.episode[key] - back)
        self._idle()

    @rule(domain=st.sampled_from(GUESTS), kind=st.sampled_from(KINDS))
    def deliver_during_the_next_command(self, domain: str, kind: str) -> None:
        """The next host command (any action's) runs while a firing arrives (two workers)."""
        if (domain, kind) in self.firing:
            return
        self.last_episode += 1
        self.episode[(domain, kind)] = self.last_episode
        self.firing.add((domain, kind))
        episode = self.last_episode
        fired: list[int] = []

        def hook(_argv: tuple[str, ...]) -> None:
            if not fired:
                fired.append(1)
                self._deliver(domain, kind, "firing", episode)

        self.host.before_run = hook

    # -- faults ------------------------------------------------------------------------------

    @rule(prefix=st.sampled_from(COMMAND_PREFIXES), late=st.booleans())
    def arm_command_failure(self, prefix: str, late: bool) -> None:
        if late:
            self.host.timeout_after.add(prefix)  # took effect, reported timed out
        else:
            self.host.fail[prefix] = "injected failure"

    @rule(count=st.integers(1, 3))
    def arm_unreadable_host(self, count: int) -> None:
        self.host.observe_failures = count

    @rule()
    def clear_faults(self) -> None:
        self.host.fail.clear()
        self.host.timeout_after.clear()
        self.host.observe_failures = 0

    @rule()
    def arm_crash_at_next_command(self) -> None:
        def crash(_argv: tuple[str, ...]) -> None:
            self.host.before_run = None
            self.crash_armed = True
            raise Crash("kill -9")

        self.host.before_run = crash

    @precondition(lambda self: self.crash_armed)
    @rule()
    def restart_after_crash(self) -> None:
        self.crash_armed = False
        self._restart()

    @rule()
    def restart(self) -> None:
        self._restart()

    def _restart(self) -> None:
        self.engine.stop()
        self.engine.store.close()
        self.engine = self._engine()

    # -- the host changes --------------------------------------------------------------------

    @rule(name=st.sampled_from(GUESTS))
    def vanish(self, name: str) -> None:
        if name in self.host.domains:
            self.host.destroy(name)
            self._gone(name)

    def _gone(self, name: str) -> None:
        self.operator_ingress = {
            v for v in self.operator_ingress if not v.startswith(f"vif{DOMIDS[name]}.")
        }
        self._forget(name)

    @rule(name=st.sampled_from(GUESTS))
    def come_back_as_a_new_domain(self, name: str) -> None:
        """A domain of that name is created (the old one vanished, or it never was)."""
        old = self.host.domains.get(name)
        if old is not None:
            return
        template = new_host().domains[name]
        self.next_domid += 1
        DOMIDS[name] = self.next_domid
        template.domid = self.next_domid
        template.uuid = new_uuid()
        self.host.create(template)
        self.operator_cap[name] = 0
        self.no_cap.discard(name)

    @rule(name=st.sampled_from(GUESTS))
    def reboot(self, name: str) -> None:
        if name in self.host.domains:
            self.next_domid += 1
            old = DOMIDS[name]
            DOMIDS[name] = self.next_domid
            self.host.reboot(name, self.next_domid)
            self.operator_cap[name] = 0
            self.operator_ingress = {
                v for v in self.operator_ingress if not v.startswith(f"vif{old}.")
            }

    def _forget(self, name: str) -> None:
        # Prometheus stops alerting on a domain that is gone; the alert resolves.
        for kind in KINDS:
            if (name, kind) in self.firing:
                self.firing.discard((name, kind))
                self._deliver(name, kind, "resolved", self.episode[(name, kind)])
        self._idle()

    @rule(name=st.sampled_from(GUESTS), cap=st.sampled_from([0, 10, 30, 60, 80]))
    def operator_sets_a_cap(self, name: str, cap: int) -> None:
        dom = self.host.domains.get(name)
        if dom is None or self._live(name, "cpu_cap"):
            return  # changes while throttled are the drift rule's business
        dom.cap = cap
        self.operator_cap[name] = cap

    @rule(name=st.sampled_from(GUESTS))
    def operator_adds_an_ingress_qdisc(self, name: str) -> None:
        dom = self.host.domains.get(name)
        if dom is None or self._live(name, "network_shape"):
            return
        vif = dom.vif_names()[0][0]
        self.host.links[vif].ingress = True
        self.operator_ingress.add(vif)

    @rule(name=st.sampled_from(GUESTS))
    def operator_moves_it_to_an_rtds_pool(self, name: str) -> None:
        """Caps cannot even be planned there: that throttle is stuck (with its error recorded)
        and must not stop reconcile for the others."""
        dom = self.host.domains.get(name)
        if dom is not None:
            dom.scheduler = "rtds"
            self.no_cap.add(name)

    @rule(name=st.sampled_from(GUESTS))
    def drift(self, name: str) -> None:
        """Someone flushes the domain's ingress redirects (a reconcile repairs them)."""
        dom = self.host.domains.get(name)
        if dom is None:
            return
        self.drifted.add(name)
        for vif, _devid, _emu in dom.vif_names():
            link = self.host.links[vif]
            if vif not in self.operator_ingress:
                link.ingress = False
            link.redirects = []

    # -- time --------------------------------------------------------------------------------

    @rule(seconds=st.sampled_from([0.5, 1.1, 3.5, MAX_THROTTLE + 1, READMIT + 1]))
    def time_passes(self, seconds: float) -> None:
        self.clock.now += seconds
        self.engine.tick()
        self._idle()

    @rule()
    def quiet_reconcile_interval(self) -> None:
        """Faults cleared, Alertmanager re-sends what fires, one reconcile interval passes:
        now every admissible firing episode must be throttled and the host exactly right."""
        self.clear_faults()
        self.host.before_run = None
        if self.crash_armed:
            self.restart_after_crash()
        for domain, kind in sorted(self.firing):
            self._deliver(domain, kind, "firing", self.episode[(domain, kind)])
        self._idle()
        for _ in range(3):
            self.engine.tick()
            self.engine.reconcile()
            self._idle()
        self.drifted.clear()
        self._check_quiet()

    # -- situations: the few-step interleavings behind each defect of issue 13, as one rule each,
    # from whatever state the random steps left (faults cleared first, so the situation happens)

    def _calm(self) -> None:
        self.clear_faults()
        self.host.before_run = None
        if self.crash_armed:
            self.restart_after_crash()

    def _free(self, domain: str, kind: str) -> bool:
        """Can a new episode of this alert start a throttle of its own on this guest now?"""
        dom = self.host.domains.get(domain)
        if dom is None or self._live(domain, kind) or (domain, kind) in self.firing:
            return False
        return not (kind == "cpu_cap" and domain in self.no_cap)

    def _start(self, domain: str, kind: str, **extra: str) -> int:
        self.last_episode += 1
        self.episode[(domain, kind)] = self.last_episode
        self.firing.add((domain, kind))
        self._deliver(domain, kind, "firing", self.last_episode, **extra)
        self._idle()
        return self.last_episode

    def _stop(self, domain: str, kind: str) -> None:
        self.firing.discard((domain, kind))
        self._deliver(domain, kind, "resolved", self.episode[(domain, kind)])
        self._idle()

    def _later(self, seconds: float) -> None:
        self.clock.now += seconds
        self.engine.tick()
        self._idle()

    @rule(
        shaped=st.sampled_from(GUESTS), other=st.sampled_from(GUESTS), kind=st.sampled_from(KINDS)
    )
    def two_guests_throttled_then_one_shuts_down(self, shaped: str, other: str, kind: str) -> None:
        """Defect 1: the gone guest's release must leave the other guest's ifbs alone."""
        self._calm()
        if (
            shaped == other
            or not self._free(shaped, "network_shape")
            or not self._free(other, kind)
        ):
            return
        self.engine.reconcile()  # repairs any earlier drift: the shaping below must then hold
        self._idle()
        self.drifted.discard(shaped)
        self._start(shaped, "network_shape")
        self._start(other, kind)
        self.host.destroy(other)
        self.engine.reconcile()  # sees it gone: releases its throttle
        self._idle()
        self._gone(other)

    @rule(domain=st.sampled_from(GUESTS), unreadable=st.booleans())
    def a_pause_takes_effect_then_fails(self, domain: str, unreadable: bool) -> None:
        """Defect 2: `xl pause` times out after pausing, or its check cannot read the host:
        the rollback must unpause (the invariants: no pause without a live pause throttle)."""
        self._calm()
        if not self._free(domain, "pause"):
            return
        if unreadable:

            def unreadable_after_pause(argv: tuple[str, ...]) -> None:
                if argv[:2] == ("xl", "pause"):
                    self.host.observe_failures = 1

            self.host.before_run = unreadable_after_pause
        else:
            self.host.timeout_after.add("xl pause")
        self._start(domain, "pause")
        self._calm()

    @rule(domain=st.sampled_from(GUESTS), kind=st.sampled_from(KINDS))
    def a_late_resolution_of_the_previous_episode(self, domain: str, kind: str) -> None:
        """Defect 3: E1 fires, resolves, is released; E2 fires; E1's resolution comes again."""
        self._calm()
        if not self._free(domain, kind):
            return
        first = self._start(domain, kind)
        self._stop(domain, kind)
        self._later(HOLD_MAX + 0.5)
        self._start(domain, kind)
        self._deliver(domain, kind, "resolved", first)  # an HA peer's, or a retry's
        self._idle()
        self._later(HOLD_MAX + 0.5)
        assert self._live(domain, kind), (
            f"{domain}/{kind}: episode {self.episode[(domain, kind)]} still fires and was "
            f"released by episode {first}'s late resolution"
        )

    @rule(domain=st.sampled_from(GUESTS), kind=st.sampled_from(KINDS))
    def a_new_episode_fires_while_the_release_runs(self, domain: str, kind: str) -> None:
        """Defect 4: the firing lands during the release's first command; after a quiet
        interval (Alertmanager re-sends it) it must be throttled."""
        self._calm()
        if not self._free(domain, kind):
            return
        self._start(domain, kind)
        self._stop(domain, kind)
        self.last_episode += 1
        second = self.last_episode
        fired: list[int] = []

        def fire_during_release(_argv: tuple[str, ...]) -> None:
            if not fired:
                fired.append(1)
                self.episode[(domain, kind)] = second
                self.firing.add((domain, kind))
                self._deliver(domain, kind, "firing", second)

        self.host.before_run = fire_during_release
        self._later(HOLD_MAX + 0.5)
        self.host.before_run = None
        self.quiet_reconcile_interval()

    @rule(domain=st.sampled_from(GUESTS), kind=st.sampled_from(KINDS))
    def an_attack_outlasts_max_throttle(self, domain: str, kind: str) -> None:
        """Defect 6: released at max_throttle, still firing after readmit_after: throttled again."""
        self._calm()
        if not self._free(domain, kind):
            return
        self._start(domain, kind)
        self._later(MAX_THROTTLE + 1)
        self._later(READMIT + 1)
        self.quiet_reconcile_interval()

    @rule(domain=st.sampled_from(GUESTS))
    def shaped_and_released_behind_an_operators_ingress(self, domain: str) -> None:
        """Defect 7: the release must leave the operator's ingress qdisc (the invariants)."""
        self._calm()
        if not self._free(domain, "network_shape"):
            return
        self.operator_adds_an_ingress_qdisc(domain)
        self._start(domain, "network_shape")
        self._stop(domain, "network_shape")
        self._later(HOLD_MAX + 0.5)

    @rule(domain=st.sampled_from(GUESTS), operator=st.sampled_from([0, 10, 30, 80]))
    def caps_meet_stricter_caps(self, domain: str, operator: int) -> None:
        """Defect 8: the strictest of the operator's cap, the live throttle's and a stricter
        alert's is applied; the release restores the operator's exactly (the invariants)."""
        self._calm()
        if not self._free(domain, "cpu_cap"):
            return
        self.operator_sets_a_cap(domain, operator)
        self._start(domain, "cpu_cap")  # cap 40
        expected = min(c for c in (operator, 40) if c > 0)
        assert self.host.domains[domain].cap == expected, (
            f"{domain}: cap {self.host.domains[domain].cap}, the strictest is {expected}"
        )
        stricter = alert(
            "firing", domain=domain, fingerprint=fingerprint(domain, "cpu_cap")[:-4] + "bbbb",
            starts_at=starts_at(self.episode[(domain, "cpu_cap")]), remediation="cpu_cap",
            **STRICT["cpu_cap"],
        )  # fmt: skip
        self.engine.handle(parse_notification(payload(stricter)))  # another alert, same guest
        self._idle()
        expected = min(c for c in (operator, 20) if c > 0)
        assert self.host.domains[domain].cap == expected, (
            f"{domain}: cap {self.host.domains[domain].cap} after a stricter alert, "
            f"the strictest is {expected}"
        )
        self.engine.handle(parse_notification(payload({**stricter, "status": "resolved"})))
        self._stop(domain, "cpu_cap")
        self._later(HOLD_MAX + 0.5)

    @rule(domain=st.sampled_from(GUESTS), kind=st.sampled_from(KINDS))
    def a_new_domain_takes_a_throttled_name(self, domain: str, kind: str) -> None:
        """Defect 10: the throttled guest is destroyed and another domain created under its name
        before the alert resolves: that one did not offend (another UUID), it is not throttled."""
        self._calm()
        if not self._free(domain, kind):
            return
        self._start(domain, kind)
        self.host.destroy(domain)
        self.operator_ingress = {
            v for v in self.operator_ingress if not v.startswith(f"vif{DOMIDS[domain]}.")
        }
        self.come_back_as_a_new_domain(domain)
        self.engine.reconcile()
        self._idle()
        assert not self._live(domain, kind), f"{domain}/{kind}: the new domain was throttled"
        self._forget(domain)  # then the old domain's alerts resolve

    @rule(capped=st.sampled_from(GUESTS), shaped=st.sampled_from(GUESTS))
    def one_throttle_cannot_be_planned_while_another_drifts(self, capped: str, shaped: str) -> None:
        """Defect 9: a capped guest moved to a pool whose scheduler has no cap, another guest's
        shaping flushed: reconcile still repairs the second."""
        self._calm()
        if capped == shaped or not self._free(capped, "cpu_cap"):
            return
        if not self._free(shaped, "network_shape"):
            return
        self._start(capped, "cpu_cap")
        self._start(shaped, "network_shape")
        self.operator_moves_it_to_an_rtds_pool(capped)
        self.drift(shaped)
        self.engine.reconcile()
        self._idle()
        assert self.host.shaped(shaped), f"{shaped}'s shaping not repaired by reconcile"
        self.drifted.discard(shaped)

    # -- invariants ----------------------------------------------------------------------------

    def _live(self, domain: str, kind: str) -> bool:
        return any(t.domain == domain and t.kind == kind for t in self.engine.store.live())

    @invariant()
    def dom0_and_protected_domains_are_never_touched(self) -> None:
        forbidden = {"0", str(DOMIDS["infra"])}
        for argv in self.host.calls:
            tool, sub = argv[0], argv[1] if len(argv) > 1 else ""
            if tool == "xl" and sub.startswith("sched-"):
                domid = argv[argv.index("-d") + 1]
            elif tool == "xl":
                domid = argv[2]
            else:
                devices = [a for a in argv if a.startswith(("vif", IFB_PREFIX))]
                domid = devices[0].removeprefix("vif").removeprefix(IFB_PREFIX).split(".")[0]
            assert domid not in forbidden, f"touched a protected domain: {argv}"

    @invariant()
    def nothing_of_ours_without_a_live_throttle(self) -> None:
        live = {(t.domain, t.kind) for t in self.engine.store.live()}
        for name, dom in self.host.domains.items():
            if (name, "network_shape") not in live:
                assert not [
                    n
                    for n in self.host.links
                    if n == ifb_name(dom.domid) or is_per_vif_ifb(n, dom.domid)
                ]
                for vif, _devid, _emu in dom.vif_names():
                    link = self.host.links[vif]
                    assert FILTER_PREF not in [r.pref for r in link.redirects], vif
                    assert link.root is None or link.root.handle != QDISC_HANDLE, vif
                    assert link.ingress == (vif in self.operator_ingress), (
                        f"{vif}: ingress {link.ingress}, the operator's: "
                        f"{vif in self.operator_ingress}"
                    )
            if (name, "pause") not in live:
                assert dom.pauses == 0, f"{name} left paused"
            if (name, "cpu_cap") not in live:
                assert dom.cap == self.operator_cap[name], (
                    f"{name}: cap {dom.cap}, the operator's {self.operator_cap[name]}"
                )

    @invariant()
    def an_active_throttle_is_on_the_host(self) -> None:
        for throttle in self.engine.store.live():
            dom = self.host.domains.get(throttle.domain)
            if throttle.state != "active" or dom is None or dom.domid != throttle.domid:
                continue
            if throttle.kind == "network_shape" and throttle.domain not in self.drifted:
                assert self.host.shaped(throttle.domain), f"{throttle.domain} lost its shaping"
            elif throttle.kind == "pause":
                assert dom.pauses >= 1, f"{throttle.domain} not paused"
            elif throttle.kind == "cpu_cap" and throttle.domain not in self.no_cap:
                assert 0 < dom.cap <= int(throttle.action.params["cap"]), dom.cap
                operator = self.operator_cap[throttle.domain]
                assert operator == 0 or dom.cap <= operator, (
                    f"{throttle.domain}: cap {dom.cap} loosens the operator's {operator}"
                )

    def _check_quiet(self) -> None:
        store = self.engine.store
        live = {(t.domain, t.kind): t for t in store.live()}
        owned = {str(t.domid) for t in live.values() if t.kind == "network_shape"}
        for name in self.host.links:
            if name.startswith(IFB_PREFIX):
                assert name[len(IFB_PREFIX) :].split(".")[0] in owned, f"stray {name}"
        for (domain, kind), throttle in live.items():
            if kind == "cpu_cap" and domain in self.no_cap:
                continue  # cannot be planned on that scheduler: stays as it is, with an error
            assert throttle.state == "active", f"{domain}/{kind} {throttle.state} when quiet"
            dom = self.host.domains[domain]
            assert throttle.domid == dom.domid
            assert throttle.uuid == dom.uuid, f"{domain}: throttles a domain that did not offend"
            if kind == "network_shape":
                assert self.host.shaped(domain)
            elif kind == "pause":
                assert dom.pauses == 1
            elif kind == "cpu_cap":
                assert 0 < dom.cap <= int(throttle.action.params["cap"])
        for domain, kind in self.firing:
            if domain not in ELIGIBLE or domain not in self.host.domains:
                continue
            if kind == "cpu_cap" and domain in self.no_cap:
                continue
            if (domain, kind) in live:
                continue
            # Not throttled: only allowed when the episode is held back after max_throttle.
            episodes = self._episode_rows(domain, kind)
            assert episodes and episodes[0] is not None and episodes[0] > self.clock.now, (
                f"{domain}/{kind} fires (episode {self.episode[(domain, kind)]}) "
                "and is not throttled"
            )

    def _episode_rows(self, domain: str, kind: str) -> list[Any]:
        db = self.engine.store._db
        with self.engine.store._lock:
            rows = db.execute(
                "SELECT readmit_at FROM episodes WHERE fingerprint = ? AND starts_at = ?",
                (fingerprint(domain, kind), starts_at(self.episode[(domain, kind)])),
            ).fetchall()
        return [row[0] for row in rows]


@pytest.mark.slow
def test_the_engine_keeps_host_and_record_in_agreement(tmp_path: Path) -> None:
    RemediatorMachine.workdir = tmp_path
    machine = RemediatorMachine.TestCase
    machine.settings = settings(
        max_examples=EXAMPLES,
        stateful_step_count=STEPS,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    machine().runTest()
