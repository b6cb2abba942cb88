"""gunicorn, embedded: one worker process (the engine's state and timers live in it), threads
for requests. The app and its engine are built inside the worker, after the fork."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication

from remediator.engine import Engine

log = logging.getLogger(__name__)


def gunicorn_bind(listen_address: str) -> str:
    """`:10171` -> `0.0.0.0:10171`; `unix:/path` and `host:port` pass through."""
    if listen_address.startswith(":"):
        return f"0.0.0.0{listen_address}"
    return listen_address


class RemediatorServer(BaseApplication):  # type: ignore[misc]
    def __init__(
        self,
        build_app: Callable[[], Flask],
        listen_address: str,
        *,
        threads: int = 4,
        certfile: str | None = None,
        keyfile: str | None = None,
        request_body_limit: int = 1024 * 1024,
    ) -> None:
        self._build_app = build_app
        self._options: dict[str, Any] = {
            "bind": [gunicorn_bind(listen_address)],
            "workers": 1,
            "worker_class": "gthread",
            "threads": threads,
            "timeout": 30,
            "graceful_timeout": 10,
            "limit_request_line": 8190,
            "limit_request_fields": 100,
            "limit_request_field_size": 8190,
            "accesslog": None,
            "errorlog": "-",
            # Without this every gunicorn in the process tree shares ~/.gunicorn/gunicorn.ctl.
            "control_socket_disable": True,
            "worker_exit": _stop_engine,
        }
        if certfile is not None:
            self._options.update(certfile=certfile, keyfile=keyfile)
        self.request_body_limit = request_body_limit
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        app = self._build_app()
        engine: Engine = app.extensions["remediator"]
        engine.start()
        _engines.append(engine)
        return app


_engines: list[Engine] = []


def _stop_engine(_server: Any, _worker: Any) -> None:
    for engine in _engines:
        engine.stop()
