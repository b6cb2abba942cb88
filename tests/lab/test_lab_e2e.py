"""The published experiment on the real hypervisor, end to end (in `make test`, so in CI).

Boots Debian's Xen 4.17 rebuilt with perf counters under QEMU (xenlab), runs the real exporter
and remediator in Dom0 and Prometheus/Alertmanager beside it, and lets guest1 ping-flood
guest2: the flood policy must fire on guest1 (not on its victim), tc on guest1's real vif must
cut the flood, and `xl sched-credit2 -c` / `xl pause` must work on a real domain. About 5
minutes on a quiet 2-core machine (docs/lab.md, "Timings"); the VM is torn down whatever
happens (xenlab.vm.booted). A start that fails under emulation is retried once, and listed in
the report (`failed_boots`). Needs `make lab-deps` (which `make test` runs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support import require, require_binary, require_root
from xenlab.paths import DEFAULT_CACHE, LabPaths

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    require_root()
    require_binary("qemu-system-x86_64")
    require_binary("prometheus")
    paths = LabPaths(DEFAULT_CACHE)
    require(paths.xen_perfc.exists() and paths.dom0_initrd.exists(), "run `make lab-deps`")
    from xenlab.demo import run_demo

    out: Path = tmp_path_factory.mktemp("lab-demo")
    return run_demo(paths, out)


def test_both_readers_read_the_real_hypervisor(demo: dict[str, Any]) -> None:
    for reader, families in demo["readers"].items():
        assert families, f"{reader}: no collector_success lines"
        assert all(v == 1.0 for v in families.values()), (reader, families)


def test_the_flood_policy_fires_on_the_attacker(demo: dict[str, Any]) -> None:
    timeline = demo["timeline"]
    assert timeline["alert"] in ("XenNetworkFloodPerfc", "XenNetworkFloodVif")
    assert timeline["shaped_after_s"] is not None
    fired = [a for a in demo["alerts"] if a["labels"].get("policy") == "network_flood"]
    assert {a["labels"]["domain"] for a in fired} == {"guest1"}, fired
    # The victim takes as many interrupts and context switches as its attacker on real Xen:
    # what spares it is that it starts none of the traffic it sends.
    assert demo["victim_shaped_by"] is None


def test_tc_on_the_real_vif_cuts_the_flood(demo: dict[str, Any]) -> None:
    windows = demo["windows"]

    def rate(name: str) -> float:
        w = windows[name]
        return float(w["vifs"]["guest1"]["rx_bytes"]) / float(w["seconds"])

    assert rate("flood") > 5 * rate("baseline")
    assert rate("shaped") < 0.7 * rate("flood"), (rate("shaped"), rate("flood"))


def test_the_counters_rise_on_the_attackers_and_victims_cpus(demo: dict[str, Any]) -> None:
    base, flood = demo["windows"]["baseline"], demo["windows"]["flood"]
    for guest in ("guest1", "guest2"):
        cpu = flood["domain_cpu"][guest]
        before = base["cpu_counters"]["interrupts"][cpu] / base["seconds"]
        during = flood["cpu_counters"]["interrupts"][cpu] / flood["seconds"]
        assert during > 3 * before, (guest, before, during)
    idle_cpu = flood["domain_cpu"]["guest3"]
    idle = flood["cpu_counters"]["interrupts"][idle_cpu] / flood["seconds"]
    attacker = flood["cpu_counters"]["interrupts"][flood["domain_cpu"]["guest1"]]
    assert idle < 0.2 * attacker / flood["seconds"]


def test_xl_cap_and_pause_act_on_a_real_domain(demo: dict[str, Any]) -> None:
    actions = demo["xl_actions"]
    assert actions["cap_after_set"] == 25
    assert "p" in actions["state_after_pause"]
    assert "p" not in actions["state_after_unpause"]


def test_the_guests_run_every_workload_kind(demo: dict[str, Any]) -> None:
    """guest3 runs the simulated host's other workload kinds for real, 10 s each: web, bulk,
    CPU, memory, disk and a UDP flood."""
    assert "workloads_error" not in demo, demo.get("workloads_error")
    windows = demo["workloads"]

    def per_second(name: str, value: float) -> float:
        return value / float(windows[name]["seconds"])

    def sent(name: str, stat: str) -> float:
        return per_second(name, windows[name]["vifs"]["guest3"][stat])

    def on_its_cpu(name: str, counter: str) -> float:
        w = windows[name]
        return per_second(name, w["cpu_counters"][counter][w["domain_cpu"]["guest3"]])

    # Against ~0.5 packets/s each way of the control connection alone (emulation: a request
    # takes about a second, one TCP stream ~1 MB/s).
    assert sent("web", "rx_packets") > 1.5 and sent("web", "tx_packets") > 1.5  # requests, pages
    assert sent("bulk", "rx_bytes") > 100_000  # bytes/s of one TCP stream
    assert per_second("cpu", windows["cpu"]["cpu_seconds"]["guest3"]) > 0.5
    assert on_its_cpu("memory", "page_faults") > 10 * max(on_its_cpu("cpu", "page_faults"), 1)

    def disk_requests(name: str) -> float:
        vbd = windows[name]["vbds"]["guest3"]
        return per_second(name, vbd["rd_req"] + vbd["wr_req"])

    assert disk_requests("disk") > 10 * max(disk_requests("cpu"), 1)  # blkback served them
    # A flood sends far more than any client here, and it reaches its target through the bridge.
    flood = sent("udpflood", "rx_packets")
    assert flood > 10 * sent("web", "rx_packets")
    received = per_second("udpflood", windows["udpflood"]["vifs"]["guest2"]["tx_packets"])
    assert received > flood / 2
