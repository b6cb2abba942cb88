"""Which perf counters are exported: by default those the shipped rules and dashboards read,
the rest only when --collector.perfc.include asks (node_exporter's include flags)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from exporter.collector import Exporter
from exporter.perfc import DEFAULT_INCLUDE, PerfcCollector
from tests.exporter.fakes import FakeReader, FakeToolstack, fixture_snapshot
from tests.exporter.test_exporter_perfc import scrape

REPO = Path(__file__).resolve().parents[2]
READ_BY_US = re.compile(r"\bxen_perfc_[a-z0-9_]+?_total\b")


def shipped_reads() -> set[str]:
    """Every perf counter family a shipped rule or dashboard reads (metric name, no _total)."""
    texts = [path.read_text() for path in sorted((REPO / "prometheus" / "rules").glob("*.yml"))]
    texts += [path.read_text() for path in sorted((REPO / "grafana" / "dashboards").glob("*.json"))]
    return {name.removesuffix("_total") for text in texts for name in READ_BY_US.findall(text)}


def test_the_default_exports_every_counter_the_shipped_rules_and_dashboards_read() -> None:
    reads = shipped_reads()
    assert "xen_perfc_interrupts" in reads  # the scan finds what it must
    missing = sorted(name for name in reads if not re.fullmatch(DEFAULT_INCLUDE, name))
    assert not missing, f"add these to exporter.perfc.DEFAULT_COUNTERS: {missing}"


def exported(include: str | None) -> set[str]:
    reader = FakeReader(fixture_snapshot("4.17-4cpu-f.txt"))
    collector = PerfcCollector(reader) if include is None else PerfcCollector(reader, include)
    registry = scrape(Exporter([collector], FakeToolstack(), command_timeout=2, scrape_timeout=5))
    return {metric.name for metric in registry.collect()}


def test_by_default_only_what_is_read() -> None:
    names = {name for name in exported(None) if name.startswith("xen_perfc_")}
    assert names - {"xen_perfc_available"} <= shipped_reads()
    wanted = {"xen_perfc_interrupts", "xen_perfc_sched_context_switches", "xen_perfc_hypercalls"}
    assert wanted <= names
    assert "xen_perfc_exceptions" not in names and "xen_perfc_vmexits" not in names


@pytest.mark.parametrize(
    ("include", "present", "absent"),
    [
        (".*", {"xen_perfc_exceptions", "xen_perfc_sched_context_switches"}, set()),
        ("xen_perfc_exceptions", {"xen_perfc_exceptions"}, {"xen_perfc_interrupts"}),
        ("xen_perfc_sched_.*", {"xen_perfc_sched_context_switches"}, {"xen_perfc_interrupts"}),
    ],
)
def test_the_include_pattern_chooses(include: str, present: set[str], absent: set[str]) -> None:
    names = exported(include)
    assert present <= names
    assert not absent & names
    assert {"xen_perfc_available", "xen_pcpu_domain_share_ratio"} <= names
