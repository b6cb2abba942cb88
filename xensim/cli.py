"""`judicator-sim`: bring a simulated Xen host up, drive its guests, take it down.

    judicator-sim up [--name N] [--cpus 4] [--guests 3] [--dom0-netns] [--scenario FILE] ...
    eval "$(judicator-sim env --name N)"      # PATH with xl/xenperf, LD_LIBRARY_PATH, state dir
    judicator-sim run guest1 pingflood --target guest2 --duration 10
    judicator-sim status --name N
    judicator-sim down --name N               # also after a crash or kill -9

The only module of xensim that reads the environment (XENSIM_XENPERF, XENSIM_STUB_DIR) or
files named on the command line (the scenario).
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from xensim import cgroups, counters, perfc, workloads
from xensim.host import (
    HostError,
    Names,
    alive,
    create_dom0_network,
    create_guest,
    daemon_pid,
    guest_address,
    leftovers,
    reboot_guest,
    start_in_guest,
    stop_workloads,
    sweep,
    vifs_in_machine_namespace,
)
from xensim.host import workloads as recorded_workloads
from xensim.poll import wait_until
from xensim.state import DOM0_NAME, HostState, StateError, StateStore, new_host

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_XENPERF = REPO_ROOT / ".cache/xen/root/usr/lib/xen-4.17/bin/xenperf"
DEFAULT_STUB_DIR = REPO_ROOT / "build/stub"
DEFAULT_NAME = "default"
MAX_CPUS = 256
MAX_VIFS = 2
DAEMON_START_TIMEOUT = 10.0
SERVER_HEADSTART = 2.0


class UsageError(Exception):
    """A command-line or scenario problem; the message says what to fix."""


# --- scenario -------------------------------------------------------------------------------


@dataclass
class GuestSpec:
    name: str
    cpus: list[int] | None = None
    vcpus: int = 1
    memory_mib: int = 512
    emu_vif: bool = False
    vifs: int = 1


@dataclass
class WorkloadSpec:
    guest: str
    kind: str
    target: str | None = None
    duration: float = 60.0
    rate: float | None = None
    size: int | None = None
    threads: int | None = None


@dataclass
class Scenario:
    cpus: int = 4
    offline_cpus: list[int] = field(default_factory=list)
    shadow: bool = False
    perf_counters: bool = True
    dom0_netns: bool = False
    pinning: str = "exclusive"
    guests: list[GuestSpec] = field(default_factory=list)
    workloads: list[WorkloadSpec] = field(default_factory=list)


def default_guests(count: int, cpus: int, offline: Sequence[int], pinning: str) -> list[GuestSpec]:
    """guest1..guestN; exclusive pinning puts guest i on CPU i (Dom0 has CPU 0), wrapping."""
    online = [c for c in range(cpus) if c not in offline]
    for_guests = [c for c in online if c != 0] or online
    guests = []
    for i in range(1, count + 1):
        pinned = [for_guests[(i - 1) % len(for_guests)]] if pinning == "exclusive" else None
        guests.append(GuestSpec(name=f"guest{i}", cpus=pinned))
    return guests


def load_scenario(text: str, origin: str) -> tuple[Scenario, str | None]:
    """Validate a scenario file into a Scenario (and its host name, if it sets one).

    Every problem is collected and reported together.
    """
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise UsageError(f"{origin}: not YAML: {error}") from error
    if not isinstance(data, dict):
        raise UsageError(f"{origin}: must be a mapping")
    problems: list[str] = []
    known = {"name", "cpus", "offline_cpus", "shadow", "perf_counters", "dom0_netns", "pinning"}
    known |= {"guests", "workloads"}
    problems += [f"unknown key {key!r}" for key in data if key not in known]
    scenario = Scenario()
    name = data.get("name")
    if name is not None and not isinstance(name, str):
        problems.append("name must be a string")
    for key in ("cpus",):
        if key in data:
            if not isinstance(data[key], int) or not 1 <= data[key] <= MAX_CPUS:
                problems.append(f"{key} must be an integer 1..{MAX_CPUS}")
            else:
                scenario.cpus = data[key]
    for key in ("shadow", "perf_counters", "dom0_netns"):
        if key in data:
            if not isinstance(data[key], bool):
                problems.append(f"{key} must be true or false")
            else:
                setattr(scenario, key, data[key])
    if "pinning" in data:
        if data["pinning"] not in ("exclusive", "none"):
            problems.append("pinning must be 'exclusive' or 'none'")
        else:
            scenario.pinning = data["pinning"]
    offline = data.get("offline_cpus", [])
    if not isinstance(offline, list) or not all(isinstance(c, int) for c in offline):
        problems.append("offline_cpus must be a list of CPU ids")
    else:
        scenario.offline_cpus = offline
    guest_names: set[str] = set()
    for index, raw in enumerate(data.get("guests") or []):
        where = f"guests[{index}]"
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            problems.append(f"{where}: needs a name")
            continue
        unknown = set(raw) - {"name", "cpus", "vcpus", "memory_mib", "emu_vif", "vifs"}
        problems += [f"{where}: unknown key {key!r}" for key in sorted(unknown)]
        cpus = raw.get("cpus")
        if cpus is not None and (
            not isinstance(cpus, list) or not all(isinstance(c, int) for c in cpus)
        ):
            problems.append(f"{where}: cpus must be a list of CPU ids")
            cpus = None
        vcpus = raw.get("vcpus", 1)
        if not isinstance(vcpus, int) or vcpus < 1:
            problems.append(f"{where}: vcpus must be a positive integer")
            vcpus = 1
        memory = raw.get("memory_mib", 512)
        if not isinstance(memory, int) or memory < 1:
            problems.append(f"{where}: memory_mib must be a positive integer")
            memory = 512
        vifs = raw.get("vifs", 1)
        if not isinstance(vifs, int) or not 1 <= vifs <= MAX_VIFS:
            problems.append(f"{where}: vifs must be an integer 1..{MAX_VIFS}")
            vifs = 1
        if raw["name"] in guest_names:
            problems.append(f"{where}: duplicate guest {raw['name']!r}")
        guest_names.add(raw["name"])
        scenario.guests.append(
            GuestSpec(raw["name"], cpus, vcpus, memory, bool(raw.get("emu_vif", False)), vifs)
        )
    for index, raw in enumerate(data.get("workloads") or []):
        where = f"workloads[{index}]"
        if not isinstance(raw, dict):
            problems.append(f"{where}: must be a mapping")
            continue
        unknown = set(raw) - {"guest", "kind", "target", "duration", "rate", "size", "threads"}
        problems += [f"{where}: unknown key {key!r}" for key in sorted(unknown)]
        if raw.get("guest") not in guest_names:
            problems.append(f"{where}: guest {raw.get('guest')!r} is not among the guests")
        if raw.get("kind") not in workloads.KINDS:
            problems.append(f"{where}: kind must be one of {', '.join(workloads.KINDS)}")
        if raw.get("target") is not None and raw.get("target") not in guest_names:
            problems.append(f"{where}: target {raw.get('target')!r} is not among the guests")
        scenario.workloads.append(
            WorkloadSpec(
                guest=str(raw.get("guest")),
                kind=str(raw.get("kind")),
                target=raw.get("target"),
                duration=float(raw.get("duration", 60.0)),
                rate=raw.get("rate"),
                size=raw.get("size"),
                threads=raw.get("threads"),
            )
        )
    if problems:
        raise UsageError(f"{origin}: " + "; ".join(problems))
    return scenario, name


# --- environment ----------------------------------------------------------------------------


def tool_paths() -> tuple[Path, Path]:
    """The real xenperf and the stub's directory, from the Makefile's variables or the repo."""
    xenperf = Path(os.environ.get("XENSIM_XENPERF") or DEFAULT_XENPERF)
    stub_dir = Path(os.environ.get("XENSIM_STUB_DIR") or DEFAULT_STUB_DIR)
    return xenperf, stub_dir


def environment(names: Names, host: HostState | None) -> dict[str, str]:
    """The variables that put this host's xl, xenperf and stub in use."""
    xenperf, stub_dir = tool_paths()
    bin_dir = names.state_dir / "bin"
    env = {
        "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}",
        "LD_LIBRARY_PATH": str(stub_dir),
        "XENSIM_STATE_DIR": str(names.state_dir),
        "XENSIM_HOST": names.host,
        "XENSIM_SYSFS": str(names.state_dir / "sysfs"),
        "XENSIM_XL": str(bin_dir / "xl"),
        "XENSIM_XENPERF_BIN": str(bin_dir / "xenperf"),
        "XENSIM_XENPERF": str(xenperf),
        "XENSIM_STUB_DIR": str(stub_dir),
    }
    dom0_netns = host.dom0_netns if host is not None else names.dom0_netns
    if dom0_netns:
        env["XENSIM_DOM0_NETNS"] = dom0_netns
    return env


