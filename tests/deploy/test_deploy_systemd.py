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
    cli_problems,
    console_scripts,
    exec_argv,
    flag_values,
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
# A KVM host's (docs/kvm.md): the same programs, another platform and sandbox.
KVM_UNITS = {
    "judicator-exporter-kvm.service": "judicator-exporter",
    "judicator-remediator-kvm.service": "judicator-remediator",
}
ALL_UNITS = {**UNITS, **KVM_UNITS}
PORTS = {"judicator-exporter": 10170, "judicator-remediator": 10171}
# The weekly re-learning of per-domain thresholds: a oneshot service and its timer.
LEARN = "judicator-policy-learn"
LEARN_SCRIPT = "judicator-policy"


def _exec_start(unit: str) -> list[str]:
    values = unit_file(unit)["Service"]["ExecStart"]
    assert len(values) == 1, f"{unit}: one ExecStart"
    return exec_argv(values[0])


def _own_exec_lines(unit: str) -> list[list[str]]:
    """ExecStartPre= and ExecStart= lines that run our console scripts."""
    service_section = unit_file(unit)["Service"]
    lines = service_section.get("ExecStartPre", []) + service_section["ExecStart"]
    return [exec_argv(line) for line in lines if exec_argv(line)[0].startswith(INSTALL_PREFIX)]


def test_every_shipped_unit_is_checked() -> None:
    assert {p.name for p in SYSTEMD_DIR.glob("*.service")} == {*ALL_UNITS, f"{LEARN}.service"}
    assert {p.name for p in SYSTEMD_DIR.glob("*.timer")} == {f"{LEARN}.timer"}
    assert {p.suffix for p in SYSTEMD_DIR.iterdir()} == {".service", ".timer"}


def test_relearning_writes_a_candidate_and_its_backtest_never_the_rules_in_service() -> None:
    service_section = unit_file(f"{LEARN}.service")["Service"]
    learn, backtest = (exec_argv(line) for line in service_section["ExecStart"])
    assert learn[0] == backtest[0] == INSTALL_PREFIX + LEARN_SCRIPT
    assert LEARN_SCRIPT in console_scripts()
    for argv in (learn, backtest):
        assert cli_problems(LEARN_SCRIPT, argv[1:]) == [], " ".join(argv)
    learned, tried = flag_values(learn), flag_values(backtest)
    assert (learn[1], backtest[1]) == ("learn", "backtest")
    state = "/var/lib/judicator-policy-learn/"
    assert service_section["StateDirectory"] == ["judicator-policy-learn"]
    assert learned["--output"] == tried["--candidate"] == state + "thresholds-domains.yml"
    assert learned["--report"].startswith(state) and tried["--report"].startswith(state)
    # Bounded drift: each re-learning starts from the file Prometheus loads now.
    assert learned["--previous"] == learned["--rules.dir"] + "/thresholds-domains.yml"
    assert learned["--window"] == tried["--window"]
    assert service_section["Type"] == ["oneshot"]
    assert service_section["DynamicUser"] == ["yes"]
    assert unit_file(f"{LEARN}.timer")["Install"]["WantedBy"] == ["timers.target"]


@pytest.mark.parametrize(("unit", "script"), ALL_UNITS.items())
def test_unit_runs_the_console_script_from_the_install_prefix(unit: str, script: str) -> None:
    argv = _exec_start(unit)
    assert argv[0] == INSTALL_PREFIX + script
    assert script in console_scripts()
    assert "$" not in " ".join(argv), "flags are changed with `systemctl edit`, not variables"


@pytest.mark.parametrize(("unit", "script"), ALL_UNITS.items())
def test_unit_flags_are_flags_the_cli_accepts(unit: str, script: str) -> None:
    for argv in _own_exec_lines(unit):
        assert argv[0] == INSTALL_PREFIX + script
        assert cli_problems(script, argv[1:]) == [], f"{unit}: {' '.join(argv)}"


