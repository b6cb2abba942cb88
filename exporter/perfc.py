"""The hypervisor's performance counters as Prometheus metrics, mapped to CPUs and domains.

Three decisions live here, each a pure function tested on its own (and a fourth, which
counters are exported at all: `DEFAULT_INCLUDE`, those the shipped rules and dashboards read):

- `map_cpu_ids`: plain counters' values come in online-CPU order; which CPU id is index i.
- `exclusive_owners` / `cpu_shares`: which domain a CPU's counts belong to (from `xl vcpu-list`).
- `WrapAccumulator`: the hypervisor's uint32 values wrap silently; we keep 64-bit totals.

State between scrapes (said in HELP and docs/metrics.md too): the accumulator's last raw value
and total per series, the previous scrape's vCPU times (for the share ratio) and CPU ids, the
host's CPU counts from `xl info` (asked again only when the counters show another number of
online CPUs, and every `INFO_REFRESH_SCRAPES` scrapes), and the last attribution (served again,
with the collector marked failed, when `xl vcpu-list` does not answer in time).
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence

from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.collector import Degraded
from exporter.exposition import SeriesFamily, label_text
from exporter.readers import PerfcReader, PerfcUnavailable
from exporter.toolstack import VCPU_LIST, HostInfo, Scrape, VcpuPlacement
from xentools.xenperf import HYPERCALLS, UINT32, CounterKind, PerfcSnapshot, hypercall_name

log = logging.getLogger(__name__)

PREFIX = "xen_perfc_"
# The counters the shipped policies (prometheus/rules/) and dashboards (grafana/dashboards/)
# read: exported by default. The rest (about 90 more on a Debian 12 Xen, 23,000 series on a
# 256-CPU host) only when `--collector.perfc.include` asks. tests/exporter fails when a rule
# or dashboard reads a counter this list misses.
DEFAULT_COUNTERS = (
    "interrupts",
    "apic_timer_interrupts",
    "ipis",
    "sched_context_switches",
    "page_faults",
    "hypercalls",
    "calls_to_mmu_update",
    "calls_to_mmuext_op",
    "calls_to_update_va_map",
)
DEFAULT_INCLUDE = PREFIX + "(" + "|".join(DEFAULT_COUNTERS) + ")"
# `xl info` is asked again at least this often, even when the online CPU count stays the same.
INFO_REFRESH_SCRAPES = 60
MAX_CPU_LABELS = 65_536
_NOT_NAME = re.compile(r"[^a-z0-9]+")


@functools.lru_cache(maxsize=4096)
def metric_name(counter: str) -> str:
    """`sched: context switches` -> `xen_perfc_sched_context_switches` (docs/design.md)."""
    return PREFIX + _NOT_NAME.sub("_", counter.lower()).strip("_")


def map_cpu_ids(
    nr_values: int, max_cpu_id: int, pool_cpus: frozenset[int] | None
) -> tuple[int, ...] | None:
    """CPU id of each value index of a plain counter, None when it cannot be known.

    All CPUs online (nr_values == max_cpu_id + 1): index = id. Otherwise the online CPUs are
    those in cpupools, when they are exactly as many as the values. (Online CPUs outside every
    pool would break that count, so the answer is then "unknown", never a guess.)
    """
    if nr_values == max_cpu_id + 1:
        return tuple(range(nr_values))
    if pool_cpus is not None and len(pool_cpus) == nr_values:
        return tuple(sorted(pool_cpus))
    return None


def exclusive_owners(vcpus: Iterable[VcpuPlacement], cpu_ids: Iterable[int]) -> dict[int, str]:
    """CPU id -> the one domain whose online vCPUs alone may run there (by hard affinity)."""
    allowed: dict[int, set[str]] = defaultdict(set)
    cpus = set(cpu_ids)
    for vcpu in vcpus:
        if vcpu.cpu is None:
            continue
        for cpu in cpus if vcpu.hard is None else vcpu.hard & cpus:
            allowed[cpu].add(vcpu.domain)
    return {cpu: next(iter(names)) for cpu, names in allowed.items() if len(names) == 1}


VcpuKey = tuple[str, int, int]  # (domain, domid, vcpu): a reboot is a new domid, a new series


def cpu_shares(
    vcpus: Sequence[VcpuPlacement],
    previous_times: Mapping[VcpuKey, float] | None,
    owners: Mapping[int, str],
) -> dict[tuple[int, str], float]:
    """(CPU, domain) -> the share of that CPU's vCPU time the domain had since the last scrape.

    A vCPU's time since the last scrape is put on the CPU `xl vcpu-list` shows it on (exact for
    a vCPU pinned to one CPU). A CPU owned by one domain gives it 1. Where no vCPU time accrued
    on a CPU (idle, or the first scrape), the shares follow the number of vCPUs there. The
    shares of a CPU always add up to 1, so apportioning per-CPU rates never double counts.
    """
    time_on: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    count_on: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for vcpu in vcpus:
        if vcpu.cpu is None or vcpu.cpu in owners:
            continue
        key = (vcpu.domain, vcpu.domid, vcpu.vcpu)
        before = None if previous_times is None else previous_times.get(key)
        spent = 0.0 if before is None else max(0.0, vcpu.time_seconds - before)
        time_on[vcpu.cpu][vcpu.domain] += spent
        count_on[vcpu.cpu][vcpu.domain] += 1
    shares = {(cpu, domain): 1.0 for cpu, domain in owners.items()}
    for cpu, counts in count_on.items():
        times = time_on[cpu]
        spent_total = sum(times.values())
        vcpus_total = sum(counts.values())
        for domain in counts:
            shares[cpu, domain] = (
                times[domain] / spent_total if spent_total > 0 else counts[domain] / vcpus_total
            )
    return shares


SeriesKey = tuple[str, int]  # (counter, CPU id or array index)


class WrapAccumulator:
    """64-bit totals of uint32 series that wrap; this is the exporter's state between scrapes.

    A series seen for the first time starts at its raw value. Afterwards, each scrape adds the
    increase since the last one. A decrease is a wrap (adds raw + 2^32 - last) except:
    - the CPU was offline at the last scrape: Xen restarted its counters at 0 (adds raw);
    - the online CPU set shrank and this is an array element: the hypervisor sums arrays over
      online CPUs only, so the departed CPU's part vanished (adds 0); likewise an array element
      that fell to exactly 0 was reset (adds 0);
    - at least half of the non-zero series fell at once: someone reset the counters with
      `xenperf -r` (adds raw). The exporter itself never resets them.
    """

    def __init__(self) -> None:
        self._last: dict[SeriesKey, int] = {}
        self._total: dict[SeriesKey, int] = {}
        self._returning: set[SeriesKey] = set()
        self._indices: dict[str, set[int]] = defaultdict(set)

    def update(
        self,
        samples: Mapping[SeriesKey, int],
        *,
        array_keys: frozenset[SeriesKey] = frozenset(),
        cpus_left: bool = False,
    ) -> dict[SeriesKey, int]:
        """Feed one scrape's raw values; returns the total of every series in `samples`."""
        previously_nonzero = [key for key, raw in self._last.items() if raw and key in samples]
        fallen = sum(1 for key in previously_nonzero if samples[key] < self._last[key])
        mass_reset = fallen >= 2 and fallen * 2 >= len(previously_nonzero)
        if mass_reset:
            log.warning(
                "%d of %d hypervisor counters fell at once: read as a reset (xenperf -r), "
                "not as wraps",
                fallen,
                len(previously_nonzero),
            )
        totals = {}
        for key, raw in samples.items():
            last = self._last.get(key)
            if last is None:
                total = raw
            elif raw >= last:
                total = self._total[key] + raw - last
            elif key in self._returning or mass_reset:
                total = self._total[key] + raw
            elif key in array_keys and (cpus_left or raw == 0):
                # a departed CPU's part of an array sum, or an array zeroed by a reset
                total = self._total[key]
            else:
                total = self._total[key] + raw + UINT32 - last
            if last is None:
                self._indices[key[0]].add(key[1])
            self._last[key] = raw
            self._total[key] = totals[key] = total
        # Series absent now (an offline CPU) restart from 0 when they come back.
        self._returning = {key for key in self._last if key not in samples}
        return totals

    def indices(self, counter: str) -> list[int]:
        """The CPU ids or element indices of `counter` seen so far, in order."""
        return sorted(self._indices.get(counter, ()))


