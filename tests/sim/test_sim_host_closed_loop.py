"""The simulated host's closed loop, for real: workloads -> counters -> throttling -> counters.

One host (own Dom0 namespace, name unique per test process) serves the module. Counters are read
the way the product reads them: the real xenperf, through `judicator-sim env`'s environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support import require_binary, require_simulated_host, sim, wait_for
from xensim import cgroups
from xensim.simhost import simulated_host

pytestmark = [pytest.mark.host, pytest.mark.slow]

UINT32 = 1 << 32


def per_cpu_values(xenperf_output: str, name: str) -> list[int]:
    """The per-CPU values of one counter in `xenperf -f` output (online-CPU order)."""
    for line in xenperf_output.splitlines():
        head, sep, tail = line.rpartition("T=")
        if sep and head.rstrip() == name:
            return [int(v) for v in tail.split()[1:]]
    raise AssertionError(f"no counter {name!r} in xenperf output")


@dataclass
class Probe:
    """What these tests read from a simulated host: counters, vif packets, CPU time."""

    name: str
    env: dict[str, str]

    @property
    def dom0_netns(self) -> str:
        return self.env["XENSIM_DOM0_NETNS"]

    def tool(self, *argv: str) -> str:
        result = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env={**os.environ, **self.env},
        )
        assert result.returncode == 0, f"{argv}: {result.stderr}"
        return result.stdout

    def xenperf(self) -> str:
        return self.tool(self.env["XENSIM_XENPERF_BIN"], "-f")

    def in_dom0(self, *argv: str) -> None:
        subprocess.run(
            ["ip", "netns", "exec", self.dom0_netns, *argv],
            check=True,
            capture_output=True,
            timeout=15,
        )

    def vif_rx_packets(self, vif: str) -> int:
        out = subprocess.run(
            ["ip", "-n", self.dom0_netns, "-j", "-s", "link", "show", "dev", vif],
            capture_output=True,
            text=True,
            check=True,
            timeout=15,
        ).stdout
        return int(json.loads(out)[0]["stats64"]["rx"]["packets"])

    def domain_seconds(self, guest: str) -> float:
        lines = self.tool(self.env["XENSIM_XL"], "list", guest).splitlines()
        return float(lines[1].split()[-1])

    def cgroup_cpu_share(self, guest: str, window: float) -> float:
        """CPU the guest's cgroup really used over `window`, in CPUs (exact, unlike xl's 0.1 s)."""
        cgroup = f"judicator-sim/{self.name}/{guest}"
        before, start = cgroups.cpu_usage_ns(cgroup), time.monotonic()
        time.sleep(window)  # the measurement window itself, not a wait for a condition
        return (cgroups.cpu_usage_ns(cgroup) - before) / 1e9 / (time.monotonic() - start)

    def rates(self, window: float, cpu: int, vif: str, guest: str) -> Rates:
        """Per-second rates over `window`: #interrupts and apic timer on `cpu`, packets, CPU."""
        before = self.xenperf(), self.vif_rx_packets(vif), self.domain_seconds(guest)
        start = time.monotonic()
        time.sleep(window)  # the measurement window itself, not a wait for a condition
        after = self.xenperf(), self.vif_rx_packets(vif), self.domain_seconds(guest)
        seconds = time.monotonic() - start

        def delta(name: str) -> float:
            old = per_cpu_values(before[0], name)[cpu]
            new = per_cpu_values(after[0], name)[cpu]
            return ((new - old) % UINT32) / seconds

        return Rates(
            interrupts=delta("#interrupts"),
            apic_timer=delta("apic timer interrupts"),
            packets=(after[1] - before[1]) / seconds,
            cpu=(after[2] - before[2]) / seconds,
        )


@dataclass(frozen=True)
class Rates:
    interrupts: float
    apic_timer: float
    packets: float
    cpu: float


@pytest.fixture(scope="module")
def host() -> Iterator[Probe]:
    require_simulated_host()
    require_binary("ping")
    name = f"tl{os.getpid() % 100_000_000}"
    with simulated_host(name, dom0_netns=True, cpus=4, guests=3, seed=7) as sim_host:
        yield Probe(sim_host.name, sim_host.env)


