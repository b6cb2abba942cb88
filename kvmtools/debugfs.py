"""KVM's per-VM statistics in debugfs: ``<debugfs>/kvm/<pid>-<fd>/<stat>``, one decimal number
per file; a vCPU statistic there is the sum over the VM's vCPUs (virt/kvm/kvm_main.c,
``kvm_create_vm_debugfs`` and ``kvm_stat_data_get``).

Which statistics are cumulative counters and which are instant values comes from the kernel's
statistics descriptors, not from their names: Linux 6.1 ``include/linux/kvm_host.h``
(``KVM_GENERIC_VM_STATS``, ``KVM_GENERIC_VCPU_STATS``, and the macros
``STATS_DESC_COUNTER`` = ``KVM_STATS_TYPE_CUMULATIVE``, ``STATS_DESC_ICOUNTER`` and
``STATS_DESC_IBOOLEAN`` = ``KVM_STATS_TYPE_INSTANT``, ``STATS_DESC_PCOUNTER`` =
``KVM_STATS_TYPE_PEAK``, ``STATS_DESC_TIME_NSEC`` = cumulative nanoseconds,
``STATS_DESC_LOGHIST_TIME_NSEC`` = ``KVM_STATS_TYPE_LOG_HIST``) and
``arch/x86/kvm/x86.c`` (``kvm_vm_stats_desc``, ``kvm_vcpu_stats_desc``).

- cumulative: published as counters (``kvm_vm_<stat>_total``);
- instant: gauges (``kvm_vm_<stat>``);
- peak (a high-water mark, resettable by writing 0) and histograms: not published. debugfs
  shows a histogram as the u64 at its offset, its first bucket only, which means nothing alone.

A statistic this table does not know (a newer kernel) is classified by its file mode where that
is certain: KVM creates instant statistics 0444 and cumulative and peak ones 0644
(``kvm_stats_debugfs_mode``), so an unknown 0444 file is an instant gauge; an unknown 0644 one
may be a peak and is left out.

Kernel lockdown (``LOCKDOWN_DEBUGFS``, fs/debugfs/file.c ``debugfs_locked_down``) refuses to
open any debugfs file whose mode is not read-only 0444: all the cumulative counters fail with
EPERM and only the instant values remain (`DebugfsLockedDown`).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from dataclasses import dataclass
from enum import Enum

log = logging.getLogger(__name__)


class Kind(Enum):
    CUMULATIVE = "cumulative"
    INSTANT = "instant"
    PEAK = "peak"
    HISTOGRAM = "histogram"


_CUMULATIVE = Kind.CUMULATIVE
_INSTANT = Kind.INSTANT
_PEAK = Kind.PEAK
_HIST = Kind.HISTOGRAM

# Linux 6.1, x86. Order as in the descriptor tables.
STAT_KINDS: dict[str, Kind] = {
    # KVM_GENERIC_VM_STATS() (include/linux/kvm_host.h)
    "remote_tlb_flush": _CUMULATIVE,
    "remote_tlb_flush_requests": _CUMULATIVE,
    # kvm_vm_stats_desc (arch/x86/kvm/x86.c)
    "mmu_shadow_zapped": _CUMULATIVE,
    "mmu_pte_write": _CUMULATIVE,
    "mmu_pde_zapped": _CUMULATIVE,
    "mmu_flooded": _CUMULATIVE,
    "mmu_recycled": _CUMULATIVE,
    "mmu_cache_miss": _CUMULATIVE,
    "mmu_unsync": _INSTANT,
    "pages_4k": _INSTANT,
    "pages_2m": _INSTANT,
    "pages_1g": _INSTANT,
    "nx_lpage_splits": _INSTANT,
    "max_mmu_rmap_size": _PEAK,
    "max_mmu_page_hash_collisions": _PEAK,
    # KVM_GENERIC_VCPU_STATS() (include/linux/kvm_host.h)
    "halt_successful_poll": _CUMULATIVE,
    "halt_attempted_poll": _CUMULATIVE,
    "halt_poll_invalid": _CUMULATIVE,
    "halt_wakeup": _CUMULATIVE,
    "halt_poll_success_ns": _CUMULATIVE,
    "halt_poll_fail_ns": _CUMULATIVE,
    "halt_wait_ns": _CUMULATIVE,
    "halt_poll_success_hist": _HIST,
    "halt_poll_fail_hist": _HIST,
    "halt_wait_hist": _HIST,
    "blocking": _INSTANT,
    # kvm_vcpu_stats_desc (arch/x86/kvm/x86.c)
    "pf_taken": _CUMULATIVE,
    "pf_fixed": _CUMULATIVE,
    "pf_emulate": _CUMULATIVE,
    "pf_spurious": _CUMULATIVE,
    "pf_fast": _CUMULATIVE,
    "pf_mmio_spte_created": _CUMULATIVE,
    "pf_guest": _CUMULATIVE,
    "tlb_flush": _CUMULATIVE,
    "invlpg": _CUMULATIVE,
    "exits": _CUMULATIVE,
    "io_exits": _CUMULATIVE,
    "mmio_exits": _CUMULATIVE,
    "signal_exits": _CUMULATIVE,
    "irq_window_exits": _CUMULATIVE,
    "nmi_window_exits": _CUMULATIVE,
    "l1d_flush": _CUMULATIVE,
    "halt_exits": _CUMULATIVE,
    "request_irq_exits": _CUMULATIVE,
    "irq_exits": _CUMULATIVE,
    "host_state_reload": _CUMULATIVE,
    "fpu_reload": _CUMULATIVE,
    "insn_emulation": _CUMULATIVE,
    "insn_emulation_fail": _CUMULATIVE,
    "hypercalls": _CUMULATIVE,
    "irq_injections": _CUMULATIVE,
    "nmi_injections": _CUMULATIVE,
    "req_event": _CUMULATIVE,
    "nested_run": _CUMULATIVE,
    "directed_yield_attempted": _CUMULATIVE,
    "directed_yield_successful": _CUMULATIVE,
    "preemption_reported": _CUMULATIVE,
    "preemption_other": _CUMULATIVE,
    "guest_mode": _INSTANT,
    "notify_window_exits": _CUMULATIVE,
}

# Files KVM's VM directory holds besides the statistics (x86 `kvm_arch_create_vm_debugfs`).
_NOT_STATS = frozenset({"mmu_rmaps_stat"})
# A u64 in decimal and a newline.
_STAT_BYTES = 32


@dataclass(frozen=True)
class VmStat:
    name: str
    kind: Kind
    value: int


class DebugfsLockedDown(PermissionError):
    """debugfs refused some statistics (EPERM: kernel lockdown); `partial` holds the rest."""

    def __init__(self, stats_dir: str, refused: list[str], partial: dict[str, int]) -> None:
        super().__init__(
            f"{stats_dir}: {len(refused)} statistics refused with EPERM (kernel lockdown "
            f"restricts debugfs to read-only files), e.g. {', '.join(sorted(refused)[:3])}"
        )
        self.refused = refused
        self.partial = partial


def stat_kind(name: str, mode: int | None = None) -> Kind | None:
    """The kind of statistic `name`, from the kernel's descriptors; for one they do not list,
    from the file's mode where that is certain (0444: instant), else None."""
    kind = STAT_KINDS.get(name)
    if kind is None and mode is not None and stat.S_IMODE(mode) == 0o444:
        return Kind.INSTANT
    return kind


