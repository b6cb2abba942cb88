"""KVM VMs found in /proc: a process holding a KVM VM file descriptor is a VM (docs/kvm.md).

No agent and no libvirt: a VM is any process with an fd whose link reads ``anon_inode:kvm-vm``
(what ``KVM_CREATE_VM`` returns, virt/kvm/kvm_main.c ``kvm_dev_ioctl_create_vm``). What is
known of it comes from its QEMU command line (``-name``, ``-uuid``, the QMP socket), its
threads (``CPU <n>/KVM``), its tun fds (``iff:`` in fdinfo, drivers/net/tun.c
``tun_chr_show_fdinfo``) and its cgroup (``0::/...``). KVM creates the VM's debugfs directory
``kvm/<pid>-<fd>`` (``kvm_create_vm_debugfs``), which names the VM's statistics.

Parsers here are pure (text in, values out); the readers take every path through the `proc`
and `debugfs` roots (``--path.procfs``, ``--path.debugfs``). Every value read from a process
is validated: a VM's name and its interfaces' names become labels and argv elements later.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import uuid as uuidlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

log = logging.getLogger(__name__)

VM_FD_LINK = "anon_inode:kvm-vm"
# QEMU names a vCPU thread "CPU <index>/KVM" (accel/kvm/kvm-accel-ops.c), but only with
# `-name ...,debug-threads=on` (libvirt always passes it); without it every thread is "qemu-...".
_VCPU_COMM = re.compile(r"CPU (\d{1,4})/KVM")
# Linux interface names: 1-15 bytes, no '/', ':' or whitespace (net/core/dev.c dev_valid_name).
_IFNAME = re.compile(r"[^/:\s]{1,15}")
# A name becomes a label value and an argv element of judicator-kvmctl: printable, bounded.
MAX_NAME = 255
_CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class VcpuThread:
    index: int
    tid: int


@dataclass(frozen=True)
class KvmVm:
    name: str
    pid: int
    uuid: str | None
    vcpus: tuple[VcpuThread, ...]
    taps: tuple[str, ...]
    qmp_socket: str | None
    cgroup: str | None
    stats_dir: str | None


@dataclass(frozen=True)
class Schedstat:
    """A thread's /proc schedstat (fs/proc/base.c `proc_pid_schedstat`), nanoseconds."""

    run_ns: int  # time on a CPU (se.sum_exec_runtime)
    wait_ns: int  # time runnable on a runqueue, waiting for a CPU (sched_info.run_delay)
    timeslices: int  # times it was switched in (sched_info.pcount)


@dataclass(frozen=True)
class QemuCmdline:
    name: str | None
    uuid: str | None
    qmp_socket: str | None


# -- pure parsers ---------------------------------------------------------------------------


def split_qemu_opts(text: str) -> list[str]:
    """QEMU's option list syntax (util/qemu-option.c): items split at ',', where ',,' is a
    literal comma (libvirt writes a name `a,b` as `guest=a,,b`)."""
    items: list[str] = []
    current: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == ",":
            if text.startswith(",,", index):
                current.append(",")
                index += 2
                continue
            items.append("".join(current))
            current = []
        else:
            current.append(char)
        index += 1
    items.append("".join(current))
    return items


def _opts(text: str, implied: str) -> dict[str, str]:
    """`key=value` items as a dict; a first item without '=' is `implied`'s value, a later one
    is a flag (`server` = `server=on`)."""
    values: dict[str, str] = {}
    for position, item in enumerate(split_qemu_opts(text)):
        key, equals, value = item.partition("=")
        if not equals:
            if position == 0:
                values[implied] = item
            else:
                values[item] = "on"
        else:
            values[key] = value
    return values


def _options(argv: Sequence[str]) -> Iterator[tuple[str, str]]:
    """(option, value) pairs of a QEMU command line; `--name` is `-name` (QEMU takes both)."""
    for index in range(1, len(argv) - 1):
        option = argv[index]
        if option.startswith("--"):
            option = option[1:]
        if option.startswith("-"):
            yield option, argv[index + 1]


def valid_name(name: str) -> bool:
    return 0 < len(name) <= MAX_NAME and name.isprintable()


