"""xensim.state: the simulated host's toolstack state that the fake xl, the daemon and
judicator-sim share (locking, atomic saves, domain life cycle)."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest

from xensim.state import (
    DomainNotFound,
    StateError,
    StateStore,
    cpulist_set,
    cpulist_string,
    new_host,
)


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    store = StateStore(tmp_path / "state")
    store.initialize(new_host("sim-test", 4, dom0_vcpus=1, dom0_pinned_cpus=[0]))
    return store


def test_transaction_saves_on_success_only(store: StateStore) -> None:
    with store.transaction() as host:
        host.add_domain("web01", vcpus=2, pinned_cpus=[1, 2])
    with pytest.raises(RuntimeError), store.transaction() as host:
        host.domain("web01").cap = 50
        raise RuntimeError("abandon")
    saved = store.read()
    assert saved.domain("web01").cap == 0
    assert [v.hard for v in saved.domain("web01").vcpus] == ["1-2", "1-2"]
    assert [v.cpu for v in saved.domain("web01").vcpus] == [1, 2]
    assert not [name for name in os.listdir(store.dir) if name.endswith(".tmp")]


def _add_guests(state_dir: str, prefix: str, count: int) -> None:
    store = StateStore(state_dir)
    for i in range(count):
        with store.transaction() as host:
            host.add_domain(f"{prefix}{i}", vcpus=1)


def test_concurrent_writers_lose_nothing(store: StateStore) -> None:
    context = multiprocessing.get_context("fork")
    workers = [
        context.Process(target=_add_guests, args=(store.dir, f"w{n}-", 15)) for n in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert [worker.exitcode for worker in workers] == [0, 0, 0, 0]
    host = store.read()
    guests = [d for d in host.domains if d.domid != 0]
    assert len(guests) == 60
    assert sorted(d.domid for d in guests) == list(range(1, 61))
    assert host.next_domid == 61


def test_domain_life_cycle(store: StateStore) -> None:
    with store.transaction() as host:
        web = host.add_domain("web01", vcpus=1, memory_kib=1024, pinned_cpus=[3])
        uuid = web.uuid
        assert host.domain("1") is web and host.domain(1) is web and host.domain("web01") is web
        with pytest.raises(StateError):
            host.add_domain("web01")
        host.domain("web01").pause_count = 3
        rebooted = host.reboot_domain("web01")
        assert (rebooted.name, rebooted.uuid, rebooted.domid, rebooted.pause_count) == (
            "web01",
            uuid,
            2,
            0,
        )
        assert host.find_domain("1") is None
        assert rebooted.interface_name(0) == "vif2.0"
        assert host.destroy_domain("2").name == "web01"
        with pytest.raises(DomainNotFound):
            host.domain("web01")
        with pytest.raises(StateError):
            host.destroy_domain("Domain-0")
    assert store.read().next_domid == 3


def test_host_facts(store: StateStore) -> None:
    host = store.read()
    assert (host.nr_cpus, host.online_cpus, host.max_cpu_id) == (4, [0, 1, 2, 3], 3)
    assert [(p.name, p.scheduler, p.cpus) for p in host.pools] == [
        ("Pool-0", "credit2", [0, 1, 2, 3])
    ]
    dom0 = host.domain(0)
    assert (dom0.name, dom0.domid, dom0.vcpus[0].hard) == ("Domain-0", 0, "0")
    with pytest.raises(StateError):
        new_host("bad", 4, online_cpus=[4])
    with pytest.raises(StateError):
        new_host("bad", 4, scheduler="rtds")


def test_missing_or_foreign_state(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="no simulated host state"):
        StateStore(tmp_path).read()
    (tmp_path / "state.json").write_text('{"format": 99}')
    with pytest.raises(StateError, match="format 99"):
        StateStore(tmp_path).read()


@pytest.mark.parametrize(
    ("cpus", "nr_cpus", "text"),
    [
        ({0, 1, 2, 3}, 4, "all"),
        (set(), 4, "none"),
        ({2}, 4, "2"),
        ({0, 2, 3, 5}, 8, "0,2-3,5"),
        ({1, 2, 3}, 4, "1-3"),
    ],
)
def test_cpulist_strings(cpus: set[int], nr_cpus: int, text: str) -> None:
    assert cpulist_string(cpus, nr_cpus) == text
    assert cpulist_set(text, nr_cpus) == cpus
