"""libxenctrl through ctypes (no process per read): the hypervisor's performance counters, and
the host's CPUs, domains and vCPUs as `xl` itself reads them.

ABI facts (docs/xen-reference.md §2): `xc_perfc_desc_t` is `{char name[80]; uint32_t nr_vals}`
(84 bytes), values are uint32, and `xc_perfc_query` wants hypercall buffers
(`xc__hypercall_buffer_alloc`, a 40-byte `xc_hypercall_buffer` on x86_64). The sysctl takes
no buffer sizes: if a CPU comes online between `xc_perfc_query_number` and `xc_perfc_query`,
the hypervisor writes more values than were counted. So we allocate room for every plain
counter to have `max_cpu_id + 1` values, and ask `xc_perfc_query_number` again afterwards;
if the counts moved, we read again.

Domains and vCPUs (the calls xl's `list` and `vcpu-list` make through libxl), with Xen 4.17's
layouts, checked below and, in the simulator's stub, at compile time:

- `xc_physinfo(xch, xc_physinfo_t *)`: `struct xen_sysctl_physinfo` (xen/include/public/
  sysctl.h), 112 bytes; `nr_cpus` (online) at 8, `max_cpu_id` at 12.
- `xc_domain_getinfolist(xch, first_domid, max, xc_domaininfo_t *)` returns how many it
  filled, in domid order: `struct xen_domctl_getdomaininfo` (domctl.h, interface version
  0x15), 112 bytes: `domain` u16 at 0, `flags` (XEN_DOMINF_*, shutdown code in bits 16-23) at
  4, `tot_pages` 8, `max_pages` 16, `outstanding_pages` 24, `cpu_time` (ns) 56,
  `nr_online_vcpus` 64, `max_vcpu_id` 68, `handle` (the uuid's 16 bytes) 76.
- `xc_vcpu_getinfo(xch, domid, vcpu, xc_vcpuinfo_t *)`: `struct xen_domctl_getvcpuinfo`, 24
  bytes: `online`/`blocked`/`running` u8 at 4/5/6, `cpu_time` 8, `cpu` 16.
- `xc_vcpu_getaffinity(xch, domid, vcpu, hard, soft, flags)` fills `xc_get_cpumap_size()`
  bytes (one bit per CPU id up to `max_cpu_id`) of each map `flags` asks for
  (XEN_VCPUAFFINITY_HARD = 1, SOFT = 2).
- `xc_getcpuinfo(xch, int max_cpus, xc_cpuinfo_t *info, int *nr_cpus)` (tools/libs/ctrl/
  xc_misc.c, XEN_SYSCTL_getcpuinfo) fills one `struct xen_sysctl_cpuinfo { uint64_aligned_t
  idletime; }` (8 bytes, ns) per CPU id from 0, at most `max_cpus`, and sets `*nr_cpus` to how
  many it filled (`min(max_cpus, nr_cpu_ids)`); an offline CPU's idle time reads 0 (xen/common/
  sched/core.c `get_cpu_idle_time`: the idle vCPU's running time, only while the CPU is
  online). collectd's xencpu plugin and `xenpm` read CPU usage this way.

The SONAME carries the Xen version and the ABI is not promised across versions, so we load
`libxenctrl.so.4.17` (what we were written against) and else the newest `libxenctrl.so.4.*`
found on the library path. The result is the same `PerfcSnapshot` `xenperf -f` parses to.
"""

from __future__ import annotations

import array
import ctypes
import glob
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from xentools.xenperf import PerfcSnapshot, snapshot_from_descriptors

log = logging.getLogger(__name__)

SONAME = "libxenctrl.so.4.17"
SONAME_GLOB = "libxenctrl.so.4.*"
LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")
DESCRIPTOR_BYTES = 84
CPUINFO_BYTES = 8
QUERY_ATTEMPTS = 3


class XenCtrlError(OSError):
    """A libxenctrl call failed; `errno` says why (ENOSYS: no perf counters in this Xen)."""


class LibraryNotFound(RuntimeError):
    """No loadable libxenctrl."""


class _HypercallBuffer(ctypes.Structure):
    _fields_ = [
        ("hbuf", ctypes.c_void_p),
        ("param_shadow", ctypes.c_void_p),
        ("dir", ctypes.c_int),
        ("ubuf", ctypes.c_void_p),
        ("sz", ctypes.c_size_t),
    ]


class _CpuInfo(ctypes.Structure):
    _fields_ = [("idletime", ctypes.c_uint64)]


