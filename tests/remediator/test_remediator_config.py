"""Config loading: the example is valid, and every problem is reported at once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from remediator.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "remediator" / "remediator.example.yml"


def test_the_example_config_loads_with_its_bounds() -> None:
    config = load_config(yaml.safe_load(EXAMPLE.read_text()))
    assert config.instances == {"xen-host-1:10170"}
    assert {"Domain-0", "infra-dns", "backup"} <= config.protected_domains
    assert config.actions.network_shape is not None
    assert config.actions.network_shape.rate_min_bps == 256_000
    assert config.actions.cpu_pin is not None and config.actions.cpu_pin.allowed_cpus == {6, 7}
    assert config.hold.for_offence(1) == 300 and config.hold.for_offence(9) == 3600
    assert config.max_throttle_seconds == 7200


def test_every_problem_is_listed_in_one_error() -> None:
    raw = {
        "instances": [],
        "auth": {},
        "hold": {"base": "soon", "factor": 0.5},
        "limits": {"workers": 0},
        "tls": {"cert_file": "/x.crt"},
        "actions": {
            "network_shape": {"rate_min": "10mbit", "rate_max": "1mbit"},
            "cpu_pin": {},
            "command": {"bad name!": {}, "ok": {"apply": ["relative/path"]}},
            "reboot": {},
        },
        "colour": "blue",
    }
    with pytest.raises(ConfigError) as error:
        load_config(raw)
    text = str(error.value)
    for expected in (
        "colour: unknown setting",
        "instances: required",
        "state_path: required",
        "auth.bearer_token_file: required",
        "tls: cert_file and key_file go together",
        "hold.base: not a duration",
        "hold.factor: must be a number >= 1",
        "limits.workers: must be a positive integer",
        "actions.network_shape.rate_min: above rate_max",
        "actions.cpu_pin.allowed_cpus: required",
        "actions.command: bad command name 'bad name!'",
        "actions.command.ok.apply: the program must be an absolute path",
        "actions.reboot: unknown setting",
    ):
        assert expected in text, expected


def test_check_config_command_exits_non_zero_naming_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "instances: [a]\nstate_path: /tmp/x.db\nauth: {disabled: true}\nhold: {max: x}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "remediator", "--config.file", str(bad), "check-config"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "hold.max: not a duration" in result.stderr

    good = tmp_path / "good.yml"
    token = tmp_path / "token"
    token.write_text("0123456789abcdef0123\n")
    good.write_text(
        yaml.safe_dump(
            {
                "instances": ["a"],
                "state_path": str(tmp_path / "s.db"),
                "auth": {"bearer_token_file": str(token)},
                "actions": {"pause": {}},
            }
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "remediator", "--config.file", str(good), "check-config"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert (result.returncode, result.stdout.strip()) == (0, f"{good}: OK")
