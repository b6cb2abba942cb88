"""The hypervisor's performance counters as data: `xenperf -f` / `-p` text -> `PerfcSnapshot`.

Pure: no subprocess, no prometheus_client. The ctypes reader (`xentools.libxenctrl`) builds the
same `PerfcSnapshot` through `snapshot_from_descriptors`, so both readers agree by construction
on the rules below.

Neither xenperf's text nor the sysctl ABI says which descriptors are plain per-CPU counters,
which are arrays and which are status counters, so we decide (`classify`):

1. ``number of shadow pages in use`` (the only PERFSTATUS in any Xen) is a STATUS counter: a
   gauge whose per-CPU parts only make sense summed modulo 2^32 and read as signed.
2. The array names Xen has defined (``exceptions``, ``vmexits``, ``cause vector``,
   ``SVMexits``, ``hypercalls``) are ARRAY counters: one value per element, summed over CPUs
   by the hypervisor.
3. Any other descriptor is PER_CPU when its number of values equals the online CPU count and
   ARRAY otherwise. The online CPU count is the number of values most descriptors (outside
   rules 1 and 2) have, since every plain counter has exactly one value per online CPU at the
   moment of the query; `online_cpus` from `xl info` is only a fallback when no descriptor
   shows it. An unknown array whose length happens to equal the online CPU count is taken for
   a per-CPU counter; no data can tell them apart.

Canonical form, so that both readers give identical snapshots: xenperf >= 4.17 prints no
values for a counter whose total is 0, even with ``-f``. So a PER_CPU or STATUS counter whose
total is 0 has one 0 per online CPU, and an ARRAY counter whose elements are all 0 has no
values at all (its length is unknowable from the text).
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

UINT32 = 1 << 32

STATUS_COUNTER_NAMES = frozenset({"number of shadow pages in use"})
ARRAY_COUNTER_NAMES = frozenset({"exceptions", "vmexits", "cause vector", "SVMexits", "hypercalls"})
HYPERCALLS = "hypercalls"
NR_HYPERCALLS = 64

# xenperf's hypercall name table (x86, Xen >= 4.17, from xen/include/public/xen.h); indices
# without a name print as "[j]". Older xenperf knows fewer names and prints "[j]" for the rest.
HYPERCALL_NAMES: dict[int, str] = {
    0: "set_trap_table",
    1: "mmu_update",
    2: "set_gdt",
    3: "stack_switch",
    4: "set_callbacks",
    5: "fpu_taskswitch",
    6: "sched_op_compat",
    7: "platform_op",
    8: "set_debugreg",
    9: "get_debugreg",
    10: "update_descriptor",
    12: "memory_op",
    13: "multicall",
    14: "update_va_mapping",
    15: "set_timer_op",
    16: "event_channel_op_compat",
    17: "xen_version",
    18: "console_io",
    19: "physdev_op_compat",
    20: "grant_table_op",
    21: "vm_assist",
    22: "update_va_mapping_otherdomain",
    23: "iret",
    24: "vcpu_op",
    25: "set_segment_base",
    26: "mmuext_op",
    27: "xsm_op",
    28: "nmi_op",
    29: "sched_op",
    30: "callback_op",
    31: "xenoprof_op",
    32: "event_channel_op",
    33: "physdev_op",
    34: "hvm_op",
    35: "sysctl",
    36: "domctl",
    37: "kexec_op",
    38: "tmem_op",
    39: "argo_op",
    40: "xenpmu_op",
    41: "dm_op",
    42: "hypfs_op",
    48: "mca",
    49: "paging-domctl-continuation",
    50: "arch_2",
    51: "arch_3",
    52: "arch_4",
    53: "arch_5",
    54: "arch_6",
    55: "arch_7",
}
_HYPERCALL_INDEX = {name: index for index, name in HYPERCALL_NAMES.items()}


class CounterKind(enum.Enum):
    PER_CPU = "per_cpu"
    ARRAY = "array"
    STATUS = "status"


@dataclass(frozen=True)
class PerfCounter:
    """One descriptor: its original name, its kind, and its uint32 values in hypervisor order.

    PER_CPU and STATUS values are in online-CPU order (index, not CPU id); ARRAY values are by
    element index.
    """

    name: str
    kind: CounterKind
    values: tuple[int, ...]

    @property
    def status_value(self) -> int:
        """A status counter's meaning: the sum of its parts modulo 2^32, read as signed."""
        total = sum(self.values) % UINT32
        return total - UINT32 if total >= UINT32 // 2 else total


@dataclass(frozen=True)
class PerfcSnapshot:
    """Every counter the hypervisor reported, in its order, and the online CPU count it implies."""

    counters: tuple[PerfCounter, ...]
    online_cpus: int

    def counter(self, name: str) -> PerfCounter:
        for counter in self.counters:
            if counter.name == name:
                return counter
        raise KeyError(name)


class XenperfParseError(ValueError):
    """xenperf's output is not what any known xenperf prints; the message quotes the line."""


def classify(name: str, nr_vals: int, online_cpus: int) -> CounterKind:
    if name in STATUS_COUNTER_NAMES:
        return CounterKind.STATUS
    if name in ARRAY_COUNTER_NAMES:
        return CounterKind.ARRAY
    return CounterKind.PER_CPU if nr_vals == online_cpus else CounterKind.ARRAY


