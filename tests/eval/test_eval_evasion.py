"""The evasion search: pulse arithmetic, promtool's series notation, and one real promtool run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import require_binary
from xeneval import evasion


@pytest.mark.parametrize(
    ("second", "duty", "period", "expected"),
    [
        (5, 0.5, 10.0, 0.0),  # before the start
        (10, 0.5, 10.0, 1.0),
        (14, 0.5, 10.0, 1.0),
        (15, 0.5, 10.0, 0.0),
        (10, 0.25, 2.0, 0.5),  # half a second on in every second
        (11, 0.25, 2.0, 0.0),
        (11, 0.3, 5.0, 0.5),  # on for 1.5 s: the second second is half on
        (12, 0.3, 5.0, 0.0),
    ],
)
def test_on_fraction(second: int, duty: float, period: float, expected: float) -> None:
    assert evasion.on_fraction(second, start=10, duty=duty, period=period) == pytest.approx(
        expected
    )


def test_series_values_are_cumulative_runs() -> None:
    # 0 2 4 6 | 6 6 | 11: each run restates its first value (promtool runs are absolute).
    assert evasion.series_values([2, 2, 2, 0, 0, 5]) == "0+2x3 6+0x1 11+0x0"
    assert evasion.series_values([]) == "0+0x0"
    assert evasion.series_values([1, 1], start=10) == "10+1x2"


def test_gauge_values_repeat_each_seconds_value() -> None:
    assert evasion.gauge_values([0.5, 0.5, 1.0]) == "0.5+0x2 1+0x0"
    # Falling runs are written `a-bxn`, which promtool parses (`a+-bxn` is a parse error).
    assert evasion.gauge_values([0.9, 0.5, 0.1]) == "0.9+0x1 0.5-0.4x1"


def test_a_pulsing_hog_beside_its_neighbour_gives_promtool_valid_series() -> None:
    # The shares of a CPU fall and rise with the pulses; promtool must parse every case (a
    # parse error would make every case of a run read as quiet).
    require_binary("promtool")
    profile = next(p for p in evasion.PROFILES if p.name == "cpu_hog")
    rules = evasion.load_rules()
    alerts = sorted(rules.forms("cpu_hog")["any"])
    cases = {"pulse": evasion.pulse_rates(1.0, 2.0, 0.9), "steady": evasion.steady_rates(1.0)}
    fired = evasion.promtool_fired(profile, cases, rules, alerts)
    constant = {a for a in alerts if not a.endswith("Pulsing")}
    # Steady: the constant forms; the pulsing forms want two bursts and never see one.
    assert set(fired["steady"]) == constant
    # 90 % of every 2 s: 0.81 of a CPU on average. Its CPU time per second stays above the use
    # bar (the stock form holds `for:`); its timer per vCPU, read between two scrapes, dips
    # under 900 every other second, and the perf form's pulsing companion catches it.
    assert set(fired["pulse"]) == {"XenCpuHogCpuTime", "XenCpuHogPerfcPulsing"}


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "promtool"


def test_promtool_failures_say_which_case_fired_and_when() -> None:
    text = (FIXTURES / "evasion-failures.txt").read_text()
    fired = evasion.parse_fired(text, ["hog", "calm", "quiet"])
    # The first time each was seen; the neighbour's alert is not the guest's.
    assert fired == {"hog": {"XenCpuHogCpuTime": 55.0}, "calm": {}, "quiet": {}}


@pytest.mark.parametrize(
    ("text", "expected"), [("15s", 15.0), ("1m", 60.0), ("2m5s", 125.0), ("500ms", 0.5)]
)
def test_durations(text: str, expected: float) -> None:
    assert evasion.seconds(text) == expected


@pytest.mark.parametrize(
    ("want", "neighbour", "got"),
    [
        (0.3, 0.4, (0.3, 0.4)),  # both fit
        (1.0, 0.1, (0.9, 0.1)),  # a light neighbour keeps what it wants
        (1.0, 1.0, (0.5, 0.5)),  # credit2: half each
        (0.2, 1.0, (0.2, 0.8)),
    ],
)
def test_two_vcpus_on_one_cpu(want: float, neighbour: float, got: tuple[float, float]) -> None:
    assert evasion.cpu_split(want, neighbour) == pytest.approx(got)


def _value(sample: evasion.Sample, metric: str, **labels: str) -> float:
    return sample[evasion._key(metric, **labels)]


def test_the_counter_model_of_a_ping_flood() -> None:
    counters, gauges = evasion.host_sample(evasion.ping_flood(10_000), None)
    # The simulator's model: a request out and a reply in, ~2 interrupts and 3.6 context
    # switches per ping (the lab's victim), on top of the idle CPU and the busy CPU-seconds.
    interrupts = _value(counters, "xen_perfc_interrupts_total", cpu="1")
    switches = _value(counters, "xen_perfc_sched_context_switches_total", cpu="1")
    busy = 0.01 + 10_000 / 40_000
    assert interrupts == pytest.approx(9 + 1000 * busy + 10_000 * (0.45 + 1.58))
    assert switches == pytest.approx(12 + 150 * busy + 10_000 * 3.6)
    vif = {"domain": "abuser", "interface": "vif1.0"}
    assert _value(counters, "xen_domain_network_transmit_packets_total", **vif) == 10_000
    flow = _value(
        counters, "xen_domain_network_transmit_flow_packets_total", packet="echo_request", **vif
    )
    assert flow == 10_000
    # Alone on its CPU: all of it.
    assert _value(gauges, "xen_pcpu_domain_share_ratio", cpu="1", domain="abuser") == 1.0


def test_a_neighbour_shares_the_cpu_and_its_counters() -> None:
    _, gauges = evasion.host_sample(evasion.cpu_hog(1.0), 0.1)
    mine = _value(gauges, "xen_pcpu_domain_share_ratio", cpu="1", domain="abuser")
    theirs = _value(gauges, "xen_pcpu_domain_share_ratio", cpu="1", domain="neighbour")
    assert mine + theirs == pytest.approx(1.0)
    assert theirs == pytest.approx(0.1, abs=0.01)


def test_every_remediating_alert_is_searched() -> None:
    rules = evasion.load_rules()
    assert evasion.uncovered_alerts(rules) == []
    forms = rules.forms("network_flood")
    assert set(forms["any"]) == {
        "XenNetworkFloodPerfc",
        "XenNetworkFloodVif",
        "XenNetworkFloodPerfcPulsing",
        "XenNetworkFloodVifPulsing",
    }
    assert set(forms["stock forms"]) == {"XenNetworkFloodVif", "XenNetworkFloodVifPulsing"}
    assert rules.thresholds[("network_flood", "sent_packets_per_second")] == 10_000
    assert rules.alerts["XenNetworkFloodVif"]["for"] == 15.0


def test_bisection_finds_each_forms_edge_with_one_run_per_round() -> None:
    profile = evasion.PROFILES[1]
    rules = evasion.load_rules()
    forms = {"A": ("A",), "B": ("B",), "any": ("A", "B")}
    runs = []

    def fake(
        _profile: evasion.Profile,
        cases: dict[str, list[float]],
        _rules: evasion.Rules,
        _alerts: list[str],
        every: int = 5,
    ) -> dict[str, dict[str, float]]:
        # A fires from a mean rate of 0.3 x peak, B from 0.6 x peak; neither below.
        runs.append(len(cases))
        out: dict[str, dict[str, float]] = {}
        for name, rates in cases.items():
            attack = rates[evasion.WARMUP_SECONDS : evasion.WARMUP_SECONDS + evasion.ATTACK_SECONDS]
            mean = sum(attack) / len(attack) / 100_000
            out[name] = {a: 1.0 for a, edge in (("A", 0.3), ("B", 0.6)) if mean >= edge}
        return out

    search = evasion.Search("pk100000-p10", 100_000.0, 10.0)
    brackets = evasion.bisect(profile, rules, forms, [search], 10_000.0, fake)
    assert brackets[("A", search.name)].lo == pytest.approx(0.3, abs=1 / 64)
    assert brackets[("B", search.name)].lo == pytest.approx(0.6, abs=1 / 64)
    assert brackets[("any", search.name)].lo == brackets[("A", search.name)].lo
    assert len(runs) == 1 + evasion.BISECT_ROUNDS
    # "any" and A share their cases: two distinct midpoints a round, not three.
    assert max(runs[1:]) == 2


def test_the_goals_verdict() -> None:
    def result(duty: float, latency: float | None, expect: str = "throttled") -> dict:
        row = {"peak": 10.0, "max_undetected_duty": duty, "min_detected_duty": duty + 0.01}
        row["max_undetected_average"] = duty * 10
        form = {
            "pulsing": [row],
            "sustained": {"max_undetected": 9.0, "min_detected": 10.0},
            "latency": {"10": latency},
            "for_seconds": 15.0,
        }
        return {"forms": {"any": form}, "expect": expect}

    assert evasion.summarize(result(0.09, 16.0))["goal_met"]
    assert not evasion.summarize(result(0.30, 16.0))["goal_met"]  # 30 % of a period evades
    assert not evasion.summarize(result(0.09, 20.0))["goal_met"]  # slower than for: + 2 s
    assert not evasion.summarize(result(0.09, 16.0, expect="spared"))["goal_met"]


def test_promtool_tells_a_flood_from_a_quiet_guest_with_the_shipped_rules() -> None:
    require_binary("promtool")
    profile = evasion.PROFILES[1]  # a UDP flood
    rules = evasion.load_rules()
    alerts = sorted(rules.forms(profile.policy)["any"])
    cases = {
        "loud": evasion.steady_rates(100_000.0, 40),
        "quiet": evasion.steady_rates(3_000.0, 40),
    }
    fired = evasion.promtool_fired(profile, cases, rules, alerts, every=1)
    assert fired["quiet"] == {}
    # The constant forms, within `for:` (15 s) + 2 s of the start of a flood at 10x the bar
    # (the perf form through the packets behind its interrupts: nothing wakes the sender).
    assert set(fired["loud"]) == {"XenNetworkFloodPerfc", "XenNetworkFloodVif"}
    assert fired["loud"]["XenNetworkFloodVif"] - evasion.WARMUP_SECONDS <= 17


def test_promtool_caps_a_hog_next_to_a_neighbour_and_spares_one_alone() -> None:
    require_binary("promtool")
    rules = evasion.load_rules()
    shared, alone = (
        next(p for p in evasion.PROFILES if p.name == name)
        for name in ("cpu_hog", "cpu_hog_dedicated")
    )
    alerts = sorted(rules.forms("cpu_hog")["any"])
    rates = {"hog": evasion.steady_rates(1.0, 50)}
    assert set(evasion.promtool_fired(shared, rates, rules, alerts)["hog"]) == {
        "XenCpuHogPerfc",
        "XenCpuHogCpuTime",
    }
    assert evasion.promtool_fired(alone, rates, rules, alerts)["hog"] == {}


def test_a_saturated_cpu_has_no_idle_time_and_a_light_one_has_the_rest() -> None:
    full, _ = evasion.host_sample(evasion.cpu_hog(1.0), 0.3)
    assert _value(full, "xen_pcpu_idle_seconds_total", cpu="1") == 0.0
    light, _ = evasion.host_sample(evasion.cpu_hog(0.4), 0.3)
    assert _value(light, "xen_pcpu_idle_seconds_total", cpu="1") == pytest.approx(0.296)


def test_promtool_caps_a_hog_taking_70_percent_of_a_full_cpu_but_not_an_equal_split() -> None:
    require_binary("promtool")
    rules = evasion.load_rules()
    busy, equal = (
        next(p for p in evasion.PROFILES if p.name == name)
        for name in ("cpu_hog_busy_neighbour", "cpu_hog_equal_neighbour")
    )
    alerts = sorted(rules.forms("cpu_hog")["any"])
    rates = {"hog": evasion.steady_rates(1.0, 50)}
    # It gets 70 %, below the use bar (0.8): only the contention form sees it.
    assert set(evasion.promtool_fired(busy, rates, rules, alerts)["hog"]) == {
        "XenCpuHogPerfc",
        "XenCpuHogCpuTime",
    }
    assert evasion.promtool_fired(equal, rates, rules, alerts)["hog"] == {}
