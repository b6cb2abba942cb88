"""Which thresholds are learned, from which series, within which bounds.

A threshold is learned when a policy fires while a guest's own rate is *above* it: its normal
range is then a property of the guest (a DNS server takes more interrupts than a mail relay). The
other thresholds are shapes and ratios (a full-sized packet, answers per request, the share of a
CPU others had, the pulsing fraction, the host-wide grant-table rate): they describe the attack,
not the guest, and stay hand-set (NOT_LEARNED says why, one line each).

Each learned signal names the PromQL expression of the per-domain series the policies compare
with that threshold (their left-hand side, from prometheus/rules/policies.yml), the shipped
default's companions: an absolute floor (a quiet guest's threshold is never below it, nor below
the default times the floor factor) and a hard ceiling (never above it, however busy the guest
was: the safety net against a guest that makes abuse its own baseline). The ceilings sit below
what the attacks the shipped policies are written for reach (docs/policies.md); an operator can
set others in the learning config.

tests/policylearn/test_signals.py holds this table against policies.yml: every threshold a
policy compares a rate with is either learned here or listed in NOT_LEARNED.
"""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1024 * 1024


@dataclass(frozen=True)
class Signal:
    policy: str
    signal: str
    # Per (job, instance, domain): the series the policies hold against the threshold.
    expr: str
    # True when `expr` is one selector: read with max_over_time(expr[step]) (every sample);
    # otherwise through a subquery at the evaluation interval.
    selector: bool
    unit: str
    absolute_floor: float
    ceiling: float
    # What the threshold bounds, for the report.
    meaning: str
    # The margin over the guest's high quantile, where the policies need more than the
    # config's (None: the config's margin).
    margin: float | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.policy, self.signal)


_SENT = (
    # The stock flood form fires while both its not-full-sized and its initiated packets are
    # above the bar: the smaller of the two is what the bar must clear.
    "(instance_domain:domain_network_transmit_small_packets:rate10s"
    " < on (job, instance, domain)"
    " instance_domain:domain_network_transmit_initiated_packets:rate10s)"
    " or on (job, instance, domain)"
    " instance_domain:domain_network_transmit_initiated_packets:rate10s"
)

