"""`platform: kvm` with real tc: a real QEMU holding a real tap is shaped and released by the
engine, the same tc chain as on a Xen vif, on the tap.

A namespace of the test's own holds the tap (`ip tuntap add`); QEMU runs in it (TCG: there is
no usable /dev/kvm here) with that tap as its NIC, and the remediator's KvmToolstack finds it
in /proc by pid, name and tap. Only `is_vm` is given (QEMU under TCG holds no kvm-vm fd: its
signalfd stands in); tc and ip run in the namespace through two-line wrappers.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from remediator.app import create_app
from remediator.config import load_config
from remediator.kvmtoolstack import KvmToolstack
from remediator.observe import HostObserver, SharedReads
from remediator.runner import SubprocessRunner
from tests.remediator.helpers import (
    AUTH,
    TOKEN,
    Clock,
    alert,
    base_config,
    engine_of,
    netns_tools,
    payload,
    settle,
)
from tests.support import require_binary, require_root, wait_for

pytestmark = [pytest.mark.host]

TAP = "jtkvm0"


def _run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=15).stdout


def _signalfd(link: str) -> bool:
    return link == "anon_inode:[signalfd]"


@pytest.fixture
def vm(tmp_path: Path) -> Iterator[tuple[str, str, int]]:
    """(namespace, VM name, QEMU pid): a QEMU with the namespace's tap; all gone afterwards."""
    require_root()
    for binary in ("tc", "ip"):
        require_binary(binary)
    qemu = require_binary("qemu-system-x86_64")
    suffix = os.getpid() % 100_000
    ns, name = f"jt-kvm-{suffix}", f"kvmtap{suffix}"
    process: subprocess.Popen[bytes] | None = None
    try:
        _run("ip", "netns", "add", ns)
        _run("ip", "-n", ns, "tuntap", "add", "dev", TAP, "mode", "tap")
        _run("ip", "-n", ns, "link", "set", TAP, "up")
        process = subprocess.Popen(
            ["ip", "netns", "exec", ns, qemu, "-accel", "tcg", "-name", f"guest={name}",
             "-m", "64", "-nodefaults", "-display", "none",
             "-netdev", f"tap,id=n0,ifname={TAP},script=no,downscript=no",
             "-device", "virtio-net-pci,netdev=n0"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        yield ns, name, process.pid  # `ip netns exec` execs QEMU: the same pid
    finally:
        if process is not None:
            process.kill()
            process.wait(10)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=15)


def _tc(ns: str, *args: str) -> list[dict[str, object]]:
    out = _run("ip", "netns", "exec", ns, "tc", "-j", *args)
    return json.loads(out) if out.strip() else []


def _chain(ns: str, pid: int) -> dict[str, object]:
    """What of our tc chain is on the tap and its ifbs."""
    links = {e["ifname"] for e in json.loads(_run("ip", "-n", ns, "-j", "link", "show"))}
    tap = _tc(ns, "qdisc", "show", "dev", TAP)
    return {
        "ingress": any(q.get("kind") == "ingress" for q in tap),
        "htb": any(q.get("kind") == "htb" and q.get("handle") == "d1c:" for q in tap),
        "redirects": sorted(
            str(action.get("to_dev"))
            for parent in ("ffff:", "d1c:")
            if any(q.get("handle") == parent for q in tap)
            for entry in _tc(ns, "filter", "show", "dev", TAP, "parent", parent)
            for action in (entry.get("options") or {}).get("actions", [])  # type: ignore[union-attr]
        ),
        "ifbs": sorted(link for link in links if link.startswith(f"jifb{pid}")),
        "tbfs": sorted(
            link
            for link in links
            if link.startswith("jifb")
            and any(q.get("kind") == "tbf" for q in _tc(ns, "qdisc", "show", "dev", link))
        ),
    }


def test_a_real_vms_tap_is_shaped_both_ways_and_released_by_the_engine(
    vm: tuple[str, str, int], tmp_path: Path
) -> None:
    ns, name, pid = vm
    toolstack = KvmToolstack(is_vm=_signalfd)
    wait_for(
        lambda: any(v.name == TAP and v.domid == pid for v in toolstack.list_taps()),
        30,
        "QEMU to hold its tap",
    )
    tools = netns_tools(tmp_path, ns)
    raw = base_config(tmp_path / "state.db", platform="kvm", paths={"tc": tools.tc, "ip": tools.ip})
    config = load_config(raw)
    runner = SubprocessRunner()
    host = SharedReads(HostObserver(toolstack, runner, tools, toolstack.list_taps))
    clock = Clock()
    app: Flask = create_app(config, runner, token=TOKEN, host=host, clock=clock)
    engine = engine_of(app)
    engine.start()
    try:
        assert engine.ready.wait(10)
        before = _chain(ns, pid)
        assert before == {"ingress": False, "htb": False, "redirects": [], "ifbs": [], "tbfs": []}
        labels = {"domain": name, "rate": "1mbit", "direction": "both"}
        response = app.test_client().post("/alerts", data=payload(alert(**labels)), headers=AUTH)
        assert response.get_json()["alerts"][0]["decision"] == "accepted"
        settle(app)
        (throttle,) = engine.store.live()
        assert (throttle.state, throttle.domid) == ("active", pid)
        assert _chain(ns, pid) == {
            "ingress": True,
            "htb": True,
            "redirects": [f"jifb{pid}", f"jifb{pid}r"],
            "ifbs": [f"jifb{pid}", f"jifb{pid}r"],
            "tbfs": [f"jifb{pid}", f"jifb{pid}r"],
        }
        engine.reconcile()  # nothing drifted: stays as it is
        settle(app)
        assert engine.store.live()[0].state == "active"

        resolved = payload(alert("resolved", **labels))
        app.test_client().post("/alerts", data=resolved, headers=AUTH)
        clock.now += 2  # past hold.base
        settle(app)
        assert engine.store.live() == []
        assert _chain(ns, pid) == before
    finally:
        engine.stop()
        engine.store.close()
