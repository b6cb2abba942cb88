"""What the exporter costs: CPU per scrape and CPU share, beside the published Judicator's figures.

    .venv/bin/python bench/exporter.py [--repeats 7] [--scrapes 40]   (make bench)

For each host shape (4 CPUs and 3 guests, the published experiment's; then 16, 64, 256 CPUs) and
each reader (libxenctrl through ctypes, `xenperf -f`), on the simulated hypervisor (the stub
libxenctrl over a perfc state file with a Debian-12-like counter set, every counter non-zero):

- floor: the CPU time of fetching the counters alone (ctypes: the two perfc calls and copying
  the values out; xenperf: the xenperf process);
- scrape: the CPU time of one whole scrape of the perfc collector (read, CPU-id mapping, domain
  attribution, wrap accumulation, exposition text), with the toolstack's answers (`xl info`,
  `xl vcpu-list`) given in-process: the published Judicator read only xenperf, and the
  simulator's `xl` is a Python stand-in whose start-up would swamp everything (real `xl` is C);
- CPU share at 0.1, 0.5, 1 and 5 s scrape intervals: scrape cost / interval (the exporter does
  nothing between scrapes: no polling thread) plus the served process's idle cost, measured.

CPU time is user + system of this process and its children (getrusage); figures are medians over
`--repeats` rounds of `--scrapes` scrapes. Results go to bench/results/exporter.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from exporter.collector import Exporter  # noqa: E402
from exporter.perfc import PerfcCollector  # noqa: E402
from exporter.readers import LibxenctrlReader, PerfcReader, XenperfReader  # noqa: E402
from exporter.toolstack import DomainStats, HostInfo, VcpuPlacement  # noqa: E402
from xensim import perfc  # noqa: E402
from xensim.counters import DEBIAN_12, Kind  # noqa: E402
from xentools.libxenctrl import LibXenCtrl  # noqa: E402

STUB_DIR = Path(os.environ.get("XENSIM_STUB_DIR") or REPO / "build/stub")
XENPERF = Path(
    os.environ.get("XENSIM_XENPERF") or REPO / ".cache/xen/root/usr/lib/xen-4.17/bin/xenperf"
)
RESULTS = REPO / "bench" / "results" / "exporter.json"
SHAPES = (4, 16, 64, 256)
GUESTS = 3
INTERVALS = (0.1, 0.5, 1.0, 5.0)
# The published Judicator's CPU share on 4 CPUs / 3 guests, in percent, by scrape interval.
PUBLISHED_PERCENT = {0.1: 0.43, 0.5: 0.09, 1.0: 0.06, 5.0: 0.03}


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def median_cost(action: Callable[[], object], repeats: int, per_round: int) -> float:
    """Median over rounds of the CPU seconds one call costs."""
    action()  # warm up (imports, first-scrape state)
    rounds = []
    for _ in range(repeats):
        started = cpu_seconds()
        for _ in range(per_round):
            action()
        rounds.append((cpu_seconds() - started) / per_round)
    return statistics.median(rounds)


class BenchToolstack:
    """The answers `xl` gives on the shape: Domain-0 on CPU 0, guest i pinned to CPU i."""

    def __init__(self, cpus: int) -> None:
        self.host = HostInfo(cpus, cpus - 1, "4.17.7")
        names = ["Domain-0"] + [f"guest{i}" for i in range(1, GUESTS + 1)]
        self.vcpus = [
            VcpuPlacement(name, domid, 0, domid, frozenset({domid}), 10.0 * domid)
            for domid, name in enumerate(names)
        ]

    def info(self, timeout: float) -> HostInfo:
        return self.host

    def vcpu_list(self, timeout: float) -> Sequence[VcpuPlacement]:
        return self.vcpus

    def pool_cpus(self, timeout: float) -> frozenset[int]:
        return frozenset(range(self.host.nr_cpus))

    def domains(self, timeout: float) -> Sequence[DomainStats]:
        return []


def make_state(directory: Path, cpus: int) -> None:
    path = directory / perfc.STATE_FILE
    perfc.create(path, DEBIAN_12, cpus)
    rng = random.Random(cpus)
    per_cpu, arrays = {}, {}
    for counter in DEBIAN_12.counters:
        if counter.kind is Kind.ARRAY:
            for index in range(counter.size):
                arrays[counter.name, index] = rng.randrange(1, 1 << 31)
        else:
            for cpu in range(cpus):
                per_cpu[counter.name, cpu] = rng.randrange(1, 1 << 31)
    perfc.set_values(path, per_cpu=per_cpu, arrays=arrays)


@contextlib.contextmanager
def simulated_hypervisor(cpus: int) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=f"bench-exporter-{os.getpid()}-") as name:
        directory = Path(name)
        make_state(directory, cpus)
        saved = {key: os.environ.get(key) for key in ("XENSIM_STATE_DIR", "LD_LIBRARY_PATH")}
        os.environ["XENSIM_STATE_DIR"] = str(directory)
        os.environ["LD_LIBRARY_PATH"] = str(STUB_DIR)
        try:
            yield directory
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def measure_shape(cpus: int, repeats: int, scrapes: int) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    with simulated_hypervisor(cpus):
        library = LibXenCtrl.load([str(STUB_DIR / "libxenctrl.so.4.17")])
        readers: dict[str, PerfcReader] = {
            "libxenctrl": LibxenctrlReader(library),
            "xenperf": XenperfReader(str(XENPERF)),
        }
        with library.open() as interface:
            floors: dict[str, Callable[[], object]] = {
                "libxenctrl": lambda: interface.perfc_query(cpus - 1),
                "xenperf": lambda: subprocess.run(
                    [str(XENPERF), "-f"], capture_output=True, check=True, timeout=30
                ),
            }
            for name, reader in readers.items():
                exporter = Exporter([PerfcCollector(reader)], BenchToolstack(cpus), 5.0, 30.0)
                per_round = max(3, scrapes // (4 if name == "xenperf" else 1) // max(1, cpus // 16))
                floor = median_cost(floors[name], repeats, per_round)
                scrape = median_cost(exporter.render, repeats, per_round)
                size = len(exporter.render())
                results[name] = {"floor_ms": floor * 1e3, "scrape_ms": scrape * 1e3, "bytes": size}
    return results


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def process_tree_cpu(pid: int) -> float:
    """CPU seconds of `pid` and its live descendants (gunicorn master + worker)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        pending.extend(int(child) for child in children)
    return total


