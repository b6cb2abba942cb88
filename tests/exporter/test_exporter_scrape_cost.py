"""What keeps a scrape cheap and on time: xl answers kept between scrapes, xl runs overlapped,
the counters served when xl is late, and a command timeout that holds against grandchildren."""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from exporter.collector import Exporter
from exporter.domains import DomainCollector
from exporter.perfc import INFO_REFRESH_SCRAPES, PerfcCollector
from exporter.toolstack import DomainStats, HostInfo, VcpuPlacement
from tests.exporter.fakes import FakeReader, FakeToolstack, fixture_snapshot
from tests.exporter.test_exporter_perfc import scrape, snapshot
from xentools.command import CommandTimeout, run_command
from xentools.toolstack import MAX_MEMORY_REFRESH_CALLS, ToolstackError, XlToolstack

XL_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "xl"


def test_xl_info_is_asked_again_only_when_the_online_cpus_change() -> None:
    toolstack = FakeToolstack()
    reader = FakeReader(*([snapshot(interrupts=[1, 2, 3, 4])] * 3), snapshot(interrupts=[1, 2, 3]))
    exporter = Exporter([PerfcCollector(reader)], toolstack, command_timeout=2, scrape_timeout=5)
    for _ in range(3):
        scrape(exporter)
    assert toolstack.calls.count("info") == 1
    assert toolstack.calls.count("vcpu-list") == 3
    toolstack.host = HostInfo(3, 3, "4.17.7")
    value = scrape(exporter).get_sample_value
    assert toolstack.calls.count("info") == 2  # three values now: the CPU set changed
    assert value("xen_perfc_interrupts_total", {"cpu": "index2"}) == 3


def test_xl_info_is_asked_again_now_and_then() -> None:
    toolstack = FakeToolstack()
    reader = FakeReader(snapshot(interrupts=[1, 2, 3, 4]))
    exporter = Exporter([PerfcCollector(reader)], toolstack, command_timeout=2, scrape_timeout=5)
    for _ in range(INFO_REFRESH_SCRAPES + 1):
        scrape(exporter)
    assert toolstack.calls.count("info") == 2


class RendezvousToolstack(FakeToolstack):
    """vcpu-list and list answer only if both are asked at once (from two threads)."""

    def __init__(self) -> None:
        super().__init__()
        self.meeting = threading.Barrier(2, timeout=5)

    def vcpu_list(self, timeout: float) -> Sequence[VcpuPlacement]:
        self.meeting.wait()
        return super().vcpu_list(timeout)

    def domains(self, timeout: float) -> Sequence[DomainStats]:
        self.meeting.wait()
        return super().domains(timeout)


def test_xl_questions_of_one_scrape_run_at_the_same_time() -> None:
    toolstack = FakeToolstack()
    perfc = PerfcCollector(FakeReader(fixture_snapshot("4.17-4cpu-f.txt")))
    exporter = Exporter([perfc, DomainCollector()], toolstack, command_timeout=6, scrape_timeout=9)
    scrape(exporter)  # the first scrape learns the CPU counts; vcpu-list waits for them
    exporter.toolstack = meeting = RendezvousToolstack()
    value = scrape(exporter).get_sample_value
    assert not meeting.meeting.broken, "vcpu-list and list were not asked concurrently"
    assert value("xen_exporter_collector_success", {"collector": "perfc"}) == 1
    assert value("xen_exporter_collector_success", {"collector": "domain"}) == 1
    assert value("xen_domain_vcpus", {"domain": "guest1"}) == 1


def test_late_vcpu_list_serves_counters_with_the_last_attribution(
    caplog: pytest.LogCaptureFixture,
) -> None:
    toolstack = FakeToolstack()
    reader = FakeReader(
        snapshot(interrupts=[10, 20, 30, 40]), snapshot(interrupts=[11, 22, 33, 44])
    )
    exporter = Exporter([PerfcCollector(reader)], toolstack, command_timeout=2, scrape_timeout=5)
    scrape(exporter)
    toolstack.failing.add("vcpu-list")
    with caplog.at_level(logging.ERROR):
        value = scrape(exporter).get_sample_value
    assert value("xen_perfc_interrupts_total", {"cpu": "2", "domain": "guest2"}) == 33
    assert value("xen_pcpu_domain_share_ratio", {"cpu": "2", "domain": "guest2"}) == 1
    assert value("xen_exporter_collector_success", {"collector": "perfc"}) == 0
    assert "last known CPU -> domain attribution" in caplog.text


