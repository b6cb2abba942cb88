"""`judicator-kvmctl`: a KVM host's `xl` for what the remediator does to a VM.

    judicator-kvmctl list                                  the VMs, as JSON (+ paused from QMP)
    judicator-kvmctl pause   --pid P --name N              QMP `stop`
    judicator-kvmctl unpause --pid P --name N              QMP `cont`
    judicator-kvmctl cap     --pid P --name N PERCENT      CFS bandwidth of the VM's own cgroup
    judicator-kvmctl pin     --pid P --name N --vcpu V CPUS    sched_setaffinity of a vCPU thread

Every command names the VM twice, by QEMU pid and by name, and is refused unless pid P is a
KVM VM named N now: the remediator read the host a moment ago, and a pid can be reused. The
process is held by a pidfd from before that check to after the change, and the command fails
if it exited meanwhile (then its pid may have been reused: what was done may have hit another
process, and saying so is all that is left). As xl: exit 0 on success, otherwise one line on
stderr and exit 1 (2 for a malformed command line).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import re
import select
import sys
from collections.abc import Callable, Iterator, Sequence

from kvmtools import cgroup, qmp
from kvmtools.proc import KvmVm, is_vm_link, list_vms, valid_name
from xentools.cpulist import parse_cpulist

log = logging.getLogger(__name__)
# Spelled as Prometheus and the other judicator-* programs spell them.
LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING}
LOG_LEVELS["error"] = logging.ERROR

PROG = "judicator-kvmctl"
# PID_MAX_LIMIT on 64-bit Linux (include/linux/threads.h)
PID_MAX = 4_194_304
MAX_VCPU = 4095
LIBVIRT_HINT = (
    "give QEMU a QMP monitor of its own (-qmp unix:PATH,server=on,wait=off; libvirt keeps its "
    "monitor), or use the remediator's command action with virsh suspend/resume"
)


class CtlError(Exception):
    """The command cannot be carried out; the message is the one line on stderr."""


def _pid(text: str) -> int:
    if not re.fullmatch(r"[1-9][0-9]{0,6}", text) or int(text) > PID_MAX:
        raise argparse.ArgumentTypeError(f"not a pid: {text!r}")
    return int(text)


def _name(text: str) -> str:
    if not valid_name(text):
        raise argparse.ArgumentTypeError(f"not a VM name: {text!r}")
    return text


def _percent(text: str) -> int:
    if not re.fullmatch(r"[0-9]{1,6}", text) or int(text) > cgroup.MAX_PERCENT:
        raise argparse.ArgumentTypeError(f"not a cap (0..{cgroup.MAX_PERCENT}): {text!r}")
    return int(text)


def _vcpu(text: str) -> int | str:
    if text == "all":
        return text
    if not re.fullmatch(r"[0-9]{1,4}", text) or int(text) > MAX_VCPU:
        raise argparse.ArgumentTypeError(f"not a vCPU index or 'all': {text!r}")
    return int(text)


def _cpus(text: str) -> frozenset[int]:
    try:
        return parse_cpulist(text, plain=True)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n", 1)[0])
    parser.add_argument("--path.procfs", dest="procfs", default="/proc")
    parser.add_argument("--path.debugfs", dest="debugfs", default="/sys/kernel/debug")
    parser.add_argument(
        "--qmp.timeout", dest="qmp_timeout", type=float, default=qmp.DEFAULT_TIMEOUT
    )
    parser.add_argument("--log.level", dest="log_level", choices=list(LOG_LEVELS), default="warn")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="the VMs as JSON")
    for verb, what in (
        ("pause", "QMP stop"),
        ("unpause", "QMP cont"),
        ("cap", "cap the VM's cgroup at PERCENT of one CPU (0: no cap)"),
        ("pin", "pin a vCPU thread (or all) to CPUS"),
    ):
        sub = commands.add_parser(verb, help=what)
        sub.add_argument("--pid", type=_pid, required=True)
        sub.add_argument("--name", type=_name, required=True)
        if verb == "cap":
            sub.add_argument("percent", type=_percent)
        if verb == "pin":
            sub.add_argument("--vcpu", type=_vcpu, required=True)
            sub.add_argument("cpus", type=_cpus)
    return parser


@contextlib.contextmanager
def _held(
    pid: int, name: str, args: argparse.Namespace, is_vm: Callable[[str], bool]
) -> Iterator[KvmVm]:
    """The VM that pid `pid` is, if it is a KVM VM named `name`, held by a pidfd throughout."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        raise CtlError(f"no process {pid}") from None
    try:
        vm = next(
            (v for v in list_vms(args.procfs, args.debugfs, is_vm=is_vm) if v.pid == pid), None
        )
        if vm is None:
            raise CtlError(f"process {pid} is not a KVM VM")
        if vm.name != name:
            raise CtlError(f"process {pid} is VM {vm.name!r}, not {name!r}")
        yield vm
        # Readable once the process exited: its pid may belong to another process now.
        if select.select([pidfd], [], [], 0)[0]:
            raise CtlError(f"VM {name!r} (process {pid}) exited during the command")
    finally:
        os.close(pidfd)


