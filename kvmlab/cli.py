"""judicator-kvmlab: build, boot and drive the KVM lab (docs/kvm-lab.md).

    python -m kvmlab deps              # host packages, Debian's kernel (the Xen lab's), images
    python -m kvmlab images            # the L1 and L2 initramfs images
    python -m kvmlab up [--guests N]   # boot L1 + N KVM guests, return when ready
    python -m kvmlab down              # stop whatever `up` left running (always safe)
    python -m kvmlab run ARGV...       # run a command in the running L1
    python -m kvmlab test-flood        # the end-to-end checks of tests/kvmlab, as JSON

The only module of kvmlab that reads the environment or sets up logging.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from kvmlab.paths import DEFAULT_CACHE, KvmLabPaths
from xenlab.paths import DEFAULT_CACHE as XENLAB_CACHE
from xenlab.paths import LabPaths

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="judicator-kvmlab", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cache", type=Path, default=Path(os.environ.get("KVMLAB_CACHE") or DEFAULT_CACHE)
    )
    parser.add_argument(
        "--lab-cache",
        type=Path,
        default=Path(os.environ.get("XENLAB_CACHE") or XENLAB_CACHE),
        help="the Xen lab's cache, whose Debian kernel and modules the KVM lab boots",
    )
    parser.add_argument("--log.level", dest="log_level", default="info")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("deps", help="host packages, Debian's kernel, and the images")
    sub.add_parser("images", help="build the L1 and L2 initramfs images")
    up = sub.add_parser("up", help="boot L1 + KVM guests and leave them running")
    up.add_argument("--guests", type=int, default=2)
    sub.add_parser("down", help="stop the running KVM lab (always safe to call)")
    run = sub.add_parser("run", help="run a command in the running L1")
    run.add_argument("argv", nargs="+")
    demo = sub.add_parser("demo", help="the published experiment on real KVM guests")
    demo.add_argument("--out", type=Path, default=Path("kvmlab-output"))
    flood = sub.add_parser("test-flood", help="boot, flood, measure, shape; JSON on stdout")
    flood.add_argument("--attempts", type=int, default=2)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    paths = KvmLabPaths(args.cache.resolve(), LabPaths(args.lab_cache.resolve()))
    if args.command == "deps":
        from kvmlab.deps import deps

        deps(paths)
        return 0
    if args.command in ("images", "up", "test-flood", "demo"):
        from kvmlab.images import build

        build(paths)  # seconds when the images are newer than the sources
    if args.command == "up":
        from kvmlab.vm import standard_guests, start

        lab = start(paths, guests=standard_guests(args.guests))
        print(json.dumps({"pid": lab.state.pid, **lab.timings, "agent_port": lab.agent_port}))
        return 0
    if args.command == "down":
        from kvmlab.vm import stop

        stop(paths)
        return 0
    if args.command == "run":
        from kvmlab.vm import attach

        result = attach(paths).run(*args.argv, timeout=300)
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
        return result.rc
    if args.command == "demo":
        from kvmlab.demo import run_demo

        results = run_demo(paths, args.out)
        print((args.out / "report.md").read_text())
        return 1 if "error" in results else 0
    if args.command == "test-flood":
        from kvmlab.flood import run_checks

        print(json.dumps(run_checks(paths, attempts=args.attempts), indent=1))
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
