"""judicator-lab: fetch, build, boot and drive the Xen lab (docs/lab.md).

    python -m xenlab deps            # Debian packages + the perf-counter hypervisor, cached
    python -m xenlab up [--guests N] # boot Xen + Dom0 + N guests, return when ready
    python -m xenlab down            # stop whatever lab-up left running
    python -m xenlab demo            # the published experiment on the real hypervisor
    python -m xenlab udp-sweep       # a packet's cost to its sender and its receiver

The only module that reads the environment or sets up logging.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from xenlab.paths import DEFAULT_CACHE, LabPaths

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="judicator-lab", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cache", type=Path, default=Path(os.environ.get("XENLAB_CACHE") or DEFAULT_CACHE)
    )
    parser.add_argument("--log.level", dest="log_level", default="info")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("deps", help="fetch Debian packages and build the perf-counter hypervisor")
    sub.add_parser("images", help="build the Dom0 and guest initramfs images")
    up = sub.add_parser("up", help="boot Xen + Dom0 + guests and leave them running")
    up.add_argument("--guests", type=int, default=3)
    up.add_argument("--hypervisor", choices=["perfc", "stock"], default="perfc")
    sub.add_parser("down", help="stop the running lab (always safe to call)")
    fixtures = sub.add_parser("fixtures", help="capture the real fixtures from the lab")
    fixtures.add_argument("--out", type=Path, default=Path("tests/fixtures"))
    fixtures.add_argument("--hypervisor", choices=["perfc", "stock", "both"], default="both")
    demo = sub.add_parser("demo", help="the published experiment on the real hypervisor")
    demo.add_argument("--out", type=Path, default=Path("lab-output"))
    demo.add_argument("--fixtures", type=Path, help="also capture the real fixtures here")
    sweep = sub.add_parser("udp-sweep", help="per-datagram costs of UDP floods at several rates")
    sweep.add_argument("--out", type=Path, default=Path("lab-output"))
    run = sub.add_parser("run", help="run a command in the running lab's Dom0")
    run.add_argument("argv", nargs="+")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    paths = LabPaths(args.cache.resolve())
    if args.command in ("up", "fixtures", "demo", "udp-sweep"):
        from xenlab.images import build

        build(paths)  # seconds when the images are newer than the sources
    if args.command == "deps":
        from xenlab.fetch import deps

        deps(paths)
        return 0
    if args.command == "images":
        from xenlab.images import build

        build(paths)
        return 0
    if args.command == "up":
        from xenlab.vm import standard_guests, start

        lab = start(paths, guests=standard_guests(args.guests), hypervisor=args.hypervisor)
        print(lab.xl("list").stdout)
        return 0
    if args.command == "down":
        from xenlab.vm import stop

        stop(paths)
        return 0
    if args.command == "fixtures":
        from xenlab.capture import capture_perfc, capture_stock
        from xenlab.vm import booted, standard_guests

        if args.hypervisor in ("perfc", "both"):
            with booted(paths, guests=standard_guests(3), hypervisor="perfc") as lab:
                capture_perfc(lab, args.out)
        if args.hypervisor in ("stock", "both"):
            with booted(paths, guests=standard_guests(1), hypervisor="stock") as lab:
                capture_stock(lab, args.out)
        return 0
    if args.command == "demo":
        from xenlab.demo import run_demo

        run_demo(paths, args.out, args.fixtures)
        print((args.out / "report.md").read_text())
        return 0
    if args.command == "udp-sweep":
        from xenlab.udpsweep import run_sweep

        print(run_sweep(paths, args.out))
        return 0
    if args.command == "run":
        from xenlab.vm import attach

        result = attach(paths).run(*args.argv, timeout=300)
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
        return result.rc
    return 2


if __name__ == "__main__":
    sys.exit(main())
