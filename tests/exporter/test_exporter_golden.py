"""A whole scrape of the default simulated host, compared with a golden exposition file.

Refresh it only on purpose (UPDATE_GOLDEN=1 .venv/bin/pytest tests/exporter/test_exporter_golden.py)
and review the diff. `promtool check metrics` must accept it without a single warning.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from exporter.collector import Exporter, SourceCollector
from exporter.domains import BlockCollector, DomainCollector, NetworkCollector
from exporter.perfc import PerfcCollector
from exporter.readers import LibxenctrlReader, PerfcReader, XenperfReader
from tests.exporter.statichost import STUB_DIR, XENPERF, StaticHost, make_static_host
from tests.support import require, require_binary
from xentools.libxenctrl import LibXenCtrl
from xentools.toolstack import XlToolstack

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "expected" / "exporter.prom"
# Samples whose values differ run to run; their HELP and TYPE lines stay.
UNSTABLE = re.compile(r"^(xen_exporter_collector_duration_seconds|xen_exporter_build_info)\{")


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StaticHost:
    require(XENPERF.exists() and (STUB_DIR / "libxenctrl.so.4.17").exists(), "needs make deps")
    static = make_static_host(tmp_path)
    for key, value in static.environment().items():
        monkeypatch.setenv(key, value)
    return static


def whole_scrape(host: StaticHost, reader: PerfcReader) -> str:
    collectors: list[SourceCollector] = [
        PerfcCollector(reader),
        DomainCollector(),
        NetworkCollector(host.sysfs),
        BlockCollector(host.sysfs),
    ]
    exporter = Exporter(collectors, XlToolstack(host.xl), command_timeout=5, scrape_timeout=20)
    return exporter.render().decode()


def stable(text: str) -> str:
    return "".join(line + "\n" for line in text.splitlines() if not UNSTABLE.match(line))


def test_golden_exposition_of_the_default_simulated_host(host: StaticHost) -> None:
    text = stable(whole_scrape(host, XenperfReader(host.xenperf)))
    assert 'xen_exporter_collector_success{collector="perfc"} 1.0' in text
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), "exposition changed: review, then UPDATE_GOLDEN=1"


def test_both_readers_give_the_same_exposition(host: StaticHost) -> None:
    library = LibXenCtrl.load([str(STUB_DIR / "libxenctrl.so.4.17")])
    through_ctypes = stable(whole_scrape(host, LibxenctrlReader(library)))
    through_xenperf = stable(whole_scrape(host, XenperfReader(host.xenperf)))
    assert through_ctypes == through_xenperf


def assert_promtool_accepts(exposition: str) -> None:
    """`promtool check metrics` takes it without an error or a single warning."""
    promtool = require_binary("promtool")
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=exposition,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == ""


def test_promtool_accepts_the_golden_file_without_warnings() -> None:
    assert_promtool_accepts(GOLDEN.read_text())
