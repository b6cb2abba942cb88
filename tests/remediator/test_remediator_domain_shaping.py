"""Per-domain shaping with real tc: a guest with two vifs is held to ONE rate, not two.

A Dom0 namespace with two veth pairs named as Xen names vifs (vif9.0, vif9.1), their other ends
(eth0, eth1) in a guest namespace; the remediator's own observer, planner and runner, with tc
and ip run inside the Dom0 namespace by two-line wrappers. No simulated host: only tc, ip and
the kernel's ifb, mirred, u32 and tbf.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from remediator.alerts import Action
from remediator.host import ObservedDomain
from remediator.observe import HostObserver, ToolstackDomain
from remediator.plan import Command, Tools, is_applied, is_released, plan_apply, plan_release
from remediator.runner import SubprocessRunner
from tests.remediator.helpers import netns_tools
from tests.support import require_binary, require_root
from xentools.sysfs import Vif

pytestmark = [pytest.mark.host]

DOMID = 9
RATE_BPS = 1_000_000
BURST = 32768
SHAPE = Action("network_shape", {"rate_bps": RATE_BPS, "burst_bytes": BURST, "direction": "send"})
# (Dom0 end, guest end, Dom0 address, guest address)
LINKS = (
    ("vif9.0", "eth0", "198.19.253.1", "198.19.253.2"),
    ("vif9.1", "eth1", "198.19.253.5", "198.19.253.6"),
)


class Toolstack:
    def domains(self) -> list[ToolstackDomain]:
        return [ToolstackDomain("guest", DOMID, False, 1)]

    def scheduler(self, domid: int) -> str:
        return "credit2"

    def cap(self, domid: int, scheduler: str) -> int:
        return 0

    def hard_affinity(self, domid: int) -> list[str]:
        return ["all"]


def _run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=15).stdout


@pytest.fixture
def dom0(tmp_path: Path) -> Iterator[tuple[str, str, Tools]]:
    """(Dom0 namespace, guest namespace, Tools running tc and ip in the Dom0 namespace)."""
    require_root()
    for binary in ("tc", "ip"):
        require_binary(binary)
    suffix = os.getpid() % 100_000
    ns, guest = f"jt-d0-{suffix}", f"jt-g-{suffix}"
    try:
        _run("ip", "netns", "add", ns)
        _run("ip", "netns", "add", guest)
        for vif, eth, address, peer in LINKS:
            _run("ip", "-n", ns, "link", "add", vif, "type", "veth", "peer", eth, "netns", guest)
            _run("ip", "-n", ns, "addr", "add", f"{address}/30", "dev", vif)
            _run("ip", "-n", ns, "link", "set", vif, "up")
            _run("ip", "-n", guest, "addr", "add", f"{peer}/30", "dev", eth)
            _run("ip", "-n", guest, "link", "set", eth, "up")
        yield ns, guest, netns_tools(tmp_path, ns)
    finally:
        for name in (guest, ns):  # the ifbs and veths go with the namespaces
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=15)


def _observer(tools: Tools) -> HostObserver:
    vifs = [Vif(vif, DOMID, devid, False) for devid, (vif, *_rest) in enumerate(LINKS)]
    return HostObserver(Toolstack(), SubprocessRunner(), tools, lambda: vifs)


def _observe(tools: Tools) -> ObservedDomain:
    return _observer(tools).observe(["guest"], ["network_shape"]).domains["guest"]


def _execute(commands: list[Command]) -> None:
    runner = SubprocessRunner()
    for command in commands:
        result = runner.run(command)
        assert result.ok, result.describe()


def _tx_bytes(ns: str, link: str) -> int:
    out = _run("ip", "-n", ns, "-j", "-s", "link", "show", "dev", link)
    return int(json.loads(out)[0]["stats64"]["tx"]["bytes"])


def _rx_bytes(ns: str, link: str) -> int:
    out = _run("ip", "-n", ns, "-j", "-s", "link", "show", "dev", link)
    return int(json.loads(out)[0]["stats64"]["rx"]["bytes"])


FLOOD = """
import socket, sys, time
pairs = [tuple(p.split(",")) for p in sys.argv[2:]]
socks = []
for source, target in pairs:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((source, 0))
    socks.append((s, (target, 9)))
payload = b"x" * 1000
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    for s, target in socks:
        try:
            s.sendto(payload, target)
        except OSError:
            pass
