"""The shipped configuration as a simulated stack renders it: targets, rules and intervals."""

from __future__ import annotations

from pathlib import Path

import yaml

from xensim.configs import (
    SHIPPED_PROMETHEUS_CONFIG,
    SHIPPED_RULES_DIR,
    SIMULATION_INTERVALS,
    render_prometheus_config,
)

TARGETS = {"xen": "127.0.0.1:1", "judicator-remediator": "127.0.0.1:2", "prometheus": "{listen}"}


def _shipped() -> dict[str, object]:
    loaded = yaml.safe_load(SHIPPED_PROMETHEUS_CONFIG.read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_the_simulation_scrapes_and_evaluates_every_second_whatever_is_shipped() -> None:
    rendered = render_prometheus_config(_shipped(), targets=TARGETS, rules_dir=SHIPPED_RULES_DIR)
    assert rendered["global"] == SIMULATION_INTERVALS
    # Production intervals that differ (the shipped ones were 5 s, then 2 s) are replaced too.
    other = {"scrape_interval": "2s", "scrape_timeout": "2s", "evaluation_interval": "2s"}
    rendered = render_prometheus_config(
        {**_shipped(), "global": other}, targets=TARGETS, rules_dir=SHIPPED_RULES_DIR
    )
    assert rendered["global"] == SIMULATION_INTERVALS


def test_a_caller_may_choose_other_intervals_and_the_rest_stays_as_shipped(tmp_path: Path) -> None:
    intervals = {"scrape_interval": "5s", "scrape_timeout": "4s", "evaluation_interval": "5s"}
    rendered = render_prometheus_config(
        _shipped(), targets=TARGETS, rules_dir=tmp_path, intervals=intervals
    )
    assert rendered["global"] == intervals
    jobs = {job["job_name"]: job for job in rendered["scrape_configs"]}
    assert {name: job["static_configs"] for name, job in jobs.items()} == {
        name: [{"targets": [target]}] for name, target in TARGETS.items()
    }
    assert rendered["rule_files"] == [str(tmp_path / "*.yml")]
    assert rendered["alerting"] == _shipped()["alerting"]


def test_the_names_stack_and_demo_held_before_their_split_still_import_from_there() -> None:
    """Code written against the one-file modules keeps working (their public names)."""
    import xensim.demo
    import xensim.stack

    assert set(xensim.stack.__all__) <= set(dir(xensim.stack))
    assert set(xensim.demo.__all__) <= set(dir(xensim.demo))
    for name in ("Stack", "run_stack", "simulated_host", "SimHost", "wait_until", "_Caller"):
        assert hasattr(xensim.stack, name), name
    for name in ("run_experiment", "Settings", "SCENARIOS", "table", "ATTACKER", "main"):
        assert hasattr(xensim.demo, name), name