def _qmp_path(chardev: str) -> str | None:
    """The path of a `unix:PATH[,server=on,...]` chardev spec, absolute only."""
    if not chardev.startswith("unix:"):
        return None
    path = split_qemu_opts(chardev[len("unix:") :])[0]
    return path if _valid_socket_path(path) else None


def _valid_socket_path(path: str) -> bool:
    # relative paths are QEMU's working directory's; sun_path holds 107 bytes and a NUL
    return path.startswith("/") and len(path.encode()) <= 107 and path.isprintable()


def parse_qemu_cmdline(argv: Sequence[str]) -> QemuCmdline:
    """The VM's name, uuid and QMP control socket from QEMU's argv (pure).

    `-name guest=NAME,debug-threads=on` (libvirt) or `-name NAME`; `-uuid U`; the control
    monitor: `-qmp unix:PATH,server=on,wait=off` (or `,server,nowait`), or
    `-chardev socket,id=X,path=PATH,server=on` with `-mon chardev=X,mode=control`. A monitor on
    a passed fd (libvirt's `fd=N`) or TCP has no path: None. Invalid values are None.
    """
    name = uuid = qmp = None
    sockets: dict[str, str] = {}
    control: list[str] = []
    for option, value in _options(argv):
        if option == "-name":
            candidate = _opts(value, "guest").get("guest")
            name = candidate if candidate is not None and valid_name(candidate) else None
        elif option == "-uuid":
            uuid = _parse_uuid(value)
        elif option == "-qmp" and qmp is None:
            qmp = _qmp_path(value)
        elif option == "-chardev":
            opts = _opts(value, "backend")
            path = opts.get("path")
            if opts.get("backend") == "socket" and "id" in opts and path is not None:
                sockets[opts["id"]] = path
        elif option == "-mon":
            opts = _opts(value, "chardev")
            if opts.get("mode") == "control" and "chardev" in opts:
                control.append(opts["chardev"])
    if qmp is None:
        for chardev in control:
            path = sockets.get(chardev)
            if path is not None and _valid_socket_path(path):
                qmp = path
                break
    return QemuCmdline(name=name, uuid=uuid, qmp_socket=qmp)


def _parse_uuid(text: str) -> str | None:
    try:
        return str(uuidlib.UUID(text))
    except ValueError:
        return None


def parse_cmdline_bytes(data: bytes) -> list[str]:
    """/proc/<pid>/cmdline: NUL-terminated arguments."""
    return [part.decode(errors="replace") for part in data.split(b"\0")[:-1]]


def parse_fdinfo_iff(text: str) -> str | None:
    """The tap/tun interface of a /dev/net/tun fd (`iff:\\t<name>`), None when the fd is not
    a tun fd or not attached (the kernel then prints an empty name)."""
    for line in text.splitlines():
        if line.startswith("iff:"):
            name = line[len("iff:") :].strip()
            return name if _IFNAME.fullmatch(name) and name not in (".", "..") else None
    return None


def parse_cgroup_v2(text: str) -> str | None:
    """The unified (v2) cgroup path from /proc/<pid>/cgroup (`0::/machine.slice/...`)."""
    for line in text.splitlines():
        if line.startswith("0::"):
            path = line[3:]
            if path.startswith("/") and "/../" not in path + "/" and path.isprintable():
                return path
    return None


def parse_stat_cpu_ticks(text: str) -> int:
    """utime + stime (clock ticks) from /proc/<pid>/task/<tid>/stat (fs/proc/array.c).

    The command name (field 2) is in parentheses and may hold spaces and parentheses itself
    ("CPU 0/KVM"), so fields are counted after its last ')'.
    """
    _, paren, rest = text.rpartition(")")
    fields = rest.split()
    if not paren or len(fields) < 13:
        raise ValueError(f"not a /proc stat line: {text[:80]!r}")
    return int(fields[11]) + int(fields[12])  # fields 14 and 15: utime, stime