def write_tools(names: Names) -> None:
    """<state>/bin: an `xl` bound to this host and a `xenperf` link to the real binary."""
    bin_dir = names.state_dir / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    xenperf, _stub_dir = tool_paths()
    if not xenperf.exists():
        log.warning("real xenperf not found at %s (run `make deps`)", xenperf)
    link = bin_dir / "xenperf"
    link.unlink(missing_ok=True)
    link.symlink_to(xenperf)
    # A wrapper rather than a symlink: xl must find this host's state whoever calls it.
    wrapper = bin_dir / "xl"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"XENSIM_STATE_DIR={shlex.quote(str(names.state_dir))}\n"
        "export XENSIM_STATE_DIR\n"
        f"PYTHONPATH={shlex.quote(str(REPO_ROOT))}${{PYTHONPATH:+:$PYTHONPATH}}\n"
        "export PYTHONPATH\n"
        # -S: no site (the venv's .pth finders cost a fifth of every call); fakexl needs
        # only the standard library and this repository.
        f'exec {shlex.quote(sys.executable)} -S -m xensim.fakexl "$@"\n'
    )
    wrapper.chmod(0o755)


def write_sysfs(names: Names) -> None:
    """<state>/sysfs for the exporter's --path.sysfs: real vifs, simulated blkback vbds."""
    sysfs = names.state_dir / "sysfs"
    (sysfs / "bus" / "xen-backend" / "devices").mkdir(parents=True, exist_ok=True)
    (sysfs / "class").mkdir(parents=True, exist_ok=True)
    net = sysfs / "class" / "net"
    net.unlink(missing_ok=True)
    net.symlink_to("/sys/class/net")


