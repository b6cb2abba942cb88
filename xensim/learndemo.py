"""`make learn-demo`: judicator-policy on a synthetic history in a real Prometheus.

    python -m xensim.learndemo --days 7 --out learn-output            # the demo host's week
    python -m xensim.learndemo --profiles eval --out learn-output      # the eval corpus's guests

Writes `--days` of history plus one more day (xensim.history; the demo's idle guest floods
7 000 small datagrams/s for ten minutes in that last day) at one sample a minute, backfills it
with promtool, starts Prometheus 2.42 on it (127.0.0.1, a free port), learns per-domain
thresholds from the first `--days` (`judicator-policy learn`, the web servers as one group) and
replays the last day against them (`judicator-policy backtest`). In --out: history's
thresholds-domains.yml, learned.md, backtest.md, backtest.json. Needs prometheus and promtool.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from policylearn.cli import main as policy
from xensim.history import (
    DAY,
    Attack,
    History,
    backfill,
    demo_profiles,
    eval_profiles,
    write_openmetrics,
)
from xensim.services import REPO_ROOT, run_prometheus

CONFIG = "groups:\n  - {name: web, domains: ['web*']}\n"


def run(days: float, profiles: str, out: Path, step: float) -> int:
    out.mkdir(parents=True, exist_ok=True)
    end = (time.time() // 3600) * 3600 - 3600
    start = end - (days + 1) * DAY
    split = end - DAY
    attacks = [Attack("quiet1", end - 6 * 3600, 600, 7000)] if profiles == "demo" else []
    guests = demo_profiles() if profiles == "demo" else eval_profiles()
    history = History(guests, attacks=attacks)
    with tempfile.TemporaryDirectory(prefix="judicator-learn-") as tmp:
        t0 = time.monotonic()
        text = write_openmetrics(Path(tmp) / "history.om", history, start, end, step)
        backfill(text, Path(tmp) / "data")
        text.unlink()
        print(
            f"history: {len(guests)} guests, {days + 1:g} days at {step:g} s,"
            f" backfilled in {time.monotonic() - t0:.0f} s",
            flush=True,
        )
        (out / "learn.yml").write_text(CONFIG)
        with run_prometheus(
            "global: {evaluation_interval: 1m}\n",
            storage_path=Path(tmp) / "data",
            extra_args=["--storage.tsdb.retention.time=400d"],
        ) as prometheus:
            rules = str(REPO_ROOT / "prometheus" / "rules")
            common = ["--prometheus.url", prometheus.url, "--rules.dir", rules]
            t0 = time.monotonic()
            status = policy(
                ["--log.level", "warn", "learn", *common,
                 "--start", str(start), "--end", str(split),
                 "--step", f"{step:g}s", "--resolution", f"{step:g}s",
                 "--config.file", str(out / "learn.yml"),
                 "--output", str(out / "thresholds-domains.yml"),
                 "--report", str(out / "learned.md")]
            )  # fmt: skip
            print(f"learn: {time.monotonic() - t0:.1f} s -> {out / 'learned.md'}", flush=True)
            if status:
                return status
            t0 = time.monotonic()
            status = policy(
                ["--log.level", "warn", "backtest", *common,
                 "--start", str(split), "--end", str(end),
                 "--step", f"{step:g}s", "--candidate", str(out / "thresholds-domains.yml"),
                 "--report", str(out / "backtest.md"), "--json", str(out / "backtest.json")]
            )  # fmt: skip
            print(f"backtest: {time.monotonic() - t0:.1f} s -> {out / 'backtest.md'}", flush=True)
    result = json.loads((out / "backtest.json").read_text())
    for name in ("shipped", "candidate"):
        fired = sorted({(e["domain"], e["alert"]) for e in result[name]})
        print(f"{name}: {len(result[name])} alert(s): {fired}")
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xensim.learndemo", description=__doc__)
    parser.add_argument("--days", type=float, default=7.0, help="days to learn from")
    parser.add_argument("--profiles", choices=("demo", "eval"), default="demo")
    parser.add_argument("--step", type=float, default=60.0, help="seconds between samples")
    parser.add_argument("--out", default="learn-output")
    args = parser.parse_args(argv)
    return run(args.days, args.profiles, Path(args.out), args.step)


if __name__ == "__main__":
    sys.exit(main())
