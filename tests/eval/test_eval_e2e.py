"""`python -m xeneval ping-flood` end to end: a simulated host, the shipped stack, real traffic,
the report files. About 80 s.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import STUB, XENPERF, require, require_binary, require_root
from xeneval.cli import main

pytestmark = [pytest.mark.host, pytest.mark.slow]


def test_the_published_experiment_is_scored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require_root()
    for binary in ("prometheus", "prometheus-alertmanager", "ping", "tc", "ip"):
        require_binary(binary)
    require(XENPERF.exists(), f"needs the real xenperf at {XENPERF} (make deps)")
    require(STUB.exists(), f"needs the stub at {STUB} (make deps)")

    status = main(["ping-flood", "--no-evasion", "--output", str(tmp_path)])

    printed = capsys.readouterr().out
    assert status == 0, printed
    assert "[1/1] ping-flood" in printed
    assert "ATTACK" in printed  # progress while it runs
    assert "confusion matrix" in printed
    report = json.loads((tmp_path / "eval.json").read_text())
    (scenario,) = report["scenarios"]
    assert scenario["error"] is None
    guests = {g["guest"]: g for g in scenario["guests"]}
    attacker, victim, idle = guests["attacker"], guests["victim"], guests["idle"]
    # The harness saw the flood: sent by the attacker, received by the victim.
    assert attacker["achieved"]["sent_pps"] > 1000
    assert victim["harm"]["packets_received_extra"] > 10_000
    # The published experiment is caught, after its policies' `for:` and before it ends.
    assert attacker["verdict"] == "caught", printed
    assert 15 <= attacker["time_to_throttle"] <= 40
    assert idle["verdict"] == "spared"
    assert report["totals"]["confusion"]["caught"] == 1
    assert (tmp_path / "eval.png").stat().st_size > 0
    assert (tmp_path / "logs" / "ping-flood" / "remediator.log").exists()
