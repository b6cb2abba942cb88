"""HTTP: a landing page on `/`, the metrics on the telemetry path, optional basic auth and TLS,
served by gunicorn embedded in this process (one worker, so the counters' state between scrapes
lives in one place; threads, so scrapes can overlap).
"""

from __future__ import annotations

import base64
import binascii
import html
import logging
from collections.abc import Callable, Iterable
from typing import Any

from gunicorn.app.base import BaseApplication
from prometheus_client import CONTENT_TYPE_LATEST

from exporter.collector import Exporter
from exporter.webconfig import WebConfig

log = logging.getLogger(__name__)

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

# Leave Prometheus this much of its scrape timeout to receive the answer (at most a fifth of it).
SCRAPE_TIMEOUT_MARGIN_SECONDS = 0.5

LANDING_PAGE = """<!DOCTYPE html>
<html>
<head><title>Judicator Xen exporter</title></head>
<body>
<h1>Judicator Xen exporter</h1>
<p>Xen hypervisor performance counters, mapped to physical CPUs and domains, and per-domain
statistics, for Prometheus.</p>
<ul>
<li><a href="{path}">Metrics</a></li>
<li>Version {version}</li>
</ul>
</body>
</html>
"""


def create_app(
    exporter: Exporter, telemetry_path: str, web_config: WebConfig, version: str
) -> WsgiApp:
    landing = LANDING_PAGE.format(
        path=html.escape(telemetry_path, quote=True), version=html.escape(version)
    ).encode()

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if not web_config.authorized(*_basic_auth(environ)):
            start_response(
                "401 Unauthorized",
                [
                    ("WWW-Authenticate", 'Basic realm="judicator-exporter"'),
                    ("Content-Type", "text/plain; charset=utf-8"),
                ],
            )
            return [b"Unauthorized\n"]
        path = environ.get("PATH_INFO") or "/"
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET, HEAD")])
            return [b"Method Not Allowed\n"]
        if path == telemetry_path:
            body = exporter.render(_scrape_budget(environ, exporter.scrape_timeout))
            start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
            return [body]
        if path == "/":
            start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
            return [landing]
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"Not Found\n"]

    return app


def _basic_auth(environ: dict[str, Any]) -> tuple[str | None, str | None]:
    header = environ.get("HTTP_AUTHORIZATION", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        user, separator, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    return (user, password) if separator else (None, None)


def _scrape_budget(environ: dict[str, Any], default: float) -> float:
    """Prometheus says how long it waits (X-Prometheus-Scrape-Timeout-Seconds); answer before."""
    try:
        offered = float(environ.get("HTTP_X_PROMETHEUS_SCRAPE_TIMEOUT_SECONDS", ""))
    except ValueError:
        return default
    budget = max(offered - SCRAPE_TIMEOUT_MARGIN_SECONDS, offered * 0.8)
    return max(0.1, min(default, budget))


class EmbeddedGunicorn(BaseApplication):  # type: ignore[misc]
    """gunicorn run from our own main(), configured from flags rather than its command line."""

    def __init__(self, app: WsgiApp, options: dict[str, Any]) -> None:
        self._app = app
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            if key in self.cfg.settings:  # settings newer than the installed gunicorn are skipped
                self.cfg.set(key, value)

    def load(self) -> WsgiApp:
        return self._app


def gunicorn_options(
    bind: str, web_config: WebConfig, threads: int, log_level: str
) -> dict[str, Any]:
    options: dict[str, Any] = {
        "bind": [bind],
        "workers": 1,
        "worker_class": "gthread",
        "threads": threads,
        # a scrape is bounded by its own budget; this only reaps a wedged worker
        "timeout": 120,
        "graceful_timeout": 5,
        "loglevel": log_level,
        "accesslog": None,
        "proc_name": "judicator-exporter",
        # one control socket path per user would be shared by every exporter on the host
        "control_socket_disable": True,
    }
    if web_config.tls is not None:
        options["certfile"] = web_config.tls.cert_file
        options["keyfile"] = web_config.tls.key_file
        options["cert_reqs"] = web_config.tls.cert_reqs
        if web_config.tls.client_ca_file:
            options["ca_certs"] = web_config.tls.client_ca_file
    return options