assert ctypes.sizeof(_CpuInfo) == CPUINFO_BYTES


class _PerfcDesc(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char * 80), ("nr_vals", ctypes.c_uint32)]


assert ctypes.sizeof(_PerfcDesc) == DESCRIPTOR_BYTES


class _PhysInfo(ctypes.Structure):
    _fields_ = [
        ("threads_per_core", ctypes.c_uint32),
        ("cores_per_socket", ctypes.c_uint32),
        ("nr_cpus", ctypes.c_uint32),
        ("max_cpu_id", ctypes.c_uint32),
        ("nr_nodes", ctypes.c_uint32),
        ("max_node_id", ctypes.c_uint32),
        ("cpu_khz", ctypes.c_uint32),
        ("capabilities", ctypes.c_uint32),
        ("arch_capabilities", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
        ("total_pages", ctypes.c_uint64),
        ("free_pages", ctypes.c_uint64),
        ("scrub_pages", ctypes.c_uint64),
        ("outstanding_pages", ctypes.c_uint64),
        ("max_mfn", ctypes.c_uint64),
        ("hw_cap", ctypes.c_uint32 * 8),
    ]


class _DomainInfo(ctypes.Structure):
    _fields_ = [
        ("domain", ctypes.c_uint16),
        ("pad1", ctypes.c_uint16),
        ("flags", ctypes.c_uint32),
        ("tot_pages", ctypes.c_uint64),
        ("max_pages", ctypes.c_uint64),
        ("outstanding_pages", ctypes.c_uint64),
        ("shr_pages", ctypes.c_uint64),
        ("paged_pages", ctypes.c_uint64),
        ("shared_info_frame", ctypes.c_uint64),
        ("cpu_time", ctypes.c_uint64),
        ("nr_online_vcpus", ctypes.c_uint32),
        ("max_vcpu_id", ctypes.c_uint32),
        ("ssidref", ctypes.c_uint32),
        ("handle", ctypes.c_uint8 * 16),
        ("cpupool", ctypes.c_uint32),
        ("gpaddr_bits", ctypes.c_uint8),
        ("pad2", ctypes.c_uint8 * 7),
        ("emulation_flags", ctypes.c_uint32),  # struct xen_arch_domainconfig (x86)
        ("misc_flags", ctypes.c_uint32),
    ]


class _VcpuInfo(ctypes.Structure):
    _fields_ = [
        ("vcpu", ctypes.c_uint32),
        ("online", ctypes.c_uint8),
        ("blocked", ctypes.c_uint8),
        ("running", ctypes.c_uint8),
        ("cpu_time", ctypes.c_uint64),
        ("cpu", ctypes.c_uint32),
    ]


assert ctypes.sizeof(_PhysInfo) == 112 and _PhysInfo.max_cpu_id.offset == 12
assert ctypes.sizeof(_DomainInfo) == 112 and _DomainInfo.handle.offset == 76
assert _DomainInfo.cpu_time.offset == 56 and _DomainInfo.nr_online_vcpus.offset == 64
assert ctypes.sizeof(_VcpuInfo) == 24 and _VcpuInfo.cpu_time.offset == 8

PAGE_BYTES = 4096
XEN_DOMINF_DYING = 1 << 0
XEN_DOMINF_SHUTDOWN = 1 << 2
XEN_DOMINF_PAUSED = 1 << 3
XEN_DOMINF_BLOCKED = 1 << 4
XEN_DOMINF_RUNNING = 1 << 5
XEN_DOMINF_SHUTDOWNSHIFT = 16
SHUTDOWN_CRASH = 3  # xen/include/public/sched.h
XEN_VCPUAFFINITY_HARD = 1 << 0
XEN_INVALID_MAX_VCPU_ID = 0xFFFFFFFF
DOMAINS_PER_CALL = 256


@dataclass(frozen=True)
class PhysInfo:
    nr_cpus: int  # online
    max_cpu_id: int


@dataclass(frozen=True)
class XcDomain:
    """One `xc_domaininfo_t`, in the units we use."""

    domid: int
    uuid: str
    flags: int
    memory_bytes: int  # tot_pages + outstanding_pages, as xl list's Mem
    max_memory_bytes: int  # max_pages
    cpu_time_ns: int
    online_vcpus: int
    max_vcpu_id: int | None  # None: no vCPUs

    @property
    def states(self) -> frozenset[str]:
        """The names xl list's state flags have (`xentools.xl.DomainState.names`)."""
        shutdown = bool(self.flags & XEN_DOMINF_SHUTDOWN)
        code = (self.flags >> XEN_DOMINF_SHUTDOWNSHIFT) & 0xFF
        return frozenset(
            name
            for name, on in (
                ("running", self.flags & XEN_DOMINF_RUNNING),
                ("blocked", self.flags & XEN_DOMINF_BLOCKED),
                ("paused", self.flags & XEN_DOMINF_PAUSED),
                ("shutdown", shutdown),
                ("crashed", shutdown and code == SHUTDOWN_CRASH),
                ("dying", self.flags & XEN_DOMINF_DYING),
            )
            if on
        )


@dataclass(frozen=True)
class XcVcpu:
    online: bool
    blocked: bool
    running: bool
    cpu_time_ns: int
    cpu: int


def mask_cpus(mask: int) -> frozenset[int]:
    """The CPU ids of the bits set in `mask`."""
    cpus = []
    while mask:
        lowest = mask & -mask
        cpus.append(lowest.bit_length() - 1)
        mask ^= lowest
    return frozenset(cpus)


def _uuid(handle: bytes) -> str:
    text = handle.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", os.path.basename(path).split(".so.")[1]))


def library_candidates() -> list[str]:
    """`libxenctrl.so.4.*` files on LD_LIBRARY_PATH and the usual directories, newest first."""
    dirs = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d] + list(LIBRARY_DIRS)
    found = {path for d in dirs for path in glob.glob(os.path.join(d, SONAME_GLOB))}
    return sorted(found, key=_version_key, reverse=True)


