"""The statistics of learning, as pure functions (no Prometheus, no files).

    summary = summarize(samples, start=t0, end=t1, step=60, high_quantile=0.999)
    decision = decide(summary, default=10000, limits=limits, previous=12000)

`samples` are (unix time, value) pairs: each the highest value of the signal within one step
(the reader asks Prometheus for max_over_time over the step), pooled over the domains that
learn together. The threshold is

    clamp(quantile_high * margin, floor, ceiling), then at most max_increase above (and at most
    max_decrease below) the previous period's value, then clamped again: never above the ceiling,
    never below the floor.

Every step that changed the number is said in `Decision.why`, in the order it was applied.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

HOURS = 24
DAY = 86400.0


@dataclass(frozen=True)
class Limits:
    """How one signal's threshold is bounded (from the signal table and the learning config)."""

    quantile: float = 0.999
    margin: float = 2.0
    floor_factor: float = 0.5
    absolute_floor: float = 0.0
    ceiling: float = math.inf
    max_increase: float = 0.25
    max_decrease: float = 0.5
    min_coverage: float = 0.5


@dataclass(frozen=True)
class Seasonality:
    """What the history shows beyond its quantiles."""

    # q99 of each UTC hour of the day that has data (hour -> value).
    hourly: dict[int, float]
    peak_hour: int | None
    quiet_hour: int | None
    # The busiest hour's q99 over the quietest's (1 = flat); None without two hours of data.
    daily_ratio: float | None
    # q99 over the last third of the window over q99 over its first third: a ramp shows > 1.
    trend_ratio: float | None
    days: float

    def describe(self) -> str:
        parts = []
        if self.daily_ratio is not None and self.peak_hour is not None:
            if self.daily_ratio >= 1.5:
                parts.append(
                    f"daily cycle: busiest hour {self.peak_hour:02d}:00 UTC at"
                    f" {self.daily_ratio:.1f}x the quietest ({self.quiet_hour:02d}:00)"
                )
            else:
                parts.append(f"no daily cycle (busiest hour {self.daily_ratio:.1f}x the quietest)")
        if self.trend_ratio is not None:
            if self.trend_ratio >= 1.25:
                parts.append(
                    f"RISING: the last third of the window is {self.trend_ratio:.2f}x the first"
                )
            elif self.trend_ratio <= 0.8:
                parts.append(f"falling: the last third is {self.trend_ratio:.2f}x the first")
            else:
                parts.append(f"no trend ({self.trend_ratio:.2f}x first to last third)")
        parts.append(f"{self.days:.1f} days of history")
        return "; ".join(parts)


@dataclass(frozen=True)
class Summary:
    count: int
    coverage: float
    q50: float
    q99: float
    high: float
    high_quantile: float
    maximum: float
    seasonality: Seasonality


@dataclass(frozen=True)
class Decision:
    value: float
    learned: float
    floor: float
    ceiling: float
    why: tuple[str, ...] = field(default_factory=tuple)
    # "quantile", "floor", "ceiling", "drift" or "no data" (kept at the default / previous).
    bound: str = "quantile"


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0 <= q <= 1) with linear interpolation between the closest ranks, as
    numpy's default and PromQL's quantile_over_time. `values` need not be sorted."""
    if not values:
        raise ValueError("quantile of no values")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile {q} outside [0, 1]")
    ordered = sorted(values)
    rank = q * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def seasonality(samples: Sequence[tuple[float, float]], start: float, end: float) -> Seasonality:
    by_hour: dict[int, list[float]] = {}
    for t, v in samples:
        by_hour.setdefault(int(t % DAY // 3600), []).append(v)
    hourly = {hour: quantile(values, 0.99) for hour, values in sorted(by_hour.items())}
    peak = max(hourly, key=lambda h: hourly[h]) if hourly else None
    quiet = min(hourly, key=lambda h: hourly[h]) if hourly else None
    ratio = None
    if len(hourly) >= 2 and peak is not None and quiet is not None:
        ratio = _ratio(hourly[peak], hourly[quiet])
    third = (end - start) / 3
    first = [v for t, v in samples if t < start + third]
    last = [v for t, v in samples if t >= end - third]
    trend = None
    if first and last:
        trend = _ratio(quantile(last, 0.99), quantile(first, 0.99))
    return Seasonality(hourly, peak, quiet, ratio, trend, (end - start) / DAY)


def _ratio(a: float, b: float) -> float:
    # Rates are never negative; a quiet hour of exactly 0 next to a busy one is a large cycle.
    if b <= 0:
        return 1.0 if a <= 0 else math.inf
    return a / b


def summarize(
    samples: Sequence[tuple[float, float]],
    *,
    start: float,
    end: float,
    step: float,
    high_quantile: float,
) -> Summary:
    """Quantiles and seasonality of one signal's samples over [start, end]."""
    if end <= start or step <= 0:
        raise ValueError("summarize needs end > start and step > 0")
    values = [v for _, v in samples if math.isfinite(v)]
    expected = max(1, round((end - start) / step))
    # Pooled domains give several samples per step: coverage counts steps with any.
    steps_seen = len({round((t - start) / step) for t, v in samples if math.isfinite(v)})
    coverage = min(1.0, steps_seen / expected)
    if not values:
        return Summary(
            0,
            0.0,
            math.nan,
            math.nan,
            math.nan,
            high_quantile,
            math.nan,
            seasonality([], start, end),
        )
    return Summary(
        count=len(values),
        coverage=coverage,
        q50=quantile(values, 0.5),
        q99=quantile(values, 0.99),
        high=quantile(values, high_quantile),
        high_quantile=high_quantile,
        maximum=max(values),
        seasonality=seasonality(samples, start, end),
    )


