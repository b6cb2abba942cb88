"""The published experiment with every real part: the sim's host in its own Dom0 namespace, the
real exporter, Prometheus with the shipped rules, Alertmanager with the shipped routing, the
remediator with the shipped config, and a real `ping -f`. The same code as `make demo`
(`xensim.demo.run_experiment`), with shorter phases and no PNG.
"""

from __future__ import annotations

import os

import pytest

from tests.support import require_binary, require_simulated_host
from xensim.demo import ATTACKER, BYSTANDER, SCENARIOS, Result, Settings, run_experiment, table

pytestmark = [pytest.mark.host, pytest.mark.slow]


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> Result:
    require_simulated_host()
    for binary in ("prometheus", "prometheus-alertmanager", "ping", "tc", "ip"):
        require_binary(binary)
    lines: list[str] = []
    settings = Settings(
        scenario=SCENARIOS["ping-flood"],
        host_name=f"e2e{os.getpid() % 10_000_000}",
        dom0_netns=True,
        baseline_seconds=15.0,
        throttled_seconds=15.0,
        after_release_seconds=2.0,
        hold_seconds=3.0,
        output_dir=tmp_path_factory.mktemp("e2e-ping-flood"),
        plot=False,
        say=lines.append,
    )
    result = run_experiment(settings)
    # Printed, not asserted: shown with -s, and with every failure below.
    print("\n".join(lines))
    print(table(result))
    return result


def _explain(result: Result) -> str:
    logs = result.output_dir / "logs" if result.output_dir else "-"
    return f"\n{table(result)}\nlogs: {logs}"


def test_the_run_completed(outcome: Result) -> None:
    assert outcome.error is None, _explain(outcome)


def test_the_network_flood_policy_fired_for_the_attacker(outcome: Result) -> None:
    assert outcome.fired, _explain(outcome)
    assert outcome.fired <= {"XenNetworkFloodPerfc", "XenNetworkFloodVif"}, _explain(outcome)
    assert "firing" in outcome.events, _explain(outcome)


def test_the_attackers_vif_and_only_it_was_shaped(outcome: Result) -> None:
    assert outcome.attacker_vifs, "the attacker has no vif"
    assert outcome.throttled_things == outcome.attacker_vifs, _explain(outcome)
    applied = [record for record in outcome.applied if record.get("kind") == "network_shape"]
    assert applied, _explain(outcome)
    assert {record["domain"] for record in applied} == {ATTACKER}
    touched = {
        argv[argv.index("dev") + 1]
        for record in applied
        for argv in record["argv"]
        if "dev" in argv and argv[argv.index("dev") + 1].startswith("vif")
    }
    assert touched == outcome.attacker_vifs, applied


def test_the_attackers_packet_rate_fell_at_least_tenfold(outcome: Result) -> None:
    before = outcome.phase_value("abuse", "attacker", "vif_pps")
    after = outcome.phase_value("throttled", "attacker", "vif_pps")
    assert before is not None and after is not None, _explain(outcome)
    assert before > 5_000, f"no flood to speak of: {before:.0f} packets/s" + _explain(outcome)
    assert after * 10 <= before, _explain(outcome)


def test_the_victims_load_fell(outcome: Result) -> None:
    before = outcome.phase_value("abuse", "victim", "interrupts")
    after = outcome.phase_value("throttled", "victim", "interrupts")
    assert before is not None and after is not None, _explain(outcome)
    assert after * 2 <= before, _explain(outcome)


def test_the_bystander_did_not_change_beyond_noise(outcome: Result) -> None:
    checks = [c for c in outcome.checks if c.what.startswith(f"{BYSTANDER} untouched")]
    assert len(checks) == 2
    assert all(c.ok for c in checks), _explain(outcome)
    sent = [outcome.phase_value(p, "bystander", "vif_pps") for p in ("abuse", "throttled")]
    assert all(v is not None and v < 50 for v in sent), _explain(outcome)


def test_release_came_after_resolution(outcome: Result) -> None:
    resolved, released = outcome.events.get("resolved"), outcome.events.get("released")
    assert resolved is not None and released is not None, _explain(outcome)
    assert released >= resolved, _explain(outcome)
    hold = outcome.settings.hold_seconds
    # The remediator holds the throttle for `hold` after it hears of the resolution.
    assert released - resolved >= hold - 1.5, _explain(outcome)


def test_nothing_is_left_behind(outcome: Result) -> None:
    assert outcome.leftovers == [], outcome.leftovers


def test_the_demo_judges_this_run_a_success(outcome: Result) -> None:
    assert outcome.protected, _explain(outcome)
