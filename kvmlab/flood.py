"""The KVM lab's end-to-end checks, one boot: KVM's per-VM statistics and the taps' counters
under a real ping flood between two KVM guests, and the remediator's tc chain shaping the
flooder's tap for real. `python -m kvmlab test-flood` and tests/kvmlab/test_kvmlab_e2e.py.

The retry policy: a whole run (boot, measurements) that hit an emulation fault (L1 panicked,
an L2's QEMU died, something stopped answering or did not boot in time: EmulationFault) is
run again from a fresh L1, up to `attempts` runs in all. Every fault is kept and reported
(paths.retries_file and the result's "faults"); a failed command or a wrong measurement is
never retried.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

from kvmlab.paths import KvmLabPaths
from kvmlab.vm import EmulationFault, KvmLab, booted, standard_guests
from xenlab.vm import LabError

log = logging.getLogger(__name__)

# Cumulative per-VM KVM statistics (debugfs: /sys/kernel/debug/kvm/<pid>-<fd>/<stat>).
STATS = ("exits", "irq_injections", "halt_exits", "halt_wakeup", "io_exits", "mmio_exits",
         "irq_exits", "irq_window_exits")  # fmt: skip
TAP_COUNTERS = ("rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "rx_dropped", "tx_dropped")
IDLE_SECONDS = 10.0
FLOOD_COUNT, FLOOD_SECONDS = 2500, 15
SHAPE_SIZE, SHAPE_SECONDS = 1000, 10  # ICMP payload bytes: ~1.3 Mbit/s at ~160 pps
SHAPE_RATE_KBIT = 50
IFB = "kvmlabifb0"


def parse_ping_summary(text: str) -> dict[str, float]:
    """iputils ping's summary ("2500 packets transmitted, 2500 received, 0% packet loss, time
    15012ms") -> transmitted, received, seconds and pps (transmitted per second)."""
    match = re.search(
        r"(\d+) packets transmitted, (\d+) received.*?time (\d+)ms", text, flags=re.DOTALL
    )
    if match is None:
        raise ValueError(f"no ping summary in {text!r}")
    sent, received, millis = (int(g) for g in match.groups())
    seconds = millis / 1000
    return {
        "transmitted": sent,
        "received": received,
        "seconds": seconds,
        "pps": sent / seconds if seconds else 0.0,
    }


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in after if k in before}


def _snapshot(lab: KvmLab, dirs: dict[str, str]) -> dict[str, Any]:
    return lab.snapshot(dirs, STATS, TAP_COUNTERS)


