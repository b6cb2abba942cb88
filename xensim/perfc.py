"""The simulated hypervisor's performance counters: the state file the stub libxenctrl reads.

The file is `$XENSIM_STATE_DIR/perfc`; its layout is the contract in `docs/design.md` ("The
simulated hypervisor's counter state"): a 32-byte header, `struct xen_sysctl_perfc_desc[nr_desc]`
(84 bytes each), one flags word per descriptor (bit 0: status counter) and the uint32 values,
descriptor after descriptor. Per-CPU counters hold one value per online CPU, in online-CPU order
(the position in the online mask, not the CPU id); arrays hold their elements summed over CPUs.
Readers hold `flock(LOCK_SH)` for the whole read, writers `flock(LOCK_EX)`, so no read is torn.

Public API (everything else is private):

- `create(path, catalogue, nr_online_cpus, open_errno=0, perfc_errno=0)`: write a zeroed
  file for a `counters.Catalogue`. A new file appears atomically (temporary file + rename); an
  existing one is rewritten in place under the lock, so that no writer's fd goes stale.
- `STATE_FILE` (`"perfc"`), `Descriptor(name, nr_vals, status)`, `descriptors_for(catalogue,
  nr_online_cpus)`, `PerfcState(descriptors, values, open_errno, perfc_errno, generation)`.
- `read(path) -> PerfcState`: a consistent snapshot; `PerfcState.values_of(name)`.
- `update(path, per_cpu={(name, cpu_index): delta}, arrays={(name, element): delta})`: add in
  place, modulo 2^32 (the silent uint32 wrap). `cpu_index` is the position in the online-CPU
  list, not the CPU id. Deltas may be negative: that is how a status counter is decremented on
  another CPU than the one that incremented it (per-CPU values then look "negative", e.g.
  4294967290). A bad name or index raises before anything is written.
- `set_values(path, per_cpu=..., arrays=...)`: same keys, set values directly (e.g. just below
  2^32, to force a wrap).
- `set_errno(path, open_errno=..., perfc_errno=...)`: make `xc_interface_open` (13 = EACCES)
  or the perfc calls (38 = ENOSYS, a hypervisor built without perf counters) fail.
- `set_online_cpus(path, before, after)`: CPUs go off/online (lists of CPU ids in ascending
  order): per-CPU values of CPUs that stay online are kept, CPUs that come online start at 0,
  arrays are left as they are.
- `encode(state) -> bytes` and `decode(data) -> PerfcState`: the pure format, no file access;
  `decode` raises `CorruptStateError` on what the stub would refuse with EIO.

Every writer bumps the header's `generation`. Updates cost one read and two writes of the file,
whatever the number of increments; the simulator calls `update` about ten times a second.
"""

from __future__ import annotations

import fcntl
import functools
import os
import struct
import sys
import tempfile
from array import array
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from xensim.counters import CATALOGUES, Catalogue, Kind

STATE_FILE = "perfc"
MAGIC = b"XSIMPRF1"
FLAG_STATUS = 1
NAME_SIZE = 80
UINT32_MOD = 1 << 32

_HEADER = struct.Struct("<8sIIiiII")  # magic, nr_desc, nr_vals, open_errno, perfc_errno, gen, 0
_DESC = struct.Struct("<80sI")  # struct xen_sysctl_perfc_desc: char name[80]; uint32_t nr_vals
_GENERATION_OFFSET = 24
_MAX_DESCRIPTORS = 65536  # the stub's sanity bound too

if sys.byteorder != "little" or array("I").itemsize != 4:  # pragma: no cover
    raise ImportError("xensim.perfc needs a little-endian host with a 4-byte C unsigned int")


class CorruptStateError(ValueError):
    """The bytes are not a counter state file the stub would accept."""


@dataclass(frozen=True)
class Descriptor:
    name: str
    nr_vals: int
    status: bool = False


@dataclass(frozen=True)
class PerfcState:
    descriptors: tuple[Descriptor, ...]
    values: tuple[int, ...]  # every descriptor's values, in order
    open_errno: int = 0
    perfc_errno: int = 0
    generation: int = 0

    def values_of(self, name: str) -> tuple[int, ...]:
        offset, nr_vals = _layout(self.descriptors)[name]
        return self.values[offset : offset + nr_vals]


def descriptors_for(catalogue: Catalogue, nr_online_cpus: int) -> tuple[Descriptor, ...]:
    if nr_online_cpus < 1:
        raise ValueError(f"a host has at least one online CPU, not {nr_online_cpus}")
    return tuple(
        Descriptor(c.name, c.nr_vals(nr_online_cpus), c.kind is Kind.STATUS)
        for c in catalogue.counters
    )


