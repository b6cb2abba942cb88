"""The learning config: defaults, groups by name pattern, per-signal bounds, every error at once."""

from __future__ import annotations

import pytest

from policylearn.config import ConfigError, load_config
from policylearn.signals import BY_KEY


def test_empty_config_is_every_default():
    config = load_config(None)
    limits = config.limits_for(BY_KEY[("network_flood", "interrupts_per_second")])
    assert (limits.quantile, limits.margin, limits.floor_factor) == (0.999, 2.0, 0.5)
    assert limits.ceiling == 20000
    assert config.group_of("web1") == "web1"


def test_groups_first_match_and_signal_overrides():
    config = load_config(
        {
            "margin": 3,
            "groups": [
                {"name": "web", "domains": ["web*", "www-*"]},
                {"name": "all-w", "domains": ["w*"]},
            ],
            "signals": {"network_flood/interrupts_per_second": {"ceiling": 15000}},
        }
    )
    assert config.group_of("www-2") == "web"
    assert config.group_of("wiki") == "all-w"
    assert config.group_of("db1") == "db1"
    limits = config.limits_for(BY_KEY[("network_flood", "interrupts_per_second")])
    assert (limits.ceiling, limits.margin) == (15000, 3)
    # A signal with a margin of its own keeps it unless the config names that signal.
    disk = config.limits_for(BY_KEY[("disk_abuse", "block_requests_per_second")])
    assert disk.margin == 4


def test_every_problem_in_one_error():
    with pytest.raises(ConfigError) as error:
        load_config(
            {
                "margin": 0.5,
                "quantile": "high",
                "colour": "red",
                "groups": [{"name": "web"}, {"name": "db", "domains": []}],
                "signals": {
                    "network_flood/full_size_packet_bytes": {"ceiling": 9000},
                    "cpu_hog/cpu_seconds_per_second_per_vcpu": {"ceilin": 1},
                },
            }
        )
    text = str(error.value)
    for needle in (
        "margin: 0.5 outside",
        "quantile: 'high' is not a number",
        "unknown key 'colour'",
        "groups[0]: needs exactly",
        "groups[1].domains",
        "'network_flood/full_size_packet_bytes' is not a learned signal",
        "unknown key 'ceilin'",
    ):
        assert needle in text


def test_a_floor_above_its_ceiling_is_refused():
    with pytest.raises(ConfigError, match="absolute_floor 3000 above ceiling 2500"):
        load_config(
            {
                "signals": {
                    "disk_abuse/block_requests_per_second": {
                        "absolute_floor": 3000,
                        "ceiling": 2500,
                    }
                }
            }
        )
