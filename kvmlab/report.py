"""The KVM lab experiment's report: report.md (and report.png with matplotlib) from results."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ROLES = (("l2a", "attacker"), ("l2b", "victim"))
WINDOWS = (
    ("baseline", "quiet, no Judicator"),
    ("flood", "flood, no Judicator"),
    ("until_shaped", "flood until shaped"),
    ("shaped", "flood, shaped"),
)
COLUMNS = (
    ("sent_kbit_s", "sent kbit/s"),
    ("sent_pps", "sent pkt/s"),
    ("received_kbit_s", "received kbit/s"),
    ("received_pps", "received pkt/s"),
    ("irq_injections", "KVM injections/s"),
    ("halt_wakeup", "halt wake-ups/s"),
    ("exits", "exits/s"),
)


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _load(results: Mapping[str, Any], when: str) -> str:
    values = (results.get("host_load") or {}).get(when)
    return "/".join(f"{v:.1f}" for v in values) if values else "-"


def _window_rows(results: Mapping[str, Any]) -> list[str]:
    windows = dict(results.get("windows") or {})
    for name in ("until_shaped", "shaped"):
        if name in results:
            windows[name] = results[name]
    lines = [
        "| window | guest | " + " | ".join(title for _, title in COLUMNS) + " |",
        "| --- | --- | " + " | ".join("---:" for _ in COLUMNS) + " |",
    ]
    for window, title in WINDOWS:
        if window not in windows:
            continue
        guests = windows[window].get("guests", {})
        for name, role in ROLES:
            row = guests.get(name)
            if row is None:
                continue
            cells = " | ".join(_fmt(row.get(key)) for key, _ in COLUMNS)
            lines.append(
                f"| {title} ({windows[window]['seconds']} s) | {name} ({role}) | {cells} |"
            )
    return lines


def delivered_kbit_s(results: Mapping[str, Any], window: str) -> float | None:
    """What the flood delivered to the victim in a window (its tap's transmit), kbit/s. Not
    the attacker's tap's receive: a tap counts what its guest sent before the ingress qdisc
    redirects it to the shaper, so that count goes on at the guest's own pace."""
    found = (results.get("windows") or {}).get(window) or results.get(window)
    try:
        return float(found["guests"]["l2b"]["received_kbit_s"])  # type: ignore[index]
    except (KeyError, TypeError):
        return None


def _ratio(after: float | None, before: float | None) -> float | None:
    return after / before if after is not None and before else None


def render(results: Mapping[str, Any]) -> str:
    timeline = results.get("timeline") or {}
    faults = results.get("faults") or []
    actions = results.get("kvmctl_actions") or {}
    timings = results.get("timings") or {}
    unshaped, until, shaped = (
        delivered_kbit_s(results, w) for w in ("flood", "until_shaped", "shaped")
    )
    lines = [
        "# Judicator on real KVM guests (nested under QEMU): the published experiment",
        "",
        "l2a ping-floods l2b (iputils `ping -f -s "
        f"{results.get('flood_payload_bytes', '-')}`, link MTU {results.get('mtu', '-')}). "
        "Two real KVM guests "
        "(Debian's qemu-system-x86 `-enable-kvm`) in a KVM host (L1) that runs under QEMU's "
        "software emulation. Phase 1 measures with nothing of Judicator running (`quiet`, "
        "`flood`); phase 2 runs the exporter (`--platform=kvm`) and the remediator "
        "(`platform: kvm`) in L1, Prometheus and Alertmanager beside it with the shipped rules "
        "and the lab's thresholds (kvmlab/thresholds.yml), and l2a floods again until tc acts. "
        "Rates per second from KVM's debugfs statistics and the taps' counters. Emulation: "
        "absolute rates are far below hardware; compare ratios.",
        "",
        f"L1 boot {_fmt(timings.get('l1_boot_s'), 0)} s, guests up "
        f"{_fmt(timings.get('l2_boot_s'), 0)} s later; the run "
        f"{_fmt(results.get('run_seconds'), 0)} s. Runs: {results.get('runs', '-')} "
        "(retried after an emulation fault: "
        f"{results.get('retries', 0)}). Host load average at the start {_load(results, 'start')}, "
        f"at the end {_load(results, 'end')}.",
        "",
    ]
    if results.get("error"):
        lines += [f"**The experiment failed:** {results['error']}", ""]
    lines += ["## Detection and shaping", ""]
    lines += [
        f"- policy that fired first: {timeline.get('alert') or 'none'}",
        f"- after the flood started: pending {_fmt(timeline.get('pending_after_s'))} s, firing "
        f"{_fmt(timeline.get('firing_after_s'))} s, l2a's tap shaped "
        f"{_fmt(timeline.get('shaped_after_s'))} s (through {timeline.get('shaper') or '-'})",
        f"- what the flood delivers to l2b: {_fmt(unshaped)} kbit/s unshaped with L1 quiet, "
        f"{_fmt(until)} kbit/s with the exporter and remediator running in L1 until shaped, "
        f"{_fmt(shaped)} kbit/s shaped (the policy's rate: 1mbit); shaped / until shaped "
        f"{_fmt(_ratio(shaped, until), 2)}",
        f"- the victim l2b shaped: {results.get('victim_shaped_by') or 'no'}",
        "",
        "## Rates",
        "",
        *_window_rows(results),
        "",
        "## The remediator's other KVM actions (judicator-kvmctl, on l2b after the flood)",
        "",
    ]
    if actions:
        lines += [
            f"- cap 25 %: its cgroup's cpu.max `{actions.get('cpu_max_after_cap')}`; uncapped: "
            f"`{actions.get('cpu_max_after_uncap')}`",
            f"- paused (QMP stop), as listed: {actions.get('listed_after_pause')}; continued: "
            f"{actions.get('listed_after_unpause')}; answers: "
            f"`{actions.get('answers_after_unpause')}`",
        ]
    else:
        lines.append(f"- not done: {results.get('kvmctl_error') or 'not reached'}")
    if faults:
        lines += ["", "## Emulation faults (each run retried from a fresh L1)", ""]
        lines += [f"- {fault.splitlines()[0][:300]}" for fault in faults]
    tc = results.get("tc") or {}
    if tc:
        lines += ["", "## tc on L1 after shaping", "", "```", str(tc.get("qdiscs", "")).strip()]
        lines += [str(tc.get("ingress_filters", "")).strip(), "```"]
    return "\n".join(lines) + "\n"


def write_report(results: Mapping[str, Any], out: Path) -> None:
    (out / "report.md").write_text(render(results))
    with contextlib.suppress(ImportError):
        _figure(results, out / "report.png")
    log.info("report: %s", out / "report.md")


def _figure(results: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = results.get("figure_series") or {}
    timeline = results.get("timeline") or {}
    if not series or "flood_start" not in timeline:
        return
    start = timeline["flood_start"]
    fig, axes = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    panels = (
        (
            axes[0],
            "sent_kbit_s",
            "kbit/s each guest sends (its tap, 10 s rate): l2b answers what reaches it",
        ),
        (axes[1], "irq_injections", "KVM interrupt injections per s (10 s rate)"),
    )
    for ax, key, title in panels:
        for domain, points in sorted(series.get(key, {}).items()):
            ax.plot([t - start for t, _ in points], [v for _, v in points], label=domain)
        ax.set_title(title)
        ax.legend(loc="upper right", fontsize=8)
        for mark in ("firing_after_s", "shaped_after_s"):
            moment = timeline.get(mark)
            if moment is not None:
                ax.axvline(moment, linestyle="--", color="grey")
    axes[1].set_xlabel("seconds since the flood started (dashed: alert firing, tc applied)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
