"""The alert state the backtest adds to Prometheus's answers: `for:` and `keep_firing_for`, as
Prometheus 2.42's rule manager applies them at each evaluation."""

from __future__ import annotations

import pytest

from policylearn.backtest import Episode, alert_episodes, by_domain
from policylearn.prom import PrometheusError, chunks, parse_matrix


def present(*ranges: tuple[int, int], step: int = 1) -> list[float]:
    """Evaluation times (in steps) at which the expression has the series: [a, b) ranges."""
    return [float(t) for a, b in ranges for t in range(a, b, step)]


@pytest.mark.parametrize(
    ("times", "for_s", "keep_s", "expected"),
    [
        # present 0..19: pending at 0, fires at 15 (15 s after it became active), resolves at
        # the first evaluation without it
        (present((0, 20)), 15, 0, [(15.0, 20.0)]),
        # shorter than for: never fires
        (present((0, 15)), 15, 0, []),
        # keep_firing_for 30: resolves 30 s after the first evaluation without it
        (present((0, 20)), 15, 30, [(15.0, 50.0)]),
        # a dip shorter than keep_firing_for does not end the episode
        (present((0, 20), (40, 60)), 15, 30, [(15.0, 90.0)]),
        # a dip while pending resets for: (the pulsing flood that evades the constant forms)
        (present((0, 10), (11, 21), (22, 32)), 15, 0, []),
        # for: 0 fires at once; two separate episodes
        (present((5, 6), (9, 10)), 0, 0, [(5.0, 6.0), (9.0, 10.0)]),
        # still firing at the end of the data: resolution unknown
        (present((0, 20)), 2, 60, [(2.0, 80.0)]),
        ([], 15, 0, []),
    ],
)
def test_alert_episodes(times, for_s, keep_s, expected):
    assert alert_episodes(times, 1.0, for_s, keep_s) == expected


def test_alert_episodes_at_a_coarse_step():
    # Every 60 s, for: 15s fires at the second evaluation in a row.
    times = [0.0, 60.0, 120.0, 600.0]
    assert alert_episodes(times, 60.0, 15, 0) == [(60.0, 180.0)]
    # keep_firing_for 30 s at 60 s steps: resolved at the second evaluation without it (the
    # first is 0 s into the hold), not left firing.
    assert alert_episodes([0.0, 60.0, 120.0], 60.0, 15, 30) == [(60.0, 240.0)]


def test_by_domain_counts():
    episodes = [
        Episode("A", "g1", "h", 1.0, 2.0),
        Episode("A", "g1", "h", 5.0, None),
        Episode("B", "g2", "h", 1.0, 2.0),
    ]
    assert by_domain(episodes) == {"g1": {"A": 2}, "g2": {"B": 1}}
    assert episodes[1].duration(10.0) == 5.0


def test_chunks_cover_the_window_once_at_aligned_instants():
    parts = list(chunks(1001.0, 1100.0, 10.0, points=4))
    assert parts == [(1000.0, 1030.0), (1040.0, 1070.0), (1080.0, 1100.0)]
    with pytest.raises(ValueError):
        list(chunks(10.0, 0.0, 1.0))


def test_parse_matrix_and_errors():
    text = (
        '{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"domain":"g1",'
        '"instance":"h"},"values":[[1,"2.5"],[2,"3"]]}]}}'
    )
    assert parse_matrix(text) == [((("domain", "g1"), ("instance", "h")), [(1.0, 2.5), (2.0, 3.0)])]
    with pytest.raises(PrometheusError, match="bad_data"):
        parse_matrix('{"status":"error","errorType":"bad_data","error":"parse error"}')
    with pytest.raises(PrometheusError, match="not JSON"):
        parse_matrix("<html>")
