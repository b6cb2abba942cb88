"""The published experiment on the real hypervisor: guest1 ping-floods guest2, Judicator acts.

    python -m xenlab demo --out lab-output      # make lab-demo

Dom0 (real Xen 4.17 with perf counters, under QEMU) runs the real exporter (libxenctrl reader;
a second one with the xenperf reader is scraped once to compare) and the remediator; the host
runs Prometheus and Alertmanager with the shipped configuration and rules, reaching Dom0
through QEMU's forwarded ports. The lab changes only threshold values (xenlab/thresholds.yml),
never a rule. Phases: a quiet baseline; guest1 floods guest2 (iputils `ping -f`) until the
policy fires and the remediator shapes guest1's vif; the flood goes on shaped; then
`xl sched-credit2 -c` and `xl pause` are exercised on a real domain through the same argv
builders the remediator uses. Every phase is framed by snapshots of `xenperf -f`, `xl list`,
`xl vcpu-list` and the vifs' counters, from which the report and the calibration are computed
(xenlab.measure). Report (report.md, results.json, figure) in --out.
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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from remediator.host import FILTER_PREF, parse_ingress_filters, parse_qdiscs_by_dev
from xenlab.measure import Snapshot, take_snapshot, window
from xenlab.paths import REPO_ROOT, LabPaths
from xenlab.vm import (
    EXPORTER_PORT,
    REMEDIATOR_PORT,
    AgentClient,
    Lab,
    LabError,
    LabState,
    Result,
    booted,
    standard_guests,
)
from xensim.stack import (
    SHIPPED_ALERTMANAGER_CONFIG,
    SHIPPED_PROMETHEUS_CONFIG,
    SHIPPED_REMEDIATOR_CONFIG,
    SHIPPED_RULES_DIR,
    Prometheus,
    render_alertmanager_config,
    render_prometheus_config,
    run_alertmanager,
    run_prometheus,
    wait_until,
)
from xentools.xl import parse_sched, pause_argv, set_cap_argv, unpause_argv

log = logging.getLogger(__name__)

LAB_THRESHOLDS = Path(__file__).resolve().parent / "thresholds.yml"
SECOND_EXPORTER_PORT = 10172
ATTACKER, VICTIM, IDLE = "guest1", "guest2", "guest3"
FLOOD_ALERTS = ("XenNetworkFloodPerfc", "XenNetworkFloodVif")
# The shipped policy shapes to 1mbit, and under emulation a ping flood is bound by its cost per
# ping, not per byte (measured 2026-12-02, quiet host, pings of 1400 / 8000 / 16000 bytes:
# 0.6 / 2.9 / 4.9 Mbit/s): 1400-byte pings fit under the shaping rate, so tc would have nothing
# to cut. Larger pings at the usual 1500-byte MTU go out as IP fragments (which the direction
# counters count apart); the lab gives its guests' link jumbo frames (MTU 9000, as many data
# centres do) so that each ping is one packet of 8028 bytes, about 3 Mbit/s.
FLOOD_PAYLOAD_BYTES = 8000
JUMBO_MTU = 9000
FLOOD_DEADLINE_SECONDS = 300
BASELINE_SECONDS = 30.0
DETECT_TIMEOUT_SECONDS = 300.0
TARGET_TIMEOUT_SECONDS = 300.0
SHAPED_SECONDS = 30.0
# The shipped 1 s scrape is too fast for a Dom0 under emulation (the direction counters' `tc`
# run alone takes ~2.5 s there), 5 s too slow for the shipped rules' 10 s rate windows: while a
# scrape is in flight the window holds one sample, the rate vanishes and every `for:` restarts
# (measured 2026-12-02: the constant flood form stayed pending for two minutes with 5 s scrapes
# answered in ~2.6 s; only the pulsing form, a ratio of counts, fired). At 2 s the exporter answers
# within its 1.6 s budget (the tc reading goes on in the background and the newest finished one
# is served) and a 10 s window always holds four samples or more.
SCRAPE_INTERVAL = "2s"
# The direction counters, as deployed: the flood policies tell sender from answerer by them.
EXPORTER_FLAGS = (
    "--command.timeout=4.5",
    "--scrape.timeout=5",
    "--collector.flowdirection",
)
POLL_SECONDS = 3.0
# The retry policy (xenlab.vm.booted): a start that fails under emulation (QEMU dies, Dom0 or a
# guest does not come up in time) is retried once from a fresh QEMU, and the report and
# results.json list every failed start. The experiment itself is never retried.
BOOT_ATTEMPTS = 2


def render_thresholds(shipped: Path, overrides: Mapping[str, Mapping[str, float]]) -> str:
    """The shipped thresholds.yml with the `expr: vector(N)` of each overridden signal replaced."""
    settings = yaml.safe_load(shipped.read_text())
    seen = set()
    for group in settings["groups"]:
        for rule in group["rules"]:
            labels = rule.get("labels", {})
            value = overrides.get(labels.get("policy", ""), {}).get(labels.get("signal", ""))
            if value is not None:
                rule["expr"] = f"vector({value:g})"
                seen.add((labels["policy"], labels["signal"]))
    wanted = {(p, s) for p, signals in overrides.items() for s in signals}
    if wanted - seen:
        raise LabError(f"lab thresholds name unknown signals: {sorted(wanted - seen)}")
    return yaml.safe_dump(settings, sort_keys=False)


def rules_dir(into: Path, thresholds: Path = LAB_THRESHOLDS) -> Path:
    """A copy of the shipped rules with a lab's threshold values (`thresholds`)."""
    target = into / "rules"
    shutil.copytree(SHIPPED_RULES_DIR, target)
    overrides = yaml.safe_load(thresholds.read_text())
    text = render_thresholds(SHIPPED_RULES_DIR / "thresholds.yml", overrides)
    (target / "thresholds.yml").write_text(text)
    return target