def _window(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    seconds = after["at"] - before["at"]
    return {
        "seconds": round(seconds, 2),
        "stats": {n: delta(after["stats"][n], before["stats"][n]) for n in after["stats"]},
        "taps": {n: delta(after["taps"][n], before["taps"][n]) for n in after["taps"]},
    }


def _flood(lab: KvmLab, src: str, dst_ip: str, count: int, seconds: int, size: int) -> str:
    """A bounded flood ping from guest `src`; returns its summary once it ended. L1 is left
    alone while it runs (each look is a process in L1, whose vCPUs are emulated)."""
    lab.l2_command(src, "pingflood", dst_ip, str(count), str(seconds), str(size))
    time.sleep(seconds)
    deadline = time.monotonic() + 60
    while True:
        try:
            out = lab.l2_command(src, "result", timeout=20)
        except LabError as error:
            raise EmulationFault(f"{src} stopped answering during a flood: {error}") from error
        if "rc=" in out:
            return out
        if time.monotonic() > deadline:
            raise EmulationFault(f"{src}'s flood ping did not end in {seconds + 60}s")
        time.sleep(2)


def _shape(lab: KvmLab, tap: str) -> list[list[str]]:
    """The remediator's chain on a tap: ingress (what the guest sends) + u32 match-all +
    mirred redirect to an ifb, whose root tbf holds the rate."""
    chain = [
        ["ip", "link", "add", IFB, "type", "ifb"],
        ["ip", "link", "set", IFB, "up"],
        ["tc", "qdisc", "add", "dev", IFB, "root", "tbf", "rate", f"{SHAPE_RATE_KBIT}kbit",
         "burst", "4kb", "latency", "50ms"],
        ["tc", "qdisc", "add", "dev", tap, "handle", "ffff:", "ingress"],
        ["tc", "filter", "add", "dev", tap, "parent", "ffff:", "protocol", "ip", "u32",
         "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", IFB],
    ]  # fmt: skip
    for argv in chain:
        lab.run(*argv).check(" ".join(argv))
    return chain


def _unshape(lab: KvmLab, tap: str) -> None:
    lab.run("tc", "qdisc", "del", "dev", tap, "ingress").check("tc qdisc del ingress")
    lab.run("ip", "link", "del", IFB).check(f"ip link del {IFB}")


def measure(lab: KvmLab) -> dict[str, Any]:
    """The checks on a booted lab with guests l2a (the flooder) and l2b (its target)."""
    flooder, target = lab.guests[0], lab.guests[1]
    result: dict[str, Any] = {"timings": dict(lab.timings), "l1_pid": lab.state.pid}
    lab.check_alive("boot")
    result["l2_pids"] = {g.name: lab.l2_pid(g.name) for g in lab.guests}
    result["scopes"] = {
        g.name: lab.run("cat", f"{g.scope}/cgroup.procs").stdout.split() for g in lab.guests
    }
    dirs: dict[str, str] = {}
    for g in lab.guests:
        found = lab.stats_dir(g.name)
        if found is None:
            raise LabError(f"no debugfs stats dir for {g.name} (pid {result['l2_pids'][g.name]})")
        dirs[g.name] = found
    result["stats_dirs"] = dirs
    result["ping"] = lab.l2_command(flooder.name, "ping", target.ip, "3")
    # idle: both guests do nothing
    idle_start = _snapshot(lab, dirs)
    time.sleep(IDLE_SECONDS)
    idle_end = _snapshot(lab, dirs)
    result["idle"] = _window(idle_start, idle_end)
    lab.check_alive("idle window")
    # the flood: l2a flood-pings l2b, bounded by count and deadline
    before = _snapshot(lab, dirs)
    summary = _flood(lab, flooder.name, target.ip, FLOOD_COUNT, FLOOD_SECONDS, 56)
    after = _snapshot(lab, dirs)
    result["flood"] = {**_window(before, after), "ping": parse_ping_summary(summary)}
    lab.check_alive("flood")
    # shaping: the same large-packet flood unshaped, then with the chain on l2a's tap;
    # the rate is what reaches l2b (its tap's transmit counters)
    shaping: dict[str, Any] = {"rate_kbit": SHAPE_RATE_KBIT}
    for phase in ("unshaped", "shaped"):
        if phase == "shaped":
            _shape(lab, flooder.tap)
        before = _snapshot(lab, dirs)
        summary = _flood(lab, flooder.name, target.ip, 100_000, SHAPE_SECONDS, SHAPE_SIZE)
        after = _snapshot(lab, dirs)
        ping = parse_ping_summary(summary)
        window = _window(before, after)
        shaping[phase] = {
            "ping": ping,
            "sent_bytes": window["taps"][flooder.name]["rx_bytes"],
            "delivered_bytes": window["taps"][target.name]["tx_bytes"],
            "delivered_kbit_s": round(
                window["taps"][target.name]["tx_bytes"] * 8 / 1000 / ping["seconds"], 1
            ),
        }
        if phase == "shaped":
            shaping["tc"] = lab.run("tc", "-s", "qdisc", "show", "dev", IFB).stdout
            _unshape(lab, flooder.tap)
        lab.check_alive(f"{phase} flood")
    result["shaping"] = shaping
    return result


def run_checks(paths: KvmLabPaths, *, attempts: int = 2) -> dict[str, Any]:
    """Boots the lab (two guests), measures, stops it; a run that hit an emulation fault is run
    again from a fresh L1 (module docstring). The record of attempts is written to
    paths.retries_file whatever happens."""
    faults: list[str] = []
    record: dict[str, Any] = {"attempts": 0, "retries": 0, "faults": faults, "l1_pids": []}
    started = time.monotonic()
    try:
        for attempt in range(1, attempts + 1):
            record["attempts"] = attempt
            try:
                with booted(paths, guests=standard_guests(2)) as lab:
                    record["l1_pids"].append(lab.state.pid)
                    result = measure(lab)
                break
            except EmulationFault as error:
                faults.append(f"run {attempt}/{attempts}: {str(error)[:3000]}")
                log.warning("emulation fault in run %d/%d: %s", attempt, attempts, error)
                if attempt == attempts:
                    raise
        record["retries"] = record["attempts"] - 1
        result.update(record)
        result["wall_s"] = round(time.monotonic() - started, 1)
        paths.last_run_file.write_text(json.dumps(result, indent=1))
        return result
    finally:
        record["retries"] = max(0, record["attempts"] - 1)
        record["wall_s"] = round(time.monotonic() - started, 1)
        paths.run.mkdir(parents=True, exist_ok=True)
        paths.retries_file.write_text(json.dumps(record, indent=1))
