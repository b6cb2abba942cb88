"""Real workloads that run inside a simulated guest (its network namespace and cgroup).

Each workload is a plain program bounded in time (``--duration``) and, where it loops, in count,
so a forgotten one stops by itself. ``judicator-sim run`` starts them; ``workload_argv`` builds the
argv for one. Run by hand as ``python -m xensim.workloads KIND --duration S [--target IP] ...``.

| kind        | what it does                                                                 |
|-------------|------------------------------------------------------------------------------|
| idle        | sleeps: the guest exists and does nothing                                    |
| sink        | TCP discard server (port 9000) and UDP discard (port 9001): the far end      |
| webserver   | HTTP server on port 8080 answering small pages                               |
| web         | HTTP client: ``--rate`` requests/s to ``--target``'s webserver (well behaved) |
| bulk        | one TCP stream of large writes to ``--target``'s sink, paced to ``--rate`` B/s |
| pingflood   | ``ping -f`` to ``--target``, the published experiment's attack               |
| udpflood    | small UDP datagrams to ``--target`` as fast as one core sends them           |
| cpuhog      | ``--threads`` busy loops                                                     |
| memhog      | touches ``--size`` MiB of fresh pages over and over (page faults)            |
| diskhog     | writes and fsyncs ``--size`` MiB files over and over in ``--dir``            |
"""

from __future__ import annotations

import argparse
import http.server
import mmap
import os
import socket
import socketserver
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence

KINDS = (
    "idle",
    "sink",
    "webserver",
    "web",
    "bulk",
    "pingflood",
    "udpflood",
    "cpuhog",
    "memhog",
    "diskhog",
)
# Workloads that talk to another guest and need its address.
NEEDS_TARGET = frozenset({"web", "bulk", "pingflood", "udpflood"})
# Workloads whose far end must run a server in the target guest first.
NEEDS_SERVER = {"web": "webserver", "bulk": "sink", "udpflood": "sink"}

SINK_TCP_PORT = 9000
SINK_UDP_PORT = 9001
WEB_PORT = 8080
MAX_DURATION = 3600.0
# Upper bounds on loop counts, far above what a run reaches: a runaway loop still stops.
MAX_DATAGRAMS = 50_000_000
MAX_REQUESTS = 5_000_000


def workload_argv(
    kind: str,
    *,
    duration: float,
    target: str | None = None,
    rate: float | None = None,
    size: int | None = None,
    threads: int | None = None,
    directory: str | None = None,
    python: str = sys.executable,
) -> list[str]:
    """The argv that runs one workload; raises ValueError for a kind or parameter it cannot run."""
    if kind not in KINDS:
        raise ValueError(f"unknown workload {kind!r}; known: {', '.join(KINDS)}")
    if not 0 < duration <= MAX_DURATION:
        raise ValueError(f"duration must be in (0, {MAX_DURATION:g}] seconds, got {duration}")
    if kind in NEEDS_TARGET and not target:
        raise ValueError(f"workload {kind!r} needs a target address")
    if kind == "pingflood":
        assert target is not None
        # -w bounds the flood in time; -q keeps ping from printing a dot per packet.
        argv = ["ping", "-f", "-q", "-w", str(max(1, round(duration)))]
        if size is not None:
            argv += ["-s", str(size)]
        return [*argv, target]
    argv = [python, "-m", "xensim.workloads", kind, "--duration", f"{duration:g}"]
    if target is not None:
        argv += ["--target", target]
    if rate is not None:
        argv += ["--rate", f"{rate:g}"]
    if size is not None:
        argv += ["--size", str(size)]
    if threads is not None:
        argv += ["--threads", str(threads)]
    if directory is not None:
        argv += ["--dir", directory]
    return argv


def _deadline(duration: float) -> float:
    return time.monotonic() + duration


def run_idle(args: argparse.Namespace) -> None:
    time.sleep(args.duration)


class _DiscardHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(5.0)
        try:
            while sock.recv(1 << 16):
                pass
        except OSError:
            return


class _ThreadingTCPServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def _serve_for(server: socketserver.BaseServer, duration: float) -> None:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2})
    thread.daemon = True
    thread.start()
    time.sleep(duration)
    server.shutdown()
    server.server_close()


def run_sink(args: argparse.Namespace) -> None:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    udp.bind(("0.0.0.0", SINK_UDP_PORT))
    udp.settimeout(0.5)
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set():
            try:
                udp.recv(1 << 16)
            except TimeoutError:
                continue
            except OSError:
                return

    drainer = threading.Thread(target=drain, daemon=True)
    drainer.start()
    try:
        _serve_for(_ThreadingTCPServer(("0.0.0.0", SINK_TCP_PORT), _DiscardHandler), args.duration)
    finally:
        stop.set()
        udp.close()


class _PageHandler(http.server.BaseHTTPRequestHandler):
    body = b"<html><body>" + b"judicator " * 800 + b"</body></html>\n"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: object) -> None:
        """Silenced: one line per request would flood the guest's log."""


