"""The guests' cgroups: CPU caps, freezing, CPU time and block I/O, on cgroup v1 or v2.

A guest's cgroup is named by a path relative to the cgroup roots, e.g.
`judicator-sim/host1/guest1`; on cgroup v1 the same relative path exists in every hierarchy we
use (cpu, cpuacct, freezer, blkio), on v2 once in the unified tree.

The fake `xl` may run under `ip netns exec`, which remounts /sys and so hides /sys/fs/cgroup in
its private mount namespace; then `layout()` mounts init's hierarchies there again.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from xensim.poll import wait_until

log = logging.getLogger(__name__)

# Controllers a guest needs. v1 mounts them separately or co-mounted (cpu,cpuacct).
CONTROLLERS = ("cpu", "cpuacct", "freezer", "blkio", "memory")
CFS_PERIOD_US = 100_000


class CgroupError(RuntimeError):
    """The cgroup filesystem cannot do what was asked (missing controller, busy cgroup)."""


@dataclass(frozen=True)
class Layout:
    """Where each controller's hierarchy is mounted; `unified` when it is cgroup v2."""

    unified: Path | None
    v1: dict[str, Path]

    def roots(self) -> list[Path]:
        """Every distinct hierarchy root we create cgroups in."""
        if self.unified is not None:
            return [self.unified]
        seen: list[Path] = []
        for controller in CONTROLLERS:
            root = self.v1.get(controller)
            if root is not None and root not in seen:
                seen.append(root)
        return seen

    def path(self, controller: str, cgroup: str) -> Path:
        root = self.unified if self.unified is not None else self.v1.get(controller)
        if root is None:
            raise CgroupError(f"cgroup controller {controller!r} is not mounted")
        return root / _relative(cgroup)


@dataclass(frozen=True)
class BlockIO:
    """Block I/O a cgroup did, as the kernel accounts it (all devices summed)."""

    read_requests: int = 0
    write_requests: int = 0
    read_bytes: int = 0
    write_bytes: int = 0


def _relative(cgroup: str) -> str:
    relative = cgroup.strip("/")
    if not relative or ".." in relative.split("/"):
        raise CgroupError(f"invalid cgroup name {cgroup!r}")
    return relative


def _read_controllers(mount_point: Path) -> list[str]:
    try:
        return (mount_point / "cgroup.controllers").read_text().split()
    except OSError:
        return []


def parse_mountinfo(
    text: str,
    prefix: str = "",
    controllers_of: Callable[[Path], list[str]] = _read_controllers,
) -> Layout:
    """Find the cgroup hierarchies in a /proc/<pid>/mountinfo text.

    A cgroup2 mount counts only when it offers the cpu controller (`controllers_of` reads its
    cgroup.controllers); otherwise it is the empty unified tree of a hybrid (v1) host.
    """
    unified: Path | None = None
    v1: dict[str, Path] = {}
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        separator = fields.index("-")
        mount_point = Path(prefix + fields[4].replace("\\040", " "))
        fstype = fields[separator + 1]
        super_options = fields[separator + 3].split(",") if len(fields) > separator + 3 else []
        if fstype == "cgroup2":
            if "cpu" in controllers_of(mount_point):
                unified = mount_point
        elif fstype == "cgroup":
            for controller in CONTROLLERS:
                if controller in super_options:
                    v1.setdefault(controller, mount_point)
    return Layout(unified=unified, v1=v1)


@cache
def layout() -> Layout:
    """Detect the hierarchies once per process.

    Under `ip netns exec` the process has a private mount namespace whose fresh /sys hides
    /sys/fs/cgroup. Then the hierarchies init has mounted are mounted again here (a cgroup v1
    mount with the same controllers, or cgroup2, attaches to the same hierarchy); the private
    namespace keeps those mounts from showing anywhere else.
    """
    own = parse_mountinfo(Path("/proc/self/mountinfo").read_text())
    if _usable(own):
        return own
    init_text = Path("/proc/1/mountinfo").read_text()
    if _usable(parse_mountinfo(init_text, controllers_of=lambda _p: ["cpu"])):
        _mount_like(init_text)
        own = parse_mountinfo(Path("/proc/self/mountinfo").read_text())
        if _usable(own):
            log.debug("cgroup hierarchies mounted again in this mount namespace")
            return own
    raise CgroupError("no cgroup hierarchy with the cpu controller is mounted")


def _usable(found: Layout) -> bool:
    return found.unified is not None or "cpu" in found.v1


