"""Hypercorn, embedded: one process (the engine's state and timers live in it), connections on
an asyncio loop, the Flask app on a thread pool.

Why not gunicorn's gthread worker: it reads a request's headers in one of its few threads on a
blocking socket, so four connections that trickle their headers hold every thread, before any
authentication, and Alertmanager's posts queue (issue 13, defect 11). Hypercorn reads headers
and bodies on its event loop: a slow connection costs a socket and a few kilobytes, never a
thread; the app runs only once the whole request is in. Bounds:

- `keep_alive_timeout`: a connection that has not completed a request's headers within this
  time since it opened (or since its previous response) is closed, however it trickles;
- `read_timeout`: a connection that sends nothing for this long is closed (slow bodies);
- `h11_max_incomplete_size`: the header block may not exceed this;
- `wsgi_max_body_size`: the body is read into memory up to this (the webhook answers 413 above
  `limits.max_request_bytes` itself, so this leaves it room to say so).
"""

from __future__ import annotations

import asyncio
import logging
import resource
import signal
from collections.abc import Callable

from flask import Flask
from hypercorn.asyncio import serve
from hypercorn.config import Config as HypercornConfig

from remediator.engine import Engine

log = logging.getLogger(__name__)

HEADER_SECONDS = 10
READ_SECONDS = 10
MAX_HEADER_BYTES = 16 * 1024
# Descriptors for this many open connections (1,000 slow clients and Alertmanager beside them).
WANTED_OPEN_FILES = 8192


def bind_address(listen_address: str) -> str:
    """`:10171` -> `0.0.0.0:10171` (all interfaces, said explicitly); `host:port` and
    `unix:/path` pass through."""
    if listen_address.startswith(":"):
        return f"0.0.0.0{listen_address}"
    return listen_address


def hypercorn_config(
    listen_address: str,
    *,
    certfile: str | None = None,
    keyfile: str | None = None,
    request_body_limit: int = 1024 * 1024,
) -> HypercornConfig:
    config = HypercornConfig()
    config.bind = [bind_address(listen_address)]
    config.keep_alive_timeout = HEADER_SECONDS
    config.read_timeout = READ_SECONDS
    config.h11_max_incomplete_size = MAX_HEADER_BYTES
    config.wsgi_max_body_size = 4 * request_body_limit
    config.backlog = 1024
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.include_server_header = False
    config.graceful_timeout = 10
    if certfile is not None:
        config.certfile = certfile
        config.keyfile = keyfile
    return config


def raise_open_file_limit(wanted: int = WANTED_OPEN_FILES) -> None:
    """Each open connection is a descriptor; the usual soft limit (1,024) is below what a
    slow-client flood opens. Raised up to the hard limit, never above it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


class RemediatorServer:
    def __init__(
        self,
        build_app: Callable[[], Flask],
        listen_address: str,
        *,
        certfile: str | None = None,
        keyfile: str | None = None,
        request_body_limit: int = 1024 * 1024,
    ) -> None:
        self._build_app = build_app
        self.config = hypercorn_config(
            listen_address,
            certfile=certfile,
            keyfile=keyfile,
            request_body_limit=request_body_limit,
        )

    def run(self) -> None:
        raise_open_file_limit()
        app = self._build_app()
        engine: Engine = app.extensions["remediator"]
        engine.start()
        try:
            asyncio.run(self._serve(app))
        finally:
            engine.stop()

    async def _serve(self, app: Flask) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await serve(app, self.config, mode="wsgi", shutdown_trigger=stop.wait)
        log.info("stopped serving")
