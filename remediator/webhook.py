"""`POST /alerts`: Alertmanager's webhook. Validate, record, answer fast; act elsewhere.

Status codes follow Alertmanager's retrier (notify/util.go): 2xx is success (a duplicate too),
4xx is never retried (so: a payload we will never accept, a bad token, too large a body), 5xx
is retried (so: only when a retry can help, i.e. we are not ready or cannot write our record).
"""

from __future__ import annotations

import logging
import sqlite3
import time

from flask import Blueprint, Response, current_app, jsonify, request

from remediator.alerts import PayloadError, parse_notification
from remediator.engine import Engine

log = logging.getLogger(__name__)
bp = Blueprint("webhook", __name__)


def _engine() -> Engine:
    engine: Engine = current_app.extensions["remediator"]
    return engine


def _reject(status: int, result: str, detail: str) -> tuple[Response, int]:
    engine = _engine()
    engine.metrics.payloads.labels(result).inc()
    engine.metrics.refusals.labels(result).inc()
    try:
        engine.store.record_decision(
            time.time(),
            fingerprint="",
            alertname="",
            domain="",
            status="",
            decision="rejected",
            reason=result,
            detail=detail[:500],
        )
    except sqlite3.Error:
        log.exception("could not record the rejection of a payload")
    log.warning("rejected a webhook payload (%s): %s", result, detail[:200])
    return jsonify({"status": "rejected", "reason": result, "detail": detail}), status


@bp.post("/alerts")
def alerts() -> tuple[Response, int]:
    engine = _engine()
    limit = engine.config.max_request_bytes
    if request.content_length is not None and request.content_length > limit:
        return _reject(413, "too_large", f"body larger than {limit} bytes")
    body = request.stream.read(limit + 1)
    if len(body) > limit:
        return _reject(413, "too_large", f"body larger than {limit} bytes")
    try:
        notification = parse_notification(body)
    except PayloadError as error:
        return _reject(400, error.reason, str(error))
    if not engine.ready.is_set():
        engine.metrics.payloads.labels("not_ready").inc()
        return jsonify({"status": "retry", "reason": "reconciling after start"}), 503
    try:
        decisions = engine.handle(notification)
    except sqlite3.Error as error:
        # The record could not be written: better Alertmanager retries than we act unrecorded.
        log.error("cannot record alerts: %s", error)
        engine.metrics.payloads.labels("store_error").inc()
        return jsonify({"status": "retry", "reason": "state store unavailable"}), 503
    engine.metrics.payloads.labels("accepted").inc()
    return jsonify({"status": "accepted", "alerts": [d.as_dict() for d in decisions]}), 200
