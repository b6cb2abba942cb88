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
| udpflood    | small UDP datagrams to ``--target`` as fast as one core sends them, or paced  |
|             | to ``--rate`` packets/s; ``--pad-size``/``--pad-every`` mix in large ones;    |
|             | ``--threads`` processes; ``--ifaces eth0,eth1`` spreads them over vifs        |
| udpserver   | UDP request/response server (port 9002): answers each datagram with           |
|             | ``--size`` bytes (a DNS-, NTP- or game-server)                                |
| udpclient   | ``--rate`` requests/s to ``--target``'s udpserver, reading the answers        |
| tcpserver   | TCP request/response server (port 9003): answers each 64-byte request with    |
|             | ``--size`` bytes                                                              |
| tcpclient   | ``--rate`` requests/s over ``--threads`` connections to ``--target``'s        |
|             | tcpserver, one request in flight per connection                               |
| cpuhog      | ``--threads`` busy loops                                                      |
| memhog      | touches ``--size`` MiB of fresh pages over and over (page faults)             |
| diskhog     | writes and fsyncs ``--size`` MiB files over and over in ``--dir``             |
| boot        | what a guest does while it boots: a CPU burst, pages touched, files written   |
|             | and read, a few packets to ``--target`` if given; then idle                   |

Pulsing: ``--duty D --period P`` runs udpflood, cpuhog, memhog and diskhog only during the first
D x P seconds of every P-second period and idles the rest (D in (0, 1]).
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import mmap
import os
import selectors
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
    "udpserver",
    "udpclient",
    "tcpserver",
    "tcpclient",
    "boot",
)
# Workloads that talk to another guest and need its address.
NEEDS_TARGET = frozenset({"web", "bulk", "pingflood", "udpflood", "udpclient", "tcpclient"})
# Workloads whose far end must run a server in the target guest first.
NEEDS_SERVER = {
    "web": "webserver",
    "bulk": "sink",
    "udpflood": "sink",
    "udpclient": "udpserver",
    "tcpclient": "tcpserver",
}
# Workloads that can pulse (--duty, --period).
PULSING = frozenset({"udpflood", "cpuhog", "memhog", "diskhog"})

SINK_TCP_PORT = 9000
SINK_UDP_PORT = 9001
RR_UDP_PORT = 9002
RR_TCP_PORT = 9003
RR_REQUEST_BYTES = 64
WEB_PORT = 8080
MAX_THREADS = 64
# Paced senders work in ticks of this many seconds (one sleep per tick, not per packet).
PACE_TICK = 0.01
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
    duty: float | None = None,
    period: float | None = None,
    pad_size: int | None = None,
    pad_every: int | None = None,
    ifaces: Sequence[str] | None = None,
    python: str = sys.executable,
) -> list[str]:
    """The argv that runs one workload; raises ValueError for a kind or parameter it cannot run."""
    if kind not in KINDS:
        raise ValueError(f"unknown workload {kind!r}; known: {', '.join(KINDS)}")
    if not 0 < duration <= MAX_DURATION:
        raise ValueError(f"duration must be in (0, {MAX_DURATION:g}] seconds, got {duration}")
    if kind in NEEDS_TARGET and not target:
        raise ValueError(f"workload {kind!r} needs a target address")
    if (duty is not None or period is not None) and kind not in PULSING:
        raise ValueError(f"workload {kind!r} cannot pulse (only {', '.join(sorted(PULSING))})")
    if (duty is None) != (period is None):
        raise ValueError("a pulsing workload needs both duty and period")
    if duty is not None and not 0 < duty <= 1:
        raise ValueError(f"duty must be in (0, 1], got {duty}")
    if period is not None and not 0 < period <= MAX_DURATION:
        raise ValueError(f"period must be in (0, {MAX_DURATION:g}], got {period}")
    if (pad_size is not None or pad_every is not None or ifaces) and kind != "udpflood":
        raise ValueError("pad_size, pad_every and ifaces apply to udpflood only")
    if threads is not None and not 1 <= threads <= MAX_THREADS:
        raise ValueError(f"threads must be in 1..{MAX_THREADS}, got {threads}")
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
    if duty is not None and period is not None:
        argv += ["--duty", f"{duty:g}", "--period", f"{period:g}"]
    if pad_size is not None:
        argv += ["--pad-size", str(pad_size)]
    if pad_every is not None:
        argv += ["--pad-every", str(pad_every)]
    if ifaces:
        argv += ["--ifaces", ",".join(ifaces)]
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


