"""A VM's CPU cap: the CFS bandwidth of the cgroup that holds all its threads.

cgroup v2 says it in `cpu.max` (`QUOTA PERIOD` or `max PERIOD`, microseconds,
Documentation/admin-guide/cgroup-v2.rst); a host whose cpu controller is still on a v1
hierarchy (hybrid: systemd's `unified` mount without controllers) says the same in
`cpu.cfs_quota_us` (-1 = none) and `cpu.cfs_period_us` (Documentation/scheduler/sched-bwc.rst).
Both are `CpuMax` here; a cap is a percentage of one CPU (quota / period x 100, 0 = none), the
unit of Xen's credit cap.

Which cgroup: the lowest one holding every thread of the VM (libvirt on v2 puts the vCPU
threads in child cgroups of the VM's own, `.../vcpu0`), and only if nothing but the VM runs in
it or below it: capping a shared cgroup (a user's session, `/`) would throttle bystanders.

Parsers are pure; the readers take the mount table and every file through the `proc` root.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from kvmtools.proc import parse_stat_is_kernel_thread

log = logging.getLogger(__name__)

# The kernel refuses a quota below 1 ms and a period outside 1 ms .. 1 s (kernel/sched/core.c
# tg_set_cfs_bandwidth: min_cfs_quota_period, max_cfs_quota_period).
MIN_QUOTA_US = 1000
MIN_PERIOD_US = 1000
MAX_PERIOD_US = 1_000_000
# A cap above this many CPUs' worth means nothing on any host we run on.
MAX_PERCENT = 100 * 4096


class CgroupError(Exception):
    """The VM's cgroup cannot be capped (shared, the root, no cpu controller, unreadable)."""


@dataclass(frozen=True)
class CpuMax:
    quota_us: int | None  # None: no limit ("max", or -1 on v1)
    period_us: int


@dataclass(frozen=True)
class CpuCgroup:
    """A cgroup of the hierarchy holding the cpu controller: v2 (unified) or v1."""

    version: int
    path: str  # from the hierarchy's root, "/" itself for the root


# -- pure parsers ---------------------------------------------------------------------------


def _period(value: int) -> int:
    if not MIN_PERIOD_US <= value <= MAX_PERIOD_US:
        raise ValueError(f"CFS period {value} outside {MIN_PERIOD_US}..{MAX_PERIOD_US} us")
    return value


def parse_cpu_max(text: str) -> CpuMax:
    """cgroup v2 `cpu.max`: `max 100000` or `50000 100000`."""
    fields = text.split()
    if len(fields) != 2:
        raise ValueError(f"not a cpu.max value: {text!r}")
    quota = None if fields[0] == "max" else int(fields[0])
    if quota is not None and quota <= 0:
        raise ValueError(f"not a cpu.max quota: {text!r}")
    return CpuMax(quota, _period(int(fields[1])))


def format_cpu_max(value: CpuMax) -> str:
    quota = "max" if value.quota_us is None else str(value.quota_us)
    return f"{quota} {value.period_us}\n"


def parse_cfs(quota_text: str, period_text: str) -> CpuMax:
    """cgroup v1 `cpu.cfs_quota_us` (-1: none) and `cpu.cfs_period_us`."""
    quota = int(quota_text)
    if quota < -1 or quota == 0:
        raise ValueError(f"not a cfs_quota_us: {quota_text!r}")
    return CpuMax(None if quota == -1 else quota, _period(int(period_text)))


def cap_percent(value: CpuMax) -> int:
    """The cap as a percentage of one CPU, 0 for none; a quota below 1 % reads as 1 (capped)."""
    if value.quota_us is None:
        return 0
    return max(1, round(100 * value.quota_us / value.period_us))


def with_cap(value: CpuMax, percent: int) -> CpuMax:
    """`value` capped at `percent` of one CPU (0: no cap), its period kept."""
    if not 0 <= percent <= MAX_PERCENT:
        raise ValueError(f"cap {percent} outside 0..{MAX_PERCENT}")
    if percent == 0:
        return CpuMax(None, value.period_us)
    quota = value.period_us * percent // 100
    if quota < MIN_QUOTA_US:
        raise ValueError(
            f"cap {percent}% of a {value.period_us} us period is below the kernel's 1 ms quota"
        )
    return CpuMax(quota, value.period_us)


def parse_proc_cgroup(text: str) -> CpuCgroup | None:
    """The cgroup of the cpu controller in /proc/<pid>/cgroup: a v1 line that lists `cpu`
    (`4:cpu,cpuacct:/path`) holds it, else the unified `0::/path`; None when neither does."""
    unified = None
    for line in text.splitlines():
        number, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if not path.startswith("/") or not number.isdigit():
            continue
        if number != "0" and "cpu" in controllers.split(","):
            return CpuCgroup(1, path)
        if number == "0" and controllers == "":
            unified = CpuCgroup(2, path)
    return unified