@pytest.mark.parametrize(("unit", "script"), UNITS.items())
def test_unit_and_compose_start_the_service_the_same_way(unit: str, script: str) -> None:
    compose_argv = [str(arg) for arg in service(script.removeprefix("judicator-"))["command"]]
    assert _exec_start(unit)[1:] == compose_argv[1:]
    flags = flag_values(_exec_start(unit))
    assert listen_port(flags["--web.listen-address"]) == PORTS[script]


def test_remediator_unit_provides_its_state_directory_and_only_net_admin() -> None:
    settings = unit_file("judicator-remediator.service")["Service"]
    assert settings["StateDirectory"] == ["judicator-remediator"]
    assert set(settings["CapabilityBoundingSet"][0].split()) == {"CAP_NET_ADMIN", "CAP_IPC_LOCK"}
    assert settings["NoNewPrivileges"] == ["yes"]
    assert "AF_NETLINK" in settings["RestrictAddressFamilies"][0], "tc speaks netlink"


def test_exporter_unit_keeps_only_ipc_lock_and_net_admin() -> None:
    # NET_ADMIN for the direction counters the flood policies need (--collector.flowdirection).
    settings = unit_file("judicator-exporter.service")["Service"]
    assert settings["CapabilityBoundingSet"] == ["CAP_NET_ADMIN CAP_IPC_LOCK"]
    assert "--collector.flowdirection" in settings["ExecStart"][0]
    assert settings["NoNewPrivileges"] == ["yes"]


def test_systemd_accepts_the_units() -> None:
    analyze = require_binary("systemd-analyze")
    with tempfile.TemporaryDirectory(prefix="judicator-deploy-units-") as scratch:
        copies = []
        scripts = {**ALL_UNITS, f"{LEARN}.service": LEARN_SCRIPT, f"{LEARN}.timer": LEARN_SCRIPT}
        for unit, script in scripts.items():
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


@pytest.mark.parametrize(("unit", "script"), ALL_UNITS.items())
def test_a_configuration_error_is_not_restarted_in_a_loop(unit: str, script: str) -> None:
    # Both CLIs exit 2 on a bad flag or config (argparse's convention, kept by the remediator).
    result = subprocess.run(
        [str(script_path(script)), "--no-such-flag"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert unit_file(unit)["Service"]["RestartPreventExitStatus"] == ["2"]


def test_remediator_config_errors_exit_2() -> None:
    with tempfile.TemporaryDirectory(prefix="judicator-deploy-config-") as scratch:
        broken = Path(scratch) / "remediator.yml"
        broken.write_text("instances: [127.0.0.1:10170]\nno_such_setting: 1\n", encoding="utf-8")
        for subcommand in ("check-config", "serve"):
            result = subprocess.run(
                [str(script_path("judicator-remediator")), f"--config.file={broken}", subcommand],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert result.returncode == 2, (subcommand, result.stderr)
            assert "no_such_setting" in result.stderr


def test_kvm_units_run_the_kvm_platform_with_what_reading_other_users_vms_needs() -> None:
    exporter = unit_file("judicator-exporter-kvm.service")["Service"]
    assert flag_values(exec_argv(exporter["ExecStart"][0]))["--platform"] == "kvm"
    assert set(exporter["CapabilityBoundingSet"][0].split()) == {
        "CAP_SYS_PTRACE", "CAP_DAC_OVERRIDE", "CAP_NET_ADMIN",
    }  # fmt: skip
    remediator = unit_file("judicator-remediator-kvm.service")["Service"]
    assert set(remediator["CapabilityBoundingSet"][0].split()) == {
        "CAP_NET_ADMIN", "CAP_SYS_PTRACE", "CAP_SYS_NICE", "CAP_DAC_OVERRIDE",
    }  # fmt: skip
    # the CPU caps are cgroup files: the tree must stay writable
    assert "ProtectControlGroups" not in remediator
    assert remediator["ReadWritePaths"] == ["/sys/fs/cgroup"]
    # the same ExecStart as the Xen unit's: the platform is in the configuration
    assert (
        remediator["ExecStart"] == unit_file("judicator-remediator.service")["Service"]["ExecStart"]
    )
