"""Pure planning: argv lists for every action, scheduler and failure, from described host states."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from remediator.alerts import Action
from remediator.host import LinkState, ObservedDomain, Qdisc, Redirect, VifState
from remediator.plan import (
    PlanError,
    Tools,
    capture_prior,
    is_applied,
    plan_apply,
    plan_release,
)
from remediator.units import format_cpu_list, parse_cpu_list, parse_rate, parse_size

TOOLS = Tools(xl="/x/xl", tc="/x/tc", ip="/x/ip", timeout=3.0, latency_ms=50)
SHAPE = Action("network_shape", {"rate_bps": 1_000_000, "burst_bytes": 32768, "direction": "send"})
TBF = Qdisc("tbf", "d1c:", True, 1_000_000, 32768)
NOQUEUE = Qdisc("noqueue", "0:", True)
INGRESS = Qdisc("ingress", "ffff:", False)


def vif(
    name: str = "vif7.0",
    devid: int = 0,
    emulated: bool = False,
    qdiscs: tuple[Qdisc, ...] = (NOQUEUE,),
    redirects: tuple[Redirect, ...] = (),
    ifb: LinkState | None = None,
) -> VifState:
    ifb_dev = f"jifb7.{devid}{'e' if emulated else ''}"
    return VifState(
        name=name,
        devid=devid,
        emulated=emulated,
        link=LinkState(name, qdiscs=qdiscs, redirects=redirects),
        ifb=ifb or LinkState(ifb_dev, exists=False, up=False),
    )


def dom(**fields: Any) -> ObservedDomain:
    base: dict[str, Any] = {
        "name": "web01", "domid": 7, "paused": False, "vcpus": 2, "scheduler": "credit2",
        "cap": 0, "hard_affinity": ("all", "all"), "vifs": (vif(),),
    }  # fmt: skip
    base.update(fields)
    return ObservedDomain(**base)


def argvs(commands: list[Any]) -> list[tuple[str, ...]]:
    return [c.argv for c in commands]


SHAPED_VIF = vif(
    qdiscs=(NOQUEUE, INGRESS),
    redirects=(Redirect(49, "jifb7.0"),),
    ifb=LinkState("jifb7.0", qdiscs=(TBF,)),
)


def test_shaping_what_a_guest_sends_from_scratch() -> None:
    assert argvs(plan_apply(SHAPE, dom(), {}, TOOLS)) == [
        ("/x/ip", "link", "add", "jifb7.0", "type", "ifb"),
        ("/x/ip", "link", "set", "dev", "jifb7.0", "up"),
        ("/x/tc", "qdisc", "replace", "dev", "jifb7.0", "root", "handle", "d1c:", "tbf",
         "rate", "1000000bit", "burst", "32768b", "latency", "50ms"),
        ("/x/tc", "qdisc", "add", "dev", "vif7.0", "ingress"),
        ("/x/tc", "filter", "add", "dev", "vif7.0", "parent", "ffff:", "protocol", "all",
         "prio", "49", "u32", "match", "u32", "0", "0",
         "action", "mirred", "egress", "redirect", "dev", "jifb7.0"),
    ]  # fmt: skip


def test_every_vif_is_shaped_emu_included_each_with_its_own_ifb() -> None:
    state = dom(vifs=(vif(), vif("vif7.0-emu", 0, True), vif("vif7.1", 1)))
    commands = plan_apply(SHAPE, state, {}, TOOLS)
    devices = {c.argv[3] for c in commands if c.argv[1:3] == ("link", "add")}
    assert devices == {"jifb7.0", "jifb7.0e", "jifb7.1"}


def test_shaping_already_in_place_plans_nothing_and_checks_as_applied() -> None:
    state = dom(vifs=(SHAPED_VIF,))
    assert plan_apply(SHAPE, state, {}, TOOLS) == []
    assert is_applied(SHAPE, state, {}, TOOLS)


def test_half_done_shaping_is_finished_not_redone() -> None:
    half = vif(qdiscs=(NOQUEUE, INGRESS), ifb=LinkState("jifb7.0", qdiscs=(TBF,)))
    assert argvs(plan_apply(SHAPE, dom(vifs=(half,)), {}, TOOLS)) == [
        ("/x/tc", "filter", "add", "dev", "vif7.0", "parent", "ffff:", "protocol", "all",
         "prio", "49", "u32", "match", "u32", "0", "0",
         "action", "mirred", "egress", "redirect", "dev", "jifb7.0"),
    ]  # fmt: skip


def test_a_different_rate_replaces_only_the_tbf() -> None:
    slower = Action("network_shape", {**SHAPE.params, "rate_bps": 512_000})
    assert [c.argv[:6] for c in plan_apply(slower, dom(vifs=(SHAPED_VIF,)), {}, TOOLS)] == [
        ("/x/tc", "qdisc", "replace", "dev", "jifb7.0", "root"),
    ]


def test_receive_direction_puts_a_tbf_on_the_vif_itself() -> None:
    receive = Action("network_shape", {**SHAPE.params, "direction": "receive"})
    assert [c.argv[:9] for c in plan_apply(receive, dom(), {}, TOOLS)] == [
        ("/x/tc", "qdisc", "replace", "dev", "vif7.0", "root", "handle", "d1c:", "tbf"),
    ]


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        (dom(vifs=()), "no_interfaces"),
        (dom(vifs=(vif(qdiscs=(NOQUEUE, INGRESS), redirects=(Redirect(1, "ifb0"),)),)),
         "foreign_tc"),
    ],
)  # fmt: skip
def test_shaping_refuses_what_it_cannot_do_safely(state: ObservedDomain, reason: str) -> None:
    with pytest.raises(PlanError) as error:
        plan_apply(SHAPE, state, {}, TOOLS)
    assert error.value.reason == reason


def test_receive_shaping_never_replaces_an_operators_root_qdisc() -> None:
    receive = Action("network_shape", {**SHAPE.params, "direction": "both"})
    theirs = vif(qdiscs=(Qdisc("htb", "1:", True),))
    with pytest.raises(PlanError, match="htb"):
        plan_apply(receive, dom(vifs=(theirs,)), {}, TOOLS)


def test_unshaping_removes_ingress_ifb_and_our_root_only() -> None:
    both = vif(
        qdiscs=(TBF, INGRESS),
        redirects=(Redirect(49, "jifb7.0"),),
        ifb=LinkState("jifb7.0", qdiscs=(TBF,)),
    )
    assert argvs(plan_release(SHAPE, dom(vifs=(both,)), {}, TOOLS)) == [
        ("/x/tc", "qdisc", "del", "dev", "vif7.0", "ingress"),
        ("/x/ip", "link", "del", "dev", "jifb7.0"),
        ("/x/tc", "qdisc", "del", "dev", "vif7.0", "root"),
    ]
    assert plan_release(SHAPE, dom(), {}, TOOLS) == []


def test_unshaping_keeps_an_ingress_qdisc_that_counters_came_to_sit_on() -> None:
    # We added the ingress qdisc; the exporter's direction counters were put on it since.
    shaped = vif(qdiscs=(NOQUEUE, INGRESS), redirects=(Redirect(49, "jifb7.0"),))
    counted = VifState(
        shaped.name, 0, False, replace(shaped.link, other_filters=(11, 12)), shaped.ifb
    )
    assert argvs(plan_release(SHAPE, dom(vifs=(counted,)), {}, TOOLS)) == [
        ("/x/tc", "filter", "del", "dev", "vif7.0", "parent", "ffff:", "prio", "49"),
    ]
    # Once our redirect is gone, what is left is theirs: released.
    left = VifState(counted.name, 0, False, replace(counted.link, redirects=()), counted.ifb)
    assert plan_release(SHAPE, dom(vifs=(left,)), {}, TOOLS) == []


@pytest.mark.parametrize(("scheduler", "command"), [("credit2", "sched-credit2"),
                                                     ("credit", "sched-credit")])  # fmt: skip
def test_cpu_cap_by_scheduler_and_restore(scheduler: str, command: str) -> None:
    cap = Action("cpu_cap", {"cap": 50})
    state = dom(scheduler=scheduler, cap=200)
    prior = capture_prior(cap, state)
    assert prior == {"cap": 200, "scheduler": scheduler}
    assert argvs(plan_apply(cap, state, prior, TOOLS)) == [
        ("/x/xl", command, "-d", "7", "-c", "50")
    ]
    capped = dom(scheduler=scheduler, cap=50)
    assert plan_apply(cap, capped, prior, TOOLS) == []
    assert argvs(plan_release(cap, capped, prior, TOOLS)) == [
        ("/x/xl", command, "-d", "7", "-c", "200")
    ]


@pytest.mark.parametrize(
    ("state", "action", "reason"),
    [
        (dom(scheduler="rtds"), Action("cpu_cap", {"cap": 50}), "unsupported_scheduler"),
        (dom(scheduler="null"), Action("cpu_cap", {"cap": 50}), "unsupported_scheduler"),
        (dom(vcpus=1), Action("cpu_cap", {"cap": 150}), "bad_parameter"),
        (dom(cap=None), Action("cpu_cap", {"cap": 50}), "host_state"),
        (dom(hard_affinity=()), Action("cpu_pin", {"cpus": [3]}), "host_state"),
        (dom(), Action("command", {"command": "gone"}), "unknown_command"),
    ],
)
def test_cpu_and_command_failures(state: ObservedDomain, action: Action, reason: str) -> None:
    with pytest.raises(PlanError) as error:
        plan_apply(action, state, capture_prior(action, state), TOOLS)
    assert error.value.reason == reason


def test_pin_all_vcpus_then_restore_each_ones_affinity() -> None:
    pin = Action("cpu_pin", {"cpus": [2, 3]})
    state = dom(hard_affinity=("0", "all"))
    prior = capture_prior(pin, state)
    assert argvs(plan_apply(pin, state, prior, TOOLS)) == [
        ("/x/xl", "vcpu-pin", "7", "all", "2-3", "-")
    ]
    pinned = dom(hard_affinity=("2-3", "2-3"))
    assert plan_apply(pin, pinned, prior, TOOLS) == []
    assert argvs(plan_release(pin, pinned, prior, TOOLS)) == [
        ("/x/xl", "vcpu-pin", "7", "0", "0", "-"),
        ("/x/xl", "vcpu-pin", "7", "1", "all", "-"),
    ]


def test_pause_once_and_unpause_exactly_as_often_as_we_paused() -> None:
    pause = Action("pause", {})
    assert argvs(plan_apply(pause, dom(), {"pauses": 0}, TOOLS)) == [("/x/xl", "pause", "7")]
    assert plan_apply(pause, dom(paused=True), {"pauses": 1}, TOOLS) == []
    assert argvs(plan_release(pause, dom(paused=True), {"pauses": 1}, TOOLS)) == [
        ("/x/xl", "unpause", "7")
    ]
    assert plan_release(pause, dom(paused=True), {"pauses": 0}, TOOLS) == []


@pytest.mark.parametrize(
    ("text", "bits"),
    [("1mbit", 1_000_000), ("512kbit", 512_000), ("100kbps", 800_000), ("1.5mbit", 1_500_000),
     ("2gbit", 2_000_000_000), ("9600", 9600), ("1MBIT", 1_000_000)],
)  # fmt: skip
def test_rates(text: str, bits: int) -> None:
    assert parse_rate(text) == bits


@pytest.mark.parametrize(
    "text", ["", "mbit", "1 mbit", "1mbit;", "1e6bit", "0bit", "1kib", "\u0661"]
)
def test_bad_rates(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rate(text)


@pytest.mark.parametrize(("text", "size"), [("32kb", 32768), ("1mb", 1048576), ("1514b", 1514),
                                            ("1514", 1514), ("2k", 2048)])  # fmt: skip
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("text", "cpus", "rendered"),
    [("3", {3}, "3"), ("2-3", {2, 3}, "2-3"), ("0,2-3,5", {0, 2, 3, 5}, "0,2-3,5")],
)
def test_cpu_lists(text: str, cpus: set[int], rendered: str) -> None:
    assert parse_cpu_list(text) == cpus
    assert format_cpu_list(frozenset(cpus)) == rendered


@pytest.mark.parametrize("text", ["", "all", "3-2", "^1", "nodes:0", "1,,2", "99999"])
def test_bad_cpu_lists(text: str) -> None:
    with pytest.raises(ValueError):
        parse_cpu_list(text)
