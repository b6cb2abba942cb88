"""The Prometheus text format (0.0.4), as prometheus_client's `generate_latest` writes it, faster.

An exporter's series keep their names and labels from one scrape to the next, so the text in
front of each value (`name{label="value",...} `) is kept and reused; only the values are
formatted anew. Families are still built fresh by the collectors on every scrape. Only what our
collectors produce is handled (counter and gauge families, samples without timestamps);
`tests/exporter/test_exporter_exposition.py` holds the output byte-equal to `generate_latest`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from prometheus_client import utils
from prometheus_client.core import Metric

_go_float: Callable[[float], str] = utils.floatToGoString


def format_value(value: float) -> str:
    """Go's float formatting as prometheus_client does it; small integers the short way."""
    if type(value) is int and 0 <= value < 1_000_000:
        return f"{value}.0"
    return _go_float(value)


# Series that vanish (a domain destroyed, a CPU gone) leave their prefix behind; start over
# beyond this many rather than grow without bound.
MAX_CACHED_PREFIXES = 200_000


class UnsupportedMetric(ValueError):
    """A family this renderer does not write (type other than counter/gauge, timestamps)."""


def _escape_label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


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
            for sample in family.samples:
                if sample.timestamp is not None or sample.exemplar is not None:
                    raise UnsupportedMetric(f"{sample.name}: timestamps/exemplars not supported")
                key = (sample.name, tuple(sample.labels.items()))
                prefix = prefixes.get(key)
                if prefix is None:
                    if sample.labels:
                        labels = ",".join(
                            f'{label}="{_escape_label_value(value)}"'
                            for label, value in sorted(sample.labels.items())
                        )
                        prefix = f"{sample.name}{{{labels}}} "
                    else:
                        prefix = f"{sample.name} "
                    prefixes[key] = prefix
                append(prefix + format_value(sample.value) + "\n")
        return "".join(output).encode()
