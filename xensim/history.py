"""A synthetic multi-day history of a Xen host, as Prometheus would have recorded it, written
into a TSDB with `promtool tsdb create-blocks-from openmetrics`.

    text_path = write_openmetrics(path, profiles, start, end, step=60)
    backfill(text_path, data_dir)              # promtool; then run Prometheus on data_dir

What it writes is what the policies read: the per-domain rates the recording rules of
prometheus/rules/policies.yml produce (`instance_domain:*:rate10s`, the two-minute average of
sent packets, the CPU-contention share), `xen_domain_vcpus`, and the host-wide grant-table rate;
not the raw counters, and not the series that depend on thresholds (the `:active` series, the
small and initiated packet rates), which `judicator-policy backtest` recomputes from these. The
rates follow the counter model of docs/simulator.md (per packet sent 0.5 interrupts and 0.8
context switches, per packet received 1 and 0.8, per busy CPU-second 1000 timer interrupts).

A guest is a `Profile`: a function from a time to its activity (`Activity`), plus noise. The
shipped profiles (`demo_profiles`) are a host's week: two web servers with a daily cycle, a busy
DNS-like server, a nightly batch job on shared CPUs, a database with a nightly backup, an idle
guest, and optional attacks at given times. Deterministic for a given seed.
"""

from __future__ import annotations

import math
import random
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

DAY = 86400.0
HOUR = 3600.0
MiB = 1024 * 1024
INSTANCE = "xenhost1:10170"
JOB = "xen"


@dataclass(frozen=True)
class Activity:
    """What a guest does at one instant, in the units of docs/simulator.md."""

    packets_sent: float = 5.0
    packets_received: float = 5.0
    bytes_per_packet_sent: float = 200.0
    # Of the packets sent, those opening an exchange (echo requests, SYNs).
    requests_sent: float = 0.0
    answers_sent: float = 0.0
    cpu_per_vcpu: float = 0.02
    vcpus: int = 1
    # Context switches per second beyond the packets' (a busy CPU job switches rarely).
    extra_context_switches: float = 50.0
    page_faults: float = 20.0
    page_table_operations: float = 5.0
    block_requests: float = 2.0
    block_bytes_per_request: float = 4096.0
    memory_growth: float = 0.0
    others_share: float = 0.1


@dataclass(frozen=True)
class Profile:
    domain: str
    activity: Callable[[float], Activity]
    # Relative noise (one standard deviation) on every rate.
    noise: float = 0.05


def diurnal(t: float, peak_hour: float = 14.0) -> float:
    """0 at night, 1 at the peak hour: a smooth daily cycle (UTC)."""
    phase = (t % DAY) / HOUR - peak_hour
    return 0.5 + 0.5 * math.cos(2 * math.pi * phase / 24)


def in_hours(t: float, first: float, last: float) -> bool:
    hour = (t % DAY) / HOUR
    return first <= hour < last


@dataclass(frozen=True)
class Attack:
    """A flood of small datagrams the guest starts itself, from `start` for `duration` s."""

    domain: str
    start: float
    duration: float
    packets: float

    def active(self, t: float) -> bool:
        return self.start <= t < self.start + self.duration


def web(t: float) -> Activity:
    requests = 20 + 180 * diurnal(t)
    return Activity(
        packets_sent=3 * requests,
        packets_received=2 * requests,
        bytes_per_packet_sent=900,
        answers_sent=0.2 * requests,
        cpu_per_vcpu=0.05 + 0.0015 * requests,
        vcpus=2,
        extra_context_switches=2 * requests,
        page_faults=20 + 3 * requests,
        page_table_operations=5 + 30 * requests,
        block_requests=5 + 0.2 * requests,
    )


def dns(t: float) -> Activity:
    queries = 6000 + 6000 * diurnal(t, 20)
    return Activity(
        packets_sent=queries,
        packets_received=queries,
        bytes_per_packet_sent=120,
        cpu_per_vcpu=0.1 + queries / 40000,
        page_table_operations=20,
    )


def batch(t: float) -> Activity:
    busy = in_hours(t, 1, 4)
    return Activity(
        cpu_per_vcpu=0.83 if busy else 0.03,
        vcpus=2,
        extra_context_switches=300 if busy else 60,
        page_faults=400 if busy else 20,
        page_table_operations=50 if busy else 5,
        others_share=0.15,
    )


def database(t: float) -> Activity:
    backup = in_hours(t, 2, 3)
    queries = 50 + 250 * diurnal(t, 15)
    return Activity(
        packets_sent=2 * queries,
        packets_received=2 * queries,
        bytes_per_packet_sent=600,
        cpu_per_vcpu=0.1 + 0.001 * queries,
        vcpus=2,
        extra_context_switches=queries,
        page_faults=500,
        page_table_operations=100,
        block_requests=2500 if backup else 100 + queries,
        block_bytes_per_request=80_000 if backup else 8192,
    )


