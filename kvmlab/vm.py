"""Boot L1 (a KVM host) under QEMU's software emulation, start real KVM guests (L2) in it, check
that everything is alive after every step, and always tear it down.

    with booted(paths, guests=standard_guests(2), attempts=2, failed_boots=faults) as lab:
        lab.l2_command("l2a", "pingflood", "198.18.88.12", "2000", "15")

L1 is Debian's kernel under `-accel tcg,thread=multi -cpu max,-smap -smp 2` (TCG emulates AMD
SVM with nested paging; single-threaded TCG and `kvm_amd vgif=0` stall L2's boot, SMAP crashes
it). L1 reaches the host only through QEMU's restricted user network: host ports on 127.0.0.1
forward to the lab agent (xenlab.agent), the exporter and the remediator. Each L2 is the host's
Debian qemu-system-x86_64 `-enable-kvm` in L1, started by the agent through l2-start (which
moves itself into machine.slice/kvmlab-NAME.scope, then execs QEMU), virtio-net on a tap on
br0. Every wait is bounded; a death or a silence of L1 or of an L2 raises EmulationFault (which
callers may retry from a fresh L1); L1's QEMU is killed by its pid whatever happened.
"""

from __future__ import annotations

import contextlib
import logging
import re
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from kvmlab.paths import KvmLabPaths
from xenlab.vm import (
    QEMU,
    AgentClient,
    LabError,
    LabState,
    Result,
    _children,
    free_port,
    host_forwards,
    qemu_alive,
    stop_state,
)

log = logging.getLogger(__name__)

L1_MEMORY_MIB = 3072
L1_VCPUS = 2
L2_MEMORY_MIB = 256
L1_BOOT_TIMEOUT_SECONDS = 600.0
L2_BOOT_TIMEOUT_SECONDS = 300.0
BRIDGE = "br0"
GUEST_NET = "198.18.88"  # the lab's addresses are all in 198.18.0.0/15 (RFC 2544)
RUN_DIR = "/run/kvmlab"  # in L1: the guests' consoles, QMP sockets and pid files
L2_START = "/usr/lib/kvmlab/l2-start"
L2_UP_MARKER = "KVMLAB-L2-UP"
L1_READY_MARKER = "KVMLAB-L1-READY"
# What an emulation fault looks like on L1's console (the probe: one panic in three floods).
PANIC_MARKERS = ("Kernel panic", "BUG:", "Oops", "__svm_vcpu_run")
CONTROL_PORT = 5000
IFNAMSIZ = 15


class EmulationFault(LabError):
    """L1's QEMU or an L2's died, or stopped answering, or did not boot in time: a fault of the
    emulation (QEMU 7.2's SVM under TCG), not of the product; worth one retry from scratch."""


@dataclass(frozen=True)
class L2Spec:
    name: str
    ip: str
    mac: str

    @property
    def tap(self) -> str:
        return f"tap{self.name}"

    @property
    def scope(self) -> str:
        return f"/sys/fs/cgroup/machine.slice/kvmlab-{self.name}.scope"

    @property
    def console(self) -> str:
        return f"{RUN_DIR}/{self.name}.console"

    @property
    def qmp(self) -> str:
        return f"{RUN_DIR}/{self.name}.qmp"

    @property
    def pid_file(self) -> str:
        return f"{RUN_DIR}/{self.name}.pid"


def standard_guests(count: int) -> list[L2Spec]:
    """l2a, l2b, ... at 198.18.88.11, .12, ..."""
    return [
        L2Spec(f"l2{chr(ord('a') + i)}", f"{GUEST_NET}.{11 + i}", f"52:54:00:18:88:{11 + i:02x}")
        for i in range(count)
    ]


def l1_argv(paths: KvmLabPaths, state: LabState) -> list[str]:
    forwards = host_forwards(state)
    return [
        QEMU,
        "-accel", "tcg,thread=multi",
        "-cpu", "max,-smap",
        "-smp", str(state.smp),
        "-m", str(L1_MEMORY_MIB),
        "-machine", "pc",
        "-display", "none", "-vga", "none", "-monitor", "none", "-no-reboot",
        "-serial", f"file:{state.console}",
        "-netdev", f"user,id=host,restrict=on,{forwards}",
        "-device", "virtio-net-pci,netdev=host",
        "-kernel", str(paths.vmlinuz),
        "-initrd", str(paths.l1_initrd),
        # panic=-1 with -no-reboot: an L1 panic ends QEMU at once (seen, not waited out)
        "-append", "console=ttyS0 panic=-1 quiet",
    ]  # fmt: skip