def remediator_config(instance: str) -> dict[str, Any]:
    settings: dict[str, Any] = yaml.safe_load(SHIPPED_REMEDIATOR_CONFIG.read_text())
    settings["instances"] = [instance]
    settings["state_path"] = "/var/lib/xenlab/throttles.sqlite"
    settings.setdefault("auth", {})["bearer_token_file"] = "/etc/xenlab/remediator.token"
    settings["paths"] = {"xl": "/usr/sbin/xl", "tc": "/usr/bin/tc", "ip": "/usr/bin/ip",
                         "sysfs": "/sys"}  # fmt: skip
    return settings


def start_dom0_services(lab: Lab, token: str) -> None:
    instance = f"127.0.0.1:{lab.state.exporter_port}"
    lab.write_file("/etc/xenlab/remediator.token", token + "\n")
    lab.run("chmod", "600", "/etc/xenlab/remediator.token").check("chmod token")
    lab.write_file("/etc/xenlab/remediator.yml", yaml.safe_dump(remediator_config(instance)))
    common = ["--xl.path=/usr/sbin/xl", "--xenperf.path=/usr/sbin/xenperf", "--path.sysfs=/sys",
              *EXPORTER_FLAGS]  # fmt: skip
    lab.spawn("exporter", ["python3", "-m", "exporter", f"--web.listen-address=0.0.0.0:"
              f"{EXPORTER_PORT}", "--perfc.reader=libxenctrl", *common])  # fmt: skip
    lab.spawn("remediator", ["python3", "-m", "remediator", "--config.file="
              "/etc/xenlab/remediator.yml", "serve",
              f"--web.listen-address=0.0.0.0:{REMEDIATOR_PORT}"])  # fmt: skip


