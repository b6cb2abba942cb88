"""What the remediator tests share besides fixtures: a config, payloads, a hand-moved clock,
tc and ip run inside a network namespace."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flask import Flask

from remediator.engine import Engine
from remediator.plan import Tools

TOKEN = "s3cret-token-for-tests-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def base_config(state_path: Path, **overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "instances": ["dom0-a:10170"],
        "state_path": str(state_path),
        "protected_domains": ["infra"],
        "auth": {"bearer_token_file": "/unused/by/create_app"},
        "hold": {
            "base": "1s",
            "factor": 2,
            "max": "3s",
            "repeat_window": "1h",
            "max_throttle": "1h",
        },
        "limits": {
            "max_active_throttles": 3,
            "max_request_bytes": 65536,
            "command_timeout": "2s",
            "reconcile_interval": "1h",
            "workers": 2,
        },
        "paths": {"xl": "xl", "tc": "tc", "ip": "ip"},
        "actions": {
            "network_shape": {"rate_min": "64kbit", "rate_max": "1gbit"},
            "cpu_cap": {"min": 1, "max": 400},
            "cpu_pin": {"allowed_cpus": "2-3"},
            "pause": {"enabled": True},
            "command": {
                "notify": {
                    "apply": ["/usr/local/bin/notify", "--on"],
                    "release": ["/usr/local/bin/notify", "--off"],
                }
            },
        },
    }
    raw.update(overrides)
    return raw


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def alert(
    status: str = "firing",
    domain: str = "web01",
    fingerprint: str = "a1b2c3d4e5f60718",
    starts_at: str = "2026-11-26T12:00:00Z",
    ends_at: str = "0001-01-01T00:00:00Z",
    **labels: str,
) -> dict[str, Any]:
    all_labels = {
        "alertname": "VmNetworkFlood",
        "severity": "remediate",
        "instance": "dom0-a:10170",
        "domain": domain,
        "remediation": "network_shape",
        "rate": "1mbit",
    }
    all_labels.update(labels)
    return {
        "status": status,
        "labels": {k: v for k, v in all_labels.items() if v is not None},
        "annotations": {},
        "startsAt": starts_at,
        "endsAt": ends_at,
        "generatorURL": "http://prometheus/graph",
        "fingerprint": fingerprint,
    }


def payload(*alerts: dict[str, Any], **fields: Any) -> bytes:
    body = {
        "version": "4",
        "groupKey": '{}:{alertname="VmNetworkFlood"}',
        "truncatedAlerts": 0,
        "status": "firing" if any(a["status"] == "firing" for a in alerts) else "resolved",
        "receiver": "judicator",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": list(alerts),
    }
    body.update(fields)
    return json.dumps(body).encode()


def engine_of(app: Flask) -> Engine:
    engine: Engine = app.extensions["remediator"]
    return engine


def settle(app: Flask, clock: Clock | None = None) -> None:
    """Run due timers now and wait until no action is queued or running."""
    engine = engine_of(app)
    assert engine.wait_idle(10)
    engine.tick()
    assert engine.wait_idle(10)


def netns_tools(directory: Path, namespace: str) -> Tools:
    """Tools whose tc and ip run inside `namespace`: two-line wrappers written to `directory`."""
    paths = {}
    for tool in ("tc", "ip"):
        wrapper = directory / tool
        wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {namespace} {tool} "$@"\n')
        wrapper.chmod(0o755)
        paths[tool] = str(wrapper)
    return Tools(tc=paths["tc"], ip=paths["ip"], timeout=10.0)
