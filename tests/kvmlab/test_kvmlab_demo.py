"""The product on real KVM guests: the published experiment of the KVM lab (kvmlab.demo, one boot
of L1 with two KVM guests) run once, then judged. The exporter (`--platform=kvm`) and the
remediator (`platform: kvm`) run in L1 as on a KVM host, Prometheus and Alertmanager on this
machine with the shipped rules and the lab's thresholds: KVM's counters move under a real flood,
a shipped policy fires for the flooder alone, the remediator shapes its tap for real, and its
other KVM actions (a cgroup cap, a QMP pause) act on a real VM. A run that hit an emulation
fault is run again from a fresh L1, up to three runs, and counted (results' "runs", "faults").
About 7-9 minutes on a quiet 2-core machine (docs/kvm-lab.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kvmlab.demo import ATTACKER, FLOOD_ALERTS, VICTIM
from kvmlab.paths import DEFAULT_CACHE, KvmLabPaths
from tests.support import require, require_binary, require_root
from xenlab.vm import qemu_alive

pytestmark = [pytest.mark.slow]

PATHS = KvmLabPaths(DEFAULT_CACHE)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    require_root()
    for binary in ("qemu-system-x86_64", "prometheus", "prometheus-alertmanager"):
        require_binary(binary)
    require(PATHS.vmlinuz.exists(), "run `make kvmlab-deps` (Debian's kernel)")
    from kvmlab.demo import run_demo
    from kvmlab.images import build

    build(PATHS)  # seconds when up to date
    out = tmp_path_factory.mktemp("kvmlab-demo")
    found = run_demo(PATHS, out)  # stops L1 whatever happens
    found["out"] = str(out)
    summary = {k: found.get(k) for k in ("runs", "retries", "timings", "timeline", "error")}
    print(json.dumps(summary, default=str))
    return found


def _guest(results: dict[str, Any], window: str, guest: str) -> dict[str, float]:
    found = results["windows"].get(window) or results[window]
    row: dict[str, float] = found["guests"][guest]
    return row


def test_the_experiment_ran_to_its_end(results: dict[str, Any]) -> None:
    assert "error" not in results, results.get("error")
    assert results["runs"] == results["retries"] + 1 == len(results["faults"]) + 1


@pytest.mark.parametrize("stat", ["exits", "irq_injections"])
def test_kvm_counters_move_under_the_real_flood(results: dict[str, Any], stat: str) -> None:
    for guest in (ATTACKER, VICTIM):
        quiet = max(_guest(results, "baseline", guest)[stat], 1.0)
        assert _guest(results, "flood", guest)[stat] > 3 * quiet, (guest, stat)


def test_the_exporter_publishes_each_vm_with_its_counters(results: dict[str, Any]) -> None:
    text = (Path(results["out"]) / "metrics.txt").read_text()
    for guest in (ATTACKER, VICTIM):
        assert f'kvm_vm_irq_injections_total{{domain="{guest}"}}' in text
        assert f'kvm_domain_cpu_seconds_total{{domain="{guest}"}}' in text
        assert f'interface="tap{guest}"' in text
    assert 'kvm_domain_network_transmit_flow_packets_total{domain="l2a"' in text


def test_a_shipped_policy_fires_for_the_flooder_and_its_tap_is_shaped(
    results: dict[str, Any],
) -> None:
    timeline = results["timeline"]
    assert timeline["alert"] in FLOOD_ALERTS
    assert timeline["firing_after_s"] is not None
    assert timeline["shaped_after_s"] is not None
    assert timeline["shaper"].startswith("jifb")
    fired = {
        (a["labels"]["alertname"], a["labels"]["domain"])
        for a in results["alerts"]
        if a["labels"].get("policy") == "network_flood"
    }
    assert {domain for _, domain in fired} == {ATTACKER}, fired


def test_the_shaping_holds_the_flooder_to_the_policys_rate(results: dict[str, Any]) -> None:
    # What reaches the victim (its tap's transmit); the flooder's own tap counts what it sent
    # before the ingress redirect to the shaper.
    unshaped = _guest(results, "until_shaped", VICTIM)["received_kbit_s"]
    shaped = _guest(results, "shaped", VICTIM)["received_kbit_s"]
    assert unshaped > 1000, unshaped  # above the policy's 1mbit: there is something to cut
    assert shaped < 0.8 * unshaped, (unshaped, shaped)
    assert shaped < 1000 * 1.3, shaped  # 1mbit, and the 32 KB burst over the window


def test_the_victim_is_not_touched(results: dict[str, Any]) -> None:
    assert results["victim_shaped_by"] is None


def test_the_remediators_kvm_actions_act_on_a_real_vm(results: dict[str, Any]) -> None:
    actions = results["kvmctl_actions"]
    quota, period = actions["cpu_max_after_cap"].split()
    assert int(quota) == int(period) // 4  # 25 % of one CPU
    assert actions["cpu_max_after_uncap"].split()[0] == "max"
    assert actions["listed_after_pause"][VICTIM] is True
    assert actions["listed_after_unpause"][VICTIM] is False
    assert actions["answers_after_unpause"].startswith(f"up {VICTIM}")


def test_nothing_is_left_running(results: dict[str, Any]) -> None:
    assert not PATHS.state_file.exists()
    for pid in results.get("l1_pids", []):
        assert not qemu_alive(pid)


def test_the_report_and_the_figure_are_written(results: dict[str, Any]) -> None:
    out = Path(results["out"])
    assert "Detection and shaping" in (out / "report.md").read_text()
    assert (out / "report.png").stat().st_size > 0
