"""The lab demo's report: report.md (and report.png when matplotlib is there) from results."""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from statistics import median_low
from typing import Any

from xenlab.calibrate import Row, as_dicts, calibrate

log = logging.getLogger(__name__)

ROLES = (("guest1", "attacker"), ("guest2", "victim"), ("guest3", "idle"), ("Domain-0", "Dom0"))


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _load(results: dict[str, Any], when: str) -> str:
    values = (results.get("host_load") or {}).get(when)
    return "/".join(f"{v:.1f}" for v in values) if values else "-"


def _tc_text(tc: Any) -> str:
    if isinstance(tc, dict):
        return "\n".join(str(tc.get(k, "")).strip() for k in ("qdiscs", "ingress_filters"))
    return str(tc or "").strip()


WINDOWS = ("baseline", "flood", "flood_until_shaped", "shaped")


def render(results: dict[str, Any]) -> str:
    windows = results["windows"]
    names = [n for n in WINDOWS if n in windows]
    timeline = results.get("timeline") or {}
    failed_boots = results.get("failed_boots") or []
    lines = [
        "# Judicator on real Xen 4.17 (perf counters) under QEMU: the published experiment",
        "",
        f"guest1 ping-floods guest2 (iputils `ping -f -s {results.get('flood_payload_bytes', '-')}`"
        f", link MTU {results.get('mtu', '-')}); guest3 idles. Phase 1 measures",
        "with a quiet Dom0 (windows `baseline`, `flood`). Phase 2: Dom0 runs the exporter",
        "(libxenctrl reader) and the remediator; Prometheus and Alertmanager run beside the VM",
        "with the shipped rules and the lab's thresholds (xenlab/thresholds.yml); guest1 floods",
        "again (`flood_until_shaped`) until tc acts (`shaped`). Software emulation: absolute",
        "rates are far below hardware; compare ratios.",
        "",
        f"Boot (QEMU start to three guests up): {_fmt(results.get('boot_seconds'), 0)} s; "
        f"whole run {_fmt(results.get('total_seconds'), 0)} s. Failed starts retried (one "
        f"retry allowed): {len(failed_boots)}. Host load average (1, 5, 15 min) at the start "
        f"{_load(results, 'start')}, at the end {_load(results, 'end')}."
        + "".join(f"\n- failed start: {f.splitlines()[0]}" for f in failed_boots),
        "",
        "## Detection",
        "",
        f"- phase 2: {results.get('error') or 'completed'}",
        f"- alert: `{timeline.get('alert')}` on guest1",
        f"- pending {_fmt(timeline.get('pending_after_s'), 1)} s, firing "
        f"{_fmt(timeline.get('firing_after_s'), 1)} s, tc on guest1's vif "
        f"{_fmt(timeline.get('shaped_after_s'), 1)} s after the flood started",
        f"- the victim's vif shaped by: {results.get('victim_shaped_by') or 'nothing'}",
        "",
        *_policy_inputs(results),
        "## Flood rate (guest1's vif in Dom0)",
        "",
        "| window | seconds | echo requests/s sent by guest1 | replies/s to guest1 | kbit/s |",
        "|---|---|---|---|---|",
    ]
    for name in names:
        w = windows[name]
        vif = w["vifs"]["guest1"]
        seconds = w["seconds"]
        lines.append(
            f"| {name} | {seconds:.1f} | {vif['rx_packets'] / seconds:.1f} | "
            f"{vif['tx_packets'] / seconds:.1f} | {vif['rx_bytes'] * 8 / seconds / 1000:.0f} |"
        )
    lines += [
        "",
        "## Perf counters per physical CPU (per second)",
        "",
        "| counter | window | " + " | ".join(f"{r} (CPU)" for _, r in ROLES) + " |",
        "|---|---|" + "---|" * len(ROLES),
    ]
    for key in ("interrupts", "ipis", "apic_timer", "context_switches", "mmu_update"):
        for name in names:
            w = windows[name]
            cells = []
            for domain, _ in ROLES:
                cpu = w["domain_cpu"].get(domain)
                values = w["cpu_counters"].get(key, [])
                ok = cpu is not None and cpu < len(values)
                cells.append(f"{values[cpu] / w['seconds']:.0f} ({cpu})" if ok else "-")
            lines.append(f"| {key} | {name} | " + " | ".join(cells) + " |")
    lines += ["", "## CPU seconds per second (xl list)", "", "| window | "
              + " | ".join(r for _, r in ROLES) + " |", "|---|" + "---|" * len(ROLES)]  # fmt: skip
    for name in names:
        w = windows[name]
        cells = [_fmt(w["cpu_seconds"].get(d, 0.0) / w["seconds"], 3) for d, _ in ROLES]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    actions = results.get("xl_actions", {})
    lines += [
        "",
        "## xl actions on a real domain (guest3)",
        "",
        f"- `xl sched-credit2 -d guest3 -c 25`: cap read back {actions.get('cap_after_set')}",
        f"- `xl pause guest3`: state {actions.get('state_after_pause')}; `xl unpause`: "
        f"{actions.get('state_after_unpause')}",
        "",
        *_workloads(results),
        "## tc after the throttle (every qdisc; guest1's vif's ingress filters)",
        "",
        "```",
        _tc_text(results.get("tc_on_attacker_vif")),
        "```",
        "",
        "## Calibration (docs/lab.md)",
        "",
        "| quantity | lab | simulator | how |",
        "|---|---|---|---|",
    ]
    for row in _calibration(results):
        lines.append(f"| {row.quantity} | {_fmt(row.lab)} | {_fmt(row.simulator)} | {row.how} |")
    return "\n".join(lines) + "\n"


