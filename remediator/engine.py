"""The remediator's core: admit alerts fast, act off the request path, keep timers, reconcile.

The request thread only validates and writes SQLite (`handle`); host work (observe, plan, run,
verify) happens on a small worker pool, one action at a time per domain. A timer thread
releases throttles whose hold or maximum duration ran out, and every `reconcile_interval` (and
at start) compares the record with the host and finishes, repairs or rolls back what differs.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from remediator.alerts import Intent, Notification, Refusal, interpret
from remediator.config import Config
from remediator.host import HostState, ObservedDomain, ifb_domid
from remediator.metrics import Metrics
from remediator.observe import HostReader, ObserveError
from remediator.plan import (
    Command,
    DomainControl,
    KvmctlControl,
    PlanError,
    Tools,
    capture_prior,
    is_applied,
    is_released,
    plan_apply,
    plan_release,
)
from remediator.runner import Result, Runner, as_batch, batched, merged
from remediator.store import Store, Throttle

log = logging.getLogger(__name__)
audit = logging.getLogger("remediator.audit")


@dataclass(frozen=True)
class Decision:
    fingerprint: str
    alertname: str
    domain: str
    status: str
    decision: str  # accepted | attached | duplicate | already_handled | scheduled_release |
    # not_throttled | refused | ignored
    reason: str = ""
    throttle_id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in ("", None)}


def tools_from(config: Config) -> Tools:
    latency = config.actions.network_shape.latency_ms if config.actions.network_shape else 50
    return Tools(
        xl=config.xl_path,
        tc=config.tc_path,
        ip=config.ip_path,
        timeout=config.command_timeout_seconds,
        latency_ms=latency,
        commands=config.actions.commands,
        control=control_from(config),
    )


def control_from(config: Config) -> DomainControl | None:
    """The platform's `DomainControl` (None: Xen's, `Tools.xl`)."""
    return KvmctlControl(config.kvmctl_path) if config.platform == "kvm" else None


class Engine:
    def __init__(
        self,
        config: Config,
        store: Store,
        host: HostReader,
        runner: Runner,
        metrics: Metrics,
        *,
        dry_run: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.store = store
        self.host = host
        self.runner = runner
        self.metrics = metrics
        self.dry_run = dry_run
        self.tools = tools_from(config)
        self._clock = clock
        self._pool = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="act")
        self._domain_locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self._in_flight: set[int] = set()
        # Network shaping is applied in rounds (one host read, one ip and one tc batch, two
        # commits for all pending throttles) where the runner takes batches.
        self._rounds_enabled = bool(getattr(runner, "batches", False)) and not dry_run
        self._round_queue: list[int] = []
        self._round_running = False
        self._wake = threading.Condition()
        self._stopped = threading.Event()
        self._timer: threading.Thread | None = None
        self.ready = threading.Event()
        self._last_reconcile = 0.0

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Reconcile in the background, then keep the timers; `ready` is set after reconcile."""
        self._timer = threading.Thread(target=self._timer_loop, name="timers", daemon=True)
        self._timer.start()

    def stop(self) -> None:
        self._stopped.set()
        with self._wake:
            self._wake.notify_all()
        if self._timer is not None:
            self._timer.join(timeout=10)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """True once no action is queued or running (for tests and the CLI)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._locks_lock:
                if not self._in_flight:
                    return True
            time.sleep(0.01)
        return False

    # -- request path: SQLite only ------------------------------------------------------------

    def handle(self, notification: Notification) -> list[Decision]:
        """Decide every alert of the notification in one transaction; act once it committed."""
        decisions = []
        applies: list[int] = []
        with self.store.batch():
            for alert in notification.alerts:
                outcome = interpret(alert, self.config)
                if isinstance(outcome, Refusal):
                    decision = Decision(
                        alert.fingerprint,
                        alert.name,
                        alert.labels.get("domain", ""),
                        alert.status,
                        "ignored" if outcome.ignored else "refused",
                        outcome.reason,
                    )
                    self._record(decision, outcome.detail)
                elif alert.status == "firing":
                    decision = self._admit(outcome, applies)
                else:
                    decision = self._resolve(outcome)
                decisions.append(decision)
        self._submit_applies(applies)
        if any(d.status == "resolved" for d in decisions):
            with self._wake:
                self._wake.notify_all()
        if notification.truncated_alerts:
            log.warning(
                "Alertmanager truncated %d alerts of group %r; they arrive with later flushes",
                notification.truncated_alerts,
                notification.group_key,
            )
        return decisions

    def _admit(self, intent: Intent, applies: list[int]) -> Decision:
        assert intent.action is not None
        now = self._clock()
        admission = self.store.admit_firing(
            intent, now, self.config.max_active_throttles, self.config.hold
        )
        decision = Decision(
            intent.alert.fingerprint,
            intent.alert.name,
            intent.domain,
            "firing",
            admission.decision,
            admission.reason,
            admission.throttle_id,
        )
        self._record(decision, intent.action.to_json())
        if admission.throttle_id is not None and (
            admission.decision == "accepted" or admission.reapply
        ):
            applies.append(admission.throttle_id)
        return decision

    def _resolve(self, intent: Intent) -> Decision:
        scheduled, dequeued = self.store.resolve(intent, self._clock(), self.config.hold)
        outcome = "scheduled_release" if scheduled else "dequeued" if dequeued else "not_throttled"
        decision = Decision(
            intent.alert.fingerprint,
            intent.alert.name,
            intent.domain,
            "resolved",
            outcome,
            throttle_id=scheduled[0] if scheduled else None,
        )
        self._record(decision, "")
        return decision

    def _record(self, decision: Decision, detail: str) -> None:
        self.metrics.alerts.labels(decision.status, decision.decision).inc()
        if decision.decision == "refused":
            self.metrics.refusals.labels(decision.reason).inc()
        self.store.record_decision(
            self._clock(),
            fingerprint=decision.fingerprint,
            alertname=decision.alertname,
            domain=decision.domain,
            status=decision.status,
            decision=decision.decision,
            reason=decision.reason,
            detail=detail,
        )
        self._audit("alert", **decision.as_dict(), detail=detail)

    def _audit(self, event: str, **fields: Any) -> None:
        # JSON keeps hostile label values (newlines, control characters) on one escaped line.
        audit.info("%s", json.dumps({"event": event, **fields}, sort_keys=True, default=str))

    # -- workers ------------------------------------------------------------------------------

    def _submit(self, throttle_id: int, job: Callable[[int], None]) -> None:
        if job == self._apply and self._rounds_enabled:
            self._submit_applies([throttle_id])
            return
        with self._locks_lock:
            if throttle_id in self._in_flight or self._stopped.is_set():
                return
            self._in_flight.add(throttle_id)
        self._spawn(throttle_id, job)

    def _submit_applies(self, throttle_ids: list[int]) -> None:
        """Apply these throttles; with rounds, together with every other one pending now (the
        alerts of one notification are in one round, `_apply_round`)."""
        if not self._rounds_enabled:
            for throttle_id in throttle_ids:
                self._submit(throttle_id, self._apply)
            return
        with self._locks_lock:
            if self._stopped.is_set():
                return
            for throttle_id in throttle_ids:
                if throttle_id not in self._in_flight:
                    self._in_flight.add(throttle_id)
                    self._round_queue.append(throttle_id)
            if self._round_running or not self._round_queue:
                return
            self._round_running = True
        self._pool.submit(self._rounds)

    def _spawn(self, throttle_id: int, job: Callable[[int], None]) -> None:
        """Run `job` on the pool for a throttle already counted in flight."""

        def run() -> None:
            try:
                job(throttle_id)
            except Exception:
                log.exception("throttle %d: unexpected failure", throttle_id)
            finally:
                with self._locks_lock:
                    self._in_flight.discard(throttle_id)

        self._pool.submit(run)

    def _rounds(self) -> None:
        """Apply what is queued, a round at a time, until nothing is: throttles admitted while
        a round runs make up the next one."""
        while True:
            with self._locks_lock:
                ids, self._round_queue = self._round_queue, []
                if not ids or self._stopped.is_set():
                    self._in_flight.difference_update(ids)
                    self._round_running = False
                    return
            handed_off: set[int] = set()
            try:
                handed_off = self._apply_round(ids)
            except Exception:
                log.exception("apply round of throttles %s: unexpected failure", ids)
            with self._locks_lock:
                self._in_flight.difference_update(set(ids) - handed_off)

    def _domain_lock(self, domain: str) -> threading.Lock:
        with self._locks_lock:
            return self._domain_locks.setdefault(domain, threading.Lock())

    def _observe(self, throttle: Throttle) -> ObservedDomain | None:
        state = self.host.observe([throttle.domain], [throttle.kind])
        dom = state.domains.get(throttle.domain)
        if dom is not None and dom.paused is None and throttle.kind == "pause":
            raise ObserveError(f"the run state of {throttle.domain} is unknown")
        return dom

    def _run(self, throttle: Throttle, phase: str, commands: Iterable[Command]) -> Result | None:
        """Run commands in order; the first failure is returned, None when all succeeded.

        A runner that `batches` gets consecutive tc (ip) commands as one `tc -batch -`."""
        commands = list(commands)
        self._log_commands(throttle, phase, commands)
        if self.dry_run:
            return None
        return self._execute(commands)

    def _log_commands(self, throttle: Throttle, phase: str, commands: list[Command]) -> None:
        for command in commands:
            if self.dry_run:
                self._audit("dry_run", throttle=throttle.id, phase=phase, argv=list(command.argv))
                continue
            log.info(
                "%s %s on %s (throttle %d, %s): %s",
                phase,
                throttle.kind,
                throttle.domain,
                throttle.id,
                throttle.reason,
                list(command.argv),
            )

    def _execute_and_observe(
        self, commands: list[Command], names: list[str]
    ) -> tuple[Result | None, HostState | None]:
        """`_execute`, and the network state of the named domains after it when the reader can
        read it in the plan's last `tc -batch -` (no process for the check); else None."""
        commands = batched(commands)
        observe_after = getattr(self.host, "observe_after", None)
        last = as_batch(commands[-1], "tc") if commands else None
        if observe_after is None or last is None:
            return self._execute(commands), None
        failure = self._execute(commands[:-1])
        if failure is not None:
            return failure, None
        result, after = observe_after(names, {"network_shape"}, last)
        self.metrics.command_seconds.labels(os.path.basename(last.argv[0])).observe(result.seconds)
        return (None if result.ok else result), after

    def _execute(self, commands: list[Command]) -> Result | None:
        if getattr(self.runner, "batches", False):
            commands = batched(commands)
        for command in commands:
            result = self.runner.run(command)
            self.metrics.command_seconds.labels(os.path.basename(command.argv[0])).observe(
                result.seconds
            )
            if not result.ok:
                return result
        return None

    def _end(self, throttle: Throttle, state: str, reason: str, error: str | None = None) -> None:
        now = self._clock()
        self.store.end(
            throttle.id, now, state, reason, error, now + self.config.readmit_after_seconds
        )
        if reason == "max_duration":
            # Still attacking then? Its episode is admitted again after `hold.readmit_after`;
            # meanwhile an operator is told through this counter (docs/remediator.md).
            self.metrics.max_throttle_reached.labels(throttle.kind).inc()
        self._audit(
            "ended",
            throttle=throttle.id,
            domain=throttle.domain,
            kind=throttle.kind,
            state=state,
            reason=reason,
            error=error,
        )
        self._promote_waiting()

    def _promote_waiting(self) -> None:
        """Admit the episodes that arrived while their throttle was being released."""
        for admission in self.store.promote_waiting(
            self._clock(), self.config.max_active_throttles, self.config.hold
        ):
            if admission.throttle_id is not None and (
                admission.decision == "accepted" or admission.reapply
            ):
                self._audit("admitted_after_release", throttle=admission.throttle_id)
                self._submit(admission.throttle_id, self._apply)

    def _apply(self, throttle_id: int) -> None:
        throttle = self.store.get(throttle_id)
        if throttle is None:
            return
        with self._domain_lock(throttle.domain):
            throttle = self._still_to_apply(throttle_id)
            if throttle is None:
                return
            try:
                dom = self._observe(throttle)
            except ObserveError as error:
                self._unreadable(throttle, error)
                return
            prepared = self._prepare(throttle, dom)
            if prepared is None:
                return
            assert dom is not None
            prior, commands = prepared
            # Written before anything changes on the host.
            with self.store.batch(host_facts=True):
                self._begin_applying(throttle, dom, prior)
            failure = self._run(throttle, "apply", commands)
            if failure is None:
                verified = self._verify_applied(throttle, prior)
                if verified is not None:
                    # Written after the host changed and the change was seen.
                    with self.store.batch(host_facts=True):
                        self._activated(throttle, dom, verified, commands)
                    return
                problem = "the host does not show the throttle after applying it"
            else:
                problem = failure.describe()
            self._apply_failed(throttle, problem)

    def _still_to_apply(self, throttle_id: int) -> Throttle | None:
        """The throttle if it is still to be applied (under its domain's lock); a pending one
        whose release was requested meanwhile ends here."""
        throttle = self.store.get(throttle_id)
        if throttle is None or throttle.state not in ("pending", "applying"):
            return None
        if throttle.end_reason is not None and throttle.state == "pending":
            self._end(throttle, "released", throttle.end_reason)
            return None
        return throttle

    def _unreadable(self, throttle: Throttle, error: ObserveError) -> None:
        # Acting blind would be unsafe: it waits for the next reconcile.
        self.store.update(throttle.id, error=str(error))
        self.metrics.actions.labels(throttle.kind, "apply", "host_unreadable").inc()

    def _prepare(
        self, throttle: Throttle, dom: ObservedDomain | None
    ) -> tuple[dict[str, Any], list[Command]] | None:
        """What to restore and the plan, from a fresh observation of the domain; None when the
        throttle ended instead (no such domain, another domain of that name, cannot be planned,
        dry run)."""
        kind = throttle.kind
        if dom is None:
            self.metrics.refusals.labels("unknown_domain").inc()
            self.metrics.actions.labels(kind, "apply", "unknown_domain").inc()
            self._end(throttle, "failed", "unknown_domain", "no such domain on this host")
            return None
        if throttle.uuid is not None and dom.uuid is not None and dom.uuid != throttle.uuid:
            # Same name, another domain: not the one that offended.
            self.metrics.actions.labels(kind, "apply", "domain_replaced").inc()
            self._end(throttle, "released", "domain_replaced")
            return None
        try:
            prior = throttle.prior
            if throttle.state == "pending" or throttle.domid != dom.domid:
                # First attempt, or the domain rebooted since: what to restore is what
                # this incarnation has now.
                prior = capture_prior(throttle.action, dom, self.tools)
            elif kind == "pause" and prior.get("pause_pending"):
                # Crashed around `xl pause`: its effect is visible in xl list, its exit
                # status never says anything.
                prior = {"pauses": 1 if dom.paused else 0}
            commands = plan_apply(throttle.action, dom, prior, self.tools)
        except PlanError as error:
            self.metrics.refusals.labels(error.reason).inc()
            self.metrics.actions.labels(kind, "apply", error.reason).inc()
            self._end(throttle, "failed", error.reason, str(error))
            return None
        if self.dry_run:
            self._run(throttle, "apply", commands)
            self.metrics.actions.labels(kind, "apply", "dry_run").inc()
            self._end(throttle, "dry_run", "dry_run")
            return None
        if kind == "pause" and commands:
            prior = {"pauses": 0, "pause_pending": 1}
        return prior, commands

    def _begin_applying(
        self, throttle: Throttle, dom: ObservedDomain, prior: dict[str, Any]
    ) -> None:
        self.store.update(
            throttle.id,
            state="applying",
            domid=dom.domid,
            prior=prior,
            uuid=throttle.uuid or dom.uuid,
        )

    def _activated(
        self,
        throttle: Throttle,
        dom: ObservedDomain,
        prior: dict[str, Any],
        commands: list[Command],
    ) -> None:
        self.store.activate(
            throttle.id,
            self._clock(),
            prior,
            throttle.created_at + self.config.max_throttle_seconds,
        )
        self.metrics.actions.labels(throttle.kind, "apply", "ok").inc()
        self._audit(
            "applied",
            throttle=throttle.id,
            domain=throttle.domain,
            kind=throttle.kind,
            domid=dom.domid,
            argv=[list(c.argv) for c in commands],
        )

    def _apply_failed(self, throttle: Throttle, problem: str) -> None:
        self.metrics.actions.labels(throttle.kind, "apply", "failed").inc()
        log.warning("throttle %d: apply failed (%s), rolling back", throttle.id, problem)
        current = self.store.begin_release(throttle.id, self._clock(), "apply_failed")
        if current is not None:
            self._release_locked(current, error=problem)

    def _apply_round(self, ids: list[int]) -> set[int]:
        """Apply the network shaping of every throttle in `ids` together: one host read, one
        commit of their `applying` records, their plans merged into one `ip -batch -` and one
        `tc -batch -` (per step of the plans), one verifying read, one commit of the `active`
        ones. Another kind (xl: a process each anyway) or a domain busy with another action
        goes to `_apply` on the pool at once. What the round does not finish (a command or
        check that failed) goes there afterwards: `_apply` finishes it from the recorded state
        or rolls it back, as after a crash. A round of one throttle is that throttle's own
        apply: a failure rolls it back, as `_apply` does.

        Returns the throttles handed to `_apply` (still in flight)."""
        handed: list[int] = []
        held: list[tuple[Throttle, threading.Lock]] = []
        unfinished: list[int] = []
        try:
            for throttle_id in ids:
                throttle = self.store.get(throttle_id)
                if throttle is None or throttle.state not in ("pending", "applying"):
                    continue
                lock = self._domain_lock(throttle.domain)
                if (
                    throttle.kind != "network_shape"
                    or any(t.domain == throttle.domain for t, _ in held)
                    or not lock.acquire(blocking=False)
                ):
                    self._spawn(throttle_id, self._apply)
                    handed.append(throttle_id)
                    continue
                held.append((throttle, lock))
            unfinished = self._apply_together([t.id for t, _ in held])
        finally:
            for _, lock in held:
                lock.release()
        for throttle_id in unfinished:
            self._spawn(throttle_id, self._apply)
        return {*handed, *unfinished}

    def _apply_together(self, ids: list[int]) -> list[int]:
        """`_apply_round`'s work, its domains locked."""
        throttles = [t for t in (self._still_to_apply(i) for i in ids) if t is not None]
        if not throttles:
            return []
        try:
            host = self.host.observe([t.domain for t in throttles], {"network_shape"})
        except ObserveError as error:
            for throttle in throttles:
                self._unreadable(throttle, error)
            return []
        planned = []
        for throttle in throttles:
            dom = host.domains.get(throttle.domain)
            prepared = self._prepare(throttle, dom)
            if prepared is not None:
                assert dom is not None
                planned.append((throttle, dom, *prepared))
        if not planned:
            return []
        # Written before anything changes on the host.
        with self.store.batch(host_facts=True):
            for throttle, dom, prior, _ in planned:
                self._begin_applying(throttle, dom, prior)
        for throttle, _, _, commands in planned:
            self._log_commands(throttle, "apply", commands)
        names = [t.domain for t, *_ in planned]
        failure, after = self._execute_and_observe(
            merged([commands for _, _, _, commands in planned]), names
        )
        if len(planned) == 1 and failure is not None:
            # The round was this throttle's own apply: its failure is its own (rolled back).
            self._apply_failed(planned[0][0], failure.describe())
            return []
        if failure is not None:
            log.warning("apply round: %s; finishing its throttles one by one", failure.describe())
        if after is None:
            try:
                after = self.host.observe(names, {"network_shape"})
            except ObserveError:
                after = None
        if after is None and len(planned) == 1:
            self._apply_failed(
                planned[0][0], "the host does not show the throttle after applying it"
            )
            return []
        if after is None:
            return [t.id for t, *_ in planned]
        done, alone = [], []
        for throttle, dom, prior, commands in planned:
            seen = after.domains.get(throttle.domain)
            if (
                seen is not None
                and seen.domid == dom.domid
                and is_applied(throttle.action, seen, prior, self.tools)
            ):
                done.append((throttle, dom, prior, commands))
            elif len(planned) == 1:
                self._apply_failed(
                    throttle, "the host does not show the throttle after applying it"
                )
            else:
                alone.append(throttle.id)
        # Written after the host changed and the change was seen.
        with self.store.batch(host_facts=True):
            for throttle, dom, prior, commands in done:
                self._activated(throttle, dom, prior, commands)
        return alone

    def _verify_applied(self, throttle: Throttle, prior: dict[str, Any]) -> dict[str, Any] | None:
        try:
            dom = self._observe(throttle)
        except ObserveError:
            return None
        if dom is None:
            return None
        if throttle.kind == "pause":
            if not dom.paused:
                return None
            return prior if prior.get("paused_before") else {"pauses": 1}
        return prior if is_applied(throttle.action, dom, prior, self.tools) else None

    def _release(self, throttle_id: int) -> None:
        throttle = self.store.get(throttle_id)
        if throttle is None:
            return
        with self._domain_lock(throttle.domain):
            was_pending = throttle.state == "pending"
            # Only if still due: a firing attached since the timer fired cancels the release.
            releasing = self.store.begin_release(throttle_id, self._clock(), None)
            if releasing is None:
                return
            if was_pending and releasing.domid is None:
                assert releasing.end_reason is not None
                self._end(releasing, "released", releasing.end_reason)
                return
            self._release_locked(releasing)

    def _release_locked(self, throttle: Throttle, error: str | None = None) -> None:
        """Undo a throttle that `begin_release` moved to releasing (its end_reason is set)."""
        kind = throttle.kind
        reason = throttle.end_reason or "resolved"
        try:
            dom = self._observe(throttle)
        except ObserveError as failure:
            self.store.update(throttle.id, error=str(failure))
            self.metrics.actions.labels(kind, "release", "host_unreadable").inc()
            return
        if throttle.domid is None:
            self._end(throttle, "released", reason)  # never applied: nothing on the host
            return
        if dom is None or dom.domid != throttle.domid:
            # Gone or rebooted: the throttle went with that incarnation; only our ifbs may stay.
            self._remove_stray_ifbs(exclude=throttle.id)
            self.metrics.actions.labels(kind, "release", "domain_gone").inc()
            if reason in ("resolved", "domain_gone", "domain_replaced"):
                # A decided end (max_duration, operator, apply_failed) keeps its reason: after
                # max_duration the episode must still be admitted again after readmit_after.
                if dom is None:
                    reason = "domain_gone"
                elif reason != "domain_replaced":
                    reason = "domain_rebooted"
            self._end(throttle, "failed" if error else "released", reason, error)
            return
        prior = dict(throttle.prior)
        if kind == "pause" and prior.get("pause_pending"):
            # `xl pause` failed, timed out or was never confirmed: whether it took effect is
            # only visible in xl list (xl does not show the pause count).
            prior = {"pauses": 1 if dom.paused else 0}
            self.store.update(throttle.id, prior=prior)
        if kind == "pause" and not dom.paused:
            prior["pauses"] = 0  # someone unpaused it already; an unpause now would be refused
        try:
            commands = plan_release(throttle.action, dom, prior, self.tools)
        except PlanError as failure:
            self.store.update(throttle.id, error=str(failure))
            self.metrics.actions.labels(kind, "release", failure.reason).inc()
            return
        if kind == "pause":
            for command in commands:
                failure_result = self._run(throttle, "release", [command])
                if failure_result is not None:
                    break
                prior["pauses"] = int(prior["pauses"]) - 1
                self.store.update(throttle.id, prior=prior)
            failure_result = None
        else:
            failure_result = self._run(throttle, "release", commands)
        released = False
        if failure_result is None:
            try:
                after = self._observe(throttle)
            except ObserveError:
                after = None
            released = after is not None and is_released(throttle.action, after, prior, self.tools)
        if released:
            self.metrics.actions.labels(kind, "release", "ok").inc()
            self._end(throttle, "failed" if error else "released", reason, error)
            return
        problem = failure_result.describe() if failure_result else "the host still shows it"
        self.metrics.actions.labels(kind, "release", "failed").inc()
        log.warning("throttle %d: release incomplete (%s); retrying later", throttle.id, problem)
        self.store.update(throttle.id, error=problem)

    # -- timers and reconciliation ------------------------------------------------------------

    def _timer_loop(self) -> None:
        try:
            self.reconcile()
        except Exception:
            log.exception("reconciliation at start failed; retrying at the next interval")
        self.ready.set()
        while not self._stopped.is_set():
            with self._wake:
                self._wake.wait(timeout=self._next_wait())
            if self._stopped.is_set():
                return
            try:
                self.tick()
            except Exception:
                log.exception("timer tick failed")

    def _next_wait(self) -> float:
        now = self._clock()
        deadlines = [t.until for t in self.store.live() if t.until is not None]
        wait = min([*deadlines, now + 1.0]) - now
        return max(0.05, min(wait, 1.0))

    def tick(self) -> None:
        """Release what is due; every reconcile interval, check everything against the host."""
        now = self._clock()
        for throttle in self.store.live():
            due = throttle.until is not None and throttle.until <= now
            if throttle.state == "active" and due:
                if throttle.release_at is None or (
                    throttle.expires_at is not None and throttle.expires_at <= now
                ):
                    self.store.request_release(throttle.id, now, "max_duration")
                self._submit(throttle.id, self._release)
            elif throttle.state == "pending" and due:
                self._submit(throttle.id, self._release)
        if now - self._last_reconcile >= self.config.reconcile_interval_seconds:
            self.reconcile()

    def reconcile(self) -> None:
        """Make host and record agree: finish half-done work, repair drift, drop strays."""
        now = self._clock()
        self._last_reconcile = now
        pruned = self.store.prune(now - self.config.retention_seconds)
        if pruned:
            log.info("forgot %d records older than limits.retention", pruned)
        self._promote_waiting()
        live = self.store.live()
        for throttle in live:
            if throttle.state in ("pending", "applying"):
                self._submit(throttle.id, self._apply)
            elif throttle.state == "releasing":
                self._submit(throttle.id, self._release)
        active = [t for t in live if t.state == "active"]
        try:
            host = self.host.observe(
                {t.domain for t in live}, {t.kind for t in live} | {"network_shape"}
            )
        except ObserveError as error:
            log.warning("reconcile: cannot read the host: %s", error)
            return
        for throttle in active:
            try:
                self._check_active(throttle, host)
            except PlanError as error:
                # One throttle that cannot be checked must not stop the others' checks.
                log.warning("reconcile: throttle %d: %s", throttle.id, error)
                self.metrics.actions.labels(throttle.kind, "reconcile", error.reason).inc()
                self.store.update(throttle.id, error=str(error))
        self._remove_stray_ifbs(host=host)

    def _check_active(self, throttle: Throttle, host: HostState) -> None:
        dom = host.domains.get(throttle.domain)
        if dom is None or dom.domid != throttle.domid:
            replaced = (
                dom is not None
                and throttle.uuid is not None
                and dom.uuid is not None
                and dom.uuid != throttle.uuid
            )
            if dom is not None and not replaced and throttle.kind != "command":
                # Rebooted while throttled (perhaps to escape it): throttle the new incarnation.
                moved = self.store.transition(
                    throttle.id, "active", state="pending", domid=None, prior={}
                )
                if moved:
                    log.info("throttle %d: %s rebooted, re-applying", throttle.id, throttle.domain)
                    self._submit(throttle.id, self._apply)
            else:
                # Gone, or its name now belongs to another domain (another uuid).
                reason = "domain_replaced" if replaced else "domain_gone"
                self.store.request_release(throttle.id, self._clock(), reason)
                self._submit(throttle.id, self._release)
            return
        if throttle.kind == "pause":
            if dom.paused is False:  # None: unknown this time, not unpaused
                self.store.request_release(throttle.id, self._clock(), "unpaused_elsewhere")
                self._submit(throttle.id, self._release)
            return
        # Only if still active: a release that began since our snapshot is not drift.
        if not is_applied(
            throttle.action, dom, throttle.prior, self.tools
        ) and self.store.transition(throttle.id, "active", state="applying"):
            log.warning("throttle %d: host lost it (drift), re-applying", throttle.id)
            self._submit(throttle.id, self._apply)

    def _remove_stray_ifbs(self, host: HostState | None = None, exclude: int | None = None) -> None:
        """Delete ifbs of ours that no live network throttle owns.

        Ownership is by the domid the record holds (an ifb is `jifb<domid>`, `jifb<domid>r` or
        an older `jifb<domid>.<devid>`), read after
        the host was observed: every ifb seen was created by a throttle whose domid was recorded
        before the `ip link add`, so it is found here unless that throttle has ended.
        """
        if self.dry_run:
            return
        if host is None:
            try:
                host = self.host.observe([], [])
            except ObserveError:
                return
        owned = {
            str(t.domid)
            for t in self.store.live()
            if t.kind == "network_shape" and t.domid is not None and t.id != exclude
        }
        for name in host.our_ifbs:
            if ifb_domid(name) in owned:
                continue
            log.info("removing stray ifb %s (no live throttle owns it)", name)
            result = self.runner.run(self.tools.cmd(self.tools.ip, "link", "del", "dev", name))
            self._audit("stray_ifb_removed", ifb=name, ok=result.ok)

    # -- operator -----------------------------------------------------------------------------

    def release_now(self, throttle_id: int, reason: str = "operator") -> bool:
        if not self.store.request_release(throttle_id, self._clock(), reason):
            return False
        self._submit(throttle_id, self._release)
        return True
