"""Learning without Prometheus: pooled groups, the previous file, the overrides and the report."""

from __future__ import annotations

from policylearn.config import load_config
from policylearn.learn import learn
from policylearn.report import learn_report
from policylearn.signals import BY_KEY
from policylearn.thresholdfile import parse_overrides, render_overrides

DAY = 86400.0
IRQ = ("network_flood", "interrupts_per_second")
DEFAULTS = {IRQ: 10000.0}


def flat(value: float, days: float = 7) -> list[tuple[float, float]]:
    return [(t * 60.0, value) for t in range(int(days * DAY / 60))]


def run(histories, previous=None, config=None):
    return learn(
        {IRQ: histories},
        DEFAULTS,
        load_config(config),
        start=0.0,
        end=7 * DAY,
        step=60.0,
        previous=previous,
        signals=[BY_KEY[IRQ]],
    )


def test_a_group_pools_its_members_and_each_gets_the_groups_number():
    result = run(
        {"web1": flat(3000), "web2": flat(6000), "db": flat(100)},
        config={"groups": [{"name": "web", "domains": ["web*"]}]},
    )
    values = {o.domain: o.value for o in result.overrides()}
    assert values == {"web1": 12000, "web2": 12000, "db": 5000}
    assert result.units() == ["db", "web"]
    report = learn_report(result)
    assert "## group web: web1, web2" in report
    assert "raised to the floor 5,000" in report


def test_previous_bounds_every_member_and_a_new_domain_starts_from_the_default():
    previous = {(*IRQ, "web1"): 8000.0}
    result = run({"web1": flat(9000), "new": flat(9000)}, previous=previous)
    values = {o.domain: o.value for o in result.overrides()}
    assert values == {"web1": 10000, "new": 12500}


def test_a_domain_with_too_little_history_writes_nothing():
    result = run({"young": flat(9000, days=1)})
    assert result.overrides() == []
    assert "kept the default" in learn_report(result)


def test_the_overrides_file_round_trips_with_reasons():
    result = run({"web1": flat(6000)})
    text = render_overrides(result.overrides(), ["header"])
    assert parse_overrides(text) == {(*IRQ, "web1"): 12000}
    assert "# network_flood/interrupts_per_second for web1: q99.9 6,000 x margin 2" in text
