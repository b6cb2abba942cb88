"""Snapshots of the real hypervisor's counters and the per-window arithmetic on them.

A snapshot is `xenperf -f`, `xl list`, `xl vcpu-list` and each watched vif's and disk's
counters, read in Dom0 at one moment; a window is the difference of two snapshots, per physical
CPU (xenperf's per-CPU counters, in online-CPU order, which here is CPU id order) and per domain
(CPU seconds, vif packets, disk requests). Parsing goes through xentools, as the product's does.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from xenlab.vm import Lab
from xentools.xenperf import CounterKind, parse_xenperf
from xentools.xl import parse_list, parse_vcpu_list

VIF_STATS = ("rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "rx_dropped", "tx_dropped")
VBD_STATS = ("rd_req", "wr_req", "rd_sect", "wr_sect")
# xenperf counter names (Xen 4.17 perfc_defn.h) used by the report and the calibration.
COUNTERS = {
    "interrupts": "#interrupts",
    "ipis": "#IPIs",
    "apic_timer": "apic timer interrupts",
    "context_switches": "sched: context switches",
    "scheduler_runs": "sched: runs through scheduler",
    "mmu_update": "calls to mmu_update",
    "page_faults": "page faults",
}


@dataclass(frozen=True)
class Snapshot:
    at: float
    xenperf: str
    xl_list: str
    vcpu_list: str
    vifs: dict[str, dict[str, int]]
    vbds: dict[str, dict[str, int]]


def take_snapshot(
    lab: Lab, vifs: Mapping[str, str], vbds: Mapping[str, str] | None = None
) -> Snapshot:
    """`vifs` maps a domain name to its vif in Dom0, `vbds` to its disk's backend device."""
    at = time.time()
    xenperf = lab.run("xenperf", "-f").check("xenperf -f").stdout
    xl_list = lab.xl("list").check("xl list").stdout
    vcpu_list = lab.xl("vcpu-list").check("xl vcpu-list").stdout
    vif_stats = {
        domain: _read_stats(lab, f"/sys/class/net/{vif}/statistics", VIF_STATS)
        for domain, vif in vifs.items()
    }
    vbd_stats = {
        domain: _read_stats(lab, f"/sys/bus/xen-backend/devices/{vbd}/statistics", VBD_STATS)
        for domain, vbd in (vbds or {}).items()
    }
    return Snapshot(at, xenperf, xl_list, vcpu_list, vif_stats, vbd_stats)


def _read_stats(lab: Lab, directory: str, names: tuple[str, ...]) -> dict[str, int]:
    values = lab.run("cat", *(f"{directory}/{n}" for n in names)).check(directory).stdout.split()
    return {n: int(v) for n, v in zip(names, values, strict=True)}


def per_cpu(text: str) -> dict[str, list[int]]:
    snapshot = parse_xenperf(text)
    found: dict[str, list[int]] = {}
    for key, name in COUNTERS.items():
        try:
            counter = snapshot.counter(name)
        except KeyError:
            continue
        if counter.kind is CounterKind.PER_CPU:
            found[key] = list(counter.values)
    return found


def hypercalls_by_index(text: str) -> list[int]:
    """All CPUs' hypercalls, by hypercall number (stock perfc sums the array over CPUs)."""
    try:
        return list(parse_xenperf(text).counter("hypercalls").values)
    except KeyError:
        return []


def counter_rate(window: Mapping[str, Any], key: str, cpu: int) -> float:
    """A window's per-CPU counter `key` on `cpu`, per second (0 where the window lacks it)."""
    values = window["cpu_counters"].get(key)
    if values is None or cpu >= len(values):
        return 0.0
    return float(values[cpu]) / float(window["seconds"])


def excess_rate(window: Mapping[str, Any], base: Mapping[str, Any], key: str, cpu: int) -> float:
    """What `window` took per second beyond the `base` window's rate."""
    return counter_rate(window, key, cpu) - counter_rate(base, key, cpu)


def cpu_rate(window: Mapping[str, Any], domain: str) -> float:
    """The domain's CPU seconds per second over the window."""
    return float(window["cpu_seconds"].get(domain, 0.0)) / float(window["seconds"])


def _deltas(
    a: Mapping[str, Mapping[str, int]], b: Mapping[str, Mapping[str, int]], names: tuple[str, ...]
) -> dict[str, dict[str, int]]:
    return {d: {n: b[d][n] - a[d][n] for n in names} for d in b if d in a}


def window(a: Snapshot, b: Snapshot, vifs: Mapping[str, str]) -> dict[str, Any]:
    """Deltas between two snapshots: per CPU, per domain, per vif; and each domain's pCPU."""
    seconds = b.at - a.at
    counters_a, counters_b = per_cpu(a.xenperf), per_cpu(b.xenperf)
    cpu = {
        key: [y - x for x, y in zip(counters_a[key], counters_b[key], strict=True)]
        for key in counters_a
        if key in counters_b
    }
    times_a = {d.name: d.cpu_seconds for d in parse_list(a.xl_list)}
    times_b = {d.name: d.cpu_seconds for d in parse_list(b.xl_list)}
    pinned = {v.name: v.cpu for v in parse_vcpu_list(b.vcpu_list) if v.cpu is not None}
    # (a hypercall first counted between the two has no earlier value: it is left out)
    hypercalls = [
        y - x
        for x, y in zip(
            hypercalls_by_index(a.xenperf), hypercalls_by_index(b.xenperf), strict=False
        )
    ]
    watched = {d: b.vifs[d] for d in vifs if d in b.vifs}
    return {
        "seconds": round(seconds, 2),
        "cpu_counters": cpu,
        "hypercalls_all_cpus": sum(hypercalls),
        "hypercalls_by_index": hypercalls,
        "cpu_seconds": {
            name: round(times_b[name] - times_a[name], 2) for name in times_b if name in times_a
        },
        "domain_cpu": pinned,
        "vifs": _deltas(a.vifs, watched, VIF_STATS),
        "vbds": _deltas(a.vbds, b.vbds, VBD_STATS),
    }
