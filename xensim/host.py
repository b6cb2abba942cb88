"""The simulated host's plumbing: namespaces, bridge, vifs, guest cgroups, workloads, sweep.

Everything a simulated host creates is named from its host name, so that `down` can find it
again by the name alone, also after a crash or a `kill -9` left the state file behind or
half-written:

| what                 | name                                                              |
|----------------------|-------------------------------------------------------------------|
| state dir            | `/run/judicator-sim/<name>`                                       |
| Dom0 netns (option)  | `jsim-<name>-dom0`; without the option Dom0 is the machine's own  |
| guest netns          | `jsim-<name>-<guest>`                                             |
| bridge in Dom0       | `xenbr0` in a Dom0 netns, `jsbr-<name>` in the machine's own      |
| vif (Dom0 end)       | `vif<domid>.0` (and `vif<domid>.0-emu`); guest end `eth0`/`eth1`  |
| cgroups              | `judicator-sim/<name>/<guest>` in every hierarchy                 |

Addresses: bridge `198.18.<k>.1/24`, guest number i `198.18.<k>.<10+i>`, with k derived from the
host name (documented in docs/simulator.md).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from xensim import cgroups
from xensim.poll import wait_until
from xensim.state import Domain, HostState, StateStore

log = logging.getLogger(__name__)

RUN_ROOT = Path("/run/judicator-sim")
NETNS_PREFIX = "jsim-"
CGROUP_PREFIX = "judicator-sim"
HOST_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9]{0,9}$")
GUEST_NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,30}$")
# A guest's vif devid d > 0 has the address of guest number + d x this (numbers stay below it).
SECOND_VIF_OFFSET = 120
# Xen's netback gives every backend vif this MAC; the frontend (guest) carries the real one.
BACKEND_MAC = "fe:ff:ff:ff:ff:ff"
COMMAND_TIMEOUT = 15.0
DAEMON_PIDFILE = "daemon.pid"
CLONE_NEWNET = 0x40000000
WORKLOADS_KEY = "workloads"


class HostError(RuntimeError):
    """The simulated host cannot be built or changed as asked; the message says why."""


@dataclass(frozen=True)
class Names:
    """Every name a simulated host uses, derived from its host name."""

    host: str
    dom0_netns: str | None

    @classmethod
    def for_host(cls, host: str, *, dom0_netns: bool) -> Names:
        if not HOST_NAME_PATTERN.match(host):
            raise HostError(
                f"host name {host!r} must be 1-10 lower-case letters or digits, starting with"
                " a letter (it becomes part of interface names, which are limited to 15 bytes)"
            )
        return cls(host=host, dom0_netns=f"{NETNS_PREFIX}{host}-dom0" if dom0_netns else None)

    @property
    def state_dir(self) -> Path:
        return RUN_ROOT / self.host

    @property
    def netns_prefix(self) -> str:
        return f"{NETNS_PREFIX}{self.host}-"

    @property
    def bridge(self) -> str:
        return "xenbr0" if self.dom0_netns else f"jsbr-{self.host}"

    @property
    def cgroup_root(self) -> str:
        return f"{CGROUP_PREFIX}/{self.host}"

    @property
    def subnet_index(self) -> int:
        """The k of 198.18.k.0/24: stable per host name, so side-by-side hosts rarely meet."""
        return zlib.crc32(self.host.encode()) % 250 + 1

    @property
    def bridge_address(self) -> str:
        return f"198.18.{self.subnet_index}.1"

    def guest_netns(self, guest: str) -> str:
        return f"{self.netns_prefix}{guest}"

    def guest_cgroup(self, guest: str) -> str:
        return f"{self.cgroup_root}/{guest}"

    def guest_address(self, number: int) -> str:
        if not 1 <= number <= 240:
            raise HostError(f"guest number {number} out of range 1..240")
        return f"198.18.{self.subnet_index}.{10 + number}"


def run(argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run one command with a timeout; a failure raises HostError quoting its stderr."""
    log.debug("running %s", argv)
    try:
        result = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise HostError(f"{' '.join(argv)}: {error}") from error
    if check and result.returncode != 0:
        raise HostError(f"{' '.join(argv)}: exit {result.returncode}: {result.stderr.strip()}")
    return result


