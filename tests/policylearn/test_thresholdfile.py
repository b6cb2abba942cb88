"""The threshold files: the shipped defaults parsed, the generated overrides written and read."""

from __future__ import annotations

import pytest
import yaml

from policylearn.signals import NOT_LEARNED, SIGNALS
from policylearn.thresholdfile import (
    Override,
    ThresholdFileError,
    parse_defaults,
    parse_overrides,
    render_overrides,
)
from tests.support import REPO, assert_promtool_accepts_rules

SHIPPED = REPO / "prometheus" / "rules" / "thresholds.yml"


def test_every_learned_and_hand_set_signal_has_a_shipped_default():
    defaults = parse_defaults(SHIPPED.read_text())
    assert defaults[("network_flood", "interrupts_per_second")] == 10000
    assert defaults[("memory_abuse", "memory_growth_bytes_per_second")] == 8388608
    assert set(defaults) == {s.key for s in SIGNALS} | set(NOT_LEARNED)


OVERRIDES = [
    Override("network_flood", "interrupts_per_second", "web1", 12000, ("q99.9 6000 x 2",)),
    Override("cpu_hog", "cpu_seconds_per_second_per_vcpu", "batch 1", 0.95, ("ceiling",)),
    Override("network_flood", "interrupts_per_second", 'odd"name: {x}', 5000),
]


def test_render_then_parse_round_trips_and_keeps_the_reasons(tmp_path):
    text = render_overrides(OVERRIDES, ["generated"])
    assert text.startswith("# generated\n")
    assert "# q99.9 6000 x 2" in text
    parsed = parse_overrides(text)
    assert parsed == {(o.policy, o.signal, o.domain): o.value for o in OVERRIDES}
    rules = yaml.safe_load(text)["groups"][0]["rules"]
    assert {r["record"] for r in rules} == {"judicator:policy_threshold:domain"}
    assert rules[0]["expr"] == "vector(0.95)"  # sorted by domain: "batch 1" first
    path = tmp_path / "thresholds-domains.yml"
    path.write_text(text)
    assert_promtool_accepts_rules(path)


def test_an_empty_file_is_a_valid_rules_file():
    text = render_overrides([])
    assert parse_overrides(text) == {}
    assert yaml.safe_load(text)["groups"][0]["rules"] == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "groups: [{name: g, rules: [{record: judicator:policy_threshold:domain, expr: 'up'}]}]",
            r"is not vector\(NUMBER\)",
        ),
        (
            "groups: [{name: g, rules: [{record: judicator:policy_threshold:domain,"
            " expr: 'vector(1)', labels: {policy: p, signal: s}}]}]",
            "without policy",
        ),
        ("[1, 2]", "not a rules file"),
        (
            "groups: [{name: g, rules: [{record: judicator:policy_threshold:domain,"
            " expr: 'vector(1)', labels: {policy: p, signal: s, domain: d}},"
            " {record: judicator:policy_threshold:domain,"
            " expr: 'vector(2)', labels: {policy: p, signal: s, domain: d}}]}]",
            "defined twice",
        ),
    ],
)
def test_bad_override_files_are_refused(text, message):
    with pytest.raises(ThresholdFileError, match=message):
        parse_overrides(text)
