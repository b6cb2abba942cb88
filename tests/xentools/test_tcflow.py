"""xentools.tcflow: the counting filters' argv lists and the parser of their statistics."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from exporter.flowdirection import FlowDirectionCollector
from tests.support import require_binary, require_root
from xentools.tcflow import (
    FLOW_FILTERS,
    FLOW_PREFS,
    PACKET_KINDS,
    install_argvs,
    parse_action_counts,
    parse_flow_counts,
    parse_flow_indexes,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tc"


def test_parse_counts_ours_by_priority_and_ignores_the_remediators_redirect() -> None:
    text = (FIXTURES / "filter-vif-flow-counters.json").read_text()
    counts = parse_flow_counts(text)
    assert set(counts) == set(FLOW_PREFS)
    assert counts[11] == 4
    assert all(counts[pref] == 0 for pref in FLOW_PREFS if pref != 11)
    assert 49 not in counts


def test_parse_indexes_and_action_counts() -> None:
    text = (FIXTURES / "filter-vif-flow-counters.json").read_text()
    indexes = parse_flow_indexes(text)
    assert set(indexes) == set(FLOW_PREFS)
    assert len(set(indexes.values())) == len(FLOW_PREFS)
    listing = (FIXTURES / "actions-mirred.json").read_text()
    counts = parse_action_counts(listing)
    assert counts == {1: 4, 2: 0}


@pytest.mark.parametrize("text", ["", "[]", '[{"pref": 49, "kind": "u32"}]'])
def test_parse_without_our_filters_is_empty(text: str) -> None:
    assert parse_flow_counts(text) == {}


def test_filters_sit_before_the_remediators_redirect_and_continue() -> None:
    assert all(f.pref < 49 for f in FLOW_FILTERS)
    assert len(FLOW_PREFS) == len(FLOW_FILTERS)
    for argv in install_argvs("tc", "vif3.0", "sink0", set(FLOW_PREFS))[1:]:
        assert argv[-1] == "continue"
        assert argv[argv.index("prio") + 1] in {str(p) for p in FLOW_PREFS}


def test_collector_counts_echo_requests_on_a_real_vif() -> None:
    require_root()
    require_binary("tc")
    ns, vif = "jt-flowtest", "vif4077.0"
    sink = "jtflowsink0"

    def run(*argv: str) -> None:
        subprocess.run(argv, check=True, capture_output=True, timeout=10)

    try:
        run("ip", "netns", "add", ns)
        run("ip", "link", "add", vif, "type", "veth", "peer", "name", "eth0", "netns", ns)
        run("ip", "addr", "add", "198.19.252.1/30", "dev", vif)
        run("ip", "link", "set", vif, "up")
        run("ip", "-n", ns, "addr", "add", "198.19.252.2/30", "dev", "eth0")
        run("ip", "-n", ns, "link", "set", "eth0", "up")
        collector = FlowDirectionCollector("/sys", sink=sink)
        counts, failed = collector._read()  # installs
        assert not failed
        ours = next(v for v in counts if v.name == vif)
        assert counts[ours] == dict.fromkeys(PACKET_KINDS, 0)
        run("ip", "netns", "exec", ns, "ping", "-c", "3", "-i", "0.2", "-W", "1", "198.19.252.1")
        counts, failed = collector._read()
        assert counts[ours]["echo_request"] == 3  # echo requests the "guest" sent
        assert counts[ours]["echo_reply"] == 0  # it answered nothing
    finally:
        subprocess.run(["ip", "link", "del", vif], capture_output=True, timeout=10)
        subprocess.run(["ip", "link", "del", sink], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
