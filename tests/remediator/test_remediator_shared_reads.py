"""SharedReads: actions asking at about the same time share one host read, never an older one."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import pytest

from remediator.host import HostState, ObservedDomain
from remediator.observe import ObserveError, SharedReads


class GatedReader:
    """Each read blocks until `release` is set; records what each read was asked."""

    def __init__(self, fail: bool = False) -> None:
        self.reads: list[tuple[set[str], set[str]]] = []
        self.started = threading.Event()
        self.release = threading.Event()
        self.fail = fail

    def observe(self, names: Iterable[str], kinds: Iterable[str]) -> HostState:
        self.reads.append((set(names), set(kinds)))
        number = len(self.reads)
        self.started.set()
        assert self.release.wait(10)
        if self.fail:
            raise ObserveError("xl list timed out")
        return HostState(
            domains={n: ObservedDomain(n, number, False, 1) for n in self.reads[-1][0]}
        )


def test_who_asks_during_a_read_is_served_together_by_the_next_one() -> None:
    reader = GatedReader()
    shared = SharedReads(reader)
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(shared.observe, ["g1"], ["pause"])
        assert reader.started.wait(10)
        later = [pool.submit(shared.observe, [f"g{i}"], ["network_shape"]) for i in (2, 3, 4)]
        while len(shared._waiting) < 3:  # all three queued behind the read in progress
            threading.Event().wait(0.01)
        reader.release.set()
        answers = [first.result(10)] + [f.result(10) for f in later]
    assert reader.reads == [({"g1"}, {"pause"}), ({"g2", "g3", "g4"}, {"network_shape"})]
    assert answers[0].domains["g1"].domid == 1  # the read that started after it asked
    assert all(a.domains[f"g{i}"].domid == 2 for a, i in zip(answers[1:], (2, 3, 4), strict=True))


def test_a_failed_read_fails_everyone_it_served_and_the_next_read_is_fresh() -> None:
    reader = GatedReader(fail=True)
    reader.release.set()
    shared = SharedReads(reader)
    with pytest.raises(ObserveError, match="timed out"):
        shared.observe(["g1"], [])
    reader.fail = False
    assert shared.observe(["g1"], []).domains["g1"].domid == 2
