"""Monitoring cost: what the exporter costs the host per scrape, and at each scrape interval.

    python -m bench.monitoring [--scrapes 30] [--repeats 3]

On a simulated host of the paper's shape (4 physical CPUs, Domain-0 on CPU 0, guest1..3 pinned
one per CPU, its network in a Dom0 namespace):

1. Per scrape, in a worker process inside Dom0's namespace built exactly as
   `judicator-exporter` builds its exporter (defaults: the shipped counter selection, domains
   and vCPUs through libxenctrl and libxenstore where they load, else `xl`): the CPU of the
   exporter itself (`process_time`) and of every command it runs (`RUSAGE_CHILDREN`), broken
   into fetching the counters, parsing them, asking the toolstack, attributing CPUs to domains
   and building families (collect), and rendering the text; for both counter readers
   (libxenctrl through ctypes, and `xenperf -f`). The floor is fetching the counters alone.
   Medians of `repeats` batches of `scrapes` scrapes each.
2. The real exporter process (hypercorn) idle and scraped every second over HTTP, its threads'
   CPU read from /proc/<pid>/task/*/schedstat, and its children's: the per-scrape figures must
   add up to this.
3. A cProfile of the scrape path (own CPU), the top functions by own time.

CPU share at an interval T = CPU per scrape (the exporter and every process it starts) / T +
the idle process's CPU per second, as a percentage of one CPU (the paper's Table 1 unit: the
whole Judicator on the host). Any `xl` child is counted too, and also shown apart: the
simulator's `xl` is Python (tens of milliseconds per call) where Xen's is C, so where one runs
the figure is an upper bound; `xenperf` is Debian's real binary.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import logging
import os
import pstats
import resource
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from bench.common import (
    REPO_ROOT,
    fmt,
    median,
    process_cpu_seconds,
    table,
    threads_cpu_seconds,
    write_results,
)

log = logging.getLogger(__name__)

INTERVALS = (0.1, 0.5, 1.0, 5.0)
PUBLISHED_PERCENT = {0.1: 0.43, 0.5: 0.09, 1.0: 0.06, 5.0: 0.03}
READERS = ("libxenctrl", "xenperf")
PHASES = ("fetch", "parse", "toolstack", "collect", "render")


# --- the worker: per-scrape costs inside Dom0 ------------------------------------------------


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class PhaseClock:
    """Own and children CPU per phase; phases nest (a parent's time excludes its children's).

    The scrape's thread is followed as a stack of phases. A wrapped function running in another
    thread (the exporter's toolstack threads run `xl` concurrently) is charged its own thread's
    CPU; the CPU of the `xl` processes is counted apart, by `measured_run`.
    """

    def __init__(self) -> None:
        self.own: dict[str, float] = defaultdict(float)
        self.children: dict[str, float] = defaultdict(float)
        self._stack: list[str] = []
        self._thread = threading.get_ident()
        self._lock = threading.Lock()
        self._mark_own = time.thread_time()
        self._mark_children = _children_cpu()

    def _charge(self) -> None:
        own, children = time.thread_time(), _children_cpu()
        if self._stack:
            self.own[self._stack[-1]] += own - self._mark_own
            self.children[self._stack[-1]] += children - self._mark_children
        self._mark_own, self._mark_children = own, children

    def wrap(self, phase: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() != self._thread:
                started = time.thread_time()
                try:
                    return function(*args, **kwargs)
                finally:
                    with self._lock:
                        self.own[phase] += time.thread_time() - started
            self._charge()
            self._stack.append(phase)
            try:
                return function(*args, **kwargs)
            finally:
                self._charge()
                self._stack.pop()

        return timed

    def enter(self, phase: str) -> None:
        self._charge()
        self._stack.append(phase)

    def leave(self) -> None:
        self._charge()
        self._stack.pop()

    def add_child(self, phase: str, seconds: float) -> None:
        with self._lock:
            self.children[f"process:{phase}"] += seconds

    def take(self) -> dict[str, dict[str, float]]:
        with self._lock:
            taken = {"own": dict(self.own), "children": dict(self.children)}
            self.own.clear()
            self.children.clear()
        return taken


def measured_run(clock: PhaseClock, phase: str) -> Callable[..., Any]:
    """`run_command` that also charges the command's own CPU (from wait4) to `phase`."""

    def run(argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert process.stdout is not None and process.stderr is not None
        stdout = process.stdout.read()  # xl writes little to stderr: no deadlock
        stderr = process.stderr.read()
        process.stdout.close()
        process.stderr.close()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        clock.add_child(phase, usage.ru_utime + usage.ru_stime)
        return subprocess.CompletedProcess(list(argv), process.returncode, stdout, stderr)

    return run


def _instrument(clock: PhaseClock, reader_kind: str) -> None:
    """Charge the scrape path's functions to phases, in the modules that call them."""
    from exporter import readers
    from xentools import libxenctrl, toolstack

    # Patched where they are looked up, so the exporter's own code runs unchanged.
    if reader_kind == "xenperf":
        patches: list[tuple[object, str, str]] = [
            (readers, "run_command", "fetch"),
            (readers, "parse_xenperf", "parse"),
        ]
    else:
        patches = [
            (libxenctrl.Interface, "perfc_query", "fetch"),
            (libxenctrl, "snapshot_from_descriptors", "parse"),
        ]
    for owner, attribute, phase in patches:
        setattr(owner, attribute, clock.wrap(phase, getattr(owner, attribute)))
    for implementation in (toolstack.XlToolstack, toolstack.LibraryToolstack):
        for method in ("info", "vcpu_list", "pool_cpus", "domains"):
            original = getattr(implementation, method)
            setattr(implementation, method, clock.wrap("toolstack", original))
    setattr(toolstack, "run_command", measured_run(clock, "xl"))  # noqa: B010


def _build_exporter(args: argparse.Namespace) -> Any:
    """The exporter `judicator-exporter` would build from these flags (exporter/cli.py)."""
    from exporter.collector import Exporter, SourceCollector
    from exporter.domains import BlockCollector, DomainCollector, NetworkCollector
    from exporter.perfc import PerfcCollector
    from exporter.readers import open_reader
    from xentools.toolstack import open_toolstack

    collectors: list[SourceCollector] = [
        PerfcCollector(open_reader(args.reader, args.xenperf)),
        DomainCollector(),
        NetworkCollector(args.sysfs),
        BlockCollector(args.sysfs),
    ]
    toolstack = open_toolstack("auto", args.xl)
    log.warning("toolstack: %s", type(toolstack).__name__)
    return Exporter(collectors, toolstack, 3.0, 9.0)


def worker(args: argparse.Namespace) -> dict[str, Any]:
    clock = PhaseClock()
    _instrument(clock, args.reader)
    exporter = _build_exporter(args)

    def scrape() -> tuple[dict[str, dict[str, float]], float, float, int]:
        clock.take()
        own0, children0 = time.process_time(), _children_cpu()
        clock.enter("collect")
        families = list(exporter.registry().collect())
        clock.leave()
        clock.enter("render")
        # the renderer the served exporter uses (exporter.render = collect + this)
        text = exporter._renderer.render(families)
        clock.leave()
        # the toolstack threads have finished with this scrape once its answers are in
        own = time.process_time() - own0
        children = _children_cpu() - children0
        return clock.take(), own, children, len(text)

    for _ in range(3):  # warm: first-scrape state, imports, caches
        scrape()
        time.sleep(0.05)
    batches = []
    for _ in range(args.repeats):
        phases: dict[str, list[float]] = defaultdict(list)
        owns, childs = [], []
        size = 0
        for _ in range(args.scrapes):
            taken, own, children, size = scrape()
            owns.append(own)
            childs.append(children)
            for phase in PHASES:
                phases[f"own:{phase}"].append(taken["own"].get(phase, 0.0))
                phases[f"children:{phase}"].append(taken["children"].get(phase, 0.0))
            phases["xl_processes"].append(taken["children"].get("process:xl", 0.0))
            time.sleep(args.pause)
        batches.append(
            {
                "own_seconds": median(owns),
                "children_seconds": median(childs),
                "phases": {key: median(values) for key, values in phases.items()},
                "bytes": size,
            }
        )
    profile = cProfile.Profile(time.process_time)
    profile.enable()
    for _ in range(args.scrapes):
        exporter.render()
    profile.disable()
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats("tottime").print_stats(15)
    return {
        "reader": args.reader,
        "toolstack": type(exporter.toolstack).__name__,
        "batches": batches,
        # paths relative to the checkout: results must not name the machine they ran on
        "profile": out.getvalue().replace(str(REPO_ROOT) + os.sep, ""),
    }


# --- the parent: host, workers, the real process ---------------------------------------------


def _run_worker(host: Any, reader: str, scrapes: int, repeats: int) -> dict[str, Any]:
    argv = [
        sys.executable,
        "-m",
        "bench.monitoring",
        "--worker",
        f"--reader={reader}",
        f"--scrapes={scrapes}",
        f"--repeats={repeats}",
        f"--xl={host.env['XENSIM_XL']}",
        f"--xenperf={host.env['XENSIM_XENPERF_BIN']}",
        f"--sysfs={host.env['XENSIM_SYSFS']}",
    ]
    env = {**os.environ, **host.env, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        host.in_dom0(argv),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=env,
        cwd=REPO_ROOT,
    )
    if result.returncode != 0:
        raise RuntimeError(f"monitoring worker ({reader}) failed: {result.stderr[-2000:]}")
    figures: dict[str, Any] = json.loads(result.stdout)
    return figures


def _exporter_pids(leader: int) -> list[int]:
    """The exporter's process (hypercorn serves it in one) and any children it has now."""
    children = (
        open(f"/proc/{leader}/task/{leader}/children").read().split()  # noqa: SIM115
    )
    return [leader, *(int(pid) for pid in children)]


def _process_cpu(pids: Sequence[int]) -> tuple[float, float]:
    """(own CPU of every thread, children reaped) of the exporter's processes."""
    own = sum(threads_cpu_seconds(pid) for pid in pids)
    children = sum(process_cpu_seconds(pid)[1] for pid in pids)
    return own, children


def real_process(host: Any, idle_seconds: float, scraped_seconds: float) -> dict[str, Any]:
    """The real exporter (served by hypercorn) idle, then scraped every second over HTTP."""
    from xensim.stack import run_exporter

    with run_exporter(host.env, netns=host.dom0_netns) as exporter:
        exporter.metrics()
        pids = _exporter_pids(exporter.process.pid)
        for _ in range(3):
            exporter.metrics()
        time.sleep(1)
        own0, children0 = _process_cpu(pids)
        time.sleep(idle_seconds)
        own1, children1 = _process_cpu(pids)
        scrapes = 0
        started = time.monotonic()
        while time.monotonic() - started < scraped_seconds:
            exporter.metrics()
            scrapes += 1
            time.sleep(max(0.0, started + scrapes - time.monotonic()))
        elapsed = time.monotonic() - started
        own2, children2 = _process_cpu(pids)
    return {
        "idle_own_cpu_per_second": (own1 - own0) / idle_seconds,
        "idle_children_cpu_per_second": (children1 - children0) / idle_seconds,
        "scraped_interval_seconds": 1.0,
        "scrapes": scrapes,
        "scraped_own_cpu_per_second": (own2 - own1) / elapsed,
        "scraped_children_cpu_per_second": (children2 - children1) / elapsed,
    }


def run(
    scrapes: int = 30, repeats: int = 3, idle: float = 10.0, scraped: float = 15.0
) -> list[str]:
    from xensim.stack import simulated_host

    name = f"bmon{os.getpid() % 100_000}"
    with simulated_host(name, dom0_netns=True, cpus=4, guests=3, seed=7) as host:
        workers = {reader: _run_worker(host, reader, scrapes, repeats) for reader in READERS}
        process = real_process(host, idle, scraped)
    figures = summarize(workers, process)
    tables = report(figures)
    write_results(
        "monitoring",
        {
            "scrapes_per_batch": scrapes,
            "batches": repeats,
            "idle_seconds": idle,
            "scraped_seconds": scraped,
            "host": "4 CPUs, Domain-0 + guest1..3 pinned",
        },
        figures,
        tables,
    )
    return tables


def summarize(workers: dict[str, dict[str, Any]], process: dict[str, Any]) -> dict[str, Any]:
    readers = {}
    for reader, data in workers.items():
        batches = data["batches"]
        phases = {key: median(b["phases"][key] for b in batches) for key in batches[0]["phases"]}
        own = median(b["own_seconds"] for b in batches) or 0.0
        children = median(b["children_seconds"] for b in batches) or 0.0
        xl_children = phases["xl_processes"] or 0.0
        # xl processes are reaped in other threads, possibly during the fetch: what the
        # fetch's children cost beyond them is xenperf's
        fetch_children = max(0.0, children - xl_children) if reader == "xenperf" else 0.0
        fetch = (phases["own:fetch"] or 0.0) + fetch_children
        parse = phases["own:parse"] or 0.0
        exporter_cost = own + children  # every process it starts, xl included
        readers[reader] = {
            "own_cpu_per_scrape": own,
            "children_cpu_per_scrape": children,
            "xl_children_cpu_per_scrape": xl_children,
            "toolstack_own_cpu_per_scrape": phases["own:toolstack"],
            "toolstack": data["toolstack"],
            "fetch_cpu_per_scrape": fetch,
            "parse_cpu_per_scrape": parse,
            "collect_cpu_per_scrape": phases["own:collect"],
            "render_cpu_per_scrape": phases["own:render"],
            "exporter_cpu_per_scrape": exporter_cost,
            "floor_cpu_per_scrape": fetch,
            "times_floor": exporter_cost / fetch if fetch else None,
            "exposition_bytes": batches[-1]["bytes"],
            "batch_medians": [b["own_seconds"] for b in batches],
            "profile": data["profile"],
        }
    idle = process["idle_own_cpu_per_second"]
    shares = {}
    for reader, figures in readers.items():
        shares[reader] = {
            str(interval): (figures["exporter_cpu_per_scrape"] / interval + idle) * 100
            for interval in INTERVALS
        }
    # The real process at 1 s: own CPU per second above idle is one scrape's own CPU.
    process["scraped_own_minus_idle"] = process["scraped_own_cpu_per_second"] - idle
    return {"readers": readers, "share_percent": shares, "process": process}


def report(figures: dict[str, Any]) -> list[str]:
    readers, shares, process = figures["readers"], figures["share_percent"], figures["process"]
    share_rows = []
    for interval in INTERVALS:
        share_rows.append(
            [
                f"{interval:g} s",
                f"{PUBLISHED_PERCENT[interval]:.2f}",
                *(fmt(shares[r][str(interval)], 3) for r in READERS),
                *(fmt(shares[r][str(interval)] / PUBLISHED_PERCENT[interval], 3) for r in READERS),
            ]
        )
    ms = 1000.0
    cost_rows = []
    for label, key in (
        ("fetch the counters (floor)", "fetch_cpu_per_scrape"),
        ("parse them", "parse_cpu_per_scrape"),
        ("toolstack: domains, vCPUs (own)", "toolstack_own_cpu_per_scrape"),
        ("attribute + families (collect, rest)", "collect_cpu_per_scrape"),
        ("render the text", "render_cpu_per_scrape"),
        ("exporter total (own + every process)", "exporter_cpu_per_scrape"),
        ("of which xl processes", "xl_children_cpu_per_scrape"),
    ):
        cost_rows.append([label, *(fmt((readers[r][key] or 0.0) * ms, 3) for r in READERS)])
    cost_rows.append(
        ["exporter / floor", *(fmt(readers[r]["times_floor"], 3) + "x" for r in READERS)]
    )
    cost_rows.append(["toolstack read through", *(readers[r]["toolstack"] for r in READERS)])
    process_rows = [
        ["idle (no scrapes)", fmt(process["idle_own_cpu_per_second"] * 100, 3)],
        ["scraped every 1 s, own", fmt(process["scraped_own_cpu_per_second"] * 100, 3)],
        [
            "scraped every 1 s, own minus idle (ms per scrape / 10)",
            fmt(process["scraped_own_minus_idle"] * 100, 3),
        ],
        [
            "scraped every 1 s, children (every process it started)",
            fmt(process["scraped_children_cpu_per_second"] * 100, 3),
        ],
    ]
    return [
        table(
            "Exporter CPU share incl. every process it starts, % of one CPU, paper's shape "
            "(4 CPUs, 3 guests)",
            [
                "scrape interval",
                "published %",
                *(f"{r} %" for r in READERS),
                *(f"{r} / published" for r in READERS),
            ],
            share_rows,
        ),
        table(
            "CPU per scrape, ms (median of batches); floor = fetching the counters alone",
            ["phase", *(f"{r} reader" for r in READERS)],
            cost_rows,
        ),
        table(
            "The real exporter process (hypercorn, libxenctrl reader), % of one CPU",
            ["state", "% of one CPU"],
            process_rows,
        ),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.monitoring", description=__doc__)
    parser.add_argument("--scrapes", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--idle", type=float, default=10.0)
    parser.add_argument("--scraped", type=float, default=15.0)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--reader", choices=READERS, help=argparse.SUPPRESS)
    parser.add_argument("--pause", type=float, default=0.05, help=argparse.SUPPRESS)
    parser.add_argument("--xl", help=argparse.SUPPRESS)
    parser.add_argument("--xenperf", help=argparse.SUPPRESS)
    parser.add_argument("--sysfs", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        logging.basicConfig(level=logging.WARNING)
        print(json.dumps(worker(args)))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for text in run(args.scrapes, args.repeats, args.idle, args.scraped):
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
