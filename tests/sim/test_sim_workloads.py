"""The guests' workloads: argv building, and short real runs on loopback."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from xensim import workloads

PY = ["py", "-m", "xensim.workloads"]


@pytest.mark.parametrize(
    ("kind", "params", "expected"),
    [
        ("pingflood", {"target": "198.18.0.12"}, ["ping", "-f", "-q", "-w", "10", "198.18.0.12"]),
        (
            "udpflood",
            {"target": "198.18.0.12", "size": 32},
            [*PY, "udpflood", "--duration", "10", "--target", "198.18.0.12", "--size", "32"],
        ),
        (
            "cpuhog",
            {"threads": 2},
            [*PY, "cpuhog", "--duration", "10", "--threads", "2"],
        ),
    ],
)
def test_workload_argv(kind: str, params: dict[str, object], expected: list[str]) -> None:
    assert workloads.workload_argv(kind, duration=10, python="py", **params) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "params", "message"),
    [
        ("fork-bomb", {}, "unknown workload"),
        ("pingflood", {}, "needs a target"),
        ("idle", {"duration": 0}, "duration"),
        ("idle", {"duration": 7200}, "duration"),
    ],
)
def test_workload_argv_refuses(kind: str, params: dict[str, object], message: str) -> None:
    params.setdefault("duration", 5)
    with pytest.raises(ValueError, match=message):
        workloads.workload_argv(kind, **params)  # type: ignore[arg-type]


def _start(kind: str, *extra: str) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "xensim.workloads", kind, *extra]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_port(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


def test_bulk_and_web_reach_their_servers_and_stop_by_themselves() -> None:
    servers = [_start("sink", "--duration", "6"), _start("webserver", "--duration", "6")]
    try:
        deadline = time.monotonic() + 5
        _wait_port(workloads.SINK_TCP_PORT, deadline)
        _wait_port(workloads.WEB_PORT, deadline)
        started = time.monotonic()
        clients = [
            _start("bulk", "--duration", "1", "--target", "127.0.0.1", "--rate", "5e6"),
            _start("web", "--duration", "1", "--target", "127.0.0.1", "--rate", "20"),
            _start("udpflood", "--duration", "1", "--target", "127.0.0.1"),
            _start("cpuhog", "--duration", "1", "--threads", "2"),
        ]
        for client in clients:
            _, stderr = client.communicate(timeout=10)
            assert client.returncode == 0, stderr.decode()
        assert time.monotonic() - started < 8
    finally:
        for server in servers:
            server.kill()
            server.communicate()
