"""Who starts the traffic: per-vif counts of the packets a guest sends that open an exchange
(ICMP echo requests, TCP SYNs) or answer one (echo replies, SYN-ACKs), from tc counters on the
vif's ingress (xentools.tcflow). The collector installs the counting filters on a vif that lacks
them (they count and pass every packet on), then reads them; a vif recreated with a new domain
starts again at 0, which Prometheus' rate() takes as a counter reset.

Opt-in (`--collector.flowdirection`): it changes Dom0's tc state (filters at priorities 11-20
on each vif's ingress qdisc, and on kernels without act_gact a sink ifb device).

Cost per scrape: one `tc actions ls` for every vif together, started in `prefetch` so that it
overlaps the toolstack's questions; a vif's filters are read (and installed) only when the
collector has not seen it yet or its counters vanished.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, Metric

from exporter.collector import Degraded
from exporter.toolstack import DOMAINS, Scrape
from xentools.command import CommandError, run_command
from xentools.sysfs import Vif, list_vifs
from xentools.tcflow import (
    FLOW_PREFS,
    PACKET_KINDS,
    actions_argv,
    install_argvs,
    parse_action_counts,
    parse_flow_indexes,
    show_argv,
    sink_argvs,
)

log = logging.getLogger(__name__)

DEFAULT_SINK = "jdflowsink"
_Counts = dict[Vif, dict[str, int]]


class InterfaceLister(Protocol):
    """Which host interfaces carry what a guest sends, and whose they are.

    `interfaces()` runs in the collector's background thread (never waits on a scrape);
    `owners(scrape)` maps an interface's `domid` to the domain's name in the scrape's thread.
    """

    kind: str  # what the HELP calls one: vif, tap

    def prefetch(self, scrape: Scrape) -> None: ...

    def interfaces(self) -> Sequence[Vif]: ...

    def owners(self, scrape: Scrape) -> Mapping[int, str]: ...


class XenVifs:
    """Dom0's vifs (sysfs) and the toolstack's domain list."""

    kind = "vif"

    def __init__(self, sysfs_root: str) -> None:
        self._sysfs = sysfs_root

    def prefetch(self, scrape: Scrape) -> None:
        scrape.start(DOMAINS)

    def interfaces(self) -> Sequence[Vif]:
        return list_vifs(self._sysfs)

    def owners(self, scrape: Scrape) -> Mapping[int, str]:
        return {domain.domid: domain.name for domain in scrape.domains()}


class FlowDirectionCollector:
    """Sample::

    # TYPE xen_domain_network_transmit_flow_packets_total counter
    xen_domain_network_transmit_flow_packets_total{domain="g1",interface="vif3.0",packet="syn"} 12
    """

    name = "flowdirection"

    def __init__(
        self,
        lister: InterfaceLister,
        tc: str = "tc",
        ip: str = "ip",
        sink: str = DEFAULT_SINK,
        command_timeout: float = 3.0,
        prefix: str = "xen",
    ) -> None:
        self._lister = lister
        self._prefix = prefix
        self._tc = tc
        self._ip = ip
        self._sink = sink
        self._command_timeout = command_timeout
        # State between scrapes, kept only to spare tc runs: whether act_gact works (None:
        # not tried yet), and each vif's action index per filter priority.
        self._gact: bool | None = None
        self._indexes: dict[str, dict[int, int]] = {}
        self._lock = threading.Lock()
        # One reading at a time, in the background: it runs its own command timeouts, not the
        # scrape's budget, and each scrape serves the newest reading finished in its budget.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="flowdirection")
        self._running: Future[tuple[_Counts, list[str]]] | None = None
        self._last: tuple[_Counts, list[str]] | None = None
        self._last_read_seconds = 0.0

    def prefetch(self, scrape: Scrape) -> None:
        self._lister.prefetch(scrape)
        self._start()

    def _start(self) -> Future[tuple[_Counts, list[str]]]:
        with self._lock:
            if self._running is None or self._running.done():
                self._running = self._executor.submit(self._read)
                self._running.add_done_callback(self._keep)
            return self._running

    def _keep(self, done: Future[tuple[_Counts, list[str]]]) -> None:
        # A read that finishes between scrapes is served by the next one, which would
        # otherwise start another and never see it.
        if not done.cancelled() and done.exception() is None:
            self._last = done.result()

    def collect(self, scrape: Scrape) -> Iterator[Metric]:
        running = self._start()
        names = self._lister.owners(scrape)
        # A read that outlives this scrape (a busy Dom0, or the first installation) leaves the
        # last counts read in place: still true counter values, only older. When the last read
        # took longer than this scrape has left, it is not waited for at all: waiting would
        # stretch every scrape to its deadline (a slow answer then fails the scrape, and the
        # rules' 10 s rate windows lose samples) for a read not expected to finish in time.
        left = scrape.deadline - time.monotonic()
        wait = max(0.0, left) if self._last is None or self._last_read_seconds <= left else 0.0
        with contextlib.suppress(FutureTimeout):
            self._last = running.result(timeout=wait)  # or the read's own error
        family = CounterMetricFamily(
            f"{self._prefix}_domain_network_transmit_flow_packets_total",
            "Packets sent by the guest that open an exchange (echo_request: ICMP/ICMPv6 echo "
            "requests; syn: TCP SYN without ACK) or answer one (echo_reply, syn_ack), and IP "
            "fragments after a datagram's first (fragment), counted by tc u32 filters on the "
            f"{self._lister.kind}'s ingress; restarts at 0 when they are reinstalled",
            labels=["domain", "interface", "packet"],
        )
        if self._last is None:
            yield family
            raise Degraded("the first reading of the tc counters is still running")
        counts, failed = self._last
        for vif, totals in counts.items():
            domain = names.get(vif.domid)
            if domain is not None:
                for packet, value in totals.items():
                    family.add_metric([domain, vif.name, packet], value)
        yield family
        if failed:
            raise Degraded("; ".join(failed))

    def _read(self) -> tuple[_Counts, list[str]]:
        started = time.monotonic()
        try:
            return self._read_counts()
        finally:
            self._last_read_seconds = time.monotonic() - started

    def _read_counts(self) -> tuple[_Counts, list[str]]:
        vifs = self._lister.interfaces()
        self._indexes = {k: v for k, v in self._indexes.items() if k in {x.name for x in vifs}}
        actions = self._actions()
        counts: _Counts = {}
        failed: list[str] = []
        for vif in vifs:
            indexes = self._indexes.get(vif.name, {})
            if set(indexes) != set(FLOW_PREFS) or any(i not in actions for i in indexes.values()):
                try:
                    indexes = self._ensure(vif.name)
                except (CommandError, ValueError) as error:
                    failed.append(f"{vif.name}: {error}")
                    continue
                actions = self._actions()
            totals = dict.fromkeys(PACKET_KINDS, 0)
            for pref, index in indexes.items():
                totals[FLOW_PREFS[pref].packet] += actions.get(index, 0)
            counts[vif] = totals
        return counts, failed

    def _actions(self) -> dict[int, int]:
        kind = "gact" if self._gact else "mirred"
        result = run_command(actions_argv(self._tc, kind), self._command_timeout)
        if result.returncode != 0:
            return {}
        return parse_action_counts(result.stdout)

    def _ensure(self, vif: str) -> dict[int, int]:
        """Our filters' action indexes on `vif`, installing the missing ones first."""
        shown = run_command(show_argv(self._tc, vif), self._command_timeout)
        if shown.returncode != 0:
            raise CommandError(shown.stderr.strip() or f"tc exited {shown.returncode}")
        indexes = parse_flow_indexes(shown.stdout)
        missing = set(FLOW_PREFS) - set(indexes)
        if missing:
            self._install(vif, missing)
            shown = run_command(show_argv(self._tc, vif), self._command_timeout)
            indexes = parse_flow_indexes(shown.stdout)
        self._indexes[vif] = indexes
        if set(indexes) != set(FLOW_PREFS):
            raise CommandError(f"counting filters missing at priorities {sorted(missing)}")
        return indexes

    def _install(self, vif: str, missing: set[int]) -> None:
        if self._gact is None:
            self._gact = self._try(install_argvs(self._tc, vif, None, missing))
            if self._gact:
                return
            log.info("tc has no act_gact here: counting with mirred mirrors to %s", self._sink)
        if not self._gact:
            for argv in sink_argvs(self._tc, self._ip, self._sink):
                run_command(argv, self._command_timeout)
        sink = None if self._gact else self._sink
        self._try(install_argvs(self._tc, vif, sink, missing))

    def _try(self, argvs: list[list[str]]) -> bool:
        """Run the qdisc add (may exist) then the filter adds; True if every filter went in."""
        ok = True
        for index, argv in enumerate(argvs):
            result = run_command(argv, self._command_timeout)
            if index > 0 and result.returncode != 0:
                log.debug("%s: %s", " ".join(argv), result.stderr.strip())
                ok = False
        return ok
