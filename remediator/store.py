"""Durable throttle records in SQLite, written before and after every host change.

A throttle is one action on one domain (`domain`, `kind`), fed by one or more alerts
(fingerprints). Its life: pending (admitted, nothing done) -> applying (prior state recorded,
commands may be running) -> active -> releasing -> released; or failed (rolled back). At most
one live throttle per (domain, kind), enforced by a partial unique index.

One connection, serialised by a lock; WAL, so a record survives kill -9 the moment its
transaction commits, and synchronous=FULL (an fsync per commit) except for the records of host
facts (`batch(host_facts=True)`, which says why). Other processes (the CLI) may open the same
file. `batch()` makes the writes of one webhook notification one transaction (one fsync for
many alerts), and those of one apply round.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from remediator.alerts import Action, Intent, instant_seconds
from remediator.config import Hold
from remediator.plan import strictest

LIVE = ("pending", "applying", "active", "releasing")
# Ends decided on purpose: the episode that was throttled stays handled after them.
DELIBERATE_ENDS = ("operator", "max_duration", "unpaused_elsewhere")
# Columns added since the first schema, for state files written by an older version.
_ADDED_COLUMNS = {
    "throttles": {"uuid": "TEXT"},
    "episodes": {"readmit_at": "REAL"},
    "throttle_alerts": {"ended_at": "REAL"},
}
_LIVE_SQL = "('pending', 'applying', 'active', 'releasing')"

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS throttles (
    id INTEGER PRIMARY KEY,
    domain TEXT NOT NULL,
    kind TEXT NOT NULL,
    action TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL,
    offence INTEGER NOT NULL,
    domid INTEGER,
    prior TEXT NOT NULL DEFAULT '{{}}',
    created_at REAL NOT NULL,
    applied_at REAL,
    resolved_at REAL,
    release_at REAL,
    expires_at REAL,
    ended_at REAL,
    end_reason TEXT,
    error TEXT,
    uuid TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS one_live_throttle
    ON throttles (domain, kind) WHERE state IN {_LIVE_SQL};
CREATE TABLE IF NOT EXISTS throttle_alerts (
    throttle_id INTEGER NOT NULL REFERENCES throttles (id),
    fingerprint TEXT NOT NULL,
    starts_at TEXT NOT NULL,
    alertname TEXT NOT NULL,
    status TEXT NOT NULL,
    ended_at REAL,
    PRIMARY KEY (throttle_id, fingerprint)
);
CREATE INDEX IF NOT EXISTS throttle_alerts_by_fingerprint ON throttle_alerts (fingerprint);
CREATE TABLE IF NOT EXISTS episodes (
    fingerprint TEXT NOT NULL,
    starts_at TEXT NOT NULL,
    seen_at REAL NOT NULL,
    readmit_at REAL,
    PRIMARY KEY (fingerprint, starts_at)
);
CREATE TABLE IF NOT EXISTS waiting (
    domain TEXT NOT NULL,
    kind TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    starts_at TEXT NOT NULL,
    alertname TEXT NOT NULL,
    action TEXT NOT NULL,
    received_at REAL NOT NULL,
    PRIMARY KEY (domain, kind, fingerprint)
);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    fingerprint TEXT NOT NULL,
    alertname TEXT NOT NULL,
    domain TEXT NOT NULL,
    status TEXT NOT NULL,
    decision TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL
);
"""


class StateLocked(Exception):
    """Another `serve` process owns this state file."""


def lock_state(path: str) -> int:
    """Take the state file's exclusive serve lock (`<path>.lock`, flock) for this process's
    life and return its descriptor; two servers on one record would act twice on the host."""
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StateLocked(f"{path} is in use by another serve process") from None
    return fd


