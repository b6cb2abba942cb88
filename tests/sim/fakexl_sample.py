"""A deterministic simulated host for the fake xl's tests, and the captures made from it.

``python -m tests.sim.fakexl_sample tests/fixtures/xl`` rewrites the ``fake-*.txt`` fixtures
(only on purpose: ``test_sim_fakexl.py`` fails when a regeneration differs from the files).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from xensim import fakexl
from xensim.state import CpuPool, HostState, StateStore, new_host

LONG_NAME = "a-guest-with-a-name-longer-than-forty-characters"

# Every command the fixtures capture: file stem -> xl argv.
CAPTURES: dict[str, list[str]] = {
    "fake-list": ["list"],
    "fake-list-v": ["list", "-v"],
    "fake-list-c": ["list", "-c"],
    "fake-list-l": ["list", "-l"],
    "fake-vcpu-list": ["vcpu-list"],
    "fake-info": ["info"],
    "fake-cpupool-list": ["cpupool-list"],
    "fake-cpupool-list-c": ["cpupool-list", "-c"],
    "fake-sched-credit2": ["sched-credit2"],
    "fake-sched-credit": ["sched-credit"],
    "fake-sched-credit2-d": ["sched-credit2", "-d", "web01"],
}


def sample_host() -> HostState:
    """8 CPU ids, CPU 6 offline; Pool-0 (credit2) and a credit pool; five domains in all states."""
    host = new_host(
        "sim-sample",
        8,
        online_cpus=[0, 1, 2, 3, 4, 5, 7],
        total_memory_kib=32 * 1024 * 1024,
        dom0_vcpus=2,
        dom0_pinned_cpus=[0],
    )
    host.pools[0].cpus = [0, 1, 2, 3, 4, 5]
    host.pools.append(CpuPool(name="batch-pool", scheduler="credit", cpus=[7]))
    dom0 = host.domains[0]
    dom0.cpu_time_ns = 98_765_432_109_876
    dom0.vcpus[0].time_ns = 50_000_000_000_000
    dom0.vcpus[1].time_ns = 48_765_432_109_876
    dom0.vcpus[1].cpu = 0
    host.next_domid = 3  # two guests came and went

    web = host.add_domain(
        "web01",
        vcpus=2,
        memory_kib=2 * 1024 * 1024,
        pinned_cpus=[1, 2],
        uuid="6f9b3c52-2a8e-4d6b-9d3e-0c1f2a3b4c5d",
        vifs=(0, 1),
    )
    web.cap = 50
    web.cpu_time_ns = 1_234_567_890_123
    web.vcpus[0].time_ns = 873_400_000_000
    web.vcpus[0].cpu = 2
    web.vcpus[1].online = False
    web.vcpus[1].cpu = 1

    long = host.add_domain(
        LONG_NAME,
        vcpus=1,
        memory_kib=512 * 1024,
        max_memory_kib=1024 * 1024,
        pinned_cpus=[3],
        uuid="0a1b2c3d-4e5f-4061-8273-94a5b6c7d8e9",
    )
    long.pause_count = 2
    long.cpu_time_ns = 55_000_000_000
    long.vcpus[0].time_ns = 55_000_000_000
    long.vcpus[0].blocked = False

    host.next_domid = 7
    batch = host.add_domain(
        "batch02",
        vcpus=4,
        memory_kib=8 * 1024 * 1024,
        pinned_cpus=[7],
        pool="batch-pool",
        uuid="11111111-2222-4333-8444-555555555555",
        weight=512,
    )
    batch.cpu_time_ns = 3_600_123_456_789
    for vcpu in batch.vcpus:
        vcpu.time_ns = 900_030_864_197
    batch.vcpus[0].running = True
    batch.vcpus[0].blocked = False
    batch.vifname = "batch02-eth"

    dead = host.add_domain(
        "dead01", vcpus=1, memory_kib=256 * 1024, uuid="deadbeef-0000-4000-8000-000000000001"
    )
    dead.shutdown_reason = "crash"
    dead.dying = True
    dead.vifs = []
    dead.vcpus[0].soft = "4-5"
    dead.cpu_time_ns = 12_345_678
    return host


def write_sample(state_dir: Path) -> StateStore:
    store = StateStore(state_dir)
    store.initialize(sample_host())
    return store


def capture(store: StateStore, argv: list[str]) -> tuple[int, str, str]:
    out = fakexl.Output()
    status = fakexl.run(argv, store, out)
    return status, "".join(out.out), "".join(out.err)


def captures() -> dict[str, str]:
    with tempfile.TemporaryDirectory(prefix="fakexl-sample.") as state_dir:
        store = write_sample(Path(state_dir))
        result = {}
        for stem, argv in CAPTURES.items():
            status, stdout, stderr = capture(store, argv)
            assert status == 0 and not stderr, (argv, status, stderr)
            result[stem] = stdout
        return result


def main() -> None:
    target = Path(sys.argv[1])
    for stem, text in captures().items():
        (target / f"{stem}.txt").write_text(text)


if __name__ == "__main__":
    main()
