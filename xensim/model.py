"""The counter model: what Xen's performance counters would count, given what really happened.

Pure: `step(tick, rng)` takes one tick's measured activity (packets on each domain's vifs, CPU
time and page faults of each guest's cgroup, where its vCPUs are, whether it is paused) and
returns counter increments per (counter, physical CPU) and per (array, index), plus the CPU
time each domain used. No I/O, no clock: the daemon measures, this module decides.

Why each counter responds as it does, with the Xen source that increments it
(`docs/xen-reference.md` section 3.3), is in docs/simulator.md; the constants below are the
numbers that page explains. Domains are paravirtualised guests (as in the published
experiment): their page faults and hypercalls trap into Xen, so they show in `page faults`,
`exceptions` and `hypercalls`; there are no vmexits.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

# Hypercall numbers (xen/include/public/xen.h) the model touches.
HYPERCALL_MMU_UPDATE = 1
HYPERCALL_MULTICALL = 13
HYPERCALL_UPDATE_VA_MAPPING = 14
HYPERCALL_SET_TIMER_OP = 15
HYPERCALL_GRANT_TABLE_OP = 20
HYPERCALL_VCPU_OP = 24
HYPERCALL_MMUEXT_OP = 26
HYPERCALL_SCHED_OP = 29
HYPERCALL_EVENT_CHANNEL_OP = 32
HYPERCALL_PHYSDEV_OP = 33
HYPERCALL_SYSCTL = 35
HYPERCALL_DOMCTL = 36
VECTOR_PAGE_FAULT = 14
VECTOR_GENERAL_PROTECTION = 13

# Idle rates are calibrated on the Xen lab (docs/lab.md, "Calibration"; docs/simulator.md, "Lab
# calibration"): real Xen 4.17 with perf counters, credit2, each PV guest's one vCPU pinned to a
# physical CPU of its own. Per second on each idle guest's CPU over a quiet window: lab run 1
# (33.1 s, CPUs 2-4), lab run 2 (44.8 s, CPUs 2-4), the probe (30 s, guest C's CPU):
#   #interrupts              10.8 7.6 7.9 | 7.0 9.7 9.4 | 7.2   mean 8.7  -> 9
#   apic timer interrupts     9.8 6.5 6.8 | 6.1 8.8 8.5 | 6.1   mean 7.8  -> 8
#   #IPIs                     1.1 1.1 1.0 | 0.9 0.9 0.9 |        -> 1
#   sched: context switches  15.2 10.5 10.8 | 9.0 12.6 12.4 | 12  mean 11.8 -> 12
#   sched: runs through scheduler (= specific scheduler)
#                            15.6 10.8 11.0 | 9.7 13.2 12.9 |    mean 12.2 -> 12
#   run 2 only: sched: timer 0.6-0.7, csched2: burn_credits_t2c 5.8-7.4, csched2:
#   runtime_max_timer 1.1-1.5, RCU: idle_timer 0 (also 0 in run 1)
#   page faults 0.4 0 0 | 0 0 0 | 0; calls to mmu_update 2.0 0 0 | 0 0 0 | 0
# (The old values, about 10x these, assumed a periodic 100 Hz tick; Xen's timer is one-shot
# and an idle PV guest is tickless.) Every lab CPU carried a domain, so the split of an idle
# CPU's rate between the CPU's own part (here) and its domain's part (DOMAIN_BASELINE_...)
# is not measured: it keeps the old model's proportions, and only the sum is the lab's.
# Every online physical CPU, per second, with nothing running on it: Xen's own timer and
# scheduler housekeeping.
CPU_BASELINE_PER_SECOND: Mapping[str, float] = {
    "apic timer interrupts": 8.0,  # lab 6.1-9.8, mean 7.8 (old: 100)
    "#interrupts": 8.5,  # + DOMAIN_BASELINE 0.5 = lab's 9 (old: 105 + 5)
    "#IPIs": 0.3,  # + 0.7 = lab's 1 (old: 2 + 5)
    "RCU: idle_timer": 0.0,  # lab: 0 on every CPU (old: 20)
    "sched: timer": 0.7,  # lab 0.6-0.7 (old: 5)
    "sched: runs through scheduler": 5.5,  # + 6.5 = lab's 12 (old: 50 + 60)
    "sched: specific scheduler": 5.5,  # the lab counts it with every run through scheduler
    "sched: context switches": 3.0,  # + 9 = lab's 12 (old: 20 + 60)
    "csched2: burn_credits_t2c": 7.0,  # lab 5.8-7.4 (old: 50)
    "csched2: runtime_max_timer": 1.5,  # lab 1.1-1.5 (old: 2)
}

# Every running (not paused) domain, per vCPU and second: an idle PV kernel's own life
# (timer programming, blocking when idle). The counters the lab measured are scaled as above;
# the others (wake/sleep, the page-table family's lesser counters, hypercalls) are not
# calibrated yet, except that an idle guest's page-table activity is near 0 in the lab.
DOMAIN_BASELINE_PER_SECOND: Mapping[str, float] = {
    "sched: context switches": 9.0,  # with CPU_BASELINE: lab 12 (old: 60)
    "sched: runs through scheduler": 6.5,  # with CPU_BASELINE: lab 12 (old: 60)
    "sched: specific scheduler": 6.5,
    "sched: unit_wake_not_runnable": 30.0,
    "sched: unit_sleep": 30.0,
    "#IPIs": 0.7,  # with CPU_BASELINE: lab 1 (old: 5)
    "#interrupts": 0.5,  # with CPU_BASELINE: lab 9 (old: 5)
    "page faults": 0.2,  # lab 0-0.4 (old: 20)
    "calls to mmu_update": 0.5,  # lab 0-2 (old: 5)
    "page updates": 10.0,
    "calls to mmuext_op": 5.0,
    "mmuext ops": 8.0,
    "calls to update_va_map": 5.0,
    "map_domain_page count": 40.0,
    "domain page tlb flushes": 2.0,
    "calls from multicall": 6.0,
}
DOMAIN_BASELINE_HYPERCALLS_PER_SECOND: Mapping[int, float] = {
    HYPERCALL_SCHED_OP: 30.0,
    HYPERCALL_SET_TIMER_OP: 30.0,
    HYPERCALL_VCPU_OP: 10.0,
    HYPERCALL_MMU_UPDATE: 5.0,
    HYPERCALL_MMUEXT_OP: 5.0,
    HYPERCALL_UPDATE_VA_MAPPING: 5.0,
    HYPERCALL_MULTICALL: 2.0,
    HYPERCALL_EVENT_CHANNEL_OP: 2.0,
}
# Dom0 also runs the toolstack (xl, xenperf, the exporter's scrapes).
DOM0_EXTRA_HYPERCALLS_PER_SECOND: Mapping[int, float] = {
    HYPERCALL_SYSCTL: 5.0,
    HYPERCALL_DOMCTL: 10.0,
    HYPERCALL_PHYSDEV_OP: 1.0,
}

# Per packet a guest sends or receives. The guest's side lands on its vCPUs' CPUs: netback's
# notifications are event-channel upcalls to the guest's vCPU, delivered as event-check IPIs on
# its CPU (counted in #IPIs and, since do_IRQ counts every vector, in #interrupts); a packet that
# arrives wakes the vCPU, which blocks again once it has dealt with it.
# Interrupts and IPIs per packet are measured: on a real Xen 4.17 (PV guests each pinned to its
# own physical CPU, perf-counter build, four ping-flood runs), the CPU of a guest answering a ping
# flood took 2.01-2.05 interrupts and 1.93-1.95 IPIs per answered request, that is per packet
# received plus packet sent, and 3.6 context switches (probe run 3: (10972 - 175) / 3000; the
# lab's run 5 of 2026-12-02: 3.0).
# Which half is the packet sent was measured in the Xen lab with a UDP flood, a sender that
# waits for nothing (docs/lab.md, "UDP flood sweep"; bench/results/lab/udp-sweep.md, and the
# workloads window of `make lab-demo`, 2026-12-02: iperf 2, 64-byte datagrams at 869, 1157 and
# 1883 datagrams/s, the sender's vCPU 0.94-0.95 busy): per datagram sent its CPU took 0.47 /
# 0.42 / 0.44 IPIs (as many interrupts beyond its timer's), 0.11 / 0.07 / 0.05 runs through the
# scheduler and no context switch (0.006 / -0.014 / -0.01: at or below its idle rate). Sending
# is the guest's own doing: nothing wakes it, so a sender pays the notification of its
# transmit completions only; the wake-up (block, switch in, switch out) belongs to the packet
# that arrives, and the victim's 3.6 context switches per answered request are its request's.
# Controlled: 100 datagrams/s beside a busy loop (the vCPU never idle) took 0.20 context
# switches per datagram; alone (its vCPU idle half the time) 2.3, the pacing's own sleeps
# included. A ping-flood sender thus pays per ping what it did before (request 0.45 + reply
# 1.58 interrupts, 0 + 3.6 context switches), and a UDP flooder no context switches.
# Not modelled: a receiver's batching at high rates (the UDP sink took 0.05-0.10 context
# switches and 0.35-0.41 interrupts per datagram at 868-1156 datagrams/s, 2.1 and 1.7 at 92/s):
# the model charges every received packet its low-rate cost, which makes a flood's target look
# busier than it is, never its sender.
GUEST_PER_RECEIVED_PACKET: Mapping[str, float] = {
    "#interrupts": 1.58,  # 2.03 per answered request - 0.45 for the reply sent
    "#IPIs": 1.49,  # 1.94 - 0.45
    "sched: context switches": 3.6,
    "sched: runs through scheduler": 1.92,  # 2.0 per answered request - 0.08 for the reply
    "sched: specific scheduler": 1.92,
    "sched: unit_wake_not_runnable": 0.8,
    "sched: unit_sleep": 0.8,
    # Same measurement: the answering guest's CPU took 252 more local APIC timer interrupts for
    # 3000 answered requests (95 -> 347 over 15 s; the sender's went 96 -> 2921): kernel work
    # done in short event-driven bursts barely keeps a tickless guest's timer armed.
    "apic timer interrupts": 0.084,
}
GUEST_PER_SENT_PACKET: Mapping[str, float] = {
    "#interrupts": 0.45,  # UDP flood: 0.47, 0.42, 0.44 per datagram beyond the timer's
    "#IPIs": 0.45,  # 0.47, 0.42, 0.44
    "sched: runs through scheduler": 0.08,  # 0.11, 0.07, 0.05
    "sched: specific scheduler": 0.08,
}
# The same packet's other half happens in Dom0's netback, on Dom0's CPU.
DOM0_PER_GUEST_PACKET: Mapping[str, float] = {
    "#interrupts": 0.75,
    "#IPIs": 0.75,
    "sched: context switches": 0.5,
    "sched: runs through scheduler": 0.6,
    "sched: specific scheduler": 0.6,
}
# Hypercalls per packet: the guest notifies netback for what it sends (EVTCHNOP_send), netback
# notifies the guest for what it delivers and completes, and netback copies every packet
# across with grant-table copies (GNTTABOP_copy); guests and Dom0's netback threads block and
# yield (SCHEDOP_block, _yield) around each. Measured in the Xen lab (docs/lab.md, run 5 of
# 2026-12-02: 1869 pings of 8000 bytes, two packets sent and two received each, host-wide
# since stock perfc sums the array over CPUs), per packet sent plus per packet received:
# event_channel_op 4.15, grant_table_op 3.83, sched_op 3.29 (the model had 2.5, 2.0, 0.8).
# How a pair splits between sending and receiving is not measurable that way: the event
# channel keeps the old 3:2 split, the others half each.
HYPERCALLS_PER_SENT_PACKET: Mapping[int, float] = {
    HYPERCALL_EVENT_CHANNEL_OP: 2.49,
    HYPERCALL_GRANT_TABLE_OP: 1.91,
    HYPERCALL_SCHED_OP: 1.64,
}
HYPERCALLS_PER_RECEIVED_PACKET: Mapping[int, float] = {
    HYPERCALL_EVENT_CHANNEL_OP: 1.66,
    HYPERCALL_GRANT_TABLE_OP: 1.91,
    HYPERCALL_SCHED_OP: 1.64,
}

# Per second of CPU a guest really burnt: a busy vCPU keeps its CPU's timer firing (the
# guest's tick plus credit2's runtime timer) and goes through the scheduler at each expiry.
PER_CPU_SECOND: Mapping[str, float] = {
    "apic timer interrupts": 1000.0,
    "#interrupts": 1000.0,
    "sched: timer": 100.0,
    "sched: runs through scheduler": 300.0,
    "sched: specific scheduler": 300.0,
    "sched: context switches": 150.0,
    "csched2: burn_credits_t2c": 300.0,
    "csched2: runtime_max_timer": 100.0,
}

# Per page fault the guest's kernel took (a PV guest's faults all trap into Xen first) and the
# page-table updates that populate the pages.
PER_PAGE_FAULT: Mapping[str, float] = {
    "page faults": 1.0,
    "calls to mmu_update": 0.5,
    "page updates": 1.0,
    "map_domain_page count": 1.0,
}
# With shadow paging (the `--shadow` build) the same faults go through the shadow code.
PER_PAGE_FAULT_SHADOW: Mapping[str, float] = {
    "calls to shadow_fault": 1.0,
    "shadow_fault fixed fault": 0.8,
    "shadow_fault really guest fault": 0.2,
    "calls to shadow_validate_gl1e": 0.5,
}

# CPU time that is modeled rather than measured, in CPU-seconds per second or per packet:
# Dom0 has no cgroup (its work is the machine's own), and an idle guest kernel still runs.
DOM0_CPU_BASELINE = 0.01
DOM0_CPU_PER_GUEST_PACKET = 3e-6
GUEST_CPU_BASELINE = 0.002
# A guest's own kernel work per packet it receives or sends (netfront, its network stack, the
# event upcall). The simulated guests' packets are handled by the host's kernel, outside every
# guest cgroup, so without this the guest that answers a flood would use no CPU at all. Measured
# on the real Xen above (absolute seconds are inflated by emulation, ratios are not): Dom0 spent
# 1.20-1.50x (mean 1.35x) the answering guest's CPU time, while handling four guest packets per
# answered request (the request and the reply, each crossing two vifs). With Dom0 at
# DOM0_CPU_PER_GUEST_PACKET that is 4 x 3 us / 1.35 = 8.9 us per answered request, half per packet.
# The timer interrupts of this work are GUEST_PER_*_PACKET's, not PER_CPU_SECOND's.
GUEST_CPU_PER_PACKET = 4 * DOM0_CPU_PER_GUEST_PACKET / 1.35 / 2

NOISE = 0.05
# credit2's weight of a domain nobody changed (xen/common/sched/credit2.c CSCHED2_DEFAULT_WEIGHT).
DEFAULT_WEIGHT = 256


@dataclass(frozen=True)
class DomainActivity:
    """What one domain really did during one tick."""

    name: str
    vcpu_cpus: tuple[int, ...]
    is_dom0: bool = False
    paused: bool = False
    cpu_ns: int = 0
    sent_packets: int = 0
    received_packets: int = 0
    page_faults: int = 0
    weight: int = DEFAULT_WEIGHT  # credit2 weight (xl sched-credit2 -w)


@dataclass(frozen=True)
class Tick:
    seconds: float
    online_cpus: tuple[int, ...]
    domains: tuple[DomainActivity, ...]
    shadow: bool = False


@dataclass
class Increments:
    """What to add: per-CPU counters by CPU id, array elements by index, CPU time by domain,
    idle time by physical CPU, and the CPU time domains wanted but did not get (waiting)."""

    per_cpu: dict[tuple[str, int], int] = field(default_factory=dict)
    arrays: dict[tuple[str, int], int] = field(default_factory=dict)
    cpu_time_ns: dict[str, int] = field(default_factory=dict)
    idle_ns: dict[int, int] = field(default_factory=dict)
    waiting_ns: dict[str, int] = field(default_factory=dict)


class _Accumulator:
    """Collects fractional expectations and turns them into integers without bias."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.per_cpu: defaultdict[tuple[str, int], float] = defaultdict(float)
        self.arrays: defaultdict[tuple[str, int], float] = defaultdict(float)

    def noisy(self, value: float) -> float:
        return max(0.0, value * (1.0 + self.rng.gauss(0.0, NOISE)))

    def spread(self, rates: Mapping[str, float], amount: float, cpus: tuple[int, ...]) -> None:
        if amount <= 0 or not cpus:
            return
        share = amount / len(cpus)
        for name, rate in rates.items():
            for cpu in cpus:
                self.per_cpu[(name, cpu)] += self.noisy(rate * share)

    def hypercalls(self, rates: Mapping[int, float], amount: float) -> None:
        if amount <= 0:
            return
        for index, rate in rates.items():
            self.arrays[("hypercalls", index)] += self.noisy(rate * amount)

    def add_array(self, name: str, index: int, amount: float) -> None:
        if amount > 0:
            self.arrays[(name, index)] += self.noisy(amount)

    def rounded(self, value: float) -> int:
        whole = int(value)
        return whole + (1 if self.rng.random() < value - whole else 0)