class _ThreadingHTTPServer(http.server.ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True


def run_webserver(args: argparse.Namespace) -> None:
    _serve_for(_ThreadingHTTPServer(("0.0.0.0", WEB_PORT), _PageHandler), args.duration)


def _paced(rate: float, deadline: float, limit: int, step: Callable[[], None]) -> int:
    """Calls `step` about `rate` times a second until the deadline or `limit` calls."""
    interval = 1.0 / rate
    next_at = time.monotonic()
    done = 0
    while done < limit:
        now = time.monotonic()
        if now >= deadline:
            break
        if now < next_at:
            time.sleep(min(next_at - now, deadline - now))
            continue
        step()
        done += 1
        next_at += interval
        # After a stall, do not burst to catch up: a web client does not.
        next_at = max(next_at, now - interval)
    return done


def run_web(args: argparse.Namespace) -> None:
    url = f"http://{args.target}:{WEB_PORT}/"
    deadline = _deadline(args.duration)

    def fetch() -> None:
        try:
            with urllib.request.urlopen(url, timeout=2.0) as response:
                response.read()
        except OSError:
            time.sleep(0.1)  # the server is not up yet or went away: retry at a gentle pace

    _paced(args.rate or 50.0, deadline, MAX_REQUESTS, fetch)


def run_bulk(args: argparse.Namespace) -> None:
    deadline = _deadline(args.duration)
    chunk = b"\0" * (1 << 16)
    rate = args.rate or 20e6  # bytes per second
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((args.target, SINK_TCP_PORT), timeout=2.0) as sock:
                _paced(rate / len(chunk), deadline, 1 << 40, lambda: sock.sendall(chunk))
        except OSError:
            time.sleep(0.2)


def run_udpflood(args: argparse.Namespace) -> None:
    deadline = _deadline(args.duration)
    payload = b"x" * (args.size or 64)
    address = (args.target, SINK_UDP_PORT)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sent = 0
        while sent < MAX_DATAGRAMS:
            # Check the clock every 1000 datagrams: time.monotonic() per packet halves the rate.
            if time.monotonic() >= deadline:
                break
            for _ in range(1000):
                try:  # noqa: SIM105 (contextlib.suppress costs a third of the send rate)
                    sock.sendto(payload, address)
                except OSError:
                    pass  # ENOBUFS or an ICMP error reported back: a flood does not care
            sent += 1000


def _spin(deadline: float) -> None:
    while time.monotonic() < deadline:
        for _ in range(10_000):
            pass


def run_cpuhog(args: argparse.Namespace) -> None:
    deadline = _deadline(args.duration)
    # Processes, not threads: the GIL would hold threads to one CPU.
    children = []
    for _ in range(max(1, args.threads or 1) - 1):
        pid = os.fork()
        if pid == 0:
            _spin(deadline)
            os._exit(0)
        children.append(pid)
    _spin(deadline)
    for pid in children:
        os.waitpid(pid, 0)


def run_memhog(args: argparse.Namespace) -> None:
    deadline = _deadline(args.duration)
    size = (args.size or 64) << 20
    page = mmap.PAGESIZE
    while time.monotonic() < deadline:
        # A fresh anonymous mapping each round, so every touch is a first-touch page fault.
        region = mmap.mmap(-1, size)
        for offset in range(0, size, page):
            region[offset] = 1
        region.close()


def run_diskhog(args: argparse.Namespace) -> None:
    deadline = _deadline(args.duration)
    block = os.urandom(1 << 20)
    with tempfile.TemporaryDirectory(dir=args.dir) as scratch:
        path = os.path.join(scratch, "diskhog.dat")
        while time.monotonic() < deadline:
            with open(path, "wb") as handle:
                for _ in range(args.size or 16):
                    handle.write(block)
                handle.flush()
                os.fsync(handle.fileno())
            with open(path, "rb") as handle:
                while handle.read(1 << 20):
                    pass


RUNNERS: dict[str, Callable[[argparse.Namespace], None]] = {
    "idle": run_idle,
    "sink": run_sink,
    "webserver": run_webserver,
    "web": run_web,
    "bulk": run_bulk,
    "udpflood": run_udpflood,
    "cpuhog": run_cpuhog,
    "memhog": run_memhog,
    "diskhog": run_diskhog,
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m xensim.workloads", description=__doc__)
    parser.add_argument("kind", choices=sorted(RUNNERS))
    parser.add_argument("--duration", type=float, required=True, help="seconds, at most 3600")
    parser.add_argument("--target", help="the other guest's address")
    parser.add_argument("--rate", type=float, help="web: requests/s; bulk: bytes/s")
    parser.add_argument("--size", type=int, help="udpflood: payload bytes; memhog/diskhog: MiB")
    parser.add_argument("--threads", type=int, help="cpuhog: busy processes")
    parser.add_argument("--dir", help="diskhog: where to write")
    args = parser.parse_args(argv)
    if not 0 < args.duration <= MAX_DURATION:
        parser.error(f"--duration must be in (0, {MAX_DURATION:g}]")
    if args.kind in NEEDS_TARGET and not args.target:
        parser.error(f"{args.kind} needs --target")
    if args.rate is not None and args.rate <= 0:
        parser.error("--rate must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    RUNNERS[args.kind](args)


if __name__ == "__main__":
    main()
