"""xentools.xenperf: table-driven over captured xenperf output and the reference's samples."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from xentools.xenperf import (
    CounterKind,
    XenperfParseError,
    hypercall_name,
    parse_xenperf,
    snapshot_from_descriptors,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "xenperf"


def line(name: str, values: Sequence[int], *, total: int | None = None, full: bool = True) -> str:
    """One line exactly as xenperf >= 4.17 prints it (printf formats from tools/misc/xenperf.c)."""
    total = sum(values) if total is None else total
    text = f"{name:<35} T={total:>10} "
    if total != 0 and (full or len(values) <= 4):
        text += "".join(f" {value:>10}" for value in values)
    return text


# From docs/xen-reference.md 1.2.1, 4 online CPUs, default mode (<= 4 values printed).
REFERENCE_DEFAULT_4CPU = "\n".join(
    [
        "exceptions                          T=         0 ",
        "apic timer interrupts               T=   3203467      812345     790012     801234     799876",  # noqa: E501
        "page faults                         T=    155212       40211      38877      39001      37123",  # noqa: E501
        "#interrupts                         T=   5691357     2345678    1234567    1111111    1000001",  # noqa: E501
        "sched: context switches             T=         0 ",
    ]
)

# (name, text, {counter: (kind, values)}, online_cpus)
CASES: list[tuple[str, str, dict[str, tuple[CounterKind, tuple[int, ...]]], int]] = [
    (
        "reference default mode, 4 CPUs, zero-total lines",
        REFERENCE_DEFAULT_4CPU,
        {
            "exceptions": (CounterKind.ARRAY, ()),
            "apic timer interrupts": (CounterKind.PER_CPU, (812345, 790012, 801234, 799876)),
            "#interrupts": (CounterKind.PER_CPU, (2345678, 1234567, 1111111, 1000001)),
            "sched: context switches": (CounterKind.PER_CPU, (0, 0, 0, 0)),
        },
        4,
    ),
    (
        "-f array of 32 exceptions",
        "\n".join(
            [
                line("exceptions", [0, 3, 0, 12] + [0] * 9 + [57, 981234] + [0] * 17),
                line("#interrupts", [5, 6, 7, 8, 9, 10, 11, 12]),
            ]
        ),
        {
            "exceptions": (CounterKind.ARRAY, (0, 3, 0, 12, *[0] * 9, 57, 981234, *[0] * 17)),
            "#interrupts": (CounterKind.PER_CPU, (5, 6, 7, 8, 9, 10, 11, 12)),
        },
        8,
    ),
    (
        "name longer than 35 columns pushes the rest right",
        "\n".join(
            [
                line("shadow flush tlb by removing write perm", [1, 2]),
                line("#IPIs", [3, 4]),
            ]
        ),
        {
            "shadow flush tlb by removing write perm": (CounterKind.PER_CPU, (1, 2)),
            "#IPIs": (CounterKind.PER_CPU, (3, 4)),
        },
        2,
    ),
    (
        "total wider than 10 digits and values near 2^32",
        line("#interrupts", [4294967295, 4294967295, 1, 0]),
        {"#interrupts": (CounterKind.PER_CPU, (4294967295, 4294967295, 1, 0))},
        4,
    ),
    (
        "pre-4.17: zeros printed, total wraps at 32 bits",
        "\n".join(
            [
                "sched: context switches             T=         0           0          0          0          0",  # noqa: E501
                f"{'#interrupts':<35} T={(4294967295 + 10) % 2**32:>10}  4294967295          4          3          3",  # noqa: E501
                f"{'exceptions':<35} T={0:>10} " + f" {0:>10}" * 32,
            ]
        ),
        {
            "sched: context switches": (CounterKind.PER_CPU, (0, 0, 0, 0)),
            "#interrupts": (CounterKind.PER_CPU, (4294967295, 4, 3, 3)),
            "exceptions": (CounterKind.ARRAY, ()),
        },
        4,
    ),
    (
        "-p hypercall sub-lines, named and [j]",
        "\n".join(
            [
                "hypercalls                          T=      4579 ",
                "mmu_update                                  4567",
                "[43]                                          12",
                line("#interrupts", [1, 1]),
            ]
        ),
        {
            "hypercalls": (
                CounterKind.ARRAY,
                tuple(4567 if i == 1 else 12 if i == 43 else 0 for i in range(64)),
            ),
            "#interrupts": (CounterKind.PER_CPU, (1, 1)),
        },
        2,
    ),
    (
        "status counter and an unknown array whose length is not the CPU count",
        "\n".join(
            [
                line("number of shadow pages in use", [4294967290, 16]),
                line("frobnications by kind", [1, 2, 3, 4, 5, 6, 7]),
                line("#interrupts", [9, 9]),
                line("#IPIs", [9, 9]),
            ]
        ),
        {
            "number of shadow pages in use": (CounterKind.STATUS, (4294967290, 16)),
            "frobnications by kind": (CounterKind.ARRAY, (1, 2, 3, 4, 5, 6, 7)),
        },
        2,
    ),
]


@pytest.mark.parametrize(
    ("text", "expected", "online"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_parse_xenperf_cases(
    text: str, expected: dict[str, tuple[CounterKind, tuple[int, ...]]], online: int
) -> None:
    snapshot = parse_xenperf(text)
    assert snapshot.online_cpus == online
    for name, (kind, values) in expected.items():
        counter = snapshot.counter(name)
        assert (counter.kind, counter.values) == (kind, values), name


def test_status_counter_is_sum_modulo_2_32_read_as_signed() -> None:
    snapshot = parse_xenperf(line("number of shadow pages in use", [4294967290, 16, 0, 0]))
    assert snapshot.counter("number of shadow pages in use").status_value == 10
    negative = parse_xenperf(line("number of shadow pages in use", [4294967290, 0, 0, 0]))
    assert negative.counter("number of shadow pages in use").status_value == -6


def test_online_cpus_falls_back_to_caller_when_nothing_shows_it() -> None:
    snapshot = parse_xenperf(line("#interrupts", [0, 0, 0]), online_cpus=3)
    assert snapshot.counter("#interrupts").values == (0, 0, 0)
    assert parse_xenperf(line("#interrupts", [], total=0), online_cpus=6).online_cpus == 6


MALFORMED = [
    (
        "usage text of a bad flag",
        "xenperf: [-r]\nno args: print digested counters",
        "xenperf: [-r]",
    ),
    (
        "values not adding up",
        "#interrupts                         T=        10           1          2",
        "T=        10",
    ),
    ("total without values", "#interrupts                         T=   5691383 ", "T=   5691383"),
    (
        "garbage value",
        "#interrupts                         T=         3           1          x",
        "x",
    ),
    ("value wider than 32 bits", line("#interrupts", [2**32, 1]), "4294967296"),
    ("no name", "T=         0 ", "T=         0"),
    (
        "hypercall sub-line outside -p",
        "mmu_update                                  4567",
        "mmu_update",
    ),
    (
        "unknown hypercall name",
        "hypercalls                          T=         5 \nfrob_op        5",
        "frob_op",
    ),
    (
        "hypercall lines not adding up",
        "hypercalls                          T=         9 \nmmu_update        5",
        "hypercalls",
    ),
    ("empty output", "", "no counters"),
    ("counter twice", line("#IPIs", [1]) + "\n" + line("#IPIs", [1]), "#IPIs"),
]


@pytest.mark.parametrize(
    ("text", "quoted"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
def test_malformed_output_raises_quoting_the_line(text: str, quoted: str) -> None:
    with pytest.raises(XenperfParseError, match=None) as raised:
        parse_xenperf(text)
    assert quoted in str(raised.value)


def test_canonical_form_is_reader_independent() -> None:
    """What the ctypes reader sees (every value) and what xenperf -f prints agree."""
    descriptors = [
        ("exceptions", [0] * 32),
        ("hypercalls", [0, 7] + [0] * 62),
        ("#interrupts", [0, 0]),
        ("#IPIs", [1, 2]),
    ]
    text = "\n".join(line(name, values) for name, values in descriptors)
    assert snapshot_from_descriptors(descriptors) == parse_xenperf(text)


def test_hypercall_names() -> None:
    assert hypercall_name(20) == "grant_table_op"
    assert hypercall_name(32) == "event_channel_op"
    assert hypercall_name(43) == "[43]"


# Captured from the real xenperf against the stub (tests/fixtures/xenperf/README.md):
# (file, counters, online CPUs, #interrupts values, hypercalls[32], array names)
FIXTURE_CASES = [
    (
        "4.17-4cpu-f.txt",
        90,
        4,
        (4440326, 1014098, 1000492, 1058297),
        2055752,
        ["exceptions", "vmexits", "cause vector", "hypercalls"],
    ),
    (
        "4.17-8cpu-f.txt",
        90,
        8,
        (
            3732582300,
            1180743522,
            1177414211,
            1096397406,
            1070669770,
            1059739433,
            1014854007,
            1005560038,
        ),
        3764086320,
        ["exceptions", "vmexits", "cause vector", "hypercalls"],
    ),
    (
        "4.17-offline-f.txt",
        90,
        3,
        (4440326, 1014098, 1058297),
        2055752,
        ["exceptions", "vmexits", "cause vector", "hypercalls"],
    ),
    (
        "4.17-wrapped-before-f.txt",
        90,
        4,
        (4440326, 1014098, 2**32 - 300, 1058297),
        2**32 - 5000,
        ["exceptions", "vmexits", "cause vector", "hypercalls"],
    ),
    (
        "4.17-wrapped-after-f.txt",
        90,
        4,
        (4445326, 1014098, 700, 1058297),
        995000,
        ["exceptions", "vmexits", "cause vector", "hypercalls"],
    ),
    (
        "4.17-shadow-f.txt",
        156,
        4,
        (4053074, 1073402, 982574, 1239529),
        1600707,
        ["exceptions", "vmexits", "cause vector", "hypercalls"],
    ),
    (
        "4.16-4cpu-f.txt",
        154,
        4,
        (1500000000, 1500007919, 1500015838, 1500023757),
        0,
        ["exceptions", "vmexits", "cause vector", "SVMexits", "hypercalls"],
    ),
]


@pytest.mark.parametrize(
    ("filename", "counters", "online", "interrupts", "grant_ops", "arrays"),
    FIXTURE_CASES,
    ids=[case[0] for case in FIXTURE_CASES],
)
def test_captured_fixtures(
    filename: str,
    counters: int,
    online: int,
    interrupts: tuple[int, ...],
    grant_ops: int,
    arrays: list[str],
) -> None:
    snapshot = parse_xenperf((FIXTURES / filename).read_text())
    assert len(snapshot.counters) == counters
    assert snapshot.online_cpus == online
    assert snapshot.counter("#interrupts").values == interrupts
    hypercalls = snapshot.counter("hypercalls").values
    assert (hypercalls[32] if hypercalls else 0) == grant_ops
    assert [c.name for c in snapshot.counters if c.kind is CounterKind.ARRAY] == arrays
    per_cpu = [c for c in snapshot.counters if c.kind is CounterKind.PER_CPU]
    assert all(len(c.values) == online for c in per_cpu)


def test_pretty_output_gives_the_same_snapshot_as_full() -> None:
    full = parse_xenperf((FIXTURES / "4.17-4cpu-f.txt").read_text())
    pretty = parse_xenperf((FIXTURES / "4.17-4cpu-p.txt").read_text())
    assert pretty == full


def test_shadow_build_status_counter_and_long_name() -> None:
    snapshot = parse_xenperf((FIXTURES / "4.17-shadow-f.txt").read_text())
    status = snapshot.counter("number of shadow pages in use")
    assert status.kind is CounterKind.STATUS
    assert status.status_value == 1100
    assert snapshot.counter("shadow flush tlb by removing write perm").values == (
        0,
        4835,
        5065,
        5296,
    )


def test_pre_4_17_hypercalls_all_in_element_0() -> None:
    snapshot = parse_xenperf((FIXTURES / "4.16-4cpu-f.txt").read_text())
    assert snapshot.counter("hypercalls").values[0] == 123456789
    assert snapshot.counter("SVMexits").values == ()  # all zero: canonical empty array
    assert len(snapshot.counter("vmexits").values) == 56


@pytest.mark.parametrize(
    "filename", ["4.17-4cpu-default.txt", "4.17-8cpu-default.txt", "4.16-4cpu-default.txt"]
)
def test_default_mode_is_refused_quoting_the_line(filename: str) -> None:
    with pytest.raises(XenperfParseError, match=r"without -f.*T="):
        parse_xenperf((FIXTURES / filename).read_text())