T = TypeVar("T")


def bind(cdll: ctypes.CDLL, name: str, restype: Any, argtypes: list[Any]) -> Any:
    """`cdll.name` with its prototype set, so that ctypes converts and checks the arguments."""
    function = getattr(cdll, name)
    function.restype = restype
    function.argtypes = argtypes
    return function


def load_first(soname: str, candidates: Sequence[str], make: Callable[[ctypes.CDLL, str], T]) -> T:
    """`make(library, name)` for the first of `soname` (as the dynamic linker finds it) and
    `candidates` that loads and has every symbol `make` binds."""
    errors = []
    for name in [soname, *candidates]:
        try:
            return make(ctypes.CDLL(name, use_errno=True), name)
        except (OSError, AttributeError) as error:
            errors.append(f"{name}: {error}")
    raise LibraryNotFound("; ".join(errors))


class LibXenCtrl:
    """A loaded libxenctrl with the prototypes we use."""

    def __init__(self, cdll: ctypes.CDLL, path: str) -> None:
        self.path = path
        self._lib = cdll
        vp = ctypes.c_void_p
        buffer_p = ctypes.POINTER(_HypercallBuffer)
        int_p = ctypes.POINTER(ctypes.c_int)
        self._open = self._function("xc_interface_open", vp, [vp, vp, ctypes.c_uint])
        self._close = self._function("xc_interface_close", ctypes.c_int, [vp])
        self.query_number = self._function(
            "xc_perfc_query_number", ctypes.c_int, [vp, int_p, int_p]
        )
        self.query = self._function("xc_perfc_query", ctypes.c_int, [vp, buffer_p, buffer_p])
        self.alloc = self._function(
            "xc__hypercall_buffer_alloc", vp, [vp, buffer_p, ctypes.c_size_t]
        )
        self.free = self._function("xc__hypercall_buffer_free", None, [vp, buffer_p])
        u32 = ctypes.c_uint32
        self.physinfo = self._function("xc_physinfo", ctypes.c_int, [vp, ctypes.POINTER(_PhysInfo)])
        self.cpumap_size = self._function("xc_get_cpumap_size", ctypes.c_int, [vp])
        self.getinfolist = self._function(
            "xc_domain_getinfolist", ctypes.c_int, [vp, u32, ctypes.c_uint, ctypes.c_void_p]
        )
        self.vcpu_getinfo = self._function(
            "xc_vcpu_getinfo", ctypes.c_int, [vp, u32, u32, ctypes.POINTER(_VcpuInfo)]
        )
        self.vcpu_getaffinity = self._function(
            "xc_vcpu_getaffinity", ctypes.c_int, [vp, u32, ctypes.c_int, vp, vp, u32]
        )
        self.getcpuinfo = self._function(
            "xc_getcpuinfo", ctypes.c_int, [vp, ctypes.c_int, ctypes.POINTER(_CpuInfo), int_p]
        )

    def _function(self, name: str, restype: Any, argtypes: list[Any]) -> Any:
        return bind(self._lib, name, restype, argtypes)

    @classmethod
    def load(cls, candidates: Sequence[str] | None = None) -> LibXenCtrl:
        """`libxenctrl.so.4.17` as the dynamic linker finds it, else the newest 4.x on disk."""
        return load_first(SONAME, library_candidates() if candidates is None else candidates, cls)

    def open(self) -> Interface:
        ctypes.set_errno(0)
        handle = self._open(None, None, 0)
        if not handle:
            number = ctypes.get_errno()
            raise XenCtrlError(number, f"xc_interface_open: {os.strerror(number)}")
        return Interface(self, handle)

    def close(self, handle: int) -> None:
        self._close(handle)