def infer_online_cpus(lengths: Iterable[tuple[str, int]], fallback: int | None) -> int:
    """The online CPU count: the most common value count among possible plain counters."""
    votes = Counter(
        nr_vals
        for name, nr_vals in lengths
        if nr_vals > 0 and name not in ARRAY_COUNTER_NAMES and name not in STATUS_COUNTER_NAMES
    )
    if votes:
        # Most common; on a tie the larger count, which is the safer guess for plain counters.
        return max(votes.items(), key=lambda item: (item[1], item[0]))[0]
    if fallback is not None:
        return fallback
    return 0


def snapshot_from_descriptors(
    descriptors: Sequence[tuple[str, Sequence[int] | None]], online_cpus: int | None = None
) -> PerfcSnapshot:
    """Build the canonical snapshot from (name, values) pairs in hypervisor order.

    `values` is None where the reader knows only that the total is 0 (xenperf >= 4.17 text).
    """
    online = infer_online_cpus(
        ((name, len(values)) for name, values in descriptors if values is not None), online_cpus
    )
    counters = []
    for name, values in descriptors:
        if values is None:
            kind = classify(name, online, online)
            canonical: tuple[int, ...] = () if kind is CounterKind.ARRAY else (0,) * online
        else:
            kind = classify(name, len(values), online)
            canonical = tuple(values)
            if kind is CounterKind.ARRAY and not any(canonical):
                canonical = ()
        counters.append(PerfCounter(name, kind, canonical))
    return PerfcSnapshot(tuple(counters), online)


def parse_xenperf(text: str, online_cpus: int | None = None) -> PerfcSnapshot:
    """Parse the output of `xenperf -f` or `xenperf -p`, any Xen version.

    Handles names longer than xenperf's 35 columns, totals wider than 10 digits, lines with no
    values (zero total), pre-4.17 output (zeros printed, 32-bit totals) and `-p` hypercall
    sub-lines. Output of the default mode on a host with more than 4 CPUs (totals without
    values) is refused: only `-f` says what each CPU did.
    """
    descriptors: list[tuple[str, list[int] | None]] = []
    pretty_hypercalls: list[int] | None = None
    pretty_total = 0
    pretty_line = ""

    def finish_pretty() -> None:
        if pretty_hypercalls is None:
            return
        added = sum(pretty_hypercalls)
        if added != pretty_total and added % UINT32 != pretty_total:
            raise XenperfParseError(
                f"hypercall lines add up to {added}, not the total: {pretty_line!r}"
            )

    for line in text.splitlines():
        if not line.strip():
            continue
        head, separator, tail = line.rpartition("T=")
        if not separator:
            if pretty_hypercalls is None:
                raise XenperfParseError(f"malformed xenperf line (no T=): {line!r}")
            index, value = _parse_hypercall_line(line)
            if pretty_hypercalls[index]:
                raise XenperfParseError(f"hypercall listed twice: {line!r}")
            pretty_hypercalls[index] = value
            continue
        finish_pretty()
        pretty_hypercalls = None
        name = head.rstrip()
        fields = tail.split()
        if not name or not fields or not all(field.isdigit() for field in fields):
            raise XenperfParseError(f"malformed xenperf line: {line!r}")
        total, values = int(fields[0]), [int(field) for field in fields[1:]]
        if any(value >= UINT32 for value in values):
            raise XenperfParseError(f"value wider than 32 bits: {line!r}")
        if values:
            # xenperf >= 4.17 sums into 64 bits; before, the total itself wrapped at 2^32.
            if sum(values) != total and sum(values) % UINT32 != total:
                raise XenperfParseError(f"values do not add up to the total: {line!r}")
            descriptors.append((name, values))
        elif total == 0:
            descriptors.append((name, None))
        elif name == HYPERCALLS:
            pretty_hypercalls = [0] * NR_HYPERCALLS
            pretty_total, pretty_line = total, line
            descriptors.append((name, pretty_hypercalls))
        else:
            raise XenperfParseError(f"a total without values (xenperf run without -f?): {line!r}")
    finish_pretty()
    if not descriptors:
        raise XenperfParseError("no counters in xenperf output")
    names = [name for name, _ in descriptors]
    if len(set(names)) != len(names):
        duplicate = next(name for name in names if names.count(name) > 1)
        raise XenperfParseError(f"counter {duplicate!r} listed twice")
    return snapshot_from_descriptors(descriptors, online_cpus)


def _parse_hypercall_line(line: str) -> tuple[int, int]:
    fields = line.split()
    if len(fields) != 2 or not fields[1].isdigit():
        raise XenperfParseError(f"malformed xenperf hypercall line: {line!r}")
    name, value = fields[0], int(fields[1])
    if name in _HYPERCALL_INDEX:
        index = _HYPERCALL_INDEX[name]
    elif name.startswith("[") and name.endswith("]") and name[1:-1].isdigit():
        index = int(name[1:-1])
    else:
        raise XenperfParseError(f"unknown hypercall name: {line!r}")
    if index >= NR_HYPERCALLS or value >= UINT32 or value == 0:
        raise XenperfParseError(f"hypercall line out of range: {line!r}")
    return index, value


def hypercall_name(index: int) -> str:
    """xenperf's name for hypercall `index`, `[index]` where it has none."""
    return HYPERCALL_NAMES.get(index, f"[{index}]")
