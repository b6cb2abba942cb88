"""The lab's pure parts on the real captures: thresholds as data, windows, calibration, report."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import yaml

from xenlab.calibrate import calibrate
from xenlab.demo import LAB_THRESHOLDS, render_thresholds
from xenlab.measure import Snapshot, window
from xenlab.report import render
from xensim.stack import SHIPPED_RULES_DIR

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
VIFS = {"guest1": "vif1.0", "guest2": "vif2.0", "guest3": "vif3.0"}


def test_lab_thresholds_replace_only_values_of_known_signals() -> None:
    overrides = yaml.safe_load(LAB_THRESHOLDS.read_text())
    text = render_thresholds(SHIPPED_RULES_DIR / "thresholds.yml", overrides)
    shipped = yaml.safe_load((SHIPPED_RULES_DIR / "thresholds.yml").read_text())
    rendered = yaml.safe_load(text)
    shipped_rules = [r for g in shipped["groups"] for r in g["rules"]]
    rendered_rules = [r for g in rendered["groups"] for r in g["rules"]]
    assert [r["labels"] for r in rendered_rules] == [r["labels"] for r in shipped_rules]
    changed = [r for r, s in zip(rendered_rules, shipped_rules, strict=True) if r != s]
    assert len(changed) == sum(len(v) for v in overrides.values())
    assert all(set(r) == {"record", "expr", "labels"} for r in changed)


def _snapshot(at: float, packets: int) -> Snapshot:
    stats = dict.fromkeys(("rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "rx_dropped",
                           "tx_dropped"), 0)  # fmt: skip
    vifs = {g: dict(stats) for g in VIFS}
    vifs["guest1"] = dict(stats, rx_packets=packets, tx_packets=packets, rx_bytes=packets * 1442)
    return Snapshot(
        at=at,
        xenperf=(FIXTURES / "xenperf" / "real-4.17-perfc-f.txt").read_text(),
        xl_list=(FIXTURES / "xl" / "real-list.txt").read_text(),
        vcpu_list=(FIXTURES / "xl" / "real-vcpu-list.txt").read_text(),
        vifs=vifs,
    )


def test_windows_calibration_and_report_on_real_captures() -> None:
    a = _snapshot(100.0, 0)
    b = _snapshot(110.0, 2000)
    flood = window(a, b, VIFS)
    assert flood["seconds"] == 10.0
    assert flood["vifs"]["guest1"]["rx_packets"] == 2000
    assert flood["domain_cpu"] == {"Domain-0": 0, "guest1": 1, "guest2": 2, "guest3": 3}
    assert flood["cpu_counters"]["interrupts"] == [0, 0, 0, 0]
    base = window(a, replace(a, at=130.0), VIFS)
    rows = calibrate({"baseline": base, "flood": flood})
    assert rows[0].lab == 200.0  # pings per second
    assert all(r.lab in (0.0, None) for r in rows[1:] if "per s" not in r.quantity)
    text = render({"windows": {"baseline": base, "flood": flood}, "error": "none"})
    assert "| flood | 10.0 | 200.0 |" in text