def l2_argv(spec: L2Spec) -> list[str]:
    """L1's command line of one guest: l2-start (its cgroup scope) then QEMU with KVM."""
    if len(spec.tap) > IFNAMSIZ:
        raise ValueError(f"tap name {spec.tap!r} is longer than {IFNAMSIZ} characters")
    return [
        L2_START, spec.name,
        QEMU,
        "-name", f"guest={spec.name}",
        "-enable-kvm", "-cpu", "host", "-smp", "1", "-m", str(L2_MEMORY_MIB),
        "-machine", "pc", "-nodefaults", "-display", "none", "-no-reboot",
        "-kernel", "/guest/vmlinuz", "-initrd", "/guest/l2.cpio.gz",
        "-append", f"console=ttyS0 panic=-1 quiet kvmlab.name={spec.name} kvmlab.ip={spec.ip}",
        "-serial", f"file:{spec.console}",
        "-netdev", f"tap,id=n0,ifname={spec.tap},script=no,downscript=no",
        "-device", f"virtio-net-pci,netdev=n0,mac={spec.mac},romfile=",
        "-qmp", f"unix:{spec.qmp},server=on,wait=off",
    ]  # fmt: skip


def parse_counters(text: str) -> dict[str, int]:
    """`grep -H . DIR/a DIR/b` output ("DIR/a:12") -> {"a": 12}; non-numeric lines skipped."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        path, sep, value = line.rpartition(":")
        if sep and value.strip().lstrip("-").isdigit():
            values[path.rsplit("/", 1)[-1]] = int(value.strip())
    return values


def proc_state(stat: str) -> str:
    """The state letter of a /proc/<pid>/stat line ("175 (qemu-system-x86) S 1 ..." -> "S"),
    "" when it cannot be read; the command may hold spaces and parentheses."""
    _, sep, rest = stat.rpartition(")")
    fields = rest.split()
    return fields[0] if sep and fields else ""


def find_stats_dir(listing: str, pid: int) -> str | None:
    """The per-VM debugfs directory of QEMU `pid` in `ls /sys/kernel/debug/kvm` ("<pid>-<fd>")."""
    for name in listing.split():
        if re.fullmatch(rf"{pid}-\d+", name):
            return f"/sys/kernel/debug/kvm/{name}"
    return None


class KvmLab(AgentClient):
    """A running L1: its agent, its QEMU pid, and the L2 guests started in it."""

    def __init__(self, paths: KvmLabPaths, state: LabState) -> None:
        super().__init__(state.agent_port, state.console)
        self.paths = paths
        self.state = state
        self.guests = [L2Spec(**g) for g in state.guests]
        self.timings: dict[str, float] = {}

    def _post(self, path: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
        """The agent's call; an agent that does not answer in time (L1 stalled or dead under
        emulation) is an EmulationFault."""
        try:
            return super()._post(path, body, timeout)
        except OSError as error:  # URLError, TimeoutError, ConnectionError
            alive = qemu_alive(self.state.pid)
            raise EmulationFault(
                f"L1's agent did not answer {path} within {timeout:.0f}s ({error}); L1's QEMU "
                f"{'runs' if alive else 'is gone'}:\n{self.console_tail(1500)}"
            ) from error

    def guest(self, name: str) -> L2Spec:
        for spec in self.guests:
            if spec.name == name:
                return spec
        raise LabError(f"no guest {name}")

    def sh(self, script: str, timeout: float = 60.0) -> Result:
        """A busybox sh script in L1 (for reads that would otherwise cost one process each)."""
        return self.run("sh", "-c", script, timeout=timeout)

    # --- liveness ------------------------------------------------------------------------
    def console_tail(self, chars: int = 3000) -> str:
        return self.console()[-chars:]

    def check_l1(self) -> None:
        if not qemu_alive(self.state.pid):
            console = self.console()
            panic = [m for m in PANIC_MARKERS if m in console]
            raise EmulationFault(f"L1's QEMU (pid {self.state.pid}) died (console: {panic or 'no'} "
                                 f"panic markers):\n{console[-3000:]}")  # fmt: skip
        for _ in range(3):
            if self.healthy():
                return
            time.sleep(2)
        raise EmulationFault(f"L1's agent does not answer:\n{self.console_tail()}")

    def l2_pid(self, name: str) -> int:
        result = self.run("cat", self.guest(name).pid_file)
        if result.rc != 0 or not result.stdout.strip().isdigit():
            raise EmulationFault(f"{name}: no pid file ({result.stderr.strip()})")
        return int(result.stdout.strip())

    def l2_process_alive(self, name: str, pid: int) -> bool:
        """Whether guest `name`'s QEMU (or l2-start before its exec) runs: /proc/<pid>/stat
        exists and is not a zombie's. A death is confirmed by a second look 2 s later (a read
        can fail while the agent is slow; a look at /proc/<pid>/cmdline during the wrapper's
        exec could see an empty command line)."""
        for look in range(2):
            if look:
                time.sleep(2)
            result = self.run("cat", f"/proc/{pid}/stat")
            if result.rc == 0 and proc_state(result.stdout) not in ("Z", "X", ""):
                return True
        log.warning("%s: its QEMU (pid %d in L1) is gone", name, pid)
        return False

    def check_alive(self, step: str) -> None:
        """L1 (its QEMU and agent) and each L2 (its QEMU in L1 and its `up` answer) are alive
        after `step`; otherwise EmulationFault, quoting the dead one's console."""
        self.check_l1()
        for spec in self.guests:
            pid = self.l2_pid(spec.name)
            if not self.l2_process_alive(spec.name, pid):
                qemu_log = self.spawned_log(f"l2-{spec.name}")
                raise EmulationFault(
                    f"after {step}: {spec.name}'s QEMU (pid {pid} in L1) died: {qemu_log[-1500:]}"
                    f"\n{spec.name} console:\n{self.l2_console(spec.name)[-1500:]}"
                    f"\nL1 dmesg:\n{self.run('dmesg').stdout[-1500:]}"
                )
            try:
                answer = self.l2_command(spec.name, "up", timeout=20)
            except LabError as error:
                raise EmulationFault(f"after {step}: {error}") from error
            if not answer.startswith("up "):
                raise EmulationFault(f"after {step}: {spec.name} answered {answer!r} to `up`")

    # --- guests --------------------------------------------------------------------------
    def l2_console(self, name: str) -> str:
        return self.run("cat", self.guest(name).console).stdout

    def start_l2(self, spec: L2Spec) -> None:
        for argv in (
            ["ip", "tuntap", "add", "dev", spec.tap, "mode", "tap"],
            ["ip", "link", "set", spec.tap, "master", BRIDGE],
            ["ip", "link", "set", spec.tap, "up"],
        ):
            self.run(*argv).check(" ".join(argv))
        self.spawn(f"l2-{spec.name}", l2_argv(spec))

    def wait_l2_up(
        self, timeout: float = L2_BOOT_TIMEOUT_SECONDS, names: Sequence[str] | None = None
    ) -> None:
        """Until every guest named (all by default) printed its marker; EmulationFault when one
        dies or L1 does, or after `timeout`."""
        deadline = time.monotonic() + timeout
        pending = set(names) if names is not None else {g.name for g in self.guests}
        while pending:
            self.check_l1()
            for name in sorted(pending):
                if L2_UP_MARKER in self.l2_console(name):
                    pending.discard(name)
                    continue
                pid = self.run("cat", self.guest(name).pid_file).stdout.strip()
                if pid.isdigit() and not self.l2_process_alive(name, int(pid)):
                    raise EmulationFault(
                        f"{name}'s QEMU (pid {pid} in L1) died while booting: "
                        f"{self.spawned_log(f'l2-{name}')[-1500:]}\n{self.l2_console(name)[-1500:]}"
                        f"\nL1 processes:\n{self.run('ps').stdout[-1500:]}"
                        f"\nL1 dmesg:\n{self.run('dmesg').stdout[-1500:]}"
                    )
            if pending and time.monotonic() > deadline:
                consoles = {n: self.l2_console(n)[-1000:] for n in pending}
                raise EmulationFault(f"guests {sorted(pending)} not up after {timeout:.0f}s: "
                                     f"{consoles}")  # fmt: skip
            if pending:
                time.sleep(3)

    def l2_command(self, name: str, *words: str, timeout: float = 60.0) -> str:
        """One command line to a guest's control port (image/l2-ctl.sh); returns its output."""
        spec = self.guest(name)
        line = " ".join(words) + "\n"
        result = None
        for _ in range(5):  # the guest's listener restarts after each connection
            result = self.run("timeout", str(int(timeout)), "nc", spec.ip, str(CONTROL_PORT),
                              stdin=line, timeout=timeout + 5)  # fmt: skip
            if result.stdout.strip():
                return result.stdout
            time.sleep(1)
        why = result.stderr.strip() if result else ""
        # a guest that stops answering is stalled or dead under emulation
        raise EmulationFault(f"guest {name} did not answer {line.strip()!r}: {why}")

    # --- what the checks read ------------------------------------------------------------
    def stats_dir(self, name: str) -> str | None:
        listing = self.run("ls", "/sys/kernel/debug/kvm").stdout
        return find_stats_dir(listing, self.l2_pid(name))

    def read_counters(self, directory: str, names: Sequence[str]) -> dict[str, int]:
        files = " ".join(f"{directory}/{n}" for n in names)
        return parse_counters(self.sh(f"grep -H . {files}").stdout)

    def snapshot(
        self, dirs: Mapping[str, str], stats: Sequence[str], tap_counters: Sequence[str]
    ) -> dict[str, Any]:
        """At one moment: `stats` of each guest's VM (`dirs`: guest -> its debugfs directory)
        and `tap_counters` of each guest's tap."""
        return {
            "at": time.monotonic(),
            "stats": {name: self.read_counters(d, stats) for name, d in dirs.items()},
            "taps": {
                g.name: self.read_counters(f"/sys/class/net/{g.tap}/statistics", tap_counters)
                for g in self.guests
            },
        }


