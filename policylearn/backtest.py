"""Replaying history against thresholds: which alerts would have fired, for whom, and when.

    episodes = alert_episodes(points, step=2, for_seconds=15, keep_firing_for_seconds=30)

Prometheus evaluates each shipped alert's expression, rewritten for the candidate thresholds
(policylearn.promql), as a range query at the evaluation interval; the pulsing forms' counting
over two minutes is part of that expression. What Prometheus's rule manager adds on top is
done here, the way Prometheus 2.42 does it (rules/alerting.go): a series present at an
evaluation becomes pending, fires once it has been present at every evaluation for `for:`, and a
firing alert whose series disappears keeps firing for `keep_firing_for` (counted from the first
evaluation without it) before it resolves; a pending one that disappears is dropped.
"""

from __future__ import annotations

import bisect
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from policylearn.prom import PrometheusClient, parse_matrix, query_range_chunked
from policylearn.promql import AlertRule, PromQLError, Rewriter, RuleSet, referenced

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Episode:
    alert: str
    domain: str
    instance: str
    fired_at: float
    # The evaluation at which it resolved; None if still firing at the end of the window.
    resolved_at: float | None

    def duration(self, end: float) -> float:
        return (self.resolved_at if self.resolved_at is not None else end) - self.fired_at


def alert_episodes(
    times: Sequence[float], step: float, for_seconds: float, keep_firing_for_seconds: float
) -> list[tuple[float, float | None]]:
    """[(fired_at, resolved_at or None)] of one series present at `times` (sorted evaluation
    instants, `step` apart; an instant missing from `times` is an evaluation without it)."""
    episodes: list[tuple[float, float | None]] = []
    if not times:
        return episodes
    # Tolerate float noise in the timestamps Prometheus returns.
    eps = step / 1000
    t = times[0]
    # The last evaluation that can resolve it: keep_firing_for after the first one without it.
    end = times[-1] + keep_firing_for_seconds + 2 * step
    active_at: float | None = None
    fired_at: float | None = None
    missing_since: float | None = None
    keys = {round(x / step) for x in times}
    while t <= end + eps:
        here = round(t / step) in keys
        if here:
            missing_since = None
            if active_at is None:
                active_at = t
            if fired_at is None and t - active_at >= for_seconds - eps:
                fired_at = t
        else:
            if fired_at is not None:
                if missing_since is None:
                    missing_since = t
                if keep_firing_for_seconds > 0 and t - missing_since < (
                    keep_firing_for_seconds - eps
                ):
                    t += step
                    continue
                episodes.append((fired_at, t))
            active_at = fired_at = missing_since = None
            # Jump to the next evaluation with the series, if any.
            i = bisect.bisect_right(times, t + eps)
            if i >= len(times):
                break
            t = times[i]
            continue
        t += step
    if fired_at is not None:
        episodes.append((fired_at, None))
    return episodes


def _clip(
    episodes: list[tuple[float, float | None]], end: float
) -> list[tuple[float, float | None]]:
    # A resolution after the window's end is "still firing at the end".
    return [(f, r if r is not None and r <= end else None) for f, r in episodes if f <= end]


def run_alert(
    client: PrometheusClient,
    rule: AlertRule,
    rewriter: Rewriter,
    start: float,
    end: float,
    step: float,
) -> list[Episode]:
    expr = rewriter.rewrite_alert(rule.expr)
    series = query_range_chunked(client, expr, start, end, step)
    out = []
    for labels, points in series:
        label_map = dict(labels)
        times = [t for t, _ in points]
        for fired, resolved in _clip(
            alert_episodes(times, step, rule.for_seconds, rule.keep_firing_for_seconds), end
        ):
            out.append(
                Episode(
                    rule.alert,
                    label_map.get("domain", ""),
                    label_map.get("instance", ""),
                    fired,
                    resolved,
                )
            )
    return out


def run_backtest(
    client: PrometheusClient,
    rules: RuleSet,
    tables: Mapping[str, Sequence[tuple[Mapping[str, str], float]]],
    start: float,
    end: float,
    step: float,
    alerts: Sequence[str] = (),
    severity: str | None = "remediate",
) -> list[Episode]:
    """Every episode of the chosen alerts (default: those that remediate) over [start, end]."""
    plain = Rewriter(rules, tables, step)
    chosen = [
        r
        for r in rules.alerts
        if (not alerts or r.alert in alerts)
        and (severity is None or r.labels.get("severity") == severity)
        and _rewritable(r, plain)
    ]
    rewriter = rewriter_for(client, rules, tables, step, [r.expr for r in chosen], start, end)
    episodes: list[Episode] = []
    for rule in chosen:
        log.info("backtest: %s", rule.alert)
        try:
            episodes += run_alert(client, rule, rewriter, start, end, step)
        except PromQLError as error:
            log.warning("not backtested: %s: %s", rule.alert, error)
    return sorted(episodes, key=lambda e: (e.fired_at, e.alert, e.domain))


def _rewritable(rule: AlertRule, rewriter: Rewriter) -> bool:
    try:
        rewriter.rewrite_alert(rule.expr)
    except PromQLError as error:
        log.warning("not backtested: %s: %s", rule.alert, error)
        return False
    return True


def rewriter_for(
    client: PrometheusClient,
    rules: RuleSet,
    tables: Mapping[str, Sequence[tuple[Mapping[str, str], float]]],
    step: float,
    exprs: Sequence[str],
    start: float,
    end: float,
) -> Rewriter:
    """A Rewriter for `exprs` that also computes, from their rules, the recorded series they
    read that the history lacks."""
    rewriter = Rewriter(rules, tables, step)
    missing: set[str] = set()
    while True:
        names = {n for e in exprs for n in referenced(rewriter.rewrite(e))}
        more = missing_records(client, rules, names, start, end) - missing
        if not more:
            return rewriter
        log.info("not in the history, computed from their rules: %s", ", ".join(sorted(more)))
        missing |= more
        rewriter = Rewriter(rules, tables, step, also_inline=missing)


def missing_records(
    client: PrometheusClient,
    rules: RuleSet,
    names: set[str],
    start: float,
    end: float,
    probes: int = 20,
) -> set[str]:
    """The recorded series among `names` that the history lacks at one of `probes` instants
    spread over the window (it predates their rule, or lost them): the backtest computes
    those from their rules' expressions instead of reading them."""
    recorded = {r.record for r in rules.recording}
    step = float(max(math.ceil((end - start) / max(probes - 1, 1)), 1))
    out = set()
    for name in sorted(names & recorded):
        series = parse_matrix(client.query_range(f"count({name})", start, end, step))
        expected = math.floor((end - start) / step + 1e-9) + 1
        if not series or len(series[0][1]) < expected:
            out.add(name)
    return out


def by_domain(episodes: Sequence[Episode]) -> dict[str, dict[str, int]]:
    """{domain: {alert: count}}."""
    out: dict[str, dict[str, int]] = {}
    for e in episodes:
        counts = out.setdefault(e.domain, {})
        counts[e.alert] = counts.get(e.alert, 0) + 1
    return out


def throttled_domains(episodes: Sequence[Episode]) -> set[str]:
    return {e.domain for e in episodes}