def idle_share(seconds: float) -> float:
    """CPU share of a served, idle exporter (gunicorn's own housekeeping), in percent."""
    port = free_port()
    argv = [
        sys.executable, "-m", "exporter", f"--web.listen-address=127.0.0.1:{port}",
        "--no-collector.domain", "--no-collector.network", "--no-collector.block",
        "--no-collector.perfc", "--log.level=error",
    ]  # fmt: skip
    process = subprocess.Popen(
        argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the exporter did not start") from None
                time.sleep(0.1)
        time.sleep(1.0)  # let start-up settle before measuring
        before = process_tree_cpu(process.pid)
        time.sleep(seconds)
        return (process_tree_cpu(process.pid) - before) / seconds * 100
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--scrapes", type=int, default=40, help="scrapes per round (4 CPUs)")
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    for needed in (XENPERF, STUB_DIR / "libxenctrl.so.4.17"):
        if not needed.exists():
            parser.error(f"{needed} is missing: run `make deps`")

    shapes = {cpus: measure_shape(cpus, args.repeats, args.scrapes) for cpus in SHAPES}
    idle = idle_share(args.idle_seconds)

    print(f"judicator-exporter CPU cost ({platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}), medians of "
          f"{args.repeats} rounds")  # fmt: skip
    print()
    print("CPU cost per scrape (ms), perfc collector, toolstack answers in-process")
    print(f"{'CPUs':>5} {'reader':>11} {'floor':>8} {'scrape':>8} {'exposition':>11}")
    for cpus, readers in shapes.items():
        for reader, figures in readers.items():
            print(
                f"{cpus:>5} {reader:>11} {figures['floor_ms']:>8.2f} {figures['scrape_ms']:>8.2f}"
                f" {figures['bytes'] / 1024:>9.0f}kB"
            )
    print()
    print(f"CPU share at {SHAPES[0]} CPUs / {GUESTS} guests (%), idle served process {idle:.3f}%")
    print(f"{'interval':>9} {'published':>10} {'libxenctrl':>11} {'xenperf':>9}")
    share = {}
    for interval in INTERVALS:
        row = {
            reader: shapes[SHAPES[0]][reader]["scrape_ms"] / 1e3 / interval * 100 + idle
            for reader in ("libxenctrl", "xenperf")
        }
        share[str(interval)] = {"published": PUBLISHED_PERCENT[interval], **row}
        print(
            f"{interval:>8}s {PUBLISHED_PERCENT[interval]:>10.2f} {row['libxenctrl']:>11.2f}"
            f" {row['xenperf']:>9.2f}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "load_average": os.getloadavg(),
                },
                "repeats": args.repeats,
                "per_scrape": {str(cpus): readers for cpus, readers in shapes.items()},
                "idle_percent": idle,
                "share_percent_4cpu": share,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nwritten to {RESULTS.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
