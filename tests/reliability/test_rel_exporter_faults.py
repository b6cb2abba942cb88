"""The exporter as a process under faults its own tests do not cover (those have whole-binary
hangs, failures and garbage: tests/exporter/test_exporter_serving.py): partial output, the
library missing, a CPU offline, a domain vanishing mid-scrape, and memory over many scrapes.
Every scrape answers within its timeout, with the healthy parts and the right success gauges.

No root needed: the host is the frozen simulated host of tests/exporter/statichost.py.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.exporter.statichost import STUB_DIR, XENPERF, StaticHost, make_static_host, write_script
from tests.support import require, wait_for
from xensim.stack import free_loopback_port, stop_process_group

REPO = Path(__file__).resolve().parents[2]
COLLECTORS = ("perfc", "domain", "network", "block")


@pytest.fixture
def host(tmp_path: Path) -> StaticHost:
    require(XENPERF.exists() and (STUB_DIR / "libxenctrl.so.4.17").exists(), "needs make deps")
    return make_static_host(tmp_path)


@contextlib.contextmanager
def exporter(host: StaticHost, *flags: str, env: dict[str, str] | None = None) -> Iterator[Any]:
    port = free_loopback_port()
    argv = [sys.executable, "-m", "exporter", f"--web.listen-address=127.0.0.1:{port}",
            f"--xl.path={host.xl}", f"--xenperf.path={host.xenperf}",
            f"--path.sysfs={host.sysfs}", "--command.timeout=1", *flags]  # fmt: skip
    environment = {**os.environ, **host.environment(), "PYTHONPATH": str(REPO), **(env or {})}
    log = Path(host.state_dir).parent / f"exporter-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(argv, env=environment, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # fmt: skip
    handle = Exporter(process, f"http://127.0.0.1:{port}", log)

    def started() -> bool:
        assert process.poll() is None, log.read_text()
        return handle.up()

    try:
        wait_for(started, 30, "the exporter to start")
        yield handle
    finally:
        stop_process_group(process)


class Exporter:
    def __init__(self, process: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.process = process
        self.url = url
        self.log = log

    def up(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def scrape(self, timeout: float = 10) -> tuple[float, dict[str, float]]:
        """(seconds taken, samples by their exposition line's name{labels})."""
        started = time.monotonic()
        with urllib.request.urlopen(self.url + "/metrics", timeout=timeout) as response:
            assert response.status == 200
            text = response.read().decode()
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                samples[name] = float(value)
        return time.monotonic() - started, samples

    def rss_bytes(self) -> int:
        """Resident memory of the exporter's whole process group."""
        total = 0
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            with contextlib.suppress(OSError):
                if os.getpgid(int(entry)) != self.process.pid:
                    continue
                for line in Path(f"/proc/{entry}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        return total


def success(samples: dict[str, float]) -> dict[str, float]:
    return {c: samples[f'xen_exporter_collector_success{{collector="{c}"}}'] for c in COLLECTORS}


def test_truncated_xenperf_output_fails_perfc_only(host: StaticHost, tmp_path: Path) -> None:
    half = len(subprocess.run([host.xenperf, "-f"], capture_output=True, check=True,
                              env={**os.environ, **host.environment()}).stdout) // 2  # fmt: skip
    xenperf = write_script(
        tmp_path / "partial-xenperf", f'#!/bin/sh\n"{host.xenperf}" "$@" | head -c {half}\n'
    )
    with exporter(host, "--perfc.reader=xenperf", f"--xenperf.path={xenperf}") as running:
        seconds, samples = running.scrape()
    assert seconds < 5
    assert success(samples) == {"perfc": 0, "domain": 1, "network": 1, "block": 1}
    assert samples['xen_domain_vcpus{domain="guest2"}'] == 1
    # Half a snapshot is never served: a missing counter would read as a reset downstream.
    assert not [name for name in samples if name.startswith("xen_perfc_interrupts_total")]


@pytest.mark.parametrize(
    "command",
    [
        "list -v",
        "list -l",
        "vcpu-list",
        "info",
        "cpupool-list -c",
    ],
)
def test_truncated_xl_output_answers_with_the_rest(
    host: StaticHost, tmp_path: Path, command: str
) -> None:
    full = subprocess.run([host.xl, *command.split()], capture_output=True, check=True,
                          env={**os.environ, **host.environment()}).stdout  # fmt: skip
    half = len(full.rstrip(b"\n")) // 2  # cut mid-line, as a killed or interrupted xl would
    cut = tmp_path / "cut"  # written when the exporter ran the command and got it cut short
    xl = write_script(
        tmp_path / "partial-xl",
        "#!/bin/sh\n"
        f'if [ "$*" = {shlex.quote(command)} ]; then\n'
        f'    : > "{cut}"; "{host.xl}" "$@" | head -c {half}; exit 0\nfi\n'
        f'exec "{host.xl}" "$@"\n',
    )
    with exporter(host, "--toolstack.reader=xl", f"--xl.path={xl}") as running:
        seconds, samples = running.scrape()
    assert seconds < 5
    gauges = success(samples)
    if cut.exists():
        assert 0 in gauges.values(), f"a truncated `xl {command}` went unnoticed: {gauges}"
    else:
        # The exporter reads the cpupools only when the CPU ids are not simply 0..N-1.
        assert command == "cpupool-list -c"
        assert set(gauges.values()) == {1}
    assert "xen_exporter_build_info" in "".join(samples)


def test_library_missing_named_at_start_when_asked_for(host: StaticHost, tmp_path: Path) -> None:
    empty = tmp_path / "no-lib"
    empty.mkdir()
    listen = f"--web.listen-address=127.0.0.1:{free_loopback_port()}"
    argv = [sys.executable, "-m", "exporter", "--perfc.reader=libxenctrl",
            f"--xl.path={host.xl}", listen]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False,
                            env={**os.environ, "PYTHONPATH": str(REPO),
                                 "LD_LIBRARY_PATH": str(empty)})  # fmt: skip
    assert result.returncode == 2
    assert "libxenctrl.so.4.17" in result.stderr


def test_library_missing_fails_perfc_and_serves_the_rest(host: StaticHost, tmp_path: Path) -> None:
    # --perfc.reader=auto falls back to xenperf, which needs the same library.
    empty = tmp_path / "no-lib"
    empty.mkdir()
    with exporter(host, "--perfc.reader=auto", env={"LD_LIBRARY_PATH": str(empty)}) as running:
        seconds, samples = running.scrape()
    assert seconds < 5
    assert success(samples) == {"perfc": 0, "domain": 1, "network": 1, "block": 1}
    assert samples['xen_domain_vcpus{domain="guest1"}'] == 1


def test_a_cpu_going_offline_between_scrapes(host: StaticHost) -> None:
    from xensim import perfc
    from xensim.state import StateStore

    with exporter(host, "--perfc.reader=libxenctrl") as running:
        _, before = running.scrape()
        assert 'xen_perfc_interrupts_total{cpu="2",domain="guest2"}' in before
        # As `judicator-sim offline-cpu 2` does, and Xen: guest2's vCPU loses its affinity.
        with StateStore(host.state_dir).transaction() as state:
            perfc.set_online_cpus(host.state_dir / perfc.STATE_FILE, [0, 1, 2, 3], [0, 1, 3])
            state.online_cpus = [0, 1, 3]
            for pool in state.pools:
                pool.cpus = [c for c in pool.cpus if c != 2]
            for vcpu in state.domain("guest2").vcpus:
                vcpu.hard, vcpu.cpu = "all", 1
        seconds, after = running.scrape()
    assert seconds < 5
    assert success(after) == {"perfc": 1, "domain": 1, "network": 1, "block": 1}
    assert not [n for n in after if n.startswith('xen_perfc_interrupts_total{cpu="2"')]
    # guest2's vCPU may now run anywhere, so no CPU is one domain's alone: the domain label
    # goes, the values of the CPUs still online stay exactly where they were.
    for cpu, guest in ((1, "guest1"), (3, "guest3")):
        old = before[f'xen_perfc_interrupts_total{{cpu="{cpu}",domain="{guest}"}}']
        assert after[f'xen_perfc_interrupts_total{{cpu="{cpu}"}}'] == old


def test_a_domain_vanishing_mid_scrape(host: StaticHost, tmp_path: Path) -> None:
    # guest3 is destroyed right after `xl list -v` printed it, before `xl list -l`.
    destroy = (f"from xensim.state import StateStore\n"
               f"with StateStore({str(host.state_dir)!r}).transaction() as h:\n"
               f"    h.find_domain('guest3') and h.destroy_domain('guest3')\n")  # fmt: skip
    xl = write_script(
        tmp_path / "vanishing-xl",
        "#!/bin/sh\n"
        f'if [ "$*" = "list -v" ]; then "{host.xl}" "$@"; '
        f"PYTHONPATH={REPO} {sys.executable} -c {shlex.quote(destroy)}; exit 0; fi\n"
        f'exec "{host.xl}" "$@"\n',
    )
    # The wrapper starts a Python process inside `xl list -v`: on a loaded machine that alone
    # outlasts the suite's 1 s command timeout, which would fail the scrape for another reason.
    flags = ("--toolstack.reader=xl", f"--xl.path={xl}", "--command.timeout=5")
    with exporter(host, *flags) as running:
        seconds, samples = running.scrape()
        _, next_scrape = running.scrape()
    assert seconds < 9
    assert samples['xen_domain_vcpus{domain="guest1"}'] == 1
    assert success(next_scrape) == {"perfc": 1, "domain": 1, "network": 1, "block": 1}
    assert not [n for n in next_scrape if 'domain="guest3"' in n]
    assert success(samples)["perfc"] == 1


def _fast_xl(host: StaticHost, directory: Path) -> str:
    """An xl that replays captured answers: scrapes cost the exporter, not the fake xl."""
    directory.mkdir()
    cases = []
    env = {**os.environ, **host.environment()}
    for index, args in enumerate(("info", "vcpu-list", "cpupool-list -c", "list -v", "list -l")):
        out = subprocess.run([host.xl, *args.split()], capture_output=True, check=True, env=env)
        (directory / f"{index}.out").write_bytes(out.stdout)
        cases.append(f'    {shlex.quote(args)}) exec cat "{directory}/{index}.out" ;;')
    body = "\n".join(cases)
    return write_script(
        directory / "xl",
        f'#!/bin/sh\ncase "$*" in\n{body}\n    *) exec "{host.xl}" "$@" ;;\nesac\n',
    )


def _memory_over_scrapes(host: StaticHost, tmp_path: Path, scrapes: int) -> tuple[int, int, float]:
    xl = _fast_xl(host, tmp_path / "fast-xl")
    with exporter(host, f"--xl.path={xl}", "--perfc.reader=libxenctrl") as running:
        for _ in range(100):  # warm up: imports, caches, allocator arenas
            running.scrape()
        baseline = running.rss_bytes()
        slowest = 0.0
        for _ in range(scrapes):
            seconds, samples = running.scrape()
            slowest = max(slowest, seconds)
        assert success(samples) == {"perfc": 1, "domain": 1, "network": 1, "block": 1}
        return baseline, running.rss_bytes(), slowest


def test_memory_does_not_grow_over_300_scrapes(host: StaticHost, tmp_path: Path) -> None:
    baseline, final, slowest = _memory_over_scrapes(host, tmp_path, 300)
    print(f"rss {baseline / 2**20:.1f} MiB -> {final / 2**20:.1f} MiB, slowest {slowest:.3f}s")
    assert final - baseline < 4 * 2**20, (baseline, final)
    assert slowest < 5


@pytest.mark.soak
def test_memory_does_not_grow_over_10000_scrapes(host: StaticHost, tmp_path: Path) -> None:
    baseline, final, slowest = _memory_over_scrapes(host, tmp_path, 10_000)
    print(f"rss {baseline / 2**20:.1f} MiB -> {final / 2**20:.1f} MiB, slowest {slowest:.3f}s")
    assert final - baseline < 8 * 2**20, (baseline, final)
    assert slowest < 5