def _mount_like(mountinfo: str) -> None:
    """Mount, in our own mount namespace, the cgroup filesystems `mountinfo` lists."""
    for line in mountinfo.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        separator = fields.index("-")
        mount_point = fields[4]
        fstype = fields[separator + 1]
        options = fields[separator + 3] if len(fields) > separator + 3 else "rw"
        if not mount_point.startswith("/sys/fs/cgroup"):
            continue
        if fstype == "tmpfs" and mount_point == "/sys/fs/cgroup":
            argv = ["mount", "-t", "tmpfs", "-o", "mode=755", "tmpfs", mount_point]
        elif fstype == "cgroup" and any(c in options.split(",") for c in CONTROLLERS):
            Path(mount_point).mkdir(parents=True, exist_ok=True)
            argv = ["mount", "-t", "cgroup", "-o", options, "cgroup", mount_point]
        elif fstype == "cgroup2":
            Path(mount_point).mkdir(parents=True, exist_ok=True)
            argv = ["mount", "-t", "cgroup2", "cgroup2", mount_point]
        else:
            continue
        result = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
        if result.returncode != 0:
            log.debug("%s: %s", argv, result.stderr.strip())


def _enable_v2_controllers(root: Path, cgroup: str) -> None:
    """On v2 a child only gets cpu/io/freeze files if every ancestor delegates them."""
    current = root
    wanted = {"cpu", "io", "memory"}
    for part in _relative(cgroup).split("/")[:-1]:
        available = set((current / "cgroup.controllers").read_text().split())
        for controller in sorted(wanted & available):
            (current / "cgroup.subtree_control").write_text(f"+{controller}")
        current = current / part
        current.mkdir(exist_ok=True)
    available = set((current / "cgroup.controllers").read_text().split())
    for controller in sorted(wanted & available):
        (current / "cgroup.subtree_control").write_text(f"+{controller}")


def create(cgroup: str) -> None:
    """Create the cgroup (and its parents) in every hierarchy we use."""
    found = layout()
    if found.unified is not None:
        _enable_v2_controllers(found.unified, cgroup)
    for root in found.roots():
        (root / _relative(cgroup)).mkdir(parents=True, exist_ok=True)


def add_pid(cgroup: str, pid: int) -> None:
    """Move a process into the cgroup in every hierarchy."""
    for root in layout().roots():
        (root / _relative(cgroup) / "cgroup.procs").write_text(f"{pid}\n")


def pids(cgroup: str) -> set[int]:
    """Every process in the cgroup or below it, over all hierarchies."""
    found: set[int] = set()
    for root in layout().roots():
        base = root / _relative(cgroup)
        if not base.is_dir():
            continue
        for directory, _dirs, files in os.walk(base):
            if "cgroup.procs" in files:
                try:
                    text = Path(directory, "cgroup.procs").read_text()
                except OSError:
                    continue
                found.update(int(token) for token in text.split())
    return found


def set_cpu_cap(cgroup: str, cap_percent: int) -> None:
    """Limit the cgroup to `cap_percent` of one CPU (0 = uncapped), as `xl sched-credit2 -c`."""
    if cap_percent < 0:
        raise CgroupError(f"negative CPU cap {cap_percent}")
    found = layout()
    quota_us = cap_percent * CFS_PERIOD_US // 100
    if found.unified is not None:
        value = "max" if cap_percent == 0 else str(max(quota_us, 1000))
        (found.path("cpu", cgroup) / "cpu.max").write_text(f"{value} {CFS_PERIOD_US}\n")
        return
    directory = found.path("cpu", cgroup)
    (directory / "cpu.cfs_period_us").write_text(f"{CFS_PERIOD_US}\n")
    # The kernel refuses quotas under 1 ms.
    value = "-1" if cap_percent == 0 else str(max(quota_us, 1000))
    (directory / "cpu.cfs_quota_us").write_text(f"{value}\n")


def cpu_cap(cgroup: str) -> int:
    """The current cap in percent of one CPU, 0 when uncapped."""
    found = layout()
    if found.unified is not None:
        quota, period = (found.path("cpu", cgroup) / "cpu.max").read_text().split()
        return 0 if quota == "max" else int(quota) * 100 // int(period)
    directory = found.path("cpu", cgroup)
    quota_us = int((directory / "cpu.cfs_quota_us").read_text())
    period_us = int((directory / "cpu.cfs_period_us").read_text())
    return 0 if quota_us < 0 else quota_us * 100 // period_us


def set_frozen(cgroup: str, frozen: bool) -> None:
    """Freeze or thaw every process of the cgroup, as `xl pause`/`xl unpause` do to a domain."""
    found = layout()
    if found.unified is not None:
        (found.path("cpu", cgroup) / "cgroup.freeze").write_text("1\n" if frozen else "0\n")
        return
    (found.path("freezer", cgroup) / "freezer.state").write_text(
        "FROZEN\n" if frozen else "THAWED\n"
    )


def is_frozen(cgroup: str) -> bool:
    found = layout()
    if found.unified is not None:
        events = (found.path("cpu", cgroup) / "cgroup.events").read_text()
        return "frozen 1" in events
    state = (found.path("freezer", cgroup) / "freezer.state").read_text().strip()
    return state != "THAWED"


