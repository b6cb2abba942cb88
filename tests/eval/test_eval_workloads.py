"""The workloads the corpus added to xensim.workloads: argv, and short runs on loopback."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from xensim import workloads

PY = ["py", "-m", "xensim.workloads"]


def test_a_pulsing_padded_flood_over_two_vifs() -> None:
    argv = workloads.workload_argv(
        "udpflood",
        duration=10,
        target="198.18.0.12",
        rate=12000,
        duty=0.25,
        period=8,
        pad_size=1472,
        pad_every=5,
        ifaces=["eth0", "eth1"],
        python="py",
    )
    assert argv == [
        *PY, "udpflood", "--duration", "10", "--target", "198.18.0.12", "--rate", "12000",
        "--duty", "0.25", "--period", "8", "--pad-size", "1472", "--pad-every", "5",
        "--ifaces", "eth0,eth1",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "params", "message"),
    [
        ("webserver", {"duty": 0.5, "period": 4}, "cannot pulse"),
        ("cpuhog", {"duty": 0.5}, "both duty and period"),
        ("cpuhog", {"duty": 0, "period": 4}, "duty must be in"),
        ("cpuhog", {"threads": 1000}, "threads must be in"),
        ("cpuhog", {"pad_every": 3}, "udpflood only"),
        ("udpclient", {}, "needs a target"),
    ],
)
def test_refused(kind: str, params: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        workloads.workload_argv(kind, duration=5, **params)  # type: ignore[arg-type]


def _run(kind: str, *extra: str) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "xensim.workloads", kind, *extra]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
    process.communicate(timeout=10)


def _wait_for_port(port: int) -> None:
    deadline = time.monotonic() + 15  # a loaded machine starts Python slowly
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"nothing listens on port {port}")


def test_udp_server_answers_a_paced_client_on_loopback() -> None:
    server = _run("udpserver", "--duration", "20", "--size", "100")
    try:
        answer = b""
        deadline = time.monotonic() + 15  # a loaded machine starts Python slowly
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.5)
            while not answer and time.monotonic() < deadline:
                sock.sendto(b"q" * 64, ("127.0.0.1", workloads.RR_UDP_PORT))
                try:
                    answer = sock.recv(4096)
                except TimeoutError:
                    continue
        assert answer == b"r" * 100
    finally:
        _stop(server)


def test_tcp_client_and_server_exchange_requests_on_loopback() -> None:
    server = _run("tcpserver", "--duration", "30", "--size", "200")
    client = None
    try:
        _wait_for_port(workloads.RR_TCP_PORT)
        client = _run(
            "tcpclient",
            "--duration",
            "2",
            "--target",
            "127.0.0.1",
            "--rate",
            "200",
            "--threads",
            "2",
        )
        _, errors = client.communicate(timeout=20)
        assert client.returncode == 0, errors
        with socket.create_connection(("127.0.0.1", workloads.RR_TCP_PORT), timeout=2) as sock:
            sock.sendall(b"q" * 128)  # two requests, two answers
            got = b""
            deadline = time.monotonic() + 3
            while len(got) < 400 and time.monotonic() < deadline:
                got += sock.recv(4096)
        assert got == b"r" * 400
    finally:
        for process in (client, server):
            if process is not None:
                _stop(process)


def test_a_paced_pulsing_flood_stops_on_time() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", workloads.SINK_UDP_PORT))
        sink.settimeout(0.2)
        started = time.monotonic()
        flood = _run(
            "udpflood", "--duration", "2", "--target", "127.0.0.1", "--rate", "2000",
            "--duty", "0.5", "--period", "1", "--pad-every", "4", "--pad-size", "1000",
        )  # fmt: skip
        sizes: list[int] = []
        while flood.poll() is None and time.monotonic() - started < 30:
            try:
                sizes.append(len(sink.recv(4096)))
            except TimeoutError:
                continue
        _, errors = flood.communicate(timeout=30)
        assert flood.returncode == 0, errors
    # About 2000/s for half of 2 s; a quarter of them padding.
    assert 500 <= len(sizes) <= 2600
    assert 0.15 <= sizes.count(1000) / len(sizes) <= 0.35
