"""The evaluation's report: a table on the terminal, eval.json, and eval.png."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from xeneval.scoring import ScenarioScore

log = logging.getLogger(__name__)

MARKS = {
    "caught": "caught",
    "missed": "MISSED",
    "inconclusive": "INCONCLUSIVE (below bar)",
    "false_throttle": "FALSE",
    "spared": "spared",
}


def _harm_text(score: ScenarioScore) -> str:
    parts = []
    for guest in score.guests:
        if guest.harm is None:
            continue
        h = guest.harm
        bits = []
        if h["packets_received_extra"]:
            bits.append(f"+{h['packets_received_extra'] / 1000:.0f}k pkts in")
        if h["packets_sent_lost"]:
            bits.append(f"-{h['packets_sent_lost'] / 1000:.1f}k pkts out")
        if h["cpu_seconds_lost"] >= 0.1:
            bits.append(f"-{h['cpu_seconds_lost']:.1f} CPU s")
        if h["cpu_seconds_extra"] >= 0.1:
            bits.append(f"+{h['cpu_seconds_extra']:.1f} CPU s")
        parts.append(f"{guest.guest}: {', '.join(bits) or 'none'}")
    return "; ".join(parts) or "-"


def table(scores: Sequence[ScenarioScore], totals: Mapping[str, Any]) -> str:
    """Per scenario: each guest's verdict, time to throttle, victims' harm; then the totals."""
    header = f"{'scenario':<28} {'ok':<4} {'attackers':<30} {'others':<34} {'t->throttle':<12} harm"
    lines = [header, "-" * len(header)]
    for s in scores:
        attackers = [g for g in s.guests if g.expected == "throttled"]
        others = [g for g in s.guests if g.expected == "spared"]
        attacker_text = ", ".join(f"{g.guest} {MARKS[g.verdict]}" for g in attackers) or "-"
        flagged = [g for g in others if g.verdict == "false_throttle"]
        other_text = (
            ", ".join(f"{g.guest} FALSE" for g in flagged)
            + (", " if flagged else "")
            + f"{sum(1 for g in others if g.verdict == 'spared')}/{len(others)} spared"
        )
        times = [f"{g.time_to_throttle:.1f}s" for g in attackers if g.time_to_throttle is not None]
        ok = "ERR" if s.error else ("yes" if s.passed else ("?" if s.inconclusive else "NO"))
        lines.append(
            f"{s.scenario:<28} {ok:<4} {attacker_text:<30} {other_text:<34}"
            f" {' '.join(times) or '-':<12} {_harm_text(s)}"
        )
        for g in attackers:
            if g.achieved:
                a = g.achieved
                bar = g.bar or {}
                reached = ""
                if "saturated_share" in bar:
                    # A CPU hog: either ground of the policy (use or contention) will do.
                    word = "reached" if bar["reached"] else "NOT reached"
                    reached = (
                        f"; {bar['measure']} {bar['achieved']:g} (use bar {bar['threshold']:g}),"
                        f" share {bar['saturated_share']:g} of a saturated CPU"
                        f" (bar {bar['min_saturated_share']:g}): {word}"
                    )
                elif "achieved" in bar:
                    word = "above" if bar["reached"] else "NOT above"
                    reached = (
                        f"; {bar['measure']} {bar['achieved']:g} {word} bar {bar['threshold']:g}"
                    )
                lines.append(
                    f"{'':<33} {g.guest} achieved: {a['sent_pps'] / 1000:.1f} kpps sent,"
                    f" {a['cpu']:.2f} CPU s/s{reached}"
                )
            if g.after_throttle and g.after_throttle.get("shaped_pps"):
                t = g.after_throttle
                lines.append(
                    f"{'':<33} {g.guest} after throttle: offers {t['sent_pps'] / 1000:.1f} kpps,"
                    f" {t['shaped_pps'] / 1000:.2f} kpps"
                    f" ({t.get('shaped_bps', 0) / 1e6:.2f} Mbit/s) leave its shaping"
                )
        if s.error:
            lines.append(f"{'':<28} error: {s.error}")
    matrix = totals["confusion"]
    lines += [
        "",
        f"scenarios: {totals['scenarios']}, passed {totals['scenarios_passed']},"
        f" inconclusive {totals.get('scenarios_inconclusive', 0)}, errors {totals['errors']}",
        "confusion matrix (guests):       throttled   not throttled",
        f"  attackers (should be throttled) {matrix['caught']:>9}   {matrix['missed']:>13}"
        f"   (+{matrix.get('inconclusive', 0)} inconclusive: attack below its bar)",
        f"  others    (should be spared)    {matrix['false_throttle']:>9}   {matrix['spared']:>13}",
    ]
    for name, t in totals["time_to_throttle"].items():
        lines.append(
            f"time to throttle, {name:<8} n={t['count']:<3} median {t['median']:.1f} s,"
            f" min {t['min']:.1f} s, max {t['max']:.1f} s"
        )
    return "\n".join(lines)


def evasion_table(evasion: Mapping[str, Any]) -> str:
    """Per profile: the verdict on the goals (forms together), then per form that judges alone
    or together (each evidence's forms, and all) the largest undetected duty per period and
    peak, and the sustained rate and latency."""
    profiles = evasion.get("profiles", {})
    periods = evasion.get("settings", {}).get("periods", [])
    lines = [
        f"{'profile':<24} {'goal':<5} {'max undetected duty':>19} {'max undetected avg':>18}"
        f" {'max undetected rate':>20} {'latency (for:)':>15}",
        "-" * 106,
    ]
    for name, data in profiles.items():
        summary = data["summary"]
        goal = "ok" if summary["goal_met"] else "MISS"
        latency = summary["latency_at_top_factor"]
        lat = "never" if latency is None else f"{latency:.0f} s"
        lines.append(
            f"{name:<24} {goal:<5} {_pct(summary['largest_undetected_duty_at_top_peak']):>19}"
            f" {summary['largest_undetected_average']:>16.2f}x"
            f" {_num(summary['sustained_max_undetected']):>20}"
            f" {lat + ' (' + format(summary['for_seconds'], 'g') + ' s)':>15}"
        )
    lines.append("")
    lines.append(
        "largest duty cycle never throttled, per pulse period (peak in thresholds; '-' = none"
        " throttled up to 100 %)"
    )
    header = f"{'profile / forms':<44} {'peak':>5} " + " ".join(f"{p:>5g}s" for p in periods)
    lines += [header, "-" * len(header)]
    for name, data in profiles.items():
        for form, result in data["forms"].items():
            if len(result["alerts"]) == 1 and len(data["forms"]) > 1:
                continue  # single alerts are in eval.json
            for peak in sorted({r["peak_factor"] for r in result["pulsing"]}, reverse=True):
                rows = {r["period"]: r for r in result["pulsing"] if r["peak_factor"] == peak}
                cells = " ".join(f"{_duty(rows[p]) if p in rows else '':>6}" for p in periods)
                lines.append(f"{name + ' / ' + form:<44} {peak:>4g}x {cells}")
    uncovered = evasion.get("uncovered") or []
    if uncovered:
        lines.append(f"NOT SEARCHED (no profile): {', '.join(uncovered)}")
    return "\n".join(lines)


def _duty(row: Mapping[str, Any]) -> str:
    return "-" if row["min_detected_duty"] is None else _pct(row["max_undetected_duty"])


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1e6:.1f} M" if value >= 1e6 else f"{value:g}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f} %"


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def plot(path: Path, scores: Sequence[ScenarioScore], evasion: Mapping[str, Any] | None) -> bool:
    """eval.png: time to throttle per scenario (misses and false throttles marked), and the
    evasion curves; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no %s (pip install '.[demo]')", path.name)
        return False
    panels = 2 if evasion and evasion.get("profiles") else 1
    height = max(4.0, 0.28 * len(scores) + 1.5)
    fig, axes = plt.subplots(1, panels, figsize=(7 * panels + 2, height), squeeze=False)
    ax = axes[0][0]
    names = [s.scenario for s in scores]
    for row, s in enumerate(scores):
        times = [g.time_to_throttle for g in s.guests if g.time_to_throttle is not None]
        missed = s.count("missed")
        false = s.count("false_throttle")
        unsure = s.count("inconclusive")
        if times:
            ax.barh(row, max(times), color="tab:green")
        notes = []
        if missed:
            notes.append(f"MISSED {missed}")
        if false:
            notes.append(f"FALSE THROTTLE {false}")
        if unsure:
            notes.append(f"inconclusive {unsure} (below bar)")
        if s.error:
            notes.append("error")
        if not notes and not times:
            notes.append("spared")
        colour = "tab:red" if missed or false or s.error else "tab:gray"
        ax.text(
            (max(times) if times else 0) + 1,
            row,
            ", ".join(notes),
            va="center",
            color=colour,
            fontsize=8,
        )
    longest = max((g.time_to_throttle or 0.0 for s in scores for g in s.guests), default=0.0)
    ax.set_xlim(0, max(60.0, longest + 25))
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_ylim(len(names) - 0.5, -0.5)
    ax.set_xlabel("seconds from attack start to throttle in place")
    ax.set_title("Scenarios: time to throttle; misses and false throttles")
    if panels == 2 and evasion is not None:
        ax2 = axes[0][1]
        for name, data in evasion["profiles"].items():
            form = data["forms"].get("any") or next(iter(data["forms"].values()))
            top = max(r["peak"] for r in form["pulsing"])
            rows = [r for r in form["pulsing"] if r["peak"] == top]
            ax2.plot(
                [r["period"] for r in rows],
                [100 * r["max_undetected_duty"] for r in rows],
                marker="o",
                label=f"{name} ({rows[0]['peak_factor']:g}x)",
            )
        ax2.axhline(25, color="tab:red", linestyle="--", linewidth=1)
        ax2.set_xscale("log")
        ax2.set_xlabel("pulse period (s)")
        ax2.set_ylabel("largest duty cycle never throttled (%)")
        ax2.set_ylim(0, 105)
        ax2.set_title("Evasion: pulsing at the top peak, every form (goal: < 25 %)")
        ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
