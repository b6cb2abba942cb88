"""Rewriting the shipped rules for a backtest: constant tables become literals, what depends on
them is inlined, and the rewritten alerts mean what the shipped ones mean (promtool)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from policylearn.promql import (
    MAX_REWRITTEN_CHARS,
    PromQLError,
    Rewriter,
    RuleSet,
    parse_duration,
    parse_matchers,
    referenced,
)
from tests.support import REPO, assert_promtool_accepts_rules, require_binary

RULES_DIR = REPO / "prometheus" / "rules"
TESTS_DIR = REPO / "prometheus" / "tests"
# The shipped policies: every one must stay backtestable.
SHIPPED_ALERTS = {
    rule["alert"]
    for group in yaml.safe_load((RULES_DIR / "policies.yml").read_text())["groups"]
    for rule in group["rules"]
    if "alert" in rule
}


def shipped_rules() -> RuleSet:
    rules = RuleSet()
    for path in sorted(RULES_DIR.glob("*.yml")):
        rules.add_file(yaml.safe_load(path.read_text()))
    return rules


@pytest.mark.parametrize(
    ("text", "seconds"), [("15s", 15), ("1m30s", 90), ("0s", 0), ("2m", 120), ("500ms", 0.5)]
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_bad_duration():
    with pytest.raises(PromQLError):
        parse_duration("15 seconds")


def test_matchers_with_quotes_and_escapes():
    assert parse_matchers('policy="a", signal!=\'b\', domain=~"w.*\\"x"') == [
        ("policy", "=", "a"),
        ("signal", "!=", "b"),
        ("domain", "=~", 'w.*"x'),
    ]


SMALL_RULES = """
groups:
  - name: t
    rules:
      - {record: "t:c", expr: vector(10), labels: {policy: p, signal: a}}
      - {record: "t:c", expr: vector(20), labels: {policy: p, signal: b}}
      - {record: "t:d", expr: vector(5), labels: {policy: p, signal: a, domain: g1}}
      - record: "x:rate:active"
        expr: 'x:rate > on () group_left () t:c{signal="a"}'
      - {record: "x:other", expr: "sum(x:rate)"}
      - alert: A
        expr: 'count_over_time(x:rate:active{domain!="Domain-0"}[2m]) > 3'
        for: 15s
        keep_firing_for: 30s
        labels: {severity: remediate}
"""


def small_rules() -> RuleSet:
    rules = RuleSet()
    rules.add_file(yaml.safe_load(SMALL_RULES))
    return rules


def test_tables_are_found_and_dependents_inlined():
    rules = small_rules()
    tables = rules.tables()
    assert set(tables) == {"t:c", "t:d"}
    rewriter = Rewriter(rules, tables, step=2)
    assert set(rewriter.inline) == {"x:rate:active"}  # x:other reads no threshold
    out = rewriter.rewrite(rules.alerts[0].expr)
    assert "x:rate:active" not in out
    assert "t:c" not in referenced(out)
    assert "vector(10)" in out and "vector(20)" not in out  # only signal="a"
    assert "[2m:2s]" in out
    assert 'unless on (domain) label_replace(vector(0), "domain", "Domain-0", "", "")' in out
    assert out.endswith("> 3")


def test_a_series_missing_from_the_history_is_computed_but_not_what_was_recorded_from_it():
    rules = RuleSet()
    rules.add_file(
        yaml.safe_load("""
groups:
  - name: t
    rules:
      - {record: "x:held", expr: "last_over_time(x[10s])"}
      - {record: "x:rate", expr: "rate(y[10s]) * on () group_left () x:held"}
      - {record: "x:sum", expr: "sum(x:held)"}
