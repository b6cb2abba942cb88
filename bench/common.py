"""What every benchmark shares: statistics, tables, the results files and the machine."""

from __future__ import annotations

import json
import logging
import os
import platform
import site
import statistics
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from xensim.poll import wait_until

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "bench" / "results"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def median(values: Iterable[float]) -> float | None:
    data = sorted(values)
    return statistics.median(data) if data else None


def percentile(values: Iterable[float], fraction: float) -> float | None:
    """The nearest-rank percentile (fraction 0.5 = p50, 0.99 = p99); None without data."""
    data = sorted(values)
    if not data:
        return None
    rank = max(1, min(len(data), round(fraction * len(data) + 0.5)))
    return data[rank - 1]


def fmt(value: float | None, digits: int = 3, unit: str = "") -> str:
    if value is None:
        return "-"
    if value != 0 and abs(value) < 10 ** -(digits - 1):
        return f"{value:.{digits - 1}e}{unit}"
    return f"{value:.{digits}g}{unit}" if abs(value) >= 1000 else f"{value:.{digits}f}{unit}"


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table under a title, columns padded so it also reads well in a terminal."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        padded = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    return "\n".join([f"\n### {title}\n", line(cells[0]), rule, *(line(r) for r in cells[1:])])


def machine() -> dict[str, Any]:
    """The machine the figures come from: CPUs, model, load, kernel, Python."""
    model = "unknown"
    try:
        for text_line in Path("/proc/cpuinfo").read_text().splitlines():
            if text_line.startswith("model name"):
                model = text_line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "loadavg_at_start": os.getloadavg(),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def write_results(name: str, settings: dict[str, Any], figures: Any, tables: list[str]) -> Path:
    """bench/results/<name>.json: when, where, with what settings, the figures and tables."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    document = {
        "benchmark": name,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": settings,
        "figures": figures,
        "tables": tables,
    }
    document = relative_paths(json.loads(json.dumps(document, default=str)), local_roots())
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
    return path


def local_roots() -> dict[str, str]:
    """Where this checkout and its libraries are, and what a results file calls them instead."""
    roots = {f"{path}/": "site-packages/" for path in site.getsitepackages()}
    roots[f"{REPO_ROOT}/"] = ""
    return roots


def relative_paths(value: Any, roots: dict[str, str]) -> Any:
    """`value` with every absolute path under one of `roots` made relative (profiles name the
    files of the checkout they ran in: results must not depend on where that was)."""
    if isinstance(value, str):
        for root, replacement in roots.items():  # site-packages first: it may be in the checkout
            value = value.replace(root, replacement)
        return value
    if isinstance(value, dict):
        return {key: relative_paths(item, roots) for key, item in value.items()}
    if isinstance(value, list):
        return [relative_paths(item, roots) for item in value]
    return value


def process_cpu_seconds(pid: int) -> tuple[float, float]:
    """(own, reaped children) CPU seconds of a process from /proc/<pid>/stat (tick resolution)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state): utime=14, stime=15, cutime=16, cstime=17
    own = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    children = (int(fields[13]) + int(fields[14])) / CLOCK_TICKS
    return own, children


def threads_cpu_seconds(pid: int) -> float:
    """A process's CPU seconds summed over its live threads, in nanoseconds' resolution.

    /proc/<pid>/task/*/schedstat counts run time exactly (not in clock ticks), which matters
    for a process that spends milliseconds per second.
    """
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended between listing and reading
    return total / 1e9


def wait_for(condition: Any, *, timeout: float, what: str, interval: float = 0.2) -> Any:
    """`xensim.poll.wait_until` where any exception counts as "not yet" (a starting service)."""
    return wait_until(
        condition, timeout=timeout, what=what, interval=interval, retry_on=(Exception,)
    )
