"""Learning: from each domain's history of every learned signal to thresholds, and why.

    histories = read_histories(client, start, end, step=60, resolution=2)   # HTTP
    result = learn(histories, defaults, config, start=.., end=.., step=60)   # pure
    overrides = result.overrides()

`read_histories` asks Prometheus, per signal, for the highest value within each step
(`max_over_time(expr[step])`, or over a subquery at `resolution` for signals that are an
expression), chunked; Domain-0 is left out. `learn` pools the domains of each group (the
operator's groups; a domain in none learns alone), summarizes each signal (quantiles,
seasonality) and decides each member's threshold (policylearn.stats.decide).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from policylearn.config import LearnConfig
from policylearn.prom import PrometheusClient, query_range_chunked
from policylearn.promql import format_duration
from policylearn.signals import SIGNALS, Signal
from policylearn.stats import Decision, Summary, decide, summarize
from policylearn.thresholdfile import Override

log = logging.getLogger(__name__)

Samples = list[tuple[float, float]]
# {(policy, signal): {domain: samples}}
Histories = dict[tuple[str, str], dict[str, Samples]]
DOMAIN0 = "Domain-0"


def signal_query(
    signal: Signal, step: float, resolution: float, rewrite: Callable[[str], str] | None = None
) -> str:
    """The range query of one signal's peak per step. `rewrite` (policylearn.promql.Rewriter)
    computes what the history lacks from the rules; a selector it changed is an expression."""
    expr = signal.expr if rewrite is None else rewrite(signal.expr)
    if signal.selector and expr == signal.expr:
        return f"max_over_time({expr}[{format_duration(step)}])"
    return f"max_over_time(({expr})[{format_duration(step)}:{format_duration(resolution)}])"


def read_histories(
    client: PrometheusClient,
    start: float,
    end: float,
    *,
    step: float,
    resolution: float,
    signals: Sequence[Signal] = SIGNALS,
    rewrite: Callable[[str], str] | None = None,
) -> Histories:
    out: Histories = {}
    for signal in signals:
        log.info("reading %s/%s", signal.policy, signal.signal)
        per_domain: dict[str, Samples] = {}
        query = signal_query(signal, step, resolution, rewrite)
        for labels, points in query_range_chunked(client, query, start, end, step):
            domain = dict(labels).get("domain", "")
            if not domain or domain == DOMAIN0:
                continue
            # A domain seen on several hosts (migrated) learns from all of them.
            per_domain.setdefault(domain, []).extend(points)
        out[signal.key] = per_domain
    return out


@dataclass(frozen=True)
class Learned:
    """One signal of one learning unit (a group or a lone domain)."""

    signal: Signal
    unit: str
    members: tuple[str, ...]
    default: float
    summary: Summary
    # Per member domain (they differ only where their previous values differ).
    decisions: Mapping[str, Decision]


@dataclass
class LearnResult:
    start: float
    end: float
    step: float
    learned: list[Learned] = field(default_factory=list)

    def overrides(self) -> list[Override]:
        out = []
        for item in self.learned:
            for domain, decision in item.decisions.items():
                if decision.bound == "no data" and decision.value == item.default:
                    continue
                why = (
                    f"{item.signal.policy}/{item.signal.signal} for {domain}"
                    + (f" (group {item.unit})" if item.unit != domain else "")
                    + f": {'; '.join(decision.why)}",
                )
                out.append(
                    Override(item.signal.policy, item.signal.signal, domain, decision.value, why)
                )
        return out

    def units(self) -> list[str]:
        seen: list[str] = []
        for item in self.learned:
            if item.unit not in seen:
                seen.append(item.unit)
        return seen


def learn(
    histories: Histories,
    defaults: Mapping[tuple[str, str], float],
    config: LearnConfig,
    *,
    start: float,
    end: float,
    step: float,
    previous: Mapping[tuple[str, str, str], float] | None = None,
    signals: Sequence[Signal] = SIGNALS,
) -> LearnResult:
    """Thresholds per domain from `histories`. With `previous` (the last learned file), every
    value moves at most the config's drift per period; a domain it lacks starts from the default.
    """
    result = LearnResult(start, end, step)
    for signal in signals:
        if signal.key not in defaults:
            raise ValueError(f"thresholds.yml has no default for {signal.policy}/{signal.signal}")
        default = defaults[signal.key]
        limits = config.limits_for(signal)
        units: dict[str, list[str]] = {}
        for domain in sorted(histories.get(signal.key, {})):
            units.setdefault(config.group_of(domain), []).append(domain)
        for unit, members in units.items():
            pooled: Samples = []
            for domain in members:
                pooled += histories[signal.key][domain]
            summary = summarize(
                pooled, start=start, end=end, step=step, high_quantile=limits.quantile
            )
            decisions = {}
            for domain in members:
                prev = None
                if previous is not None:
                    prev = previous.get((signal.policy, signal.signal, domain), default)
                decisions[domain] = decide(
                    summary, default=default, limits=limits, previous=prev, fmt=_fmt(signal)
                )
            result.learned.append(
                Learned(signal, unit, tuple(members), default, summary, decisions)
            )
    return result


def _fmt(signal: Signal) -> str:
    return "{:.3g}" if signal.ceiling < 10 else "{:,.0f}"
