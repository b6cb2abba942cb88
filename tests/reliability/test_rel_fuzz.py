"""Hostile input: a property-based run over the payload schema through the whole app (a fake
host records every command), and a coverage-guided run of the payload parser and interpreter
(atheris, tests/reliability/fuzz_payload.py). No crash, no 5xx, no label text in an argv list,
and nothing run for an alert that can never be accepted.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.remediator.fakehost import FakeHost
from tests.remediator.helpers import AUTH, alert, engine_of, payload
from tests.support import require

REPO = Path(__file__).resolve().parents[2]
SEEDS = REPO / "tests/fixtures/alertmanager"
# What an argv element may look like: program paths, subcommands, canonical numbers and units,
# interface names from the host. No whitespace, quotes, `$`, `;`, `|`, `` ` `` or non-ASCII.
ARGV_ELEMENT = re.compile(r"[A-Za-z0-9_.:/+,-]{1,64}")
REASONS = {
    "bad_domain", "protected_domain", "unknown_action", "action_disabled", "bad_parameter",
    "throttle_limit", "bad_fingerprint",
}  # fmt: skip

hostile_text = st.one_of(
    st.text(max_size=24),
    st.sampled_from(["1mbit; ls", "$(id)", "`id`", "1e9", "0x10", "1_000kbit", "\u0661\u0660",
                     "50 -d 0", "2-3 -", "all", "-1", "9" * 30, "1mbit\n", "../x", "%n%s"]),
    st.from_regex(r"[0-9]{1,13}(\.[0-9]{1,7})?(bit|kbit|mbit|gbit|bps|kb|mb|b|k|m)?",
                  fullmatch=True),
)  # fmt: skip


@settings(
    max_examples=int(os.environ.get("JUDICATOR_FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    domain=st.sampled_from(["web01", "web02", "batch03", "infra", "Domain-0", "ghost"])
    | hostile_text,
    remediation=st.sampled_from(["network_shape", "cpu_cap", "cpu_pin", "pause", "command"])
    | hostile_text,
    params=st.dictionaries(
        st.sampled_from(["rate", "burst", "direction", "cap", "cpus", "command"]),
        hostile_text,
    ),
    fingerprint=st.from_regex(r"[0-9a-f]{16}", fullmatch=True) | st.text(max_size=40),
)
def test_property_schema_valid_payloads_with_hostile_values(
    app: Flask,
    fake_host: FakeHost,
    domain: str,
    remediation: str,
    params: dict[str, str],
    fingerprint: str,
) -> None:
    body = payload(alert(fingerprint=fingerprint, domain=domain, remediation=remediation,
                         **params))  # fmt: skip
    response = app.test_client().post("/alerts", data=body, headers=AUTH)
    if len(fingerprint) > 64:
        assert response.status_code == 400
        return
    assert response.status_code == 200, response.data
    (decision,) = response.get_json()["alerts"]
    if decision["decision"] == "refused":
        assert decision["reason"] in REASONS, decision
    assert engine_of(app).wait_idle(10)
    for argv in fake_host.calls:
        bad = [element for element in argv if not ARGV_ELEMENT.fullmatch(element)]
        assert not bad, (argv, body)
    for throttle in engine_of(app).store.recent(1000):
        if throttle.domain not in fake_host.domains:
            assert throttle.state in ("failed", "pending"), throttle


def _atheris(tmp_path: Path, runs: int, seconds: int) -> subprocess.CompletedProcess[str]:
    require(importlib.util.find_spec("atheris"), "needs atheris (pip install atheris)")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for seed in SEEDS.glob("*.json"):
        if seed.name != "headers.json":
            shutil.copy(seed, corpus)
    return subprocess.run(
        [sys.executable, str(REPO / "tests/reliability/fuzz_payload.py"), str(corpus),
         f"-runs={runs}", f"-max_total_time={seconds}", "-rss_limit_mb=1024",
         "-print_final_stats=1"],
        capture_output=True, text=True, timeout=seconds + 120, check=False,
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip


@pytest.mark.slow
def test_coverage_guided_fuzzing_of_the_payload_parser(tmp_path: Path) -> None:
    # A count of runs, not a rate: the time cap is only a bound for a machine under load.
    result = _atheris(tmp_path, runs=150_000, seconds=900)
    assert result.returncode == 0, result.stderr[-3000:]
    done = re.search(r"Done (\d+) runs in (\d+) second", result.stderr)
    assert done and int(done[1]) >= 150_000, result.stderr[-2000:]
    coverage = re.findall(r"cov: (\d+) ft: (\d+)", result.stderr)[-1]
    print(f"atheris: {done[1]} runs in {done[2]}s, cov {coverage[0]} ft {coverage[1]}")


@pytest.mark.soak
def test_coverage_guided_fuzzing_of_the_payload_parser_long(tmp_path: Path) -> None:
    result = _atheris(tmp_path, runs=20_000_000, seconds=600)
    assert result.returncode == 0, result.stderr[-3000:]
    done = re.search(r"Done (\d+) runs in (\d+) second", result.stderr)
    coverage = re.findall(r"cov: (\d+) ft: (\d+)", result.stderr)[-1]
    assert done is not None
    print(f"atheris: {done[1]} runs in {done[2]}s, cov {coverage[0]} ft {coverage[1]}")