# --- commands -------------------------------------------------------------------------------


def _require_root() -> None:
    if os.geteuid() != 0:
        raise UsageError("judicator-sim must run as root (network namespaces, veth links, cgroups)")


def _names(args: argparse.Namespace, dom0_netns: bool = False) -> Names:
    return Names.for_host(args.name, dom0_netns=dom0_netns)


def _store(names: Names) -> StateStore:
    store = StateStore(names.state_dir)
    if not store.exists():
        raise UsageError(f"no simulated host {names.host!r} (run `judicator-sim up` first)")
    return store


def _names_of_running(args: argparse.Namespace) -> tuple[Names, StateStore, HostState]:
    names = _names(args)
    store = _store(names)
    host = store.read()
    return Names(host=names.host, dom0_netns=host.dom0_netns), store, host


def scenario_from_args(args: argparse.Namespace) -> tuple[Scenario, str]:
    name = args.name
    if args.scenario:
        path = Path(args.scenario)
        try:
            text = path.read_text()
        except OSError as error:
            raise UsageError(f"cannot read scenario {path}: {error.strerror}") from error
        scenario, scenario_name = load_scenario(text, str(path))
        if scenario_name and args.name == DEFAULT_NAME:
            name = scenario_name
        # Flags given explicitly override the file.
        if args.dom0_netns:
            scenario.dom0_netns = True
        if args.shadow:
            scenario.shadow = True
        if args.no_perf_counters:
            scenario.perf_counters = False
    else:
        scenario = Scenario(
            cpus=args.cpus,
            offline_cpus=args.offline_cpus,
            shadow=args.shadow,
            perf_counters=not args.no_perf_counters,
            dom0_netns=args.dom0_netns,
            pinning=args.pinning,
        )
    if not scenario.guests:
        scenario.guests = default_guests(
            args.guests, scenario.cpus, scenario.offline_cpus, scenario.pinning
        )
    problems = [
        f"offline CPU {cpu} does not exist"
        for cpu in scenario.offline_cpus
        if not 0 <= cpu < scenario.cpus
    ]
    if 0 in scenario.offline_cpus:
        problems.append("CPU 0 (Domain-0's) cannot be offline")
    for guest in scenario.guests:
        bad = [c for c in guest.cpus or [] if not 0 <= c < scenario.cpus]
        if bad:
            problems.append(f"guest {guest.name}: CPUs {bad} do not exist")
    if not 1 <= scenario.cpus <= MAX_CPUS:
        problems.append(f"--cpus must be 1..{MAX_CPUS}")
    if problems:
        raise UsageError("; ".join(problems))
    return scenario, name


