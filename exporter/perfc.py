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
import operator
import re
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

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
Rows = tuple[tuple[int, ...], Sequence[int]]  # a counter's CPU ids (or indices) and raw values


@dataclass
class _Counter:
    """One counter's series: those of the last scrape (`ids`, in order, with their last raw
    value and total), and those seen earlier but absent then (`away`: id -> (raw, total))."""

    ids: tuple[int, ...] = ()
    last: list[int] = field(default_factory=list)
    total: list[int] = field(default_factory=list)
    away: dict[int, tuple[int, int]] = field(default_factory=dict)
    seen: list[int] = field(default_factory=list)  # every id ever, sorted

    def previous(self) -> dict[int, tuple[int, int, bool]]:
        """id -> (last raw, total, absent at the last scrape)."""
        known = {i: (raw, total, True) for i, (raw, total) in self.away.items()}
        known.update(
            (i, (raw, total, False))
            for i, raw, total in zip(self.ids, self.last, self.total, strict=True)
        )
        return known


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

    Kept per counter as lists in the order of its series: when a counter has the same series
    as at the last scrape (the usual case), a scrape is one pass over its values.
    """

    def __init__(self) -> None:
        self._counters: dict[str, _Counter] = {}

    def update(
        self,
        samples: Mapping[SeriesKey, int],
        *,
        array_keys: frozenset[SeriesKey] = frozenset(),
        cpus_left: bool = False,
    ) -> dict[SeriesKey, int]:
        """Feed one scrape's raw values; returns the total of every series in `samples`."""
        ids: dict[str, list[int]] = defaultdict(list)
        raws: dict[str, list[int]] = defaultdict(list)
        for (counter, index), raw in samples.items():
            ids[counter].append(index)
            raws[counter].append(raw)
        arrays = frozenset(counter for counter, _ in array_keys)
        totals = self.update_rows(
            {counter: (tuple(ids[counter]), raws[counter]) for counter in ids},
            arrays=arrays,
            cpus_left=cpus_left,
        )
        return {
            (counter, index): total
            for counter, counter_totals in totals.items()
            for index, total in zip(ids[counter], counter_totals, strict=True)
        }

    def update_rows(
        self,
        rows: Mapping[str, Rows],
        *,
        arrays: frozenset[str] = frozenset(),
        cpus_left: bool = False,
    ) -> dict[str, list[int]]:
        """`update` by counter: its ids and raw values in; its totals out, in the same order.
        `arrays`: the array counters (each of their elements is a series)."""
        nonzero = fallen = 0
        for counter, (ids, raws) in rows.items():
            known = self._counters.get(counter)
            if known is None:
                continue
            if known.ids == ids:
                nonzero += len(ids) - known.last.count(0)
                fallen += sum(map(operator.lt, raws, known.last))
            else:
                previous = known.previous()
                for index, raw in zip(ids, raws, strict=True):
                    last = previous.get(index, (0, 0, False))[0]
                    nonzero += last != 0
                    fallen += raw < last
        mass_reset = fallen >= 2 and fallen * 2 >= nonzero
        if mass_reset:
            log.warning(
                "%d of %d hypervisor counters fell at once: read as a reset (xenperf -r), "
                "not as wraps",
                fallen,
                nonzero,
            )
        totals: dict[str, list[int]] = {}
        for counter, (ids, raws) in rows.items():
            known = self._counters.get(counter)
            if known is None:
                known = self._counters[counter] = _Counter()
            array = counter in arrays
            if known.ids == ids and not mass_reset:
                if array:
                    total = [
                        t + r - last
                        if r >= last
                        else t
                        if cpus_left or r == 0
                        else t + r + UINT32 - last
                        for t, r, last in zip(known.total, raws, known.last, strict=True)
                    ]
                else:
                    total = [
                        t + r - last if r >= last else t + r + UINT32 - last
                        for t, r, last in zip(known.total, raws, known.last, strict=True)
                    ]
            else:
                total = self._update_changed(known, ids, raws, array, cpus_left, mass_reset)
            known.ids, known.last, known.total = ids, list(raws), total
            totals[counter] = total
        # Series absent now (an offline CPU, a counter gone) restart from 0 when they come back.
        for counter, known in self._counters.items():
            if counter not in rows and known.ids:
                pairs = zip(known.last, known.total, strict=True)
                known.away.update(zip(known.ids, pairs, strict=True))
                known.ids, known.last, known.total = (), [], []
        return totals

    @staticmethod
    def _update_changed(
        known: _Counter,
        ids: tuple[int, ...],
        raws: Sequence[int],
        array: bool,
        cpus_left: bool,
        mass_reset: bool,
    ) -> list[int]:
        """The series of a counter that changed since the last scrape (or a reset), one by one."""
        previous = known.previous()
        totals = []
        for index, raw in zip(ids, raws, strict=True):
            before = previous.get(index)
            if before is None:
                total = raw
            else:
                last, was_total, returning = before
                if raw >= last:
                    total = was_total + raw - last
                elif returning or mass_reset:
                    total = was_total + raw
                elif array and (cpus_left or raw == 0):
                    # a departed CPU's part of an array sum, or an array zeroed by a reset
                    total = was_total
                else:
                    total = was_total + raw + UINT32 - last
            totals.append(total)
        present = set(ids)
        known.away = {
            index: (raw, total)
            for index, (raw, total, _) in previous.items()
            if index not in present
        }
        new = present.difference(known.seen)
        if new:
            known.seen = sorted(new.union(known.seen))
        return totals

    def indices(self, counter: str) -> list[int]:
        """The CPU ids or element indices of `counter` seen so far, in order."""
        known = self._counters.get(counter)
        return list(known.seen) if known is not None else []


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
        # Each array counter's element indices, with their series prefixes and labels.
        self._array_series: dict[str, tuple[tuple[int, ...], list[str], list[dict[str, str]]]] = {}
        # Series prefixes of each per-CPU counter, with the CPU label texts they were made of.
        self._prefixes: dict[str, tuple[tuple[str, ...], list[str]]] = {}

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
        counters = [counter for counter in snapshot.counters if self._wanted(counter.name)]
        cpus = cpu_ids or tuple(range(snapshot.online_cpus))
        rows: dict[str, Rows] = {}
        arrays = set()
        for counter in counters:
            if counter.kind is CounterKind.PER_CPU:
                rows[counter.name] = (cpus, counter.values)
            elif counter.kind is CounterKind.ARRAY:
                # Elements known from earlier scrapes and absent now are 0 (canonical form).
                size = len(counter.values)
                later = [
                    index for index in self._accumulator.indices(counter.name) if index >= size
                ]
                rows[counter.name] = (
                    (*range(size), *later),
                    [*counter.values, *(0 for _ in later)],
                )
                arrays.add(counter.name)
        current_cpus = frozenset(cpu_ids) if cpu_ids is not None else None
        cpus_left = bool(
            self._previous_cpu_ids
            and current_cpus is not None
            and not self._previous_cpu_ids <= current_cpus
        )
        self._previous_cpu_ids = current_cpus
        totals = self._accumulator.update_rows(rows, arrays=frozenset(arrays), cpus_left=cpus_left)

        # The same labels, and their text, for every per-CPU counter of this scrape (not to
        # be modified), made once per (CPU, owner) ever; each counter's series prefixes made
        # again only when that text changes (CPUs or owners): per series, what is left is
        # its value.
        known = self._cpu_labels
        if len(known) > MAX_CPU_LABELS:  # owners that come and go: start over, not grow
            known.clear()
        entries = []
        for cpu in cpus:
            owner = owners.get(cpu) if cpu_ids is not None else None
            key = (cpu_ids is not None, cpu, owner)
            entry = known.get(key)
            if entry is None:
                labels = {"cpu": str(cpu) if cpu_ids is not None else f"index{cpu}"}
                if owner is not None:
                    labels["domain"] = owner
                entry = known[key] = labels, "{" + label_text(labels) + "} "
            entries.append(entry)
        cpu_label_sets = [labels for labels, _ in entries]
        cpu_texts = tuple(text for _, text in entries)
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
                family.extend(
                    self._series_prefixes(family.sample_name, cpu_texts),
                    cpu_label_sets,
                    totals[counter.name],
                )
                yield family
            else:
                yield self._array_family(
                    name, quoted, counter.name, rows[counter.name][0], totals[counter.name]
                )

    def _series_prefixes(self, sample_name: str, texts: tuple[str, ...]) -> list[str]:
        """`sample_name` + each CPU's label text, kept while the texts stay the same."""
        cached = self._prefixes.get(sample_name)
        if cached is None or cached[0] != texts:
            cached = self._prefixes[sample_name] = texts, [sample_name + text for text in texts]
        return cached[1]

    def _array_family(
        self,
        name: str,
        quoted: str,
        counter: str,
        indices: tuple[int, ...],
        totals: Sequence[int],
    ) -> SeriesFamily:
        family = SeriesFamily(
            name,
            f'xenperf counter "{quoted}" by element, summed over CPUs by the hypervisor; '
            "32-bit wraps accumulated by the exporter between scrapes",
            "counter",
        )
        # Elements only ever appear (WrapAccumulator): the prefixes and labels of a counter's
        # elements are made again only when it has more.
        cached = self._array_series.get(name)
        if cached is None or cached[0] != indices:
            label_sets = []
            for index in indices:
                labels = {"index": str(index)}
                if counter == HYPERCALLS:
                    labels["hypercall"] = hypercall_name(index)
                label_sets.append(labels)
            prefixes = [f"{family.sample_name}{{{label_text(labels)}}} " for labels in label_sets]
            cached = self._array_series[name] = indices, prefixes, label_sets
        family.extend(cached[1], cached[2], totals)
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
