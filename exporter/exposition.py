"""The Prometheus text format (0.0.4), as prometheus_client's `generate_latest` writes it, faster.

An exporter's series keep their names and labels from one scrape to the next, so the text in
front of each value (`name{label="value",...} `) is kept and reused; only the values are
formatted anew. Families are still built fresh by the collectors on every scrape. Only what our
collectors produce is handled (counter and gauge families, samples without timestamps);
`tests/exporter/test_exporter_exposition.py` holds the output byte-equal to `generate_latest`.

A collector with many series of few label sets (the per-CPU counters) builds a `SeriesFamily`
instead: it hands over each series' text prefix with its value, and the `Sample` objects that
prometheus_client's own consumers read are only made when they ask.

Why not `generate_latest` (the only reason this module exists): the same whole scrape (perfc
and domain collectors, shipped counter selection, libxenctrl) costs 1.7-1.9x as much CPU
written by `generate_latest`: 2.69 against 5.22 ms on 4 CPUs / 3 guests, 23.6 against 44.3 ms
on 256 CPUs / 3 guests (the goal is 10 ms), 67.9 against 114.7 ms on 256 CPUs / 255 guests
(`bench/exporter.py`, 2026-12-01, one run, load average 13 on 2 cores; docs/performance.md).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence

from prometheus_client import utils
from prometheus_client.core import Metric
from prometheus_client.samples import Sample

_go_float: Callable[[float], str] = utils.floatToGoString


# Integers below this are exact as floats, so their float repr is their digits and ".0".
_EXACT_INTEGERS = 1 << 53


def format_value(value: float) -> str:
    """Go's float formatting as prometheus_client does it; integers the short way."""
    if type(value) is int and 0 <= value < _EXACT_INTEGERS:
        if value < 1_000_000:
            return f"{value}.0"
        # what floatToGoString makes of repr(float(value)): Go's exponent form
        digits = str(value)
        mantissa = f"{digits[0]}.{digits[1:]}0".rstrip("0.")
        return f"{mantissa}e+{len(digits) - 1:02d}"
    return _go_float(value)


_EXPONENTS = tuple(f"e+{digits - 1:02d}" for digits in range(17))


def format_values(values: Iterable[float]) -> list[str]:
    """`format_value` of each, in one loop (a scrape formats thousands of counter values)."""
    out: list[str] = []
    append = out.append
    for value in values:
        if type(value) is int and 0 <= value < _EXACT_INTEGERS:
            if value < 1_000_000:
                append(f"{value}.0")
            else:
                digits = str(value)
                append(f"{digits[0]}.{digits[1:]}0".rstrip("0.") + _EXPONENTS[len(digits)])
        else:
            append(_go_float(value))
    return out


# Series that vanish (a domain destroyed, a CPU gone) leave their prefix behind; start over
# beyond this many rather than grow without bound.
MAX_CACHED_PREFIXES = 200_000


class UnsupportedMetric(ValueError):
    """A family this renderer does not write (type other than counter/gauge, timestamps)."""


def _escape_label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def label_text(labels: Mapping[str, str]) -> str:
    """`a="1",b="x"`: the labels sorted by name, values escaped, as inside `{...}`."""
    return ",".join(
        f'{label}="{_escape_label_value(value)}"' for label, value in sorted(labels.items())
    )


class SeriesCache:
    """Each series' text prefix and labels by (sample name, label values), kept between
    scrapes by the collector that owns it: a series seen before costs one lookup.

    Series that vanish (a domain destroyed) leave their entry behind: beyond
    `MAX_CACHED_PREFIXES` entries it starts over rather than grow without bound.
    """

    def __init__(self) -> None:
        self._known: dict[tuple[str, tuple[str, ...]], tuple[str, dict[str, str]]] = {}

    def series(
        self, sample_name: str, label_names: Sequence[str], values: tuple[str, ...]
    ) -> tuple[str, dict[str, str]]:
        """(`sample_name{label_text} `, labels) of the series with these label values."""
        known = self._known.get((sample_name, values))
        if known is None:
            if len(self._known) > MAX_CACHED_PREFIXES:
                self._known = {}
            labels = dict(zip(label_names, values, strict=True))
            prefix = f"{sample_name}{{{label_text(labels)}}} " if labels else f"{sample_name} "
            known = self._known[sample_name, values] = prefix, labels
        return known


