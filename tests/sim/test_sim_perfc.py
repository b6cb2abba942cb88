"""xensim.perfc and xensim.counters without xenperf: the file format and the catalogue."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from xensim import perfc
from xensim.counters import DEBIAN_12, SHADOW_PAGING, XEN_4_16, Catalogue, Kind, xen_4_17_x86

UINT32 = 1 << 32


@pytest.mark.parametrize(
    ("catalogue", "descriptors", "first", "last"),
    [
        (DEBIAN_12, 90, "exceptions", "PG_need_flush tlb flushes"),
        (SHADOW_PAGING, 156, "exceptions", "PG_need_flush tlb flushes"),
        (XEN_4_16, 154, "exceptions", "PG_need_flush tlb flushes"),
    ],
    ids=lambda value: getattr(value, "label", str(value)),
)
def test_catalogue_sizes_and_order(
    catalogue: Catalogue, descriptors: int, first: str, last: str
) -> None:
    counters = catalogue.counters
    assert len(counters) == descriptors
    assert (counters[0].name, counters[-1].name) == (first, last)
    assert len({c.name for c in counters}) == descriptors


def test_debian_12_arrays_and_no_status_counter() -> None:
    arrays = {c.name: c.size for c in DEBIAN_12.counters if c.kind is Kind.ARRAY}
    assert arrays == {"exceptions": 32, "vmexits": 144, "cause vector": 32, "hypercalls": 64}
    assert not [c for c in DEBIAN_12.counters if c.kind is Kind.STATUS]
    assert DEBIAN_12.nr_vals(4) == 86 * 4 + 272
    assert "csched: acct_run" in {c.name for c in DEBIAN_12.counters}
    assert "calls to shadow_fault" not in {c.name for c in DEBIAN_12.counters}


def test_shadow_paging_adds_the_status_counter_after_shadow_alloc() -> None:
    names = [c.name for c in SHADOW_PAGING.counters]
    status = [c.name for c in SHADOW_PAGING.counters if c.kind is Kind.STATUS]
    assert status == ["number of shadow pages in use"]
    assert names.index("number of shadow pages in use") == names.index("calls to shadow_alloc") + 2
    assert max(len(name) for name in names) == len("shadow flush tlb by removing write perm")


def test_xen_4_16_has_the_old_arrays_and_multicall_counter() -> None:
    names = [c.name for c in XEN_4_16.counters]
    assert names[:4] == ["exceptions", "vmexits", "cause vector", "SVMexits"]
    assert XEN_4_16["vmexits"].size == 56 and XEN_4_16["SVMexits"].size == 142
    assert names[names.index("hypercalls") + 1] == "calls to multicall"
    assert "IOMMU page table shatters" not in names
    assert "csched: migrate_running" in names and "sched: migrated" not in names


def test_unknown_kconfig_options_are_refused() -> None:
    with pytest.raises(ValueError, match="CONFIG_NOPE"):
        xen_4_17_x86({"CONFIG_NOPE"}, "x")


def test_encode_decode_round_trip_and_layout() -> None:
    descriptors = perfc.descriptors_for(SHADOW_PAGING, 2)
    values = tuple(range(sum(d.nr_vals for d in descriptors)))
    state = perfc.PerfcState(descriptors, values, open_errno=13, perfc_errno=38, generation=7)
    data = perfc.encode(state)
    assert data[:8] == b"XSIMPRF1"
    assert struct.unpack_from("<IIiiII", data, 8) == (156, len(values), 13, 38, 7, 0)
    assert len(data) == 32 + 156 * 84 + 156 * 4 + 4 * len(values)
    # the status flag of descriptor 21 (0-based), "number of shadow pages in use"
    assert struct.unpack_from("<I", data, 32 + 156 * 84 + 4 * 21) == (1,)
    assert perfc.decode(data) == state


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: b"NOTMAGIC" + d[8:], "magic"),
        (lambda d: d[:-1], "promises"),
        (lambda d: d[:10], "shorter than the header"),
        (lambda d: d[:8] + struct.pack("<I", 70000) + d[12:], "implausible"),
        (lambda d: d[:12] + struct.pack("<I", 9) + d[16:], "promises"),
        (lambda d: d[:32] + b"y" * 80 + d[112:], "NUL"),
    ],
)
def test_decode_refuses_what_the_stub_would_refuse(damage: object, message: str) -> None:
    assert callable(damage)
    data = perfc.encode(
        perfc.PerfcState(perfc.descriptors_for(DEBIAN_12, 4), (0,) * DEBIAN_12.nr_vals(4))
    )
    with pytest.raises(perfc.CorruptStateError, match=message):
        perfc.decode(damage(data))


def test_decode_refuses_descriptors_that_do_not_add_up() -> None:
    state = perfc.PerfcState((perfc.Descriptor("a", 2), perfc.Descriptor("b", 1)), (1, 2, 3))
    data = bytearray(perfc.encode(state))
    struct.pack_into("<I", data, 32 + 80, 1)  # descriptor "a" now claims 1 value
    with pytest.raises(perfc.CorruptStateError, match="add up"):
        perfc.decode(bytes(data[:-4]) + b"\0\0\0\0")


def test_create_then_update_wraps_modulo_2_32(tmp_path: Path) -> None:
    path = tmp_path / "perfc"
    perfc.create(path, DEBIAN_12, 4)
    perfc.set_values(path, per_cpu={("#IPIs", 1): UINT32 - 2}, arrays={("vmexits", 143): 5})
    perfc.update(path, per_cpu={("#IPIs", 1): 3, ("#IPIs", 3): 1}, arrays={("vmexits", 143): -6})
    state = perfc.read(path)
    assert state.values_of("#IPIs") == (0, 1, 0, 1)
    assert state.values_of("vmexits")[143] == UINT32 - 1
    assert state.generation == 2
    assert sum(state.values) == 2 + UINT32 - 1


def test_status_counter_goes_negative_per_cpu(tmp_path: Path) -> None:
    path = tmp_path / "perfc"
    name = "number of shadow pages in use"
    perfc.create(path, SHADOW_PAGING, 2)
    perfc.update(path, per_cpu={(name, 0): 10})
    perfc.update(path, per_cpu={(name, 1): -4})
    values = perfc.read(path).values_of(name)
    assert values == (10, UINT32 - 4)
    assert sum(values) % UINT32 == 6


@pytest.mark.parametrize(
    ("per_cpu", "arrays", "error"),
    [
        ({("no such counter", 0): 1}, {}, KeyError),
        ({("#IPIs", 4): 1}, {}, IndexError),
        ({("hypercalls", 0): 1}, {}, ValueError),  # an array given as per-CPU
        ({}, {("#IPIs", 0): 1}, ValueError),  # a per-CPU counter given as an array
        ({}, {("hypercalls", 64): 1}, IndexError),
    ],
)
def test_a_bad_key_changes_nothing(
    tmp_path: Path,
    per_cpu: dict[tuple[str, int], int],
    arrays: dict[tuple[str, int], int],
    error: type[Exception],
) -> None:
    path = tmp_path / "perfc"
    perfc.create(path, DEBIAN_12, 4)
    before = path.read_bytes()
    with pytest.raises(error):
        perfc.update(path, per_cpu={("#IPIs", 0): 1, **per_cpu}, arrays=arrays)
    assert path.read_bytes() == before


def test_set_values_refuses_what_does_not_fit_a_uint32(tmp_path: Path) -> None:
    path = tmp_path / "perfc"
    perfc.create(path, DEBIAN_12, 1)
    with pytest.raises(ValueError, match="uint32"):
        perfc.set_values(path, per_cpu={("#IPIs", 0): UINT32})


def test_create_rewrites_an_existing_file_from_scratch(tmp_path: Path) -> None:
    path = tmp_path / "perfc"
    perfc.create(path, DEBIAN_12, 4)
    perfc.set_errno(path, perfc_errno=38)
    perfc.set_errno(path, open_errno=13)
    assert (perfc.read(path).open_errno, perfc.read(path).perfc_errno) == (13, 38)
    inode = path.stat().st_ino
    perfc.create(path, SHADOW_PAGING, 8, perfc_errno=38)
    state = perfc.read(path)
    assert path.stat().st_ino == inode  # in place: a writer holding the file still sees it
    assert (state.open_errno, state.perfc_errno) == (0, 38)
    assert len(state.descriptors) == 156 and state.values_of("#IPIs") == (0,) * 8
    assert state.generation == 3
    assert [p.name for p in tmp_path.iterdir()] == ["perfc"]  # no temporary file left


def test_online_cpus_change_keeps_values_by_cpu_id(tmp_path: Path) -> None:
    path = tmp_path / "perfc"
    perfc.create(path, SHADOW_PAGING, 4)
    perfc.set_values(
        path,
        per_cpu={("#IPIs", i): 10 + i for i in range(4)}
        | {("number of shadow pages in use", 3): UINT32 - 1},
        arrays={("hypercalls", 5): 99},
    )
    perfc.set_online_cpus(path, [0, 1, 2, 3], [0, 1, 3])
    state = perfc.read(path)
    assert state.values_of("#IPIs") == (10, 11, 13)
    assert state.values_of("number of shadow pages in use") == (0, 0, UINT32 - 1)
    assert state.values_of("hypercalls")[5] == 99 and len(state.values_of("hypercalls")) == 64
    perfc.set_online_cpus(path, [0, 1, 3], [0, 1, 2, 3, 4])
    assert perfc.read(path).values_of("#IPIs") == (10, 11, 0, 13, 0)


def test_online_cpus_must_match_the_file(tmp_path: Path) -> None:
    path = tmp_path / "perfc"
    perfc.create(path, DEBIAN_12, 4)
    with pytest.raises(ValueError, match="one per CPU"):
        perfc.set_online_cpus(path, [0, 1], [0])
    with pytest.raises(ValueError, match="ascending"):
        perfc.set_online_cpus(path, [0, 1, 2, 3], [3, 1])