def test_xenperf_sees_the_guests_pinned_one_per_cpu(host: Probe) -> None:
    vcpus = host.tool(host.env["XENSIM_XL"], "vcpu-list").splitlines()[1:]
    placement = {line.split()[0]: int(line.split()[3]) for line in vcpus}
    assert placement == {"Domain-0": 0, "guest1": 1, "guest2": 2, "guest3": 3}
    wait_for(
        lambda: sum(per_cpu_values(host.xenperf(), "apic timer interrupts")) > 0,
        5,
        "the daemon's first counts",
    )
    assert len(per_cpu_values(host.xenperf(), "#interrupts")) == 4


def test_ping_flood_raises_interrupts_on_its_cpu_and_shaping_brings_them_down(
    host: Probe,
) -> None:
    idle1 = host.rates(1.0, cpu=1, vif="vif1.0", guest="guest1")
    idle3 = host.rates(1.0, cpu=3, vif="vif3.0", guest="guest3")
    sim("run", "--name", host.name, "guest1", "pingflood", "--target", "guest2", "--duration", "8")
    ifb = "ifbsim"
    try:
        start = host.vif_rx_packets("vif1.0")
        wait_for(lambda: host.vif_rx_packets("vif1.0") > start + 1000, 5, "the flood to start")
        flood1 = host.rates(1.5, cpu=1, vif="vif1.0", guest="guest1")
        flood3 = host.rates(1.5, cpu=3, vif="vif3.0", guest="guest3")
        assert flood1.interrupts >= 10 * idle1.interrupts, (idle1, flood1)
        assert flood3.interrupts <= 2 * idle3.interrupts, (idle3, flood3)

        # What the remediator does: redirect the vif's ingress to an ifb and shape it there.
        host.in_dom0("ip", "link", "add", ifb, "type", "ifb")
        host.in_dom0("ip", "link", "set", ifb, "up")
        host.in_dom0("tc", "qdisc", "add", "dev", "vif1.0", "handle", "ffff:", "ingress")
        host.in_dom0(
            "tc", "filter", "add", "dev", "vif1.0", "parent", "ffff:", "protocol", "all",
            "u32", "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", ifb,
        )  # fmt: skip
        host.in_dom0(
            "tc", "qdisc", "add", "dev", ifb, "root", "tbf",
            "rate", "256kbit", "burst", "4kb", "latency", "50ms",
        )  # fmt: skip
        shaped1 = host.rates(1.5, cpu=1, vif="vif1.0", guest="guest1")
        assert shaped1.packets <= flood1.packets / 5, (flood1, shaped1)
        assert shaped1.interrupts <= flood1.interrupts / 5, (flood1, shaped1)
    finally:
        sim("stop", "--name", host.name, "guest1", check=False)
        subprocess.run(
            ["ip", "-n", host.dom0_netns, "link", "del", ifb], capture_output=True, check=False
        )
        subprocess.run(
            ["tc", "-n", host.dom0_netns, "qdisc", "del", "dev", "vif1.0", "ingress"],
            capture_output=True,
            check=False,
        )


def test_cpu_cap_through_fake_xl_lowers_a_hogs_cpu_time_and_counters(host: Probe) -> None:
    sim("run", "--name", host.name, "guest3", "cpuhog", "--duration", "8")
    try:
        start = host.domain_seconds("guest3")
        wait_for(lambda: host.domain_seconds("guest3") > start + 0.2, 5, "the hog to burn CPU")
        free = host.rates(1.5, cpu=3, vif="vif3.0", guest="guest3")
        free_share = host.cgroup_cpu_share("guest3", 1.0)
        # 5 % rather than 20 %: on a loaded shared machine an uncapped hog may get little more
        # than 20 % of a real CPU, and the cap must visibly bite.
        host.tool(host.env["XENSIM_XL"], "sched-credit2", "-d", "guest3", "-c", "5")
        capped = host.rates(1.5, cpu=3, vif="vif3.0", guest="guest3")
        capped_share = host.cgroup_cpu_share("guest3", 1.0)
        assert capped_share <= 0.08, (free_share, capped_share)
        assert capped_share <= 0.5 * free_share, (free_share, capped_share)
        assert capped.cpu < free.cpu, (free, capped)  # what xl list shows, to 0.1 s
        assert capped.apic_timer < 0.8 * free.apic_timer, (free, capped)
        cap_line = host.tool(host.env["XENSIM_XL"], "sched-credit2", "-d", "guest3")
        assert cap_line.splitlines()[1].split()[-1] == "5"
    finally:
        sim("stop", "--name", host.name, "guest3", check=False)
        host.tool(host.env["XENSIM_XL"], "sched-credit2", "-d", "guest3", "-c", "0")