def parse_schedstat(text: str) -> Schedstat:
    """/proc/<pid>/task/<tid>/schedstat: `run_ns wait_ns timeslices` on one line.

    Documentation/scheduler/sched-stats.rst: "1) time spent on the cpu (in nanoseconds)
    2) time spent waiting on a runqueue (in nanoseconds) 3) # of timeslices run on this cpu".
    A kernel without CONFIG_SCHED_INFO has no such file (every KVM host has it: x86 KVM
    selects SCHED_INFO, its steal time is this very run_delay).
    """
    fields = text.split()[:3]  # a field a newer kernel might add is not ours to refuse
    if len(fields) != 3 or not all(field.isdigit() for field in fields):
        raise ValueError(f"not a /proc schedstat line: {text[:80]!r}")
    return Schedstat(int(fields[0]), int(fields[1]), int(fields[2]))


def parse_stat_start_ticks(text: str) -> int:
    """The process's start time (clock ticks after boot, field 22) from /proc/<pid>/stat."""
    _, paren, rest = text.rpartition(")")
    fields = rest.split()
    if not paren or len(fields) < 20:
        raise ValueError(f"not a /proc stat line: {text[:80]!r}")
    return int(fields[19])


# include/linux/sched.h: the task flag of a kernel thread (field 9 of /proc/<pid>/stat).
PF_KTHREAD = 0x00200000


def parse_stat_is_kernel_thread(text: str) -> bool:
    """Whether a /proc/<pid>/stat line is a kernel thread's (PF_KTHREAD in its flags)."""
    _, paren, rest = text.rpartition(")")
    fields = rest.split()
    if not paren or len(fields) < 7:
        raise ValueError(f"not a /proc stat line: {text[:80]!r}")
    return bool(int(fields[6]) & PF_KTHREAD)  # field 9: flags


def parse_status_field(text: str, key: str) -> str | None:
    """The value of `key:` in /proc/<pid>/status, stripped."""
    prefix = key + ":"
    for line in text.splitlines():
        if line.startswith(prefix):
            return line[len(prefix) :].strip()
    return None


def parse_status_rss_bytes(text: str) -> int | None:
    """VmRSS in bytes (the kernel prints kB); None for a process without memory (a zombie)."""
    value = parse_status_field(text, "VmRSS")
    if value is None:
        return None
    number, _, unit = value.partition(" ")
    if unit.strip() != "kB":
        raise ValueError(f"VmRSS: unexpected unit in {value!r}")
    return int(number) * 1024


def parse_io(text: str) -> dict[str, int]:
    """/proc/<pid>/io as a dict (rchar, wchar, syscr, syscw, read_bytes, write_bytes, ...)."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, colon, value = line.partition(":")
        if colon:
            values[key.strip()] = int(value)
    return values


def parse_vcpu_comm(comm: str) -> int | None:
    match = _VCPU_COMM.fullmatch(comm.strip())
    return int(match[1]) if match else None


# -- readers of the live host ---------------------------------------------------------------


def _read(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()


def _text(path: str) -> str:
    return _read(path).decode(errors="replace")


def is_vm_link(target: str) -> bool:
    return target == VM_FD_LINK


def _vm_fd(pid_dir: str, is_vm: Callable[[str], bool]) -> int | None:
    """The fd number of the process's first KVM VM fd, None if it holds none."""
    fds = os.path.join(pid_dir, "fd")
    found: list[int] = []
    try:
        entries = os.listdir(fds)
    except OSError:
        return None  # gone, or not ours to read
    for entry in entries:
        try:
            if is_vm(os.readlink(os.path.join(fds, entry))):
                found.append(int(entry))
        except (OSError, ValueError):
            continue
    return min(found) if found else None


def _taps(pid_dir: str) -> tuple[str, ...]:
    """Interfaces of the process's tun fds (QEMU's own, and those libvirt opened and passed)."""
    taps: set[str] = set()
    fds = os.path.join(pid_dir, "fd")
    try:
        entries = os.listdir(fds)
    except OSError:
        return ()
    for entry in entries:
        try:
            if os.readlink(os.path.join(fds, entry)) != "/dev/net/tun":
                continue
            name = parse_fdinfo_iff(_text(os.path.join(pid_dir, "fdinfo", entry)))
        except OSError:
            continue
        if name is not None:
            taps.add(name)
    return tuple(sorted(taps))