def parse_stat_value(text: bytes) -> int:
    """One debugfs statistic (`simple_attr` "%llu\\n")."""
    value = int(text)
    if value < 0:
        raise ValueError(f"negative statistic {text!r}")
    return value


def read_vm_stats(stats_dir: str) -> dict[str, int]:
    """Every statistic file in the VM's debugfs directory, by name (vCPU ones summed by KVM).

    Subdirectories (`vcpu<n>/`) and files that are not one number are skipped. Raises
    `DebugfsLockedDown` when debugfs refused files with EPERM, FileNotFoundError when the
    directory is gone (the VM ended).
    """
    values: dict[str, int] = {}
    refused: list[str] = []
    for entry in os.scandir(stats_dir):
        if entry.name in _NOT_STATS or not entry.is_file(follow_symlinks=False):
            continue
        try:
            fd = os.open(entry.path, os.O_RDONLY | os.O_CLOEXEC)
        except PermissionError as error:
            if error.errno == errno.EPERM:
                refused.append(entry.name)
                continue
            raise
        try:
            data = os.read(fd, _STAT_BYTES)
        finally:
            os.close(fd)
        try:
            values[entry.name] = parse_stat_value(data)
        except ValueError:
            log.debug("%s/%s is not a number: %r", stats_dir, entry.name, data[:20])
    if refused:
        raise DebugfsLockedDown(stats_dir, refused, values)
    return values


def classify(stats_dir: str, values: dict[str, int]) -> list[VmStat]:
    """`values` with their kinds, sorted by name; statistics of unknown kind are left out."""
    classified = []
    for name, value in sorted(values.items()):
        kind = STAT_KINDS.get(name)
        if kind is None:
            try:
                kind = stat_kind(name, os.stat(os.path.join(stats_dir, name)).st_mode)
            except OSError:
                kind = None
        if kind is None:
            log.debug("KVM statistic %s: kind unknown (not in Linux 6.1's descriptors)", name)
            continue
        classified.append(VmStat(name, kind, value))
    return classified
