"""exporter.exposition writes exactly what prometheus_client's generate_latest writes."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from exporter.exposition import (
    SeriesCache,
    SeriesFamily,
    TextRenderer,
    UnsupportedMetric,
    counter_family,
    format_value,
    gauge_family,
    label_text,
)


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


def series_family() -> SeriesFamily:
    family = SeriesFamily("xen_test_series", "Series given as text", "counter")
    for labels, value in (
        ({"cpu": "1", "domain": "g1"}, 1_014_098),
        ({"cpu": "0"}, 2**40 + 3),
        ({"domain": 'odd "name"\\\n', "cpu": "2"}, 0),
    ):
        family.add_series(f"{family.sample_name}{{{label_text(labels)}}} ", labels, value)
    return family


def test_series_family_byte_equal_to_generate_latest() -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Fixed([series_family()]))
    assert TextRenderer().render([series_family()]) == generate_latest(registry)
    assert registry.get_sample_value("xen_test_series_total", {"cpu": "0"}) == 2**40 + 3


def test_series_family_samples_cannot_be_replaced() -> None:
    with pytest.raises(TypeError):
        series_family().samples = [Sample("x", {}, 1.0)]


def test_integers_formatted_like_go_across_magnitudes() -> None:
    rng = random.Random(7)
    values = [10**exponent + offset for exponent in range(17) for offset in (-1, 0, 1)]
    values += [rng.randrange(1 << bits) for bits in range(1, 64) for _ in range(20)]
    for value in values:
        if value >= 0:
            assert format_value(value) == floatToGoString(value), value


def labelled_families(cache: SeriesCache) -> list[Metric]:
    counter = counter_family("xen_test_bytes_total", "Bytes", ["domain", "interface"], cache)
    counter.add_metric(["g1", "vif3.0"], 1_014_098)
    counter.add_metric(['odd "name"\\\n', "vif4.0"], 2.5)
    gauge = gauge_family("xen_test_state", "State", ["domain", "state"], cache)
    gauge.add_metric(["g1", "running"], 1)
    gauge.add_metric(["g1", "blocked"], 0)
    return [counter, gauge, gauge_family("xen_test_empty", "No series", ["domain"], cache)]


def test_labelled_series_families_write_what_prometheus_client_families_do() -> None:
    counter = CounterMetricFamily("xen_test_bytes_total", "Bytes", labels=["domain", "interface"])
    counter.add_metric(["g1", "vif3.0"], 1_014_098)
    counter.add_metric(['odd "name"\\\n', "vif4.0"], 2.5)
    gauge = GaugeMetricFamily("xen_test_state", "State", labels=["domain", "state"])
    gauge.add_metric(["g1", "running"], 1)
    gauge.add_metric(["g1", "blocked"], 0)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Fixed([counter, gauge, GaugeMetricFamily("xen_test_empty", "No series")]))
    cache = SeriesCache()
    renderer = TextRenderer()
    assert renderer.render(labelled_families(cache)) == generate_latest(registry)
    assert renderer.render(labelled_families(cache)) == generate_latest(registry)  # cached
    served = CollectorRegistry(auto_describe=False)
    served.register(Fixed(labelled_families(cache)))
    assert (
        served.get_sample_value("xen_test_bytes_total", {"domain": "g1", "interface": "vif3.0"})
        == 1_014_098
    )


def test_a_series_family_without_a_cache_takes_no_label_values() -> None:
    with pytest.raises(TypeError):
        SeriesFamily("xen_t", "t", "gauge", ["domain"]).add_metric(["g1"], 1)