def _pulsed(args: argparse.Namespace, work: Callable[[float], None]) -> None:
    """Runs `work(until)` for the whole duration, or only in the on-part of every period."""
    deadline = _deadline(args.duration)
    if args.duty is None:
        work(deadline)
        return
    start = time.monotonic()
    period = args.period
    for index in range(int(args.duration / period) + 2):
        on_start = start + index * period
        if on_start >= deadline:
            break
        now = time.monotonic()
        if now < on_start:
            time.sleep(on_start - now)
        work(min(on_start + args.duty * period, deadline))


def _flood_socket(iface: str | None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if iface:
        # Out of this interface (the guest's eth1 is its second vif), whatever the routes say.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
    return sock


def _flood(args: argparse.Namespace, iface: str | None, share: float) -> None:
    """One flooding process: `share` of --rate (all it can when no rate), until the deadline."""
    small = b"x" * (args.size or 64)
    large = b"x" * (args.pad_size or 1472)
    every = args.pad_every or 0
    address = (args.target, SINK_UDP_PORT)
    rate = None if args.rate is None else args.rate * share
    sent = [0]
    with _flood_socket(iface) as sock:

        def send(count: int) -> None:
            for _ in range(count):
                sent[0] += 1
                payload = large if every and sent[0] % every == 0 else small
                try:  # noqa: SIM105 (contextlib.suppress costs a third of the send rate)
                    sock.sendto(payload, address)
                except OSError:
                    pass  # ENOBUFS or an ICMP error reported back: a flood does not care

        def work(until: float) -> None:
            if rate is None:
                # Check the clock every 1000 datagrams: time.monotonic() per packet halves the rate.
                while sent[0] < MAX_DATAGRAMS and time.monotonic() < until:
                    send(1000)
                return
            _paced_batches(rate, until, lambda count: send(count), lambda: sent[0] >= MAX_DATAGRAMS)

        _pulsed(args, work)


def _paced_batches(
    rate: float, until: float, send: Callable[[int], None], done: Callable[[], bool]
) -> None:
    """Calls send(n) once a tick so that about `rate` items a second go out, until `until`."""
    start = time.monotonic()
    sent = 0
    while not done():
        now = time.monotonic()
        if now >= until:
            return
        due = int(rate * (now - start)) - sent
        if due > rate:
            # After a stall, at most one second's worth at once: what is owed beyond is dropped.
            sent += due - int(rate)
            due = int(rate)
        if due > 0:
            send(due)
            sent += due
        time.sleep(min(PACE_TICK, max(0.0, until - now)))


def _in_processes(count: int, body: Callable[[int], None]) -> None:
    """Runs body(i) in `count` processes (the first in this one) and waits for them all."""
    children = []
    for index in range(1, max(1, count)):
        pid = os.fork()
        if pid == 0:
            try:
                body(index)
            finally:
                os._exit(0)
        children.append(pid)
    try:
        body(0)
    finally:
        for pid in children:
            os.waitpid(pid, 0)


def run_udpflood(args: argparse.Namespace) -> None:
    ifaces = [i for i in (args.ifaces or "").split(",") if i]
    count = max(args.threads or 1, len(ifaces) or 1)

    def body(index: int) -> None:
        _flood(args, ifaces[index % len(ifaces)] if ifaces else None, 1.0 / count)

    _in_processes(count, body)


def run_udpserver(args: argparse.Namespace) -> None:
    deadline = _deadline(args.duration)
    answer = b"r" * (args.size or 200)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", RR_UDP_PORT))
        sock.settimeout(0.5)
        answered = 0
        while answered < MAX_DATAGRAMS and time.monotonic() < deadline:
            try:
                _, peer = sock.recvfrom(2048)
                sock.sendto(answer, peer)
                answered += 1
            except TimeoutError:
                continue
            except OSError:
                time.sleep(0.01)


def run_udpclient(args: argparse.Namespace) -> None:
    deadline = _deadline(args.duration)
    request = b"q" * RR_REQUEST_BYTES
    address = (args.target, RR_UDP_PORT)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        asked = [0]

        def ask(count: int) -> None:
            for _ in range(count):
                # The server may not be up yet: its answers are what a client waits for.
                with contextlib.suppress(OSError):
                    sock.sendto(request, address)
                asked[0] += 1
            # Read what came back (a client reads its answers).
            for _ in range(2 * count):
                try:
                    sock.recv(4096)
                except OSError:
                    break

        _paced_batches(args.rate or 1000.0, deadline, ask, lambda: asked[0] >= MAX_REQUESTS)


def run_tcpserver(args: argparse.Namespace) -> None:
    deadline = _deadline(args.duration)
    answer = b"r" * (args.size or 200)
    selector = selectors.DefaultSelector()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", RR_TCP_PORT))
    listener.listen(128)
    listener.setblocking(False)
    selector.register(listener, selectors.EVENT_READ)
    pending: dict[socket.socket, int] = {}
    try:
        while time.monotonic() < deadline:
            for key, _ in selector.select(timeout=0.5):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is listener:
                    try:
                        conn, _ = listener.accept()
                    except OSError:
                        continue
                    conn.setblocking(False)
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    selector.register(conn, selectors.EVENT_READ)
                    pending[conn] = 0
                    continue
                try:
                    data = sock.recv(1 << 16)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    selector.unregister(sock)
                    pending.pop(sock, None)
                    sock.close()
                    continue
                got = pending[sock] + len(data)
                requests, pending[sock] = divmod(got, RR_REQUEST_BYTES)
                with contextlib.suppress(OSError):
                    sock.sendall(answer * requests)
    finally:
        for sock in list(pending):
            sock.close()
        listener.close()
        selector.close()


def run_tcpclient(args: argparse.Namespace) -> None:
    deadline = _deadline(args.duration)
    connections = max(1, args.threads or 4)
    answer_bytes = args.size or 200
    request = b"q" * RR_REQUEST_BYTES
    per_connection = (args.rate or 1000.0) / connections

    def client(_index: int) -> None:
        done = [0]
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((args.target, RR_TCP_PORT), timeout=2.0) as sock:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

                    def exchange(count: int) -> None:
                        for _ in range(count):
                            sock.sendall(request)
                            got = 0
                            while got < answer_bytes:
                                chunk = sock.recv(1 << 16)
                                if not chunk:
                                    raise ConnectionError("server closed")
                                got += len(chunk)
                            done[0] += 1

                    _paced_batches(
                        per_connection, deadline, exchange, lambda: done[0] >= MAX_REQUESTS
                    )
            except OSError:
                time.sleep(0.2)  # the server is not up yet

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()) + 5.0)


