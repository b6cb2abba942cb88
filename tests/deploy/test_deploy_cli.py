"""What the console scripts have in common, so that deploy files and docs can rely on it."""

from __future__ import annotations

import pytest

from tests.deploy.deploy_support import cli_help, console_scripts

# Prometheus's own spelling of the flag and of its values (prometheus --help).
LOG_LEVEL_USAGE = "--log.level {debug,info,warn,error}"
SCRIPTS = [
    "judicator-exporter",
    "judicator-remediator",
    "judicator-sim",
    "judicator-policy",
    "judicator-kvmctl",
]


def test_every_console_script_is_checked() -> None:
    assert set(console_scripts()) == set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_log_level_is_spelled_as_prometheus_spells_it(script: str) -> None:
    assert LOG_LEVEL_USAGE in " ".join(cli_help(script).split())