def idle(t: float) -> Activity:
    return Activity()


def rates(a: Activity, attack: float = 0.0) -> dict[str, float]:
    """The recorded per-domain series of one guest with activity `a` (and a flood of `attack`
    small datagrams/s it starts itself)."""
    sent = a.packets_sent + attack
    bytes_sent = a.packets_sent * a.bytes_per_packet_sent + attack * 64
    busy = min(1.0, a.cpu_per_vcpu + attack / 100_000)
    interrupts = 100 * a.vcpus + 0.5 * sent + 1.0 * a.packets_received
    switches = a.extra_context_switches + 0.8 * (sent + a.packets_received)
    return {
        "instance_domain:xen_perfc_interrupts:rate10s": interrupts,
        "instance_domain:xen_perfc_sched_context_switches:rate10s": switches,
        "instance_domain:xen_perfc_apic_timer_interrupts:rate10s": a.vcpus * (100 + 1000 * busy),
        "instance_domain:xen_perfc_page_faults:rate10s": a.page_faults,
        "instance_domain:xen_perfc_page_table_operations:rate10s": a.page_table_operations,
        "instance_domain:domain_cpu_seconds_per_vcpu:rate10s": busy,
        "instance_domain:domain_cpu_seconds:rate10s": busy * a.vcpus,
        # What the CPU-hog forms (and so their learned thresholds) read: between two scrapes.
        "instance_domain:xen_perfc_apic_timer_interrupts:irate4s": a.vcpus * (100 + 1000 * busy),
        "instance_domain:domain_cpu_seconds_per_vcpu:irate4s": busy,
        "instance_domain:domain_network_transmit_packets:rate10s": sent,
        "instance_domain:domain_network_transmit_bytes:rate10s": bytes_sent,
        "instance_domain:domain_network_receive_packets:rate10s": a.packets_received,
        "instance_domain:domain_network_receive_bytes:rate10s": a.packets_received * 300,
        "instance_domain:domain_network_transmit_requests:rate10s": a.requests_sent,
        "instance_domain:domain_network_transmit_answers:rate10s": a.answers_sent,
        "instance_domain:domain_network_transmit_packets:avg2m": sent,
        "instance_domain:domain_block_requests:rate10s": a.block_requests,
        "instance_domain:domain_block_bytes:rate10s": a.block_requests * a.block_bytes_per_request,
        "instance_domain:domain_memory_bytes:deriv30s": a.memory_growth,
        "instance_domain:xen_pcpu_others_share:max": a.others_share,
        "xen_domain_vcpus": float(a.vcpus),
    }


# Series that are not rates: no noise.
EXACT = {"xen_domain_vcpus", "instance_domain:xen_pcpu_others_share:max"}
# Dom0's backends: grant-table operations per block request (docs/simulator.md).
GRANT_OPS_PER_BLOCK_REQUEST = 12


@dataclass
class History:
    profiles: Sequence[Profile]
    attacks: Sequence[Attack] = field(default_factory=tuple)
    seed: int = 1

    def samples(self, t: float, rng: random.Random) -> dict[tuple[str, str], float]:
        """{(metric, domain or ""): value} at `t`."""
        out: dict[tuple[str, str], float] = {}
        block_total = 0.0
        for profile in self.profiles:
            flood = sum(
                a.packets for a in self.attacks if a.domain == profile.domain and a.active(t)
            )
            for metric, value in rates(profile.activity(t), flood).items():
                if metric not in EXACT:
                    value *= max(0.0, 1 + rng.gauss(0, profile.noise))
                out[(metric, profile.domain)] = value
            block_total += out[("instance_domain:domain_block_requests:rate10s", profile.domain)]
        out[("instance_hypercall:xen_perfc_hypercalls:rate10s", "")] = (
            block_total * GRANT_OPS_PER_BLOCK_REQUEST
        )
        return out


