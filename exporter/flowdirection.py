"""Who starts the traffic: per-vif counts of the packets a guest sends that open an exchange
(ICMP echo requests, TCP SYNs) or answer one (echo replies, SYN-ACKs), from tc counters on the
vif's ingress (xentools.tcflow). The collector installs the counting filters on a vif that lacks
them (they count and pass every packet on), then reads them; a vif recreated with a new domain
starts again at 0, which Prometheus' rate() takes as a counter reset.

Opt-in (`--collector.flowdirection`): it changes Dom0's tc state (filters at priorities 11-18
on each vif's ingress qdisc, and on kernels without act_gact a sink ifb device).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, Metric

from exporter.collector import Degraded
from exporter.toolstack import DOMAINS, Scrape
from xentools.command import CommandError, run_command
from xentools.sysfs import list_vifs
from xentools.tcflow import (
    FLOW_PREFS,
    PACKET_KINDS,
    install_argvs,
    parse_flow_counts,
    show_argv,
    sink_argvs,
)

log = logging.getLogger(__name__)

DEFAULT_SINK = "jdflowsink"


class FlowDirectionCollector:
    """Sample::

    # TYPE xen_domain_network_transmit_flow_packets_total counter
    xen_domain_network_transmit_flow_packets_total{domain="g1",interface="vif3.0",packet="syn"} 12
    """

    name = "flowdirection"

    def __init__(
        self, sysfs_root: str, tc: str = "tc", ip: str = "ip", sink: str = DEFAULT_SINK
    ) -> None:
        self._sysfs = sysfs_root
        self._tc = tc
        self._ip = ip
        self._sink = sink
        # None until decided: True = act_gact works, False = mirror to the sink device.
        # State kept between scrapes only to avoid re-probing the kernel on every vif.
        self._gact: bool | None = None
        self._lock = threading.Lock()

    def prefetch(self, scrape: Scrape) -> None:
        scrape.start(DOMAINS)

    def collect(self, scrape: Scrape) -> Iterator[Metric]:
        names = {domain.domid: domain.name for domain in scrape.domains()}
        family = CounterMetricFamily(
            "xen_domain_network_transmit_flow_packets_total",
            "Packets sent by the guest that open an exchange (echo_request: ICMP/ICMPv6 echo "
            "requests; syn: TCP SYN without ACK) or answer one (echo_reply, syn_ack), counted by "
            "tc u32 filters on the vif's ingress; restarts at 0 when they are reinstalled",
            labels=["domain", "interface", "packet"],
        )
        failed: list[str] = []
        for vif in list_vifs(self._sysfs):
            domain = names.get(vif.domid)
            if domain is None:
                continue
            try:
                counts = self._counts(vif.name, scrape.timeout())
            except (CommandError, ValueError) as error:
                failed.append(f"{vif.name}: {error}")
                continue
            totals = dict.fromkeys(PACKET_KINDS, 0)
            for pref, packets in counts.items():
                totals[FLOW_PREFS[pref].packet] += packets
            for packet, value in totals.items():
                family.add_metric([domain, vif.name, packet], value)
        yield family
        if failed:
            raise Degraded("; ".join(failed))

    def _counts(self, vif: str, timeout: float) -> dict[int, int]:
        shown = run_command(show_argv(self._tc, vif), timeout)
        if shown.returncode != 0:
            raise CommandError(shown.stderr.strip() or f"tc exited {shown.returncode}")
        counts = parse_flow_counts(shown.stdout)
        missing = set(FLOW_PREFS) - set(counts)
        if missing:
            self._install(vif, missing, timeout)
        return counts

    def _install(self, vif: str, missing: set[int], timeout: float) -> None:
        with self._lock:
            if self._gact is None:
                self._gact = self._try(install_argvs(self._tc, vif, None, missing), timeout)
                if self._gact:
                    return
                log.info("tc has no act_gact here: counting with mirred mirrors to %s", self._sink)
            if not self._gact:
                for argv in sink_argvs(self._tc, self._ip, self._sink):
                    run_command(argv, timeout)
            self._try(
                install_argvs(self._tc, vif, None if self._gact else self._sink, missing), timeout
            )

    def _try(self, argvs: list[list[str]], timeout: float) -> bool:
        """Run the qdisc add (may exist) then the filter adds; True if every filter went in."""
        ok = True
        for index, argv in enumerate(argvs):
            result = run_command(argv, timeout)
            if index > 0 and result.returncode != 0:
                log.debug("%s: %s", " ".join(argv), result.stderr.strip())
                ok = False
        return ok
