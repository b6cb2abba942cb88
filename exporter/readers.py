"""The two ways to read the hypervisor's counters, behind one `PerfcReader` protocol.

`LibxenctrlReader` calls libxenctrl through ctypes (no process per scrape); `XenperfReader`
runs `xenperf -f` and parses it. `open_reader("auto", ...)` prefers the library where it loads.
Both return the same `PerfcSnapshot` (see xentools.xenperf for the canonical form).
"""

from __future__ import annotations

import errno
import logging
import re
import threading
from typing import Protocol

from xentools import libxenctrl
from xentools.command import CommandError, run_command
from xentools.xenperf import PerfcSnapshot, XenperfParseError, parse_xenperf

log = logging.getLogger(__name__)

READERS = ("auto", "libxenctrl", "xenperf")
_XENPERF_ERRNO = re.compile(r": (\d+) \(")


class PerfcError(RuntimeError):
    """The counters could not be read (this scrape)."""


class PerfcUnavailable(PerfcError):
    """The hypervisor has no performance counters (ENOSYS): a fact about the host, not an error."""


class PerfcReader(Protocol):
    name: str

    def read(self, nr_cpus: int, max_cpu_id: int, timeout: float) -> PerfcSnapshot: ...


class XenperfReader:
    name = "xenperf"

    def __init__(self, path: str = "xenperf") -> None:
        self.path = path

    def read(self, nr_cpus: int, max_cpu_id: int, timeout: float) -> PerfcSnapshot:
        try:
            result = run_command([self.path, "-f"], timeout=timeout)
        except CommandError as error:
            raise PerfcError(str(error)) from None
        if result.returncode != 0:
            message = (result.stderr.strip() or result.stdout.strip()).splitlines()
            first = message[0] if message else f"exit status {result.returncode}"
            found = _XENPERF_ERRNO.search(first)
            if found and int(found[1]) == errno.ENOSYS:
                raise PerfcUnavailable(first)
            raise PerfcError(f"{self.path} -f failed: {first}")
        try:
            return parse_xenperf(result.stdout, online_cpus=nr_cpus)
        except XenperfParseError as error:
            raise PerfcError(f"{self.path} -f: {error}") from None


class LibxenctrlReader:
    """libxenctrl through ctypes; one interface handle kept open, used by one scrape at a time."""

    name = "libxenctrl"

    def __init__(self, library: libxenctrl.LibXenCtrl) -> None:
        self._library = library
        self._lock = threading.Lock()
        self._handle: libxenctrl.Interface | None = None

    def read(self, nr_cpus: int, max_cpu_id: int, timeout: float) -> PerfcSnapshot:
        with self._lock:
            try:
                if self._handle is None:
                    self._handle = self._library.open()
                return self._handle.perfc_snapshot(max_cpu_id=max_cpu_id, online_cpus=nr_cpus)
            except libxenctrl.XenCtrlError as error:
                if error.errno == errno.ENOSYS:
                    raise PerfcUnavailable(str(error)) from None
                if self._handle is not None:
                    self._handle.close()
                    self._handle = None
                raise PerfcError(str(error)) from None


def open_reader(kind: str, xenperf_path: str) -> PerfcReader:
    """The reader `kind` names; "auto" is libxenctrl where the library loads, else xenperf."""
    if kind not in READERS:
        raise ValueError(f"unknown perfc reader {kind!r}, expected one of {', '.join(READERS)}")
    if kind == "xenperf":
        return XenperfReader(xenperf_path)
    try:
        library = libxenctrl.LibXenCtrl.load()
    except libxenctrl.LibraryNotFound as error:
        if kind == "libxenctrl":
            raise
        log.info("libxenctrl not loadable (%s); reading counters with %s", error, xenperf_path)
        return XenperfReader(xenperf_path)
    log.info("reading counters through %s", library.path)
    return LibxenctrlReader(library)
