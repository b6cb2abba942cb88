"""Durable throttle records in SQLite, written before and after every host change.

A throttle is one action on one domain (`domain`, `kind`), fed by one or more alerts
(fingerprints). Its life: pending (admitted, nothing done) -> applying (prior state recorded,
commands may be running) -> active -> releasing -> released; or failed (rolled back). At most
one live throttle per (domain, kind), enforced by a partial unique index.

One connection, serialised by a lock; WAL and synchronous=FULL so a record survives kill -9 the
moment its transaction commits. Other processes (the CLI) may open the same file.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from remediator.alerts import Action, Intent
from remediator.config import Hold

LIVE = ("pending", "applying", "active", "releasing")
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
    error TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS one_live_throttle
    ON throttles (domain, kind) WHERE state IN {_LIVE_SQL};
CREATE TABLE IF NOT EXISTS throttle_alerts (
    throttle_id INTEGER NOT NULL REFERENCES throttles (id),
    fingerprint TEXT NOT NULL,
    starts_at TEXT NOT NULL,
    alertname TEXT NOT NULL,
    status TEXT NOT NULL,
    PRIMARY KEY (throttle_id, fingerprint)
);
CREATE TABLE IF NOT EXISTS episodes (
    fingerprint TEXT NOT NULL,
    starts_at TEXT NOT NULL,
    seen_at REAL NOT NULL,
    PRIMARY KEY (fingerprint, starts_at)
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
    decision: str  # accepted | attached | duplicate | already_handled | refused
    throttle_id: int | None
    reason: str = ""


class Store:
    def __init__(self, path: str) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, timeout=10.0, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
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
        )

    # -- admission, from the request path: SQLite only, no host access ------------------------

    def admit_firing(self, intent: Intent, now: float, limit: int, hold: Hold) -> Admission:
        assert intent.action is not None
        alert = intent.alert
        kind = intent.action.kind
        with self._tx() as db:
            live = db.execute(
                f"SELECT id FROM throttles WHERE domain = ? AND kind = ? AND state IN {_LIVE_SQL}",
                (intent.domain, kind),
            ).fetchone()
            if live is not None:
                attached = db.execute(
                    "SELECT status FROM throttle_alerts WHERE throttle_id = ? AND fingerprint = ?",
                    (live["id"], alert.fingerprint),
                ).fetchone()
                if attached is not None and attached["status"] == "firing":
                    return Admission("duplicate", live["id"])
                db.execute(
                    "INSERT OR REPLACE INTO throttle_alerts VALUES (?, ?, ?, ?, 'firing')",
                    (live["id"], alert.fingerprint, alert.starts_at, alert.name),
                )
                # It offends again while held: the hold starts over when it resolves again.
                db.execute(
                    "UPDATE throttles SET release_at = NULL, resolved_at = NULL "
                    "WHERE id = ? AND state IN ('pending', 'applying', 'active')",
                    (live["id"],),
                )
                db.execute(
                    "INSERT OR IGNORE INTO episodes VALUES (?, ?, ?)",
                    (alert.fingerprint, alert.starts_at, now),
                )
                return Admission("attached", live["id"])
            seen = db.execute(
                "SELECT 1 FROM episodes WHERE fingerprint = ? AND starts_at = ?",
                (alert.fingerprint, alert.starts_at),
            ).fetchone()
            if seen is not None:
                # Re-sent (repeat_interval) after an operator release or the maximum duration.
                return Admission("already_handled", None)
            (active,) = db.execute(
                f"SELECT COUNT(*) FROM throttles WHERE state IN {_LIVE_SQL}"
            ).fetchone()
            if active >= limit:
                return Admission("refused", None, "throttle_limit")
            (previous,) = db.execute(
                "SELECT COUNT(*) FROM throttles WHERE domain = ? AND created_at >= ? "
                "AND state != 'failed'",
                (intent.domain, now - hold.repeat_window_seconds),
            ).fetchone()
            cursor = db.execute(
                "INSERT INTO throttles (domain, kind, action, state, reason, offence, created_at) "
                "VALUES (?, ?, ?, 'pending', ?, ?, ?)",
                (intent.domain, kind, intent.action.to_json(), alert.name, previous + 1, now),
            )
            throttle_id = cursor.lastrowid
            assert throttle_id is not None
            db.execute(
                "INSERT INTO throttle_alerts VALUES (?, ?, ?, ?, 'firing')",
                (throttle_id, alert.fingerprint, alert.starts_at, alert.name),
            )
            db.execute(
                "INSERT OR IGNORE INTO episodes VALUES (?, ?, ?)",
                (alert.fingerprint, alert.starts_at, now),
            )
            return Admission("accepted", throttle_id)

    def resolve(self, intent: Intent, now: float, hold: Hold) -> list[int]:
        """Mark an alert resolved; throttles left without firing alerts get their release time."""
        fingerprint = intent.alert.fingerprint
        scheduled = []
        with self._tx() as db:
            rows = db.execute(
                f"SELECT t.id, t.offence FROM throttles t JOIN throttle_alerts a "
                f"ON a.throttle_id = t.id WHERE a.fingerprint = ? AND a.status = 'firing' "
                f"AND t.state IN {_LIVE_SQL} AND t.domain = ?",
                (fingerprint, intent.domain),
            ).fetchall()
            for row in rows:
                db.execute(
                    "UPDATE throttle_alerts SET status = 'resolved' "
                    "WHERE throttle_id = ? AND fingerprint = ?",
                    (row["id"], fingerprint),
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
        return scheduled

    # -- transitions, from the worker ---------------------------------------------------------

    def update(self, throttle_id: int, **fields: Any) -> None:
        allowed = {
            "state", "domid", "prior", "applied_at", "release_at", "expires_at", "ended_at",
            "end_reason", "error",
        }  # fmt: skip
        assert set(fields) <= allowed, fields
        if "prior" in fields:
            fields["prior"] = json.dumps(fields["prior"], sort_keys=True)
        assignments = ", ".join(f"{name} = ?" for name in fields)
        with self._tx() as db:
            db.execute(
                f"UPDATE throttles SET {assignments} WHERE id = ?", (*fields.values(), throttle_id)
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

    def prune(self, before: float) -> None:
        """Forget decisions and alert episodes older than `before` (the store stays small)."""
        with self._tx() as db:
            db.execute("DELETE FROM decisions WHERE at < ?", (before,))
            db.execute("DELETE FROM episodes WHERE seen_at < ?", (before,))