def _vcpus(pid_dir: str, stats_dir: str | None) -> tuple[VcpuThread, ...]:
    vcpus: dict[int, int] = {}
    tasks = os.path.join(pid_dir, "task")
    try:
        tids = os.listdir(tasks)
    except OSError:
        tids = []
    for tid in tids:
        try:
            index = parse_vcpu_comm(_text(os.path.join(tasks, tid, "comm")))
        except OSError:
            continue
        if index is not None and tid.isdigit():
            vcpus[index] = int(tid)
    if not vcpus and stats_dir is not None:
        vcpus = _debugfs_vcpus(stats_dir)
    return tuple(VcpuThread(index, tid) for index, tid in sorted(vcpus.items()))


def _debugfs_vcpus(stats_dir: str) -> dict[int, int]:
    """QEMU without debug-threads=on leaves its vCPU threads unnamed; KVM's debugfs has each
    vCPU's thread in `vcpu<n>/pid` (0 until the vCPU first ran: such vCPUs are left out)."""
    vcpus: dict[int, int] = {}
    try:
        entries = os.listdir(stats_dir)
    except OSError:
        return vcpus
    for entry in entries:
        if entry.startswith("vcpu") and entry[4:].isdigit():
            try:
                tid = int(_read(os.path.join(stats_dir, entry, "pid")))
            except (OSError, ValueError):
                continue
            if tid > 0:
                vcpus[int(entry[4:])] = tid
    return vcpus


def _candidates(proc: str) -> list[str]:
    try:
        return [entry for entry in os.listdir(proc) if entry.isdigit()]
    except OSError as error:
        raise OSError(f"cannot list {proc}: {error}") from error


class BoundedCmdlines:
    """Command lines for `list_vms` in a long-running service: each read once per process, and
    never waited on longer than `timeout` seconds.

    Reading /proc/<pid>/cmdline takes the process's mmap lock (fs/proc/base.c
    `get_mm_cmdline` -> `access_remote_vm`): behind a QEMU thread in D state that holds it, or a
    writer queued behind one (an mmap while a page fault waits on hung storage), the read
    blocks, with no timeout the kernel offers. A read that has not answered within `timeout`
    is left to finish in its own thread, and its process is left out of the list (logged
    once) until it does; a process whose read is pending gets no second thread and no second
    wait. The other files list_vms reads (fd links, fdinfo, comm, cgroup, stat, debugfs) take
    no mmap lock. A QEMU's command line does not change, so each is read once, keyed by pid
    and start time (a reused pid is read afresh).
    """

    def __init__(self, timeout: float = 1.0) -> None:
        self._timeout = timeout
        self._lock = threading.Lock()
        self._reads: dict[tuple[int, int], Future[list[str]]] = {}

    def __call__(self, pid_dir: str, pid: int) -> list[str] | None:
        key = (pid, parse_stat_start_ticks(_text(os.path.join(pid_dir, "stat"))))
        with self._lock:
            future = self._reads.get(key)
            new = future is None
            if future is None:
                future = self._reads[key] = Future()
                thread = threading.Thread(
                    target=self._read, args=(future, pid_dir), name=f"cmdline-{pid}", daemon=True
                )
                thread.start()
        if not new and not future.done():
            return None  # still blocked since an earlier call: said then
        try:
            return future.result(timeout=self._timeout if new else 0)
        except FutureTimeout:
            log.warning(
                "process %d: its command line did not answer within %.1f s (a thread in D "
                "state holding its mmap lock?); left out until it does",
                pid,
                self._timeout,
            )
            return None
        except OSError:
            with self._lock:
                self._reads.pop(key, None)  # read again if the process is still there
            raise

    @staticmethod
    def _read(future: Future[list[str]], pid_dir: str) -> None:
        try:
            future.set_result(parse_cmdline_bytes(_read(os.path.join(pid_dir, "cmdline"))))
        except BaseException as error:  # handed to the caller, in its thread
            future.set_exception(error)

    def keep(self, pids: set[int]) -> None:
        """Forgets the processes not listed any more (a stuck read's thread ends by itself)."""
        with self._lock:
            for key in [key for key in self._reads if key[0] not in pids]:
                del self._reads[key]