@dataclass(frozen=True)
class Throttle:
    id: int
    domain: str
    action: Action
    state: str
    reason: str
    offence: int
    domid: int | None
    prior: dict[str, Any]
    created_at: float
    applied_at: float | None
    resolved_at: float | None
    release_at: float | None
    expires_at: float | None
    ended_at: float | None
    end_reason: str | None
    error: str | None
    uuid: str | None = None

    @property
    def kind(self) -> str:
        return self.action.kind

    @property
    def until(self) -> float | None:
        """When it ends at the latest, as far as is known now."""
        times = [t for t in (self.release_at, self.expires_at) if t is not None]
        return min(times) if times else None


@dataclass(frozen=True)
class Admission:
    decision: str  # accepted | attached | duplicate | queued | already_handled | refused
    throttle_id: int | None
    reason: str = ""
    reapply: bool = False  # attached with a stricter action than the throttle had


class Store:
    def __init__(self, path: str) -> None:
        self._lock = threading.RLock()
        self._batch_depth = 0
        self._db = sqlite3.connect(path, timeout=10.0, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._synchronous = "FULL"
        self._db.executescript(SCHEMA)
        for table, columns in _ADDED_COLUMNS.items():
            have = {row["name"] for row in self._db.execute(f"PRAGMA table_info({table})")}
            for name, kind in columns.items():
                if name not in have:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def batch(self, *, host_facts: bool = False) -> Iterator[None]:
        """Every write inside is one transaction, committed at the end (or rolled back whole);
        other threads wait for it, so nothing acts on a record before it is committed.

        `host_facts`: the writes only record what is being done to the host or what it shows
        (a throttle's `applying` and `active`), committed without an fsync (WAL,
        synchronous=NORMAL): they survive kill -9 of this process like every commit, and are
        lost only with the operating system, that is with Dom0, whose crash takes the host and
        every tc, ifb, cap and pause they describe with it. Everything promised to someone
        else (an alert's admission before the 200, an ending, an operator's release) keeps its
        fsync; on power loss the record is a prefix of its commits, never a mix."""
        with self._tx(host_facts=host_facts):
            self._batch_depth += 1
            try:
                yield
            finally:
                self._batch_depth -= 1

    @contextmanager
    def _tx(self, *, host_facts: bool = False) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._batch_depth:
                yield self._db  # part of the batch's transaction
                return
            synchronous = "NORMAL" if host_facts else "FULL"
            if synchronous != self._synchronous:
                self._db.execute(f"PRAGMA synchronous={synchronous}")
                self._synchronous = synchronous
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.rollback()
                raise
            self._db.commit()

    @staticmethod
    def _throttle(row: sqlite3.Row) -> Throttle:
        return Throttle(
            id=row["id"],
            domain=row["domain"],
            action=Action.from_json(row["action"]),
            state=row["state"],
            reason=row["reason"],
            offence=row["offence"],
            domid=row["domid"],
            prior=json.loads(row["prior"]),
            created_at=row["created_at"],
            applied_at=row["applied_at"],
            resolved_at=row["resolved_at"],
            release_at=row["release_at"],
            expires_at=row["expires_at"],
            ended_at=row["ended_at"],
            end_reason=row["end_reason"],
            error=row["error"],
            uuid=row["uuid"],
        )

    # -- admission, from the request path: SQLite only, no host access ------------------------

    def admit_firing(self, intent: Intent, now: float, limit: int, hold: Hold) -> Admission:
        assert intent.action is not None
        alert = intent.alert
        with self._tx() as db:
            return self._admit(
                db, intent.domain, intent.action, alert.fingerprint, alert.starts_at, alert.name,
                now, limit, hold,
            )  # fmt: skip

    def _admit(
        self,
        db: sqlite3.Connection,
        domain: str,
        action: Action,
        fingerprint: str,
        starts_at: str,
        alertname: str,
        now: float,
        limit: int,
        hold: Hold,
    ) -> Admission:
        kind = action.kind
        if _ended_since(db, fingerprint, starts_at):
            # A copy of an alert that had already ended when it started: an HA peer, or an
            # Alertmanager that merged it under another startsAt, delivers it late.
            return Admission("already_handled", None)
        live = db.execute(
            f"SELECT * FROM throttles WHERE domain = ? AND kind = ? AND state IN {_LIVE_SQL}",
            (domain, kind),
        ).fetchone()
        if live is not None:
            attached = db.execute(
                "SELECT status, starts_at FROM throttle_alerts "
                "WHERE throttle_id = ? AND fingerprint = ?",
                (live["id"], fingerprint),
            ).fetchone()
            same_episode = attached is not None and attached["starts_at"] == starts_at
            if live["state"] == "releasing" or live["end_reason"] is not None:
                # Too late to keep this throttle: the episode waits for the release to end and
                # then gets a throttle of its own. Unless this very episode was released on
                # purpose (operator, max_throttle): then it is handled.
                if same_episode and live["end_reason"] in DELIBERATE_ENDS:
                    return Admission("already_handled", None)
                waiting = db.execute(
                    "SELECT starts_at FROM waiting WHERE domain = ? AND kind = ? "
                    "AND fingerprint = ?",
                    (domain, kind, fingerprint),
                ).fetchone()
                if waiting is not None and waiting["starts_at"] == starts_at:
                    return Admission("duplicate", live["id"])
                db.execute(
                    "INSERT OR REPLACE INTO waiting VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (domain, kind, fingerprint, starts_at, alertname, action.to_json(), now),
                )
                return Admission("queued", live["id"])
            if same_episode and attached["status"] == "firing":
                return Admission("duplicate", live["id"])
            db.execute(
                "INSERT OR REPLACE INTO throttle_alerts "
                "(throttle_id, fingerprint, starts_at, alertname, status) "
                "VALUES (?, ?, ?, ?, 'firing')",
                (live["id"], fingerprint, starts_at, alertname),
            )
            # It offends again while held: the hold starts over when it resolves again.
            db.execute(
                "UPDATE throttles SET release_at = NULL, resolved_at = NULL WHERE id = ?",
                (live["id"],),
            )
            current = Action.from_json(live["action"])
            merged = strictest(current, action)
            reapply = merged != current
            if reapply:
                db.execute(
                    "UPDATE throttles SET action = ?, state = CASE state WHEN 'active' "
                    "THEN 'applying' ELSE state END WHERE id = ?",
                    (merged.to_json(), live["id"]),
                )
            if live["state"] == "active":
                self._mark_episodes(db, live["id"], now)
            return Admission("attached", live["id"], reapply=reapply)
        seen = db.execute(
            "SELECT readmit_at FROM episodes WHERE fingerprint = ? AND starts_at = ?",
            (fingerprint, starts_at),
        ).fetchone()
        if seen is not None and (seen["readmit_at"] is None or seen["readmit_at"] > now):
            # Re-sent (repeat_interval) after an operator release or the maximum duration.
            # Heard of again: kept until `retention` after the last time.
            db.execute(
                "UPDATE episodes SET seen_at = ? WHERE fingerprint = ? AND starts_at = ?",
                (now, fingerprint, starts_at),
            )
            return Admission("already_handled", None)
        (active,) = db.execute(
            f"SELECT COUNT(*) FROM throttles WHERE state IN {_LIVE_SQL}"
        ).fetchone()
        if active >= limit:
            return Admission("refused", None, "throttle_limit")
        (previous,) = db.execute(
            "SELECT COUNT(*) FROM throttles WHERE domain = ? AND created_at >= ? "
            "AND state != 'failed'",
            (domain, now - hold.repeat_window_seconds),
        ).fetchone()
        cursor = db.execute(
            "INSERT INTO throttles (domain, kind, action, state, reason, offence, created_at) "
            "VALUES (?, ?, ?, 'pending', ?, ?, ?)",
            (domain, kind, action.to_json(), alertname, previous + 1, now),
        )
        throttle_id = cursor.lastrowid
        assert throttle_id is not None
        db.execute(
            "INSERT INTO throttle_alerts (throttle_id, fingerprint, starts_at, alertname, status) "
            "VALUES (?, ?, ?, ?, 'firing')",
            (throttle_id, fingerprint, starts_at, alertname),
        )
        # The episode is handled once the throttle is active (`activate`), not now: an apply
        # that fails must leave re-sends free to try again.
        return Admission("accepted", throttle_id)

    @staticmethod
    def _mark_episodes(db: sqlite3.Connection, throttle_id: int, now: float) -> None:
        db.execute(
            "INSERT OR REPLACE INTO episodes (fingerprint, starts_at, seen_at, readmit_at) "
            "SELECT fingerprint, starts_at, ?, NULL FROM throttle_alerts WHERE throttle_id = ?",
            (now, throttle_id),
        )

    def promote_waiting(self, now: float, limit: int, hold: Hold) -> list[Admission]:
        """Admit episodes that arrived while their (domain, kind) was being released."""
        admissions = []
        with self._tx() as db:
            rows = db.execute("SELECT * FROM waiting ORDER BY received_at").fetchall()
            for row in rows:
                busy = db.execute(
                    f"SELECT 1 FROM throttles WHERE domain = ? AND kind = ? "
                    f"AND state IN {_LIVE_SQL} AND (state = 'releasing' OR end_reason IS NOT NULL)",
                    (row["domain"], row["kind"]),
                ).fetchone()
                if busy is not None:
                    continue
                admission = self._admit(
                    db, row["domain"], Action.from_json(row["action"]), row["fingerprint"],
                    row["starts_at"], row["alertname"], now, limit, hold,
                )  # fmt: skip
                if admission.decision == "refused":
                    continue  # stays queued until a throttle slot frees up
                db.execute(
                    "DELETE FROM waiting WHERE domain = ? AND kind = ? AND fingerprint = ?",
                    (row["domain"], row["kind"], row["fingerprint"]),
                )
                admissions.append(admission)
        return admissions

    def resolve(self, intent: Intent, now: float, hold: Hold) -> tuple[list[int], bool]:
        """Mark an alert episode resolved; throttles left without firing alerts get their
        release time. Returns those throttles, and whether a queued episode was dropped.

        The resolution ends the episode it names (fingerprint and startsAt) and any episode of
        the same alert attached under an earlier startsAt that had begun before it ended
        (endsAt): Prometheus holds one alert per fingerprint, so those are the same attack
        (after a Prometheus restart, an Alertmanager that kept the alert merges it under its
        first startsAt while a restarted peer knows only the new one, and the peers' shared
        log sends the resolution once). A late copy of an earlier episode's resolution ended
        before a later episode began, and leaves its throttle alone.
        """
        alert = intent.alert
        ended_at = instant_seconds(alert.ends_at)
        scheduled = []
        with self._tx() as db:
            dequeued = db.execute(
                "DELETE FROM waiting WHERE domain = ? AND fingerprint = ? AND starts_at = ?",
                (intent.domain, alert.fingerprint, alert.starts_at),
            ).rowcount
            rows = db.execute(
                f"SELECT t.id, t.offence, a.starts_at FROM throttles t JOIN throttle_alerts a "
                f"ON a.throttle_id = t.id WHERE a.fingerprint = ? AND a.status = 'firing' "
                f"AND t.state IN {_LIVE_SQL} AND t.domain = ?",
                (alert.fingerprint, intent.domain),
            ).fetchall()
            for row in rows:
                if not _ends_episode(alert.starts_at, ended_at, row["starts_at"]):
                    continue
                db.execute(
                    "UPDATE throttle_alerts SET status = 'resolved', ended_at = ? "
                    "WHERE throttle_id = ? AND fingerprint = ?",
                    (ended_at, row["id"], alert.fingerprint),
                )
                (firing,) = db.execute(
                    "SELECT COUNT(*) FROM throttle_alerts WHERE throttle_id = ? "
                    "AND status = 'firing'",
                    (row["id"],),
                ).fetchone()
                if firing == 0:
                    db.execute(
                        "UPDATE throttles SET resolved_at = ?, release_at = ? WHERE id = ?",
                        (now, now + hold.for_offence(row["offence"]), row["id"]),
                    )
                    scheduled.append(row["id"])
        return scheduled, dequeued > 0

    # -- transitions, from the worker ---------------------------------------------------------

    def update(self, throttle_id: int, **fields: Any) -> None:
        allowed = {
            "state", "domid", "prior", "applied_at", "release_at", "expires_at", "ended_at",
            "end_reason", "error", "uuid",
        }  # fmt: skip
        assert set(fields) <= allowed, fields
        if "prior" in fields:
            fields["prior"] = json.dumps(fields["prior"], sort_keys=True)
        assignments = ", ".join(f"{name} = ?" for name in fields)
        with self._tx() as db:
            db.execute(
                f"UPDATE throttles SET {assignments} WHERE id = ?", (*fields.values(), throttle_id)
            )

    def transition(self, throttle_id: int, from_state: str, **fields: Any) -> bool:
        """`update` only if the throttle is still in `from_state` (reconcile acts on a snapshot
        that a worker may have moved on since, e.g. from active to releasing)."""
        if "prior" in fields:
            fields["prior"] = json.dumps(fields["prior"], sort_keys=True)
        assignments = ", ".join(f"{name} = ?" for name in fields)
        with self._tx() as db:
            cursor = db.execute(
                f"UPDATE throttles SET {assignments} WHERE id = ? AND state = ?",
                (*fields.values(), throttle_id, from_state),
            )
            return cursor.rowcount > 0

    def activate(
        self, throttle_id: int, now: float, prior: dict[str, Any], expires_at: float
    ) -> None:
        """The host shows the throttle: it is active, and its episodes are handled."""
        with self._tx() as db:
            db.execute(
                "UPDATE throttles SET state = 'active', prior = ?, applied_at = ?, "
                "expires_at = ?, error = NULL WHERE id = ?",
                (json.dumps(prior, sort_keys=True), now, expires_at, throttle_id),
            )
            self._mark_episodes(db, throttle_id, now)

    def begin_release(self, throttle_id: int, now: float, reason: str | None) -> Throttle | None:
        """Move a live throttle to `releasing`, atomically with admission.

        `reason` None: only if a release is due (requested, hold or maximum duration over), so
        that a firing attached a moment ago (which cancels the hold) wins over the timer.
        """
        with self._tx() as db:
            row = db.execute(
                f"SELECT * FROM throttles WHERE id = ? AND state IN {_LIVE_SQL}", (throttle_id,)
            ).fetchone()
            if row is None:
                return None
            throttle = self._throttle(row)
            if reason is None:
                due = throttle.until is not None and throttle.until <= now
                if throttle.state != "releasing" and throttle.end_reason is None and not due:
                    return None
                reason = throttle.end_reason or (
                    "resolved" if throttle.resolved_at is not None else "max_duration"
                )
            db.execute(
                "UPDATE throttles SET state = 'releasing', end_reason = ? WHERE id = ?",
                (reason, throttle_id),
            )
        return self.get(throttle_id)

    def end(
        self,
        throttle_id: int,
        now: float,
        state: str,
        reason: str,
        error: str | None,
        readmit_at: float,
    ) -> None:
        """Record the end; after `max_duration` its episodes may be admitted again from
        `readmit_at` on (if they are still firing then, the attack goes on)."""
        with self._tx() as db:
            db.execute(
                "UPDATE throttles SET state = ?, ended_at = ?, end_reason = ?, error = ? "
                "WHERE id = ?",
                (state, now, reason, error, throttle_id),
            )
            if state == "dry_run":
                self._mark_episodes(db, throttle_id, now)
            if reason == "max_duration":
                db.execute(
                    "INSERT OR REPLACE INTO episodes (fingerprint, starts_at, seen_at, readmit_at) "
                    "SELECT fingerprint, starts_at, ?, ? FROM throttle_alerts "
                    "WHERE throttle_id = ? AND status = 'firing'",
                    (now, readmit_at, throttle_id),
                )

    def request_release(self, throttle_id: int, now: float, reason: str) -> bool:
        """Release as soon as the engine gets to it (operator, expiry); False if not live."""
        with self._tx() as db:
            cursor = db.execute(
                f"UPDATE throttles SET release_at = ?, end_reason = ? "
                f"WHERE id = ? AND state IN {_LIVE_SQL}",
                (now, reason, throttle_id),
            )
            return cursor.rowcount > 0

    # -- queries ------------------------------------------------------------------------------

    def get(self, throttle_id: int) -> Throttle | None:
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM throttles WHERE id = ?", (throttle_id,)
            ).fetchone()
        return self._throttle(row) if row is not None else None

    def live(self) -> list[Throttle]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT * FROM throttles WHERE state IN {_LIVE_SQL} ORDER BY id"
            ).fetchall()
        return [self._throttle(row) for row in rows]

    def recent(self, limit: int = 50) -> list[Throttle]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM throttles ORDER BY id DESC LIMIT ?", (limit,)
            ).fetchall()
        return [self._throttle(row) for row in rows]

    def alerts_of(self, throttle_id: int) -> list[dict[str, str]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT fingerprint, starts_at, alertname, status FROM throttle_alerts "
                "WHERE throttle_id = ? ORDER BY fingerprint",
                (throttle_id,),
            ).fetchall()
        return [dict(row) for row in rows]

    def record_decision(
        self,
        now: float,
        *,
        fingerprint: str,
        alertname: str,
        domain: str,
        status: str,
        decision: str,
        reason: str,
        detail: str,
    ) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO decisions (at, fingerprint, alertname, domain, status, decision, "
                "reason, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (now, fingerprint, alertname, domain, status, decision, reason, detail),
            )

    def decisions(self, limit: int = 100) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM decisions ORDER BY id DESC LIMIT ?", (limit,)
            ).fetchall()
        return [dict(row) for row in rows]

    def prune(self, before: float) -> int:
        """Forget what is older than `before`: decisions, episodes last heard of before it,
        ended throttles and their alerts, queued episodes. Returns the rows deleted."""
        with self._tx() as db:
            deleted = db.execute("DELETE FROM decisions WHERE at < ?", (before,)).rowcount
            deleted += db.execute(
                "DELETE FROM episodes WHERE seen_at < ? AND (readmit_at IS NULL OR readmit_at < ?)",
                (before, before),
            ).rowcount
            deleted += db.execute(
                f"DELETE FROM throttle_alerts WHERE throttle_id IN (SELECT id FROM throttles "
                f"WHERE state NOT IN {_LIVE_SQL} AND ended_at < ?)",
                (before,),
            ).rowcount
            deleted += db.execute(
                f"DELETE FROM throttles WHERE state NOT IN {_LIVE_SQL} AND ended_at < ?",
                (before,),
            ).rowcount
            deleted += db.execute("DELETE FROM waiting WHERE received_at < ?", (before,)).rowcount
        return deleted

    def table_sizes(self) -> dict[str, int]:
        with self._lock:
            return {
                table: self._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                for table in ("throttles", "throttle_alerts", "episodes", "waiting", "decisions")
            }


def _ends_episode(starts_at: str, ended_at: float | None, attached_starts_at: str) -> bool:
    """Whether a resolution (startsAt, endsAt) ends the attached episode: the same one, or one
    of the same alert that began before the resolution's end."""
    if attached_starts_at == starts_at:
        return True
    began = instant_seconds(attached_starts_at)
    return ended_at is not None and began is not None and began <= ended_at


def _ended_since(db: sqlite3.Connection, fingerprint: str, starts_at: str) -> bool:
    """Whether a resolution of this alert already ended at or after `starts_at`: then a firing
    with that startsAt is a late copy, never a new attack (one starts after the last ended)."""
    began = instant_seconds(starts_at)
    if began is None:
        return False
    return (
        db.execute(
            "SELECT 1 FROM throttle_alerts WHERE fingerprint = ? AND status = 'resolved' "
            "AND ended_at >= ? LIMIT 1",
            (fingerprint, began),
        ).fetchone()
        is not None
    )
