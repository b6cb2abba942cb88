"""The simulated hypervisor's performance-counter catalogue (Xen x86), in definition order.

Xen defines its counters in `xen/arch/x86/include/asm/perfc_defn.h` (x86 part, included first)
and `xen/include/xen/perfc_defn.h` (common part); xenperf prints them in exactly that order, one
line per descriptor, named by the description string. Which counters exist depends on the
release and on the build's Kconfig (`CONFIG_SHADOW_PAGING`, `CONFIG_SCHED_CREDIT`, ...), so a
catalogue is built for a release and a set of enabled options:

    >>> DEBIAN_12.nr_vals(4)      # the default: Xen 4.17.7 as Debian 12 builds it, 4 online CPUs
    616
    >>> [c.name for c in SHADOW_PAGING.counters if c.kind is Kind.STATUS]
    ['number of shadow pages in use']

The rows below were read from the Xen sources (RELEASE-4.16.7 and RELEASE-4.17.7; see
`docs/xen-reference.md` section 3). `Bus Locks Detected` and `domain crashes by
Notify VM Exit` are listed from 4.17 on: they arrived in 4.17.1 as backports (4.17.0 lacked
them, together with the larger VMX exit array), and Debian 12 ships 4.17.7.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final


class Kind(enum.Enum):
    PLAIN = "plain"  # PERFCOUNTER: one uint32 per online CPU
    ARRAY = "array"  # PERFCOUNTER_ARRAY: fixed size, each element summed over online CPUs
    STATUS = "status"  # PERFSTATUS: per-CPU gauge, survives `xenperf -r`


@dataclass(frozen=True)
class Counter:
    name: str  # the description string xenperf prints, e.g. "#interrupts"
    kind: Kind
    size: int = 0  # number of elements, arrays only

    def nr_vals(self, nr_online_cpus: int) -> int:
        return self.size if self.kind is Kind.ARRAY else nr_online_cpus


@dataclass(frozen=True)
class Catalogue:
    label: str
    counters: tuple[Counter, ...]

    def nr_vals(self, nr_online_cpus: int) -> int:
        return sum(c.nr_vals(nr_online_cpus) for c in self.counters)

    def __getitem__(self, name: str) -> Counter:
        for counter in self.counters:
            if counter.name == name:
                return counter
        raise KeyError(name)


P, A, S = Kind.PLAIN, Kind.ARRAY, Kind.STATUS
HVM, SHADOW, CREDIT, CREDIT2 = (
    "CONFIG_HVM",
    "CONFIG_SHADOW_PAGING",
    "CONFIG_SCHED_CREDIT",
    "CONFIG_SCHED_CREDIT2",
)
OLD, NEW, BOTH = "4.16", "4.17", "*"  # which releases have the row: <= 4.16, >= 4.17, both

# (description string, kind, array size, Kconfig condition (4.17+ only), releases)
_ROWS: Final[tuple[tuple[str, Kind, int, str | None, str], ...]] = (
    # xen/arch/x86/include/asm/perfc_defn.h (4.16: xen/include/asm-x86/perfc_defn.h)
    ("exceptions", A, 32, None, BOTH),
    ("vmexits", A, 56, None, OLD),  # VMX only before 4.17
    ("vmexits", A, 144, HVM, NEW),  # max(VMX 76, SVM 144: NPF folded to 143)
    ("cause vector", A, 32, HVM, BOTH),
    ("SVMexits", A, 142, None, OLD),
    ("segmentation fixups", P, 0, None, BOTH),
    ("apic timer interrupts", P, 0, None, BOTH),
    ("domain page tlb flushes", P, 0, None, BOTH),
    ("calls to mmuext_op", P, 0, None, BOTH),
    ("mmuext ops", P, 0, None, BOTH),
    ("calls to mmu_update", P, 0, None, BOTH),
    ("page updates", P, 0, None, BOTH),
    ("mmu_updates of writable pages", P, 0, None, BOTH),
    ("calls to update_va_map", P, 0, None, BOTH),
    ("page faults", P, 0, None, BOTH),
    ("copy_user faults", P, 0, None, BOTH),
    ("map_domain_page count", P, 0, None, BOTH),
    ("writable pt emulations", P, 0, None, BOTH),
    ("mmio ro emulations", P, 0, None, BOTH),
    ("pre-exception fixed", P, 0, None, BOTH),
    ("guest pagetable walks", P, 0, None, BOTH),
    ("calls to shadow_alloc", P, 0, SHADOW, BOTH),
    ("shadow_alloc flushed TLBs", P, 0, SHADOW, BOTH),
    ("number of shadow pages in use", S, 0, SHADOW, BOTH),
    ("calls to shadow_free", P, 0, SHADOW, BOTH),
    ("shadow recycles old shadows", P, 0, SHADOW, BOTH),
    ("shadow recycles in-use shadows", P, 0, SHADOW, BOTH),
    ("shadow hit read-only linear map", P, 0, SHADOW, BOTH),
    ("shadow A bit update", P, 0, SHADOW, BOTH),
    ("shadow A&D bit update", P, 0, SHADOW, BOTH),
    ("calls to shadow_fault", P, 0, SHADOW, BOTH),
    ("shadow_fault fast path n/p", P, 0, SHADOW, BOTH),
    ("shadow_fault fast path mmio", P, 0, SHADOW, BOTH),
    ("shadow_fault fast path error", P, 0, SHADOW, BOTH),
    ("shadow_fault guest bad gfn", P, 0, SHADOW, BOTH),
    ("shadow_fault really guest fault", P, 0, SHADOW, BOTH),
    ("shadow_fault emulates a read", P, 0, SHADOW, BOTH),
    ("shadow_fault emulates a write", P, 0, SHADOW, BOTH),
    ("shadow_fault emulator fails", P, 0, SHADOW, BOTH),
    ("shadow_fault emulate stack write", P, 0, SHADOW, BOTH),
    ("shadow_fault emulate for CR0.WP=0", P, 0, SHADOW, BOTH),
    ("shadow_fault fast emulate", P, 0, SHADOW, BOTH),
    ("shadow_fault fast emulate failed", P, 0, SHADOW, BOTH),
    ("shadow_fault handled as mmio", P, 0, SHADOW, BOTH),
    ("shadow_fault fixed fault", P, 0, SHADOW, BOTH),
    ("shadow causes ptwr to emulate", P, 0, SHADOW, BOTH),
    ("calls to shadow_validate_gl1e", P, 0, SHADOW, BOTH),
    ("calls to shadow_validate_gl2e", P, 0, SHADOW, BOTH),
    ("calls to shadow_validate_gl3e", P, 0, SHADOW, BOTH),
    ("calls to shadow_validate_gl4e", P, 0, SHADOW, BOTH),
    ("calls to shadow_hash_lookup", P, 0, SHADOW, BOTH),
    ("shadow hash hit in bucket head", P, 0, SHADOW, BOTH),
    ("shadow hash misses", P, 0, SHADOW, BOTH),
    ("calls to get_shadow_status", P, 0, SHADOW, BOTH),
    ("calls to shadow_hash_insert", P, 0, SHADOW, BOTH),
    ("calls to shadow_hash_delete", P, 0, SHADOW, BOTH),
    ("shadow removes write access", P, 0, SHADOW, BOTH),
    ("shadow writeable: 32b w2k3", P, 0, SHADOW, BOTH),
    ("shadow writeable: 32pae w2k3", P, 0, SHADOW, BOTH),
    ("shadow writeable: 64b w2k3", P, 0, SHADOW, BOTH),
    ("shadow writeable: linux low/solaris", P, 0, SHADOW, BOTH),
    ("shadow writeable: linux high", P, 0, SHADOW, BOTH),
    ("shadow writeable: FreeBSD", P, 0, SHADOW, BOTH),
    ("shadow writeable: sl1p", P, 0, SHADOW, BOTH),
    ("shadow writeable: sl1p failed", P, 0, SHADOW, BOTH),
    ("shadow writeable brute-force", P, 0, SHADOW, BOTH),
    ("shadow writeable resync bf", P, 0, SHADOW, BOTH),
    ("shadow removes all mappings", P, 0, SHADOW, BOTH),
    ("shadow rm-mappings brute-force", P, 0, SHADOW, BOTH),
    ("shadow unshadows for fork/exit", P, 0, SHADOW, BOTH),
    ("shadow unshadows a page", P, 0, SHADOW, BOTH),
    ("shadow unshadow by up-pointer", P, 0, SHADOW, BOTH),
    ("shadow unshadow brute-force", P, 0, SHADOW, BOTH),
    ("shadow_get_page_from_l1e failed", P, 0, SHADOW, BOTH),
    ("shadow checks gwalk", P, 0, SHADOW, BOTH),
    ("shadow check inconsistent gwalk", P, 0, SHADOW, BOTH),
    ("shadow flush tlb by removing write perm", P, 0, SHADOW, BOTH),
    ("shadow emulates invlpg", P, 0, SHADOW, BOTH),
    ("shadow invlpg faults", P, 0, SHADOW, BOTH),
    ("shadow extra pt write", P, 0, SHADOW, BOTH),
    ("shadow extra non-pt-write op", P, 0, SHADOW, BOTH),
    ("shadow extra emulation failed", P, 0, SHADOW, BOTH),
    ("shadow OOS fixup adds", P, 0, SHADOW, BOTH),
    ("shadow OOS fixup evictions", P, 0, SHADOW, BOTH),
    ("shadow OOS unsyncs", P, 0, SHADOW, BOTH),
    ("shadow OOS evictions", P, 0, SHADOW, BOTH),
    ("shadow OOS resyncs", P, 0, SHADOW, BOTH),
    ("realmode instructions emulated", P, 0, None, BOTH),
    ("vmexits from realmode", P, 0, None, BOTH),
    ("vmexits from Pause-Loop Detection", P, 0, None, BOTH),
    ("IOMMU page table shatters", P, 0, None, NEW),
    ("IOMMU page table coalesces", P, 0, None, NEW),
    ("Bus Locks Detected", P, 0, None, NEW),
    ("domain crashes by Notify VM Exit", P, 0, None, NEW),
    # xen/include/xen/perfc_defn.h
    ("hypercalls", A, 64, None, BOTH),
    ("calls to multicall", P, 0, None, OLD),
    ("calls from multicall", P, 0, None, BOTH),
    ("#interrupts", P, 0, None, BOTH),
    ("#IPIs", P, 0, None, BOTH),
    ("RCU: idle_timer", P, 0, None, BOTH),
    ("sched: timer", P, 0, None, BOTH),
    ("sched: runs through scheduler", P, 0, None, BOTH),
    ("sched: context switches", P, 0, None, BOTH),
    ("sched: specific scheduler", P, 0, None, BOTH),
    ("sched: dom_init", P, 0, None, BOTH),
    ("sched: dom_destroy", P, 0, None, BOTH),
    ("sched: vcpu_yield", P, 0, None, BOTH),
    ("sched: unit_alloc", P, 0, None, BOTH),
    ("sched: unit_insert", P, 0, None, BOTH),
    ("sched: unit_remove", P, 0, None, BOTH),
    ("sched: unit_sleep", P, 0, None, BOTH),
    ("sched: unit_wake_running", P, 0, None, BOTH),
    ("sched: unit_wake_onrunq", P, 0, None, BOTH),
    ("sched: unit_wake_runnable", P, 0, None, BOTH),
    ("sched: unit_wake_not_runnable", P, 0, None, BOTH),
    ("sched: tickled_no_cpu", P, 0, None, BOTH),
    ("sched: tickled_idle_cpu", P, 0, None, BOTH),
    ("sched: tickled_idle_cpu_exclusive", P, 0, None, BOTH),
    ("sched: tickled_busy_cpu", P, 0, None, BOTH),
    ("sched: unit_check", P, 0, None, BOTH),
    ("sched: migrate_running", P, 0, None, NEW),
    ("sched: migrate_on_runq", P, 0, None, NEW),
    ("sched: migrated", P, 0, None, NEW),
    ("csched: delay", P, 0, CREDIT, BOTH),
    ("csched: acct_run", P, 0, CREDIT, BOTH),
    ("csched: acct_no_work", P, 0, CREDIT, BOTH),
    ("csched: acct_balance", P, 0, CREDIT, BOTH),
    ("csched: acct_reorder", P, 0, CREDIT, BOTH),
    ("csched: acct_min_credit", P, 0, CREDIT, BOTH),
    ("csched: acct_unit_active", P, 0, CREDIT, BOTH),
    ("csched: acct_unit_idle", P, 0, CREDIT, BOTH),
    ("csched: unit_boost", P, 0, CREDIT, BOTH),
    ("csched: unit_park", P, 0, CREDIT, BOTH),
    ("csched: unit_unpark", P, 0, CREDIT, BOTH),
    ("csched: load_balance_idle", P, 0, CREDIT, BOTH),
    ("csched: load_balance_over", P, 0, CREDIT, BOTH),
    ("csched: load_balance_other", P, 0, CREDIT, BOTH),
    ("csched: steal_trylock", P, 0, CREDIT, BOTH),
    ("csched: steal_trylock_failed", P, 0, CREDIT, BOTH),
    ("csched: steal_peer_idle", P, 0, CREDIT, BOTH),
    ("csched: migrate_queued", P, 0, CREDIT, BOTH),
    ("csched: migrate_running", P, 0, None, OLD),
    ("csched: migrate_kicked_away", P, 0, CREDIT, BOTH),
    ("csched: unit_hot", P, 0, CREDIT, BOTH),
    ("csched2: burn_credits_t2c", P, 0, CREDIT2, BOTH),
    ("csched2: acct_load_balance", P, 0, CREDIT2, BOTH),
    ("csched2: update_max_weight_quick", P, 0, CREDIT2, BOTH),
    ("csched2: update_max_weight_full", P, 0, CREDIT2, BOTH),
    ("csched2: migrate_requested", P, 0, CREDIT2, BOTH),
    ("csched2: migrate_on_runq", P, 0, None, OLD),
    ("csched2: migrate_no_runq", P, 0, CREDIT2, BOTH),
    ("csched2: runtime_min_timer", P, 0, CREDIT2, BOTH),
    ("csched2: runtime_max_timer", P, 0, CREDIT2, BOTH),
    ("csched2: pick_resource", P, 0, CREDIT2, BOTH),
    ("csched2: need_fallback_cpu", P, 0, CREDIT2, BOTH),
    ("csched2: migrated", P, 0, None, OLD),
    ("csched2: migrate_resisted", P, 0, CREDIT2, BOTH),
    ("csched2: credit_reset", P, 0, CREDIT2, BOTH),
    ("csched2: deferred_to_tickled_cpu", P, 0, CREDIT2, BOTH),
    ("csched2: tickled_cpu_overwritten", P, 0, CREDIT2, BOTH),
    ("csched2: tickled_cpu_overridden", P, 0, CREDIT2, BOTH),
    ("PG_need_flush tlb flushes", P, 0, None, BOTH),
)

KCONFIG_OPTIONS: Final = frozenset({HVM, SHADOW, CREDIT, CREDIT2})


def xen_4_17_x86(options: Iterable[str], label: str) -> Catalogue:
    """The Xen 4.17 x86 counters of a build with the given Kconfig options enabled."""
    enabled = frozenset(options)
    unknown = enabled - KCONFIG_OPTIONS
    if unknown:
        raise ValueError(f"unknown Kconfig options: {', '.join(sorted(unknown))}")
    return Catalogue(
        label,
        tuple(
            Counter(name, kind, size)
            for name, kind, size, condition, releases in _ROWS
            if releases != OLD and (condition is None or condition in enabled)
        ),
    )


def _xen_4_16_x86() -> Catalogue:
    # Before 4.17 nothing was conditional: every counter is in every perf-counter build.
    return Catalogue(
        "xen-4.16",
        tuple(Counter(name, kind, size) for name, kind, size, _, rel in _ROWS if rel != NEW),
    )


# Debian 12's build: no shadow paging, credit2 by default with credit also compiled in.
DEBIAN_12: Final = xen_4_17_x86({HVM, CREDIT, CREDIT2}, "xen-4.17-debian12")
SHADOW_PAGING: Final = xen_4_17_x86({HVM, SHADOW, CREDIT, CREDIT2}, "xen-4.17-shadow")
XEN_4_16: Final = _xen_4_16_x86()

CATALOGUES: Final = {c.label: c for c in (DEBIAN_12, SHADOW_PAGING, XEN_4_16)}
