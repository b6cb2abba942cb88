"""`python -m xeneval` (`make eval`): run the scenario corpus and the evasion search, report.

    python -m xeneval                       # every scenario, then the evasion report
    python -m xeneval 'ping-*' udp-flood    # a subset by name (globs) or scenario file paths
    python -m xeneval --fast                # the scenarios tagged fast
    python -m xeneval --list                # what there is
    python -m xeneval --evasion-only        # promtool only: no root, a few minutes
    python -m xeneval --thresholds-domains learned.yml   # with learned per-domain thresholds

Results go to --output (eval-output/): eval.json, eval.png, logs/<scenario>/. Exit status 0
when every scenario ran (whatever the policies did: misses are results), 1 when one could not
run, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xeneval import evasion, report, runner, scoring
from xeneval.scenario import Scenario, ScenarioError, discover, select
from xensim.stack import SHIPPED_RULES_DIR

log = logging.getLogger(__name__)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m xeneval", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("scenarios", nargs="*", help="scenario names (globs) or YAML files")
    parser.add_argument("--fast", action="store_true", help="only the scenarios tagged fast")
    parser.add_argument("--output", default="eval-output", help="report folder (%(default)s)")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--no-evasion", action="store_true", help="skip the evasion search")
    parser.add_argument("--evasion-only", action="store_true", help="only the evasion search")
    parser.add_argument(
        "--thresholds-domains",
        type=Path,
        metavar="FILE",
        help="per-domain thresholds (`judicator-policy learn --output`) in place of the shipped"
        " prometheus/rules/thresholds-domains.yml, for the scenarios",
    )
    parser.add_argument("--log-level", default="WARNING", help="DEBUG, INFO, WARNING, ERROR")
    return parser.parse_args(argv)


def say(text: str) -> None:
    print(text, flush=True)


def run_scenarios(
    scenarios: Sequence[Scenario], output: Path, rules_dir: Path
) -> list[scoring.ScenarioScore]:
    bars = scoring.class_thresholds(evasion.load_rules().thresholds)
    scores = []
    for index, scenario in enumerate(scenarios, start=1):
        say(f"[{index}/{len(scenarios)}] {scenario.name}: {scenario.description}")
        host_name = f"ev{os.getpid() % 10000}n{index % 100}"
        record = runner.run_scenario(
            scenario,
            host_name=host_name,
            log_dir=output / "logs" / scenario.name,
            say=say,
            rules_dir=rules_dir,
        )
        result = scoring.score(scenario, record, bars)
        scores.append(result)
        verdicts = ", ".join(f"{g.guest} {report.MARKS[g.verdict]}" for g in result.guests)
        say(f"    => {verdicts} ({result.wall_seconds:.0f} s)")
        # What is done so far survives an interrupted run.
        partial = {"scenarios": [s.as_dict() for s in scores], "partial": True}
        report.write_json(output / "eval.json", partial)
    return scores


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="xeneval: %(levelname)s: %(message)s")
    try:
        scenarios = [] if args.evasion_only else select(discover(), args.scenarios, fast=args.fast)
    except ScenarioError as error:
        print(f"xeneval: {error}", file=sys.stderr)
        return 2
    if args.list:
        for s in scenarios:
            say(f"{s.name:<28} {s.duration:>4.0f}s  {','.join(s.tags):<28} {s.description}")
        return 0
    if args.thresholds_domains is not None and not args.thresholds_domains.is_file():
        print(f"xeneval: no file {args.thresholds_domains}", file=sys.stderr)
        return 2
    if scenarios and os.geteuid() != 0:
        print("xeneval: the scenarios need root (namespaces, tc, cgroups)", file=sys.stderr)
        return 2
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    total = sum(s.duration for s in scenarios)
    if scenarios:
        say(
            f"xeneval: {len(scenarios)} scenario(s), {total:.0f} s of traffic"
            f" (plus 20-50 s each to bring a host and the stack up and down)"
        )
    with contextlib.ExitStack() as resources:
        rules_dir = SHIPPED_RULES_DIR
        if args.thresholds_domains is not None:
            rules_dir = resources.enter_context(
                runner.rules_with_domain_thresholds(args.thresholds_domains)
            )
        scores = run_scenarios(scenarios, output, rules_dir)
    evasion_result: dict[str, Any] | None = None
    if not args.no_evasion:
        say("evasion: bisecting duty cycles and rates over synthetic series with promtool ...")
        try:
            evasion_result = evasion.run(say=say)
        except evasion.EvasionError as error:
            say(f"    !! evasion search failed: {error}")
    totals = scoring.totals(scores)
    data: dict[str, Any] = {
        "thresholds_domains": str(args.thresholds_domains or "shipped"),
        "scenarios": [s.as_dict() for s in scores],
        "totals": totals,
        "evasion": evasion_result,
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    report.write_json(output / "eval.json", data)
    drew = report.plot(output / "eval.png", scores, evasion_result)
    if scores:
        say("")
        say(report.table(scores, totals))
    if evasion_result is not None:
        say("")
        say(report.evasion_table(evasion_result))
    say("")
    say(f"report: {output / 'eval.json'}" + (f", {output / 'eval.png'}" if drew else ""))
    if totals["scenarios_inconclusive"]:
        say(
            f"inconclusive: {totals['confusion']['inconclusive']} attacker(s) never reached their"
            " policy's bar here (see `bar` in eval.json): no verdict on the policy, rerun them"
        )
    return 1 if totals["errors"] else 0