def write_openmetrics(path: Path, history: History, start: float, end: float, step: float) -> Path:
    """The history's samples from `start` to `end` (every `step` s) as an OpenMetrics file,
    one metric family after the other (as promtool wants), each series in time order."""
    rng = random.Random(history.seed)
    times = [start + i * step for i in range(int((end - start) // step) + 1)]
    columns: dict[tuple[str, str], list[float]] = {}
    for t in times:
        for key, value in history.samples(t, rng).items():
            columns.setdefault(key, []).append(value)
    metrics = sorted({metric for metric, _ in columns})
    with path.open("w") as out:
        for metric in metrics:
            out.write(f"# TYPE {metric} gauge\n")
            for (name, domain), values in sorted(columns.items()):
                if name != metric:
                    continue
                labels = f'instance="{INSTANCE}",job="{JOB}"'
                if domain:
                    labels = f'domain="{domain}",' + labels
                if name.startswith("instance_hypercall:"):
                    labels += ',index="20",hypercall="grant_table_op"'
                for t, value in zip(times, values, strict=True):
                    out.write(f"{name}{{{labels}}} {value:.6g} {t:.3f}\n")
        out.write("# EOF\n")
    return path


def backfill(openmetrics: Path, data_dir: Path, promtool: str = "promtool") -> None:
    """Writes the file's samples as TSDB blocks into `data_dir` (Prometheus's storage path)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [
            promtool,
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            "--max-block-duration=24h",
            str(openmetrics),
            str(data_dir),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"promtool create-blocks-from openmetrics: {result.stderr[-2000:]}")


def demo_profiles() -> list[Profile]:
    """A host's guests: the week the docs' learned-thresholds example comes from."""
    return [
        Profile("web1", web),
        Profile("web2", web),
        Profile("dns1", dns),
        Profile("batch1", batch, noise=0.02),
        Profile("db1", database, noise=0.03),
        Profile("quiet1", idle),
    ]


def busy_web(t: float) -> Activity:
    """A web server with twice the demo's peak: 600 requests/s at its busiest hour."""
    base = web(t)
    return Activity(
        **{
            **base.__dict__,
            "packets_sent": base.packets_sent * 3,
            "packets_received": base.packets_received * 3,
            "cpu_per_vcpu": min(1.0, base.cpu_per_vcpu * 2),
        }
    )


def udp_client(t: float) -> Activity:
    """A client of a request/response server: 4 000 requests/s, an answer each."""
    rate = 4000 * (0.5 + 0.5 * diurnal(t, 20))
    return Activity(packets_sent=rate, packets_received=rate, bytes_per_packet_sent=100)


def bulk_sender(t: float) -> Activity:
    """Nightly transfers of 40 MB/s in full-sized packets, an ACK per two back."""
    on = in_hours(t, 1, 3)
    packets = 27000.0 if on else 10.0
    return Activity(
        packets_sent=packets,
        packets_received=packets / 2,
        bytes_per_packet_sent=1500,
        cpu_per_vcpu=0.3 if on else 0.02,
        block_requests=300 if on else 2,
        block_bytes_per_request=131072,
    )


def bulk_receiver(t: float) -> Activity:
    on = in_hours(t, 1, 3)
    packets = 40000.0 if on else 10.0
    return Activity(
        packets_sent=packets / 2,
        packets_received=packets,
        bytes_per_packet_sent=64,
        cpu_per_vcpu=0.4 if on else 0.02,
        block_requests=450 if on else 2,
        block_bytes_per_request=131072,
    )


def dedicated_batch(t: float) -> Activity:
    """The batch job on CPUs of its own: busy every night, nobody else on its CPUs."""
    return Activity(**{**batch(t).__dict__, "others_share": 0.0})


def shared_batch(t: float) -> Activity:
    """A one-vCPU batch job splitting its physical CPU with another every night."""
    share = 0.5 if in_hours(t, 1, 4) else 0.03
    return replace(batch(t), vcpus=1, cpu_per_vcpu=share, others_share=share)


def eval_profiles() -> list[Profile]:
    """A stand-in for the week the guests of `make eval`'s scenarios would have had before it,
    by their names (docs/evaluation.md): the servers, clients, web server, file transfers and
    batch job as their benign selves; every other guest (the attackers before their attack,
    the victims, the idle ones, the booting VMs) idle. Written from the scenarios' own
    descriptions, not measured: a learned file from it shows what learning does to the
    policies on the corpus, not what a real week would give."""
    busy = {
        "server": dns,
        "client1": udp_client,
        "client2": udp_client,
        "client3": udp_client,
        "web": busy_web,
        "transfer": bulk_sender,
        "backup": bulk_sender,
        "fileserver": bulk_receiver,
        "batch": dedicated_batch,
        "batch1": shared_batch,
        "batch2": shared_batch,
    }
    quiet = [
        "attacker", "victim", "idle", "pinger", "udpflooder", "hog", "cpuhog", "memhog",
        "diskhog", "neighbour", "victim1", "victim2", "pace11k", "pace20k", "bursty",
        "receiver", "vm1", "vm2", "vm3", "vm4", "vm5", "vm6",
    ]  # fmt: skip
    return [Profile(name, f) for name, f in busy.items()] + [Profile(n, idle) for n in quiet]


def ramp(start: float, weekly_growth: float, base: float) -> Callable[[float], Activity]:
    """A guest that raises its own baseline of small datagrams it sends, `weekly_growth` per
    week from `base` packets/s at `start`: the slow ramp that tries to poison re-learning."""

    def activity(t: float) -> Activity:
        weeks = max(0.0, (t - start) / (7 * DAY))
        sent = base * (1 + weekly_growth) ** weeks
        return Activity(packets_sent=sent, bytes_per_packet_sent=64, cpu_per_vcpu=0.1)

    return activity
