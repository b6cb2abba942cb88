"""Boot the real Xen under QEMU (software emulation), drive Dom0, and always tear it down.

    with booted(paths, guests=standard_guests(3)) as lab:
        print(lab.xl("list").stdout)
        lab.guest_command("guest1", "pingflood", "198.18.77.12", "3000", "60")

QEMU runs Xen's multiboot image with Debian's kernel as PV Dom0 (`-accel tcg,thread=multi
-cpu max,-smap`: this machine kind's /dev/kvm cannot run Xen, and with SMAP Dom0 crashes at
once). Dom0 has two vCPUs pinned to physical CPUs 0-1 (one emulated vCPU could not run the
toolstack, the exporter and the remediator in time); guest i has one vCPU pinned to physical
CPU i+1 (hard affinity): each domain on CPUs of its own, as in the paper. Dom0 reaches the
host only through QEMU's restricted user network: three host ports on 127.0.0.1 forward to
the agent, the exporter and the remediator. Every wait is bounded; QEMU is killed by its pid
(SIGTERM, then SIGKILL) whatever happened.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from xenlab.paths import LabPaths

log = logging.getLogger(__name__)

QEMU = "qemu-system-x86_64"
AGENT_PORT, EXPORTER_PORT, REMEDIATOR_PORT = 8000, 10170, 9095
BOOT_TIMEOUT_SECONDS = 420.0
GUEST_TIMEOUT_SECONDS = 600.0
STOP_TIMEOUT_SECONDS = 30.0
GUEST_NET = "198.18.77"
GUEST_MEMORY_MIB = 128
# The guests' hotplug scripts (xenlab/image/vif-xenlab.sh, block-xenlab.sh): Debian's bash
# vif-bridge and block outlasted libxl's hotplug timeout under emulation on a loaded machine.
VIF_SCRIPT = "vif-xenlab"
BLOCK_SCRIPT = "block-xenlab"
GUEST_DISK_SIZE = "16M"
XVDA_DEVICE_NUMBER = 202 << 8  # xvda: major 202, minor 0 (the vbd's number in xenstore and sysfs)


class LabError(RuntimeError):
    """The lab did not boot, a command failed, or QEMU died; the message quotes the console."""


@dataclass(frozen=True)
class GuestSpec:
    name: str
    cpu: int
    ip: str
    mac: str
    disk: bool = True


DOM0_VCPUS = 2


def standard_guests(count: int, *, disks: bool = True) -> list[GuestSpec]:
    """guest1..guestN on the physical CPUs after Dom0's, 198.18.77.11..; with `disks`, a 16 MiB
    disk each (a sparse file in Dom0's RAM behind a loop device)."""
    return [
        GuestSpec(
            f"guest{i}",
            DOM0_VCPUS + i - 1,
            f"{GUEST_NET}.{10 + i}",
            f"00:16:3e:00:77:{10 + i:02x}",
            disks,
        )
        for i in range(1, count + 1)
    ]


@dataclass
class LabState:
    """What `lab-up` leaves for `lab-down` and later commands (run/state.json)."""

    pid: int
    agent_port: int
    exporter_port: int
    remediator_port: int
    console: str
    hypervisor: str
    smp: int
    guests: list[dict[str, Any]] = field(default_factory=list)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: Path) -> LabState:
        return cls(**json.loads(path.read_text()))


@dataclass(frozen=True)
class Result:
    rc: int
    stdout: str
    stderr: str
    seconds: float

    def check(self, what: str) -> Result:
        if self.rc != 0:
            raise LabError(f"{what}: exit {self.rc}: {self.stderr.strip()}{self.stdout[-500:]}")
        return self


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def host_forwards(state: LabState) -> str:
    """QEMU's user-network forwards from the host's ports on 127.0.0.1 to the lab host's
    agent, exporter and remediator (`-netdev user,...,<these>`)."""
    return ",".join(
        f"hostfwd=tcp:127.0.0.1:{host}-:{guest}"
        for host, guest in (
            (state.agent_port, AGENT_PORT),
            (state.exporter_port, EXPORTER_PORT),
            (state.remediator_port, REMEDIATOR_PORT),
        )
    )