def fair_split(
    wants: Mapping[str, float],
    capacity: float,
    weights: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """What each claimant gets of `capacity`, max-min fair in proportion to its weight (all
    DEFAULT_WEIGHT when not given): one wanting less than its weighted split gets what it
    wants, the rest is split among those wanting more, again by weight.

    This is credit2's sharing of a saturated CPU between runnable vCPUs (xen/common/sched/
    credit2.c, "Design": VMs burn credits based on their weight, higher weight means credits
    burn more slowly, units are run in credit order; CSCHED2_DEFAULT_WEIGHT 256): with equal
    weights they converge to equal shares of the time they all want. A capped domain's want
    is already at most its cap (its cgroup is capped; docs/simulator.md).
    """

    def weight(name: str) -> float:
        return max(float((weights or {}).get(name, DEFAULT_WEIGHT)), 1.0)

    given: dict[str, float] = {}
    remaining = max(capacity, 0.0)
    pending = sorted(wants.items(), key=lambda item: max(item[1], 0.0) / weight(item[0]))
    total_weight = sum(weight(name) for name, _ in pending)
    for name, want in pending:
        got = min(max(want, 0.0), remaining * weight(name) / total_weight)
        given[name] = got
        remaining -= got
        total_weight -= weight(name)
    return given


def step(tick: Tick, rng: random.Random) -> Increments:
    """Counter increments for one tick of measured activity.

    A physical CPU delivers at most `tick.seconds` of CPU time per tick. What the domains
    whose vCPUs are on it want together (their measured usage, their modelled kernel work
    and baselines) is split max-min fair by credit2 weight (`fair_split`); each is charged
    what it was given, what it was not is `waiting_ns`, and the CPU's idle time is the tick
    less what it gave.
    """
    acc = _Accumulator(rng)
    online = tuple(sorted(tick.online_cpus))
    online_set = set(online)
    seconds = max(tick.seconds, 0.0)
    cpu_time: dict[str, int] = {}

    for cpu in online:
        acc.spread(CPU_BASELINE_PER_SECOND, seconds, (cpu,))

    # What every running domain wants, in CPU-seconds, and on which CPUs (one entry per vCPU).
    placed: dict[str, tuple[int, ...]] = {}
    weights = {domain.name: domain.weight for domain in tick.domains}
    burnt_by: dict[str, float] = {}
    wants: dict[str, float] = {}
    dom0: DomainActivity | None = None
    guest_packets = 0
    for domain in tick.domains:
        cpus = tuple(cpu for cpu in domain.vcpu_cpus if cpu in online_set)
        if domain.paused or not cpus:
            # A paused domain's vCPUs do not run: no activity, no CPU time.
            cpu_time[domain.name] = 0
            continue
        placed[domain.name] = cpus
        vcpu_seconds = seconds * len(cpus)
        acc.spread(DOMAIN_BASELINE_PER_SECOND, vcpu_seconds, cpus)
        acc.hypercalls(DOMAIN_BASELINE_HYPERCALLS_PER_SECOND, vcpu_seconds)
        if domain.is_dom0:
            dom0 = domain
            acc.hypercalls(DOM0_EXTRA_HYPERCALLS_PER_SECOND, seconds)
            continue
        sent, received = max(domain.sent_packets, 0), max(domain.received_packets, 0)
        guest_packets += sent + received
        acc.spread(GUEST_PER_SENT_PACKET, sent, cpus)
        acc.spread(GUEST_PER_RECEIVED_PACKET, received, cpus)
        acc.hypercalls(HYPERCALLS_PER_SENT_PACKET, sent)
        acc.hypercalls(HYPERCALLS_PER_RECEIVED_PACKET, received)
        acc.spread(PER_PAGE_FAULT, max(domain.page_faults, 0), cpus)
        burnt = min(max(domain.cpu_ns, 0) / 1e9, vcpu_seconds)
        burnt_by[domain.name] = burnt
        # A vCPU cannot run more than the tick: past that the guest drops packets, not time.
        room = max(vcpu_seconds - burnt, 0.0)
        kernel_seconds = min(GUEST_CPU_PER_PACKET * (sent + received), room)
        wants[domain.name] = burnt + GUEST_CPU_BASELINE * vcpu_seconds + kernel_seconds

    if dom0 is not None and dom0.name in placed:
        dom0_cpus = placed[dom0.name]
        acc.spread(DOM0_PER_GUEST_PACKET, guest_packets, dom0_cpus)
        modeled = DOM0_CPU_BASELINE * seconds * len(dom0_cpus)
        modeled += DOM0_CPU_PER_GUEST_PACKET * guest_packets
        wants[dom0.name] = modeled

    # Each domain's want, split evenly over its vCPUs' CPUs as before; then each CPU's share.
    on_cpu: defaultdict[int, dict[str, float]] = defaultdict(dict)
    for name, want in wants.items():
        cpus = placed[name]
        for cpu in cpus:
            on_cpu[cpu][name] = on_cpu[cpu].get(name, 0.0) + want / len(cpus)
    delivered: defaultdict[str, float] = defaultdict(float)
    idle: dict[int, int] = {}
    for cpu in online:
        given = fair_split(on_cpu.get(cpu, {}), seconds, weights)
        for name, got in given.items():
            delivered[name] += got
            # The CPU time a guest really got keeps its CPU's timer firing: PER_CPU_SECOND
            # follows the delivered part of its measured usage on this CPU.
            wanted = on_cpu[cpu][name]
            if name in burnt_by and wanted > 0:
                part = burnt_by[name] / len(placed[name]) * got / wanted
                acc.spread(PER_CPU_SECOND, part, (cpu,))
        idle[cpu] = round(max(seconds - sum(given.values()), 0.0) * 1e9)
    waiting: dict[str, int] = {}
    for name, want in wants.items():
        cpu_time[name] = round(delivered[name] * 1e9)
        waiting[name] = round(max(want - delivered[name], 0.0) * 1e9)

    if tick.shadow:
        # Under shadow paging every guest fault, baseline or measured, is a shadow fault.
        faults_by_cpu = [(c, v) for (n, c), v in acc.per_cpu.items() if n == "page faults"]
        for cpu, faults in faults_by_cpu:
            for name, rate in PER_PAGE_FAULT_SHADOW.items():
                acc.per_cpu[(name, cpu)] += faults * rate

    # Page faults taken in Xen are #PF exceptions; a few #GP come from PV guests' privileged
    # instructions. Both are array elements, summed over CPUs.
    faults_total = sum(v for (name, _cpu), v in acc.per_cpu.items() if name == "page faults")
    acc.arrays[("exceptions", VECTOR_PAGE_FAULT)] += faults_total
    acc.add_array("exceptions", VECTOR_GENERAL_PROTECTION, 1.0 * seconds * len(online))

    return Increments(
        per_cpu={k: n for k, v in acc.per_cpu.items() if (n := acc.rounded(v)) > 0},
        arrays={k: n for k, v in acc.arrays.items() if (n := acc.rounded(v)) > 0},
        cpu_time_ns=cpu_time,
        idle_ns=idle,
        waiting_ns=waiting,
    )
