"""xl's CPU list syntax, as `xl vcpu-pin` reads it and `xl vcpu-list` prints it.

Reading (``parse_cpulist``, after ``parse_cpurange`` in Xen's ``tools/xl/xl_parse.c``): a comma
separated list of items applied left to right; an item is ``all``, a CPU ``3`` or a range
``2-5``, and a leading ``^`` removes the CPUs instead of adding them (``all,^0``, ``0-7,^3``).
``none`` is what xl *prints* for an empty set; it is accepted here so that printed lists read
back, although xl itself would refuse it. NUMA items (``node:1``, ``nodes:0-1``) need the host's
topology and are refused.

``plain=True`` is the form a penalty set is written in (configs, alert labels): CPUs and ranges
only, no ``all``, ``none`` or ``^``, at most ``MAX_PLAIN_ITEMS`` items, since such a set must be
explicit and its text may come from outside.

Printing (``format_cpulist``, after ``print_bitmap`` in ``tools/xl/xl_utils.c``): ``all`` when
every CPU ``0 .. nr_cpus-1`` is in the set, ``none`` when it is empty, otherwise ascending
ranges such as ``0,2-3,5``. ``nr_cpus`` is ``max_cpu_id + 1`` from ``xl info``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_ITEM = re.compile(r"(?P<first>\d{1,5})(?:-(?P<last>\d{1,5}))?")
# Xen's CONFIG_NR_CPUS is at most 4095 on x86 (xen/arch/Kconfig): no CPU id reaches this.
MAX_CPUS = 4096
MAX_PLAIN_ITEMS = 64


class CpuListError(ValueError):
    """A CPU list xl would refuse, or one naming CPUs the host does not have."""


def parse_cpulist(text: str, nr_cpus: int = MAX_CPUS, *, plain: bool = False) -> frozenset[int]:
    """The set of CPU ids ``text`` selects on a host with CPU ids ``0 .. nr_cpus-1``."""
    if nr_cpus < 1:
        raise CpuListError(f"nr_cpus must be positive, not {nr_cpus}")
    stripped = text.strip()
    if stripped == "none" and not plain:
        return frozenset()
    items = stripped.split(",") if plain else [item for item in stripped.split(",") if item]
    if not items or not stripped:
        raise CpuListError(f"empty CPU list {text!r}")
    if plain and len(items) > MAX_PLAIN_ITEMS:
        raise CpuListError(f"more than {MAX_PLAIN_ITEMS} items in a CPU list")
    cpus: set[int] = set()
    for item in items:
        if plain and not _ITEM.fullmatch(item):
            raise CpuListError(f"not a plain CPU list (CPUs and ranges only): {text!r}")
        negate = item.startswith("^")
        body = item[1:] if negate else item
        if body == "all":
            if negate:
                raise CpuListError(f"cannot combine '^' and 'all' in {text!r}")
            cpus.update(range(nr_cpus))
            continue
        if body.startswith(("node:", "nodes:")):
            raise CpuListError(f"NUMA node items are not supported: {item!r} in {text!r}")
        match = _ITEM.fullmatch(body)
        if match is None:
            raise CpuListError(f"invalid CPU range {item!r} in {text!r}")
        first = int(match["first"])
        last = int(match["last"]) if match["last"] is not None else first
        if last < first:
            raise CpuListError(f"invalid CPU range {item!r} in {text!r}: end before start")
        if last >= nr_cpus:
            raise CpuListError(f"CPU {last} in {text!r} does not exist (max_cpu_id {nr_cpus - 1})")
        selected = range(first, last + 1)
        if negate:
            cpus.difference_update(selected)
        else:
            cpus.update(selected)
    return frozenset(cpus)


def format_cpulist(cpus: Iterable[int], nr_cpus: int | None = None) -> str:
    """The text xl prints for ``cpus`` on a host with CPU ids ``0 .. nr_cpus-1``.

    Without ``nr_cpus`` the set is written out as ranges (never ``all``), as to ``xl vcpu-pin``.
    """
    limit = MAX_CPUS if nr_cpus is None else nr_cpus
    present = sorted({cpu for cpu in cpus if 0 <= cpu < limit})
    if not present:
        return "none"
    if len(present) == nr_cpus:
        return "all"
    ranges: list[str] = []
    start = previous = present[0]
    for cpu in present[1:]:
        if cpu != previous + 1:
            ranges.append(_range(start, previous))
            start = cpu
        previous = cpu
    ranges.append(_range(start, previous))
    return ",".join(ranges)


def is_cpulist(text: str) -> bool:
    """Whether ``text`` is a CPU list xl reads (as ``xl vcpu-list`` prints affinities)."""
    try:
        parse_cpulist(text)
    except CpuListError:
        return False
    return True


def _range(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}-{last}"