def cmd_up(args: argparse.Namespace) -> int:
    _require_root()
    scenario, name = scenario_from_args(args)
    names = Names.for_host(name, dom0_netns=scenario.dom0_netns)
    left = leftovers(names.host)
    if left:
        raise UsageError(
            f"host {names.host!r} already exists ({', '.join(left)});"
            f" run `judicator-sim down --name {names.host}` first"
        )
    if not names.dom0_netns:
        taken = vifs_in_machine_namespace()
        if taken:
            raise UsageError(
                f"this namespace already has vifs ({', '.join(taken[:4])}): another host uses"
                " it as Dom0; give this one its own with --dom0-netns"
            )
    try:
        _build(names, scenario, args)
    except BaseException:
        log.error("building host %s failed; removing what was built", names.host)
        sweep(names.host)
        raise
    print(f"simulated Xen host {names.host!r} is up: {names.state_dir}")
    print(f'use it with: eval "$(judicator-sim env --name {names.host})"')
    return 0


def _build(names: Names, scenario: Scenario, args: argparse.Namespace) -> None:
    online = [c for c in range(scenario.cpus) if c not in scenario.offline_cpus]
    host = new_host(names.host, scenario.cpus, online_cpus=online, dom0_vcpus=1)
    host.domains[0].vcpus[0].hard = "0" if scenario.cpus > 1 else "all"
    host.domains[0].vcpus[0].cpu = 0
    host.dom0_netns = names.dom0_netns
    host.cgroup_root = names.cgroup_root
    # Dom0 of the simulated host is this machine: xl info reports its kernel, as on Xen.
    kernel = os.uname()
    host.dom0_kernel_release, host.dom0_kernel_version = kernel.release, kernel.version
    host.machine = kernel.machine
    catalogue = counters.SHADOW_PAGING if scenario.shadow else counters.DEBIAN_12
    host.extra.update(
        {
            "catalogue": catalogue.label,
            "shadow": scenario.shadow,
            "bridge": names.bridge,
            "subnet": f"198.18.{names.subnet_index}.0/24",
        }
    )
    names.state_dir.mkdir(parents=True, exist_ok=True)
    store = StateStore(names.state_dir)
    store.initialize(host)
    perfc_path = names.state_dir / perfc.STATE_FILE
    perfc.create(perfc_path, catalogue, len(online))
    if not scenario.perf_counters:
        perfc.set_errno(perfc_path, perfc_errno=errno.ENOSYS)
    write_tools(names)
    write_sysfs(names)
    cgroups.create(names.cgroup_root)
    create_dom0_network(names)
    for number, guest in enumerate(scenario.guests, start=1):
        create_guest(
            store,
            names,
            guest.name,
            number=number,
            cpus=guest.cpus,
            vcpus=guest.vcpus,
            memory_mib=guest.memory_mib,
            emu_vif=guest.emu_vif,
            vifs=guest.vifs,
        )
    start_daemon(names, interval=args.tick, seed=args.seed)
    for spec in scenario.workloads:
        start_workload(store, names, spec)