def test_vcpu_list_failing_from_the_start_serves_no_counters() -> None:
    toolstack = FakeToolstack(failing={"vcpu-list"})
    reader = FakeReader(snapshot(interrupts=[10, 20, 30, 40]))
    exporter = Exporter([PerfcCollector(reader)], toolstack, command_timeout=2, scrape_timeout=5)
    value = scrape(exporter).get_sample_value
    assert value("xen_exporter_collector_success", {"collector": "perfc"}) == 0
    assert value("xen_perfc_interrupts_total", {"cpu": "2", "domain": "guest2"}) is None


def counting_xl(directory: Path, list_v: str) -> tuple[str, Path]:
    """An xl that answers from fixtures and logs each run's arguments."""
    log = directory / "calls"
    script = directory / "xl"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {shlex.quote(str(log))}\n'
        'case "$*" in\n'
        f'    "list -v") cat {shlex.quote(list_v)} ;;\n'
        f'    "list -l") cat {shlex.quote(str(XL_FIXTURES / "fake-list-l.txt"))} ;;\n'
        "    *) exit 1 ;;\n"
        "esac\n"
    )
    script.chmod(0o755)
    return str(script), log


def test_xl_list_long_only_when_the_domains_change(tmp_path: Path) -> None:
    all_domains = XL_FIXTURES / "fake-list-v.txt"
    lines = all_domains.read_text().splitlines(keepends=True)
    fewer = tmp_path / "list-v-fewer.txt"
    fewer.write_text("".join(lines[:-1]))
    current = tmp_path / "list-v.txt"
    current.write_text(all_domains.read_text())
    xl, calls = counting_xl(tmp_path, str(current))
    toolstack = XlToolstack(xl)

    first = toolstack.domains(timeout=10)
    assert any(domain.max_memory_bytes for domain in first)
    for _ in range(3):
        assert toolstack.domains(timeout=10) == first
    assert calls.read_text().splitlines().count("list -l") == 1
    current.write_text(fewer.read_text())  # a domain went away
    assert len(toolstack.domains(timeout=10)) == len(first) - 1
    assert calls.read_text().splitlines().count("list -l") == 2
    for _ in range(MAX_MEMORY_REFRESH_CALLS):
        toolstack.domains(timeout=10)
    assert calls.read_text().splitlines().count("list -l") == 3


def grandchild_holding_the_pipes(directory: Path) -> tuple[str, Path]:
    """A command whose child keeps stdout open after the command itself is killed."""
    pid_file = directory / "grandchild.pid"
    script = directory / "xl"
    script.write_text(f"#!/bin/sh\nsleep 60 &\necho $! > {shlex.quote(str(pid_file))}\nwait\n")
    script.chmod(0o755)
    return str(script), pid_file


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return status != "Z"


@pytest.mark.parametrize("runner", ["run_command", "XlToolstack"])
def test_timeout_holds_against_a_grandchild_and_kills_it(tmp_path: Path, runner: str) -> None:
    argv0, pid_file = grandchild_holding_the_pipes(tmp_path)
    started = time.monotonic()
    try:
        if runner == "XlToolstack":
            with pytest.raises(ToolstackError, match="did not finish"):
                XlToolstack(argv0).domains(timeout=0.3)
        else:
            with pytest.raises(CommandTimeout):
                run_command([argv0, "list"], timeout=0.3)
        elapsed = time.monotonic() - started
        grandchild = int(pid_file.read_text())
        deadline = time.monotonic() + 5
        while alive(grandchild) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not alive(grandchild), "the grandchild outlived the timeout"
        assert elapsed < 3, f"the timeout of 0.3 s held for {elapsed:.1f} s"
    finally:
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
