"""xentools.xl.Xl: running xl (here the fake one on a sample host) with argv lists and a timeout,
and catching xl's exit-0 failures."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

from tests.sim import fakexl_sample
from xensim.state import StateStore
from xentools.xl import Xl, XlError, XlTimeout

REPO = Path(__file__).resolve().parents[2]


def script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def sample(tmp_path: Path) -> tuple[Xl, StateStore]:
    store = fakexl_sample.write_sample(tmp_path / "state")
    wrapper = script(
        tmp_path / "xl",
        f"XENSIM_STATE_DIR={shlex.quote(str(store.dir))} PYTHONPATH={shlex.quote(str(REPO))} "
        f'exec {shlex.quote(sys.executable)} -m xensim.fakexl "$@"',
    )
    return Xl(wrapper, timeout=30), store


def test_reads(sample: tuple[Xl, StateStore]) -> None:
    xl, _ = sample
    assert [d.name for d in xl.list_domains()][:2] == ["Domain-0", "web01"]
    assert xl.info().max_cpu_id == 7
    assert [p.name for p in xl.cpupools()] == ["Pool-0", "batch-pool"]
    assert xl.cpupool_cpus() == {"Pool-0": (0, 1, 2, 3, 4, 5), "batch-pool": (7,)}
    assert [v.vcpu for v in xl.vcpu_list("batch02")] == [0, 1, 2, 3]
    assert xl.list_domains_verbose()[1].uuid == "6f9b3c52-2a8e-4d6b-9d3e-0c1f2a3b4c5d"
    assert xl.list_domains_long()[1].nics[1].devid == 1
    assert [n.devid for n in xl.network_list("web01")] == [0, 1]


def test_caps_pick_the_pools_scheduler(sample: tuple[Xl, StateStore]) -> None:
    xl, store = sample
    assert (xl.scheduler_of("web01"), xl.scheduler_of("batch02")) == ("credit2", "credit")
    xl.set_cap("web01", 30)
    xl.set_cap("batch02", 250)
    assert (xl.sched_params("web01").cap, xl.sched_params("batch02").cap) == (30, 250)
    assert store.read().domain("batch02").cap == 250
    with pytest.raises(XlError) as too_big:
        xl.set_cap("web01", 201)
    assert too_big.value.returncode == 1
    assert "Cpu cap out of range" in too_big.value.stderr
    with pytest.raises(XlError):
        xl.set_cap("web01", 10, scheduler="credit")  # the wrong command fails, as on Xen
    with pytest.raises(ValueError):
        xl.set_cap("web01", -1)
    assert store.read().domain("web01").cap == 30


def test_pause_failures_that_exit_0_raise(sample: tuple[Xl, StateStore]) -> None:
    xl, store = sample
    xl.pause("web01")
    assert store.read().domain("web01").pause_count == 1
    xl.unpause("web01")
    with pytest.raises(XlError) as caught:
        xl.unpause("web01")
    assert caught.value.returncode == 0
    assert "Unpausing domain: Invalid argument" in caught.value.stderr


def test_vcpu_pin_all_failure_raises(sample: tuple[Xl, StateStore]) -> None:
    xl, store = sample
    xl.vcpu_pin("web01", 0, "3")
    assert store.read().domain("web01").vcpus[0].hard == "3"
    with pytest.raises(XlError) as caught:
        xl.vcpu_pin("web01", "all", "7")  # CPU 7 is in another pool
    assert caught.value.returncode == 0
    assert "Could not set affinity." in caught.value.stderr
    assert store.read().domain("web01").vcpus[0].hard == "3"


def test_unknown_domain(sample: tuple[Xl, StateStore]) -> None:
    xl, _ = sample
    with pytest.raises(XlError) as caught:
        xl.pause("nosuch")
    assert caught.value.returncode == 1
    assert caught.value.argv[1:] == ["pause", "nosuch"]
    assert "invalid domain identifier" in str(caught.value)


def test_timeout(tmp_path: Path) -> None:
    hanging = script(tmp_path / "xl", "exec sleep 30")
    with pytest.raises(XlTimeout) as caught:
        Xl(hanging, timeout=0.2).list_domains()
    assert caught.value.timeout == 0.2


def test_missing_binary(tmp_path: Path) -> None:
    with pytest.raises(XlError) as caught:
        Xl(str(tmp_path / "no-such-xl")).info()
    assert caught.value.returncode is None


def test_argv_is_not_a_shell_line(tmp_path: Path) -> None:
    record = tmp_path / "argv"
    echo = script(tmp_path / "xl", f'printf "%s\\n" "$@" > {shlex.quote(str(record))}')
    Xl(echo).run("pause", "web01; echo $HOME")
    assert record.read_text() == "pause\nweb01; echo $HOME\n"