def _paused(vm: KvmVm, timeout: float) -> bool | None:
    if vm.qmp_socket is None:
        return None
    try:
        return qmp.query_status(vm.qmp_socket, timeout) == "paused"
    except qmp.QmpError as error:
        log.debug("VM %s: %s", vm.name, error)
        return None


def _list(args: argparse.Namespace, is_vm: Callable[[str], bool]) -> None:
    rows = [
        {**dataclasses.asdict(vm), "paused": _paused(vm, args.qmp_timeout)}
        for vm in list_vms(args.procfs, args.debugfs, is_vm=is_vm)
    ]
    print(json.dumps(rows, indent=2, sort_keys=True))


def _qmp(vm: KvmVm, command: Callable[[str, float], None], timeout: float) -> None:
    if vm.qmp_socket is None:
        raise CtlError(f"VM {vm.name!r} has no QMP socket on its command line: {LIBVIRT_HINT}")
    try:
        command(vm.qmp_socket, timeout)
    except qmp.QmpError as error:
        raise CtlError(f"VM {vm.name!r}: {error}") from None


def _cap(vm: KvmVm, percent: int, proc: str) -> None:
    try:
        group, directory = cgroup.vm_cgroup(vm.pid, proc)
        others = cgroup.foreign_processes(directory, vm.pid, proc)
        if others:
            raise CtlError(
                f"cgroup {group.path} of VM {vm.name!r} also holds processes {others[:5]}: "
                "capping it would cap them"
            )
        try:
            current = cgroup.read_cpu_max(directory, group.version)
        except FileNotFoundError:
            raise CtlError(
                f"cgroup {group.path} of VM {vm.name!r} has no CPU bandwidth control "
                "(enable the cpu controller in its parent's cgroup.subtree_control)"
            ) from None
        cgroup.write_cpu_max(directory, group.version, cgroup.with_cap(current, percent))
    except cgroup.CgroupError as error:
        raise CtlError(f"VM {vm.name!r}: {error}") from None
    except (OSError, ValueError) as error:
        raise CtlError(f"VM {vm.name!r}: cgroup: {error}") from None


def _pin(vm: KvmVm, vcpu: int | str, cpus: frozenset[int]) -> None:
    threads = [t for t in vm.vcpus if vcpu == "all" or t.index == vcpu]
    if not threads:
        raise CtlError(f"VM {vm.name!r} has no vCPU thread {vcpu} (debug-threads=on?)")
    for thread in threads:
        try:
            os.sched_setaffinity(thread.tid, cpus)
        except OSError as error:
            raise CtlError(f"VM {vm.name!r} vCPU {thread.index}: {error.strerror}") from None


def main(argv: Sequence[str] | None = None, *, is_vm: Callable[[str], bool] = is_vm_link) -> int:
    """`is_vm`: which fd link makes a process a KVM VM (`kvmtools.proc.list_vms`)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=LOG_LEVELS[args.log_level], format=f"{PROG}: %(message)s")
    try:
        if args.command == "list":
            _list(args, is_vm)
            return 0
        with _held(args.pid, args.name, args, is_vm) as vm:
            if args.command == "pause":
                _qmp(vm, qmp.stop, args.qmp_timeout)
            elif args.command == "unpause":
                _qmp(vm, qmp.cont, args.qmp_timeout)
            elif args.command == "cap":
                _cap(vm, args.percent, args.procfs)
            else:
                _pin(vm, args.vcpu, args.cpus)
    except CtlError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
