"""What the exporter costs: CPU per scrape and CPU share, beside the published Judicator's figures.

    .venv/bin/python bench/exporter.py [--repeats 7] [--scrapes 40]   (make bench)

For each host shape (4 CPUs, Domain-0 on CPU 0 and 3 guests pinned one per CPU, the published
experiment's; then 16, 64, 256 CPUs, one pinned guest per CPU) and each counter reader
(libxenctrl through ctypes, `xenperf -f`), on the simulated hypervisor (the stub libxenctrl
over a perfc state file with a Debian-12-like counter set, every counter non-zero, and over
the simulator's toolstack state for the domains):

- floor: the CPU time of fetching the counters alone (ctypes: the two perfc calls and copying
  the values out; xenperf: the xenperf process);
- scrape: the CPU time of one whole scrape as `judicator-exporter` builds it (perfc and domain
  collectors: read, CPU-id mapping, domain attribution, wrap accumulation, the domain list and
  vCPU placement through libxenctrl and libxenstore, exposition text), with the shipped
  counter selection (`DEFAULT_INCLUDE`), and again with every counter (`--collector.perfc.
  include='.*'`);
- CPU share at 0.1, 0.5, 1 and 5 s scrape intervals: scrape cost / interval (the exporter does
  nothing between scrapes: no polling thread) plus the served process's idle cost, measured.

CPU time is user + system of this process, all its threads, and every process it starts
(getrusage of the children: `xenperf`; the library toolstack starts none); figures are medians
over `--repeats` rounds of `--scrapes` scrapes. Results go to bench/results/exporter.json.
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

from prometheus_client import generate_latest  # noqa: E402

from exporter.collector import Exporter, SourceCollector  # noqa: E402
from exporter.domains import DomainCollector  # noqa: E402
from exporter.perfc import DEFAULT_INCLUDE, PerfcCollector  # noqa: E402
from exporter.readers import LibxenctrlReader, PerfcReader, XenperfReader  # noqa: E402
from xensim import perfc  # noqa: E402
from xensim.counters import DEBIAN_12, Kind  # noqa: E402
from xensim.state import StateStore, new_host  # noqa: E402
from xentools.libxenctrl import LibXenCtrl  # noqa: E402
from xentools.toolstack import LibraryToolstack, XlToolstack  # noqa: E402
from xentools.xenstore import LibXenStore  # noqa: E402

STUB_DIR = Path(os.environ.get("XENSIM_STUB_DIR") or REPO / "build/stub")
XENPERF = Path(
    os.environ.get("XENSIM_XENPERF") or REPO / ".cache/xen/root/usr/lib/xen-4.17/bin/xenperf"
)
RESULTS = REPO / "bench" / "results" / "exporter.json"
# (physical CPUs, guests): Domain-0 on CPU 0, guest i alone on CPU i. The published shape,
# the same three guests on bigger hosts (the figures), and 256 CPUs full of guests.
SHAPES = ((4, 3), (16, 3), (64, 3), (256, 3), (256, 255))
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


def make_state(directory: Path, cpus: int, guests: int) -> None:
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
    # Domain-0 on CPU 0, guest i alone on CPU i (the published setup, scaled)
    host = new_host("bench", cpus, dom0_vcpus=1, dom0_pinned_cpus=[0])
    for cpu in range(1, guests + 1):
        host.add_domain(f"guest{cpu}", pinned_cpus=[cpu])
    StateStore(directory).initialize(host)


@contextlib.contextmanager
def simulated_hypervisor(cpus: int, guests: int) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=f"bench-exporter-{os.getpid()}-") as name:
        directory = Path(name)
        make_state(directory, cpus, guests)
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


def measure_shape(
    cpus: int, guests: int, repeats: int, scrapes: int
) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    with simulated_hypervisor(cpus, guests) as directory:
        library = LibXenCtrl.load([str(STUB_DIR / "libxenctrl.so.4.17")])
        store = LibXenStore.load([str(STUB_DIR / "libxenstore.so.4")])
        readers: dict[str, PerfcReader] = {
            "libxenctrl": LibxenctrlReader(library),
            "xenperf": XenperfReader(str(XENPERF)),
        }
        # no xl on this host: a scrape that needed one would fail, not hide its cost
        toolstack = LibraryToolstack(library, store, XlToolstack(str(directory / "no-xl")))
        with library.open() as interface:
            floors: dict[str, Callable[[], object]] = {
                "libxenctrl": lambda: interface.perfc_query(cpus - 1),
                "xenperf": lambda: subprocess.run(
                    [str(XENPERF), "-f"], capture_output=True, check=True, timeout=30
                ),
            }
            for name, reader in readers.items():
                slower = (4 if name == "xenperf" else 1) * max(1, cpus // 16) * max(1, guests // 16)
                per_round = max(3, scrapes // slower)
                floor = median_cost(floors[name], repeats, per_round)
                figures = {"floor_ms": floor * 1e3}
                for label, include in (("scrape", DEFAULT_INCLUDE), ("all_counters", ".*")):
                    collectors: list[SourceCollector] = [
                        PerfcCollector(reader, include),
                        DomainCollector(),
                    ]
                    exporter = Exporter(collectors, toolstack, 5.0, 30.0)
                    text = exporter.render()
                    if b'collector_success{collector="perfc"} 0' in text or (
                        b'collector_success{collector="domain"} 0' in text
                    ):
                        raise RuntimeError(f"a collector failed at {cpus} CPUs ({name})")
                    figures[f"{label}_ms"] = median_cost(exporter.render, repeats, per_round) * 1e3
                    figures[f"{label}_bytes"] = len(text)
                    if label == "scrape" and name == "libxenctrl":
                        # the same scrape written by prometheus_client (exporter/exposition.py
                        # exists only if this costs more)
                        figures["generate_latest_ms"] = (
                            median_cost(
                                lambda e=exporter: generate_latest(e.registry()),  # type: ignore[misc]
                                repeats,
                                per_round,
                            )
                            * 1e3
                        )
                results[name] = figures
    return results


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def process_tree_cpu(pid: int) -> float:
    """CPU seconds of `pid` and its live descendants."""
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
    """CPU share of a served, idle exporter (the server's own housekeeping), in percent."""
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

    shapes = {
        f"{cpus}/{guests}": measure_shape(cpus, guests, args.repeats, args.scrapes)
        for cpus, guests in SHAPES
    }
    idle = idle_share(args.idle_seconds)

    print(f"judicator-exporter CPU cost ({platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}), medians of "
          f"{args.repeats} rounds")  # fmt: skip
    print()
    print(
        "CPU cost per scrape (ms, incl. every process started), perfc + domain collectors, "
        "domains through libxenctrl/libxenstore; goal at 256 CPUs: <= 10 ms"
    )
    print(
        f"{'CPUs/guests':>11} {'reader':>11} {'floor':>8} {'scrape':>8} {'x floor':>8}"
        f" {'exposition':>11}"
        f" {'all counters':>13} {'x floor':>8} {'exposition':>11}"
    )
    for shape, readers in shapes.items():
        for reader, f in readers.items():
            print(
                f"{shape:>11} {reader:>11} {f['floor_ms']:>8.2f} {f['scrape_ms']:>8.2f}"
                f" {f['scrape_ms'] / f['floor_ms']:>7.1f}x {f['scrape_bytes'] / 1024:>9.0f}kB"
                f" {f['all_counters_ms']:>13.2f} {f['all_counters_ms'] / f['floor_ms']:>7.1f}x"
                f" {f['all_counters_bytes'] / 1024:>9.0f}kB"
            )
    print()
    print("The same scrape (libxenctrl) rendered by exporter/exposition.py and by generate_latest")
    print(f"{'CPUs/guests':>11} {'ours ms':>8} {'generate_latest ms':>19} {'ratio':>6}")
    for shape, readers in shapes.items():
        f = readers["libxenctrl"]
        print(
            f"{shape:>11} {f['scrape_ms']:>8.2f} {f['generate_latest_ms']:>19.2f}"
            f" {f['generate_latest_ms'] / f['scrape_ms']:>5.2f}x"
        )
    print()
    print(
        f"CPU share at {SHAPES[0][0]} CPUs / {SHAPES[0][1]} guests (%), shipped counter selection, "
        f"idle served process {idle:.3f}%"
    )
    print(f"{'interval':>9} {'published':>10} {'libxenctrl':>11} {'xenperf':>9}")
    share = {}
    for interval in INTERVALS:
        row = {
            reader: shapes["4/3"][reader]["scrape_ms"] / 1e3 / interval * 100 + idle
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
                "per_scrape_by_cpus_and_guests": shapes,
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
