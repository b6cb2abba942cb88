"""The published experiment on real KVM guests: l2a ping-floods l2b, Judicator acts.

    python -m kvmlab demo --out kvmlab-output      # make kvmlab-demo

L1 (a KVM host under QEMU's software emulation, kvmlab.vm) runs two real KVM guests and the
product as a KVM host runs it: the exporter with `--platform=kvm` (its direction counters on
the taps) and the remediator with `platform: kvm`; the host runs Prometheus and Alertmanager
with the shipped configuration and rules, reaching L1 through QEMU's forwarded ports. The lab
changes only threshold values (kvmlab/thresholds.yml), never a rule. Phases: a quiet
baseline and an unshaped flood with nothing of Judicator running (KVM's debugfs statistics and
the taps' counters, from which the report's rates come); then the services start and l2a
floods l2b again until a policy fires and the remediator shapes l2a's tap; the flood goes on
shaped; then the remediator's other KVM actions (a cgroup CPU cap, a QMP pause) are exercised
on the victim, quiet by then, through `judicator-kvmctl`, as the remediator's plans call it.

The retry policy: a run that hit an emulation fault (L1 panicked, an L2's QEMU died or stopped
answering: kvmlab.vm.EmulationFault) is run again from a fresh L1, up to RUN_ATTEMPTS runs in
all; every fault is kept in results.json and the report. A failed command, a policy that did
not fire or a wrong measurement is never retried.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from kvmlab.paths import KvmLabPaths
from kvmlab.vm import BRIDGE, EmulationFault, KvmLab, L2Spec, booted, standard_guests
from xenlab.demo import Timeline, host_stack, query_series, throttle_on_device, watch_detection
from xenlab.vm import EXPORTER_PORT, REMEDIATOR_PORT, LabError
from xensim.stack import SHIPPED_REMEDIATOR_CONFIG, Prometheus, wait_until

log = logging.getLogger(__name__)

LAB_THRESHOLDS = Path(__file__).resolve().parent / "thresholds.yml"
EXPORTER_JOB = "kvm"
# Two guests: a third one booting beside them under emulation made the guests' QEMUs die
# silently in 4 of 6 runs (2026-12-02 13:50-14:41), two guests in none of the lab's runs.
ATTACKER, VICTIM = "l2a", "l2b"
# The policies that may shape the flooder: the KVM form and the platform-neutral stock form.
FLOOD_ALERTS = ("KvmNetworkFloodExits", "XenNetworkFloodVif")
# KVM's per-VM statistics the report reads (debugfs /sys/kernel/debug/kvm/<pid>-<fd>/).
STATS = ("exits", "irq_injections", "halt_wakeup", "halt_exits", "io_exits")
TAP_COUNTERS = ("rx_packets", "rx_bytes", "tx_packets", "tx_bytes")
# The shipped policy shapes to 1mbit. Nested, a ping flood is bound by its cost per ping (15 to
# 170 pings/s), not per byte: 56-byte pings send ~130 kbit/s at most, under the rate, and tc
# would have nothing to cut; 1400-byte ones 170-460 kbit/s (measured 2026-12-02 14:11-14:17).
# Larger pings at the usual 1500-byte MTU go out as IP fragments, and 4000-byte ones (three
# fragments each) killed the victim's QEMU within 30 s (13:53, the first run: its process gone,
# nothing logged), as small-packet UDP floods did in the lab probe: the packet rate, not the
# bytes, is what the nested emulation does not survive. So, as the Xen lab does, the guests'
# link takes jumbo frames (MTU 9000, as many data centres do) and each ping is one packet of
# 8028 bytes, under the shaper's 32 KB burst.
FLOOD_PAYLOAD_BYTES = 8000
JUMBO_MTU = 9000
FLOOD_COUNT = 1_000_000
FLOOD_DEADLINE_SECONDS = 360
BASELINE_SECONDS = 20.0
DETECT_TIMEOUT_SECONDS = 240.0
SERVICES_TIMEOUT_SECONDS = 300.0
SHAPED_SECONDS = 20.0
POLL_SECONDS = 3.0
FLOOD_START_TIMEOUT_SECONDS = 30.0
FLOOD_START_PACKETS = 50
# As the Xen lab (xenlab.demo), the shipped 1 s scrape is too fast for an exporter under
# emulation. 2 s was too fast here too: L1's two emulated vCPUs ran three guests, the
# exporter and the remediator, and scrapes took 1.4-2 s (2026-12-02 14:13, load 7: half of
# them timed out at 2 s, and the guests' flood fell from 40 to 15 pings/s while the exporter
# ran). At 3 s each 10 s rate window still holds three samples.
SCRAPE_INTERVAL = "3s"
EXPORTER_FLAGS = (
    "--platform=kvm",
    "--collector.flowdirection",
    "--command.timeout=4.5",
    "--scrape.timeout=5",
)
KVMCTL = "/usr/bin/judicator-kvmctl"
KVMCTL_SCRIPT = '#!/bin/sh\nexec python3 -m kvmtools.ctl "$@"\n'
RUN_ATTEMPTS = 3


# --- measuring ----------------------------------------------------------------------------


def snapshot(lab: KvmLab, dirs: Mapping[str, str]) -> dict[str, Any]:
    """KVM's statistics of every guest's VM and its tap's counters, at one moment."""
    return lab.snapshot(dirs, STATS, TAP_COUNTERS)


