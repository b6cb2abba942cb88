"""judicator-policy's exit statuses: 2 for what the user must fix, 1 for what failed."""

from __future__ import annotations

import yaml

from policylearn.cli import EVALUATION_INTERVAL, main
from xensim.configs import SHIPPED_PROMETHEUS_CONFIG
from xensim.services import free_loopback_port


def test_a_bad_config_is_a_usage_error(tmp_path, capsys):
    config = tmp_path / "learn.yml"
    config.write_text("margin: 0\ncolour: red\n")
    status = main(
        ["learn", "--prometheus.url", "http://127.0.0.1:1", "--config.file", str(config),
         "--output", str(tmp_path / "out.yml")]
    )  # fmt: skip
    assert status == 2
    err = capsys.readouterr().err
    assert "margin: 0 outside" in err and "unknown key 'colour'" in err


def test_an_unreachable_prometheus_fails_with_1(tmp_path, capsys):
    url = f"http://127.0.0.1:{free_loopback_port()}"
    status = main(["learn", "--prometheus.url", url, "--output", str(tmp_path / "out.yml")])
    assert status == 1
    assert "Connection refused" in capsys.readouterr().err
    assert not (tmp_path / "out.yml").exists()


def test_a_window_that_ends_before_it_starts(tmp_path):
    status = main(
        ["backtest", "--prometheus.url", "http://127.0.0.1:1", "--start", "2026-12-01T00:00:00Z",
         "--end", "2026-11-30T00:00:00Z", "--candidate", str(tmp_path / "c.yml")]
    )  # fmt: skip
    assert status == 2


def test_the_default_evaluation_interval_is_the_shipped_one():
    shipped = yaml.safe_load(SHIPPED_PROMETHEUS_CONFIG.read_text())
    assert shipped["global"]["evaluation_interval"] == EVALUATION_INTERVAL
