"""xentools.toolstack.XlToolstack: reading the host through xl (here the fake one on a sample
host) with argv lists and a timeout; the one pool -> scheduler lookup."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.sim import fakexl_sample
from xensim.state import StateStore
from xentools.toolstack import ToolstackError, XlToolstack

REPO = Path(__file__).resolve().parents[2]


def script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def sample(tmp_path: Path) -> tuple[XlToolstack, StateStore]:
    store = fakexl_sample.write_sample(tmp_path / "state")
    wrapper = script(
        tmp_path / "xl",
        f"XENSIM_STATE_DIR={shlex.quote(str(store.dir))} PYTHONPATH={shlex.quote(str(REPO))} "
        f'exec {shlex.quote(sys.executable)} -m xensim.fakexl "$@"',
    )
    return XlToolstack(wrapper), store


def test_reads(sample: tuple[XlToolstack, StateStore]) -> None:
    xl, store = sample
    host = store.read()
    info = xl.info(timeout=30)
    assert info.max_cpu_id == 7
    domains = {d.name: d for d in xl.domains(timeout=30)}
    assert list(domains)[:2] == ["Domain-0", "web01"]
    assert domains["web01"].uuid == "6f9b3c52-2a8e-4d6b-9d3e-0c1f2a3b4c5d"
    assert domains["web01"].max_memory_bytes is not None
    assert xl.pool_cpus(timeout=30) == frozenset({0, 1, 2, 3, 4, 5, 7})
    vcpus = [v for v in xl.vcpu_list(timeout=30) if v.domain == "batch02"]
    assert [v.vcpu for v in vcpus] == [0, 1, 2, 3]
    web01 = host.domain("web01")
    assert xl.hard_affinity(web01.domid, timeout=30) == [v.hard for v in web01.vcpus]


def test_the_scheduler_is_the_pools_and_the_cap_is_read_with_it(
    sample: tuple[XlToolstack, StateStore],
) -> None:
    xl, store = sample
    host = store.read()
    web01, batch02 = host.domain("web01"), host.domain("batch02")
    assert xl.scheduler(web01.domid, timeout=30) == "credit2"
    assert xl.scheduler(batch02.domid, timeout=30) == "credit"
    assert xl.cap(batch02.domid, "credit", timeout=30) == batch02.cap
    with pytest.raises(ToolstackError):
        xl.cap(web01.domid, "credit", timeout=30)  # the wrong command fails, as on Xen
    with pytest.raises(ToolstackError, match="no cap"):
        xl.cap(web01.domid, "rtds", timeout=30)


def test_unknown_domain(sample: tuple[XlToolstack, StateStore]) -> None:
    xl, _ = sample
    with pytest.raises(ToolstackError, match="exited 1"):
        xl.scheduler(999, timeout=30)


def test_timeout(tmp_path: Path) -> None:
    hanging = script(tmp_path / "xl", "exec sleep 30")
    with pytest.raises(ToolstackError, match=r"did not finish within 0\.2s"):
        XlToolstack(hanging).domains(timeout=0.2)


def test_missing_binary(tmp_path: Path) -> None:
    with pytest.raises(ToolstackError, match="cannot run"):
        XlToolstack(str(tmp_path / "no-such-xl")).info(timeout=5)


def test_unparsable_output_names_the_command(tmp_path: Path) -> None:
    garbage = script(tmp_path / "xl", "echo garbage")
    with pytest.raises(ToolstackError, match="xl vcpu-list"):
        XlToolstack(garbage).vcpu_list(timeout=5)


def test_argv_is_not_a_shell_line_and_a_caller_may_bring_its_runner(tmp_path: Path) -> None:
    seen: list[tuple[list[str], float]] = []

    def run(argv: Sequence[str], timeout: float) -> str:
        seen.append((list(argv), timeout))
        return "Name  ID   Mem VCPUs\tState\tTime(s)\n"

    with pytest.raises(ToolstackError):
        XlToolstack("/x/xl; echo $HOME", run=run).scheduler(3, timeout=1.5)
    assert seen == [(["/x/xl; echo $HOME", "list", "-c", "3"], 1.5)]