def round_up(value: float, digits: int = 2) -> float:
    """`value` rounded up to `digits` significant digits (12 345 -> 13 000): a threshold a person
    reads at a glance, and never below what was learned."""
    if value <= 0 or not math.isfinite(value):
        return value
    exponent = math.floor(math.log10(value)) - digits + 1
    # The small epsilon keeps 13000.000000001 (float noise) from becoming 14000; dividing by an
    # exact power of ten keeps 0.93 from becoming 0.9300000000000001.
    if exponent >= 0:
        return float(math.ceil(value / 10.0**exponent - 1e-9) * 10**exponent)
    return float(math.ceil(value * 10**-exponent - 1e-9) / 10**-exponent)


def decide(
    summary: Summary,
    *,
    default: float,
    limits: Limits,
    previous: float | None = None,
    fmt: str = "{:g}",
) -> Decision:
    """The threshold for one signal of one domain (or group), and why.

    `default` is the shipped threshold (thresholds.yml); `previous` the value of the last learned
    file for this domain, if re-learning (a domain new since then starts from `default`).
    """
    floor = max(default * limits.floor_factor, limits.absolute_floor)
    ceiling = limits.ceiling
    if floor > ceiling:
        raise ValueError(f"floor {floor:g} above ceiling {ceiling:g}")
    f = fmt.format
    why: list[str] = []
    if summary.count == 0 or summary.coverage < limits.min_coverage:
        kept = default if previous is None else previous
        why.append(
            f"history covers {summary.coverage:.0%} of the window (< {limits.min_coverage:.0%}):"
            f" kept {'the default' if previous is None else 'the previous value'} {f(kept)}"
        )
        return Decision(kept, math.nan, floor, ceiling, tuple(why), "no data")
    learned = summary.high * limits.margin
    why.append(
        f"q{summary.high_quantile * 100:g} {f(summary.high)} x margin {limits.margin:g}"
        f" = {f(learned)}"
    )

    def within_floor_and_ceiling(
        value: float, bound: str, floor_note: str = ""
    ) -> tuple[float, str]:
        # floor <= ceiling (checked above): at most one of the two applies.
        if value < floor:
            why.append(f"raised to the floor {f(floor)}{floor_note}")
            return floor, "floor"
        if value > ceiling:
            why.append(f"cut to the hard ceiling {f(ceiling)}")
            return ceiling, "ceiling"
        return value, bound

    value, bound = within_floor_and_ceiling(
        round_up(learned),
        "quantile",
        f" (max of default {f(default)} x {limits.floor_factor:g}"
        f" and absolute {f(limits.absolute_floor)})",
    )
    if previous is not None:
        top = previous * (1 + limits.max_increase)
        bottom = previous * (1 - limits.max_decrease)
        if value > top:
            why.append(
                f"drift bound: at most +{limits.max_increase:.0%} over the previous"
                f" {f(previous)} = {f(top)}"
            )
            value, bound = top, "drift"
        elif value < bottom:
            why.append(
                f"drift bound: at most -{limits.max_decrease:.0%} under the previous"
                f" {f(previous)} = {f(bottom)}"
            )
            value, bound = bottom, "drift"
        # A previous value outside today's floor and ceiling (the config changed) does not
        # carry the number outside them.
        value, bound = within_floor_and_ceiling(value, bound)
    return Decision(value, learned, floor, ceiling, tuple(why), bound)
