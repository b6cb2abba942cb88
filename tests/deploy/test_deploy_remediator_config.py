"""deploy/remediator.yml, the configuration both deployments give the remediator: valid, and
permissive enough for every shipped policy (an alert asking for more than its bounds allow is
refused, so a policy outside them would never throttle anything in production)."""

from __future__ import annotations

from typing import Any

import pytest

from remediator.config import Config, load_config
from remediator.units import parse_rate, parse_size
from tests.deploy.deploy_support import REPO, load_yaml


def _config() -> Config:
    return load_config(load_yaml(REPO / "deploy" / "remediator.yml"))


def _policies() -> list[dict[str, Any]]:
    rules = [
        rule
        for path in sorted((REPO / "prometheus" / "rules").glob("*.yml"))
        for group in load_yaml(path).get("groups") or []
        for rule in group.get("rules") or []
    ]
    return [r for r in rules if "alert" in r and r.get("labels", {}).get("severity") == "remediate"]


def test_deployed_config_is_valid_and_checks_a_token() -> None:
    config = _config()
    assert config.bearer_token_file is not None, "the deployed remediator must check a token"
    for path in (config.xl_path, config.tc_path, config.ip_path, config.state_path):
        assert path.startswith("/"), f"{path}: absolute paths, the units run from /"


def test_shipped_policies_exist() -> None:
    assert _policies(), "no policy with severity=remediate in prometheus/rules/"


@pytest.mark.parametrize("policy", _policies(), ids=lambda rule: str(rule["alert"]))
def test_policy_stays_within_the_deployed_bounds(policy: dict[str, Any]) -> None:
    labels = policy["labels"]
    kind = labels["remediation"]
    actions = _config().actions
    assert actions.enabled(kind), f"deploy/remediator.yml does not allow {kind}"
    if kind == "network_shape":
        bounds = actions.network_shape
        assert bounds is not None
        assert bounds.rate_min_bps <= parse_rate(labels["rate"]) <= bounds.rate_max_bps
        if "burst" in labels:
            burst = parse_size(labels["burst"])
            assert bounds.burst_min_bytes <= burst <= bounds.burst_max_bytes
        assert labels.get("direction", "send") in bounds.directions
    elif kind == "cpu_cap":
        cap_bounds = actions.cpu_cap
        assert cap_bounds is not None
        assert cap_bounds.min_percent <= int(labels["cap"]) <= cap_bounds.max_percent
