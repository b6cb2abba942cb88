"""`judicator-sim down` removes everything, also after `kill -9` of the daemon and workloads."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.support import require_binary, require_root, sim, wait_for
from xensim import cgroups
from xensim.host import RUN_ROOT, leftovers

pytestmark = pytest.mark.host


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def netns_pids(netns: str) -> list[int]:
    result = subprocess.run(
        ["ip", "netns", "pids", netns], capture_output=True, text=True, check=False
    )
    return [int(p) for p in result.stdout.split()]


def test_down_after_kill_9_leaves_nothing_behind() -> None:
    require_root()
    require_binary("ping")
    name = f"tk{os.getpid() % 100_000_000}"
    try:
        sim("up", "--name", name, "--dom0-netns", "--guests", "2")
        status = json.loads(sim("status", "--name", name, "--json").stdout)
        daemon = status["daemon_pid"]
        assert isinstance(daemon, int) and alive(daemon)
        flood_args = ("guest1", "pingflood", "--target", "guest2", "--duration", "20")
        flood = int(sim("run", "--name", name, *flood_args).stdout)
        hog = int(sim("run", "--name", name, "guest2", "cpuhog", "--duration", "20").stdout)
        # A third process lives in a guest's namespace but outside its cgroup, as a user's
        # `ip netns exec` shell would: the sweep finds it by namespace.
        stray = subprocess.Popen(
            ["ip", "netns", "exec", f"jsim-{name}-guest1", "sleep", "30"],
            start_new_session=True,
        )
        wait_for(lambda: stray.pid in netns_pids(f"jsim-{name}-guest1"), 5, "the stray sleep")
        # The simulator crashes hard: daemon and one workload killed, state left as it was.
        os.kill(daemon, signal.SIGKILL)
        os.kill(flood, signal.SIGKILL)
        wait_for(lambda: not alive(daemon), 5, "the daemon to die")
        assert leftovers(name), "the crash should have left the host's pieces behind"

        down = sim("down", "--name", name)
        assert "removed netns" in down.stdout

        assert leftovers(name) == []
        for pid in (daemon, flood, hog):
            assert not alive(pid), f"pid {pid} survived down"
        wait_for(lambda: stray.poll() is not None, 5, "the stray process to be killed")
        assert not (RUN_ROOT / name).exists()
        assert not cgroups.exists(f"judicator-sim/{name}")
        netns = subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True, check=True
        ).stdout
        assert f"jsim-{name}-" not in netns
        # Once down, down is still fine and finds nothing.
        assert sim("down", "--name", name).stdout == ""
    finally:
        sim("down", "--name", name, check=False)


def test_up_refuses_a_host_that_already_exists_and_down_reports_clean() -> None:
    require_root()
    name = f"tu{os.getpid() % 100_000_000}"
    try:
        sim("up", "--name", name, "--dom0-netns", "--guests", "1")
        again = sim("up", "--name", name, "--dom0-netns", check=False)
        assert again.returncode == 2
        assert "already exists" in again.stderr
    finally:
        sim("down", "--name", name, check=False)
    assert leftovers(name) == []
