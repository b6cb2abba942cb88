"""The statistics of learning: quantiles, seasonality, and the bounds on every threshold."""

from __future__ import annotations

import math
import random

import pytest

from policylearn.stats import DAY, Limits, decide, quantile, round_up, summarize

HOUR = 3600.0


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([5.0], 0.999, 5.0),
        ([1.0, 2.0, 3.0, 4.0], 0.5, 2.5),
        ([4.0, 1.0, 3.0, 2.0], 0.0, 1.0),
        ([4.0, 1.0, 3.0, 2.0], 1.0, 4.0),
        # numpy.quantile(range(1001), 0.999) == 999.0
        ([float(i) for i in range(1001)], 0.999, 999.0),
        ([0.0, 10.0], 0.25, 2.5),
    ],
)
def test_quantile_interpolates_like_numpy_and_promql(values, q, expected):
    assert quantile(values, q) == pytest.approx(expected)


def test_quantile_refuses_nothing_and_out_of_range():
    with pytest.raises(ValueError):
        quantile([], 0.5)
    with pytest.raises(ValueError):
        quantile([1.0], 1.5)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(12345, 13000), (13000, 13000), (0.9234, 0.93), (0.93, 0.93), (441.2, 450), (0, 0)],
)
def test_round_up_two_significant_digits_never_down(value, expected):
    assert round_up(value) == expected
    assert round_up(value) >= value


def steady(value, days=7.0, step=60.0, noise=0.0, seed=1):
    rng = random.Random(seed)
    n = int(days * DAY / step)
    return [(i * step, value * (1 + rng.gauss(0, noise))) for i in range(n)]


def summary_of(samples, step=60.0, q=0.999):
    end = samples[-1][0] + step if samples else 7 * DAY
    return summarize(samples, start=0.0, end=end, step=step, high_quantile=q)


LIMITS = Limits(absolute_floor=2000, ceiling=20000)


def test_busy_guest_gets_its_quantile_times_margin():
    d = decide(summary_of(steady(6000.0)), default=10000, limits=LIMITS)
    assert d.value == 12000
    assert d.bound == "quantile"
    assert "x margin 2" in d.why[0]


def test_quiet_guest_never_below_the_floor():
    d = decide(summary_of(steady(100.0)), default=10000, limits=LIMITS)
    assert d.value == 5000  # default x 0.5 beats the absolute 2000
    assert d.bound == "floor"
    d = decide(summary_of(steady(100.0)), default=3000, limits=LIMITS)
    assert d.value == 2000  # the absolute floor beats 3000 x 0.5
    assert "floor" in d.why[-1]


def test_never_above_the_hard_ceiling():
    d = decide(summary_of(steady(50000.0)), default=10000, limits=LIMITS)
    assert d.value == 20000
    assert d.bound == "ceiling"


def test_drift_bound_against_the_previous_value_both_ways():
    busy = summary_of(steady(9000.0))  # would learn 18000
    up = decide(busy, default=10000, limits=LIMITS, previous=10000)
    assert up.value == 12500
    assert up.bound == "drift"
    quiet = summary_of(steady(100.0))  # would learn the floor, 5000
    down = decide(quiet, default=10000, limits=LIMITS, previous=16000)
    assert down.value == 8000
    assert down.bound == "drift"


def test_drift_never_carries_a_value_past_the_ceiling():
    d = decide(summary_of(steady(50000.0)), default=10000, limits=LIMITS, previous=19000)
    assert d.value == 20000


def test_too_little_history_keeps_the_default_or_the_previous():
    two_days_of_seven = [(t, v) for t, v in steady(6000.0) if t < 2 * DAY]
    s = summarize(two_days_of_seven, start=0.0, end=7 * DAY, step=60.0, high_quantile=0.999)
    assert s.coverage == pytest.approx(2 / 7, abs=0.01)
    assert decide(s, default=10000, limits=LIMITS).value == 10000
    kept = decide(s, default=10000, limits=LIMITS, previous=14000)
    assert kept.value == 14000
    assert kept.bound == "no data"
    empty = summarize([], start=0.0, end=DAY, step=60.0, high_quantile=0.999)
    assert empty.count == 0
    assert math.isnan(empty.high)


def test_seasonality_sees_a_daily_cycle_and_a_ramp():
    step = 300.0
    daily = [
        (i * step, 100 + 900 * (14 <= (i * step % DAY) / HOUR < 16))
        for i in range(int(7 * DAY / step))
    ]
    s = summary_of(daily, step=step).seasonality
    assert s.peak_hour in (14, 15)
    assert s.daily_ratio == pytest.approx(10.0)
    assert "daily cycle" in s.describe()
    ramp = [(i * step, 1000 * 1.3 ** (i * step / (7 * DAY))) for i in range(int(21 * DAY / step))]
    r = summary_of(ramp, step=step).seasonality
    assert r.trend_ratio is not None and r.trend_ratio > 1.25
    assert "RISING" in r.describe()
    flat = summary_of(steady(500.0, noise=0.05)).seasonality
    assert "no daily cycle" in flat.describe()
    assert "no trend" in flat.describe()


def test_a_floor_above_the_ceiling_is_refused():
    with pytest.raises(ValueError):
        decide(summary_of(steady(1.0)), default=100000, limits=LIMITS)


def weekly_relearning(weeks, growth, base, limits, default, previous_file=True):
    """Re-learn every week from that week's history of a guest that ramps its baseline."""
    previous = None
    values = []
    for week in range(weeks):
        samples = [
            (t, base * (1 + growth) ** ((week * 7 * DAY + t) / (7 * DAY)))
            for t, _ in steady(0.0, days=7, step=600)
        ]
        d = decide(
            summary_of(samples, step=600),
            default=default,
            limits=limits,
            previous=(previous if previous is not None else default) if previous_file else None,
        )
        previous = d.value
        values.append(d.value)
    return values, base * (1 + growth) ** weeks


def test_poisoning_a_slow_ramp_is_still_caught_at_the_ceiling():
    """A guest raising the packets it sends 30 % a week, from 3000/s, for 12 weeks: every
    weekly threshold stays within +25 % of the last and under the ceiling, so once its rate
    passes the ceiling (week 8: about 24 000/s) it is above its threshold; learning without
    the ceiling would have followed it (twice its own peak)."""
    values, final_rate = weekly_relearning(12, 0.30, 3000.0, LIMITS, 10000)
    assert max(values) == LIMITS.ceiling
    for before, after in zip([10000.0, *values], values, strict=False):
        assert after <= before * 1.25 + 1e-9
    assert final_rate > LIMITS.ceiling
    assert final_rate > values[-1]  # caught
    unbounded, _ = weekly_relearning(
        12, 0.30, 3000.0, Limits(absolute_floor=2000), 10000, previous_file=False
    )
    assert unbounded[-1] > 2 * final_rate * 0.7  # naive learning follows the ramp