def start_daemon(names: Names, *, interval: float, seed: int | None) -> int:
    argv = [sys.executable, "-m", "xensim.daemon", "--state-dir", str(names.state_dir)]
    argv += ["--interval", f"{interval:g}"]
    if names.dom0_netns:
        argv += ["--dom0-netns", names.dom0_netns]
    if seed is not None:
        argv += ["--seed", str(seed)]
    env = dict(os.environ)
    env["PYTHONPATH"] = (
        f"{REPO_ROOT}:{env['PYTHONPATH']}" if env.get("PYTHONPATH") else str(REPO_ROOT)
    )
    with open(names.state_dir / "daemon.log", "ab") as output:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            cwd="/",
        )

    def started() -> bool:
        if process.poll() is not None:
            raise HostError(
                f"the daemon exited with {process.returncode}; see {names.state_dir}/daemon.log"
            )
        return daemon_pid(names.state_dir) == process.pid

    try:
        wait_until(
            started, timeout=DAEMON_START_TIMEOUT, what="the daemon", interval=0.05, retry_on=()
        )
    except TimeoutError:
        raise HostError(f"the daemon did not start within {DAEMON_START_TIMEOUT}s") from None
    return process.pid


def start_workload(store: StateStore, names: Names, spec: WorkloadSpec) -> int:
    host = store.read()
    target = guest_address(names, host, spec.target) if spec.target else None
    server = workloads.NEEDS_SERVER.get(spec.kind)
    if server is not None and spec.target is not None:
        # The far end needs its server, running a little longer than the client.
        server_argv = workloads.workload_argv(server, duration=spec.duration + SERVER_HEADSTART)
        start_in_guest(store, spec.target, server, server_argv, names.state_dir / "logs")
    try:
        argv = workloads.workload_argv(
            spec.kind,
            duration=spec.duration,
            target=target,
            rate=spec.rate,
            size=spec.size,
            threads=spec.threads,
        )
    except ValueError as error:
        raise UsageError(str(error)) from error
    return start_in_guest(store, spec.guest, spec.kind, argv, names.state_dir / "logs")


