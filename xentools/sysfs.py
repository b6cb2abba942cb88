"""Dom0's sysfs view of Xen guests' devices: backend vifs and blkback vbds, and their counters.

Interfaces are matched to domains the way libxenstat does (tools/libs/stat/xenstat_linux.c):
first the device's xenstore node, ``class/net/<if>/device/nodename`` =
``backend/vif/<domid>/<devid>`` (right even for a custom ``vifname=``), then the name
pattern ``vif<domid>.<devid>``, which also matches QEMU's ``vif<domid>.<devid>-emu`` tap of an
HVM guest's emulated NIC.

Counters are Dom0's view: ``rx`` is what Dom0 received on the vif, that is what the **guest
sent**. Every path goes through `sysfs_root` (``--path.sysfs``).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

log = logging.getLogger(__name__)

SECTOR_BYTES = 512
EMULATED_SUFFIX = "-emu"
_NODENAME = re.compile(r"^backend/vif/(\d+)/(\d+)$")
_VIF_NAME = re.compile(r"^vif(\d+)\.(\d+)")
_VBD_DIR = re.compile(r"^vbd-(\d+)-(\d+)$")


@dataclass(frozen=True)
class Vif:
    name: str
    domid: int
    devid: int
    emulated: bool


@dataclass(frozen=True)
class VifStats:
    """Dom0's interface counters; rx = sent by the guest, tx = received by the guest."""

    vif: Vif
    rx_bytes: int
    rx_packets: int
    rx_dropped: int
    tx_bytes: int
    tx_packets: int
    tx_dropped: int


@dataclass(frozen=True)
class VbdStats:
    """blkback's counters for one virtual block device (requests, 512-byte sectors)."""

    domid: int
    devid: int
    read_requests: int
    write_requests: int
    read_sectors: int
    write_sectors: int
    out_of_requests: int

    @property
    def device(self) -> str:
        return vbd_device_name(self.devid)


def parse_nodename(text: str) -> tuple[int, int] | None:
    """(domid, devid) from a netback device's xenstore node, None if it is not a vif backend."""
    match = _NODENAME.match(text.strip())
    return (int(match[1]), int(match[2])) if match else None


def parse_vif_name(name: str) -> tuple[int, int] | None:
    """(domid, devid) from libxenstat's ``vif%u.%u`` pattern (sscanf ignores what follows)."""
    match = _VIF_NAME.match(name)
    return (int(match[1]), int(match[2])) if match else None


def list_vifs(sysfs_root: str = "/sys") -> list[Vif]:
    """Every Dom0 interface that is a guest's vif backend, sorted by (domid, devid, name)."""
    net = os.path.join(sysfs_root, "class", "net")
    try:
        names = os.listdir(net)
    except FileNotFoundError:
        log.debug("no %s: no network interfaces", net)
        return []
    vifs = []
    for name in names:
        ids = _read_nodename(os.path.join(net, name, "device", "nodename"))
        if ids is None:
            ids = parse_vif_name(name)
        if ids is not None:
            vifs.append(Vif(name, ids[0], ids[1], name.endswith(EMULATED_SUFFIX)))
    return sorted(vifs, key=lambda vif: (vif.domid, vif.devid, vif.name))


IFF_UP = 0x1


def read_links(
    wanted: Iterable[str], sysfs_root: str = "/sys"
) -> tuple[frozenset[str], dict[str, bool]]:
    """Every network interface of Dom0 by name, and for each of `wanted` that exists whether
    it is administratively up (`IFF_UP` in its `flags`): what `ip -j link show` says, read
    without starting a process. Only the flags asked for are read (a Dom0 with a hundred
    guests has hundreds of links; an action looks at a few). One that vanishes while being
    read is left out of the flags."""
    net = os.path.join(sysfs_root, "class", "net")
    try:
        names = frozenset(os.listdir(net))
    except FileNotFoundError:
        return frozenset(), {}
    up = {}
    for name in set(wanted) & names:
        try:
            up[name] = bool(int(_read_attribute(os.path.join(net, name, "flags")), 16) & IFF_UP)
        except (OSError, ValueError):
            continue
    return names, up