""")
    )
    # The history lacks x:held (its rule is newer) but holds x:rate, recorded from it.
    rewriter = Rewriter(rules, rules.tables(), step=2, also_inline=["x:held"])
    assert set(rewriter.inline) == {"x:held"}
    assert rewriter.rewrite("x:rate") == "x:rate"
    assert "last_over_time(x[10s])" in rewriter.rewrite("x:sum + x:held")


def test_candidate_tables_replace_the_shipped_values():
    rules = small_rules()
    tables = rules.tables()
    tables["t:c"] = [({"policy": "p", "signal": "a"}, 99.0)]
    out = Rewriter(rules, tables, step=1).rewrite('x:rate > on () group_left () t:c{signal="a"}')
    assert "vector(99)" in out and "vector(10)" not in out
    # a selector no record matches is the empty vector, not an error
    out = Rewriter(rules, tables, step=1).rewrite('t:d{domain="nobody"}')
    assert out == "(vector(0) < -1)"


def test_strings_and_label_names_are_left_alone():
    rules = small_rules()
    rewriter = Rewriter(rules, rules.tables(), step=1)
    expr = 'label_replace(up, "x", "t:c", "", "") and on (job) t:c{signal="b"}'
    out = rewriter.rewrite(expr)
    assert out.startswith('label_replace(up, "x", "t:c", "", "") and on (job) (label_replace(')
    assert "vector(20)" in out


def test_a_regex_matcher_on_an_inlined_series_is_refused():
    rules = small_rules()
    with pytest.raises(PromQLError, match="only = and !="):
        Rewriter(rules, rules.tables(), step=1).rewrite('x:rate:active{domain=~"g.*"}')


def test_rewritten_shipped_alerts_are_valid_promql(tmp_path):
    rules = shipped_rules()
    rewriter = Rewriter(rules, rules.tables(), step=2)
    assert "instance_domain:judicator_network_flood_vif:active" in rewriter.inline
    out = [{"alert": a.alert, "expr": rewriter.rewrite(a.expr)} for a in rules.alerts]
    path = tmp_path / "rewritten.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "x", "rules": out}]}))
    assert_promtool_accepts_rules(path)


@pytest.mark.slow
def test_rewritten_alerts_equal_the_shipped_ones_on_the_rule_tests(tmp_path):
    """On the input series of every shipped promtool test, at every time a case checks, each
    remediating alert's rewritten expression (with the shipped thresholds as literals) has the
    same series as its shipped expression: neither has one the other lacks. (About a minute.)"""
    promtool = require_binary("promtool")
    checked = 0
    for test_file in sorted(TESTS_DIR.glob("*_test.yml")):
        data = yaml.safe_load(test_file.read_text())
        if float(parse_duration(data.get("evaluation_interval", "1m"))) != 1:
            continue
        data["rule_files"] = [str((TESTS_DIR / f).resolve()) for f in data["rule_files"]]
        # The test's own rule files: some bring overrides of their own.
        rules = RuleSet()
        for rule_file in data["rule_files"]:
            rules.add_file(yaml.safe_load(Path(rule_file).read_text()))
        rewriter = Rewriter(rules, rules.tables(), step=1)
        alerts = [a for a in rules.alerts if a.labels.get("severity") == "remediate"]
        for case in data["tests"]:
            times = sorted({t["eval_time"] for t in case.get("alert_rule_test", [])})
            case.pop("alert_rule_test", None)
            exprs = []
            for alert in alerts:
                try:
                    new = rewriter.rewrite_alert(alert.expr)
                except PromQLError:
                    # The backtest leaves it out (and says so); every shipped policy is in.
                    assert alert.alert not in SHIPPED_ALERTS, alert.alert
                    continue
                for eval_time in times:
                    for a, b in ((alert.expr, new), (new, alert.expr)):
                        exprs.append(
                            {
                                "expr": f"({a}) unless on (job, instance, domain) ({b})",
                                "eval_time": eval_time,
                                "exp_samples": [],
                            }
                        )
            case["promql_expr_test"] = exprs
            checked += len(exprs)
        path = tmp_path / test_file.name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        result = subprocess.run(
            [promtool, "test", "rules", str(path)], capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, (test_file.name, result.stdout[-4000:], result.stderr)
    assert checked > 100


def test_an_offset_on_an_inlined_series_reads_it_through_a_subquery():
    """`offset` takes a selector or a subquery, not the parenthesised expression an inlined
    series becomes (a series the history lacks, or one computed with thresholds)."""
    rules = small_rules()
    rewriter = Rewriter(rules, rules.tables(), step=2)
    out = rewriter.rewrite("x:rate:active offset 2m")
    assert out.startswith("last_over_time((")
    assert out.endswith(")[2s:2s] offset 2m)")


def test_the_simple_policy_engine_is_refused_by_size_and_every_shipped_policy_is_not():
    """The engine's ranks read each other: rewritten, each read repeats the whole expression
    (megabytes). The backtest leaves such alerts out; the shipped policies rewrite to kilobytes."""
    rules = shipped_rules()
    rewriter = Rewriter(rules, rules.tables(), step=1)
    for alert in rules.alerts:
        assert len(rewriter.rewrite_alert(alert.expr)) < MAX_REWRITTEN_CHARS
    simple = RuleSet()
    data = yaml.safe_load((TESTS_DIR / "simple_policies_test.yml").read_text())
    for rule_file in data["rule_files"]:
        simple.add_file(yaml.safe_load((TESTS_DIR / rule_file).resolve().read_text()))
    engine = [a for a in simple.alerts if a.alert.startswith("XenSimplePolicy")]
    assert engine
    for alert in engine:
        with pytest.raises(PromQLError, match="characters"):
            Rewriter(simple, simple.tables(), step=1).rewrite_alert(alert.expr)
