"""One scrape: run every enabled collector, time it, and report how each one did.

Collectors (perfc, domain, network, block) yield metric families from `collect(scrape)`, and
may name the toolstack questions they will ask in `prefetch(scrape)`, which the scrape starts
in threads before any collector runs. A failure in one is logged (once per distinct error)
and reported as `xen_exporter_collector_success{collector} 0`, and never fails or hangs the
whole scrape.
"""

from __future__ import annotations

import functools
import logging
import platform
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from typing import Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.exposition import TextRenderer
from exporter.toolstack import Scrape, Toolstack

log = logging.getLogger(__name__)


class Degraded(RuntimeError):
    """Raised by a collector after yielding what it could still serve: one of its sources
    failed, so the scrape reports it failed, but the families it yielded are kept."""


class SourceCollector(Protocol):
    name: str

    def collect(self, scrape: Scrape) -> Iterator[Metric]: ...


# Enough threads for two concurrent scrapes' xl runs to overlap; a hung xl holds one only
# until its command timeout.
TOOLSTACK_THREADS = 4


@functools.cache
def package_version() -> str:
    try:
        return metadata.version("judicator")
    except metadata.PackageNotFoundError:
        return "unknown"


class Exporter:
    """The enabled collectors and the toolstack they share; renders one scrape at a time each.

    Concurrent scrapes are safe: each gets its own registry and `Scrape`; collectors that keep
    state between scrapes lock it themselves.
    """

    def __init__(
        self,
        collectors: Sequence[SourceCollector],
        toolstack: Toolstack,
        command_timeout: float,
        scrape_timeout: float,
    ) -> None:
        self.collectors = list(collectors)
        self.toolstack = toolstack
        self.command_timeout = command_timeout
        self.scrape_timeout = scrape_timeout
        self._errors_lock = threading.Lock()
        self._last_error: dict[str, str | None] = {}
        self._renderer = TextRenderer()
        self._executor = ThreadPoolExecutor(TOOLSTACK_THREADS, thread_name_prefix="toolstack")

    def registry(self, scrape_timeout: float | None = None) -> CollectorRegistry:
        """A fresh registry for one scrape, bounded by `scrape_timeout` (or the default)."""
        budget = self.scrape_timeout if scrape_timeout is None else scrape_timeout
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_OneScrape(self, budget))
        return registry

    def render(self, scrape_timeout: float | None = None) -> bytes:
        return self._renderer.render(self.registry(scrape_timeout).collect())

    def _report(self, collector: str, error: Exception | None) -> None:
        message = None if error is None else f"{type(error).__name__}: {error}"
        with self._errors_lock:
            previous = self._last_error.get(collector)
            self._last_error[collector] = message
        if message is not None and message != previous:
            log.error("collector %s failed: %s", collector, message)
        elif message is None and previous is not None:
            log.info("collector %s works again", collector)


class _OneScrape:
    def __init__(self, exporter: Exporter, budget: float) -> None:
        self._exporter = exporter
        self._budget = budget

    def collect(self) -> Iterator[Metric]:
        exporter = self._exporter
        scrape = Scrape(
            exporter.toolstack,
            time.monotonic() + self._budget,
            exporter.command_timeout,
            exporter._executor,
        )
        # Start every collector's xl questions now, so the runs overlap instead of adding up.
        for collector in exporter.collectors:
            prefetch = getattr(collector, "prefetch", None)
            if prefetch is not None:
                prefetch(scrape)
        success = GaugeMetricFamily(
            "xen_exporter_collector_success",
            "1 if the collector's sources answered in this scrape, else 0",
            labels=["collector"],
        )
        duration = GaugeMetricFamily(
            "xen_exporter_collector_duration_seconds",
            "How long the collector took in this scrape",
            labels=["collector"],
        )
        for collector in exporter.collectors:
            started = time.perf_counter()
            families: list[Metric] = []
            try:
                families.extend(collector.collect(scrape))
            except Degraded as error:
                exporter._report(collector.name, error)
                ok = 0
            except Exception as error:  # one source's failure must not fail the scrape
                exporter._report(collector.name, error)
                log.debug("collector %s failed", collector.name, exc_info=True)
                families.clear()
                ok = 0
            else:
                exporter._report(collector.name, None)
                ok = 1
            yield from families
            success.add_metric([collector.name], ok)
            duration.add_metric([collector.name], time.perf_counter() - started)
        yield success
        yield duration
        build = GaugeMetricFamily(
            "xen_exporter_build_info",
            "The exporter's version and the Python running it (value 1)",
            labels=["version", "pythonversion"],
        )
        build.add_metric([package_version(), platform.python_version()], 1)
        yield build
