"""The remediator as a process against the simulated host: shared by the remediator's sim tests
and the reliability tests.

- `simulated_host(prefix, workdir)`: `xensim.simhost.simulated_host` with a Dom0 network
  namespace and a fixed seed, yielding a `Host`: the one `SimHost` plus what only these tests
  read (one vif's rate, ingress redirects, pause counts) and `clean()`.
- `Wrappers`: tc, ip and xl wrappers the remediator's config points at. They pass every call
  through to the real tool and log the ones that change the host ("steps"); armed, they act at
  step N: `before`/`after` running the real command they signal the test (a `reached` file) and
  block, so the test can kill -9 the server exactly there; `fail` exits 1 and `hang` blocks
  until the remediator's timeout kills them. The product is untouched: only its paths differ.
- `Launcher`: writes a config and starts/stops `judicator-remediator serve` in the Dom0
  namespace on a unix socket, killing every server it started.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.remediator.helpers import TOKEN
from tests.support import (
    REPO,
    require_binary,
    require_simulated_host,
    sim,
    wait_for,
)
from xensim.simhost import SimHost
from xensim.simhost import simulated_host as simulated_sim_host

INSTANCE = "simhost:10170"
GUESTS = ("guest1", "guest2", "guest3")


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 10) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


@dataclass
class Host(SimHost):
    """The simulated host (a `SimHost` with a Dom0 namespace) with the remediator tests' reads."""

    workdir: Path

    @property
    def netns(self) -> str:
        assert self.dom0_netns is not None, "the remediator tests' host has a Dom0 namespace"
        return self.dom0_netns

    def xl(self, *args: str, check: bool = True) -> str:
        """`SimHost.xl`; with `check=False` a refusal returns its stdout instead of raising."""
        if check:
            return super().xl(*args)
        result = subprocess.run(
            [self.env["XENSIM_XL"], *args], capture_output=True, text=True, timeout=15,
            check=False, env={**os.environ, **self.env},
        )  # fmt: skip
        return result.stdout

    def tc_json(self, *args: str) -> list[dict[str, Any]]:
        out = subprocess.run(
            ["tc", "-n", self.netns, "-j", *args], capture_output=True, text=True, timeout=15,
            check=True,
        ).stdout  # fmt: skip
        return json.loads(out) if out.strip() else []

    def rx_packets(self, vif: str) -> int:
        out = subprocess.run(
            ["ip", "-n", self.netns, "-j", "-s", "link", "show", "dev", vif],
            capture_output=True, text=True, check=True, timeout=15,
        ).stdout  # fmt: skip
        return int(json.loads(out)[0]["stats64"]["rx"]["packets"])

    def rate(self, vif: str, window: float = 1.5) -> float:
        before, start = self.rx_packets(vif), time.monotonic()
        time.sleep(window)  # the measurement window itself, not a wait for a condition
        return (self.rx_packets(vif) - before) / (time.monotonic() - start)

    def shaped(self, vif: str) -> bool:
        kinds = {q["kind"] for q in self.tc_json("qdisc", "show", "dev", vif)}
        return "ingress" in kinds

    def redirects(self, vif: str) -> int:
        """How many mirred redirect filters hang off the vif's ingress."""
        if not self.shaped(vif):
            return 0
        filters = self.tc_json("filter", "show", "dev", vif, "parent", "ffff:")
        return sum(1 for f in filters if "actions" in f.get("options", {}))

    def domid(self, guest: str) -> int:
        return int(self.xl("list", guest).splitlines()[1].split()[1])

    def cap(self, guest: str) -> int:
        return int(self.xl("sched-credit2", "-d", guest).splitlines()[1].split()[-1])

    def paused(self, guest: str) -> bool:
        row = self.xl("list", guest).splitlines()[1].split()
        return row[4][2] == "p"

    def pause_count_is_zero(self, guest: str) -> bool:
        """No pause of anyone is left: one more unpause is refused, and the domain runs."""
        if self.paused(guest):
            return False
        result = subprocess.run(
            [self.env["XENSIM_XL"], "unpause", guest], capture_output=True, text=True,
            timeout=15, check=False, env={**os.environ, **self.env},
        )  # fmt: skip
        return "libxl: error" in result.stderr and not self.paused(guest)

    def clean(self) -> None:
        """Put the host back as `up` made it (tc, ifbs, caps, pauses); for fixtures' finally."""
        for link in self.links():
            if link.startswith("jifb"):
                subprocess.run(["ip", "-n", self.netns, "link", "del", link], check=False)
            if link.startswith("vif"):
                for what in ("ingress", "root"):
                    subprocess.run(
                        ["tc", "-n", self.netns, "qdisc", "del", "dev", link, what],
                        capture_output=True, check=False,
                    )  # fmt: skip
        for guest in self.guests:
            self.xl("sched-credit2", "-d", guest, "-c", "0", check=False)
            for _ in range(300):  # the toolstack pause count is at most 255
                if not self.paused(guest):
                    break
                self.xl("unpause", guest, check=False)