def rates(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """Per second between two snapshots, per guest: KVM's statistics and what it sent (its
    tap's rx) and received (its tap's tx), packets and kbit."""
    seconds = after["at"] - before["at"]
    per_guest: dict[str, dict[str, float]] = {}
    for name in after["stats"]:
        row = {
            stat: (after["stats"][name][stat] - before["stats"][name][stat]) / seconds
            for stat in after["stats"][name]
            if stat in before["stats"][name]
        }
        tap = {k: after["taps"][name][k] - before["taps"][name][k] for k in TAP_COUNTERS}
        row["sent_pps"] = tap["rx_packets"] / seconds
        row["sent_kbit_s"] = tap["rx_bytes"] * 8 / 1000 / seconds
        row["received_pps"] = tap["tx_packets"] / seconds
        row["received_kbit_s"] = tap["tx_bytes"] * 8 / 1000 / seconds
        per_guest[name] = {k: round(v, 1) for k, v in row.items()}
    return {"seconds": round(seconds, 1), "guests": per_guest}


def enable_jumbo_frames(lab: KvmLab) -> int:
    """MTU JUMBO_MTU on the guests' link: the bridge, every tap and every guest's eth0."""
    for dev in (BRIDGE, *(g.tap for g in lab.guests)):
        lab.run("ip", "link", "set", "dev", dev, "mtu", str(JUMBO_MTU)).check(f"mtu of {dev}")
    for guest in lab.guests:
        reply = lab.l2_command(guest.name, "mtu", str(JUMBO_MTU)).strip()
        if reply.splitlines()[-1:] != [str(JUMBO_MTU)]:
            raise LabError(f"{guest.name}: eth0 refused MTU {JUMBO_MTU}: {reply}")
    return JUMBO_MTU


def _sent_packets(lab: KvmLab, guest: L2Spec) -> int:
    path = f"/sys/class/net/{guest.tap}/statistics/rx_packets"  # a tap's rx: what its guest sent
    return int(lab.run("cat", path).check(f"{guest.tap} rx_packets").stdout.strip())


def start_flood(lab: KvmLab) -> None:
    """l2a starts its flood at l2b; fails at once (with the guest's ping output) unless its tap
    carries FLOOD_START_PACKETS more packets within FLOOD_START_TIMEOUT_SECONDS."""
    attacker = lab.guest(ATTACKER)
    before = _sent_packets(lab, attacker)
    reply = lab.l2_command(ATTACKER, "pingflood", lab.guest(VICTIM).ip, str(FLOOD_COUNT),
                           str(FLOOD_DEADLINE_SECONDS), str(FLOOD_PAYLOAD_BYTES))  # fmt: skip
    log.info("flood: %s", reply.strip())
    deadline = time.monotonic() + FLOOD_START_TIMEOUT_SECONDS
    while _sent_packets(lab, attacker) - before < FLOOD_START_PACKETS:
        if time.monotonic() > deadline:
            raise LabError(f"the flood did not start: {lab.l2_command(ATTACKER, 'result')}")
        time.sleep(1)


def stop_flood(lab: KvmLab) -> None:
    lab.l2_command(ATTACKER, "stop")


def measure_unmanaged(lab: KvmLab, dirs: Mapping[str, str]) -> dict[str, Any]:
    """A quiet baseline, then the flood unshaped, with nothing of Judicator running in L1."""
    base0 = snapshot(lab, dirs)
    time.sleep(BASELINE_SECONDS)
    base1 = snapshot(lab, dirs)
    lab.check_alive("baseline")
    start_flood(lab)
    time.sleep(3)  # past the ping process's start-up
    flood0 = snapshot(lab, dirs)
    time.sleep(BASELINE_SECONDS)
    flood1 = snapshot(lab, dirs)
    stop_flood(lab)
    lab.check_alive("unshaped flood")
    return {"baseline": rates(base0, base1), "flood": rates(flood0, flood1)}


# --- the product in L1 ----------------------------------------------------------------------


def remediator_config(instance: str) -> dict[str, Any]:
    settings: dict[str, Any] = yaml.safe_load(SHIPPED_REMEDIATOR_CONFIG.read_text())
    settings["platform"] = "kvm"
    settings["instances"] = [instance]
    settings["state_path"] = "/var/lib/kvmlab/throttles.sqlite"
    settings.setdefault("auth", {})["bearer_token_file"] = "/etc/kvmlab/remediator.token"
    settings["paths"] = {"kvmctl": KVMCTL, "tc": "/usr/bin/tc", "ip": "/usr/bin/ip",
                         "sysfs": "/sys", "procfs": "/proc",
                         "debugfs": "/sys/kernel/debug"}  # fmt: skip
    return settings


def start_services(lab: KvmLab, token: str) -> None:
    """The exporter (--platform=kvm) and the remediator (platform: kvm) in L1, as deployed."""
    instance = f"127.0.0.1:{lab.state.exporter_port}"
    lab.run("mkdir", "-p", "/etc/kvmlab", "/var/lib/kvmlab").check("mkdir")
    lab.write_file(KVMCTL, KVMCTL_SCRIPT)
    lab.run("chmod", "755", KVMCTL).check("chmod kvmctl")
    lab.write_file("/etc/kvmlab/remediator.token", token + "\n")
    lab.run("chmod", "600", "/etc/kvmlab/remediator.token").check("chmod token")
    lab.write_file("/etc/kvmlab/remediator.yml", yaml.safe_dump(remediator_config(instance)))
    listen = f"--web.listen-address=0.0.0.0:{EXPORTER_PORT}"
    lab.spawn("exporter", ["python3", "-m", "exporter", listen, *EXPORTER_FLAGS])
    lab.spawn("remediator", ["python3", "-m", "remediator",
                             "--config.file=/etc/kvmlab/remediator.yml", "serve",
                             f"--web.listen-address=0.0.0.0:{REMEDIATOR_PORT}"])  # fmt: skip


def exercise_kvmctl(lab: KvmLab, guest: str) -> dict[str, Any]:
    """The remediator's other KVM actions on `guest`, through `judicator-kvmctl` as its plans
    call it: a CPU cap (cpu.max of the VM's cgroup) and a pause (QMP stop / cont)."""
    pid = str(lab.l2_pid(guest))
    who = ("--pid", pid, "--name", guest)
    scope = lab.guest(guest).scope
    results: dict[str, Any] = {}
    lab.run(KVMCTL, "cap", *who, "25").check("judicator-kvmctl cap 25")
    results["cpu_max_after_cap"] = lab.run("cat", f"{scope}/cpu.max").stdout.strip()
    lab.run(KVMCTL, "cap", *who, "0").check("judicator-kvmctl cap 0")
    results["cpu_max_after_uncap"] = lab.run("cat", f"{scope}/cpu.max").stdout.strip()
    lab.run(KVMCTL, "pause", *who).check("judicator-kvmctl pause")
    results["listed_after_pause"] = _listed_paused(lab)
    lab.run(KVMCTL, "unpause", *who).check("judicator-kvmctl unpause")
    results["listed_after_unpause"] = _listed_paused(lab)
    results["answers_after_unpause"] = lab.l2_command(guest, "up", timeout=30).strip()
    return results


def _listed_paused(lab: KvmLab) -> Any:
    listing = json.loads(lab.run(KVMCTL, "list").check("judicator-kvmctl list").stdout)
    return {vm["name"]: vm.get("paused") for vm in listing}


# --- the run ------------------------------------------------------------------------------


FIGURE_QUERIES = {
    "sent_kbit_s": "instance_domain:domain_network_transmit_bytes:rate10s * 8 / 1000",
    "sent_packets": "instance_domain:domain_network_transmit_packets:rate10s",
    "irq_injections": "instance_domain:kvm_vm_irq_injections:rate10s",
    "halt_wakeups": "instance_domain:kvm_vm_halt_wakeup:rate10s",
    "initiated": "instance_domain:domain_network_transmit_initiated_packets:rate10s",
    "scrape_duration": f'scrape_duration_seconds{{job="{EXPORTER_JOB}"}}',
}


def _experiment(
    lab: KvmLab, prometheus: Prometheus, dirs: Mapping[str, str], results: dict[str, Any]
) -> None:
    """Phase 2, its findings written into `results` as they come (a failure keeps them)."""
    wait_until(
        lambda: [value for _, value in prometheus.query(
            f'min(xen_exporter_collector_success{{job="{EXPORTER_JOB}"}})')] == [1.0],
        timeout=SERVICES_TIMEOUT_SECONDS, what="every collector of the lab's exporter answering",
        interval=POLL_SECONDS,
    )  # fmt: skip
    results["metrics"] = lab.run(
        "wget", "-q", "-O", "-", f"http://127.0.0.1:{EXPORTER_PORT}/metrics"
    ).stdout
    timeline = Timeline(flood_start=time.time())
    start_flood(lab)
    pre = snapshot(lab, dirs)
    try:
        watch_detection(lab, prometheus, lab.guest(ATTACKER).tap, timeline, domain=ATTACKER,
                        alerts=FLOOD_ALERTS, timeout=DETECT_TIMEOUT_SECONDS,
                        check=lab.check_l1)  # fmt: skip
    finally:
        results["figure_series"] = query_series(
            prometheus, FIGURE_QUERIES, timeline.flood_start - 60, step=2
        )
        results["timeline"] = timeline.summary()
    results["until_shaped"] = rates(pre, snapshot(lab, dirs))
    time.sleep(3)
    shaped0 = snapshot(lab, dirs)
    time.sleep(SHAPED_SECONDS)
    results["shaped"] = rates(shaped0, snapshot(lab, dirs))
    stop_flood(lab)
    lab.check_alive("shaped flood")
    results["victim_shaped_by"] = throttle_on_device(lab, lab.guest(VICTIM).tap)
    results["tc"] = {
        "qdiscs": lab.run("tc", "qdisc", "show").stdout,
        "ingress_filters": lab.run(
            "tc", "filter", "show", "dev", lab.guest(ATTACKER).tap, "parent", "ffff:"
        ).stdout,
    }
    results["alerts"] = prometheus.alerts()
    results["figure_series"] = query_series(
        prometheus, FIGURE_QUERIES, timeline.flood_start - 60, step=2
    )


def run_once(
    paths: KvmLabPaths, out: Path, token: str, results: dict[str, Any], l1_pids: list[int]
) -> None:
    """One run: boot, measure, the experiment, the kvmctl actions, written into `results` as
    they come (L1's QEMU pid into `l1_pids`); L1 stopped whatever happens. EmulationFault
    propagates (the caller retries); the report is the caller's."""
    started = time.monotonic()
    with booted(paths, guests=standard_guests(2)) as lab:
        l1_pids.append(lab.state.pid)
        results["timings"] = dict(lab.timings)
        results["l2_pids"] = {g.name: lab.l2_pid(g.name) for g in lab.guests}
        dirs = {}
        for guest in lab.guests:
            found = lab.stats_dir(guest.name)
            if found is None:
                raise LabError(f"no KVM statistics in debugfs for {guest.name}")
            dirs[guest.name] = found
        results["mtu"] = enable_jumbo_frames(lab)
        lab.l2_command(ATTACKER, "ping", lab.guest(VICTIM).ip, "3")
        results["windows"] = measure_unmanaged(lab, dirs)
        workdir = Path(tempfile.mkdtemp(prefix="kvmlab-demo-"))
        try:
            start_services(lab, token)
            with host_stack(lab.state, workdir, token, thresholds=LAB_THRESHOLDS,
                            exporter_job=EXPORTER_JOB,
                            scrape_interval=SCRAPE_INTERVAL) as prometheus:  # fmt: skip
                _experiment(lab, prometheus, dirs, results)
            try:
                results["kvmctl_actions"] = exercise_kvmctl(lab, VICTIM)
            except (LabError, ValueError) as error:
                results["kvmctl_error"] = f"{type(error).__name__}: {error}"
        finally:
            for name in ("exporter", "remediator"):
                with contextlib.suppress(OSError, LabError, ValueError):
                    (out / f"l1-{name}.log").write_text(lab.spawned_log(name))
            for name in ("prometheus.log", "alertmanager.log"):
                with contextlib.suppress(OSError):
                    shutil.copyfile(workdir / name, out / name)
            shutil.rmtree(workdir, ignore_errors=True)
    results["run_seconds"] = round(time.monotonic() - started, 1)


def run_demo(paths: KvmLabPaths, out: Path, attempts: int = RUN_ATTEMPTS) -> dict[str, Any]:
    """The experiment, retried from a fresh L1 after an emulation fault (module docstring);
    results.json, metrics.txt, report.md and the figure in `out`, also when it failed."""
    out.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(16)
    faults: list[str] = []
    l1_pids: list[int] = []
    results: dict[str, Any] = {
        "host_load": {"start": os.getloadavg()},
        "faults": faults,
        "l1_pids": l1_pids,
    }
    started = time.monotonic()
    run: dict[str, Any] = {}
    try:
        for attempt in range(1, attempts + 1):
            results["runs"] = attempt
            run = {}
            try:
                run_once(paths, out, token, run, l1_pids)
                break
            except EmulationFault as fault:
                run.clear()  # a faulted run's findings are not the experiment's
                faults.append(f"run {attempt}/{attempts}: {str(fault)[:3000]}")
                log.warning("emulation fault in run %d/%d: %s", attempt, attempts, fault)
                if attempt == attempts:
                    raise
    except (LabError, TimeoutError, OSError) as error:
        log.error("the experiment failed: %s", error)
        results["error"] = f"{type(error).__name__}: {error}"
    finally:
        results.update(run)
        results["retries"] = results.get("runs", 1) - 1
        results["total_seconds"] = round(time.monotonic() - started, 1)
        results["host_load"]["end"] = os.getloadavg()
        results["thresholds"] = yaml.safe_load(LAB_THRESHOLDS.read_text())
        results["flood_payload_bytes"] = FLOOD_PAYLOAD_BYTES
        metrics = results.pop("metrics", None)
        if metrics:
            (out / "metrics.txt").write_text(metrics)
        (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
        from kvmlab.report import write_report

        write_report(results, out)
    return results
