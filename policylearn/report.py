"""The human reports: what learning chose and why, and what a backtest found."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence

from policylearn.backtest import Episode, by_domain
from policylearn.learn import LearnResult
from policylearn.signals import NOT_LEARNED


def when(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _n(value: float) -> str:
    if math.isnan(value):
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def learn_report(result: LearnResult) -> str:
    lines = [
        "# Learned thresholds",
        "",
        f"History {when(result.start)} to {when(result.end)} UTC"
        f" ({(result.end - result.start) / 86400:.1f} days), the highest value in each"
        f" {result.step:g} s step.",
        "",
        "Each threshold is the high quantile of those peaks times the margin, rounded up to two"
        " significant digits, then held between its floor (the shipped default times the floor"
        " factor, or the signal's absolute floor, whichever is higher) and its hard ceiling, and,"
        " when re-learning, within the drift allowed per period of the previous file. `bound`"
        " says which of these set the number.",
        "",
    ]
    for unit in result.units():
        items = [i for i in result.learned if i.unit == unit]
        members = items[0].members
        title = unit if members == (unit,) else f"group {unit}: {', '.join(members)}"
        lines += [f"## {title}", ""]
        lines += [
            "| policy/signal | default | q50 | q99 | q-high | max | threshold | x default"
            " | bound |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for item in items:
            s = item.summary
            values = sorted({d.value for d in item.decisions.values()})
            bounds = sorted({d.bound for d in item.decisions.values()})
            value_text = " / ".join(_n(v) for v in values)
            ratio = values[-1] / item.default if item.default else math.nan
            lines.append(
                f"| {item.signal.policy}/{item.signal.signal} | {_n(item.default)} | {_n(s.q50)}"
                f" | {_n(s.q99)} | {_n(s.high)} (q{s.high_quantile * 100:g}) | {_n(s.maximum)}"
                f" | **{value_text}** | {ratio:.2f} | {', '.join(bounds)} |"
            )
        lines.append("")
        for item in items:
            lines.append(
                f"- **{item.signal.policy}/{item.signal.signal}** ({item.signal.meaning};"
                f" {item.signal.unit}): {item.summary.count} samples,"
                f" {item.summary.coverage:.0%} of the window;"
                f" {item.summary.seasonality.describe()}."
            )
            reasons = {"; ".join(d.why) for d in item.decisions.values()}
            for reason in sorted(reasons):
                lines.append(f"  - {reason}")
        lines.append("")
    lines += ["## Not learned (hand-set in thresholds.yml)", ""]
    for (policy, signal), why in NOT_LEARNED.items():
        lines.append(f"- {policy}/{signal}: {why}")
    return "\n".join(lines) + "\n"


def backtest_report(
    runs: Mapping[str, Sequence[Episode]], start: float, end: float, step: float
) -> str:
    """`runs` maps a name (e.g. "shipped", "candidate") to its episodes."""
    lines = [
        "# Backtest",
        "",
        f"History {when(start)} to {when(end)} UTC ({(end - start) / 86400:.2f} days),"
        f" evaluated every {step:g} s.",
        "",
        "| thresholds | alerts fired | domains | time firing |",
        "|---|---|---|---|",
    ]
    for name, episodes in runs.items():
        firing = sum(e.duration(end) for e in episodes)
        domains = sorted({e.domain for e in episodes})
        lines.append(
            f"| {name} | {len(episodes)} | {len(domains)} ({', '.join(domains) or '-'})"
            f" | {firing / 60:.1f} min |"
        )
    for name, episodes in runs.items():
        lines += ["", f"## {name}", ""]
        if not episodes:
            lines.append("No alert would have fired.")
            continue
        lines += ["| domain | alert | count |", "|---|---|---|"]
        for domain, counts in sorted(by_domain(episodes).items()):
            for alert, count in sorted(counts.items()):
                lines.append(f"| {domain} | {alert} | {count} |")
        lines += [
            "",
            "| fired (UTC) | resolved | domain | instance | alert |",
            "|---|---|---|---|---|",
        ]
        for e in episodes[:200]:
            resolved = when(e.resolved_at) if e.resolved_at is not None else "(still firing)"
            lines.append(
                f"| {when(e.fired_at)} | {resolved} | {e.domain} | {e.instance} | {e.alert} |"
            )
        if len(episodes) > 200:
            lines.append(f"| ... {len(episodes) - 200} more | | | | |")
    return "\n".join(lines) + "\n"


def episodes_json(episodes: Sequence[Episode]) -> list[dict[str, object]]:
    return [
        {
            "alert": e.alert,
            "domain": e.domain,
            "instance": e.instance,
            "fired_at": e.fired_at,
            "resolved_at": e.resolved_at,
        }
        for e in episodes
    ]