def start(paths: KvmLabPaths, *, guests: Sequence[L2Spec]) -> KvmLab:
    """Starts L1's QEMU detached (its own session), waits for its agent, starts the guests and
    waits for their marker. On any failure L1's QEMU is stopped before the error propagates."""
    for needed in (paths.vmlinuz, paths.l1_initrd):
        if not needed.exists():
            raise LabError(f"{needed} missing: run `make kvmlab-deps`")
    paths.run.mkdir(parents=True, exist_ok=True)
    if paths.state_file.exists():
        old = LabState.load(paths.state_file)
        if qemu_alive(old.pid):
            raise LabError(f"a KVM lab is already running (pid {old.pid}): `make kvmlab-down`")
    console = paths.run / f"console-{time.strftime('%Y%m%d-%H%M%S')}.log"
    state = LabState(
        pid=0,
        agent_port=free_port(),
        exporter_port=free_port(),
        remediator_port=free_port(),
        console=str(console),
        hypervisor="kvm",
        smp=L1_VCPUS,
        guests=[asdict(g) for g in guests],
    )
    argv = l1_argv(paths, state)
    log.info("booting L1 under QEMU TCG; console %s", console)
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
    state.save(paths.state_file)
    lab = KvmLab(paths, state)
    try:
        started = time.monotonic()
        while not lab.healthy():
            if process.poll() is not None:
                raise EmulationFault(f"L1's QEMU exited ({process.returncode}):\n"
                                     f"{lab.console_tail()}")  # fmt: skip
            if time.monotonic() - started > L1_BOOT_TIMEOUT_SECONDS:
                raise EmulationFault(f"L1 not ready after {L1_BOOT_TIMEOUT_SECONDS:.0f}s:\n"
                                     f"{lab.console_tail()}")  # fmt: skip
            time.sleep(1)
        lab.timings["l1_boot_s"] = round(time.monotonic() - started, 1)
        log.info("L1 ready after %.0f s", lab.timings["l1_boot_s"])
        if lab.run("test", "-c", "/dev/kvm").rc != 0:
            raise LabError(f"L1 has no /dev/kvm:\n{lab.console_tail()}")
        l2_started = time.monotonic()
        # One guest at a time: every L2 death and the L1 panic seen in `make test`
        # (2026-12-02 15:06, two runs of each module) came while two guests booted together.
        for spec in lab.guests:
            lab.start_l2(spec)
            lab.wait_l2_up(names=[spec.name])
        lab.timings["l2_boot_s"] = round(time.monotonic() - l2_started, 1)
        log.info("%d guests up after %.0f s", len(guests), lab.timings["l2_boot_s"])
    except BaseException:
        stop(paths)
        raise
    return lab


