"""The remediator for real: gunicorn in the simulated host's Dom0 namespace, the fake xl, real tc.

The server listens on a unix socket (reachable from the root namespace, where the test runs) and
is started and killed per test; the simulated host serves the whole module.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.remediator.conftest import TOKEN, alert, payload
from tests.support import require, require_binary, require_root

pytestmark = [pytest.mark.host, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
XENPERF = Path(
    os.environ.get("XENSIM_XENPERF") or REPO / ".cache/xen/root/usr/lib/xen-4.17/bin/xenperf"
)
STUB = Path(os.environ.get("XENSIM_STUB_DIR") or REPO / "build/stub") / "libxenctrl.so.4.17"
INSTANCE = "simhost:10170"


def sim(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "xensim.cli", *args],
        capture_output=True, text=True, timeout=90, check=False, cwd=REPO,
    )  # fmt: skip
    if check and result.returncode != 0:
        raise AssertionError(f"judicator-sim {' '.join(args)}: {result.stderr}{result.stdout}")
    return result


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=10)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(self._path)


@dataclass
class Host:
    name: str
    env: dict[str, str]
    workdir: Path

    @property
    def netns(self) -> str:
        return self.env["XENSIM_DOM0_NETNS"]

    def xl(self, *args: str) -> str:
        result = subprocess.run(
            [self.env["XENSIM_XL"], *args], capture_output=True, text=True, timeout=15,
            check=True, env={**os.environ, **self.env},
        )  # fmt: skip
        return result.stdout

    def tc_json(self, *args: str) -> list[dict[str, Any]]:
        out = subprocess.run(
            ["tc", "-n", self.netns, "-j", *args], capture_output=True, text=True, timeout=15,
            check=True,
        ).stdout  # fmt: skip
        return json.loads(out) if out.strip() else []

    def links(self) -> list[str]:
        out = subprocess.run(
            ["ip", "-n", self.netns, "-j", "link", "show"], capture_output=True, text=True,
            timeout=15, check=True,
        ).stdout  # fmt: skip
        return [entry["ifname"] for entry in json.loads(out)]

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

    def cap(self, guest: str) -> int:
        return int(self.xl("sched-credit2", "-d", guest).splitlines()[1].split()[-1])

    def paused(self, guest: str) -> bool:
        row = self.xl("list", guest).splitlines()[1].split()
        return row[4][2] == "p"

    def xl_works_from_dom0(self) -> bool:
        """Can the fake xl change caps and pauses when run from the Dom0 namespace?"""
        probe = subprocess.run(
            ["ip", "netns", "exec", self.netns, self.env["XENSIM_XL"], "sched-credit2", "-d",
             "guest2", "-c", "0"],
            capture_output=True, text=True, timeout=15, check=False,
            env={**os.environ, **self.env},
        )  # fmt: skip
        return probe.returncode == 0

    def clean_tc(self) -> None:
        for link in self.links():
            if link.startswith("jifb"):
                subprocess.run(["ip", "-n", self.netns, "link", "del", link], check=False)
            if link.startswith("vif"):
                for what in ("ingress", "root"):
                    subprocess.run(
                        ["tc", "-n", self.netns, "qdisc", "del", "dev", link, what],
                        capture_output=True, check=False,
                    )  # fmt: skip


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    socket: str
    config: Path
    log: Path

    def post(self, body: bytes) -> tuple[int, Any]:
        connection = UnixHTTPConnection(self.socket)
        try:
            connection.request(
                "POST", "/alerts", body=body,
                headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
            )  # fmt: skip
            response = connection.getresponse()
            data = response.read()
        finally:
            connection.close()
        return response.status, json.loads(data) if data.startswith(b"{") else data

    def ready(self) -> bool:
        if not os.path.exists(self.socket):
            return False
        connection = UnixHTTPConnection(self.socket)
        try:
            connection.request("GET", "/-/ready")
            return connection.getresponse().status == 200
        except OSError:
            return False
        finally:
            connection.close()

    def throttles(self, everything: bool = False) -> list[dict[str, Any]]:
        argv = [sys.executable, "-m", "remediator", "--config.file", str(self.config), "list",
                "--json"] + (["--all"] if everything else [])  # fmt: skip
        out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30).stdout
        return list(json.loads(out))

    def audit(self, event: str) -> list[dict[str, Any]]:
        events = []
        for line in self.log.read_text(errors="replace").splitlines():
            if "remediator.audit:" in line:
                record = json.loads(line.split("remediator.audit: ", 1)[1])
                if record["event"] == event:
                    events.append(record)
        return events


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    require_root()
    require_binary("ping")
    require(XENPERF.exists(), f"needs the real xenperf at {XENPERF} (make deps)")
    require(STUB.exists(), f"needs the stub at {STUB} (make deps)")
    name = f"rem{os.getpid() % 100_000_000}"
    try:
        sim("up", "--name", name, "--dom0-netns", "--cpus", "4", "--guests", "3", "--seed", "5")
        env = json.loads(sim("env", "--name", name, "--json").stdout)
        yield Host(name, env, tmp_path_factory.mktemp("remediator-sim"))
    finally:
        sim("down", "--name", name, check=False)


@pytest.fixture
def start_server(host: Host, tmp_path: Path) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    config = tmp_path / "remediator.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "instances": [INSTANCE],
                "state_path": str(tmp_path / "state.db"),
                "auth": {"bearer_token_file": str(token)},
                "hold": {"base": "1s", "max": "4s", "max_throttle": "10m"},
                "limits": {"command_timeout": "10s", "reconcile_interval": "2s"},
                "paths": {"xl": host.env["XENSIM_XL"]},
                "actions": {
                    "network_shape": {"rate_min": "64kbit", "rate_max": "1gbit"},
                    "cpu_cap": {"min": 1, "max": 400},
                    "pause": {"enabled": True},
                },
            }
        )
    )

    def start(crash_at: str | None = None) -> Server:
        sock = str(tmp_path / f"s{len(servers)}.sock")
        log = tmp_path / f"server{len(servers)}.log"
        env = {**os.environ, **host.env}
        env.pop("JUDICATOR_REMEDIATOR_CRASH_AT", None)
        if crash_at is not None:
            env["JUDICATOR_REMEDIATOR_CRASH_AT"] = crash_at
        with log.open("wb") as out:
            process = subprocess.Popen(
                ["ip", "netns", "exec", host.netns, sys.executable, "-m", "remediator",
                 "--config.file", str(config), "serve", "--web.listen-address", f"unix:{sock}"],
                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True,
            )  # fmt: skip
        server = Server(process, sock, config, log)
        servers.append(server)
        if crash_at is None:
            wait_for(server.ready, 30, "the remediator to be ready")
        return server

    try:
        yield start
    finally:
        for server in servers:
            if server.process.poll() is None:
                os.killpg(server.process.pid, signal.SIGTERM)
                try:
                    server.process.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(server.process.pid, signal.SIGKILL)
                    server.process.wait(5)
        host.clean_tc()
        for guest in ("guest1", "guest2", "guest3"):
            host.xl("sched-credit2", "-d", guest, "-c", "0")
            while host.paused(guest):
                host.xl("unpause", guest)
        sim("stop", "--name", host.name, "guest1", check=False)
        sim("stop", "--name", host.name, "guest3", check=False)


def net_alert(status: str = "firing", **labels: str) -> dict[str, Any]:
    base = {"domain": "guest1", "instance": INSTANCE, "rate": "256kbit", "burst": "16kb"}
    base.update(labels)
    return alert(status, fingerprint="1111111111111111", **base)


def test_network_alert_shapes_the_flooder_10x_leaves_neighbours_and_releases_after_hold(
    host: Host, start_server: Callable[..., Server]
) -> None:
    server = start_server()
    sim("run", "--name", host.name, "guest1", "pingflood", "--target", "guest2", "--duration", "40")
    sim("run", "--name", host.name, "guest3", "pingflood", "--target", "guest2", "--duration", "40")
    wait_for(lambda: host.rate("vif1.0", 0.5) > 500, 15, "guest1's flood to start")
    flood_before, neighbour_before = host.rate("vif1.0"), host.rate("vif3.0")

    status, answer = server.post(payload(net_alert()))
    assert (status, answer["alerts"][0]["decision"]) == (200, "accepted")
    wait_for(lambda: [t for t in server.throttles() if t["state"] == "active"], 15, "active")
    assert host.shaped("vif1.0")
    assert "jifb1.0" in host.links()
    assert not host.shaped("vif2.0") and not host.shaped("vif3.0")
    flood_after, neighbour_after = host.rate("vif1.0"), host.rate("vif3.0")
    assert flood_after * 10 <= flood_before, (flood_before, flood_after)
    assert neighbour_after >= neighbour_before * 0.5, (neighbour_before, neighbour_after)

    status, answer = server.post(payload(net_alert("resolved")))
    assert (status, answer["alerts"][0]["decision"]) == (200, "scheduled_release")
    resolved = time.monotonic()
    wait_for(lambda: not host.shaped("vif1.0"), 15, "the shaping to be removed")
    assert time.monotonic() - resolved >= 0.9, "released before the 1s hold"
    assert "jifb1.0" not in host.links()
    assert server.throttles() == []


def test_replaying_100_times_changes_nothing_after_the_first(
    host: Host, start_server: Callable[..., Server]
) -> None:
    server = start_server()
    body = payload(net_alert())
    assert server.post(body)[0] == 200
    wait_for(lambda: [t for t in server.throttles() if t["state"] == "active"], 15, "active")
    qdiscs = host.tc_json("qdisc", "show", "dev", "vif1.0")
    filters = host.tc_json("filter", "show", "dev", "vif1.0", "parent", "ffff:")
    for _ in range(100):
        status, answer = server.post(body)
        assert (status, answer["alerts"][0]["decision"]) == (200, "duplicate")
    time.sleep(2.5)  # one reconcile interval: it must not "repair" anything either
    assert host.tc_json("qdisc", "show", "dev", "vif1.0") == qdiscs
    assert host.tc_json("filter", "show", "dev", "vif1.0", "parent", "ffff:") == filters
    assert len(server.audit("applied")) == 1
    assert len(server.throttles(everything=True)) == 1


def test_cpu_cap_is_applied_and_restored(host: Host, start_server: Callable[..., Server]) -> None:
    require(host.xl_works_from_dom0(), "the simulator's xl cannot cap from the Dom0 netns")
    host.xl("sched-credit2", "-d", "guest2", "-c", "80")  # the operator's own cap
    server = start_server()
    labels = {"domain": "guest2", "instance": INSTANCE, "remediation": "cpu_cap", "cap": "20"}
    server.post(payload(alert(fingerprint="2222222222222222", **labels)))
    wait_for(lambda: host.cap("guest2") == 20, 15, "the cap")
    server.post(payload(alert("resolved", fingerprint="2222222222222222", **labels)))
    wait_for(lambda: host.cap("guest2") == 80, 15, "the previous cap back")


def test_pause_and_unpause_balance(host: Host, start_server: Callable[..., Server]) -> None:
    require(host.xl_works_from_dom0(), "the simulator's xl cannot pause from the Dom0 netns")
    server = start_server()
    labels = {"domain": "guest3", "instance": INSTANCE, "remediation": "pause"}
    server.post(payload(alert(fingerprint="3333333333333333", **labels)))
    wait_for(lambda: host.paused("guest3"), 15, "the pause")
    server.post(payload(alert(fingerprint="3333333333333333", **labels)))  # duplicate
    server.post(payload(alert("resolved", fingerprint="3333333333333333", **labels)))
    wait_for(lambda: not host.paused("guest3"), 15, "the unpause")
    wait_for(lambda: server.throttles() == [], 15, "the record to end")
    # Exactly one pause and one unpause: one more unpause would have been refused by xl.
    host.xl("pause", "guest3")
    host.xl("unpause", "guest3")
    assert not host.paused("guest3")


@pytest.mark.parametrize("crash_at", ["after_record", "after_apply"])
def test_kill_9_mid_action_then_restart_host_and_record_agree(
    host: Host, start_server: Callable[..., Server], crash_at: str
) -> None:
    crashing = start_server(crash_at=crash_at)
    wait_for(crashing.ready, 30, "the crashing remediator to be ready")
    with contextlib.suppress(OSError, http.client.HTTPException):
        crashing.post(payload(net_alert()))  # the answer may or may not make it out
    wait_for(lambda: crashing.process.poll() is not None, 20, "the kill -9")
    (record,) = crashing.throttles()
    assert record["state"] == "applying"
    assert host.shaped("vif1.0") == (crash_at == "after_apply")

    server = start_server()
    wait_for(lambda: [t for t in server.throttles() if t["state"] == "active"], 20, "active")
    assert host.shaped("vif1.0") and "jifb1.0" in host.links()
    filters = host.tc_json("filter", "show", "dev", "vif1.0", "parent", "ffff:")
    assert sum(1 for f in filters if "actions" in f.get("options", {})) == 1, filters

    server.post(payload(net_alert("resolved")))
    wait_for(lambda: not host.shaped("vif1.0"), 15, "the release")
    assert "jifb1.0" not in host.links()
