"""exporter.exposition writes exactly what prometheus_client's generate_latest writes."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from exporter.exposition import TextRenderer, UnsupportedMetric, format_value


def families() -> list[Metric]:
    counter = CounterMetricFamily("xen_test_things", 'Things "quoted" \\ and\nnewline')
    counter.add_sample("xen_test_things_total", {"cpu": "1", "domain": "g1"}, 1014098)
    counter.add_sample("xen_test_things_total", {"cpu": "0"}, 2**40 + 3)
    counter.add_sample("xen_test_things_total", {"domain": 'odd "name"\\\n', "cpu": "2"}, 0)
    gauge = GaugeMetricFamily("xen_test_level", "A gauge", labels=["b", "a"])
    gauge.add_metric(["2", "1"], -6)
    gauge.add_metric(["x", "y"], 0.25)
    gauge.add_metric(["big", "small"], 123456789.5)
    plain = GaugeMetricFamily("xen_test_plain", "No labels", value=float("nan"))
    return [counter, gauge, plain, GaugeMetricFamily("xen_test_empty", "No samples")]


class Fixed:
    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> list[Metric]:
        return self.metrics


def test_byte_equal_to_generate_latest_twice() -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Fixed(families()))
    renderer = TextRenderer()
    expected = generate_latest(registry)
    assert renderer.render(families()) == expected
    assert renderer.render(families()) == expected  # from the cached prefixes


@pytest.mark.parametrize("value", [0, 5, 999_999, 1_000_000, 2**32, 2**53, 0.1, -3, 1e-9, 7.0])
def test_values_formatted_like_go(value: float) -> None:
    family = GaugeMetricFamily("xen_v", "v", value=value)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Fixed([family]))
    assert generate_latest(registry).decode().splitlines()[-1] == f"xen_v {format_value(value)}"


def test_other_types_are_refused() -> None:
    from prometheus_client.core import HistogramMetricFamily

    with pytest.raises(UnsupportedMetric):
        TextRenderer().render([HistogramMetricFamily("h", "h", buckets=[("+Inf", 1)], sum_value=1)])