@contextlib.contextmanager
def host_stack(
    state: LabState,
    workdir: Path,
    token: str,
    *,
    thresholds: Path = LAB_THRESHOLDS,
    exporter_job: str = "xen",
    scrape_interval: str = SCRAPE_INTERVAL,
) -> Iterator[Prometheus]:
    """Prometheus and Alertmanager on the host, with the shipped configuration and rules (a
    lab's threshold values), scraping the lab's exporter and remediator through its forwarded
    ports; `exporter_job` names the shipped exporter job (`xen`) as the lab's platform."""
    token_file = workdir / "remediator.token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    rules = rules_dir(workdir, thresholds)
    prometheus_settings = render_prometheus_config(
        yaml.safe_load(SHIPPED_PROMETHEUS_CONFIG.read_text()),
        targets={
            "xen": f"127.0.0.1:{state.exporter_port}",
            "judicator-remediator": f"127.0.0.1:{state.remediator_port}",
            "prometheus": "{listen}",
        },
        rules_dir=rules,
        credentials_files={"judicator-remediator": token_file},
    )
    for job in prometheus_settings["scrape_configs"]:
        if job["job_name"] == "xen":
            job["job_name"] = exporter_job
    prometheus_settings["global"]["scrape_interval"] = scrape_interval
    prometheus_settings["global"]["scrape_timeout"] = scrape_interval
    alertmanager_settings = render_alertmanager_config(
        yaml.safe_load(SHIPPED_ALERTMANAGER_CONFIG.read_text()),
        remediator_url=f"http://127.0.0.1:{state.remediator_port}/alerts",
        token_file="{workdir}/token",
    )
    with run_alertmanager(
        yaml.safe_dump(alertmanager_settings, sort_keys=False),
        files={"token": token + "\n"},
        log_path=workdir / "alertmanager.log",
    ) as alertmanager:
        prometheus_text = yaml.safe_dump(prometheus_settings, sort_keys=False)
        with run_prometheus(
            prometheus_text, alertmanager=alertmanager.address,
            log_path=workdir / "prometheus.log",
        ) as prometheus:  # fmt: skip
            yield prometheus


@dataclass
class Timeline:
    """When a flood's alert went pending and firing and its sender was shaped (time.time())."""

    flood_start: float = 0.0
    pending: float | None = None
    firing: float | None = None
    shaped: float | None = None
    alert: str | None = None
    shaper: str | None = None

    def summary(self) -> dict[str, Any]:
        """For results.json: each moment in seconds after the flood started."""
        return {
            "flood_start": self.flood_start,
            "alert": self.alert,
            "pending_after_s": _after(self.pending, self.flood_start),
            "firing_after_s": _after(self.firing, self.flood_start),
            "shaped_after_s": _after(self.shaped, self.flood_start),
            "shaper": self.shaper,
        }


SHAPING_KINDS = ("tbf", "htb")


def remediator_shaping(filters: str, qdiscs: str) -> str | None:
    """The device the remediator's own redirect on a vif leads to, if that device shapes.

    `filters` is `tc -j filter show dev VIF parent ffff:`, `qdiscs` is `tc -j qdisc show` (every
    device). An ingress qdisc alone proves nothing: the exporter's direction counters sit on
    one too, and count and pass every packet. The remediator's chain is its mirred redirect at
    its own priority (remediator.host.FILTER_PREF) to a device whose qdisc shapes (tbf or htb):
    an ifb per vif, or one per domain; either passes.
    """
    redirects, _ = parse_ingress_filters(filters)
    by_dev = parse_qdiscs_by_dev(qdiscs)
    for redirect in redirects:
        kinds = {q.kind for q in by_dev.get(redirect.to_dev, ())}
        if redirect.pref == FILTER_PREF and kinds & set(SHAPING_KINDS):
            return redirect.to_dev
    return None


def throttle_on_device(lab: AgentClient, device: str) -> str | None:
    """The device the remediator's redirect on a guest's `device` (a vif, a tap) leads to, if
    that device shapes; read in the lab's host."""
    filters = lab.run("tc", "-j", "filter", "show", "dev", device, "parent", "ffff:").stdout
    if not filters.strip() or filters.strip() == "[]":
        return None
    return remediator_shaping(filters, lab.run("tc", "-j", "qdisc", "show").stdout)