def encode(state: PerfcState) -> bytes:
    descriptors = state.descriptors
    nr_vals = sum(d.nr_vals for d in descriptors)
    if len(state.values) != nr_vals:
        raise ValueError(f"{len(state.values)} values for descriptors that need {nr_vals}")
    parts = [
        _HEADER.pack(
            MAGIC,
            len(descriptors),
            nr_vals,
            state.open_errno,
            state.perfc_errno,
            state.generation % UINT32_MOD,
            0,
        )
    ]
    for d in descriptors:
        name = d.name.encode("ascii")
        if len(name) >= NAME_SIZE:
            raise ValueError(f"counter name longer than {NAME_SIZE - 1} bytes: {d.name!r}")
        parts.append(_DESC.pack(name, d.nr_vals))
    parts.append(array("I", [FLAG_STATUS if d.status else 0 for d in descriptors]).tobytes())
    parts.append(array("I", state.values).tobytes())
    return b"".join(parts)


def decode(data: bytes) -> PerfcState:
    header = _parse_header(data, len(data))
    descriptors = _descriptors(data, header)
    values = array("I")
    values.frombytes(data[header.table_end :])
    return PerfcState(
        descriptors, tuple(values), header.open_errno, header.perfc_errno, header.generation
    )


def create(
    path: str | os.PathLike[str],
    catalogue: Catalogue,
    nr_online_cpus: int,
    *,
    open_errno: int = 0,
    perfc_errno: int = 0,
) -> None:
    descriptors = descriptors_for(catalogue, nr_online_cpus)
    zeros = (0,) * sum(d.nr_vals for d in descriptors)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        # Publish a complete file atomically: a reader must never see it half written.
        _write_new(path, encode(PerfcState(descriptors, zeros, open_errno, perfc_errno)))
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            generation = _parse_header(os.pread(fd, _HEADER.size, 0), None).generation + 1
        except CorruptStateError:
            generation = 0  # left half written by a crash: start over
        _rewrite(fd, encode(PerfcState(descriptors, zeros, open_errno, perfc_errno, generation)))
    finally:
        os.close(fd)


def read(path: str | os.PathLike[str]) -> PerfcState:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        return decode(_read_all(fd))
    finally:
        os.close(fd)


Changes = Mapping[tuple[str, int], int]


def update(
    path: str | os.PathLike[str], *, per_cpu: Changes | None = None, arrays: Changes | None = None
) -> None:
    def add(values: array[int], index: int, delta: int) -> None:
        values[index] = (values[index] + delta) % UINT32_MOD

    _modify_values(path, per_cpu or {}, arrays or {}, add)


def set_values(
    path: str | os.PathLike[str], *, per_cpu: Changes | None = None, arrays: Changes | None = None
) -> None:
    def assign(values: array[int], index: int, value: int) -> None:
        if not 0 <= value < UINT32_MOD:
            raise ValueError(f"{value} does not fit a uint32")
        values[index] = value

    _modify_values(path, per_cpu or {}, arrays or {}, assign)


def set_errno(
    path: str | os.PathLike[str],
    *,
    open_errno: int | None = None,
    perfc_errno: int | None = None,
) -> None:
    with _locked(path, fcntl.LOCK_EX) as fd:
        header = _parse_header(os.pread(fd, _HEADER.size, 0), None)
        os.pwrite(
            fd,
            struct.pack(
                "<iiI",
                header.open_errno if open_errno is None else open_errno,
                header.perfc_errno if perfc_errno is None else perfc_errno,
                (header.generation + 1) % UINT32_MOD,
            ),
            16,
        )


def set_online_cpus(
    path: str | os.PathLike[str], before: Sequence[int], after: Sequence[int]
) -> None:
    for cpus in (before, after):
        if not cpus or list(cpus) != sorted(set(cpus)) or cpus[0] < 0:
            raise ValueError(f"online CPUs must be ascending distinct ids, got {list(cpus)}")
    with _locked(path, fcntl.LOCK_EX) as fd:
        state = decode(_read_all(fd))
        descriptors: list[Descriptor] = []
        values: list[int] = []
        offset = 0
        for d in state.descriptors:
            old = state.values[offset : offset + d.nr_vals]
            offset += d.nr_vals
            if d.name in _ARRAY_NAMES:
                descriptors.append(d)
                values.extend(old)
                continue
            if d.nr_vals != len(before):
                raise ValueError(f"{d.name!r} has {d.nr_vals} values, not one per CPU {before}")
            by_cpu = dict(zip(before, old, strict=True))
            descriptors.append(Descriptor(d.name, len(after), d.status))
            values.extend(by_cpu.get(cpu, 0) for cpu in after)
        new = PerfcState(
            tuple(descriptors),
            tuple(values),
            state.open_errno,
            state.perfc_errno,
            state.generation + 1,
        )
        _rewrite(fd, encode(new))


