"""xentools.tcflow: the counting filters' argv lists and the parser of their statistics."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from exporter.flowdirection import FlowDirectionCollector, XenVifs
from tests.support import require_binary, require_root
from xentools.sysfs import Vif
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
        collector = FlowDirectionCollector(XenVifs("/sys"), sink=sink)
        counts, failed = collector._read()  # installs
        assert not failed
        ours = next(v for v in counts if v.name == vif)
        assert counts[ours] == dict.fromkeys(PACKET_KINDS, 0)
        run("ip", "netns", "exec", ns, "ping", "-c", "3", "-i", "0.2", "-W", "1", "198.19.252.1")
        counts, failed = collector._read()
        assert counts[ours]["echo_request"] == 3  # echo requests the "guest" sent
        assert counts[ours]["echo_reply"] == 0  # it answered nothing
        assert counts[ours]["fragment"] == 0
        # 3000-byte pings at the veth's 1500-byte MTU: three fragments each, one request
        ping = ("ip", "netns", "exec", ns, "ping", "-c", "2", "-i", "0.2", "-W", "1")
        run(*ping, "-s", "3000", "198.19.252.1")
        counts, failed = collector._read()
        assert counts[ours]["echo_request"] == 5
        assert counts[ours]["fragment"] == 4
    finally:
        subprocess.run(["ip", "link", "del", vif], capture_output=True, timeout=10)
        subprocess.run(["ip", "link", "del", sink], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


class _TimedReads(FlowDirectionCollector):
    """Reads that take `seconds` and count 1, 2, 3, ... echo requests on one vif."""

    def __init__(self, seconds: float) -> None:
        super().__init__(XenVifs("/nonexistent"))
        self.seconds = seconds
        self.reads = 0

    def _read_counts(self) -> tuple[dict[Vif, dict[str, int]], list[str]]:
        time.sleep(self.seconds)
        self.reads += 1
        return {
            Vif("vif1.0", 1, 0, emulated=False): dict(
                dict.fromkeys(PACKET_KINDS, 0), echo_request=self.reads
            )
        }, []


class _Scrape:
    def __init__(self, budget: float) -> None:
        self.deadline = time.monotonic() + budget

    def domains(self) -> list[SimpleNamespace]:
        return [SimpleNamespace(domid=1, name="g1")]


def _scrape(collector: FlowDirectionCollector, budget: float) -> tuple[float, float]:
    """(seconds the collect took, echo requests served)."""
    started = time.monotonic()
    families = list(collector.collect(_Scrape(budget)))  # type: ignore[arg-type]
    served = next(s.value for s in families[0].samples if s.labels["packet"] == "echo_request")
    return time.monotonic() - started, served


def test_a_read_slower_than_the_scrape_is_not_waited_for_and_served_when_done() -> None:
    collector = _TimedReads(0.05)
    took, served = _scrape(collector, 1.0)
    assert served == 1 and took < 0.5  # a fast read: waited for, fresh
    collector.seconds = 0.6
    took, served = _scrape(collector, 0.3)  # the last read was fast: waited for, in vain
    assert served == 1 and 0.25 < took < 0.55
    time.sleep(0.5)  # that read ends between scrapes
    took, served = _scrape(collector, 0.3)
    assert served == 2  # served by the next scrape, which did not wait for its own read
    assert took < 0.15