def watch_detection(
    lab: AgentClient,
    prometheus: Prometheus,
    device: str,
    timeline: Timeline,
    *,
    domain: str = ATTACKER,
    alerts: Sequence[str] = FLOOD_ALERTS,
    timeout: float = DETECT_TIMEOUT_SECONDS,
    check: Callable[[], None] | None = None,
) -> None:
    """Fills `timeline` from Prometheus's alerts on `domain` until the remediator's shaping
    shows on its `device`; LabError after `timeout`. `check` runs at every look (a lab's
    liveness check, which raises when the lab died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = time.time()
        for alert in prometheus.alerts():
            labels = alert["labels"]
            if labels.get("alertname") in alerts and labels.get("domain") == domain:
                timeline.alert = timeline.alert or labels["alertname"]
                if timeline.pending is None:
                    timeline.pending = now
                if alert["state"] == "firing" and timeline.firing is None:
                    timeline.firing = now
        shaper = throttle_on_device(lab, device)
        if shaper is not None:
            timeline.shaped = time.time()
            timeline.shaper = shaper
            return
        if check is not None:
            check()
        time.sleep(POLL_SECONDS)
    raise LabError(f"no throttle on {device} within {timeout:.0f}s: {timeline}")


def exercise_xl_actions(lab: Lab) -> dict[str, Any]:
    """`xl sched-credit2 -c` and `xl pause` on a real domain, through xentools' argv builders."""
    results: dict[str, Any] = {}
    lab.run(*set_cap_argv("xl", "credit2", IDLE, 25)).check("xl sched-credit2 -c 25")
    rows = parse_sched(lab.xl("sched-credit2", "-d", IDLE).check("xl sched-credit2 -d").stdout)
    results["cap_after_set"] = rows[0].cap if rows else None
    lab.run(*set_cap_argv("xl", "credit2", IDLE, 0)).check("xl sched-credit2 -c 0")
    lab.run(*pause_argv("xl", IDLE)).check("xl pause")
    listing = lab.xl("list", IDLE).check("xl list").stdout
    results["state_after_pause"] = listing.splitlines()[-1].split()[4]
    lab.run(*unpause_argv("xl", IDLE)).check("xl unpause")
    listing = lab.xl("list", IDLE).check("xl list").stdout
    results["state_after_unpause"] = listing.splitlines()[-1].split()[4]
    return results


WORKLOAD_SECONDS = 10.0
MEMORY_MIB = 24
DISK_PASS_MIB = 8  # written then read per pass, of the guest's 16 MiB disk


def measure_workloads(lab: Lab, vifs: Mapping[str, str]) -> dict[str, Any]:
    """The simulated host's other workload kinds, each WORKLOAD_SECONDS in a real guest: guest3
    (never shaped) is the client of guest2's web server and TCP and UDP sinks, burns its CPU,
    takes memory, reads and writes its disk. One window of counters each, framed by snapshots.
    The UDP flood comes last: the policies may shape guest3 for it."""
    target = lab.guest(VICTIM).ip
    seconds = str(int(WORKLOAD_SECONDS))
    lab.guest_command(VICTIM, "serve", str(int(6 * WORKLOAD_SECONDS + 60)))
    runs = {
        "web": ("web", target, seconds),
        "bulk": ("bulk", target, seconds),
        "cpu": ("cpu", seconds),
        "memory": ("memory", str(MEMORY_MIB), seconds),
        "disk": ("disk", str(DISK_PASS_MIB), seconds),
        "udpflood": ("udpflood", target, seconds),
    }
    vbds = {IDLE: lab.vbd(IDLE)}
    windows = {}
    for name, words in runs.items():
        before = take_snapshot(lab, vifs, vbds)
        log.info("workload %s: %s", name, lab.guest_command(IDLE, *words).strip())
        time.sleep(WORKLOAD_SECONDS)
        windows[name] = window(before, take_snapshot(lab, vifs, vbds), vifs)
        time.sleep(2)  # what it left in flight
    for name, guest in (("udpflood", IDLE), ("udpsink", VICTIM), ("disk", IDLE)):
        log.info("%s: %s", name, lab.guest_command(guest, "log", name).strip())
    return windows


