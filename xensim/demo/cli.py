"""The command line of `make demo`: flags, logging, root check, run, report, exit status.

    python -m xensim.demo [--scenario ping-flood|udp-flood|cpu-hog|memory|disk] [--output DIR]

The exit status is 0 only if the victim was protected (docs/demo.md).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from xensim.cli import LOG_LEVELS
from xensim.demo.experiment import run_experiment
from xensim.demo.report import table, write_report
from xensim.demo.scenarios import SCENARIOS, Settings
from xensim.services import REPO_ROOT
from xensim.simhost import host_leftovers


@contextlib.contextmanager
def _interrupt_on_sigterm() -> Iterator[None]:
    """SIGTERM (and SIGHUP) unwind like Ctrl-C, so every `finally` takes its part down."""

    def interrupt(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m xensim.demo",
        description="Judicator's published experiment, end to end, on a simulated Xen host.",
    )
    parser.add_argument(
        "--scenario", choices=sorted(SCENARIOS), default="ping-flood", help="the abuse class"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=REPO_ROOT / "demo-output",
        help="where the report and logs go (default %(default)s)",
    )
    parser.add_argument(
        "--baseline", type=float, default=25.0, help="seconds of quiet baseline (default 25)"
    )
    parser.add_argument(
        "--throttled",
        type=float,
        default=20.0,
        help="seconds the abuse goes on once throttled (default 20)",
    )
    parser.add_argument("--hold", type=float, default=5.0, help="remediator hold (default 5 s)")
    parser.add_argument(
        "--dom0-netns",
        action="store_true",
        help="run Dom0 (and the whole stack) in a namespace of its own",
    )
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")
    parser.add_argument("--log.level", dest="log_level", choices=list(LOG_LEVELS), default="warn")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=LOG_LEVELS[args.log_level], format="demo: %(levelname)s: %(message)s")
    if os.geteuid() != 0:
        print(
            "the demo must run as root (namespaces, tc, cgroups): sudo make demo", file=sys.stderr
        )
        return 2
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    output = args.output / f"{args.scenario}-{stamp}"
    settings = Settings(
        scenario=SCENARIOS[args.scenario],
        dom0_netns=args.dom0_netns,
        baseline_seconds=args.baseline,
        throttled_seconds=args.throttled,
        hold_seconds=args.hold,
        output_dir=output,
        plot=not args.no_plot,
        say=lambda line: print(line, flush=True),
    )
    try:
        with _interrupt_on_sigterm():
            result = run_experiment(settings)
    except KeyboardInterrupt:
        print("\ninterrupted: everything the demo started has been stopped", file=sys.stderr)
        left = host_leftovers(settings.host_name)
        if left:
            print(f"still present: {', '.join(left)}", file=sys.stderr)
        return 130
    write_report(result)
    print("\n" + table(result))
    print(f"\nReport: {output / 'report.md'}")
    if result.report_png is not None:
        print(f"Plot:   {result.report_png}")
    print(f"Logs:   {output / 'logs'}")
    return 0 if result.protected else 1
