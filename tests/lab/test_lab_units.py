"""The lab's pure parts on the real captures: thresholds as data, windows, calibration, report,
the UDP sweep's table."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from tests.support import imported_project_packages
from xenlab import udpsweep
from xenlab.calibrate import calibrate
from xenlab.demo import LAB_THRESHOLDS, remediator_shaping, render_thresholds
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
    disk = {"rd_req": packets // 2, "wr_req": packets // 4, "rd_sect": 0, "wr_sect": packets}
    return Snapshot(
        at=at,
        xenperf=(FIXTURES / "xenperf" / "real-4.17-perfc-f.txt").read_text(),
        xl_list=(FIXTURES / "xl" / "real-list.txt").read_text(),
        vcpu_list=(FIXTURES / "xl" / "real-vcpu-list.txt").read_text(),
        vifs=vifs,
        vbds={"guest3": disk},
    )


def test_windows_calibration_and_report_on_real_captures() -> None:
    a = _snapshot(100.0, 0)
    b = _snapshot(110.0, 2000)
    flood = window(a, b, VIFS)
    assert flood["seconds"] == 10.0
    assert flood["vifs"]["guest1"]["rx_packets"] == 2000
    disk = {"rd_req": 1000, "wr_req": 500, "rd_sect": 0, "wr_sect": 2000}
    assert flood["vbds"] == {"guest3": disk}
    assert flood["domain_cpu"] == {"Domain-0": 0, "guest1": 1, "guest2": 2, "guest3": 3}
    assert flood["cpu_counters"]["interrupts"] == [0, 0, 0, 0]
    base = window(a, replace(a, at=130.0), VIFS)
    rows = calibrate({"baseline": base, "flood": flood})
    assert rows[0].lab == 200.0  # pings per second
    assert all(r.lab in (0.0, None) for r in rows[1:] if "per s" not in r.quantity)
    udp = dict(flood, vifs={**flood["vifs"], "guest3": dict(flood["vifs"]["guest1"])})
    udp_rows = {r.quantity: r for r in calibrate({"baseline": base, "flood": flood}, udp)}
    assert udp_rows["UDP flood rate (datagrams/s, guest3's vif)"].lab == 200.0
    switches = udp_rows["UDP sender CPU: sched: context switches per datagram sent"]
    assert (switches.lab, switches.simulator) == (0.0, 0.0)
    text = render({"windows": {"baseline": base, "flood": flood}, "error": "none"})
    assert "| flood | 10.0 | 200.0 |" in text


def _all_qdiscs(**by_dev: str) -> str:
    """`tc -j qdisc show` (every device) from per-device captures: each entry gets its "dev"."""
    entries = []
    for dev, fixture in by_dev.items():
        for entry in json.loads((FIXTURES / "tc" / fixture).read_text()):
            entries.append({**entry, "dev": dev.replace("_", ".")})
    return json.dumps(entries)


def _filters(fixture: str) -> str:
    return (FIXTURES / "tc" / fixture).read_text()


def test_the_shaping_check_finds_the_remediators_redirect_to_a_shaping_ifb() -> None:
    qdiscs = _all_qdiscs(vif9_0="qdisc-vif-ingress-only.json", jifb9_0="qdisc-ifb-tbf.json")
    assert remediator_shaping(_filters("filter-vif-redirect.json"), qdiscs) == "jifb9.0"
    counters_too = _filters("filter-vif-counters-and-redirect.json")
    assert remediator_shaping(counters_too, qdiscs) == "jifb9.0"


def test_the_shaping_check_ignores_the_exporters_direction_counters() -> None:
    # the ingress qdisc and the counting filters (mirred mirror, priorities 11-18) shape nothing
    only_counters = [
        e
        for e in json.loads(_filters("filter-vif-counters-and-redirect.json"))
        if e.get("pref") != 49
    ]
    qdiscs = _all_qdiscs(vif9_0="qdisc-vif-ingress-only.json", jifb9_0="qdisc-ifb-tbf.json")
    assert remediator_shaping(json.dumps(only_counters), qdiscs) is None


def test_the_shaping_check_wants_a_shaping_qdisc_behind_the_redirect() -> None:
    # the redirect is there but its ifb has no tbf/htb yet (or any more): not shaped
    qdiscs = _all_qdiscs(vif9_0="qdisc-vif-ingress-only.json")
    assert remediator_shaping(_filters("filter-vif-redirect.json"), qdiscs) is None


def test_the_shaping_check_accepts_one_ifb_per_domain() -> None:
    # the remediator may shape all of a domain's vifs through one ifb: any name, same chain
    filters = _filters("filter-vif-redirect.json").replace("jifb9.0", "jifbd9")
    qdiscs = _all_qdiscs(vif9_0="qdisc-vif-ingress-only.json", jifbd9="qdisc-ifb-tbf.json")
    assert remediator_shaping(filters, qdiscs) == "jifbd9"


def test_the_udp_sweep_charges_each_side_per_datagram_beyond_its_quiet_rate() -> None:
    def udp_window(datagrams: int, switches: list[int]) -> dict[str, Any]:
        vifs = {"guest3": {"rx_packets": datagrams}, "guest2": {"tx_packets": datagrams}}
        return {
            "seconds": 10.0,
            "vifs": vifs,
            "domain_cpu": {"guest2": 3, "guest3": 4},
            "cpu_seconds": {"guest2": 2.0, "guest3": 9.5},
            "cpu_counters": {c: [0, 0, 0, switches[0], switches[1]] for c in udpsweep.COUNTERS},
        }

    windows = {"quiet": udp_window(0, [120, 150]), "flat out": udp_window(10_000, [1120, 170])}
    rows = {r["side"]: r for r in udpsweep.per_datagram(windows)}
    assert rows["send"]["context_switches"] == 0.002 and rows["send"]["busy"] == 0.95
    assert rows["receive"]["context_switches"] == 0.1
    assert "| flat out | send | 1000.0 | 0.95 |" in udpsweep.render(list(rows.values()))


def test_dom0_carries_every_project_package_its_programs_import() -> None:
    from xenlab.images import PROJECT_PACKAGES

    # the services, and xenlab for its agent (xenlab.agent: the standard library alone)
    needed = imported_project_packages("exporter", "remediator") | {"xenlab"}
    assert needed <= set(PROJECT_PACKAGES), sorted(needed - set(PROJECT_PACKAGES))
