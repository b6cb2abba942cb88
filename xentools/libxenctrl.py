"""The hypervisor's performance counters through libxenctrl, with ctypes (no process per read).

ABI facts (docs/xen-reference.md §2): `xc_perfc_desc_t` is `{char name[80]; uint32_t nr_vals}`
(84 bytes), values are uint32, and `xc_perfc_query` wants hypercall buffers
(`xc__hypercall_buffer_alloc`, a 40-byte `xc_hypercall_buffer` on x86_64). The sysctl takes
no buffer sizes: if a CPU comes online between `xc_perfc_query_number` and `xc_perfc_query`,
the hypervisor writes more values than were counted. So we allocate room for every plain
counter to have `max_cpu_id + 1` values, and ask `xc_perfc_query_number` again afterwards;
if the counts moved, we read again.

The SONAME carries the Xen version and the ABI is not promised across versions, so we load
`libxenctrl.so.4.17` (what we were written against) and else the newest `libxenctrl.so.4.*`
found on the library path. The result is the same `PerfcSnapshot` `xenperf -f` parses to.
"""

from __future__ import annotations

import ctypes
import glob
import logging
import os
import re
from collections.abc import Sequence
from typing import Any

from xentools.xenperf import PerfcSnapshot, snapshot_from_descriptors

log = logging.getLogger(__name__)

SONAME = "libxenctrl.so.4.17"
SONAME_GLOB = "libxenctrl.so.4.*"
LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")
DESCRIPTOR_BYTES = 84
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


class _PerfcDesc(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char * 80), ("nr_vals", ctypes.c_uint32)]


assert ctypes.sizeof(_PerfcDesc) == DESCRIPTOR_BYTES


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", os.path.basename(path).split(".so.")[1]))


def library_candidates() -> list[str]:
    """`libxenctrl.so.4.*` files on LD_LIBRARY_PATH and the usual directories, newest first."""
    dirs = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d] + list(LIBRARY_DIRS)
    found = {path for d in dirs for path in glob.glob(os.path.join(d, SONAME_GLOB))}
    return sorted(found, key=_version_key, reverse=True)


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

    def _function(self, name: str, restype: Any, argtypes: list[Any]) -> Any:
        function = getattr(self._lib, name)
        function.restype = restype
        function.argtypes = argtypes
        return function

    @classmethod
    def load(cls, candidates: Sequence[str] | None = None) -> LibXenCtrl:
        """`libxenctrl.so.4.17` as the dynamic linker finds it, else the newest 4.x on disk."""
        errors = []
        for name in [SONAME, *(library_candidates() if candidates is None else candidates)]:
            try:
                return cls(ctypes.CDLL(name, use_errno=True), name)
            except (OSError, AttributeError) as error:
                errors.append(f"{name}: {error}")
        raise LibraryNotFound("; ".join(errors))

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
            flat = list((ctypes.c_uint32 * sum(lengths)).from_address(values.hbuf))
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

    def perfc_snapshot(self, max_cpu_id: int, online_cpus: int | None = None) -> PerfcSnapshot:
        descriptors: list[tuple[str, Sequence[int] | None]] = list(self.perfc_query(max_cpu_id))
        return snapshot_from_descriptors(descriptors, online_cpus)
