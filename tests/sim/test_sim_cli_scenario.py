"""judicator-sim's command line and scenario files, without building a host."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from xensim import cli
from xensim.host import Names
from xensim.state import new_host

SCENARIOS = sorted((Path(cli.__file__).parent / "scenarios").glob("*.yaml"))


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.name for p in SCENARIOS])
def test_shipped_scenarios_are_valid_and_name_their_host(path: Path) -> None:
    scenario, name = cli.load_scenario(path.read_text(), str(path))
    assert name is not None
    Names.for_host(name, dom0_netns=scenario.dom0_netns)
    assert scenario.guests
    names = {g.name for g in scenario.guests}
    assert all(w.guest in names and w.target in (None, *names) for w in scenario.workloads)


def test_scenario_problems_are_reported_together() -> None:
    text = """
cpus: 0
colour: blue
guests:
  - {name: a, vcpus: 0}
  - {name: a}
  - {cpus: [1]}
workloads:
  - {guest: nobody, kind: teleport, target: ghost}
"""
    with pytest.raises(cli.UsageError) as caught:
        cli.load_scenario(text, "bad.yaml")
    message = str(caught.value)
    for fragment in (
        "bad.yaml",
        "cpus must be an integer",
        "unknown key 'colour'",
        "guests[0]: vcpus",
        "duplicate guest 'a'",
        "guests[2]: needs a name",
        "guest 'nobody' is not among the guests",
        "kind must be one of",
        "target 'ghost'",
    ):
        assert fragment in message


def test_not_yaml_and_not_a_mapping_are_refused() -> None:
    with pytest.raises(cli.UsageError, match="not YAML"):
        cli.load_scenario("guests: [", "x.yaml")
    with pytest.raises(cli.UsageError, match="mapping"):
        cli.load_scenario("- 1\n- 2\n", "x.yaml")


@pytest.mark.parametrize(
    ("guests", "cpus", "offline", "pinning", "expected"),
    [
        (3, 4, [], "exclusive", [[1], [2], [3]]),
        (3, 3, [], "exclusive", [[1], [2], [1]]),  # more guests than CPUs: shared
        (2, 4, [2], "exclusive", [[1], [3]]),  # offline CPUs are skipped
        (2, 1, [], "exclusive", [[0], [0]]),  # a one-CPU host shares with Domain-0
        (2, 4, [], "none", [None, None]),
    ],
)
def test_default_guests_are_pinned_one_per_cpu_after_domain_0(
    guests: int, cpus: int, offline: list[int], pinning: str, expected: list[list[int] | None]
) -> None:
    specs = cli.default_guests(guests, cpus, offline, pinning)
    assert [g.name for g in specs] == [f"guest{i}" for i in range(1, guests + 1)]
    assert [g.cpus for g in specs] == expected


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["--offline-cpus", "0"], "CPU 0"),
        (["--offline-cpus", "7"], "offline CPU 7 does not exist"),
        (["--cpus", "300"], "--cpus must be 1..256"),
    ],
)
def test_up_flags_are_checked_before_anything_is_built(argv: list[str], problem: str) -> None:
    args = cli.build_parser().parse_args(["up", *argv])
    with pytest.raises(cli.UsageError, match=problem):
        cli.scenario_from_args(args)


def test_commands_that_change_the_host_need_root(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    for argv in (["up"], ["down"], ["run", "guest1", "idle"], ["reboot", "guest1"]):
        assert cli.main([*argv, "--name", "nobodyhere"]) == 2
        assert "must run as root" in capsys.readouterr().err


def test_environment_puts_this_hosts_tools_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XENSIM_XENPERF", "/opt/xen/xenperf")
    monkeypatch.setenv("XENSIM_STUB_DIR", "/opt/stub")
    monkeypatch.setenv("PATH", "/usr/bin")
    names = Names.for_host("envtest", dom0_netns=True)
    host = new_host("envtest")
    host.dom0_netns = names.dom0_netns
    env = cli.environment(names, host)
    assert env["PATH"] == "/run/judicator-sim/envtest/bin:/usr/bin"
    assert env["LD_LIBRARY_PATH"] == "/opt/stub"
    assert env["XENSIM_STATE_DIR"] == "/run/judicator-sim/envtest"
    assert env["XENSIM_SYSFS"] == "/run/judicator-sim/envtest/sysfs"
    assert env["XENSIM_XL"] == "/run/judicator-sim/envtest/bin/xl"
    assert env["XENSIM_XENPERF_BIN"] == "/run/judicator-sim/envtest/bin/xenperf"
    assert env["XENSIM_DOM0_NETNS"] == "jsim-envtest-dom0"
    json.dumps(env)  # the --json form is exactly this mapping


def test_env_of_a_host_that_is_not_up_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["env", "--name", "nobodyhere"]) == 2
    assert "no simulated host 'nobodyhere'" in capsys.readouterr().err