# --- private -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Header:
    nr_desc: int
    nr_vals: int
    open_errno: int
    perfc_errno: int
    generation: int
    table_end: int  # offset of the first value


def _parse_header(data: bytes, file_size: int | None) -> _Header:
    """Check the header; with `file_size`, also that the file is as long as it promises."""
    if len(data) < _HEADER.size:
        raise CorruptStateError(f"{len(data)} bytes is shorter than the header")
    magic, nr_desc, nr_vals, open_errno, perfc_errno, generation, _ = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CorruptStateError(f"bad magic {magic!r}")
    if nr_desc > _MAX_DESCRIPTORS:
        raise CorruptStateError(f"implausible number of descriptors {nr_desc}")
    table_end = _HEADER.size + nr_desc * (_DESC.size + 4)
    expected = table_end + 4 * nr_vals
    if file_size is not None and file_size != expected:
        raise CorruptStateError(f"{file_size} bytes where the header promises {expected}")
    return _Header(nr_desc, nr_vals, open_errno, perfc_errno, generation, table_end)


@functools.lru_cache(maxsize=8)
def _decode_table(table: bytes) -> tuple[Descriptor, ...]:
    # The descriptor table rarely changes: cache its decoding for the 10/s update path.
    nr_desc = len(table) // (_DESC.size + 4)
    flags = array("I")
    flags.frombytes(table[nr_desc * _DESC.size :])
    descriptors = []
    for i in range(nr_desc):
        raw_name, nr_vals = _DESC.unpack_from(table, i * _DESC.size)
        if b"\0" not in raw_name:
            raise CorruptStateError(f"descriptor {i}: name is not NUL-terminated")
        name = raw_name.split(b"\0", 1)[0].decode("ascii", errors="replace")
        descriptors.append(Descriptor(name, nr_vals, bool(flags[i] & FLAG_STATUS)))
    return tuple(descriptors)


def _descriptors(data: bytes, header: _Header) -> tuple[Descriptor, ...]:
    descriptors = _decode_table(data[_HEADER.size : header.table_end])
    if sum(d.nr_vals for d in descriptors) != header.nr_vals:
        raise CorruptStateError("the descriptors' nr_vals do not add up to the header's")
    return descriptors


@functools.lru_cache(maxsize=8)
def _layout(descriptors: tuple[Descriptor, ...]) -> dict[str, tuple[int, int]]:
    """Counter name -> (index of its first value, nr_vals)."""
    layout = {}
    offset = 0
    for d in descriptors:
        layout[d.name] = (offset, d.nr_vals)
        offset += d.nr_vals
    return layout


# The file's flags do not say which descriptors are arrays: the catalogues do.
_ARRAY_NAMES = frozenset(
    c.name for cat in CATALOGUES.values() for c in cat.counters if c.kind is Kind.ARRAY
)


def _modify_values(
    path: str | os.PathLike[str],
    per_cpu: Changes,
    arrays: Changes,
    apply: Callable[[array[int], int, int], None],
) -> None:
    with _locked(path, fcntl.LOCK_EX) as fd:
        data = _read_all(fd)
        header = _parse_header(data, len(data))
        layout = _layout(_descriptors(data, header))
        values = array("I")
        values.frombytes(data[header.table_end :])
        # Everything is checked before the single write: a bad key changes nothing.
        for changes, want_array in ((per_cpu, False), (arrays, True)):
            for (name, index), amount in changes.items():
                try:
                    offset, nr_vals = layout[name]
                except KeyError:
                    raise KeyError(f"no counter named {name!r} in {os.fspath(path)}") from None
                if (name in _ARRAY_NAMES) != want_array:
                    kind = "an array" if want_array else "a per-CPU counter"
                    raise ValueError(f"{name!r} is not {kind}")
                if not 0 <= index < nr_vals:
                    raise IndexError(f"{name!r} has {nr_vals} values, no index {index}")
                apply(values, offset + index, amount)
        os.pwrite(fd, values.tobytes(), header.table_end)
        os.pwrite(fd, struct.pack("<I", (header.generation + 1) % UINT32_MOD), _GENERATION_OFFSET)


@contextmanager
def _locked(path: str | os.PathLike[str], operation: int) -> Iterator[int]:
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, operation)
        yield fd
    finally:
        os.close(fd)


def _read_all(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    data = os.pread(fd, size, 0)
    if len(data) != size:
        raise CorruptStateError(f"short read: {len(data)} of {size} bytes")
    return data


def _rewrite(fd: int, data: bytes) -> None:
    os.ftruncate(fd, len(data))
    os.pwrite(fd, data, 0)


def _write_new(path: str | os.PathLike[str], data: bytes) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".perfc-", dir=directory)
    try:
        os.write(fd, data)
        os.fchmod(fd, 0o644)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
