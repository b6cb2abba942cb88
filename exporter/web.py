"""HTTP: a landing page on `/`, the metrics on the telemetry path, optional basic auth and TLS,
served by hypercorn embedded in this process (one process, so the counters' state between
scrapes lives in one place; the app on a thread pool, so scrapes can overlap). Connections are
read on hypercorn's event loop: a slow or idle client costs a socket, never a thread, and one
that has not sent its headers within HEADER_SECONDS is closed (issue 13, defect 11).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import html
import logging
import resource
import signal
import ssl
from collections.abc import Callable, Iterable
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config as HypercornConfig
from prometheus_client import CONTENT_TYPE_LATEST

from exporter.collector import Exporter
from exporter.webconfig import WebConfig

log = logging.getLogger(__name__)

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

# A connection must complete its request headers this long after it opened (or after its last
# answer), and may not go silent for longer than READ_SECONDS.
HEADER_SECONDS = 10
READ_SECONDS = 10
OPEN_FILES = 8192  # descriptors for many idle connections (raised up to the hard limit)

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


def hypercorn_config(bind: str, web_config: WebConfig, log_level: str) -> HypercornConfig:
    config = HypercornConfig()
    config.bind = [bind]
    config.keep_alive_timeout = HEADER_SECONDS
    config.read_timeout = READ_SECONDS
    config.h11_max_incomplete_size = 16 * 1024
    config.wsgi_max_body_size = 64 * 1024  # the exporter takes no bodies
    config.backlog = 1024
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.loglevel = log_level.upper()
    config.include_server_header = False
    config.graceful_timeout = 5
    if web_config.tls is not None:
        config.certfile = web_config.tls.cert_file
        config.keyfile = web_config.tls.key_file
        config.verify_mode = ssl.VerifyMode(web_config.tls.cert_reqs)
        if web_config.tls.client_ca_file:
            config.ca_certs = web_config.tls.client_ca_file
    return config


def run_server(app: WsgiApp, config: HypercornConfig) -> None:
    """Serve until SIGTERM or SIGINT."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = OPEN_FILES if hard == resource.RLIM_INFINITY else min(OPEN_FILES, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await serve(app, config, mode="wsgi", shutdown_trigger=stop.wait)

    asyncio.run(main())