def _spin(deadline: float) -> None:
    while time.monotonic() < deadline:
        for _ in range(10_000):
            pass


def run_cpuhog(args: argparse.Namespace) -> None:
    # Processes, not threads: the GIL would hold threads to one CPU.
    _in_processes(args.threads or 1, lambda _index: _pulsed(args, _spin))


def _touch_pages(size: int, until: float) -> None:
    page = mmap.PAGESIZE
    while time.monotonic() < until:
        # A fresh anonymous mapping each round, so every touch is a first-touch page fault.
        region = mmap.mmap(-1, size)
        for offset in range(0, size, page):
            region[offset] = 1
        region.close()


def run_memhog(args: argparse.Namespace) -> None:
    size = (args.size or 64) << 20
    _pulsed(args, lambda until: _touch_pages(size, until))


def _write_and_read(path: str, block: bytes, blocks: int, until: float) -> None:
    while time.monotonic() < until:
        with open(path, "wb") as handle:
            for _ in range(blocks):
                handle.write(block)
            handle.flush()
            os.fsync(handle.fileno())
        with open(path, "rb") as handle:
            while handle.read(1 << 20):
                pass


def run_diskhog(args: argparse.Namespace) -> None:
    block = os.urandom(1 << 20)
    with tempfile.TemporaryDirectory(dir=args.dir) as scratch:
        path = os.path.join(scratch, "diskhog.dat")
        _pulsed(args, lambda until: _write_and_read(path, block, args.size or 16, until))