def run_demo(paths: LabPaths, out: Path, fixtures: Path | None = None) -> dict[str, Any]:
    """The experiment; with `fixtures`, the real fixtures are captured first (same boot).

    Phase 1 measures with nothing of Judicator running (a quiet Dom0: clean counters for the
    calibration): a quiet baseline, then an unthrottled flood. Phase 2 starts the exporter,
    the remediator, Prometheus and Alertmanager and floods again until the policy acts. The
    report is written whatever phase 2 achieved; its error, if any, is in results["error"].
    """
    out.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(16)
    guests = standard_guests(3)
    started = time.monotonic()
    # The host's load average at the start and the end: emulation slows down with it, and a
    # run on a busy machine is not the same experiment (docs/lab.md, "Timings").
    results: dict[str, Any] = {
        "guests": [g.name for g in guests],
        "windows": {},
        "host_load": {"start": os.getloadavg()},
    }
    failed_boots: list[str] = []
    results["failed_boots"] = failed_boots
    with booted(
        paths, guests=guests, hypervisor="perfc", attempts=BOOT_ATTEMPTS, failed_boots=failed_boots
    ) as lab:
        results["boot_seconds"] = time.monotonic() - started
        (out / "xl-info.txt").write_text(lab.xl("info").stdout)
        if fixtures is not None:
            from xenlab.capture import capture_perfc

            capture_perfc(lab, fixtures)
        vifs = {name: lab.vif(name) for name in (ATTACKER, VICTIM, IDLE)}
        results["vifs"] = vifs
        results["mtu"] = enable_jumbo_frames(lab, vifs)
        results["flood_payload_bytes"] = FLOOD_PAYLOAD_BYTES
        results["domain_cpus"] = {g.name: g.cpu for g in guests}
        lab.guest_command(ATTACKER, "ping", lab.guest(VICTIM).ip, "3")
        results["windows"].update(measure_flood(lab, vifs, out))
        workdir = Path(tempfile.mkdtemp(prefix="xenlab-demo-"))
        try:
            start_dom0_services(lab, token)
            with host_stack(lab.state, workdir, token) as prometheus:
                results.update(_experiment(lab, prometheus, vifs, out, results["windows"]))
        except (LabError, TimeoutError, OSError) as error:
            log.error("phase 2 (Judicator against the lab) failed: %s", error)
            results["error"] = f"{type(error).__name__}: {error}"
        finally:
            for name in ("exporter", "exporter-xenperf", "remediator"):
                with contextlib.suppress(OSError, LabError, ValueError):
                    (out / f"dom0-{name}.log").write_text(lab.spawned_log(name))
            for name in ("prometheus.log", "alertmanager.log"):
                with contextlib.suppress(OSError):
                    shutil.copyfile(workdir / name, out / name)
            shutil.rmtree(workdir, ignore_errors=True)
            with contextlib.suppress(LabError, OSError, ValueError, IndexError):
                results["xl_actions"] = exercise_xl_actions(lab)
            try:
                results["workloads"] = measure_workloads(lab, vifs)
            except (LabError, OSError, ValueError) as error:
                results["workloads_error"] = f"{type(error).__name__}: {error}"
    results["total_seconds"] = time.monotonic() - started
    results["host_load"]["end"] = os.getloadavg()
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    from xenlab.report import write_report

    write_report(results, out)
    return results


def enable_jumbo_frames(lab: Lab, vifs: Mapping[str, str]) -> int:
    """MTU JUMBO_MTU on the guests' link: the bridge, every vif (netback allows it once its
    frontend offered scatter-gather, so after the guests are up) and every guest's eth0."""
    for dev in ("xenbr0", *vifs.values()):
        lab.run("ip", "link", "set", "dev", dev, "mtu", str(JUMBO_MTU)).check(f"mtu of {dev}")
    for guest in vifs:
        reply = lab.guest_command(guest, "mtu", str(JUMBO_MTU)).strip()
        if reply.splitlines()[-1:] != [str(JUMBO_MTU)]:
            raise LabError(f"{guest}: eth0 refused MTU {JUMBO_MTU}: {reply}")
    return JUMBO_MTU


