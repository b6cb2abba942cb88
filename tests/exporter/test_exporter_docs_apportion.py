"""The recording rule docs/metrics.md gives for apportioning shared CPUs, run by promtool."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from tests.support import require_binary

METRICS_DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def documented_expression() -> str:
    text = METRICS_DOC.read_text()
    match = re.search(r"```promql\n# per-domain interrupt rate[^\n]*\n(.*?)```", text, re.S)
    assert match, "docs/metrics.md lost its apportioning rule"
    return match.group(1)


SHARE = "xen_pcpu_domain_share_ratio"
RECORDED = "domain:interrupts:rate1m"


def series(name: str, labels: str, values: str) -> dict[str, str]:
    return {"series": f'{name}{{instance="h",{labels}}}', "values": values}


def expected(domain: str, value: float) -> dict[str, object]:
    return {"labels": f'{RECORDED}{{instance="h",domain="{domain}"}}', "value": value}


def test_apportioning_rule_splits_shared_cpus_without_double_counting(tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    rules = {
        "groups": [
            {
                "name": "apportion",
                "rules": [{"record": RECORDED, "expr": documented_expression()}],
            }
        ]
    }
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    # CPU 1 belongs to guest1 (10/s); CPU 0 is shared 3:1 by guest2 and Domain-0 (20/s).
    tests = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "15s",
        "tests": [
            {
                "interval": "15s",
                "input_series": [
                    series("xen_perfc_interrupts_total", 'cpu="1",domain="guest1"', "0+150x10"),
                    series("xen_perfc_interrupts_total", 'cpu="0"', "0+300x10"),
                    series(SHARE, 'cpu="1",domain="guest1"', "1+0x10"),
                    series(SHARE, 'cpu="0",domain="guest2"', "0.75+0x10"),
                    series(SHARE, 'cpu="0",domain="Domain-0"', "0.25+0x10"),
                ],
                "promql_expr_test": [
                    {
                        "expr": RECORDED,
                        "eval_time": "2m",
                        "exp_samples": [
                            expected("guest1", 10),
                            expected("guest2", 15),
                            expected("Domain-0", 5),
                        ],
                    }
                ],
            }
        ],
    }
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(tests))
    result = subprocess.run(
        [promtool, "test", "rules", "tests.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