class PerfcCollector:
    """Hypervisor performance counters, per physical CPU or host-wide, with CPU -> domain shares.

    Sample::

        # HELP xen_perfc_interrupts_total xenperf counter "#interrupts" per physical CPU ...
        # TYPE xen_perfc_interrupts_total counter
        xen_perfc_interrupts_total{cpu="1",domain="guest1"} 5.6913e+06
        xen_perfc_interrupts_total{cpu="0"} 3.1e+06
        # HELP xen_perfc_hypercalls_total xenperf counter "hypercalls" by element ...
        # TYPE xen_perfc_hypercalls_total counter
        xen_perfc_hypercalls_total{hypercall="grant_table_op",index="20"} 1234.0
        # HELP xen_perfc_number_of_shadow_pages_in_use xenperf status counter ...
        # TYPE xen_perfc_number_of_shadow_pages_in_use gauge
        xen_perfc_number_of_shadow_pages_in_use 10.0
        # HELP xen_pcpu_domain_share_ratio Share of the physical CPU's vCPU time ...
        # TYPE xen_pcpu_domain_share_ratio gauge
        xen_pcpu_domain_share_ratio{cpu="1",domain="guest1"} 1.0
        # HELP xen_perfc_available 1 when the hypervisor has performance counters ...
        # TYPE xen_perfc_available gauge
        xen_perfc_available 1.0
    """

    name = "perfc"

    def __init__(
        self, reader: PerfcReader, include: str | re.Pattern[str] = DEFAULT_INCLUDE
    ) -> None:
        """`include`: the counters to export, a regex matching the whole metric name without
        `_total` (`xen_perfc_sched_context_switches`); the others are not even accumulated."""
        self._reader = reader
        self._include = re.compile(include) if isinstance(include, str) else include
        self._included: dict[str, bool] = {}
        # One scrape at a time through the state below; others wait (each bounded by timeouts).
        self._lock = threading.Lock()
        self._accumulator = WrapAccumulator()
        self._previous_vcpu_times: dict[VcpuKey, float] | None = None
        self._previous_cpu_ids: frozenset[int] | None = None
        self._host_info: HostInfo | None = None
        self._info_age = 0
        self._last_vcpus: Sequence[VcpuPlacement] | None = None
        self._last_shares: dict[tuple[int, str], float] = {}
        self._unavailable_logged = False
        self._unmapped_logged = False
        self._duplicates_logged: set[str] = set()
        # Labels and text of each CPU with its owner, by (CPUs mapped, CPU, owner).
        self._cpu_labels: dict[tuple[bool, int, str | None], tuple[dict[str, str], str]] = {}
        # Labels and text of each array element; elements only ever appear (WrapAccumulator).
        self._array_series: dict[tuple[str, int], tuple[dict[str, str], str]] = {}

    def prefetch(self, scrape: Scrape) -> None:
        # Only once the CPU counts are known: vcpu-list's affinities are read against them.
        if self._host_info is not None:
            scrape.start(VCPU_LIST)

    def collect(self, scrape: Scrape) -> Iterator[Metric]:
        with self._lock:
            yield from self._collect(scrape)

    def _host(self, scrape: Scrape, known: HostInfo | None, online_cpus: int | None) -> HostInfo:
        """`xl info`, asked only when the CPU counts may have changed (or now and then)."""
        if (
            known is None
            or (online_cpus is not None and online_cpus != known.nr_cpus)
            or self._info_age >= INFO_REFRESH_SCRAPES
        ):
            known = scrape.info()
            self._info_age = 0
        self._info_age += 1
        self._host_info = known
        return known

    def _collect(self, scrape: Scrape) -> Iterator[Metric]:
        available = GaugeMetricFamily(
            "xen_perfc_available",
            "1 when the hypervisor has performance counters, 0 when it was built without "
            "(ENOSYS: CONFIG_PERF_COUNTERS off, the distributions' default)",
        )
        # Read the counters first, as close as possible to the moment Prometheus stamps the
        # scrape with; `xl info` (a process) comes after. The read needs the host's CPU counts
        # only to size buffers and as a fallback, so the previous scrape's answer does.
        known = self._host_info
        try:
            if known is None:
                known = self._host(scrape, None, None)
            snapshot = self._reader.read(known.nr_cpus, known.max_cpu_id, scrape.timeout())
        except PerfcUnavailable as error:
            info = self._host(scrape, self._host_info, None)
            if not self._unavailable_logged:
                log.warning("no hypervisor performance counters (%s); serving the rest", error)
                self._unavailable_logged = True
            available.add_metric([], 0)
            yield available
            yield from self._shares(scrape, info.max_cpu_id, None)
            return
        self._unavailable_logged = False
        info = self._host(scrape, known, snapshot.online_cpus)
        if info != known and snapshot.online_cpus != info.nr_cpus:
            # the CPU set changed since the last scrape: read again with the fresh facts
            snapshot = self._reader.read(info.nr_cpus, info.max_cpu_id, scrape.timeout())
        available.add_metric([], 1)
        yield available

        pool_cpus = None
        if snapshot.online_cpus != info.max_cpu_id + 1:
            try:
                pool_cpus = scrape.pool_cpus()
            except Exception as error:  # the counters are still worth serving, by position
                log.debug("cpupools unknown: %s", error)
        cpu_ids = map_cpu_ids(snapshot.online_cpus, info.max_cpu_id, pool_cpus)
        if cpu_ids is None and not self._unmapped_logged:
            log.warning(
                "%d online CPUs of %d, and the cpupools do not say which: per-CPU counters are "
                'labelled by position (cpu="index<N>") without domains',
                snapshot.online_cpus,
                info.max_cpu_id + 1,
            )
            self._unmapped_logged = True
        elif cpu_ids is not None:
            self._unmapped_logged = False
        try:
            vcpus = scrape.vcpu_list()
        except Exception as error:
            if self._last_vcpus is None:
                raise
            # xl is late or failing: the counters are still worth serving, attributed as at
            # the last scrape that had an answer; the collector reports the failure.
            owners = exclusive_owners(self._last_vcpus, cpu_ids or ())
            yield from self._counters(snapshot, cpu_ids, owners)
            yield self._shares_family(self._last_shares)
            raise Degraded(f"{error}; served the last known CPU -> domain attribution") from error
        owners = exclusive_owners(vcpus, cpu_ids or ())
        yield from self._counters(snapshot, cpu_ids, owners)
        yield self._share_family(vcpus, owners)

    def _shares(
        self, scrape: Scrape, max_cpu_id: int, cpu_ids: tuple[int, ...] | None
    ) -> Iterator[Metric]:
        vcpus = scrape.vcpu_list()
        owners = exclusive_owners(vcpus, cpu_ids or range(max_cpu_id + 1))
        yield self._share_family(vcpus, owners)

    def _share_family(
        self, vcpus: Sequence[VcpuPlacement], owners: Mapping[int, str]
    ) -> GaugeMetricFamily:
        shares = cpu_shares(vcpus, self._previous_vcpu_times, owners)
        self._previous_vcpu_times = {
            (v.domain, v.domid, v.vcpu): v.time_seconds for v in vcpus if v.cpu is not None
        }
        self._last_vcpus = vcpus
        self._last_shares = shares
        return self._shares_family(shares)

    @staticmethod
    def _shares_family(shares: Mapping[tuple[int, str], float]) -> GaugeMetricFamily:
        family = GaugeMetricFamily(
            "xen_pcpu_domain_share_ratio",
            "Share of the physical CPU's vCPU time each domain had since the previous scrape "
            "(1 for a CPU only that domain may run on; from xl vcpu-list, kept between "
            "scrapes); multiply per-CPU rates by it to apportion them to domains",
            labels=["cpu", "domain"],
        )
        for (cpu, domain), share in sorted(shares.items()):
            family.add_metric([str(cpu), domain], share)
        return family

    def _wanted(self, counter: str) -> bool:
        wanted = self._included.get(counter)
        if wanted is None:
            wanted = self._included[counter] = bool(self._include.fullmatch(metric_name(counter)))
        return wanted

    def _counters(
        self,
        snapshot: PerfcSnapshot,
        cpu_ids: tuple[int, ...] | None,
        owners: Mapping[int, str],
    ) -> Iterator[Metric]:
        samples: dict[SeriesKey, int] = {}
        array_keys = set()
        counters = [counter for counter in snapshot.counters if self._wanted(counter.name)]
        for counter in counters:
            if counter.kind is CounterKind.PER_CPU:
                ids = cpu_ids or range(len(counter.values))
                for cpu, raw in zip(ids, counter.values, strict=True):
                    samples[counter.name, cpu] = raw
            elif counter.kind is CounterKind.ARRAY:
                for index, raw in enumerate(counter.values):
                    samples[counter.name, index] = raw
                    array_keys.add((counter.name, index))
                # Elements known from earlier scrapes and absent now are 0 (canonical form).
                for index in self._accumulator.indices(counter.name):
                    samples.setdefault((counter.name, index), 0)
                    array_keys.add((counter.name, index))
        current_cpus = frozenset(cpu_ids) if cpu_ids is not None else None
        cpus_left = bool(
            self._previous_cpu_ids
            and current_cpus is not None
            and not self._previous_cpu_ids <= current_cpus
        )
        self._previous_cpu_ids = current_cpus
        totals = self._accumulator.update(
            samples, array_keys=frozenset(array_keys), cpus_left=cpus_left
        )

        # The same labels, and their text, for every per-CPU counter of this scrape (not to
        # be modified), made once per (CPU, owner) ever: the per-series work left is a lookup
        # and a concatenation.
        known = self._cpu_labels
        if len(known) > MAX_CPU_LABELS:  # owners that come and go: start over, not grow
            known.clear()
        cpu_labels: dict[int, tuple[dict[str, str], str]] = {}
        for cpu in cpu_ids or range(snapshot.online_cpus):
            owner = owners.get(cpu) if cpu_ids is not None else None
            key = (cpu_ids is not None, cpu, owner)
            entry = known.get(key)
            if entry is None:
                labels = {"cpu": str(cpu) if cpu_ids is not None else f"index{cpu}"}
                if owner is not None:
                    labels["domain"] = owner
                entry = known[key] = labels, "{" + label_text(labels) + "} "
            cpu_labels[cpu] = entry
        seen: set[str] = set()
        for counter in counters:
            name = metric_name(counter.name)
            if name == PREFIX or name in seen:
                if counter.name not in self._duplicates_logged:
                    log.warning("xenperf counter %r: name %s taken, skipped", counter.name, name)
                    self._duplicates_logged.add(counter.name)
                continue
            seen.add(name)
            quoted = counter.name
            if counter.kind is CounterKind.STATUS:
                gauge = GaugeMetricFamily(
                    name,
                    f'xenperf status counter "{quoted}": the sum of its per-CPU parts modulo '
                    "2^32, read as signed (a gauge, not reset by xenperf -r)",
                )
                gauge.add_metric([], counter.status_value)
                yield gauge
            elif counter.kind is CounterKind.PER_CPU:
                family = SeriesFamily(
                    name,
                    f'xenperf counter "{quoted}" per physical CPU; domain set where only that '
                    "domain's vCPUs may run on the CPU; 32-bit wraps accumulated by the "
                    "exporter between scrapes",
                    "counter",
                )
                sample_name = family.sample_name
                for cpu in cpu_ids or range(len(counter.values)):
                    labels, text = cpu_labels[cpu]
                    family.add_series(sample_name + text, labels, totals[counter.name, cpu])
                yield family
            else:
                elements = [
                    (index, totals[counter.name, index])
                    for index in self._accumulator.indices(counter.name)
                ]
                yield self._array_family(name, quoted, counter.name, elements)

    def _array_family(
        self, name: str, quoted: str, counter: str, elements: Sequence[tuple[int, int]]
    ) -> SeriesFamily:
        family = SeriesFamily(
            name,
            f'xenperf counter "{quoted}" by element, summed over CPUs by the hypervisor; '
            "32-bit wraps accumulated by the exporter between scrapes",
            "counter",
        )
        series = self._array_series
        for index, total in elements:
            known = series.get((name, index))
            if known is None:
                labels = {"index": str(index)}
                if counter == HYPERCALLS:
                    labels["hypercall"] = hypercall_name(index)
                prefix = f"{family.sample_name}{{{label_text(labels)}}} "
                known = series[name, index] = labels, prefix
            family.add_series(known[1], known[0], total)
        return family


__all__ = [
    "DEFAULT_INCLUDE",
    "PerfcCollector",
    "WrapAccumulator",
    "cpu_shares",
    "exclusive_owners",
    "map_cpu_ids",
    "metric_name",
]
