"""The remediator under faults on the simulated host: tc and xl failing or hanging, the state
database locked or on a full disk, the domain rebooting while throttled. Afterwards the host
and the record agree, nothing is throttled that should not be, and every failure shows in the
metrics and the log.
"""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.remediator.helpers import alert, payload
from tests.remediator.simhost import INSTANCE, Host, Launcher
from tests.support import sim, wait_for

pytestmark = [pytest.mark.host, pytest.mark.slow]

SHAPE = {"domain": "guest1", "instance": INSTANCE, "rate": "256kbit", "burst": "16kb"}
CAP = {"domain": "guest2", "instance": INSTANCE, "remediation": "cpu_cap", "cap": "20"}


def _clean(host: Host) -> bool:
    vif = f"vif{host.domid('guest1')}.0"
    return not host.shaped(vif) and not [n for n in host.links() if n.startswith("jifb")]


@pytest.mark.parametrize(
    ("mode", "error"), [("fail", "injected failure of tc"), ("hang", "timed out after")]
)
def test_tc_failing_or_hanging_mid_apply_is_rolled_back_recorded_and_counted(
    host: Host, servers: Launcher, mode: str, error: str
) -> None:
    server = servers.start()
    servers.wrappers.arm(2, mode)  # tc -batch (tbf on the ifb...), after ip -batch (add, up)
    assert server.post(payload(alert(fingerprint="4444444444444444", **SHAPE)))[0] == 200
    wait_for(lambda: server.records() == [], 20, "the failed apply to end")
    (record,) = server.records(everything=True)
    assert (record["state"], record["end_reason"]) == ("failed", "apply_failed")
    assert error in record["error"], record
    assert _clean(host), "the rollback left shaping behind"
    assert server.metric(
        "judicator_remediator_actions_total", kind="network_shape", phase="apply", result="failed"
    ) == 1  # fmt: skip
    assert "apply failed" in server.log.read_text() and error in server.log.read_text()
    # The rollback undid exactly what had been done: the ifb went again.
    assert servers.wrappers.steps()[2:] == [f"ip link del dev jifb{host.domid('guest1')}"]


def test_xl_failing_leaves_the_cap_as_it_was(host: Host, servers: Launcher) -> None:
    host.xl("sched-credit2", "-d", "guest2", "-c", "80")
    server = servers.start()
    servers.wrappers.arm(1, "fail")
    assert server.post(payload(alert(fingerprint="5555555555555555", **CAP)))[0] == 200
    wait_for(lambda: server.records() == [], 20, "the failed apply to end")
    (record,) = server.records(everything=True)
    assert record["state"] == "failed" and "injected failure of xl" in record["error"]
    assert host.cap("guest2") == 80
    assert server.metric(
        "judicator_remediator_actions_total", kind="cpu_cap", phase="apply", result="failed"
    ) == 1  # fmt: skip


def test_a_locked_state_database_answers_503_then_the_retry_acts(
    host: Host, servers: Launcher
) -> None:
    server = servers.start()
    lock = sqlite3.connect(str(servers.workdir / "state.db"), isolation_level=None)
    try:
        lock.execute("BEGIN EXCLUSIVE")
        started = time.monotonic()
        body = payload(alert(fingerprint="6666666666666666", **SHAPE))
        status, answer = server.post(body, timeout=30)
        waited = time.monotonic() - started
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert (status, answer["reason"]) == (503, "state store unavailable"), answer
    print(f"locked: 503 after {waited:.1f}s")
    assert 9 <= waited <= 15, waited  # sqlite's busy timeout, then Alertmanager may retry
    assert servers.wrappers.steps() == [] and _clean(host)
    assert server.metric("judicator_remediator_payloads_total", result="store_error") == 1
    assert "cannot record alerts" in server.log.read_text()
    # Alertmanager's retry:
    assert server.post(payload(alert(fingerprint="6666666666666666", **SHAPE)))[0] == 200
    wait_for(lambda: [r for r in server.records() if r["state"] == "active"], 20, "active")


@contextlib.contextmanager
def tiny_filesystem(path: Path) -> Iterator[Path]:
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "rel-full", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_full_disk_answers_503_runs_nothing_then_recovers(
    host: Host, servers: Launcher, tmp_path: Path
) -> None:
    with tiny_filesystem(tmp_path / "tiny") as tiny:
        servers.write_config(state_path=str(tiny / "state.db"))
        server = servers.start()
        filler = tiny / "filler"
        with contextlib.suppress(OSError), filler.open("wb") as out:
            for _ in range(4096):  # at most 4 MiB into a 2 MiB filesystem
                out.write(b"\0" * 1024)
                out.flush()
        status, answer = server.post(payload(alert(fingerprint="7777777777777777", **SHAPE)))
        assert (status, answer.get("reason")) == (503, "state store unavailable"), answer
        assert servers.wrappers.steps() == [] and _clean(host)
        assert server.metric("judicator_remediator_payloads_total", result="store_error") == 1
        filler.unlink()
        assert server.post(payload(alert(fingerprint="7777777777777777", **SHAPE)))[0] == 200
        wait_for(lambda: [r for r in server.records() if r["state"] == "active"], 20, "active")
        server.post(payload(alert("resolved", fingerprint="7777777777777777", **SHAPE)))
        wait_for(lambda: server.records() == [], 20, "the release")
        assert _clean(host)
        servers.stop_all()


def test_a_domain_rebooting_while_throttled_is_throttled_again_then_released(
    host: Host, servers: Launcher
) -> None:
    server = servers.start()
    assert server.post(payload(alert(fingerprint="8888888888888888", **SHAPE)))[0] == 200
    wait_for(lambda: [r for r in server.records() if r["state"] == "active"], 20, "active")
    old = host.domid("guest1")
    sim("reboot", "--name", host.name, "guest1")
    new = host.domid("guest1")
    assert new != old

    def rethrottled() -> bool:
        (record,) = server.records()
        return record["state"] == "active" and record["domid"] == new

    wait_for(rethrottled, 20, "the new incarnation to be throttled")
    assert host.redirects(f"vif{new}.0") == 1
    wait_for(lambda: f"jifb{old}" not in host.links(), 10, "the old incarnation's ifb to go")
    assert "rebooted, re-applying" in server.log.read_text()
    server.post(payload(alert("resolved", fingerprint="8888888888888888", **SHAPE)))
    wait_for(lambda: server.records() == [], 20, "the release")
    assert _clean(host)
    (record,) = server.records(everything=True)
    assert (record["state"], record["end_reason"]) == ("released", "resolved")