@contextlib.contextmanager
def simulated_host(prefix: str, workdir: Path) -> Iterator[Host]:
    """A 4-CPU, 3-guest host with a Dom0 namespace (seed 5), always down; its logs land in
    `workdir`."""
    require_simulated_host()
    require_binary("ping")
    require_binary("nsenter")
    name = f"{prefix}{os.getpid() % 10_000_000}"  # names are at most 10 characters
    with simulated_sim_host(
        name, dom0_netns=True, cpus=4, guests=len(GUESTS), seed=5, log_dir=workdir
    ) as simulated:
        yield Host(name=simulated.name, env=simulated.env, guests=simulated.guests, workdir=workdir)


# The steps: commands that change the host (a `tc -batch -` of changes is one, reads appended to
# it or not). Reads (`tc -j … show`, `tc -j -batch -` of shows only, `ip -j link show`, `xl
# list`, `xl sched-credit2 -d D` without -c, `xl vcpu-list`) pass through uncounted. A batch's
# lines are kept in a file that becomes the wrapper's stdin, for the real tool.
_CLASSIFY = {
    "tc": (
        'case " $* " in *" -batch - "*) lines="$dir/lines.$$"; cat > "$lines"; '
        "grep -qvE '^(qdisc|filter) show' \"$lines\" && step=yes; "
        'exec < "$lines"; rm -f "$lines" ;; *" show "*) ;; *) step=yes ;; esac'
    ),
    "ip": 'case " $* " in *" show "*) ;; *) step=yes ;; esac',
    "xl": (
        'case "$1" in pause|unpause|vcpu-pin) step=yes ;; '
        'sched-credit|sched-credit2) case " $* " in *" -c "*) step=yes ;; esac ;; esac'
    ),
}

_WRAPPER = """#!/bin/sh
# Test wrapper for {tool} (tests/remediator/simhost.py): logs the calls that change the host and,
# armed with "STEP MODE" in $dir/arm, acts at that step.
dir='{dir}'
step=no
{classify}
if [ "$step" = yes ]; then
    echo "{tool} $*" >> "$dir/steps"
    if [ -f "$dir/arm" ]; then
        read target mode < "$dir/arm"
        if [ "$mode" = slow ]; then sleep "$target"; exec {real} "$@"; fi
        n=$(wc -l < "$dir/steps")
        if [ "$n" -eq "$target" ]; then
            case "$mode" in
                fail) echo "injected failure of {tool} at step $n" >&2; exit 1 ;;
                hang) exec sleep 120 ;;
                after) {real} "$@" ;;
            esac
            echo "$n $mode {tool} $*" > "$dir/reached.tmp" && mv "$dir/reached.tmp" "$dir/reached"
            exec sleep 120
        fi
    fi
fi
exec {real} "$@"
"""


