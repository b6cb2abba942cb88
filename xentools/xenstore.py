"""xenstore through libxenstore and ctypes: what `xl` reads there, without a process.

Only reads: `xs_open(0)`, `xs_read(h, XBT_NULL, path, &len)` (a malloc'd copy the caller frees
with libc's `free`; NULL with errno ENOENT when the path does not exist), `xs_close` (Xen
4.17's tools/include/xenstore.h; SONAME `libxenstore.so.4`, symbols version `VERS_4.0`).
A domain's name is `/local/domain/<domid>/name`, where libxl writes it and
`libxl_domid_to_name` (hence `xl list`) reads it.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Sequence

from xentools.libxenctrl import LIBRARY_DIRS, bind, load_first

SONAME = "libxenstore.so.4"
XBT_NULL = 0


class XenStoreError(OSError):
    """A libxenstore call failed."""


def library_candidates() -> list[str]:
    dirs = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d] + list(LIBRARY_DIRS)
    return [os.path.join(d, SONAME) for d in dirs if os.path.exists(os.path.join(d, SONAME))]


class LibXenStore:
    """A loaded libxenstore with the prototypes we use."""

    def __init__(self, cdll: ctypes.CDLL, path: str) -> None:
        self.path = path
        vp = ctypes.c_void_p
        self._open = bind(cdll, "xs_open", vp, [ctypes.c_ulong])
        self._close = bind(cdll, "xs_close", None, [vp])
        self._read = bind(
            cdll,
            "xs_read",
            vp,
            [vp, ctypes.c_uint32, ctypes.c_char_p, ctypes.POINTER(ctypes.c_uint)],
        )
        self._free = bind(ctypes.CDLL(None), "free", None, [vp])

    @classmethod
    def load(cls, candidates: Sequence[str] | None = None) -> LibXenStore:
        return load_first(SONAME, library_candidates() if candidates is None else candidates, cls)

    def open(self) -> XenStore:
        ctypes.set_errno(0)
        handle = self._open(0)
        if not handle:
            number = ctypes.get_errno()
            raise XenStoreError(number, f"xs_open: {os.strerror(number)}")
        return XenStore(self, handle)


class XenStore:
    """An open xenstore connection; not for concurrent use (the caller serialises)."""

    def __init__(self, library: LibXenStore, handle: int) -> None:
        self._library = library
        self._handle: int | None = handle

    def close(self) -> None:
        if self._handle is not None:
            self._library._close(self._handle)
            self._handle = None

    def read(self, path: str) -> str | None:
        """The value at `path`, None when it does not exist."""
        if self._handle is None:
            raise XenStoreError(0, "xenstore connection closed")
        length = ctypes.c_uint(0)
        ctypes.set_errno(0)
        value = self._library._read(self._handle, XBT_NULL, path.encode(), ctypes.byref(length))
        if not value:
            number = ctypes.get_errno()
            if number == errno.ENOENT:
                return None
            raise XenStoreError(number, f"xs_read {path}: {os.strerror(number)}")
        try:
            return ctypes.string_at(value, length.value).decode("utf-8", errors="replace")
        finally:
            self._library._free(value)

    def domain_name(self, domid: int) -> str | None:
        return self.read(f"/local/domain/{domid}/name")
