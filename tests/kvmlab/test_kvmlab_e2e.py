"""Real KVM guests, nested: one boot of the KVM lab (L1 = a KVM host under QEMU's software
emulation, two L2 guests under KVM in it), then on the real hypervisor: each guest's per-VM
debugfs statistics rise under a bounded ping flood from l2a to l2b far more than when idle; the
taps' counters move; the remediator's tc chain on the flooder's tap shapes it; nothing is left
running afterwards. A run that hits an emulation fault (an L1 panic, a dead L2 QEMU) is retried
from a fresh L1, up to three runs, and reported (kvmlab.flood; the session's summary prints the
record). About 4-6 minutes on a quiet 2-core machine (docs/kvm-lab.md). Needs `make kvmlab-deps`
(Debian's kernel, which `make lab-deps` also fetches).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from kvmlab.paths import DEFAULT_CACHE, KvmLabPaths
from tests.support import require, require_binary, require_root
from xenlab.vm import qemu_alive

pytestmark = [pytest.mark.slow]

PATHS = KvmLabPaths(DEFAULT_CACHE)
# Per guest and stat: its rate in the flood over its rate when idle, and what each flood packet
# adds beyond the idle rate (these hold on a quiet machine and at load ~8, where the flood
# itself is 4 times slower: ~16 against ~60 packets/s). The flooder's halt_exits are left out:
# a flooder starved of CPU (load) never halts, so they rise only on a quiet machine.
STATS_RISE = {
    ("l2a", "exits"): (3.0, 4.0),
    ("l2a", "irq_injections"): (3.0, 2.0),
    ("l2b", "exits"): (2.0, 1.5),
    ("l2b", "irq_injections"): (2.0, 0.8),
    ("l2b", "halt_exits"): (1.5, 0.3),
}


@pytest.fixture(scope="module")
def run() -> dict[str, Any]:
    require_root()
    require_binary("qemu-system-x86_64")
    require(PATHS.vmlinuz.exists(), "run `make kvmlab-deps` (Debian's kernel)")
    from kvmlab.flood import run_checks
    from kvmlab.images import build

    build(PATHS)  # seconds when up to date
    result = run_checks(PATHS, attempts=3)  # stops L1 whatever happens
    print(json.dumps({k: result[k] for k in ("timings", "attempts", "retries", "faults")}))
    return result


def _rate(window: dict[str, Any], guest: str, stat: str) -> float:
    return float(window["stats"][guest][stat]) / float(window["seconds"])


def test_each_guest_has_its_scope_and_its_debugfs_stats_dir(run: dict[str, Any]) -> None:
    for guest, pid in run["l2_pids"].items():
        assert run["stats_dirs"][guest].startswith(f"/sys/kernel/debug/kvm/{pid}-")
        assert str(pid) in run["scopes"][guest]  # QEMU and its threads, nothing else
    assert "3 received" in run["ping"]


def test_the_flood_is_real_and_bounded(run: dict[str, Any]) -> None:
    ping = run["flood"]["ping"]
    assert ping["transmitted"] >= 100, ping  # ~60/s on a quiet machine, ~16/s at load ~8
    assert ping["received"] >= 0.9 * ping["transmitted"]
    assert ping["seconds"] <= 16


@pytest.mark.parametrize(("guest", "stat"), sorted(STATS_RISE))
def test_kvm_stats_rise_under_the_flood(run: dict[str, Any], guest: str, stat: str) -> None:
    idle, flood = run["idle"], run["flood"]
    ratio, per_packet = STATS_RISE[guest, stat]
    idle_rate = max(_rate(idle, guest, stat), 1.0)
    flood_rate = _rate(flood, guest, stat)
    excess = (flood_rate - idle_rate) * float(flood["seconds"]) / flood["ping"]["transmitted"]
    detail = (guest, stat, idle_rate, flood_rate, excess)
    assert flood_rate > ratio * idle_rate, detail
    assert excess > per_packet, detail


def test_the_taps_count_the_flood(run: dict[str, Any]) -> None:
    ping, taps = run["flood"]["ping"], run["flood"]["taps"]
    # a tap's rx is what its guest sends, its tx what the guest receives
    assert taps["l2a"]["rx_packets"] >= ping["transmitted"]
    assert taps["l2b"]["tx_packets"] >= ping["transmitted"] * 0.9
    assert taps["l2b"]["rx_packets"] >= ping["received"]
    assert run["idle"]["taps"]["l2a"]["rx_packets"] < 0.05 * taps["l2a"]["rx_packets"]


def test_the_tc_chain_on_the_flooders_tap_shapes_it(run: dict[str, Any]) -> None:
    shaping = run["shaping"]
    unshaped, shaped = shaping["unshaped"], shaping["shaped"]
    assert shaped["delivered_kbit_s"] < 0.6 * unshaped["delivered_kbit_s"], shaping
    assert shaped["delivered_kbit_s"] < 1.5 * shaping["rate_kbit"], shaping
    assert "dropped 0," not in shaping["tc"], shaping["tc"]


def test_nothing_is_left_running(run: dict[str, Any]) -> None:
    assert run["l1_pids"] and run["l1_pid"] in run["l1_pids"]
    for pid in run["l1_pids"]:
        assert not qemu_alive(pid), f"L1's QEMU {pid} still runs"
    assert not PATHS.state_file.exists()


def test_the_attempts_are_recorded(run: dict[str, Any]) -> None:
    record = json.loads(PATHS.retries_file.read_text())
    assert record["attempts"] == run["attempts"] == run["retries"] + 1
    assert len(record["faults"]) == run["retries"]
