"""xentools.libxenctrl against the stub libxenctrl, compared with the real xenperf's output.

Both readers must give identical snapshots of the same simulated hypervisor state.
"""

from __future__ import annotations

import errno
import os
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import require
from xensim import perfc
from xensim.counters import DEBIAN_12, SHADOW_PAGING, XEN_4_16, Catalogue, Kind
from xentools.libxenctrl import LibXenCtrl, XenCtrlError, library_candidates
from xentools.xenperf import CounterKind, parse_xenperf

REPO = Path(__file__).resolve().parents[2]
STUB_DIR = Path(os.environ.get("XENSIM_STUB_DIR", REPO / "build/stub"))
XENPERF = Path(
    os.environ.get("XENSIM_XENPERF", REPO / ".cache/xen/root/usr/lib/xen-4.17/bin/xenperf")
)
STUB = STUB_DIR / "libxenctrl.so.4.17"


@pytest.fixture
def library() -> LibXenCtrl:
    require(STUB.exists(), f"needs the stub libxenctrl ({STUB}; make deps)")
    return LibXenCtrl.load([str(STUB)])


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("XENSIM_STATE_DIR", str(tmp_path))
    yield tmp_path


def xenperf_text(state_dir: Path) -> str:
    require(XENPERF.exists(), f"needs the real xenperf ({XENPERF}; make deps)")
    env = dict(os.environ, XENSIM_STATE_DIR=str(state_dir), LD_LIBRARY_PATH=str(STUB_DIR))
    result = subprocess.run(
        [str(XENPERF), "-f"], env=env, capture_output=True, text=True, timeout=10, check=True
    )
    return result.stdout


def fill_randomly(path: Path, catalogue: Catalogue, cpus: int, seed: int) -> None:
    rng = random.Random(seed)
    per_cpu, arrays = {}, {}
    for counter in catalogue.counters:
        if counter.kind is Kind.ARRAY:
            if rng.random() < 0.5:  # some arrays stay all zero
                for index in range(counter.size):
                    arrays[counter.name, index] = rng.choice([0, rng.randrange(1 << 32)])
        elif rng.random() < 0.7:  # some plain counters stay zero
            for cpu in range(cpus):
                per_cpu[counter.name, cpu] = rng.randrange(1 << 32)
    perfc.set_values(path / perfc.STATE_FILE, per_cpu=per_cpu, arrays=arrays)


@pytest.mark.parametrize(
    ("catalogue", "cpus", "seed"),
    [
        (DEBIAN_12, 4, 1),
        (DEBIAN_12, 8, 2),
        (SHADOW_PAGING, 4, 3),
        (XEN_4_16, 2, 4),
        (DEBIAN_12, 1, 5),
    ],
    ids=["debian12-4cpu", "debian12-8cpu", "shadow-4cpu", "4.16-2cpu", "debian12-1cpu"],
)
def test_ctypes_and_xenperf_give_identical_snapshots(
    library: LibXenCtrl, state_dir: Path, catalogue: Catalogue, cpus: int, seed: int
) -> None:
    perfc.create(state_dir / perfc.STATE_FILE, catalogue, cpus)
    fill_randomly(state_dir, catalogue, cpus, seed)
    with library.open() as interface:
        direct = interface.perfc_snapshot(max_cpu_id=cpus - 1)
    parsed = parse_xenperf(xenperf_text(state_dir))
    assert direct == parsed
    assert direct.online_cpus == cpus
    state = perfc.read(state_dir / perfc.STATE_FILE)
    for counter in direct.counters:
        if counter.kind is not CounterKind.ARRAY or counter.values:
            assert counter.values == state.values_of(counter.name), counter.name


def test_zero_state_and_offline_cpu(library: LibXenCtrl, state_dir: Path) -> None:
    path = state_dir / perfc.STATE_FILE
    perfc.create(path, DEBIAN_12, 4)
    with library.open() as interface:
        # all zero: only `xl info`'s CPU count (passed to both readers) says how many CPUs
        zero = interface.perfc_snapshot(max_cpu_id=3, online_cpus=4)
        assert zero == parse_xenperf(xenperf_text(state_dir), online_cpus=4)
        assert zero.counter("#interrupts").values == (0, 0, 0, 0)
        perfc.update(path, per_cpu={("#interrupts", 3): 7})
        perfc.set_online_cpus(path, [0, 1, 2, 3], [0, 1, 3])
        # the same open handle sees the new layout
        snapshot = interface.perfc_snapshot(max_cpu_id=3)
    assert snapshot.online_cpus == 3
    assert snapshot.counter("#interrupts").values == (0, 0, 7)
    assert snapshot == parse_xenperf(xenperf_text(state_dir))


def test_enosys_is_reported_with_its_errno(library: LibXenCtrl, state_dir: Path) -> None:
    path = state_dir / perfc.STATE_FILE
    perfc.create(path, DEBIAN_12, 2)
    perfc.set_errno(path, perfc_errno=errno.ENOSYS)
    with library.open() as interface, pytest.raises(XenCtrlError) as raised:
        interface.perfc_snapshot(max_cpu_id=1)
    assert raised.value.errno == errno.ENOSYS


def test_open_failure_carries_errno(library: LibXenCtrl, state_dir: Path) -> None:
    with pytest.raises(XenCtrlError) as raised:  # no state file: like a Dom0 without privcmd
        library.open()
    assert raised.value.errno == errno.ENOENT


def test_candidates_found_on_ld_library_path(monkeypatch: pytest.MonkeyPatch) -> None:
    require(STUB.exists(), f"needs the stub libxenctrl ({STUB}; make deps)")
    monkeypatch.setenv("LD_LIBRARY_PATH", str(STUB_DIR))
    assert str(STUB) in library_candidates()