class Wrappers:
    def __init__(self, directory: Path, host: Host) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        # `ip netns exec` gives the remediator a mount namespace with a fresh /sys, without the
        # cgroup hierarchies the simulator's xl changes: its xl runs in the test's own mount
        # namespace (Dom0's xl does not care about network namespaces either).
        mount_ns = f"/proc/{os.getpid()}/ns/mnt"
        reals = {
            "tc": shutil.which("tc") or "/usr/sbin/tc",
            "ip": shutil.which("ip") or "/usr/sbin/ip",
            "xl": f"nsenter --mount={mount_ns} -- {host.env['XENSIM_XL']}",
        }
        self.paths = {}
        for tool, real in reals.items():
            path = self.dir / tool
            path.write_text(
                _WRAPPER.format(tool=tool, dir=self.dir, classify=_CLASSIFY[tool], real=real)
            )
            path.chmod(0o755)
            self.paths[tool] = str(path)
        self.disarm()

    def arm(self, step: int, mode: str) -> None:
        """Act at the `step`-th host-changing command from now on (1-based); `slow` delays
        every one by `step` seconds instead."""
        assert mode in ("before", "after", "fail", "hang", "slow"), mode
        self.disarm()
        (self.dir / "arm").write_text(f"{step} {mode}\n")

    def disarm(self) -> None:
        for name in ("arm", "reached", "steps"):
            with contextlib.suppress(FileNotFoundError):
                (self.dir / name).unlink()
        (self.dir / "steps").write_text("")

    def reached(self) -> str | None:
        with contextlib.suppress(FileNotFoundError):
            return (self.dir / "reached").read_text().strip()
        return None

    def steps(self) -> list[str]:
        return (self.dir / "steps").read_text().splitlines()


