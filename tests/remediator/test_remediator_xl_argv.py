"""The argv of every xl command that changes a domain is built once, in xentools.xl, and both
the remediator's plans and `Xl` use it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from remediator.alerts import Action
from remediator.host import ObservedDomain
from remediator.plan import Command, Tools, plan_apply, plan_release
from remediator.runner import Result
from remediator.xltoolstack import XlToolstack
from xentools.xl import pause_argv, set_cap_argv, unpause_argv, vcpu_pin_argv

TOOLS = Tools(xl="/opt/xl")
DOM = ObservedDomain(
    "web01", 7, paused=False, vcpus=2, scheduler="credit", cap=0, hard_affinity=("all", "1")
)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (set_cap_argv("xl", "credit2", "7", 30), ("xl", "sched-credit2", "-d", "7", "-c", "30")),
        (set_cap_argv("xl", "credit", "web", 0), ("xl", "sched-credit", "-d", "web", "-c", "0")),
        (pause_argv("/x/xl", "7"), ("/x/xl", "pause", "7")),
        (unpause_argv("/x/xl", "7"), ("/x/xl", "unpause", "7")),
        (vcpu_pin_argv("xl", "7", "all", "2-3"), ("xl", "vcpu-pin", "7", "all", "2-3", "-")),
        (vcpu_pin_argv("xl", "7", 1, "all", "0"), ("xl", "vcpu-pin", "7", "1", "all", "0")),
    ],
)
def test_argv_builders(argv: tuple[str, ...], expected: tuple[str, ...]) -> None:
    assert argv == expected


@pytest.mark.parametrize(
    ("scheduler", "cap"), [("credit2", -1), ("rtds", 10), ("arinc653", 0), ("", 5)]
)
def test_argv_builders_refuse_what_xl_would_misread(scheduler: str, cap: int) -> None:
    with pytest.raises(ValueError):
        set_cap_argv("xl", scheduler, "7", cap)


def test_plans_use_the_shared_builders() -> None:
    cap = Action("cpu_cap", {"cap": 50})
    assert [c.argv for c in plan_apply(cap, DOM, {}, TOOLS)] == [
        set_cap_argv("/opt/xl", "credit", "7", 50)
    ]
    capped = dataclasses.replace(DOM, cap=50)
    assert [c.argv for c in plan_release(cap, capped, {"cap": 0}, TOOLS)] == [
        set_cap_argv("/opt/xl", "credit", "7", 0)
    ]
    pause = Action("pause", {})
    assert [c.argv for c in plan_apply(pause, DOM, {"pauses": 0}, TOOLS)] == [
        pause_argv("/opt/xl", "7")
    ]
    assert [c.argv for c in plan_release(pause, DOM, {"pauses": 2}, TOOLS)] == [
        unpause_argv("/opt/xl", "7")
    ] * 2
    pin = Action("cpu_pin", {"cpus": [2, 3]})
    assert [c.argv for c in plan_apply(pin, DOM, {}, TOOLS)] == [
        vcpu_pin_argv("/opt/xl", "7", "all", "2-3")
    ]
    pinned = ObservedDomain("web01", 7, False, 2, hard_affinity=("2-3", "2-3"))
    assert [c.argv for c in plan_release(pin, pinned, {"hard_affinity": ["all", "1"]}, TOOLS)] == [
        vcpu_pin_argv("/opt/xl", "7", 0, "all"),
        vcpu_pin_argv("/opt/xl", "7", 1, "1"),
    ]


def test_domains_carry_the_uuid_that_tells_a_reboot_from_a_new_domain() -> None:
    listing = (Path(__file__).parents[1] / "fixtures" / "xl" / "fake-list-v.txt").read_text()

    class ListRunner:
        def run(self, command: Command) -> Result:
            assert command.argv[1:] == ("list", "-v"), command.argv
            return Result(command.argv, 0, listing, "", 0.01)

    tools = Tools(xl="/x/xl", tc="/x/tc", ip="/x/ip", timeout=3.0, latency_ms=50)
    domains = {d.name: d for d in XlToolstack(ListRunner(), tools, reader="xl").domains()}
    assert domains["web01"].uuid == "6f9b3c52-2a8e-4d6b-9d3e-0c1f2a3b4c5d"
