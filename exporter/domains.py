"""Stock per-domain statistics: they work on every Xen, with or without perf counters.

The domain list (libxenctrl's `xc_domain_getinfolist` and xenstore names, or `xl list -v` /
`-l`: `xentools.toolstack`) for CPU time, memory, vCPUs and state; Dom0's sysfs for vif and vbd
counters. Every series is labelled by the domain's name (stable across reboots); its domid and
uuid are in `xen_domain_info`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client.core import Metric

from exporter.collector import Degraded
from exporter.exposition import SeriesCache, SeriesFamily, counter_family, gauge_family
from exporter.toolstack import CPU_IDLE, DOMAIN_STATES, DOMAINS, Scrape
from xentools.sysfs import SECTOR_BYTES, list_vbds, list_vifs, read_vif_stats

log = logging.getLogger(__name__)


class DomainCollector:
    """Per-domain facts from the domain list (libxenctrl and xenstore, or `xl list -v`/`-l`).

    Sample::

        # HELP xen_domain_info Facts about a domain (value 1) ...
        # TYPE xen_domain_info gauge
        xen_domain_info{domain="guest1",domid="3",uuid="6f1c..."} 1.0
        # HELP xen_domain_cpu_seconds_total CPU time the domain's vCPUs used (xl list)
        # TYPE xen_domain_cpu_seconds_total counter
        xen_domain_cpu_seconds_total{domain="guest1"} 12.3
        # TYPE xen_domain_state gauge
        xen_domain_state{domain="guest1",state="blocked"} 1.0
        xen_domain_state{domain="guest1",state="running"} 0.0
        # HELP xen_pcpu_idle_seconds_total Time the physical CPU was idle ...
        # TYPE xen_pcpu_idle_seconds_total counter
        xen_pcpu_idle_seconds_total{cpu="1"} 5231.2

    With the libxenctrl toolstack reader, the host's physical CPUs' idle time rides along
    (`xc_getcpuinfo`, one hypercall): contention evidence every stock Xen has. `xl` prints
    none, so with the xl reader the family is absent.
    """

    name = "domain"

    def __init__(self) -> None:
        # Each domain's series text and labels, made once (the state between scrapes).
        self._series = SeriesCache()

    def prefetch(self, scrape: Scrape) -> None:
        scrape.start(DOMAINS, CPU_IDLE)

    def collect(self, scrape: Scrape) -> Iterator[Metric]:
        domains = scrape.domains()
        info = gauge_family(
            "xen_domain_info",
            "Facts about a domain (value 1); domid changes when the domain reboots (xl list -v)",
            ["domain", "domid", "uuid"],
            self._series,
        )
        cpu = counter_family(
            "xen_domain_cpu_seconds_total",
            "CPU time the domain's vCPUs used (xl list; restarts at 0 when the domain reboots)",
            ["domain"],
            self._series,
        )
        memory = gauge_family(
            "xen_domain_memory_bytes",
            "Memory the domain has, with outstanding claims (xl list)",
            ["domain"],
            self._series,
        )
        max_memory = gauge_family(
            "xen_domain_memory_max_bytes",
            "The domain's maximum memory (xl list -l, max_memkb)",
            ["domain"],
            self._series,
        )
        vcpus = gauge_family(
            "xen_domain_vcpus",
            "The domain's online vCPUs (xl list)",
            ["domain"],
            self._series,
        )
        state = gauge_family(
            "xen_domain_state",
            "1 for each state the domain is in, else 0 (xl list state flags; crashed is a "
            "shutdown for crash)",
            ["domain", "state"],
            self._series,
        )
        for domain in domains:
            info.add_metric([domain.name, str(domain.domid), domain.uuid], 1)
            cpu.add_metric([domain.name], domain.cpu_seconds)
            memory.add_metric([domain.name], domain.memory_bytes)
            if domain.max_memory_bytes is not None:
                max_memory.add_metric([domain.name], domain.max_memory_bytes)
            vcpus.add_metric([domain.name], domain.vcpus)
            for name in DOMAIN_STATES:
                state.add_metric([domain.name, name], 1 if name in domain.states else 0)
        yield from (info, cpu, memory, max_memory, vcpus, state)
        try:
            idle = scrape.cpu_idle()
        except Exception as error:
            raise Degraded(f"xc_getcpuinfo: {error}") from error
        if idle is None:
            return
        family = counter_family(
            "xen_pcpu_idle_seconds_total",
            "Time the physical CPU was idle (xc_getcpuinfo idletime, the idle vCPU's running "
            "time; libxenctrl reader only, offline CPUs left out)",
            ["cpu"],
            self._series,
        )
        for cpu_id, seconds in sorted(idle.items()):
            family.add_metric([str(cpu_id)], seconds)
        yield family


_NETWORK_HELP = (
    "{what} on the domain's {interface} ({host} sysfs class/net statistics {source}; "
    "restarts at 0 when the interface is recreated)"
)


def network_families(
    prefix: str, interface: str, host: str, series: SeriesCache
) -> dict[tuple[str, str], tuple[str, SeriesFamily]]:
    """`<prefix>_domain_network_{transmit,receive}_{bytes,packets,dropped}_total` by
    (direction, unit), each with the `VifStats` attribute it takes: the guest's direction, so
    transmit is the host interface's rx. Shared by Xen's vifs and KVM's taps."""
    families = {}
    for direction, source, what in (
        ("transmit", "rx", "sent by the guest"),
        ("receive", "tx", "received by the guest"),
    ):
        for unit, field, noun in (
            ("bytes", "bytes", "Bytes"),
            ("packets", "packets", "Packets"),
            ("dropped", "dropped", "Packets dropped"),
        ):
            families[direction, unit] = (
                f"{source}_{field}",
                counter_family(
                    f"{prefix}_domain_network_{direction}_{unit}_total",
                    _NETWORK_HELP.format(
                        what=f"{noun} {what}",
                        interface=interface,
                        host=host,
                        source=f"{source}_{field}",
                    ),
                    ["domain", "interface"],
                    series,
                ),
            )
    return families


