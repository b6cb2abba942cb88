"""Coverage-guided fuzzing of the webhook payload parser and the alert interpreter (atheris).

    python tests/reliability/fuzz_payload.py CORPUS_DIR -runs=N -max_total_time=S

Run by tests/reliability/test_rel_fuzz.py. Any exception other than the parser's PayloadError is
a crash; so is an accepted alert whose parameters are not plain bounded numbers and fixed words
(the only values that may reach an argv list).
"""

from __future__ import annotations

import re
import sys

import atheris

with atheris.instrument_imports():
    from remediator.alerts import Intent, PayloadError, Refusal, interpret, parse_notification
    from remediator.config import load_config

CONFIG = load_config(
    {
        "instances": ["dom0-a:10170"],
        "state_path": "/nonexistent/state.db",
        "auth": {"disabled": True},
        "actions": {
            "network_shape": {"rate_min": "64kbit", "rate_max": "1gbit"},
            "cpu_cap": {"min": 1, "max": 400},
            "cpu_pin": {"allowed_cpus": "2-3"},
            "pause": {"enabled": True},
            "command": {"notify": {"apply": ["/usr/local/bin/notify"]}},
        },
    }
)
WORDS = {"send", "receive", "both", "notify"}
DOMAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:+-]{0,63}")


def check_param(value: object) -> None:
    if isinstance(value, bool):
        raise AssertionError(f"a boolean parameter {value!r}")
    if isinstance(value, int):
        if not 0 <= value <= 10**11:
            raise AssertionError(f"unbounded number {value!r}")
        return
    if isinstance(value, list):
        for item in value:
            check_param(item)
        return
    if value not in WORDS:
        raise AssertionError(f"free text reached the parameters: {value!r}")


def test_one_input(data: bytes) -> None:
    try:
        notification = parse_notification(data)
    except PayloadError:
        return
    for alert in notification.alerts:
        outcome = interpret(alert, CONFIG)
        if isinstance(outcome, Refusal):
            continue
        assert isinstance(outcome, Intent)
        assert DOMAIN.fullmatch(outcome.domain), outcome.domain
        if outcome.action is not None:
            for value in outcome.action.params.values():
                check_param(value)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