class SeriesFamily(Metric):
    """A counter or gauge family given as (text prefix, labels, value) per series.

    `prefix` is `sample_name{label_text} ` (see `label_text`), or `sample_name ` without
    labels; the caller keeps it consistent with `labels`. `samples` is made on demand.
    `extend` adds many series at once: a collector whose series keep their labels from one
    scrape to the next hands over the same prefix and label lists every time, and only the
    values are new. Given `labels` (names) and a `SeriesCache`, `add_metric(values, value)`
    adds a series as prometheus_client's families do, its prefix made once per series.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        kind: str,
        labels: Sequence[str] = (),
        cache: SeriesCache | None = None,
    ) -> None:
        self._prefixes: list[str] = []
        self._labels: list[Mapping[str, str]] = []
        self._values: list[float] = []
        super().__init__(name, documentation, kind)
        self.sample_name = name + "_total" if kind == "counter" else name
        self._label_names = tuple(labels)
        self._cache = cache

    def add_metric(self, values: Sequence[str], value: float) -> None:
        if self._cache is None:
            raise TypeError("add_metric needs the family's SeriesCache")
        prefix, labels = self._cache.series(self.sample_name, self._label_names, tuple(values))
        self.add_series(prefix, labels, value)

    def add_series(self, prefix: str, labels: Mapping[str, str], value: float) -> None:
        self._prefixes.append(prefix)
        self._labels.append(labels)
        self._values.append(value)

    def extend(
        self, prefixes: Sequence[str], labels: Sequence[Mapping[str, str]], values: Sequence[float]
    ) -> None:
        if not len(prefixes) == len(labels) == len(values):
            raise ValueError("one prefix, one label set and one value per series")
        self._prefixes.extend(prefixes)
        self._labels.extend(labels)
        self._values.extend(values)

    @property
    def rows(self) -> list[tuple[str, Mapping[str, str], float]]:
        return list(zip(self._prefixes, self._labels, self._values, strict=True))

    def text(self) -> str:
        """The series' lines."""
        if not self._values:
            return ""
        return "\n".join(map(str.__add__, self._prefixes, format_values(self._values))) + "\n"

    @property
    def samples(self) -> list[Sample]:
        return [
            Sample(self.sample_name, dict(labels), value)
            for labels, value in zip(self._labels, self._values, strict=True)
        ]

    @samples.setter
    def samples(self, value: list[Sample]) -> None:
        if value:  # Metric.__init__ sets it empty; nothing else may
            raise TypeError("add series with add_series")


def counter_family(
    name: str, documentation: str, labels: Sequence[str], cache: SeriesCache
) -> SeriesFamily:
    """As `CounterMetricFamily(name, documentation, labels=labels)`, its prefixes in `cache`."""
    return SeriesFamily(name.removesuffix("_total"), documentation, "counter", labels, cache)


def gauge_family(
    name: str, documentation: str, labels: Sequence[str], cache: SeriesCache
) -> SeriesFamily:
    """As `GaugeMetricFamily(name, documentation, labels=labels)`, its prefixes in `cache`."""
    return SeriesFamily(name, documentation, "gauge", labels, cache)


class TextRenderer:
    def __init__(self) -> None:
        self._prefixes: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}
        self._lock = threading.Lock()

    def render(self, families: Iterable[Metric]) -> bytes:
        prefixes = self._prefixes
        if len(prefixes) > MAX_CACHED_PREFIXES:
            with self._lock:
                prefixes = self._prefixes = {}
        output: list[str] = []
        append = output.append
        for family in families:
            kind = family.type
            if kind == "counter":
                name = family.name + "_total"
            elif kind == "gauge":
                name = family.name
            else:
                raise UnsupportedMetric(f"{family.name}: {kind} families are not supported")
            help_text = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
            append(f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n")
            if type(family) is SeriesFamily:
                append(family.text())
                continue
            for sample in family.samples:
                if sample.timestamp is not None or sample.exemplar is not None:
                    raise UnsupportedMetric(f"{sample.name}: timestamps/exemplars not supported")
                key = (sample.name, tuple(sample.labels.items()))
                prefix = prefixes.get(key)
                if prefix is None:
                    if sample.labels:
                        prefix = f"{sample.name}{{{label_text(sample.labels)}}} "
                    else:
                        prefix = f"{sample.name} "
                    prefixes[key] = prefix
                append(prefix + format_value(sample.value) + "\n")
        return "".join(output).encode()