class _SysfsCollector:
    """Counters Dom0's sysfs holds per backend device, named after the domains xl lists."""

    def __init__(self, sysfs_root: str) -> None:
        self._sysfs = sysfs_root
        # Each device's series text and labels, made once (the state between scrapes).
        self._series = SeriesCache()

    def prefetch(self, scrape: Scrape) -> None:
        scrape.start(DOMAINS)


class NetworkCollector(_SysfsCollector):
    """Per-vif counters from Dom0's sysfs, in the guest's direction.

    Sample::

        # TYPE xen_domain_network_transmit_bytes_total counter
        xen_domain_network_transmit_bytes_total{domain="guest1",interface="vif3.0"} 1.8e+09
    """

    name = "network"

    def collect(self, scrape: Scrape) -> Iterator[Metric]:
        names = {domain.domid: domain.name for domain in scrape.domains()}
        families = network_families("xen", "backend interface", "Dom0", self._series)
        for vif in list_vifs(self._sysfs):
            domain = names.get(vif.domid)
            if domain is None:
                continue  # a backend left behind by a domain that is gone
            try:
                stats = read_vif_stats(vif, self._sysfs)
            except FileNotFoundError:
                continue  # vanished since it was listed
            for attribute, family in families.values():
                family.add_metric([domain, vif.name], getattr(stats, attribute))
        yield from (family for _, family in families.values())


class BlockCollector(_SysfsCollector):
    """blkback's per-vbd counters from Dom0's sysfs.

    Sample::

        # TYPE xen_domain_block_read_requests_total counter
        xen_domain_block_read_requests_total{device="xvda",domain="guest1"} 120034.0
    """

    name = "block"

    def collect(self, scrape: Scrape) -> Iterator[Metric]:
        names = {domain.domid: domain.name for domain in scrape.domains()}
        labels = ["domain", "device"]
        read_requests = counter_family(
            "xen_domain_block_read_requests_total",
            "Read requests blkback served for the vbd (sysfs statistics/rd_req)",
            labels,
            self._series,
        )
        write_requests = counter_family(
            "xen_domain_block_write_requests_total",
            "Write requests blkback served for the vbd (sysfs statistics/wr_req)",
            labels,
            self._series,
        )
        read_bytes = counter_family(
            "xen_domain_block_read_bytes_total",
            "Bytes read through blkback (sysfs statistics/rd_sect x 512)",
            labels,
            self._series,
        )
        written_bytes = counter_family(
            "xen_domain_block_written_bytes_total",
            "Bytes written through blkback (sysfs statistics/wr_sect x 512)",
            labels,
            self._series,
        )
        for vbd in list_vbds(self._sysfs):
            domain = names.get(vbd.domid)
            if domain is None:
                continue
            values = [domain, vbd.device]
            read_requests.add_metric(values, vbd.read_requests)
            write_requests.add_metric(values, vbd.write_requests)
            read_bytes.add_metric(values, vbd.read_sectors * SECTOR_BYTES)
            written_bytes.add_metric(values, vbd.write_sectors * SECTOR_BYTES)
        yield from (read_requests, write_requests, read_bytes, written_bytes)