# A boot, in the order a guest does it (seconds of each step, from a cloud image's boot log:
# kernel and init busy a CPU, services fault their memory in, the journal and caches write).
BOOT_STEPS = (("cpu", 3.0), ("memory", 2.0), ("disk", 2.0))


def run_boot(args: argparse.Namespace) -> None:
    deadline = _deadline(args.duration)
    with tempfile.TemporaryDirectory(dir=args.dir) as scratch:
        for step, seconds in BOOT_STEPS:
            until = min(time.monotonic() + seconds, deadline)
            if step == "cpu":
                _spin(until)
            elif step == "memory":
                _touch_pages((args.size or 128) << 20, until)
            else:
                _write_and_read(os.path.join(scratch, "boot.dat"), os.urandom(1 << 20), 8, until)
        if args.target:
            # DHCP, NTP, a package mirror: a handful of datagrams.
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                for _ in range(20):
                    with contextlib.suppress(OSError):
                        sock.sendto(b"hello", (args.target, SINK_UDP_PORT))
    time.sleep(max(0.0, deadline - time.monotonic()))


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
    "udpserver": run_udpserver,
    "udpclient": run_udpclient,
    "tcpserver": run_tcpserver,
    "tcpclient": run_tcpclient,
    "boot": run_boot,
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m xensim.workloads", description=__doc__)
    parser.add_argument("kind", choices=sorted(RUNNERS))
    parser.add_argument("--duration", type=float, required=True, help="seconds, at most 3600")
    parser.add_argument("--target", help="the other guest's address")
    parser.add_argument(
        "--rate",
        type=float,
        help="web, udpclient, tcpclient: requests/s; bulk: bytes/s;"
        " udpflood: packets/s (default: as fast as it can)",
    )
    parser.add_argument(
        "--size",
        type=int,
        help="udpflood: payload bytes; servers: answer bytes; memhog, diskhog, boot: MiB",
    )
    parser.add_argument(
        "--threads", type=int, help="cpuhog, udpflood: processes; tcpclient: connections"
    )
    parser.add_argument("--dir", help="diskhog, boot: where to write")
    parser.add_argument("--duty", type=float, help="pulsing: the on fraction of each period")
    parser.add_argument("--period", type=float, help="pulsing: seconds")
    parser.add_argument("--pad-size", type=int, help="udpflood: payload bytes of padding packets")
    parser.add_argument("--pad-every", type=int, help="udpflood: every Nth packet is padding")
    parser.add_argument("--ifaces", help="udpflood: comma-separated guest interfaces to send on")
    args = parser.parse_args(argv)
    if not 0 < args.duration <= MAX_DURATION:
        parser.error(f"--duration must be in (0, {MAX_DURATION:g}]")
    if args.kind in NEEDS_TARGET and not args.target:
        parser.error(f"{args.kind} needs --target")
    if args.rate is not None and args.rate <= 0:
        parser.error("--rate must be positive")
    if (args.duty is None) != (args.period is None):
        parser.error("--duty and --period go together")
    if args.duty is not None and not (0 < args.duty <= 1 and args.period > 0):
        parser.error("--duty must be in (0, 1] and --period positive")
    if args.threads is not None and not 1 <= args.threads <= MAX_THREADS:
        parser.error(f"--threads must be in 1..{MAX_THREADS}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    RUNNERS[args.kind](args)


if __name__ == "__main__":
    main()
