"""Host lifecycle for the exporter's robustness tests: reboot, CPUs off/online, pause, sysfs."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.support import sim, wait_for
from xensim import cgroups
from xensim.simhost import SimHost

pytestmark = pytest.mark.host


def tool(env: dict[str, str], *argv: str) -> str:
    result = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=30, env={**os.environ, **env}
    )
    assert result.returncode == 0, f"{argv}: {result.stderr}"
    return result.stdout


def dom0_links(env: dict[str, str]) -> set[str]:
    out = tool(env, "ip", "-n", env["XENSIM_DOM0_NETNS"], "-j", "link", "show")
    return {link["ifname"] for link in json.loads(out)}


def test_reboot_gives_a_new_domid_and_recreates_the_vif(sim_host: SimHost) -> None:
    name, env = sim_host.name, sim_host.env
    assert {"vif1.0", "vif2.0"} <= dom0_links(env)
    assert "rebooted as domid 3" in sim("reboot", "--name", name, "guest1").stdout
    links = dom0_links(env)
    assert "vif3.0" in links and "vif1.0" not in links
    rows = tool(env, env["XENSIM_XL"], "list").splitlines()[1:]
    assert {row.split()[0]: int(row.split()[1]) for row in rows}["guest1"] == 3
    # The guest is reachable again on its old address through its new vif.
    status = json.loads(sim("status", "--name", name, "--json").stdout)
    address = next(d["address"] for d in status["domains"] if d["name"] == "guest1")
    ping = subprocess.run(
        ["ip", "netns", "exec", f"jsim-{name}-guest2", "ping", "-c", "1", "-W", "2", address],
        capture_output=True,
        timeout=10,
    )
    assert ping.returncode == 0
    vbds = Path(env["XENSIM_SYSFS"]) / "bus/xen-backend/devices"
    wait_for(lambda: (vbds / "vbd-3-51712/statistics/wr_req").exists(), 5, "guest1's new vbd")
    wait_for(lambda: not (vbds / "vbd-1-51712").exists(), 5, "the old vbd to go")


def test_offline_cpu_changes_xenperfs_value_count_and_moves_stranded_vcpus(
    sim_host: SimHost,
) -> None:
    name, env = sim_host.name, sim_host.env

    def interrupt_values() -> int:
        for line in tool(env, env["XENSIM_XENPERF_BIN"], "-f").splitlines():
            if line.startswith("#interrupts "):
                return len(line.rpartition("T=")[2].split()) - 1
        raise AssertionError("no #interrupts line")

    assert interrupt_values() == 4
    sim("offline-cpu", "--name", name, "2")
    assert interrupt_values() == 3
    assert "nr_cpus                : 3" in tool(env, env["XENSIM_XL"], "info")

    def guest2_cpu() -> int:
        for row in tool(env, env["XENSIM_XL"], "vcpu-list", "guest2").splitlines()[1:]:
            return int(row.split()[3])
        raise AssertionError("no vcpu row")

    wait_for(lambda: guest2_cpu() != 2, 5, "guest2's vCPU to leave the offline CPU")
    sim("online-cpu", "--name", name, "2")
    assert interrupt_values() == 4


def test_xl_pause_freezes_the_guests_workload(sim_host: SimHost) -> None:
    name, env = sim_host.name, sim_host.env
    sim("run", "--name", name, "guest2", "cpuhog", "--duration", "10")
    xl = env["XENSIM_XL"]

    def seconds() -> float:
        return float(tool(env, xl, "list", "guest2").splitlines()[1].split()[-1])

    start = seconds()
    wait_for(lambda: seconds() >= start + 0.3, 5, "the hog to burn CPU")
    tool(env, xl, "pause", "guest2")
    assert tool(env, xl, "list", "guest2").splitlines()[1].split()[4][2] == "p"
    paused_at = seconds()
    time.sleep(1.0)  # the window in which a paused guest must not run
    assert seconds() <= paused_at + 0.1
    tool(env, xl, "unpause", "guest2")
    wait_for(lambda: seconds() >= paused_at + 0.3, 5, "the hog to run again")


def test_sysfs_root_shows_dom0s_real_vifs_to_a_process_in_dom0(
    sim_host: SimHost,
) -> None:
    env = sim_host.env
    listing = subprocess.run(
        ["ip", "netns", "exec", env["XENSIM_DOM0_NETNS"], "ls", f"{env['XENSIM_SYSFS']}/class/net"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout.split()
    assert {"vif1.0", "vif2.0", "xenbr0"} <= set(listing)


def test_xl_run_inside_dom0s_namespace_still_reaches_the_cgroups(
    sim_host: SimHost,
) -> None:
    """`ip netns exec` hides /sys/fs/cgroup; the remediator runs xl from there all the same."""
    name, env = sim_host.name, sim_host.env
    in_dom0 = ["ip", "netns", "exec", env["XENSIM_DOM0_NETNS"], env["XENSIM_XL"]]
    tool(env, *in_dom0, "sched-credit2", "-d", "guest1", "-c", "30")
    tool(env, *in_dom0, "pause", "guest1")
    cgroup = Path(f"judicator-sim/{name}/guest1")
    try:
        assert cgroups.cpu_cap(str(cgroup)) == 30
        assert cgroups.is_frozen(str(cgroup))
    finally:
        tool(env, *in_dom0, "unpause", "guest1")
    assert not cgroups.is_frozen(str(cgroup))