def ip(names: Names, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`ip` in Dom0's network namespace."""
    prefix = ["ip", "-n", names.dom0_netns] if names.dom0_netns else ["ip"]
    return run([*prefix, *args], check=check)


def ip_in(netns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(["ip", "-n", netns, *args], check=check)


def in_dom0(names: Names, argv: Sequence[str]) -> list[str]:
    """An argv that runs `argv` in Dom0's network namespace."""
    if names.dom0_netns:
        return ["ip", "netns", "exec", names.dom0_netns, *argv]
    return list(argv)


def list_netns() -> list[str]:
    result = run(["ip", "-j", "netns", "list"], check=False)
    if result.returncode != 0 or not result.stdout.strip():
        return []
    return [entry["name"] for entry in json.loads(result.stdout)]


def link_exists(names: Names, link: str) -> bool:
    return ip(names, "link", "show", "dev", link, check=False).returncode == 0


# --- Dom0 ------------------------------------------------------------------------------------


def create_dom0_network(names: Names) -> None:
    """Dom0's namespace (when asked for) and the bridge the vifs join."""
    if names.dom0_netns:
        run(["ip", "netns", "add", names.dom0_netns])
        ip(names, "link", "set", "lo", "up")
    ip(names, "link", "add", names.bridge, "type", "bridge", "forward_delay", "0", "stp_state", "0")
    ip(names, "addr", "add", f"{names.bridge_address}/24", "dev", names.bridge)
    ip(names, "link", "set", names.bridge, "up")


# --- guests ----------------------------------------------------------------------------------


def create_guest_network(names: Names, domain: Domain, number: int) -> None:
    """The guest's namespace with `eth0` (and `eth1` for an emulated NIC) wired to the bridge."""
    netns = names.guest_netns(domain.name)
    run(["ip", "netns", "add", netns])
    ip_in(netns, "link", "set", "lo", "up")
    attach_vifs(names, domain, number)


def attach_vifs(names: Names, domain: Domain, number: int) -> None:
    """Create the vif pairs of the domain's current domid, as netback does at domain start."""
    netns = names.guest_netns(domain.name)
    pairs = [(domain.interface_name(devid), f"eth{devid}", devid) for devid in domain.vifs]
    if domain.emu_vif and domain.vifs:
        pairs.append((f"{domain.interface_name(domain.vifs[0])}-emu", "eth9", domain.vifs[0]))
    for vif, guest_end, devid in pairs:
        ip(names, "link", "add", vif, "address", BACKEND_MAC, "type", "veth",
           "peer", "name", guest_end, "address", domain.mac(devid), "netns", netns)  # fmt: skip
        ip(names, "link", "set", vif, "master", names.bridge)
        ip(names, "link", "set", vif, "up")
        ip_in(netns, "link", "set", guest_end, "up")
    if pairs:
        ip_in(netns, "addr", "add", f"{names.guest_address(number)}/24", "dev", "eth0")
        ip_in(netns, "route", "replace", "default", "via", names.bridge_address)
    for devid in domain.vifs[1:]:
        # A second vif gets an address of its own (guest number + 120), so a program can send
        # on it (SO_BINDTODEVICE) and be answered on it.
        address = names.guest_address(number + SECOND_VIF_OFFSET * devid)
        ip_in(netns, "addr", "add", f"{address}/24", "dev", f"eth{devid}")


def detach_vifs(names: Names, domain: Domain) -> None:
    """Remove the domain's vifs (and the ifbs their ingress is redirected to)."""
    for vif in domain_interfaces(domain):
        if not link_exists(names, vif):
            continue
        for ifb in redirect_targets(names, vif):
            ip(names, "link", "del", ifb, check=False)
        ip(names, "link", "del", vif, check=False)


def domain_interfaces(domain: Domain) -> list[str]:
    names = [domain.interface_name(devid) for devid in domain.vifs]
    if domain.emu_vif and domain.vifs:
        names.append(f"{domain.interface_name(domain.vifs[0])}-emu")
    return names


# Plain ifbs, and the remediator's (docs/design.md: jifb<domid>).
IFB_PREFIXES = ("ifb", "jifb")
_MIRRED_TARGET = re.compile(r"(?:Redirect|Mirror) to device (\S+?)\)?\s")


def redirect_targets(names: Names, link: str) -> list[str]:
    """ifb devices that `link`'s ingress filters redirect to (the remediator's shaping)."""
    result = run(in_dom0(names, ["tc", "filter", "show", "dev", link, "ingress"]), check=False)
    return sorted(
        {m for m in _MIRRED_TARGET.findall(result.stdout + " ") if m.startswith(IFB_PREFIXES)}
    )


def create_guest(
    store: StateStore,
    names: Names,
    guest: str,
    *,
    number: int,
    cpus: Sequence[int] | None,
    vcpus: int = 1,
    memory_mib: int = 512,
    emu_vif: bool = False,
    vifs: int = 1,
) -> Domain:
    """Add a domain to the state and give it a namespace, vifs and a cgroup."""
    if not GUEST_NAME_PATTERN.match(guest):
        raise HostError(f"guest name {guest!r}: letters, digits, '-' and '_' only, 1-31 chars")
    cgroup = names.guest_cgroup(guest)
    with store.transaction() as host:
        domain = host.add_domain(
            guest,
            vcpus=vcpus,
            memory_kib=memory_mib * 1024,
            pinned_cpus=cpus,
            netns=names.guest_netns(guest),
            cgroup=cgroup,
            vifs=range(vifs),
        )
        domain.emu_vif = emu_vif
        guests = host.extra.setdefault("guest_numbers", {})
        guests[guest] = number
    cgroups.create(cgroup)
    create_guest_network(names, domain, number)
    return domain


def guest_number(host: HostState, guest: str) -> int:
    numbers = host.extra.get("guest_numbers", {})
    number = numbers.get(guest)
    if not isinstance(number, int):
        raise HostError(f"no guest number recorded for {guest!r}")
    return number


def guest_address(names: Names, host: HostState, guest: str) -> str:
    return names.guest_address(guest_number(host, guest))


def reboot_guest(store: StateStore, names: Names, guest: str) -> Domain:
    """Reboot as Xen does: processes gone, a new domid, vifs re-created under the new name."""
    before = store.read().domain(guest)
    if before.domid == 0:
        raise HostError("Domain-0 cannot be rebooted")
    stop_workloads(store, guest)
    if before.cgroup:
        cgroups.kill_all(before.cgroup)
        if cgroups.exists(before.cgroup):
            cgroups.set_frozen(before.cgroup, False)
            cgroups.set_cpu_cap(before.cgroup, 0)
    detach_vifs(names, before)
    with store.transaction() as host:
        domain = host.reboot_domain(guest)
        domain.cap = 0
        number = guest_number(host, guest)
    attach_vifs(names, domain, number)
    return domain


# --- workloads -------------------------------------------------------------------------------


def start_in_guest(
    store: StateStore, guest: str, kind: str, argv: Sequence[str], log_dir: Path
) -> int:
    """Start `argv` detached inside the guest's namespace and cgroup; return its pid.

    The child joins the guest's cgroups before it execs (so not one cycle escapes the cap), then
    `ip netns exec` (same pid) enters the namespace and execs the workload.
    """
    domain = store.read().domain(guest)
    if domain.netns is None or domain.cgroup is None:
        raise HostError(f"{guest} is not a simulated guest")
    if domain.paused:
        raise HostError(f"{guest} is paused; unpause it before starting workloads")
    cgroup = domain.cgroup
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{guest}-{kind}.log"

    def join_cgroup() -> None:
        cgroups.add_pid(cgroup, os.getpid())

    with open(log_path, "ab") as output:
        process = subprocess.Popen(
            ["ip", "netns", "exec", domain.netns, *argv],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # Single-threaded CLI, so preexec_fn is safe; the cgroup must be joined before exec.
            preexec_fn=join_cgroup,
        )
    with store.transaction() as host:
        records = host.extra.setdefault(WORKLOADS_KEY, [])
        records.append({"guest": guest, "kind": kind, "pid": process.pid, "started": time.time()})
    log.info("started %s in %s as pid %d", kind, guest, process.pid)
    return process.pid


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return status.rpartition(")")[2].split()[0] != "Z"


def workloads(host: HostState) -> list[dict[str, object]]:
    records = host.extra.get(WORKLOADS_KEY, [])
    return [r for r in records if isinstance(r, dict)]


def stop_workloads(store: StateStore, guest: str, kind: str | None = None) -> int:
    """Stop a guest's workloads (of one kind, or all); return how many were running."""
    with store.transaction() as host:
        records = workloads(host)
        chosen = [r for r in records if r["guest"] == guest and kind in (None, r["kind"])]
        host.extra[WORKLOADS_KEY] = [r for r in records if r not in chosen]
    stopped = 0
    for record in chosen:
        pid = record["pid"]
        if isinstance(pid, int) and alive(pid):
            stopped += 1
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    return stopped


# --- teardown --------------------------------------------------------------------------------


def enter_netns(netns: str) -> None:
    """Join a named network namespace (setns(2): the calling thread only)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{netns}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"setns into network namespace {netns}: {os.strerror(error)}")
    finally:
        os.close(fd)


def daemon_pid(state_dir: Path) -> int | None:
    try:
        return int((state_dir / DAEMON_PIDFILE).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def stop_daemon(state_dir: Path, timeout: float = 5.0) -> None:
    pid = daemon_pid(state_dir)
    if pid is None or not _is_our_daemon(pid, state_dir):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        wait_until(lambda: not alive(pid), timeout=timeout, what="the daemon", interval=0.05)
    if alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _is_our_daemon(pid: int, state_dir: Path) -> bool:
    """The pidfile may be stale and the pid reused: check the command line names our state."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"xensim.daemon" in cmdline and str(state_dir).encode() in cmdline


def sweep(host_name: str) -> list[str]:
    """Remove everything a host of this name created, from the naming convention alone.

    Safe to run on a half-built, crashed or already removed host; returns what it removed.
    """
    removed: list[str] = []
    state_dir = RUN_ROOT / host_name
    stop_daemon(state_dir)
    prefix = f"{NETNS_PREFIX}{host_name}-"
    cgroup_root = f"{CGROUP_PREFIX}/{host_name}"
    # Workloads first: cgroup members, then anything still inside our namespaces.
    if cgroups.exists(cgroup_root):
        cgroups.kill_all(cgroup_root)
    namespaces = [ns for ns in list_netns() if ns.startswith(prefix)]
    for netns in namespaces:
        result = run(["ip", "netns", "pids", netns], check=False)
        for token in result.stdout.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(token), signal.SIGKILL)
    # In the machine's own namespace: our bridge, and ifbs our vifs redirected to.
    root_names = Names(host=host_name, dom0_netns=None)
    for link in _links_on_bridge(root_names.bridge):
        for ifb in redirect_targets(root_names, link):
            if run(["ip", "link", "del", ifb], check=False).returncode == 0:
                removed.append(f"link {ifb}")
    if link_exists(root_names, root_names.bridge):
        run(["ip", "link", "del", root_names.bridge], check=False)
        removed.append(f"link {root_names.bridge}")
    # Deleting a guest's namespace deletes its veth pairs, hence the vifs in Dom0.
    for netns in namespaces:
        if run(["ip", "netns", "del", netns], check=False).returncode == 0:
            removed.append(f"netns {netns}")
    if cgroups.exists(cgroup_root):
        cgroups.destroy(cgroup_root)
        removed.append(f"cgroup {cgroup_root}")
    cgroups.remove_if_empty(CGROUP_PREFIX)
    if state_dir.exists():
        shutil.rmtree(state_dir, ignore_errors=True)
        removed.append(f"state {state_dir}")
    return removed


def _links_on_bridge(bridge: str) -> list[str]:
    result = run(["ip", "-j", "link", "show", "master", bridge], check=False)
    if result.returncode != 0 or not result.stdout.strip():
        return []
    return [entry["ifname"] for entry in json.loads(result.stdout)]


_VIF_NAME = re.compile(r"^vif\d+\.\d+(-emu)?$")


def vifs_in_machine_namespace() -> list[str]:
    """vif-named links in the machine's own namespace (another host's, or a real Xen's)."""
    result = run(["ip", "-j", "link", "show"], check=False)
    if result.returncode != 0 or not result.stdout.strip():
        return []
    return [e["ifname"] for e in json.loads(result.stdout) if _VIF_NAME.match(e["ifname"])]


def leftovers(host_name: str) -> list[str]:
    """What of a host of this name still exists (for `status` and the tests)."""
    found: list[str] = []
    prefix = f"{NETNS_PREFIX}{host_name}-"
    found += [f"netns {ns}" for ns in list_netns() if ns.startswith(prefix)]
    if run(["ip", "link", "show", "dev", f"jsbr-{host_name}"], check=False).returncode == 0:
        found.append(f"link jsbr-{host_name}")
    if cgroups.exists(f"{CGROUP_PREFIX}/{host_name}"):
        found.append(f"cgroup {CGROUP_PREFIX}/{host_name}")
    if (RUN_ROOT / host_name).exists():
        found.append(f"state {RUN_ROOT / host_name}")
    return found