class Interface:
    """An open `xc_interface`; not for concurrent use (the caller serialises)."""

    def __init__(self, library: LibXenCtrl, handle: int) -> None:
        self._library = library
        self._handle: int | None = handle

    def close(self) -> None:
        if self._handle is not None:
            self._library.close(self._handle)
            self._handle = None

    def __enter__(self) -> Interface:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _counts(self) -> tuple[int, int]:
        descriptors, values = ctypes.c_int(0), ctypes.c_int(0)
        ctypes.set_errno(0)
        # The counts are written even on failure: trust only the return code.
        if self._library.query_number(
            self._handle, ctypes.byref(descriptors), ctypes.byref(values)
        ):
            number = ctypes.get_errno()
            raise XenCtrlError(number, f"xc_perfc_query_number: {os.strerror(number)}")
        return descriptors.value, values.value

    def perfc_query(self, max_cpu_id: int) -> list[tuple[str, list[int]]]:
        """Every descriptor's name and values, in hypervisor order."""
        if self._handle is None:
            raise XenCtrlError(0, "interface closed")
        for _ in range(QUERY_ATTEMPTS):
            nr_desc, nr_vals = self._counts()
            capacity = nr_vals + nr_desc * (max_cpu_id + 1)
            result = self._query_once(nr_desc, capacity)
            if result is not None and self._counts() == (nr_desc, sum(len(v) for _, v in result)):
                return result
            log.debug("perf counter layout moved during the query (CPU on/offline); again")
        raise XenCtrlError(0, "perf counter layout kept changing during the query")

    def _query_once(self, nr_desc: int, capacity: int) -> list[tuple[str, list[int]]] | None:
        lib = self._library
        descriptors = _HypercallBuffer(None, None, 0, ctypes.c_void_p(-1).value, 0)
        values = _HypercallBuffer(None, None, 0, ctypes.c_void_p(-1).value, 0)
        try:
            for buffer, size in ((descriptors, DESCRIPTOR_BYTES * nr_desc), (values, 4 * capacity)):
                ctypes.set_errno(0)
                if not lib.alloc(self._handle, ctypes.byref(buffer), max(size, 1)):
                    number = ctypes.get_errno()
                    raise XenCtrlError(number, f"hypercall buffer: {os.strerror(number)}")
            ctypes.set_errno(0)
            if lib.query(self._handle, ctypes.byref(descriptors), ctypes.byref(values)):
                number = ctypes.get_errno()
                raise XenCtrlError(number, f"xc_perfc_query: {os.strerror(number)}")
            table = (_PerfcDesc * nr_desc).from_address(descriptors.hbuf)
            lengths = [int(entry.nr_vals) for entry in table]
            if sum(lengths) > capacity:
                return None
            # One copy of the whole buffer, then ints: 30x cheaper than iterating a ctypes
            # array (3 ms for 256 CPUs' 23,000 values).
            flat = array.array("I", ctypes.string_at(values.hbuf, 4 * sum(lengths))).tolist()
            result = []
            offset = 0
            for entry, length in zip(table, lengths, strict=True):
                name = entry.name.decode("utf-8", errors="replace")
                result.append((name, flat[offset : offset + length]))
                offset += length
            return result
        finally:
            for buffer in (descriptors, values):
                if buffer.hbuf:
                    lib.free(self._handle, ctypes.byref(buffer))

    def _failed(self, call: str) -> XenCtrlError:
        number = ctypes.get_errno()
        return XenCtrlError(number, f"{call}: {os.strerror(number)}")

    def _checked_handle(self) -> int:
        if self._handle is None:
            raise XenCtrlError(0, "interface closed")
        return self._handle

    def physinfo(self) -> PhysInfo:
        handle = self._checked_handle()
        info = _PhysInfo()
        ctypes.set_errno(0)
        if self._library.physinfo(handle, ctypes.byref(info)):
            raise self._failed("xc_physinfo")
        return PhysInfo(nr_cpus=int(info.nr_cpus), max_cpu_id=int(info.max_cpu_id))

    def domains(self) -> list[XcDomain]:
        """Every domain, in domid order (`xc_domain_getinfolist`, as `xl list`)."""
        handle = self._checked_handle()
        table = (_DomainInfo * DOMAINS_PER_CALL)()
        domains: list[XcDomain] = []
        first = 0
        while True:
            ctypes.set_errno(0)
            count = self._library.getinfolist(handle, first, DOMAINS_PER_CALL, table)
            if count < 0:
                raise self._failed("xc_domain_getinfolist")
            for entry in table[:count]:
                domains.append(
                    XcDomain(
                        domid=int(entry.domain),
                        uuid=_uuid(bytes(entry.handle)),
                        flags=int(entry.flags),
                        memory_bytes=(entry.tot_pages + entry.outstanding_pages) * PAGE_BYTES,
                        max_memory_bytes=int(entry.max_pages) * PAGE_BYTES,
                        cpu_time_ns=int(entry.cpu_time),
                        online_vcpus=int(entry.nr_online_vcpus),
                        max_vcpu_id=None
                        if entry.max_vcpu_id == XEN_INVALID_MAX_VCPU_ID
                        else int(entry.max_vcpu_id),
                    )
                )
            if count < DOMAINS_PER_CALL:
                return domains
            first = domains[-1].domid + 1

    def vcpu(self, domid: int, vcpu: int) -> XcVcpu:
        handle = self._checked_handle()
        info = _VcpuInfo()
        ctypes.set_errno(0)
        if self._library.vcpu_getinfo(handle, domid, vcpu, ctypes.byref(info)):
            raise self._failed(f"xc_vcpu_getinfo({domid}, {vcpu})")
        return XcVcpu(
            online=bool(info.online),
            blocked=bool(info.blocked),
            running=bool(info.running),
            cpu_time_ns=int(info.cpu_time),
            cpu=int(info.cpu),
        )

    def cpu_idle_ns(self, max_cpus: int) -> list[int]:
        """Idle time in ns of CPU ids 0 .. up to `max_cpus` - 1 (`xc_getcpuinfo`); an offline
        CPU's is 0."""
        handle = self._checked_handle()
        table = (_CpuInfo * max(max_cpus, 1))()
        filled = ctypes.c_int(0)
        ctypes.set_errno(0)
        if self._library.getcpuinfo(handle, max_cpus, table, ctypes.byref(filled)):
            raise self._failed("xc_getcpuinfo")
        return [int(entry.idletime) for entry in table[: max(0, min(filled.value, max_cpus))]]

    def cpumap_size(self) -> int:
        """Bytes of a CPU bitmap (`xc_get_cpumap_size`: one bit per CPU id to max_cpu_id)."""
        size = int(self._library.cpumap_size(self._checked_handle()))
        if size <= 0:
            raise self._failed("xc_get_cpumap_size")
        return size

    def hard_affinity_mask(self, domid: int, vcpu: int, size: int) -> int:
        """The vCPU's hard affinity as an integer, bit i = CPU id i (`xc_vcpu_getaffinity`);
        `size` is `cpumap_size()`."""
        handle = self._checked_handle()
        hard = (ctypes.c_uint8 * size)()
        soft = (ctypes.c_uint8 * size)()
        ctypes.set_errno(0)
        if self._library.vcpu_getaffinity(handle, domid, vcpu, hard, soft, XEN_VCPUAFFINITY_HARD):
            raise self._failed(f"xc_vcpu_getaffinity({domid}, {vcpu})")
        return int.from_bytes(bytes(hard), "little")

    def hard_affinity(self, domid: int, vcpu: int) -> frozenset[int]:
        """The CPU ids the vCPU may run on."""
        return mask_cpus(self.hard_affinity_mask(domid, vcpu, self.cpumap_size()))

    def perfc_snapshot(self, max_cpu_id: int, online_cpus: int | None = None) -> PerfcSnapshot:
        descriptors: list[tuple[str, Sequence[int] | None]] = list(self.perfc_query(max_cpu_id))
        return snapshot_from_descriptors(descriptors, online_cpus)