def attach(paths: KvmLabPaths) -> KvmLab:
    if not paths.state_file.exists():
        raise LabError("no KVM lab running (`make kvmlab-up`)")
    state = LabState.load(paths.state_file)
    if not qemu_alive(state.pid):
        raise LabError(f"the KVM lab's QEMU (pid {state.pid}) is gone")
    return KvmLab(paths, state)


def stop(paths: KvmLabPaths) -> None:
    """Powers L1 off through its agent (which kills the guests it spawned), then makes sure
    L1's QEMU is gone: SIGTERM, SIGKILL, by its pid only. Safe when nothing runs."""
    stop_state(paths.state_file)


@contextlib.contextmanager
def booted(
    paths: KvmLabPaths,
    *,
    guests: Sequence[L2Spec],
    attempts: int = 1,
    failed_boots: list[str] | None = None,
) -> Iterator[KvmLab]:
    """A lab that is stopped whatever happens (an error, Ctrl-C). With `attempts` > 1 a start
    that hit an emulation fault is retried from a fresh L1, up to `attempts` times in all; each
    fault is logged and appended to `failed_boots`. Nothing after the start is retried here
    (kvmlab.flood retries a whole run)."""
    for attempt in range(1, attempts + 1):
        try:
            lab = start(paths, guests=guests)
            break
        except EmulationFault as error:
            if failed_boots is not None:
                failed_boots.append(f"boot attempt {attempt}/{attempts}: {str(error)[:2000]}")
            if attempt == attempts:
                raise
            log.warning("the KVM lab did not start, retrying from a fresh L1: %s", error)
    try:
        yield lab
    finally:
        stop(paths)
