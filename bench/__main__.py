"""`make bench`: every benchmark, one after the other, each table printed as it is ready.

    python -m bench [--only exporter,monitoring,policies,remediator,reaction]

Each benchmark also writes bench/results/<name>.json. A benchmark that fails is reported and
the others still run; the exit status is then 1. Needs root (simulated hosts: namespaces, tc).
"""

from __future__ import annotations

import argparse
import functools
import logging
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence

from bench import monitoring, policies, reaction, remediator
from bench.common import REPO_ROOT, machine

log = logging.getLogger(__name__)


def _exporter_script() -> list[str]:
    """bench/exporter.py, the exporter's own benchmark (perfc collector by host size)."""
    script = REPO_ROOT / "bench" / "exporter.py"
    if not script.exists():
        return ["(bench/exporter.py not present)"]
    subprocess.run([sys.executable, str(script)], check=True, cwd=REPO_ROOT, timeout=600)
    return []


BENCHMARKS: dict[str, Callable[[], list[str]]] = {
    "exporter": _exporter_script,
    "monitoring": monitoring.run,
    # Prometheus's own figures, the goal's measure; 1000 policies as alerting rules (the old
    # way, seconds a cycle) and promtool's CPU rounds take half an hour more:
    # `python -m bench.policies` alone runs them.
    "policies": functools.partial(policies.run, rules_max=100, cpu_rounds=0),
    "remediator": remediator.run,
    "reaction": reaction.run,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--only",
        type=lambda text: [name for name in text.split(",") if name],
        default=list(BENCHMARKS),
        help="comma-separated: " + ",".join(BENCHMARKS),
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.only) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    about = machine()
    print(
        f"# Judicator benchmarks on {about['nproc']} x {about['cpu_model']},"
        f" load {about['loadavg_at_start']}"
    )
    failed = []
    began = time.monotonic()
    for name in args.only:
        started = time.monotonic()
        print(f"\n## {name}", flush=True)
        try:
            for text in BENCHMARKS[name]():
                print(text, flush=True)
        except Exception:
            traceback.print_exc()
            failed.append(name)
        print(f"\n({name}: {time.monotonic() - started:.0f} s)", flush=True)
    print(
        f"\nall benchmarks: {time.monotonic() - began:.0f} s"
        + (f"; FAILED: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
