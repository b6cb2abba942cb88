"""The demo's report: a Markdown table of the phases, timeline.json and a PNG of the run."""

from __future__ import annotations

import json
from pathlib import Path

from xensim.demo.scenarios import (
    MEASURES,
    PHASE_TITLES,
    PHASES,
    Result,
    fmt,
    role_measures,
    role_names,
)


def table(result: Result) -> str:
    """The phases' figures as a Markdown table, with the latencies and the verdict."""
    scenario = result.scenario
    roles = role_names(scenario)
    rows = []
    keys: list[tuple[str, str]] = []
    if scenario.remediation == "network_shape":
        keys.append(("attacker", "vif_pps"))
    keys += [k for k in role_measures(scenario) if k != ("attacker", "sent_pps")]
    if scenario.victim:
        keys.append(("victim", "vif_pps"))
    header = "| " + " | ".join(["", *(PHASE_TITLES[p] for p in PHASES)]) + " |"
    rows.append(header)
    rows.append("|" + "---|" * (len(PHASES) + 1))
    for role, measure in keys:
        label = "packets sent/s (on its vif)" if measure == "vif_pps" else MEASURES[measure].label
        cells = [fmt(result.phase_value(p, role, measure)) for p in PHASES]
        rows.append(f"| {role} {roles[role]}: {label} | " + " | ".join(cells) + " |")
    lines = ["\n".join(rows), ""]
    lines.append(f"- detection latency (abuse start -> alert firing): {_latency(result, 'firing')}")
    lines.append(
        f"- remediation latency (abuse start -> {scenario.remediation} in place):"
        f" {_latency(result, 'throttled')}"
    )
    lines.append(f"- alert resolved: {_latency(result, 'resolved')} after the abuse started")
    lines.append(f"- throttle released: {_latency(result, 'released')} after the abuse started")
    lines.append(f"- policies fired: {', '.join(sorted(result.fired)) or 'none'}")
    if result.collector_failures:
        lines.append(
            f"- exporter collector failures seen by Prometheus: {result.collector_failures}"
            " (collector-scrapes with xen_exporter_collector_success 0)"
        )
    lines.append("")
    for check in result.checks:
        lines.append(f"- [{'x' if check.ok else ' '}] {check.what}: {check.detail}")
    if result.error:
        lines.append(f"- error: {result.error}")
    verdict = "PROTECTED" if result.protected else "NOT PROTECTED"
    lines.append(f"\nVerdict: {verdict}")
    return "\n".join(lines)


def _latency(result: Result, event: str) -> str:
    value = result.since_start(event)
    return "never" if value is None else f"{value:.1f} s"


def write_report(result: Result) -> None:
    """report.md, timeline.json and (with matplotlib) report.png in the output directory."""
    if result.output_dir is None:
        return
    out = result.output_dir
    (out / "report.md").write_text(
        f"# Judicator demo: {result.scenario.name}\n\n{result.scenario.title}\n\n"
        + table(result)
        + "\n"
    )
    (out / "timeline.json").write_text(
        json.dumps(
            {
                "scenario": result.scenario.name,
                "events": result.events,
                "thresholds": result.thresholds,
                "series": {f"{r}/{m}": points for (r, m), points in result.series.items()},
                "checks": [c.__dict__ for c in result.checks],
                "error": result.error,
            },
            indent=1,
        )
    )
    if result.settings.plot:
        result.report_png = plot(result, out / "report.png")


def plot(result: Result, path: Path) -> Path | None:
    """Rates over time, the policy thresholds and the moments of firing, throttling and release."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        result.settings.say("(matplotlib is not installed: no PNG; `pip install .[demo]`)")
        return None
    scenario = result.scenario
    roles = role_names(scenario)
    origin = result.events.get("abuse_start") or result.events.get("stack_ready", 0.0)
    panels: list[list[tuple[str, str]]] = []
    if scenario.remediation == "network_shape":
        panels.append([("attacker", "vif_pps"), ("victim", "received_pps")])
    panels.append([("attacker", m) for m in scenario.attacker_measures if m != "sent_pps"])
    others = [("victim", m) for m in scenario.victim_measures if m != "received_pps"]
    panels.append([*others, ("bystander", "interrupts")])
    figure, axes = plt.subplots(len(panels), 1, figsize=(11, 3.2 * len(panels)), sharex=True)
    colours = {"attacker": "tab:red", "victim": "tab:blue", "bystander": "tab:green"}
    styles = ["-", "--", ":"]
    for axis, keys in zip(axes, panels, strict=True):
        for index, (role, measure) in enumerate(keys):
            points = result.series.get((role, measure), [])
            if not points:
                continue
            label = "packets sent/s (vif)" if measure == "vif_pps" else MEASURES[measure].label
            axis.plot(
                [t - origin for t, _ in points],
                [v for _, v in points],
                styles[index % len(styles)],
                color=colours[role],
                label=f"{roles[role]} ({role}): {label}",
            )
            threshold = result.thresholds.get("sent_pps" if measure == "vif_pps" else measure)
            if role == "attacker" and threshold is not None:
                axis.axhline(threshold, color="grey", linestyle="-.", linewidth=1)
                axis.annotate(
                    f"policy threshold {fmt(threshold)} {label}",
                    (0, threshold),
                    xytext=(4, 3),
                    textcoords="offset points",
                    fontsize=8,
                    color="grey",
                )
        axis.set_yscale("symlog", linthresh=10)
        axis.set_ylim(bottom=0)
        axis.grid(True, alpha=0.3)
        axis.legend(loc="upper right", fontsize=8)
        for event, colour in (
            ("abuse_start", "black"),
            ("firing", "orange"),
            ("throttled", "red"),
            ("abuse_stop", "black"),
            ("resolved", "purple"),
            ("released", "green"),
        ):
            at = result.events.get(event)
            if at is not None:
                axis.axvline(at - origin, color=colour, linestyle="--", linewidth=1)
    for event in ("abuse_start", "firing", "throttled", "abuse_stop", "resolved", "released"):
        at = result.events.get(event)
        if at is not None:
            axes[0].annotate(
                event.replace("_", " "),
                (at - origin, 1),
                xycoords=("data", "axes fraction"),
                rotation=90,
                va="top",
                ha="right",
                fontsize=8,
            )
    axes[-1].set_xlabel("seconds since the abuse started")
    verdict = "victim protected" if result.protected else "victim NOT protected"
    axes[0].set_title(f"Judicator demo: {scenario.title} — {verdict}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
