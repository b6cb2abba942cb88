"""judicator-policy: learn per-domain thresholds from a Prometheus's history, and backtest them.

    judicator-policy learn --prometheus.url http://127.0.0.1:9090 --window 7d \\
        --config.file learn.yml --output thresholds-domains.yml --report learned.md
    judicator-policy learn ... --previous prometheus/rules/thresholds-domains.yml   # re-learn
    judicator-policy backtest --prometheus.url http://127.0.0.1:9090 --window 7d \\
        --candidate thresholds-domains.yml --report backtest.md

`learn` reads the recorded per-domain rates the policies use, over the window, and writes the
per-domain overrides (judicator:policy_threshold:domain records) with a comment per record
saying why, and a report (quantiles, margins, seasonality, bounds). `backtest` evaluates the
shipped alerts over the window twice, with the thresholds in --rules.dir and with the candidate
in place of its thresholds-domains.yml, and reports the alerts each would have fired.

Exit status: 0 done, 1 Prometheus or a file failed, 2 a usage or config error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

from policylearn import backtest, learn, report
from policylearn.config import ConfigError, LearnConfig, load_config
from policylearn.prom import PrometheusClient, PrometheusError
from policylearn.promql import PromQLError, RuleSet, parse_duration, referenced
from policylearn.signals import SIGNALS
from policylearn.stats import DAY
from policylearn.thresholdfile import (
    DOMAIN_RECORD,
    ThresholdFileError,
    parse_defaults,
    parse_overrides,
    render_overrides,
)

log = logging.getLogger("policylearn")

# The shipped prometheus.yml's evaluation_interval (a test holds them equal).
EVALUATION_INTERVAL = "1s"

DOMAINS_FILE = "thresholds-domains.yml"
LOG_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}
DEFAULTS_FILE = "thresholds.yml"


class UsageError(Exception):
    pass


def parse_time(text: str) -> float:
    """ "now", unix seconds, or RFC 3339 (2026-12-01T00:00:00Z)."""
    if text == "now":
        return time.time()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"not a time: {text!r} (now, unix seconds or RFC 3339)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


def window(args: argparse.Namespace) -> tuple[float, float]:
    end = parse_time(args.end)
    start = parse_time(args.start) if args.start else end - parse_duration(args.window)
    if end <= start:
        raise UsageError("the window ends before it starts")
    return start, end


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prometheus.url", dest="url", required=True, help="Prometheus to read")
    parser.add_argument(
        "--rules.dir",
        dest="rules_dir",
        default="prometheus/rules",
        help="the shipped rules (thresholds.yml, policies.yml): %(default)s",
    )
    parser.add_argument("--window", default="7d", help="history to read, up to --end: %(default)s")
    parser.add_argument("--start", help="start instead of --window (now, unix time, RFC 3339)")
    parser.add_argument("--end", default="now", help="end of the history: %(default)s")
    parser.add_argument(
        "--query.timeout", dest="timeout", type=float, default=120.0, help="seconds per query"
    )
    parser.add_argument(
        "--query.points",
        dest="points",
        type=int,
        default=10_000,
        help="steps per range query (chunk size; at most 11000): %(default)s",
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="judicator-policy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # Prometheus's spelling of the flag and its values, as the other console scripts.
    parser.add_argument("--log.level", dest="log_level", choices=list(LOG_LEVELS), default="info")
    sub = parser.add_subparsers(dest="command", required=True)
    lp = sub.add_parser("learn", help="learn per-domain thresholds from history")
    add_common(lp)
    lp.add_argument("--config.file", dest="config_file", help="groups and bounds (YAML)")
    lp.add_argument("--previous", help="the last learned file: bounds the drift per period")
    lp.add_argument("--output", required=True, help=f"the overrides file to write ({DOMAINS_FILE})")
    lp.add_argument("--report", help="the human report (Markdown); default: stdout")
    lp.add_argument("--step", default="60s", help="one peak per step: %(default)s")
    lp.add_argument(
        "--resolution",
        default=EVALUATION_INTERVAL,
        help="evaluation interval, for signals that are expressions: %(default)s",
    )
    bp = sub.add_parser("backtest", help="replay history against candidate thresholds")
    add_common(bp)
    bp.add_argument("--candidate", required=True, help=f"a {DOMAINS_FILE} to try")
    bp.add_argument(
        "--step", default=EVALUATION_INTERVAL, help="the rules' evaluation interval: %(default)s"
    )
    bp.add_argument("--alert", action="append", default=[], help="only this alert (repeatable)")
    bp.add_argument("--report", help="the human report (Markdown); default: stdout")
    bp.add_argument("--json", help="every episode as JSON")
    return parser.parse_args(argv)


def read_config(path: str | None) -> LearnConfig:
    if path is None:
        return load_config(None)
    try:
        return load_config(yaml.safe_load(Path(path).read_text()))
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: {error}") from None


def read_rules(rules_dir: Path, *, without: str | None = None) -> RuleSet:
    rules = RuleSet()
    files = sorted(rules_dir.glob("*.yml"))
    if not files:
        raise UsageError(f"no rule files in {rules_dir}")
    for path in files:
        if path.name.endswith("_test.yml") or path.name == without:
            continue
        rules.add_file(yaml.safe_load(path.read_text()))
    return rules


def write(path: str | None, text: str) -> None:
    if path is None:
        sys.stdout.write(text)
    else:
        Path(path).write_text(text)


def cmd_learn(args: argparse.Namespace) -> int:
    config = read_config(args.config_file)
    start, end = window(args)
    step = parse_duration(args.step)
    resolution = parse_duration(args.resolution)
    rules_dir = Path(args.rules_dir)
    defaults = parse_defaults((rules_dir / DEFAULTS_FILE).read_text(), str(rules_dir))
    previous = None
    if args.previous:
        previous = parse_overrides(Path(args.previous).read_text(), args.previous)
    client = PrometheusClient(args.url, timeout=args.timeout)
    # The signals read recorded rates; those the history lacks (older than their rule), and
    # those that depend on a hand-set threshold, are computed from the shipped rules.
    rules = read_rules(rules_dir)
    rewriter = backtest.rewriter_for(
        client, rules, rules.tables(), resolution, [s.expr for s in SIGNALS], start, end
    )
    histories = learn.read_histories(
        client, start, end, step=step, resolution=resolution, rewrite=rewriter.rewrite
    )
    result = learn.learn(
        histories, defaults, config, start=start, end=end, step=step, previous=previous
    )
    header = [
        "Per-domain policy thresholds, generated by `judicator-policy learn`: do not edit by hand.",
        f"History {report.when(start)} to {report.when(end)} UTC ({(end - start) / DAY:.1f} days),"
        f" one peak per {step:g} s;"
        + (
            f" re-learned from {Path(args.previous).name}." if args.previous else " first learning."
        ),
        f"Each `{DOMAIN_RECORD}` record replaces the shipped default of its policy/signal for its",
        "domain. How to review this file: docs/policies.md#reviewing-a-learned-file.",
    ]
    overrides = result.overrides()
    write(args.output, render_overrides(overrides, header))
    write(args.report, report.learn_report(result))
    log.info(
        "wrote %d thresholds for %d domains to %s",
        len(overrides),
        len({o.domain for o in overrides}),
        args.output,
    )
    return 0


def cmd_backtest(args: argparse.Namespace) -> int:
    start, end = window(args)
    step = parse_duration(args.step)
    rules_dir = Path(args.rules_dir)
    candidate_text = Path(args.candidate).read_text()
    parse_overrides(candidate_text, args.candidate)  # validates it
    shipped = read_rules(rules_dir)
    tried = read_rules(rules_dir, without=DOMAINS_FILE)
    tried.add_file(yaml.safe_load(candidate_text))
    if DOMAIN_RECORD not in _references(shipped):
        log.warning(
            "no rule in %s reads %s: the candidate cannot change what fires",
            rules_dir,
            DOMAIN_RECORD,
        )
    client = PrometheusClient(args.url, timeout=args.timeout)
    runs = {}
    for name, rules in (("shipped", shipped), ("candidate", tried)):
        runs[name] = backtest.run_backtest(
            client, rules, rules.tables(), start, end, step, alerts=args.alert
        )
    write(args.report, report.backtest_report(runs, start, end, step))
    if args.json:
        data: dict[str, object] = {k: report.episodes_json(v) for k, v in runs.items()}
        data["window"] = {"start": start, "end": end, "step": step}
        Path(args.json).write_text(json.dumps(data, indent=1) + "\n")
    return 0


def _references(rules: RuleSet) -> set[str]:
    names: set[str] = set()
    for expr in [r.expr for r in rules.recording] + [r.expr for r in rules.alerts]:
        names |= referenced(expr)
    return names


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    logging.basicConfig(
        level=LOG_LEVELS[args.log_level], format="judicator-policy: %(levelname)s: %(message)s"
    )
    try:
        if args.command == "learn":
            return cmd_learn(args)
        return cmd_backtest(args)
    except (PrometheusError, ThresholdFileError, OSError) as error:
        print(f"judicator-policy: {error}", file=sys.stderr)
        return 1
    except (UsageError, ConfigError, PromQLError, ValueError) as error:
        print(f"judicator-policy: {error}", file=sys.stderr)
        return 2
