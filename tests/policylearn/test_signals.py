"""The learned-signal table against the shipped policies: nothing forgotten, every query valid."""

from __future__ import annotations

import re

import yaml

from policylearn.learn import signal_query
from policylearn.promql import referenced
from policylearn.signals import NOT_LEARNED, SIGNALS
from tests.support import REPO, assert_promtool_accepts_rules

POLICIES = REPO / "prometheus" / "rules" / "policies.yml"
THRESHOLD = re.compile(
    r'judicator:policy_threshold:(?:constant|domain)\{policy="([a-z_]+)",\s*signal="([a-z_]+)"'
)


def policy_exprs() -> list[str]:
    data = yaml.safe_load(POLICIES.read_text())
    return [rule["expr"] for group in data["groups"] for rule in group["rules"]]


def test_every_threshold_the_policies_read_is_learned_or_said_why_not():
    used = {m.groups() for expr in policy_exprs() for m in THRESHOLD.finditer(expr)}
    learned = {s.key for s in SIGNALS}
    assert used, "no threshold found in policies.yml: has the threshold series been renamed?"
    assert used <= learned | set(NOT_LEARNED), used - learned - set(NOT_LEARNED)
    assert not learned & set(NOT_LEARNED)


def test_each_learned_signal_reads_series_the_policies_compare_with_its_threshold():
    exprs = policy_exprs()
    for signal in SIGNALS:
        # the policy expressions (and rates) that name this threshold
        using = [e for e in exprs if f'signal="{signal.signal}"' in e]
        assert using, signal.key
        names = referenced(signal.expr)
        assert names, signal.key
        for name in names:
            assert any(name in e for e in using), (signal.key, name)


def test_every_signal_query_is_valid_promql(tmp_path):
    rules = [
        {"record": f"test:{s.policy}_{s.signal}", "expr": signal_query(s, 60, 2)} for s in SIGNALS
    ]
    path = tmp_path / "signals.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "signals", "rules": rules}]}))
    assert_promtool_accepts_rules(path)