def _read_nodename(path: str) -> tuple[int, int] | None:
    try:
        return parse_nodename(_read_attribute(path).decode(errors="replace"))
    except OSError:
        return None


def read_vif_stats(vif: Vif, sysfs_root: str = "/sys") -> VifStats:
    """The interface's counters; OSError if it vanished since `list_vifs`."""
    statistics = os.path.join(sysfs_root, "class", "net", vif.name, "statistics")
    values = {
        name: _read_int(f"{statistics}/{name}")
        for name in ("rx_bytes", "rx_packets", "rx_dropped", "tx_bytes", "tx_packets", "tx_dropped")
    }
    return VifStats(vif=vif, **values)


def list_vbds(sysfs_root: str = "/sys") -> list[VbdStats]:
    """blkback's statistics of every vbd, sorted by (domid, devid); vanished ones are skipped."""
    devices = os.path.join(sysfs_root, "bus", "xen-backend", "devices")
    try:
        names = os.listdir(devices)
    except FileNotFoundError:
        log.debug("no %s: no block backends", devices)
        return []
    vbds = []
    for name in names:
        match = _VBD_DIR.match(name)
        if not match:
            continue
        statistics = os.path.join(devices, name, "statistics")
        try:
            vbds.append(
                VbdStats(
                    domid=int(match[1]),
                    devid=int(match[2]),
                    read_requests=_read_int(f"{statistics}/rd_req"),
                    write_requests=_read_int(f"{statistics}/wr_req"),
                    read_sectors=_read_int(f"{statistics}/rd_sect"),
                    write_sectors=_read_int(f"{statistics}/wr_sect"),
                    out_of_requests=_read_int(f"{statistics}/oo_req"),
                )
            )
        except FileNotFoundError:
            log.debug("vbd %s vanished while being read", name)
    return sorted(vbds, key=lambda vbd: (vbd.domid, vbd.devid))


# A sysfs attribute is at most a page, and a read from offset 0 returns all of it.
_ATTRIBUTE_BYTES = 4096


def _read_attribute(path: str) -> bytes:
    # os.open and one os.read, not open(): a scrape reads ~30 of these, and a text file
    # object (buffer, decoder) costs three times the system calls' time.
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, _ATTRIBUTE_BYTES)
    finally:
        os.close(fd)


def _read_int(path: str) -> int:
    data = _read_attribute(path)
    try:
        return int(data)  # int() takes ASCII bytes and ignores the trailing newline
    except ValueError:
        raise ValueError(f"{path}: not a number: {data.decode(errors='replace')!r}") from None


def vbd_device_name(devid: int) -> str:
    """The guest's disk name for a Xen vbd number (docs/misc/vbd-interface), else the number."""
    if devid & (1 << 28):
        disk, partition, prefix = (devid >> 8) & 0xFFFFF, devid & 0xFF, "xvd"
    else:
        major, minor = devid >> 8, devid & 0xFF
        if major == 202:
            disk, partition, prefix = minor >> 4, minor & 0xF, "xvd"
        elif major == 8:
            disk, partition, prefix = minor >> 4, minor & 0xF, "sd"
        elif major in (3, 22):
            disk, partition, prefix = (minor >> 6) + (2 if major == 22 else 0), minor & 0x3F, "hd"
        else:
            return str(devid)
    name = prefix + _disk_letters(disk)
    return f"{name}{partition}" if partition else name


def _disk_letters(disk: int) -> str:
    # a..z, aa..zz, ... as Linux names disks
    letters = ""
    disk += 1
    while disk:
        disk, remainder = divmod(disk - 1, 26)
        letters = chr(ord("a") + remainder) + letters
    return letters