def cmd_run(args: argparse.Namespace) -> int:
    _require_root()
    names, store, host = _names_of_running(args)
    for guest in (args.guest, args.target):
        if guest is not None and (host.find_domain(guest) is None or guest == DOM0_NAME):
            raise UsageError(f"no guest {guest!r} on host {names.host!r}")
    spec = WorkloadSpec(
        guest=args.guest,
        kind=args.kind,
        target=args.target,
        duration=args.duration,
        rate=args.rate,
        size=args.size,
        threads=args.threads,
    )
    pid = start_workload(store, names, spec)
    print(pid)
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    _require_root()
    _, store, host = _names_of_running(args)
    if host.find_domain(args.guest) is None:
        raise UsageError(f"no guest {args.guest!r}")
    stopped = stop_workloads(store, args.guest, args.kind)
    print(f"stopped {stopped} workload(s) in {args.guest}")
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    names = _names(args)
    store = StateStore(names.state_dir)
    host = store.read() if store.exists() else None
    if host is None:
        raise UsageError(f"no simulated host {names.host!r} (run `judicator-sim up` first)")
    env = environment(names, host)
    if args.json:
        print(json.dumps(env, indent=1, sort_keys=True))
        return 0
    for key, value in env.items():
        if key == "PATH":
            print(f'export PATH={shlex.quote(str(names.state_dir / "bin"))}:"$PATH"')
        else:
            print(f"export {key}={shlex.quote(value)}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    names = _names(args)
    store = StateStore(names.state_dir)
    if not store.exists():
        left = leftovers(names.host) if os.geteuid() == 0 else []
        print(f"host {names.host!r}: down" + (f" (leftovers: {', '.join(left)})" if left else ""))
        return 1
    host = store.read()
    pid = daemon_pid(names.state_dir)
    daemon_alive = pid is not None and alive(pid)
    report: dict[str, Any] = {
        "name": host.name,
        "state_dir": str(names.state_dir),
        "dom0_netns": host.dom0_netns,
        "cpus": host.nr_cpus,
        "online_cpus": host.online_cpus,
        "daemon_pid": pid if daemon_alive else None,
        "domains": [
            {
                "name": d.name,
                "domid": d.domid,
                "netns": d.netns,
                "cgroup": d.cgroup,
                "interfaces": [d.interface_name(v) for v in d.vifs],
                "cpus": [v.cpu for v in d.vcpus if v.online],
                "address": guest_address(names, host, d.name) if d.domid else None,
                "paused": d.paused,
                "cap": d.cap,
                "cpu_seconds": round(d.cpu_time_ns / 1e9, 1),
            }
            for d in host.domains
        ],
        "workloads": [w for w in recorded_workloads(host) if _alive_pid(w.get("pid"))],
    }
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    daemon = f"pid {pid}" if daemon_alive else "NOT RUNNING"
    print(f"host {host.name}: state {names.state_dir}, daemon {daemon}")
    print(f"CPUs {host.nr_cpus}, online {host.online_cpus}, Dom0 netns {host.dom0_netns or '-'}")
    print(f"{'domain':<16} {'domid':>5} {'cpus':<8} {'address':<15} {'vifs':<12} {'cpu s':>8}")
    for d in report["domains"]:
        cpus = ",".join(str(c) for c in d["cpus"])
        flags = " paused" if d["paused"] else ""
        flags += f" cap={d['cap']}" if d["cap"] else ""
        print(
            f"{d['name']:<16} {d['domid']:>5} {cpus:<8} {d['address'] or '-':<15}"
            f" {','.join(d['interfaces']) or '-':<12} {d['cpu_seconds']:>8}{flags}"
        )
    for w in report["workloads"]:
        print(f"workload {w['kind']} in {w['guest']}: pid {w['pid']}")
    return 0


def _alive_pid(pid: object) -> bool:
    return isinstance(pid, int) and alive(pid)


def cmd_down(args: argparse.Namespace) -> int:
    _require_root()
    names = _names(args)
    removed = sweep(names.host)
    left = leftovers(names.host)
    for item in removed:
        print(f"removed {item}")
    if left:
        print(f"still present: {', '.join(left)}", file=sys.stderr)
        return 1
    return 0


def cmd_reboot(args: argparse.Namespace) -> int:
    _require_root()
    names, store, host = _names_of_running(args)
    if host.find_domain(args.guest) is None or args.guest == DOM0_NAME:
        raise UsageError(f"no guest {args.guest!r}")
    domain = reboot_guest(store, names, args.guest)
    print(f"{domain.name} rebooted as domid {domain.domid}")
    return 0


def cmd_cpu(args: argparse.Namespace, online: bool) -> int:
    _require_root()
    names, store, host = _names_of_running(args)
    cpu = args.cpu
    if not 0 <= cpu < host.nr_cpus:
        raise UsageError(f"CPU {cpu} does not exist (0..{host.nr_cpus - 1})")
    if not online and cpu == 0:
        raise UsageError("CPU 0 cannot be taken offline")
    with store.transaction() as state:
        before = sorted(state.online_cpus)
        after = sorted(set(before) | {cpu}) if online else [c for c in before if c != cpu]
        if after == before:
            print(f"CPU {cpu} is already {'online' if online else 'offline'}")
            return 0
        perfc.set_online_cpus(names.state_dir / perfc.STATE_FILE, before, after)
        state.online_cpus = after
        for pool in state.pools:
            if online and pool.name == "Pool-0":
                pool.cpus = sorted(set(pool.cpus) | {cpu})
            elif not online:
                pool.cpus = [c for c in pool.cpus if c != cpu]
    print(f"CPU {cpu} {'online' if online else 'offline'}; online CPUs {after}")
    return 0


# --- argument parsing -----------------------------------------------------------------------


def _cpu_list(text: str) -> list[int]:
    cpus: list[int] = []
    for part in filter(None, text.split(",")):
        first, _, last = part.partition("-")
        try:
            cpus.extend(range(int(first), int(last or first) + 1))
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a CPU list: {text!r}") from None
    return cpus


# --log.level as Prometheus and every Judicator program spell it.
LOG_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="judicator-sim", description="A simulated Xen host for Judicator's tests and demo."
    )
    parser.add_argument("--log.level", dest="log_level", choices=list(LOG_LEVELS), default="warn")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--name", default=DEFAULT_NAME, help="host name (default: %(default)s)")
        return p

    up = command("up", "create the host: Domain-0, guests, counters, the daemon")
    up.add_argument("--cpus", type=int, default=4, help="physical CPUs (default 4, max 256)")
    up.add_argument("--guests", type=int, default=3, help="guests guest1..N (default 3)")
    up.add_argument("--offline-cpus", type=_cpu_list, default=[], help="e.g. 3 or 2-3")
    up.add_argument("--shadow", action="store_true", help="a build with shadow paging counters")
    up.add_argument(
        "--no-perf-counters",
        action="store_true",
        help="a hypervisor without perf counters (xenperf fails with ENOSYS)",
    )
    up.add_argument("--dom0-netns", action="store_true", help="Dom0 in a namespace of its own")
    up.add_argument(
        "--pinning",
        choices=("exclusive", "none"),
        default="exclusive",
        help="exclusive: Domain-0 on CPU 0, guest i on CPU i; none: vCPUs float",
    )
    up.add_argument("--scenario", help="a scenario YAML file (xensim/scenarios/)")
    up.add_argument("--tick", type=float, default=0.1, help="daemon tick in seconds")
    up.add_argument("--seed", type=int, help="seed of the counter model's noise")

    run = command("run", "start a workload inside a guest")
    run.add_argument("guest")
    run.add_argument("kind", choices=workloads.KINDS)
    run.add_argument("--target", help="the guest it talks to")
    run.add_argument("--duration", type=float, default=60.0, help="seconds (default 60)")
    run.add_argument("--rate", type=float)
    run.add_argument("--size", type=int)
    run.add_argument("--threads", type=int)

    stop = command("stop", "stop a guest's workloads (all, or of one kind)")
    stop.add_argument("guest")
    stop.add_argument("kind", nargs="?")

    env = command("env", "print shell exports that put this host's xl, xenperf and stub in use")
    env.add_argument("--json", action="store_true", help="machine-readable")

    status = command("status", "show the host, its domains and workloads")
    status.add_argument("--json", action="store_true", help="machine-readable")

    command("down", "remove everything the host created (also after a crash)")

    reboot = command("reboot", "reboot a guest: new domid, vifs re-created")
    reboot.add_argument("guest")

    for name, verb in (
        ("offline-cpu", "take a physical CPU offline"),
        ("online-cpu", "bring one online"),
    ):
        p = command(name, verb)
        p.add_argument("cpu", type=int)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=LOG_LEVELS[args.log_level], format="judicator-sim: %(levelname)s: %(message)s"
    )
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "up": cmd_up,
        "run": cmd_run,
        "stop": cmd_stop,
        "env": cmd_env,
        "status": cmd_status,
        "down": cmd_down,
        "reboot": cmd_reboot,
        "offline-cpu": lambda a: cmd_cpu(a, online=False),
        "online-cpu": lambda a: cmd_cpu(a, online=True),
    }
    try:
        return handlers[args.command](args)
    except (UsageError, HostError, StateError, cgroups.CgroupError) as error:
        print(f"judicator-sim: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
