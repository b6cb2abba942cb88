"""`create_app(config, runner)`: the Flask app with the webhook, health, metrics and status page."""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from flask import Flask, Response, abort, render_template_string, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from remediator import webhook
from remediator.config import Config
from remediator.engine import Engine
from remediator.metrics import ActiveThrottles, Metrics
from remediator.observe import HostObserver, HostReader, SharedReads, Toolstack
from remediator.runner import Runner
from remediator.store import Store
from xentools.sysfs import Vif

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/-/healthy", "/-/ready"})

STATUS_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Judicator remediator</title>
<style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:left}</style></head>
<body><h1>Judicator remediator</h1>
<p>{{ live|length }} live throttle(s){% if dry_run %}, <b>dry run</b>{% endif %}.</p>
<table><tr><th>id</th><th>domain</th><th>action</th><th>state</th><th>reason</th>
<th>since</th><th>until</th><th>alerts</th><th>error</th></tr>
{% for t in live %}<tr><td>{{ t.id }}</td><td>{{ t.domain }}</td>
<td>{{ t.kind }} {{ t.action.params|tojson }}</td><td>{{ t.state }}</td><td>{{ t.reason }}</td>
<td>{{ when(t.applied_at or t.created_at) }}</td><td>{{ when(t.until) }}</td>
<td>{% for a in alerts(t.id) %}{{ a.alertname }} {{ a.fingerprint }} ({{ a.status }})<br>
{% endfor %}</td><td>{{ t.error or "" }}</td></tr>
{% endfor %}</table>
<h2>Recent decisions</h2>
<table><tr><th>at</th><th>alert</th><th>domain</th><th>status</th><th>decision</th>
<th>reason</th></tr>
{% for d in decisions %}<tr><td>{{ when(d.at) }}</td><td>{{ d.alertname }} {{ d.fingerprint }}</td>
<td>{{ d.domain }}</td><td>{{ d.status }}</td><td>{{ d.decision }}</td><td>{{ d.reason }}</td></tr>
{% endfor %}</table></body></html>
"""


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def host_observer(config: Config, runner: Runner) -> HostObserver:
    """The platform's reader of the host: xl and Dom0's vifs on Xen, /proc, QMP, cgroups and
    the VMs' taps on KVM; links and tc the same on both."""
    from remediator.engine import tools_from
    from xentools.sysfs import list_vifs, read_links

    tools = tools_from(config)
    toolstack: Toolstack
    if config.platform == "kvm":
        from remediator.kvmtoolstack import KvmToolstack

        kvm = KvmToolstack(config.procfs_path, config.debugfs_path, tools.timeout)
        toolstack, interfaces = kvm, kvm.list_taps
    else:
        from remediator.xltoolstack import XlToolstack

        toolstack = XlToolstack(runner, tools)

        def interfaces() -> list[Vif]:
            return list_vifs(config.sysfs_path)

    return HostObserver(
        toolstack,
        runner,
        tools,
        interfaces,
        lambda wanted: read_links(wanted, config.sysfs_path),
    )


def create_app(
    config: Config,
    runner: Runner,
    *,
    token: str | None,
    host: HostReader | None = None,
    dry_run: bool = False,
    clock: Callable[[], float] = time.time,
) -> Flask:
    """Build the app and its engine (not started: call `app.extensions["remediator"].start()`).

    `token` None means authentication is disabled (config `auth.disabled: true`).
    """
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.max_request_bytes
    metrics = Metrics()
    store = Store(config.state_path)
    if host is None:
        host = SharedReads(host_observer(config, runner))
    engine = Engine(config, store, host, runner, metrics, dry_run=dry_run, clock=clock)
    metrics.registry.register(ActiveThrottles(store.live))
    app.extensions["remediator"] = engine
    expected = f"Bearer {token}".encode() if token is not None else None

    @app.before_request
    def authenticate() -> None:
        if expected is None or request.path in OPEN_PATHS:
            return
        given = request.headers.get("Authorization", "").encode("utf-8", "replace")
        if not hmac.compare_digest(given, expected):
            metrics.payloads.labels("unauthorized").inc()
            abort(401)

    @app.get("/-/healthy")
    def healthy() -> tuple[str, int]:
        return "Healthy.\n", 200

    @app.get("/-/ready")
    def ready() -> tuple[str, int]:
        if engine.ready.is_set():
            return "Ready.\n", 200
        return "Reconciling after start.\n", 503

    @app.get("/metrics")
    def metrics_page() -> Response:
        return Response(generate_latest(metrics.registry), mimetype=CONTENT_TYPE_LATEST)

    @app.get("/")
    def status() -> str:
        return render_template_string(
            STATUS_PAGE,
            live=store.live(),
            decisions=store.decisions(30),
            alerts=store.alerts_of,
            when=_when,
            dry_run=dry_run,
        )

    @app.errorhandler(401)
    def unauthorized(_error: Exception) -> tuple[str, int, dict[str, str]]:
        return "Unauthorized.\n", 401, {"WWW-Authenticate": "Bearer"}

    @app.errorhandler(413)
    def too_large(_error: Exception) -> tuple[str, int]:
        metrics.payloads.labels("too_large").inc()
        return "Request body too large.\n", 413

    app.register_blueprint(webhook.bp)
    return app
