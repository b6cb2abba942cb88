"""What the simulator assumes, measured on the real hypervisor: per-packet costs and baselines.

Pure arithmetic on the demo's windows (xenlab.measure.window): the flood window's per-second
rates minus the quiet baseline's, divided by the flood's packet rate. Emulation inflates
absolute CPU time, so CPU is reported as ratios (victim / attacker, Dom0 / victim); event
counts per packet are counts, which emulation slows but does not multiply.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from xenlab.measure import counter_rate, cpu_rate, excess_rate
from xensim import model

ATTACKER, VICTIM, IDLE, DOM0 = "guest1", "guest2", "guest3", "Domain-0"


@dataclass(frozen=True)
class Row:
    quantity: str
    lab: float | None
    simulator: float | None
    how: str


def _sim(table: Mapping[str, float], *names: str) -> float:
    return sum(table.get(n, 0.0) for n in names)


MODELLED_HYPERCALLS = (
    (model.HYPERCALL_EVENT_CHANNEL_OP, "event_channel_op"),
    (model.HYPERCALL_GRANT_TABLE_OP, "grant_table_op"),
    (model.HYPERCALL_SCHED_OP, "sched_op"),
)


def _hypercall_rate(window: Mapping[str, Any], number: int) -> float:
    values = window.get("hypercalls_by_index") or []
    return float(values[number]) / float(window["seconds"]) if number < len(values) else 0.0


PER_PACKET_COUNTERS = (
    ("interrupts", "#interrupts"),
    ("ipis", "#IPIs"),
    ("context_switches", "sched: context switches"),
    ("scheduler_runs", "sched: runs through scheduler"),
)


def calibrate(
    windows: Mapping[str, Mapping[str, Any]], udp_flood: Mapping[str, Any] | None = None
) -> list[Row]:
    """Rows of the calibration table from the `baseline` and `flood` windows, and the sending
    half of a packet's cost from guest3's UDP flood window, if there is one."""
    base, flood = windows["baseline"], windows["flood"]
    cpus = flood["domain_cpu"]
    a, v, i = cpus[ATTACKER], cpus[VICTIM], cpus[IDLE]
    packets = float(flood["vifs"][ATTACKER]["rx_packets"]) / float(flood["seconds"])
    rows = [Row("ping flood rate (echo requests/s, attacker's vif)", packets, None,
                "vif rx_packets of guest1's vif in Dom0 over the flood window")]  # fmt: skip
    if packets <= 0:
        return rows
    sent, received = model.GUEST_PER_SENT_PACKET, model.GUEST_PER_RECEIVED_PACKET
    for key, name in PER_PACKET_COUNTERS:
        simulated = _sim(sent, name) + _sim(received, name)  # each side sends 1, receives 1
        rows.append(Row(f"attacker CPU: {name} per ping (request out, reply in)",
                        excess_rate(flood, base, key, a) / packets, simulated,
                        f"(flood - baseline) per s on CPU {a} / pings per s"))  # fmt: skip
        rows.append(Row(f"victim CPU: {name} per ping (request in, reply out)",
                        excess_rate(flood, base, key, v) / packets, simulated,
                        f"(flood - baseline) per s on CPU {v} / pings per s"))  # fmt: skip
    rows.append(Row("attacker CPU: apic timer interrupts per s during the flood",
                    counter_rate(flood, "apic_timer", a), None,
                    f"flood window, CPU {a}"))  # fmt: skip
    rows.append(Row("victim CPU: apic timer interrupts per s during the flood",
                    counter_rate(flood, "apic_timer", v), None,
                    f"flood window, CPU {v}"))  # fmt: skip
    hypercalls = (flood["hypercalls_all_cpus"] / flood["seconds"]
                  - base["hypercalls_all_cpus"] / base["seconds"]) / packets  # fmt: skip
    simulated_hc = 2 * (sum(model.HYPERCALLS_PER_SENT_PACKET.values())
                        + sum(model.HYPERCALLS_PER_RECEIVED_PACKET.values()))  # fmt: skip
    rows.append(Row("hypercalls per ping, all CPUs (both guests and Dom0)", hypercalls,
                    simulated_hc, "stock perfc sums the hypercalls array over CPUs"))  # fmt: skip
    # The hypercalls the model charges per packet, each a guest's packet sent or received
    # (a ping is two of each: request and reply); the split between sending and receiving is
    # not measurable here (the array is summed over CPUs).
    for number, name in MODELLED_HYPERCALLS:
        per_ping = (_hypercall_rate(flood, number) - _hypercall_rate(base, number)) / packets
        simulated = (model.HYPERCALLS_PER_SENT_PACKET.get(number, 0.0)
                     + model.HYPERCALLS_PER_RECEIVED_PACKET.get(number, 0.0))  # fmt: skip
        rows.append(Row(f"{name} per packet sent + per packet received, all CPUs",
                        per_ping / 2, simulated,
                        "(flood - baseline) per s of the array / pings per s / 2"))  # fmt: skip
    cpu_a = cpu_rate(flood, ATTACKER) - cpu_rate(base, ATTACKER)
    cpu_v = cpu_rate(flood, VICTIM) - cpu_rate(base, VICTIM)
    cpu_0 = cpu_rate(flood, DOM0) - cpu_rate(base, DOM0)
    rows.append(Row("victim CPU time / attacker CPU time (flood - baseline)",
                    cpu_v / cpu_a if cpu_a > 0 else None, 0.0,
                    "xl list Time(s) deltas; the simulator's victim spends 0.0 s"))  # fmt: skip
    rows.append(Row("Dom0 CPU time / victim CPU time (flood - baseline)",
                    cpu_0 / cpu_v if cpu_v > 0 else None, None,
                    "xl list Time(s); Dom0 also runs the exporter and remediator"))  # fmt: skip
    for key, name, sim in (("interrupts", "#interrupts", "#interrupts"),
                           ("apic_timer", "apic timer interrupts", "apic timer interrupts"),
                           ("context_switches", "sched: context switches",
                            "sched: context switches")):  # fmt: skip
        simulated = _sim(model.CPU_BASELINE_PER_SECOND, sim) + _sim(
            model.DOMAIN_BASELINE_PER_SECOND, sim
        )
        rows.append(Row(f"idle guest's CPU: {name} per s", counter_rate(base, key, i), simulated,
                        f"baseline window, CPU {i} (guest3 idle)"))  # fmt: skip
    rows.append(Row("idle guest CPU seconds per s (emulated)", cpu_rate(base, IDLE),
                    model.GUEST_CPU_BASELINE, "xl list Time(s), baseline"))  # fmt: skip
    if udp_flood is not None:
        rows += _udp_sender(udp_flood, base)
    return rows


def _udp_sender(flood: Mapping[str, Any], base: Mapping[str, Any]) -> list[Row]:
    """A packet's sending half: guest3 floods UDP and nothing comes back, so what its CPU takes
    beyond the quiet baseline is per datagram sent (its busy CPU's timer apart)."""
    i = flood["domain_cpu"][IDLE]
    datagrams = float(flood["vifs"][IDLE]["rx_packets"]) / float(flood["seconds"])
    rows = [Row("UDP flood rate (datagrams/s, guest3's vif)", datagrams, None,
                "vif rx_packets of guest3's vif over its UDP flood window"),
            Row("UDP flood sender's vCPU busy (CPU s/s, emulated)", cpu_rate(flood, IDLE), None,
                "xl list Time(s)")]  # fmt: skip
    if datagrams <= 0:
        return rows
    timer = excess_rate(flood, base, "apic_timer", i)
    for key, name in PER_PACKET_COUNTERS:
        excess = excess_rate(flood, base, key, i) - (timer if key == "interrupts" else 0.0)
        rows.append(Row(f"UDP sender CPU: {name} per datagram sent"
                        + (" (beyond its timer's)" if key == "interrupts" else ""),
                        excess / datagrams, _sim(model.GUEST_PER_SENT_PACKET, name),
                        f"(UDP flood - baseline) per s on CPU {i} / datagrams per s"))  # fmt: skip
    return rows


def as_dicts(rows: list[Row]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]