def parse_cpu_mounts(mountinfo: str) -> dict[int, tuple[str, str]]:
    """From /proc/self/mountinfo: version -> (root within the hierarchy, mount point) of the
    cgroup2 mount and of the v1 mount that carries the cpu controller (first of each)."""
    mounts: dict[int, tuple[str, str]] = {}
    for line in mountinfo.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        separator = fields.index("-")
        if len(fields) < separator + 3:
            continue
        fstype, options = fields[separator + 1], fields[separator + 3 :]
        root, point = _unescape(fields[3]), _unescape(fields[4])
        if fstype == "cgroup2":
            mounts.setdefault(2, (root, point))
        elif fstype == "cgroup" and options and "cpu" in options[0].split(","):
            mounts.setdefault(1, (root, point))
    return mounts


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal (fs/proc_namespace.c)
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def common_cgroup(cgroups: list[CpuCgroup]) -> CpuCgroup:
    """The lowest cgroup holding all of `cgroups` (one process's threads: one hierarchy)."""
    if not cgroups or len({c.version for c in cgroups}) != 1:
        raise CgroupError("the VM's threads are in no single cpu hierarchy")
    parts = [[p for p in c.path.split("/") if p] for c in cgroups]
    common: list[str] = []
    for level in zip(*parts, strict=False):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return CpuCgroup(cgroups[0].version, "/" + "/".join(common))


def parse_procs(text: str) -> list[int]:
    return [int(line) for line in text.split()]


# -- readers and the writer -----------------------------------------------------------------


def _read(path: str) -> str:
    with open(path, encoding="ascii", errors="replace") as file:
        return file.read()


def vm_cgroup(pid: int, proc: str = "/proc") -> tuple[CpuCgroup, str]:
    """The cgroup holding every thread of process `pid` and its directory; CgroupError when
    there is none to cap (the root, or no cpu controller mounted)."""
    tasks = os.path.join(proc, str(pid), "task")
    found = []
    for tid in os.listdir(tasks):
        try:
            cgroup = parse_proc_cgroup(_read(os.path.join(tasks, tid, "cgroup")))
        except FileNotFoundError:
            continue  # a thread that ended meanwhile
        if cgroup is None:
            raise CgroupError(f"thread {tid} of {pid} is in no cpu cgroup")
        found.append(cgroup)
    cgroup = common_cgroup(found)
    if ".." in cgroup.path.split("/") or not cgroup.path.isprintable():
        raise CgroupError(f"unusable cgroup path {cgroup.path!r}")
    if cgroup.path == "/":
        raise CgroupError(f"process {pid} is in the root cgroup: no cgroup of its own to cap")
    mounts = parse_cpu_mounts(_read(os.path.join(proc, "self", "mountinfo")))
    if cgroup.version not in mounts:
        raise CgroupError(f"no cgroup v{cgroup.version} hierarchy with the cpu controller mounted")
    root, point = mounts[cgroup.version]
    if root != "/" and not (cgroup.path + "/").startswith(root.rstrip("/") + "/"):
        raise CgroupError(f"cgroup {cgroup.path} is outside the mounted part {root}")
    relative = cgroup.path[len(root.rstrip("/")) :].strip("/")
    return cgroup, os.path.join(point, relative)


def foreign_processes(directory: str, pid: int, proc: str = "/proc") -> list[int]:
    """Processes other than `pid` in the cgroup at `directory` or below it (fails closed: an
    unreadable cgroup.procs raises OSError). Kernel threads are the VM's own: KVM's per-VM
    worker (`kvm-nx-lpage-recovery`, kvm_vm_create_worker_thread) and vhost's workers join
    their VM's cgroups (cgroup_attach_task_all) so that a cap on the VM covers its work too."""
    others: set[int] = set()
    for current, _dirs, files in os.walk(directory):
        if "cgroup.procs" in files:
            others.update(parse_procs(_read(os.path.join(current, "cgroup.procs"))))
    others.discard(pid)
    return sorted(other for other in others if not _kernel_thread(other, proc))


def _kernel_thread(pid: int, proc: str) -> bool:
    try:
        return parse_stat_is_kernel_thread(_read(os.path.join(proc, str(pid), "stat")))
    except FileNotFoundError:
        return True  # gone since it was listed: it holds nothing of anyone's any more


def read_cpu_max(directory: str, version: int) -> CpuMax:
    """The cgroup's CFS bandwidth; OSError (ENOENT) when the cpu controller is not enabled
    there (v2: not in the parent's cgroup.subtree_control)."""
    if version == 2:
        return parse_cpu_max(_read(os.path.join(directory, "cpu.max")))
    return parse_cfs(
        _read(os.path.join(directory, "cpu.cfs_quota_us")),
        _read(os.path.join(directory, "cpu.cfs_period_us")),
    )


def write_cpu_max(directory: str, version: int, value: CpuMax) -> None:
    if version == 2:
        _write(os.path.join(directory, "cpu.max"), format_cpu_max(value))
        return
    # v1: the period stays what it was (read from this cgroup); only the quota changes.
    quota = -1 if value.quota_us is None else value.quota_us
    _write(os.path.join(directory, "cpu.cfs_quota_us"), f"{quota}\n")


def _write(path: str, text: str) -> None:
    # No O_CREAT: a cgroup file that is not there must not become a regular file.
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