SIGNALS: tuple[Signal, ...] = (
    Signal(
        "network_flood",
        "interrupts_per_second",
        "instance_domain:xen_perfc_interrupts:rate10s",
        True,
        "/s",
        2000,
        20000,
        "interrupts on the guest's CPUs (a ping or UDP flood: 25 000-60 000)",
    ),
    Signal(
        "network_flood",
        "context_switches_per_second",
        "instance_domain:xen_perfc_sched_context_switches:rate10s",
        True,
        "/s",
        2000,
        20000,
        "context switches on the guest's CPUs",
    ),
    Signal(
        "network_flood",
        "kvm_irq_injections_per_second",
        "instance_domain:kvm_vm_irq_injections:rate10s",
        True,
        "/s",
        2000,
        20000,
        "interrupts KVM injected into the guest (KVM hosts)",
    ),
    Signal(
        "network_flood",
        "kvm_halt_wakeups_per_second",
        "instance_domain:kvm_vm_halt_wakeup:rate10s",
        True,
        "/s",
        2000,
        20000,
        "wake-ups of the guest's vCPUs from halt (KVM hosts)",
    ),
    Signal(
        "network_flood",
        "sent_packets_per_second",
        _SENT,
        False,
        "packets/s",
        2000,
        20000,
        "packets sent that are not full-sized and on the guest's own initiative",
    ),
    Signal(
        "cpu_hog",
        "timer_interrupts_per_second_per_vcpu",
        "instance_domain:xen_perfc_apic_timer_interrupts:irate4s"
        " / on (job, instance, domain) (xen_domain_vcpus > 0)",
        False,
        "/s per vCPU",
        # A guest is entitled to its vCPUs, and the policy caps for harm (contention): a quiet
        # history is no reason to cap it sooner. Learning only raises the CPU bars.
        900,
        1000,
        "timer interrupts per vCPU (100 idle, about 1 100 at 100 % busy)",
    ),
    Signal(
        "cpu_hog",
        "cpu_seconds_per_second_per_vcpu",
        "instance_domain:domain_cpu_seconds_per_vcpu:irate4s",
        True,
        "CPU s/s per vCPU",
        0.8,
        0.95,
        "share of its vCPUs the guest keeps busy (1 = all of them, all the time)",
    ),
    Signal(
        "memory_abuse",
        "page_faults_per_second",
        "instance_domain:xen_perfc_page_faults:rate10s",
        True,
        "/s",
        2000,
        30000,
        "page faults taken in Xen on the guest's CPUs",
    ),
    Signal(
        "memory_abuse",
        "page_table_operations_per_second",
        "instance_domain:xen_perfc_page_table_operations:rate10s",
        True,
        "/s",
        500,
        8000,
        "page-table hypercalls on the guest's CPUs",
    ),
    Signal(
        "memory_abuse",
        "memory_growth_bytes_per_second",
        "instance_domain:domain_memory_bytes:deriv30s",
        True,
        "B/s",
        2 * MiB,
        32 * MiB,
        "growth of the domain's memory (ballooning up)",
    ),
    Signal(
        "disk_abuse",
        "block_requests_per_second",
        "instance_domain:domain_block_requests:rate10s",
        True,
        "requests/s",
        500,
        8000,
        "block requests over the guest's vbds (the perf form holds the top guest to half of it)",
        # XenDiskAbusePerfc compares with half this threshold: a margin of 4 leaves the guest's
        # own peaks 2x under that half, as 2 does for every other signal.
        margin=4.0,
    ),
    Signal(
        "disk_abuse",
        "block_bytes_per_second",
        "instance_domain:domain_block_bytes:rate10s",
        True,
        "B/s",
        25 * MiB,
        400 * MiB,
        "block bytes over the guest's vbds",
    ),
)

NOT_LEARNED: dict[tuple[str, str], str] = {
    ("network_flood", "page_table_operations_per_interrupt"): (
        "an upper bound on a ratio that is low in a flood: learning a guest's normal would"
        " raise it towards its busiest web traffic and blind the guard"
    ),
    ("network_flood", "min_packets_per_interrupt"): (
        "what a flood's interrupts cost per packet on Xen (measured), not a guest's habit"
    ),
    ("network_flood", "full_size_packet_bytes"): "the MTU, a property of the network",
    ("network_flood", "answered_sent_per_received_packet"): (
        "a protocol's shape (a TCP sender gets one ACK per two segments)"
    ),
    ("network_flood", "min_initiated_share_of_sent"): "tells the attacker from its victim",
    ("network_flood", "pulsing_active_fraction"): "the duty cycle the pulsing forms catch",
    ("memory_abuse", "pulsing_active_fraction"): "the duty cycle the pulsing forms catch",
    ("disk_abuse", "pulsing_active_fraction"): "the duty cycle the pulsing forms catch",
    ("cpu_hog", "pulsing_active_fraction"): "the duty cycle the pulsing forms catch",
    ("cpu_hog", "context_switches_per_timer_interrupt"): "what a vCPU that never yields looks like",
    ("cpu_hog", "max_packets_per_second"): "hands a packet-bound guest to the network policies",
    ("cpu_hog", "min_others_share_of_a_cpu"): "contention evidence, a property of the placement",
    ("cpu_hog", "busy_fraction_of_a_shared_cpu"): "what saturated means, a property of the CPU",
    ("cpu_hog", "min_share_of_a_saturated_cpu"): "a fairness bar (above an equal split)",
    ("cpu_hog", "kvm_others_vcpu_wait_seconds_per_second"): (
        "contention evidence on KVM: how long other VMs waited, their habit and the"
        " placement's, not the guest's own"
    ),
    ("disk_abuse", "host_grant_table_operations_per_second"): (
        "host-wide (no domain label): the host's I/O pressure, not a guest's habit"
    ),
}

BY_KEY: dict[tuple[str, str], Signal] = {s.key: s for s in SIGNALS}