FLOOD_START_TIMEOUT_SECONDS = 30.0
FLOOD_START_PACKETS = 50


def _sent_packets(lab: Lab, vif: str) -> int:
    # a vif's rx is what its guest sent
    path = f"/sys/class/net/{vif}/statistics/rx_packets"
    return int(lab.run("cat", path).check(f"{vif} rx_packets").stdout.strip())


def start_flood(lab: Lab, vif: str) -> None:
    """guest1 starts its flood at guest2; fails at once (with the guest's ping output) unless
    its vif carries FLOOD_START_PACKETS more packets within FLOOD_START_TIMEOUT_SECONDS."""
    before = _sent_packets(lab, vif)
    reply = lab.guest_command(ATTACKER, "pingflood", lab.guest(VICTIM).ip, "1000000",
                              str(FLOOD_DEADLINE_SECONDS), str(FLOOD_PAYLOAD_BYTES))  # fmt: skip
    log.info("flood: %s", reply.strip())
    deadline = time.monotonic() + FLOOD_START_TIMEOUT_SECONDS
    while _sent_packets(lab, vif) - before < FLOOD_START_PACKETS:
        if time.monotonic() > deadline:
            output = lab.guest_command(ATTACKER, "result")
            raise LabError(f"the flood did not start on {vif}; the guest's ping said: {output}")
        time.sleep(1)


def measure_flood(lab: Lab, vifs: Mapping[str, str], out: Path) -> dict[str, Any]:
    """Baseline and unthrottled flood windows with nothing else running in Dom0."""
    snaps: dict[str, Snapshot] = {}
    snaps["base0"] = take_snapshot(lab, vifs)
    time.sleep(BASELINE_SECONDS)
    snaps["base1"] = take_snapshot(lab, vifs)
    start_flood(lab, vifs[ATTACKER])
    time.sleep(8)  # past the ping process's start-up (its page-table work)
    snaps["flood0"] = take_snapshot(lab, vifs)
    time.sleep(BASELINE_SECONDS)
    snaps["flood1"] = take_snapshot(lab, vifs)
    lab.guest_command(ATTACKER, "stop")
    for name, snap in snaps.items():
        (out / f"snapshot-{name}.xenperf.txt").write_text(snap.xenperf)
    return {
        "baseline": window(snaps["base0"], snaps["base1"], vifs),
        "flood": window(snaps["flood0"], snaps["flood1"], vifs),
    }


