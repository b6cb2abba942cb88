"""Authentication, secrets, escaping and resource limits on the real server (hypercorn in the
simulated host's Dom0): no request without the token changes anything, the token is never
written to the log or the state file, the status page escapes what it shows, a bounded flood
neither exhausts memory nor starves a throttle in progress, and throttles beyond the host-wide
cap are refused and recorded.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.remediator.helpers import TOKEN, alert, payload
from tests.remediator.simhost import (
    INSTANCE,
    Host,
    Launcher,
    Server,
)
from tests.support import wait_for

pytestmark = [pytest.mark.host, pytest.mark.slow]

SHAPE = {"domain": "guest1", "instance": INSTANCE, "rate": "256kbit", "burst": "16kb"}
WRONG_TOKEN = "Wr0ng-t0ken-that-must-never-be-logged"


def _rss(server: Server) -> int:
    total = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.getpgid(int(entry)) == server.process.pid:
                    for line in Path(f"/proc/{entry}/status").read_text().splitlines():
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1]) * 1024
    return total


def test_without_the_token_nothing_changes_and_no_token_is_ever_logged(
    host: Host, servers: Launcher
) -> None:
    server = servers.start()
    body = payload(alert(fingerprint="9999999999999999", **SHAPE))
    basic = base64.b64encode(f"admin:{TOKEN}".encode()).decode()
    attempts = [
        ("POST", "/alerts", {}),
        ("POST", "/alerts", {"Authorization": f"Bearer {WRONG_TOKEN}"}),
        ("POST", "/alerts", {"Authorization": f"Bearer {TOKEN[:-1]}"}),
        ("POST", "/alerts", {"Authorization": f"Bearer {TOKEN}x"}),
        ("POST", "/alerts", {"Authorization": f"Bearer  {TOKEN}"}),
        ("POST", "/alerts", {"Authorization": f"Basic {basic}"}),
        ("POST", "/alerts", {"Authorization": TOKEN}),
        ("POST", "/alerts", {"Authorization": "Bearer " + "A" * 8000}),
        ("POST", f"/alerts?token={TOKEN}", {}),
        ("POST", f"/alerts?access_token={TOKEN}", {"X-Token": TOKEN}),
        ("GET", "/", {"Authorization": f"Bearer {WRONG_TOKEN}"}),
        ("GET", "/metrics", {}),
        ("POST", "/-/ready", {}),
        ("POST", "/-/healthy", {}),
        ("PUT", "/alerts", {}),
    ]
    statuses = []
    for method, path, headers in attempts:
        status, _ = server.request(method, path, body, headers)
        statuses.append(status)
    assert set(statuses) <= {401, 405, 400, 431}, statuses
    assert statuses.count(401) >= 11, statuses
    time.sleep(2.5)  # a reconcile interval: nothing may happen later either
    assert server.records(everything=True) == []
    assert [d for d in server.decisions() if d["decision"] != "rejected"] == []
    assert servers.wrappers.steps() == []
    assert server.metric("judicator_remediator_payloads_total", result="unauthorized") >= 11

    # With the token it acts; the token still appears nowhere.
    assert server.post(body)[0] == 200
    wait_for(lambda: [r for r in server.records() if r["state"] == "active"], 20, "active")
    server.post(payload(alert("resolved", fingerprint="9999999999999999", **SHAPE)))
    wait_for(lambda: server.records() == [], 20, "the release")
    state = (servers.workdir / "state.db").read_bytes()
    for secret in (TOKEN, WRONG_TOKEN, basic):
        assert secret not in server.log.read_text(), "a token was written to the log"
        assert secret.encode() not in state, "a token was written to the state file"


def test_the_status_page_escapes_everything_it_shows(host: Host, servers: Launcher) -> None:
    server = servers.start()
    hostile = {
        "alertname": '<script>alert("name")</script>',
        "summary": "<b>x</b>",
    }
    assert server.post(payload(alert(fingerprint="aaaaaaaaaaaaaaaa", **SHAPE, **hostile)))[0] == 200
    refused = alert(
        fingerprint="bbbbbbbbbbbbbbbb",
        instance=INSTANCE,
        domain="<img src=x onerror=alert(1)>",
        alertname='"><svg onload=alert(2)>',
    )
    assert server.post(payload(refused))[0] == 200
    wait_for(lambda: [r for r in server.records() if r["state"] == "active"], 20, "active")
    status, page = server.get("/")
    assert status == 200
    for raw in ("<script>", "<img", "<svg", "<b>x"):
        assert raw not in page, raw
    assert "&lt;script&gt;" in page and "&lt;img src=x" in page and "&lt;svg onload" in page
    server.post(payload(alert("resolved", fingerprint="aaaaaaaaaaaaaaaa", **SHAPE, **hostile)))
    wait_for(lambda: server.records() == [], 20, "the release")


def test_a_bounded_flood_starves_no_throttle_and_the_cap_refuses_and_records(
    host: Host, servers: Launcher
) -> None:
    servers.write_config(limits={"max_active_throttles": 2, "max_request_bytes": 65536})
    server = servers.start()
    servers.wrappers.arm(1, "slow")  # each host change takes 1 s: the apply is in progress
    shape = payload(alert(fingerprint="cccccccccccccccc", **SHAPE))
    started = time.monotonic()
    assert server.post(shape)[1]["alerts"][0]["decision"] == "accepted"
    bodies = [
        b"{not json at all",
        shape,  # duplicates of the throttle in progress
        b'{"version": "4", "alerts": [' + b'{"x": "' + b"y" * 70_000 + b'"}]}',  # too large
        payload(alert(fingerprint="dddddddddddddddd", domain="guest2", instance="other:10170")),
    ]
    rss_before = _rss(server)

    def send(index: int) -> tuple[int, float]:
        begun = time.monotonic()
        try:
            status, _ = server.request(
                "POST", "/alerts", bodies[index % 4],
                {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
            )  # fmt: skip
        except OSError:
            status = 0
        return status, time.monotonic() - begun

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(send, range(2000)))
    flood_seconds = time.monotonic() - started
    statuses = collections.Counter(status for status, _ in results)
    slowest = max(seconds for _, seconds in results)
    rss_after = _rss(server)
    print(f"flood: {dict(statuses)} in {flood_seconds:.1f}s, slowest {slowest:.2f}s, "
          f"rss {rss_before / 2**20:.1f} -> {rss_after / 2**20:.1f} MiB")  # fmt: skip
    assert not [s for s in statuses if s >= 500 or s == 0], statuses
    assert statuses[200] == 1000 and statuses[400] == 500, statuses
    assert statuses[413] + statuses[400] == 1000, statuses  # a cut huge body may be 400
    assert rss_after - rss_before < 32 * 2**20, (rss_before, rss_after)

    wait_for(lambda: [r for r in server.records() if r["state"] == "active"], 30, "active")
    assert time.monotonic() - started < 45, "the flood starved the throttle in progress"
    assert len(servers.wrappers.steps()) == 2  # applied once (ip -batch, tc -batch), whatever came

    servers.wrappers.disarm()
    cap = {"domain": "guest2", "instance": INSTANCE, "remediation": "cpu_cap", "cap": "20"}
    pause = {"domain": "guest3", "instance": INSTANCE, "remediation": "pause"}
    assert server.post(payload(alert(fingerprint="eeeeeeeeeeeeeeee", **cap)))[1]["alerts"][0][
        "decision"
    ] == "accepted"  # fmt: skip
    answer = server.post(payload(alert(fingerprint="ffffffffffffffff", **pause)))[1]
    assert answer["alerts"][0] == {
        "alertname": "VmNetworkFlood", "decision": "refused", "domain": "guest3",
        "fingerprint": "ffffffffffffffff", "reason": "throttle_limit", "status": "firing",
    }  # fmt: skip
    (recorded,) = [d for d in server.decisions() if d["fingerprint"] == "ffffffffffffffff"]
    assert (recorded["decision"], recorded["reason"]) == ("refused", "throttle_limit")
    assert server.metric("judicator_remediator_refusals_total", reason="throttle_limit") == 1
    assert not host.paused("guest3")
