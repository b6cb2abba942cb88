"""The remediator's own metrics, in a registry per app (tests build as many apps as they like)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from remediator.store import Throttle


class ActiveThrottles(Collector):
    """Live throttles, read from the store on every scrape: counted by action kind and state,
    and one series per throttled domain (bounded by the host's domains and the throttle cap).

    judicator_remediator_active_throttles{kind="network_shape",state="active"} 1.0
    judicator_remediator_throttle_since_timestamp_seconds{domain="guest1",kind="cpu_cap",
                                                          state="active"} 1.7e+09
    """

    def __init__(self, live: Callable[[], list[Throttle]]) -> None:
        self._live = live

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "judicator_remediator_active_throttles",
            "Throttles recorded as live (pending, applying, active, releasing).",
            labels=["kind", "state"],
        )
        live = self._live()
        counts: dict[tuple[str, str], int] = {}
        for throttle in live:
            key = (throttle.kind, throttle.state)
            counts[key] = counts.get(key, 0) + 1
        for (kind, state), count in sorted(counts.items()):
            family.add_metric([kind, state], count)
        yield family
        since = GaugeMetricFamily(
            "judicator_remediator_throttle_since_timestamp_seconds",
            "When each live throttle was recorded, by domain, action kind and state.",
            labels=["domain", "kind", "state"],
        )
        for throttle in live:
            since.add_metric([throttle.domain, throttle.kind, throttle.state], throttle.created_at)
        yield since


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.alerts = Counter(
            "judicator_remediator_alerts",
            "Alerts received, by their status and what was decided.",
            ["status", "decision"],
            registry=self.registry,
        )
        self.payloads = Counter(
            "judicator_remediator_payloads",
            "Webhook requests, by result (accepted, or why they were rejected).",
            ["result"],
            registry=self.registry,
        )
        self.actions = Counter(
            "judicator_remediator_actions",
            "Throttle applications and releases, by action kind, phase and result.",
            ["kind", "phase", "result"],
            registry=self.registry,
        )
        self.refusals = Counter(
            "judicator_remediator_refusals",
            "Alerts or actions refused, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.max_throttle_reached = Counter(
            "judicator_remediator_max_throttle_reached",
            "Throttles released because they reached hold.max_throttle while their alert still "
            "fired; the episode is admitted again after hold.readmit_after. Alert on any "
            "increase: an attack outlasted the longest throttle (docs/remediator.md).",
            ["kind"],
            registry=self.registry,
        )
        self.command_seconds = Histogram(
            "judicator_remediator_command_duration_seconds",
            "Duration of host commands run by the remediator, by program.",
            ["program"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        for reason in ("malformed", "version", "too_large", "unauthorized"):
            self.payloads.labels(reason)