def _experiment(
    lab: Lab,
    prometheus: Prometheus,
    vifs: Mapping[str, str],
    out: Path,
    windows: dict[str, Any],
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    # Up, and every collector answering: the direction counters' first reading installs their
    # filters on every vif, a few dozen tc runs that take a while under emulation.
    wait_until(
        lambda: [value for _, value in prometheus.query(
            'min(xen_exporter_collector_success{job="xen"})')] == [1.0],
        timeout=TARGET_TIMEOUT_SECONDS, what="every collector of the lab's exporter answering",
        interval=POLL_SECONDS,
    )  # fmt: skip
    scrape = lab.run("wget", "-q", "-O", "-", f"http://127.0.0.1:{EXPORTER_PORT}/metrics")
    (out / "metrics-libxenctrl-reader.txt").write_text(scrape.stdout)
    results["readers"] = {"libxenctrl": _success(out / "metrics-libxenctrl-reader.txt")}
    timeline = Timeline(flood_start=time.time())
    results["timeline"] = timeline.__dict__
    start_flood(lab, vifs[ATTACKER])
    pre = take_snapshot(lab, vifs)
    try:
        watch_detection(lab, prometheus, vifs[ATTACKER], timeline)
    finally:
        # What the policies saw, also (above all) when they did not act.
        results["figure_series"] = _series(prometheus, timeline.flood_start - 60)
    detected = take_snapshot(lab, vifs)
    windows["flood_until_shaped"] = window(pre, detected, vifs)
    results["timeline"] = timeline.summary()
    time.sleep(3)
    shaped0 = take_snapshot(lab, vifs)
    time.sleep(SHAPED_SECONDS)
    shaped1 = take_snapshot(lab, vifs)
    windows["shaped"] = window(shaped0, shaped1, vifs)
    lab.guest_command(ATTACKER, "stop")
    results["victim_shaped_by"] = throttle_on_device(lab, vifs[VICTIM])
    results["tc_on_attacker_vif"] = {
        "qdiscs": lab.run("tc", "qdisc", "show").stdout,
        "ingress_filters": lab.run(
            "tc", "filter", "show", "dev", vifs[ATTACKER], "parent", "ffff:"
        ).stdout,
    }
    results["alerts"] = prometheus.alerts()
    results["figure_series"] = _series(prometheus, timeline.flood_start - 60)
    # Both readers on the same hypervisor: one scrape of an exporter with the xenperf reader.
    with contextlib.suppress(LabError, TimeoutError):
        results["readers"]["xenperf"] = _xenperf_reader_scrape(lab, out)
    return results


def _xenperf_reader_scrape(lab: Lab, out: Path) -> dict[str, float]:
    lab.kill("exporter")  # a Dom0 under emulation has no CPU to spare for two
    lab.spawn("exporter-xenperf", ["python3", "-m", "exporter", "--web.listen-address=127.0.0.1:"
              f"{SECOND_EXPORTER_PORT}", "--perfc.reader=xenperf", "--xl.path=/usr/sbin/xl",
              "--xenperf.path=/usr/sbin/xenperf", *EXPORTER_FLAGS])  # fmt: skip
    url = f"http://127.0.0.1:{SECOND_EXPORTER_PORT}/metrics"

    def scraped() -> Result | None:
        result = lab.run("wget", "-q", "-O", "-", url, timeout=30)
        return (
            result if result.rc == 0 and "xen_exporter_collector_success" in result.stdout else None
        )

    scrape = wait_until(scraped, timeout=180, what="the xenperf-reader exporter",
                        interval=POLL_SECONDS)  # fmt: skip
    lab.kill("exporter-xenperf")
    assert scrape is not None
    (out / "metrics-xenperf-reader.txt").write_text(scrape.stdout)
    return _success(out / "metrics-xenperf-reader.txt")


def _success(path: Path) -> dict[str, float]:
    found = {}
    for line in path.read_text().splitlines():
        if line.startswith("xen_exporter_collector_success") or line.startswith(
            "xen_collector_success"
        ):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found


def _after(moment: float | None, start: float) -> float | None:
    return None if moment is None else round(moment - start, 1)


FIGURE_QUERIES = {
    "sent_packets": "instance_domain:domain_network_transmit_packets:rate10s",
    "interrupts": "instance_domain:xen_perfc_interrupts:rate10s",
    "context_switches": "instance_domain:xen_perfc_sched_context_switches:rate10s",
    "initiated": "instance_domain:domain_network_transmit_initiated_packets:rate10s",
    "page_table_operations": "instance_domain:xen_perfc_page_table_operations:rate10s",
    "scrape_duration": 'scrape_duration_seconds{job="xen"}',
    "up": 'up{job="xen"}',
}


def _series(prometheus: Prometheus, start: float) -> dict[str, Any]:
    return query_series(prometheus, FIGURE_QUERIES, start, step=5)


def query_series(
    prometheus: Prometheus, queries: Mapping[str, str], start: float, step: float
) -> dict[str, Any]:
    """Each query's points per domain from `start` until now, for the report's figure; a query
    that fails is left out (the figure is drawn from what there is)."""
    end = time.time()
    series: dict[str, Any] = {}
    for key, expr in queries.items():
        with contextlib.suppress(Exception):
            series[key] = {
                labels.get("domain", "?"): points
                for labels, points in prometheus.query_range(expr, start, end, step=step)
            }
    return series


def _repo_relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)
