"""The evasion search: pulse arithmetic, promtool's series notation, and one real promtool run."""

from __future__ import annotations

import pytest

from tests.support import require_binary
from xeneval import evasion


@pytest.mark.parametrize(
    ("second", "duty", "period", "expected"),
    [
        (5, 0.5, 10.0, 0.0),  # before the start
        (10, 0.5, 10.0, 1.0),
        (14, 0.5, 10.0, 1.0),
        (15, 0.5, 10.0, 0.0),
        (10, 0.25, 2.0, 0.5),  # half a second on in every second
        (11, 0.25, 2.0, 0.0),
        (11, 0.3, 5.0, 0.5),  # on for 1.5 s: the second second is half on
        (12, 0.3, 5.0, 0.0),
    ],
)
def test_on_fraction(second: int, duty: float, period: float, expected: float) -> None:
    assert evasion.on_fraction(second, start=10, duty=duty, period=period) == pytest.approx(
        expected
    )


def test_series_values_are_cumulative_runs() -> None:
    # 0 2 4 6 | 6 6 | 11: each run restates its first value (promtool runs are absolute).
    assert evasion.series_values([2, 2, 2, 0, 0, 5]) == "0+2x3 6+0x1 11+0x0"
    assert evasion.series_values([]) == "0+0x0"


def test_promtool_tells_a_flood_from_a_quiet_guest_with_the_shipped_rules() -> None:
    require_binary("promtool")
    profile = evasion.PROFILES[0]
    seconds = 60
    cases = {
        "loud": [0.0] * 10 + [3 * profile.threshold / profile.peak] * (seconds - 10),
        "quiet": [0.0] * 10 + [0.3 * profile.threshold / profile.peak] * (seconds - 10),
    }
    fired = evasion.promtool_fired(profile, cases)
    assert fired["quiet"] == set()
    assert fired["loud"] == set(profile.alerts)