"""


def _flood(guest: str, seconds: float) -> subprocess.Popen[bytes]:
    pairs = [f"{peer},{address}" for _vif, _eth, address, peer in LINKS]
    return subprocess.Popen(
        ["ip", "netns", "exec", guest, "python3", "-c", FLOOD, str(seconds), *pairs],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_two_vifs_share_one_rate_and_release_undoes_exactly(
    dom0: tuple[str, str, Tools],
) -> None:
    ns, guest, tools = dom0
    before = _run("ip", "-n", ns, "-j", "link", "show")
    dom = _observe(tools)
    assert dom.ifb is not None and not dom.ifb.exists
    _execute(plan_apply(SHAPE, dom, {}, tools))

    shaped = _observe(tools)
    assert is_applied(SHAPE, shaped, {}, tools)
    assert plan_apply(SHAPE, shaped, {}, tools) == []  # idempotent
    assert [r.to_dev for v in shaped.vifs for r in v.link.redirects] == ["jifb9", "jifb9"]
    assert shaped.ifb is not None and shaped.ifb.root is not None
    assert shaped.ifb.root.kind == "tbf"

    # A flood out of both vifs: far more offered than one rate, one rate's worth delivered.
    offered = sum(_rx_bytes(ns, vif) for vif, *_ in LINKS)
    delivered = _tx_bytes(ns, "jifb9")
    started = time.monotonic()
    flood = _flood(guest, 3.0)
    assert flood.wait(timeout=30) == 0
    seconds = time.monotonic() - started
    offered = sum(_rx_bytes(ns, vif) for vif, *_ in LINKS) - offered
    delivered = _tx_bytes(ns, "jifb9") - delivered
    cap = RATE_BPS / 8 * seconds + BURST
    assert offered > 3 * cap, (offered, cap)  # the flood really was above the cap
    assert delivered <= 1.1 * cap, (delivered, cap)  # per vif, it would be twice that
    assert delivered >= 0.5 * RATE_BPS / 8 * seconds  # and the guest still gets its rate

    _execute(plan_release(SHAPE, shaped, {"ingress_before": []}, tools))
    released = _observe(tools)
    assert is_released(SHAPE, released, {"ingress_before": []}, tools)
    assert released.ifb is not None and not released.ifb.exists
    assert all(not v.link.has_ingress for v in released.vifs)
    links = {link["ifname"] for link in json.loads(before)}
    assert {link["ifname"] for link in json.loads(_run("ip", "-n", ns, "-j", "link", "show"))} == (
        links
    )


def test_a_per_vif_throttle_of_an_older_remediator_moves_to_the_domains_ifb(
    dom0: tuple[str, str, Tools],
) -> None:
    ns, _guest, tools = dom0
    # What a remediator before per-domain shaping left: an ifb and a tbf per vif.
    for devid, (vif, *_rest) in enumerate(LINKS):
        ifb = f"jifb9.{devid}"
        _run("ip", "-n", ns, "link", "add", ifb, "type", "ifb")
        _run("ip", "-n", ns, "link", "set", "dev", ifb, "up")
        _run("ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", ifb, "root", "handle",
             "d1c:", "tbf", "rate", "1mbit", "burst", "32kb", "latency", "50ms")  # fmt: skip
        _run("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", vif, "ingress")
        _run("ip", "netns", "exec", ns, "tc", "filter", "add", "dev", vif, "parent", "ffff:",
             "protocol", "all", "prio", "49", "u32", "match", "u32", "0", "0",
             "action", "mirred", "egress", "redirect", "dev", ifb)  # fmt: skip
    old = _observe(tools)
    assert old.old_ifbs == ("jifb9.0", "jifb9.1")
    assert not is_applied(SHAPE, old, {}, tools)
    _execute(plan_apply(SHAPE, old, {}, tools))
    moved = _observe(tools)
    assert moved.old_ifbs == ()
    assert is_applied(SHAPE, moved, {}, tools)
    assert [r.to_dev for v in moved.vifs for r in v.link.redirects] == ["jifb9", "jifb9"]


RECEIVE = Action(
    "network_shape", {"rate_bps": RATE_BPS, "burst_bytes": BURST, "direction": "receive"}
)


def _flood_into_guest(ns: str, seconds: float) -> subprocess.Popen[bytes]:
    """Dom0 sends to the guest over both vifs (their egress: what the guest receives)."""
    pairs = [f"{address},{peer}" for _vif, _eth, address, peer in LINKS]
    return subprocess.Popen(
        ["ip", "netns", "exec", ns, "python3", "-c", FLOOD, str(seconds), *pairs],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


FRAME = 14 + 20 + 8 + 1000  # what FLOOD sends, as an Ethernet frame


def _offered_to_tbf(ns: str, dev: str) -> int:
    """Bytes that reached `dev`'s root qdisc: those it sent plus its drops (FLOOD's frames)."""
    out = _run("ip", "netns", "exec", ns, "tc", "-s", "-j", "qdisc", "show", "dev", dev)
    root = next(q for q in json.loads(out) if q.get("root"))
    return int(root["bytes"]) + FRAME * int(root["drops"])


def test_two_vifs_share_one_receive_rate_and_release_undoes_exactly(
    dom0: tuple[str, str, Tools],
) -> None:
    ns, guest, tools = dom0
    before = _run("ip", "-n", ns, "-j", "link", "show")
    dom = _observe(tools)
    assert dom.rx_ifb is not None and not dom.rx_ifb.exists
    _execute(plan_apply(RECEIVE, dom, {}, tools))

    shaped = _observe(tools)
    assert is_applied(RECEIVE, shaped, {}, tools)
    assert plan_apply(RECEIVE, shaped, {}, tools) == []  # idempotent
    assert [r.to_dev for v in shaped.vifs for r in v.link.egress_redirects] == ["jifb9r"] * 2
    assert shaped.rx_ifb is not None and shaped.rx_ifb.root is not None
    assert shaped.rx_ifb.root.kind == "tbf"

    # A flood from Dom0 into the guest over both vifs: one rate's worth reaches the guest.
    eths = [eth for _vif, eth, *_ in LINKS]
    offered = _offered_to_tbf(ns, "jifb9r")
    delivered = sum(_rx_bytes(guest, eth) for eth in eths)
    started = time.monotonic()
    flood = _flood_into_guest(ns, 3.0)
    assert flood.wait(timeout=30) == 0
    seconds = time.monotonic() - started
    offered = _offered_to_tbf(ns, "jifb9r") - offered
    delivered = sum(_rx_bytes(guest, eth) for eth in eths) - delivered
    cap = RATE_BPS / 8 * seconds + BURST
    assert offered > 3 * cap, (offered, cap)  # the flood really was above the cap
    assert delivered <= 1.1 * cap, (delivered, cap)  # split per vif, it would be twice that
    assert delivered >= 0.5 * RATE_BPS / 8 * seconds  # and the guest still gets its rate

    _execute(plan_release(RECEIVE, shaped, {"ingress_before": []}, tools))
    released = _observe(tools)
    assert is_released(RECEIVE, released, {"ingress_before": []}, tools)
    assert released.rx_ifb is not None and not released.rx_ifb.exists
    assert all(v.link.root is None or v.link.root.handle != "d1c:" for v in released.vifs)
    links = {link["ifname"] for link in json.loads(before)}
    assert {link["ifname"] for link in json.loads(_run("ip", "-n", ns, "-j", "link", "show"))} == (
        links
    )


def test_an_older_per_vif_receive_tbf_moves_to_the_domains_receive_ifb(
    dom0: tuple[str, str, Tools],
) -> None:
    ns, _guest, tools = dom0
    # What a remediator before the shared receive limit left: the rate split over the vifs.
    for vif, *_rest in LINKS:
        _run("ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", vif, "root", "handle",
             "d1c:", "tbf", "rate", "500kbit", "burst", "32kb", "latency", "50ms")  # fmt: skip
    old = _observe(tools)
    assert not is_applied(RECEIVE, old, {}, tools)
    _execute(plan_apply(RECEIVE, old, {}, tools))
    moved = _observe(tools)
    assert is_applied(RECEIVE, moved, {}, tools)
    assert all(v.link.root is not None and v.link.root.kind == "htb" for v in moved.vifs)
    assert [r.to_dev for v in moved.vifs for r in v.link.egress_redirects] == ["jifb9r"] * 2
    _execute(plan_release(RECEIVE, moved, {}, tools))
    assert is_released(RECEIVE, _observe(tools), {}, tools)
