"""`make demo`: the published experiment, end to end, on a simulated Xen host.

    python -m xensim.demo [--scenario ping-flood|udp-flood|cpu-hog|memory|disk] [--output DIR]

The five phases of `experiment.run_experiment` and their checks; the figures of each phase,
the latencies and a PNG go to the output directory with every component's log; the exit
status is 0 only if the victim was protected (docs/demo.md).
The demo's parts: `scenarios` (what is run and measured), `watching` (what is seen while it
runs), `experiment` (the run and its judgement), `report` (table, timeline and plot), `cli`.
"""

from __future__ import annotations

from xensim.demo.cli import main, parse_args
from xensim.demo.experiment import Timeout, evaluate, run_experiment, summarize
from xensim.demo.report import plot, table, write_report
from xensim.demo.scenarios import (
    ATTACKER,
    BYSTANDER,
    MEASURES,
    PHASE_TITLES,
    PHASES,
    SCENARIOS,
    VICTIM,
    Check,
    Measure,
    Result,
    Scenario,
    Settings,
)
from xensim.demo.watching import Progress, VifSampler, Watcher, throttled_now

# The names this module held before it was split, for code that imports them from here.
__all__ = [
    "ATTACKER",
    "BYSTANDER",
    "MEASURES",
    "PHASES",
    "PHASE_TITLES",
    "SCENARIOS",
    "VICTIM",
    "Check",
    "Measure",
    "Progress",
    "Result",
    "Scenario",
    "Settings",
    "Timeout",
    "VifSampler",
    "Watcher",
    "evaluate",
    "main",
    "parse_args",
    "plot",
    "run_experiment",
    "summarize",
    "table",
    "throttled_now",
    "write_report",
]
