"""The scenario loader: every shipped scenario is valid, and a bad file names each problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from policylearn.cli import DOMAINS_FILE
from xeneval.runner import rules_with_domain_thresholds
from xeneval.scenario import ScenarioError, discover, load_scenario, select
from xensim.history import eval_profiles
from xensim.stack import SHIPPED_RULES_DIR

GOOD = """
description: one guest floods another
tags: [attack, network, fast]
cpus: 4
duration: 30
baseline: 5
guests:
  - {name: attacker, cpus: [1], role: attacker, vifs: 2}
  - {name: victim, cpus: [2], role: victim}
  - {name: web, cpus: [3]}
workloads:
  - {guest: web, kind: webserver, duration: 30}
  - {guest: attacker, kind: udpflood, target: victim, rate: 12000, duty: 0.5, period: 10,
     ifaces: [eth0, eth1], duration: 20}
"""


def test_a_good_scenario_loads_with_its_defaults() -> None:
    scenario = load_scenario(GOOD, "dir/flood.yaml")
    assert scenario.name == "flood"
    assert [g.expect for g in scenario.guests] == ["throttled", "spared", "spared"]
    assert [g.role for g in scenario.guests] == ["attacker", "victim", "benign"]
    web, flood = scenario.workloads
    assert web.start == 0.0  # benign workloads start with the run
    assert flood.start == 5.0  # an attacker's at the end of the baseline
    assert flood.ifaces == ("eth0", "eth1")
    assert scenario.attack_window() == (5.0, 25.0)
    assert scenario.attackers == ["attacker"]
    assert scenario.victims == ["victim"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("role: attacker, vifs: 2", "role: boss"), "role must be one of"),
        (("kind: udpflood", "kind: fork-bomb"), "kind must be one of"),
        (("target: victim", "target: nobody"), "target 'nobody' is not another"),
        (("duration: 20", "duration: 40"), "ends at 45 s, after the run"),
        (("duty: 0.5", "duty: 1.5"), "duty must be in"),
        (
            (
                "kind: webserver, duration: 30",
                "kind: webserver, rate: 5, duty: 0.5, period: 2, duration: 30",
            ),
            "cannot pulse",
        ),
        (("cpus: [3]", "cpus: [0]"), "CPU 0 is Domain-0's"),
        (("{name: web", "{name: victim"), "duplicate guest"),
        (("tags:", "colour: blue\ntags:"), "unknown key 'colour'"),
    ],
)
def test_a_bad_scenario_names_its_problem(change: tuple[str, str], message: str) -> None:
    text = GOOD.replace(*change)
    assert text != GOOD
    with pytest.raises(ScenarioError, match=message):
        load_scenario(text, "bad.yaml")


def test_every_problem_is_listed_at_once() -> None:
    text = GOOD.replace("cpus: 4", "cpus: 99").replace("kind: udpflood", "kind: nope")
    with pytest.raises(ScenarioError) as raised:
        load_scenario(text, "bad.yaml")
    assert "cpus must be" in str(raised.value)
    assert "kind must be one of" in str(raised.value)


def test_an_attacker_without_a_workload_is_refused() -> None:
    text = GOOD.replace("- {guest: attacker", "- {guest: web")
    text = text.replace("target: victim, rate", "target: victim, rate")
    with pytest.raises(ScenarioError, match="attacker 'attacker' runs no workload"):
        load_scenario(text, "bad.yaml")


def test_every_shipped_scenario_is_valid_and_the_corpus_covers_the_issue() -> None:
    scenarios = select(discover(), [])
    assert len(scenarios) >= 20
    names = {s.name for s in scenarios}
    assert len(names) == len(scenarios)
    tags = {t for s in scenarios for t in s.tags}
    assert {"attack", "benign", "network", "cpu", "memory", "disk", "pulsing"} <= tags
    kinds = {w.kind for s in scenarios for w in s.workloads}
    assert {"pingflood", "udpflood", "cpuhog", "memhog", "diskhog", "boot"} <= kinds
    assert {"udpclient", "tcpclient", "bulk", "web"} <= kinds
    assert any(len(s.attackers) >= 2 for s in scenarios)
    assert any(w.duty for s in scenarios for w in s.workloads)
    assert any(w.pad_every for s in scenarios for w in s.workloads)
    assert any(g.vifs > 1 for s in scenarios for g in s.guests)
    # The corpus stays within its time budget on a 2-core machine (the pulsing forms judge two
    # minutes: the scenarios that need them run 146 s).
    assert sum(s.duration for s in scenarios) < 1800


def test_select_by_glob_by_file_and_fast(tmp_path: Path) -> None:
    (tmp_path / "one.yaml").write_text(GOOD)
    (tmp_path / "two.yaml").write_text(GOOD.replace("fast]", "slow]"))
    paths = discover(tmp_path)
    assert [s.name for s in select(paths, [])] == ["one", "two"]
    assert [s.name for s in select(paths, ["t*"])] == ["two"]
    assert [s.name for s in select(paths, [], fast=True)] == ["one"]
    extra = tmp_path / "three.yaml"
    extra.write_text(GOOD)
    assert [s.name for s in select([], [str(extra)])] == ["three"]
    with pytest.raises(ScenarioError, match="no scenario matches nothing"):
        select(paths, ["nothing"])


def test_the_simulator_takes_a_guest_with_two_vifs() -> None:
    from xensim.cli import UsageError
    from xensim.cli import load_scenario as load_host

    host, _ = load_host("guests:\n  - {name: a, cpus: [1], vifs: 2}\n", "host.yaml")
    assert host.guests[0].vifs == 2
    with pytest.raises(UsageError, match=r"vifs must be an integer 1\.\.2"):
        load_host("guests:\n  - {name: a, vifs: 3}\n", "host.yaml")


def test_every_guest_of_the_corpus_has_a_history_to_learn_from() -> None:
    # `python -m xensim.learndemo --profiles eval` learns thresholds for the corpus's guests by
    # name; a guest without a profile would silently keep the shipped defaults.
    profiled = {profile.domain for profile in eval_profiles()}
    guests = {guest.name for scenario in select(discover(), []) for guest in scenario.guests}
    assert guests <= profiled, sorted(guests - profiled)


def test_learned_thresholds_replace_only_the_per_domain_file(tmp_path: Path) -> None:
    learned = tmp_path / "learned.yml"
    learned.write_text("groups: []\n")
    with rules_with_domain_thresholds(learned) as rules:
        assert sorted(p.name for p in rules.iterdir()) == sorted(
            p.name for p in SHIPPED_RULES_DIR.iterdir()
        )
        assert (rules / DOMAINS_FILE).read_text() == "groups: []\n"
        assert (rules / "policies.yml").read_bytes() == (
            SHIPPED_RULES_DIR / "policies.yml"
        ).read_bytes()
    assert not rules.exists()