def cpu_usage_ns(cgroup: str) -> int:
    """CPU time the cgroup's processes used, in nanoseconds, since it was created."""
    found = layout()
    if found.unified is not None:
        for line in (found.path("cpu", cgroup) / "cpu.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "usage_usec":
                return int(value) * 1000
        return 0
    return int((found.path("cpuacct", cgroup) / "cpuacct.usage").read_text())


def parse_blkio_v1(serviced: str, service_bytes: str) -> BlockIO:
    """Sum blkio.throttle.io_serviced / io_service_bytes lines (`MAJ:MIN Read N`)."""

    def totals(text: str) -> tuple[int, int]:
        read = write = 0
        for line in text.splitlines():
            parts = line.split()
            if len(parts) != 3:
                continue
            if parts[1] == "Read":
                read += int(parts[2])
            elif parts[1] == "Write":
                write += int(parts[2])
        return read, write

    read_requests, write_requests = totals(serviced)
    read_bytes, write_bytes = totals(service_bytes)
    return BlockIO(read_requests, write_requests, read_bytes, write_bytes)


def parse_io_stat_v2(text: str) -> BlockIO:
    """Sum io.stat lines (`MAJ:MIN rbytes=.. wbytes=.. rios=.. wios=..`)."""
    sums = {"rios": 0, "wios": 0, "rbytes": 0, "wbytes": 0}
    for line in text.splitlines():
        for field in line.split()[1:]:
            key, _, value = field.partition("=")
            if key in sums:
                sums[key] += int(value)
    return BlockIO(sums["rios"], sums["wios"], sums["rbytes"], sums["wbytes"])


def block_io(cgroup: str) -> BlockIO:
    """Block I/O of the cgroup, or zeros when the kernel does not account it."""
    found = layout()
    try:
        if found.unified is not None:
            return parse_io_stat_v2((found.path("cpu", cgroup) / "io.stat").read_text())
        directory = found.path("blkio", cgroup)
        return parse_blkio_v1(
            (directory / "blkio.throttle.io_serviced").read_text(),
            (directory / "blkio.throttle.io_service_bytes").read_text(),
        )
    except (OSError, CgroupError):
        return BlockIO()


def process_io(cgroup: str) -> dict[int, tuple[int, int]]:
    """Storage-layer bytes (read, written) of each process in the cgroup, from /proc/<pid>/io.

    Used where the blkio controller accounts nothing (as on this machine's kernel); the
    caller accumulates, since a process's counts leave with it.
    """
    found: dict[int, tuple[int, int]] = {}
    for pid in pids(cgroup):
        try:
            text = Path(f"/proc/{pid}/io").read_text()
        except OSError:
            continue
        fields = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)
        with contextlib.suppress(KeyError, ValueError):
            found[pid] = (int(fields["read_bytes"]), int(fields["write_bytes"]))
    return found


def page_faults(cgroup: str) -> int:
    """Page faults the cgroup's processes took (memory.stat `pgfault`), 0 when not accounted."""
    found = layout()
    try:
        text = (found.path("memory", cgroup) / "memory.stat").read_text()
    except (OSError, CgroupError):
        return 0
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "pgfault":
            return int(value)
    return 0


def kill_all(cgroup: str) -> None:
    """SIGKILL every process in the cgroup tree; frozen ones are thawed so they can die."""
    victims = pids(cgroup)
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for directory in _tree(cgroup):
        with contextlib.suppress(OSError):
            _thaw_directory(directory)


def _thaw_directory(directory: Path) -> None:
    freezer_state = directory / "freezer.state"
    if freezer_state.exists():
        freezer_state.write_text("THAWED\n")
    freeze = directory / "cgroup.freeze"
    if freeze.exists():
        freeze.write_text("0\n")


def _tree(cgroup: str) -> Iterator[Path]:
    """Every directory of the cgroup in every hierarchy, deepest first."""
    for root in layout().roots():
        base = root / _relative(cgroup)
        if not base.is_dir():
            continue
        for directory, _dirs, _files in os.walk(base, topdown=False):
            yield Path(directory)


def destroy(cgroup: str, timeout: float = 5.0) -> None:
    """Kill everything in the cgroup tree and remove it from every hierarchy."""
    busy: list[Path] = []

    def removed() -> bool:
        kill_all(cgroup)
        busy.clear()
        for directory in _tree(cgroup):
            try:
                directory.rmdir()
            except FileNotFoundError:
                pass
            except OSError as error:
                if error.errno != errno.EBUSY:
                    raise
                busy.append(directory)
        return not busy

    try:
        wait_until(removed, timeout=timeout, what=f"cgroup {cgroup}", interval=0.05, retry_on=())
    except TimeoutError:
        raise CgroupError(f"cgroup still busy after {timeout}s: {busy[0]}") from None


def exists(cgroup: str) -> bool:
    return any((root / _relative(cgroup)).is_dir() for root in layout().roots())


def remove_if_empty(cgroup: str) -> None:
    """Remove a cgroup that has no children and no processes left; otherwise leave it."""
    for root in layout().roots():
        with contextlib.suppress(OSError):
            (root / _relative(cgroup)).rmdir()