@dataclass
class Server:
    """A running server; `socket` is a unix socket path, or `host:port` inside the Dom0 netns
    when `in_netns` runs a callable there (`xensim.services.NetnsCaller`)."""

    process: subprocess.Popen[bytes]
    socket: str
    config: Path
    log: Path
    in_netns: Callable[[Callable[[], Any]], Any] | None = None

    def request(
        self, method: str, path: str, body: bytes | None = None,
        headers: dict[str, str] | None = None, timeout: float = 10,
    ) -> tuple[int, bytes]:  # fmt: skip
        def send() -> tuple[int, bytes]:
            connection: http.client.HTTPConnection
            if self.in_netns is None:
                connection = UnixHTTPConnection(self.socket, timeout)
            else:
                address, port = self.socket.rsplit(":", 1)
                connection = http.client.HTTPConnection(address, int(port), timeout=timeout)
            try:
                connection.request(method, path, body=body, headers=headers or {})
                response = connection.getresponse()
                return response.status, response.read()
            finally:
                connection.close()

        return send() if self.in_netns is None else self.in_netns(send)

    def post(self, body: bytes, token: str = TOKEN, timeout: float = 10) -> tuple[int, Any]:
        status, data = self.request(
            "POST", "/alerts", body,
            {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}, timeout,
        )  # fmt: skip
        return status, json.loads(data) if data.startswith(b"{") else data

    def get(self, path: str) -> tuple[int, str]:
        status, data = self.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}"})
        return status, data.decode(errors="replace")

    def ready(self) -> bool:
        if self.in_netns is None and not os.path.exists(self.socket):
            return False
        try:
            return self.request("GET", "/-/ready")[0] == 200
        except OSError:
            return False

    def metric(self, name: str, **labels: str) -> float:
        """One sample of the server's /metrics (0 when absent)."""
        from prometheus_client.parser import text_string_to_metric_families

        for family in text_string_to_metric_families(self.get("/metrics")[1]):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    return float(sample.value)
        return 0.0

    def records(self, everything: bool = False) -> list[dict[str, Any]]:
        """The throttles as the state file has them (read directly: fast enough to poll)."""
        state_path = yaml.safe_load(self.config.read_text())["state_path"]
        with contextlib.closing(sqlite3.connect(f"file:{state_path}?mode=ro", uri=True)) as db:
            db.row_factory = sqlite3.Row
            where = (
                ""
                if everything
                else ("WHERE state IN ('pending', 'applying', 'active', 'releasing')")
            )
            rows = db.execute(f"SELECT * FROM throttles {where} ORDER BY id").fetchall()
        return [dict(row) for row in rows]

    def decisions(self) -> list[dict[str, Any]]:
        state_path = yaml.safe_load(self.config.read_text())["state_path"]
        with contextlib.closing(sqlite3.connect(f"file:{state_path}?mode=ro", uri=True)) as db:
            db.row_factory = sqlite3.Row
            rows = db.execute("SELECT * FROM decisions ORDER BY id").fetchall()
        return [dict(row) for row in rows]

    def throttles(self, everything: bool = False) -> list[dict[str, Any]]:
        argv = [sys.executable, "-m", "remediator", "--config.file", str(self.config), "list",
                "--json"] + (["--all"] if everything else [])  # fmt: skip
        out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30).stdout
        return list(json.loads(out))

    def audit(self, event: str) -> list[dict[str, Any]]:
        return audit_events(self.log, event)

    def kill9(self) -> None:
        """SIGKILL the server's process group (the server and any command it runs)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(15)


def audit_events(log: Path, event: str) -> list[dict[str, Any]]:
    events = []
    for line in log.read_text(errors="replace").splitlines():
        if "remediator.audit:" in line:
            record = json.loads(line.split("remediator.audit: ", 1)[1])
            if record["event"] == event:
                events.append(record)
    return events


@dataclass
class Launcher:
    """Starts remediator servers on one config and state file; `stop_all` kills them all."""

    host: Host
    workdir: Path
    wrappers: Wrappers
    config: Path = field(init=False)
    servers: list[Server] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.config = self.write_config()

    def write_config(self, **overrides: Any) -> Path:
        token = self.workdir / "token"
        token.write_text(TOKEN + "\n")
        raw: dict[str, Any] = {
            "instances": [INSTANCE],
            "state_path": str(self.workdir / "state.db"),
            "auth": {"bearer_token_file": str(token)},
            "hold": {"base": "1s", "max": "4s", "max_throttle": "10m"},
            "limits": {"command_timeout": "3s", "reconcile_interval": "2s"},
            "paths": {
                "xl": self.wrappers.paths["xl"],
                "tc": self.wrappers.paths["tc"],
                "ip": self.wrappers.paths["ip"],
            },
            "actions": {
                "network_shape": {"rate_min": "64kbit", "rate_max": "1gbit"},
                "cpu_cap": {"min": 1, "max": 400},
                "pause": {"enabled": True},
            },
        }
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(raw.get(key), dict):
                raw[key] = {**raw[key], **value}
            else:
                raw[key] = value
        path = self.workdir / "remediator.yml"
        path.write_text(yaml.safe_dump(raw))
        self.config = path
        return path

    def start(
        self,
        wait_ready: bool = True,
        tcp: tuple[str, Callable[[Callable[[], Any]], Any]] | None = None,
    ) -> Server:
        """Serve on a unix socket, or with `tcp=(address, in_netns)` on that address in the
        Dom0 namespace (for an Alertmanager there)."""
        sock = str(self.workdir / f"s{len(self.servers)}.sock") if tcp is None else tcp[0]
        listen = f"unix:{sock}" if tcp is None else tcp[0]
        log = self.workdir / f"server{len(self.servers)}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                ["ip", "netns", "exec", self.host.netns, sys.executable, "-m", "remediator",
                 "--config.file", str(self.config), "serve", "--web.listen-address", listen],
                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **self.host.env},
                cwd=REPO, start_new_session=True,
            )  # fmt: skip
        server = Server(process, sock, self.config, log, None if tcp is None else tcp[1])
        self.servers.append(server)
        if wait_ready:
            wait_for(server.ready, 30, "the remediator to be ready")
        return server

    def logs(self) -> str:
        return "".join(s.log.read_text(errors="replace") for s in self.servers)

    def stop_all(self) -> None:
        for server in self.servers:
            if server.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(server.process.pid, signal.SIGTERM)
                try:
                    server.process.wait(15)
                except subprocess.TimeoutExpired:
                    server.kill9()


@contextlib.contextmanager
def launcher(host: Host, workdir: Path) -> Iterator[Launcher]:
    """A launcher whose servers are stopped and whose host is cleaned afterwards, always."""
    runner = Launcher(host, workdir, Wrappers(workdir / "bin", host))
    try:
        yield runner
    finally:
        runner.stop_all()
        host.clean()
        for guest in ("guest1", "guest3"):
            sim("stop", "--name", host.name, guest, check=False)
