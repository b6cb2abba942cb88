"""The UDP flood sweep: what a packet costs the CPU that sends it, and the one that receives it.

A ping flood cannot tell the two halves of a packet's cost apart (each side sends one packet
and receives one per ping). A UDP flood can: guest3 sends, guest2's sink only receives. Each
run is WINDOW_SECONDS of iperf 2's 64-byte datagrams at a rate (or flat out), once alone and
once beside a busy loop on the sender's vCPU (a vCPU that is never idle is never woken), each
framed by snapshots. The table is per datagram, beyond a quiet window's rates (docs/lab.md,
"UDP flood sweep"; xensim/model.py cites it).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from xenlab.measure import cpu_rate, excess_rate, take_snapshot, window
from xenlab.paths import LabPaths
from xenlab.vm import Lab, booted, standard_guests

log = logging.getLogger(__name__)

SENDER, RECEIVER = "guest3", "guest2"
WINDOW_SECONDS = 10
SETTLE_SECONDS = 3.0
# name -> (iperf rate or None for flat out, datagram bytes, busy loop beside it)
RUNS: dict[str, tuple[str | None, int, bool]] = {
    "100/s": ("100pps", 64, False),
    "300/s": ("300pps", 64, False),
    "1000/s": ("1000pps", 64, False),
    "flat out": (None, 64, False),
    "100/s + busy loop": ("100pps", 64, True),
    "300/s + busy loop": ("300pps", 64, True),
    "flat out, 1400 bytes": (None, 1400, False),
}
COUNTERS = ("interrupts", "ipis", "apic_timer", "context_switches", "scheduler_runs")


def sweep(lab: Lab) -> dict[str, Any]:
    vifs = {name: lab.vif(name) for name in (SENDER, RECEIVER)}
    target = lab.guest(RECEIVER).ip
    seconds = str(WINDOW_SECONDS)
    lab.guest_command(RECEIVER, "serve", str(len(RUNS) * 20 + 120))
    lab.guest_command(SENDER, "ping", target, "3")
    before = take_snapshot(lab, vifs)
    time.sleep(WINDOW_SECONDS)
    windows = {"quiet": window(before, take_snapshot(lab, vifs), vifs)}
    for name, (rate, size, busy) in RUNS.items():
        before = take_snapshot(lab, vifs)
        if busy:
            lab.guest_command(SENDER, "cpu", seconds)
        words = ["udpflood", target, seconds, str(size)] + ([rate] if rate else [])
        log.info("%s: %s", name, lab.guest_command(SENDER, *words).strip())
        time.sleep(WINDOW_SECONDS)
        windows[name] = window(before, take_snapshot(lab, vifs), vifs)
        time.sleep(SETTLE_SECONDS)
    return windows


def per_datagram(windows: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per run and side: datagrams/s, the vCPU's busy share, and each counter per
    datagram beyond the quiet window's rate on that side's CPU."""
    quiet = windows["quiet"]
    rows = []
    for name, w in windows.items():
        if name == "quiet":
            continue
        for side, domain, stat in (("send", SENDER, "rx_packets"), ("receive", RECEIVER,
                                                                    "tx_packets")):  # fmt: skip
            rate = w["vifs"][domain][stat] / w["seconds"]
            cpu = w["domain_cpu"][domain]
            row: dict[str, Any] = {
                "run": name,
                "side": side,
                "datagrams_per_second": round(rate, 1),
                "busy": round(cpu_rate(w, domain), 2),
            }
            for counter in COUNTERS:
                excess = excess_rate(w, quiet, counter, cpu)
                row[counter] = round(excess / rate, 3) if rate > 0 else None
            rows.append(row)
    return rows


def render(rows: list[dict[str, Any]]) -> str:
    head = ["run", "side", "datagrams_per_second", "busy", *COUNTERS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(r[k]) for k in head) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def run_sweep(paths: LabPaths, out: Path) -> str:
    out.mkdir(parents=True, exist_ok=True)
    with booted(paths, guests=standard_guests(3), hypervisor="perfc") as lab:
        windows = sweep(lab)
    (out / "udp-sweep.json").write_text(json.dumps(windows, indent=1))
    table = render(per_datagram(windows))
    (out / "udp-sweep.md").write_text(table)
    return table
