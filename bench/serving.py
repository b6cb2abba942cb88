"""HTTP serving cost: CPU per request of the exporter's server, against a Python process's floor.

    python -m bench.serving [--requests 300] [--body-bytes 18000]

Both servers answer `GET /metrics` with the same constant body (the size of the paper's
shape's exposition), so only serving is measured, not scraping:

- hypercorn: the exporter's own app (`exporter.web.create_app`) served as `judicator-exporter`
  serves it (`exporter.web.hypercorn_config`, `run_server`);
- floor: a bare asyncio `Protocol` that writes the answer when the headers end: no HTTP
  library, no thread, what any Python server costs at least.

Each server runs in its own process on a free loopback port; the client sends `--requests`
keep-alive requests 10 ms apart (then as many on a new connection each), and the server
process's CPU is read from /proc/<pid>/task/*/schedstat before and after. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence

from bench.common import REPO_ROOT, table, threads_cpu_seconds

SERVERS = ("hypercorn", "floor")


def _serve(kind: str, port: int, body_bytes: int) -> None:
    body = b"".join(b"xen_metric_%d 1.0\n" % i for i in range(body_bytes // 16))[:body_bytes]
    if kind == "hypercorn":
        from exporter.web import create_app, hypercorn_config, run_server
        from exporter.webconfig import WebConfig

        class Constant:
            scrape_timeout = 9.0

            def render(self, scrape_timeout: float | None = None) -> bytes:
                return body

        app = create_app(Constant(), "/metrics", WebConfig(), "bench")  # type: ignore[arg-type]
        run_server(app, hypercorn_config(f"127.0.0.1:{port}", WebConfig(), "warning"))
        return
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(body)

    class Answer(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            self.transport, self.received = transport, b""

        def data_received(self, data: bytes) -> None:
            self.received += data
            if b"\r\n\r\n" in self.received:
                self.received = b""
                self.transport.write(head + body)

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Answer, "127.0.0.1", port)
        await server.serve_forever()

    asyncio.run(main())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _connect(port: int) -> http.client.HTTPConnection:
    deadline = time.monotonic() + 20
    while True:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            connection.request("GET", "/metrics")
            connection.getresponse().read()
            return connection
        except OSError:
            connection.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def measure(kind: str, requests: int, body_bytes: int) -> dict[str, float]:
    port = _free_port()
    argv = [sys.executable, "-m", "bench.serving", f"--serve={kind}", f"--port={port}"]
    argv.append(f"--body-bytes={body_bytes}")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(argv, env=env, cwd=REPO_ROOT)
    try:
        connection = _connect(port)
        figures = {}
        for mode in ("keep-alive", "new connection"):
            for _ in range(5):  # warm
                connection.request("GET", "/metrics")
                connection.getresponse().read()
            time.sleep(0.5)
            before = threads_cpu_seconds(process.pid)
            for _ in range(requests):
                if mode == "new connection":
                    connection.close()
                    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                connection.request("GET", "/metrics")
                connection.getresponse().read()
                time.sleep(0.01)
            figures[mode] = (threads_cpu_seconds(process.pid) - before) / requests
        connection.close()
        return figures
    finally:
        process.terminate()
        process.wait(10)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serving", description=__doc__)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--body-bytes", type=int, default=18_000)
    parser.add_argument("--serve", choices=SERVERS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        _serve(args.serve, args.port, args.body_bytes)
        return 0
    rows = []
    for kind in SERVERS:
        figures = measure(kind, args.requests, args.body_bytes)
        rows.append([kind, *(f"{figures[mode] * 1000:.3f}" for mode in figures)])
    print(
        table(
            f"Server CPU per request, ms ({args.requests} requests 10 ms apart, "
            f"{args.body_bytes}-byte constant answer)",
            ["server", "keep-alive", "new connection each"],
            rows,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