def qemu_argv(paths: LabPaths, state: LabState, memory_mib: int) -> list[str]:
    xen = paths.xen_perfc if state.hypervisor == "perfc" else paths.xen_stock
    forwards = host_forwards(state)
    xen_args = (
        f"console=com1 com1=115200,8n1 dom0_mem=1024M,max:1024M dom0_max_vcpus={DOM0_VCPUS} "
        "dom0_vcpus_pin sched=credit2 bootscrub=false loglvl=all guest_loglvl=all"
    )
    return [
        QEMU,
        "-accel", "tcg,thread=multi",
        "-cpu", "max,-smap",
        "-smp", str(state.smp),
        "-m", str(memory_mib),
        "-machine", "pc",
        "-display", "none", "-vga", "none", "-monitor", "none", "-no-reboot",
        "-serial", f"file:{state.console}",
        "-netdev", f"user,id=host,restrict=on,{forwards}",
        "-device", "virtio-net-pci,netdev=host",
        "-kernel", str(xen),
        "-append", xen_args,
        # multiboot modules: "<file> <cmdline>" separated by commas
        "-initrd", f"{paths.vmlinuz} console=hvc0 earlyprintk=xen quiet,{paths.dom0_initrd}",
    ]  # fmt: skip


class AgentClient:
    """The lab agent (xenlab.agent) of a VM, reached on a forwarded port of the host's loopback;
    shared by the Xen lab's Dom0 and the KVM lab's L1 (kvmlab)."""

    def __init__(self, agent_port: int, console: str) -> None:
        self.agent_port = agent_port
        self.console_path = console

    def _post(self, path: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.agent_port}{path}",
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            reply: dict[str, Any] = json.loads(response.read())
        return reply

    def healthy(self) -> bool:
        try:
            url = f"http://127.0.0.1:{self.agent_port}/healthy"
            with urllib.request.urlopen(url, timeout=5) as response:
                return bool(json.loads(response.read()).get("ok"))
        except (OSError, ValueError):
            return False

    def run(self, *argv: str, timeout: float = 60.0, stdin: str | None = None) -> Result:
        """Runs argv in the VM (no shell) and returns its exit code and output."""
        body: dict[str, Any] = {"argv": list(argv), "timeout": timeout}
        if stdin is not None:
            body["input"] = stdin
        reply = self._post("/run", body, timeout + 30)
        return Result(int(reply["rc"]), reply["stdout"], reply["stderr"], float(reply["seconds"]))

    def xl(self, *args: str, timeout: float = 60.0) -> Result:
        return self.run("xl", *args, timeout=timeout)

    def write_file(self, path: str, text: str) -> None:
        self.run("tee", path, stdin=text).check(f"write {path}")

    def spawn(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> None:
        reply = self._post("/spawn", {"name": name, "argv": list(argv), "env": env or {}}, 30)
        if "error" in reply:
            raise LabError(f"spawn {name}: {reply['error']}")

    def kill(self, name: str) -> None:
        self._post("/kill", {"name": name}, 30)

    def spawned_log(self, name: str) -> str:
        url = f"http://127.0.0.1:{self.agent_port}/log?name={name}"
        with urllib.request.urlopen(url, timeout=30) as response:
            text: str = json.loads(response.read())["text"]
            return text

    def console(self) -> str:
        try:
            return Path(self.console_path).read_text(errors="replace")
        except OSError:
            return ""


class Lab(AgentClient):
    """A running lab: Dom0's agent over HTTP, the guests, and the QEMU process behind them."""

    def __init__(self, paths: LabPaths, state: LabState) -> None:
        super().__init__(state.agent_port, state.console)
        self.paths = paths
        self.state = state
        self.guests = [GuestSpec(**g) for g in state.guests]
        self._losetup = threading.Lock()

    # --- guests --------------------------------------------------------------------------
    def guest(self, name: str) -> GuestSpec:
        for spec in self.guests:
            if spec.name == name:
                return spec
        raise LabError(f"no guest {name}")

    def create_guest(self, spec: GuestSpec) -> None:
        disk = ""
        if spec.disk:
            image = f"/var/lib/xenlab/{spec.name}.img"
            with self._losetup:  # two `losetup --find` at once can pick the same device
                self.run("truncate", "-s", GUEST_DISK_SIZE, image).check("truncate")
                loop = self.run("losetup", "--find", "--show", image).check("losetup")
            target = loop.stdout.strip()
            disk = f"disk = [ 'vdev=xvda,access=w,script={BLOCK_SCRIPT},target={target}' ]\n"
        config = (
            f'name = "{spec.name}"\ntype = "pv"\nkernel = "/guest/vmlinuz"\n'
            f'ramdisk = "/guest/domu.cpio.gz"\n'
            f'extra = "console=hvc0 quiet xenlab.name={spec.name} xenlab.ip={spec.ip}"\n'
            f'memory = {GUEST_MEMORY_MIB}\nvcpus = 1\ncpus = "{spec.cpu}"\n'
            f"vif = [ 'bridge=xenbr0,mac={spec.mac},script={VIF_SCRIPT}' ]\n{disk}"
            'on_crash = "preserve"\n'
        )
        path = f"/etc/xen/{spec.name}.cfg"
        self.write_file(path, config)
        self.xl("create", path, timeout=GUEST_TIMEOUT_SECONDS).check(f"xl create {spec.name}")

    def create_guests(self, specs: Sequence[GuestSpec]) -> None:
        """`xl create` of each guest in turn. Each returns once its domain is built and its
        devices attached; the guest then boots on its own physical CPU while the next is
        created, so the boots overlap anyway. All at once was tried on a loaded machine and
        failed ("killing execution of /etc/xen/scripts/vif-bridge online because of timeout");
        one at a time then failed the same way at load 20, which is why the lab has its own
        light vif script (VIF_SCRIPT)."""
        for spec in specs:
            self.create_guest(spec)

    def wait_guests_up(self, timeout: float = GUEST_TIMEOUT_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        pending = {g.name for g in self.guests}
        while pending:
            for name in sorted(pending):
                text = self.run("cat", f"/var/log/xen/console/guest-{name}.log").stdout
                if "XENLAB-GUEST-UP" in text:
                    pending.discard(name)
            if pending and time.monotonic() > deadline:
                raise LabError(f"guests {sorted(pending)} not up after {timeout:.0f}s")
            time.sleep(3)  # each look is a process in Dom0, whose one vCPU is emulated

    def guest_command(self, name: str, *words: str, timeout: float = 60.0) -> str:
        """One command line to a guest's control port (domu-ctl.sh); returns its output."""
        spec = self.guest(name)
        line = " ".join(words) + "\n"
        out = ""
        for _ in range(10):  # the guest's listener restarts after each connection
            result = self.run("timeout", str(int(timeout)), "nc", spec.ip, "5000",
                              stdin=line, timeout=timeout + 5)  # fmt: skip
            out = result.stdout
            if out.strip():
                return out
            time.sleep(0.5)
        raise LabError(f"guest {name} did not answer {line.strip()!r}: {result.stderr}")

    def domid(self, name: str) -> int:
        return int(self.xl("domid", name).check(f"xl domid {name}").stdout.strip())

    def vif(self, name: str) -> str:
        return f"vif{self.domid(name)}.0"

    def vbd(self, name: str) -> str:
        """The guest's disk in Dom0's sysfs (/sys/bus/xen-backend/devices/)."""
        return f"vbd-{self.domid(name)}-{XVDA_DEVICE_NUMBER}"


def qemu_alive(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return QEMU.encode() in cmdline


# QEMU processes this process started and has not reaped yet, by pid: QEMU outlives `start`
# (`make lab-up` leaves it running, found again by its pid), and its Popen is kept until `stop`.
_children: dict[int, subprocess.Popen[bytes]] = {}


def start(
    paths: LabPaths,
    *,
    guests: Sequence[GuestSpec],
    hypervisor: str = "perfc",
    memory_mib: int = 2048,
) -> Lab:
    """Starts QEMU detached (its own session), waits for Dom0's agent and the guests.

    On any failure QEMU is stopped before the error propagates.
    """
    for needed in (paths.vmlinuz, paths.dom0_initrd, paths.xen_stock):
        if not needed.exists():
            raise LabError(f"{needed} missing: run `make lab-deps`")
    if hypervisor == "perfc" and not paths.xen_perfc.exists():
        raise LabError(f"{paths.xen_perfc} missing: run `make lab-deps`")
    paths.run.mkdir(parents=True, exist_ok=True)
    state_file = paths.run / "state.json"
    if state_file.exists():
        old = LabState.load(state_file)
        if qemu_alive(old.pid):
            raise LabError(f"a lab is already running (pid {old.pid}): `make lab-down` first")
    console = paths.run / f"console-{time.strftime('%Y%m%d-%H%M%S')}.log"
    state = LabState(
        pid=0,
        agent_port=free_port(),
        exporter_port=free_port(),
        remediator_port=free_port(),
        console=str(console),
        hypervisor=hypervisor,
        smp=max(4, len(guests) + DOM0_VCPUS),
        guests=[asdict(g) for g in guests],
    )
    argv = qemu_argv(paths, state, memory_mib)
    log.info("booting Xen (%s) under QEMU TCG, -smp %d; console %s", hypervisor, state.smp, console)
    with (paths.run / "qemu.stderr").open("wb") as stderr:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    _children[process.pid] = process
    state.pid = process.pid
    state.save(state_file)
    lab = Lab(paths, state)
    try:
        started = time.monotonic()
        while not lab.healthy():
            if process.poll() is not None:
                raise LabError(f"QEMU exited ({process.returncode}):\n{lab.console()[-3000:]}")
            if time.monotonic() - started > BOOT_TIMEOUT_SECONDS:
                raise LabError(f"Dom0 not ready after {BOOT_TIMEOUT_SECONDS:.0f}s:\n"
                               f"{lab.console()[-3000:]}")  # fmt: skip
            time.sleep(1)
        log.info("Dom0 ready after %.0f s", time.monotonic() - started)
        lab.create_guests(guests)
        lab.wait_guests_up()
        log.info("%d guests up after %.0f s", len(guests), time.monotonic() - started)
    except BaseException:
        stop(paths)
        raise
    return lab


def attach(paths: LabPaths) -> Lab:
    state_file = paths.run / "state.json"
    if not state_file.exists():
        raise LabError("no lab running (`make lab-up`)")
    state = LabState.load(state_file)
    if not qemu_alive(state.pid):
        raise LabError(f"the lab's QEMU (pid {state.pid}) is gone")
    return Lab(paths, state)


def stop(paths: LabPaths) -> None:
    """Powers Dom0 off through the agent, then makes sure QEMU is gone (by its pid only)."""
    stop_state(paths.run / "state.json")


def stop_state(state_file: Path) -> None:
    """Stops the lab VM `state_file` describes: a power-off through its agent, then SIGTERM and
    SIGKILL by its pid; removes the file. Safe when nothing runs."""
    if not state_file.exists():
        return
    state = LabState.load(state_file)
    if qemu_alive(state.pid):
        agent = AgentClient(state.agent_port, state.console)
        with contextlib.suppress(OSError, ValueError):
            agent._post("/poweroff", {}, 10)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        while qemu_alive(state.pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not qemu_alive(state.pid):
                break
            log.info("QEMU %d still running: %s", state.pid, sig.name)
            with contextlib.suppress(ProcessLookupError):
                os.kill(state.pid, sig)
            deadline = time.monotonic() + 10
            while qemu_alive(state.pid) and time.monotonic() < deadline:
                time.sleep(0.2)
    child = _children.pop(state.pid, None)
    if child is not None:
        # reaps it (it may still be exiting), and its Popen no longer counts it as running
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=10)
    else:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(state.pid, os.WNOHANG)
    state_file.unlink(missing_ok=True)
    log.info("lab stopped")


@contextlib.contextmanager
def booted(
    paths: LabPaths,
    *,
    guests: Sequence[GuestSpec],
    hypervisor: str = "perfc",
    attempts: int = 1,
    failed_boots: list[str] | None = None,
) -> Iterator[Lab]:
    """A lab that is stopped whatever happens. The retry policy, explicit: with `attempts` > 1
    a failed *start* (QEMU died, Dom0 or a guest did not come up in time: emulation faults,
    not the product's) is retried from a fresh QEMU up to `attempts` times in all; each
    failure is logged as a warning and appended to `failed_boots` for the report. Nothing
    after the start is ever retried."""
    for attempt in range(1, attempts + 1):
        try:
            lab = start(paths, guests=guests, hypervisor=hypervisor)
            break
        except LabError as error:
            summary = f"attempt {attempt}/{attempts}: {str(error)[:2000]}"
            if failed_boots is not None:
                failed_boots.append(summary)
            if attempt == attempts:
                raise
            log.warning("the lab did not start, retrying from a fresh QEMU: %s", summary)
    try:
        yield lab
    finally:
        stop(paths)
