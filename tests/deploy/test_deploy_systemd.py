"""The shipped systemd units: they start the console scripts with flags the CLIs accept.

The flags are held against each CLI's own `--help`, and systemd itself (`systemd-analyze
verify`) reads the units, with the install prefix pointed at this checkout's virtualenv.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.deploy.deploy_support import (
    SYSTEMD_DIR,
    accepted_flags,
    console_scripts,
    exec_argv,
    flag_values,
    given_flags,
    listen_port,
    script_path,
    service,
    unit_file,
)
from tests.support import require_binary

INSTALL_PREFIX = "/opt/judicator/bin/"
UNITS = {
    "judicator-exporter.service": "judicator-exporter",
    "judicator-remediator.service": "judicator-remediator",
}
PORTS = {"judicator-exporter": 10170, "judicator-remediator": 10171}


def _exec_start(unit: str) -> list[str]:
    values = unit_file(unit)["Service"]["ExecStart"]
    assert len(values) == 1, f"{unit}: one ExecStart"
    return exec_argv(values[0])


def test_every_shipped_unit_is_checked() -> None:
    assert {p.name for p in SYSTEMD_DIR.glob("*.service")} == set(UNITS)


@pytest.mark.parametrize(("unit", "script"), UNITS.items())
def test_unit_runs_the_console_script_from_the_install_prefix(unit: str, script: str) -> None:
    argv = _exec_start(unit)
    assert argv[0] == INSTALL_PREFIX + script
    assert script in console_scripts()
    # Local additions come from the EnvironmentFile, split into words by systemd.
    environment_file = unit_file(unit)["Service"]["EnvironmentFile"][0]
    variable = script.upper().replace("-", "_") + "_ARGS"
    assert environment_file == f"-/etc/default/{script}"
    assert argv[-1] == f"${variable}"


@pytest.mark.parametrize(("unit", "script"), UNITS.items())
def test_unit_flags_are_flags_the_cli_accepts(unit: str, script: str) -> None:
    unknown = set(given_flags(_exec_start(unit))) - accepted_flags(script)
    assert not unknown, f"{unit}: {script} --help does not know {sorted(unknown)}"


@pytest.mark.parametrize(("unit", "script"), UNITS.items())
def test_unit_and_compose_start_the_service_the_same_way(unit: str, script: str) -> None:
    unit_flags = flag_values(_exec_start(unit))
    compose_flags = flag_values(service(script.removeprefix("judicator-"))["command"])
    assert unit_flags == compose_flags
    assert listen_port(unit_flags["--web.listen-address"]) == PORTS[script]


def test_remediator_unit_provides_its_state_directory_and_only_net_admin() -> None:
    settings = unit_file("judicator-remediator.service")["Service"]
    assert settings["StateDirectory"] == ["judicator-remediator"]
    assert set(settings["CapabilityBoundingSet"][0].split()) == {"CAP_NET_ADMIN", "CAP_IPC_LOCK"}
    assert settings["NoNewPrivileges"] == ["yes"]
    assert "AF_NETLINK" in settings["RestrictAddressFamilies"][0], "tc speaks netlink"


def test_exporter_unit_keeps_no_capability_but_ipc_lock() -> None:
    settings = unit_file("judicator-exporter.service")["Service"]
    assert settings["CapabilityBoundingSet"] == ["CAP_IPC_LOCK"]
    assert settings["NoNewPrivileges"] == ["yes"]


def test_systemd_accepts_the_units() -> None:
    analyze = require_binary("systemd-analyze")
    with tempfile.TemporaryDirectory(prefix="judicator-deploy-units-") as scratch:
        copies = []
        for unit, script in UNITS.items():
            text = (SYSTEMD_DIR / unit).read_text(encoding="utf-8")
            # systemd checks that ExecStart's program exists: point it at this venv's script.
            text = text.replace(INSTALL_PREFIX + script, str(script_path(script)))
            copy = Path(scratch) / unit
            copy.write_text(text, encoding="utf-8")
            copies.append(str(copy))
        result = subprocess.run(
            [analyze, "verify", "--man=no", *copies],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    complaints = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and not complaints, complaints