def _workloads(results: dict[str, Any]) -> list[str]:
    """The other workload kinds, run by guest3 (guest2 serves), per second of each window."""
    windows = results.get("workloads") or {}
    if not windows and not results.get("workloads_error"):
        return []
    lines = ["## The other workloads in the real guests (guest3; guest2 serves)", ""]
    if results.get("workloads_error"):
        lines += [f"- failed: {results['workloads_error']}", ""]
    lines += ["| workload | seconds | packets/s sent | kbit/s sent | disk requests/s | CPU s/s | "
              "interrupts/s | page faults/s | mmu_update/s |",
              "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, w in windows.items():
        seconds, vif = w["seconds"], w["vifs"].get("guest3", {})
        vbd = w.get("vbds", {}).get("guest3")
        disk = f"{(vbd['rd_req'] + vbd['wr_req']) / seconds:.0f}" if vbd else "-"
        cpu = w["domain_cpu"].get("guest3")
        counters = [w["cpu_counters"].get(k, []) for k in ("interrupts", "page_faults",
                                                            "mmu_update")]  # fmt: skip
        cells = [f"{c[cpu] / seconds:.0f}" if cpu is not None and cpu < len(c) else "-"
                 for c in counters]  # fmt: skip
        lines.append(
            f"| {name} | {seconds:.1f} | {vif.get('rx_packets', 0) / seconds:.0f} | "
            f"{vif.get('rx_bytes', 0) * 8 / seconds / 1000:.0f} | {disk} | "
            f"{w['cpu_seconds'].get('guest3', 0.0) / seconds:.2f} | " + " | ".join(cells) + " |"
        )
    return [*lines, ""]


SIGNALS = ("sent_packets", "initiated", "interrupts", "context_switches", "page_table_operations")


def _policy_inputs(results: dict[str, Any]) -> list[str]:
    """Median of each flood policy input per domain between the flood's start and the throttle
    (or the end): what the rules compared with the lab's thresholds."""
    series = results.get("figure_series") or {}
    timeline = results.get("timeline") or {}
    start = timeline.get("flood_start")
    if not series or start is None:
        return []
    shaped = timeline.get("shaped_after_s")
    end = start + shaped if shaped is not None else float("inf")
    lines = ["Phase 2, median per domain from the flood's start to the throttle (10 s rates):",
             "", "| input | " + " | ".join(r for _, r in ROLES) + " |",
             "|---|" + "---|" * len(ROLES)]  # fmt: skip
    for key in SIGNALS:
        by_domain = series.get(key, {})
        cells = []
        for domain, _ in ROLES:
            values = [v for t, v in by_domain.get(domain, []) if start <= t <= end]
            cells.append(f"{median_low(values):.1f}" if values else "-")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    durations = sorted(v for points in series.get("scrape_duration", {}).values()
                       for t, v in points if start <= t <= end)  # fmt: skip
    ups = [v for points in series.get("up", {}).values() for t, v in points if start <= t <= end]
    if durations and ups:
        lines += [
            "",
            f"Scrapes of Dom0's exporter meanwhile: median {median_low(durations):.2f}"
            f" s, longest {durations[-1]:.2f} s; up in {sum(ups) / len(ups):.0%} of samples.",
        ]
    return [*lines, ""]


def _calibration(results: dict[str, Any]) -> list[Row]:
    udp_flood = (results.get("workloads") or {}).get("udpflood")
    return calibrate(results["windows"], udp_flood)


def write_report(results: dict[str, Any], out: Path) -> None:
    (out / "report.md").write_text(render(results))
    (out / "calibration.json").write_text(json.dumps(as_dicts(_calibration(results)), indent=1))
    with contextlib.suppress(ImportError):
        _figure(results, out / "report.png")
    log.info("report: %s", out / "report.md")


def _figure(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = results.get("figure_series", {})
    if not series or "timeline" not in results:
        return
    start = results["timeline"]["flood_start"]
    fig, axes = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    panels = (
        (axes[0], "sent_packets", "packets sent per s (vif, 10 s rate)"),
        (axes[1], "interrupts", "perfc #interrupts per s, domain's CPU"),
    )
    for ax, key, title in panels:
        for domain, points in sorted(series.get(key, {}).items()):
            ax.plot([t - start for t, _ in points], [v for _, v in points], label=domain)
        ax.set_title(title)
        ax.legend(loc="upper right", fontsize=8)
        for mark in ("firing_after_s", "shaped_after_s"):
            moment = results["timeline"].get(mark)
            if moment is not None:
                ax.axvline(moment, linestyle="--", color="grey")
    axes[1].set_xlabel("seconds since the flood started (dashed: alert firing, tc applied)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