def list_vms(
    proc: str = "/proc",
    debugfs: str = "/sys/kernel/debug",
    *,
    is_vm: Callable[[str], bool] = is_vm_link,
    cmdlines: BoundedCmdlines | None = None,
) -> list[KvmVm]:
    """Every process holding a KVM VM fd, sorted by pid.

    `is_vm` decides from an fd's link text whether it is the VM's fd (tests on a host without
    KVM pass their own). A process that exits while being read is left out, and so is one
    whose command line `cmdlines` timed out on; without `cmdlines` (a one-shot command) each
    is read at once, unbounded.
    """
    vms = []
    holders = set()
    for pid_text in _candidates(proc):
        pid_dir = os.path.join(proc, pid_text)
        fd = _vm_fd(pid_dir, is_vm)
        if fd is None:
            continue
        holders.add(int(pid_text))
        try:
            if cmdlines is None:
                argv = parse_cmdline_bytes(_read(os.path.join(pid_dir, "cmdline")))
            elif (bounded := cmdlines(pid_dir, int(pid_text))) is not None:
                argv = bounded
            else:
                continue
            vm = _read_vm(pid_dir, int(pid_text), fd, debugfs, argv)
        except (OSError, ValueError) as error:
            log.debug("process %s vanished while being read: %s", pid_text, error)
            continue
        vms.append(vm)
    if cmdlines is not None:
        cmdlines.keep(holders)
    return sorted(vms, key=lambda vm: vm.pid)


def _read_vm(pid_dir: str, pid: int, fd: int, debugfs: str, argv: list[str]) -> KvmVm:
    cmdline = parse_qemu_cmdline(argv)
    path = os.path.join(debugfs, "kvm", f"{pid}-{fd}")
    # absent when debugfs is not mounted, or KVM could not make the directory
    stats_dir = path if os.path.isdir(path) else None
    try:
        cgroup = parse_cgroup_v2(_text(os.path.join(pid_dir, "cgroup")))
    except OSError:
        cgroup = None
    return KvmVm(
        name=cmdline.name or f"qemu-{pid}",
        pid=pid,
        uuid=cmdline.uuid,
        vcpus=_vcpus(pid_dir, stats_dir),
        taps=_taps(pid_dir),
        qmp_socket=cmdline.qmp_socket,
        cgroup=cgroup,
        stats_dir=stats_dir,
    )


def read_thread_cpu_seconds(pid: int, tid: int, proc: str = "/proc") -> float:
    """CPU time the thread used, user and system (utime + stime / CLK_TCK)."""
    text = _text(os.path.join(proc, str(pid), "task", str(tid), "stat"))
    return parse_stat_cpu_ticks(text) / _CLK_TCK


def read_thread_wait_seconds(pid: int, tid: int, proc: str = "/proc") -> float:
    """Time the thread spent runnable but waiting for a CPU (schedstat run_delay), seconds."""
    text = _text(os.path.join(proc, str(pid), "task", str(tid), "schedstat"))
    return parse_schedstat(text).wait_ns / 1e9


def read_thread_affinity(pid: int, tid: int, proc: str = "/proc") -> str:
    """The thread's allowed CPUs as the kernel lists them (Cpus_allowed_list, e.g. "0-3")."""
    text = _text(os.path.join(proc, str(pid), "task", str(tid), "status"))
    value = parse_status_field(text, "Cpus_allowed_list")
    if value is None:
        raise ValueError(f"no Cpus_allowed_list for thread {tid} of {pid}")
    return value


def read_rss_bytes(pid: int, proc: str = "/proc") -> int | None:
    return parse_status_rss_bytes(_text(os.path.join(proc, str(pid), "status")))


def read_io(pid: int, proc: str = "/proc") -> dict[str, int]:
    """/proc/<pid>/io (readable by root or the process's owner)."""
    return parse_io(_text(os.path.join(proc, str(pid), "io")))
