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
    other_filters: tuple[int, ...] = (),
) -> VifState:
    link = LinkState(name, qdiscs=qdiscs, redirects=redirects, other_filters=other_filters)
    return VifState(name=name, devid=devid, emulated=emulated, link=link)


NO_IFB = LinkState("jifb7", exists=False, up=False)
SHAPED_IFB = LinkState("jifb7", qdiscs=(TBF,))


def dom(**fields: Any) -> ObservedDomain:
    base: dict[str, Any] = {
        "name": "web01", "domid": 7, "paused": False, "vcpus": 2, "scheduler": "credit2",
        "cap": 0, "hard_affinity": ("all", "all"), "vifs": (vif(),), "ifb": NO_IFB,
    }  # fmt: skip
    base.update(fields)
    return ObservedDomain(**base)


def argvs(commands: list[Any]) -> list[tuple[str, ...]]:
    return [c.argv for c in commands]


def redirect(dev: str, to: str = "jifb7") -> tuple[str, ...]:
    return (
        "/x/tc", "filter", "add", "dev", dev, "parent", "ffff:", "protocol", "all",
        "prio", "49", "u32", "match", "u32", "0", "0",
        "action", "mirred", "egress", "redirect", "dev", to,
    )  # fmt: skip


def shaped_vif(name: str = "vif7.0", devid: int = 0, emulated: bool = False) -> VifState:
    return vif(name, devid, emulated, qdiscs=(NOQUEUE, INGRESS), redirects=(Redirect(49, "jifb7"),))


SHAPED_VIF = shaped_vif()


def test_shaping_what_a_guest_sends_from_scratch() -> None:
    assert argvs(plan_apply(SHAPE, dom(), {}, TOOLS)) == [
        ("/x/ip", "link", "add", "jifb7", "type", "ifb"),
        ("/x/ip", "link", "set", "dev", "jifb7", "up"),
        ("/x/tc", "qdisc", "replace", "dev", "jifb7", "root", "handle", "d1c:", "tbf",
         "rate", "1000000bit", "burst", "32768b", "latency", "50ms"),
        ("/x/tc", "qdisc", "add", "dev", "vif7.0", "ingress"),
        redirect("vif7.0"),
    ]  # fmt: skip


def test_every_vif_emu_included_redirects_to_the_domains_one_ifb() -> None:
    # One tbf per domain: a guest with three vifs shares one rate, not three.
    state = dom(vifs=(vif(), vif("vif7.0-emu", 0, True), vif("vif7.1", 1)))
    commands = argvs(plan_apply(SHAPE, state, {}, TOOLS))
    assert [c[3] for c in commands if c[1:3] == ("link", "add")] == ["jifb7"]
    assert [c for c in commands if c[1:3] == ("qdisc", "replace")] == [
        ("/x/tc", "qdisc", "replace", "dev", "jifb7", "root", "handle", "d1c:", "tbf",
         "rate", "1000000bit", "burst", "32768b", "latency", "50ms"),
    ]  # fmt: skip
    assert [c for c in commands if c[1:3] == ("filter", "add")] == [
        redirect("vif7.0"),
        redirect("vif7.0-emu"),
        redirect("vif7.1"),
    ]


def test_shaping_already_in_place_plans_nothing_and_checks_as_applied() -> None:
    state = dom(vifs=(SHAPED_VIF, shaped_vif("vif7.1", 1)), ifb=SHAPED_IFB)
    assert plan_apply(SHAPE, state, {}, TOOLS) == []
    assert is_applied(SHAPE, state, {}, TOOLS)


def test_a_vif_added_while_shaped_joins_the_domains_ifb() -> None:
    state = dom(vifs=(SHAPED_VIF, vif("vif7.1", 1)), ifb=SHAPED_IFB)
    assert not is_applied(SHAPE, state, {}, TOOLS)
    assert argvs(plan_apply(SHAPE, state, {}, TOOLS)) == [
        ("/x/tc", "qdisc", "add", "dev", "vif7.1", "ingress"),
        redirect("vif7.1"),
    ]


def test_half_done_shaping_is_finished_not_redone() -> None:
    half = vif(qdiscs=(NOQUEUE, INGRESS))
    assert argvs(plan_apply(SHAPE, dom(vifs=(half,), ifb=SHAPED_IFB), {}, TOOLS)) == [
        redirect("vif7.0"),
    ]


def test_a_throttle_of_an_older_remediator_moves_to_the_domains_ifb() -> None:
    # Per-vif ifbs (jifb7.0, jifb7.1), each with its tbf: the guest had twice the rate.
    old = dom(
        vifs=(
            vif(qdiscs=(NOQUEUE, INGRESS), redirects=(Redirect(49, "jifb7.0"),)),
            vif("vif7.1", 1, qdiscs=(NOQUEUE, INGRESS), redirects=(Redirect(49, "jifb7.1"),)),
        ),
        old_ifbs=("jifb7.0", "jifb7.1"),
    )
    delete = ("/x/tc", "filter", "del", "dev", "vif7.0", "parent", "ffff:", "prio", "49")
    assert argvs(plan_apply(SHAPE, old, {}, TOOLS))[3:] == [
        delete,
        redirect("vif7.0"),
        (*delete[:4], "vif7.1", *delete[5:]),
        redirect("vif7.1"),
        ("/x/ip", "link", "del", "dev", "jifb7.0"),
        ("/x/ip", "link", "del", "dev", "jifb7.1"),
    ]
    assert not is_applied(SHAPE, old, {}, TOOLS)


def test_a_different_rate_replaces_only_the_tbf() -> None:
    slower = Action("network_shape", {**SHAPE.params, "rate_bps": 512_000})
    state = dom(vifs=(SHAPED_VIF,), ifb=SHAPED_IFB)
    assert [c.argv[:6] for c in plan_apply(slower, state, {}, TOOLS)] == [
        ("/x/tc", "qdisc", "replace", "dev", "jifb7", "root"),
    ]


RECEIVE = Action("network_shape", {**SHAPE.params, "direction": "receive"})
HTB = Qdisc("htb", "d1c:", True)
NO_RX_IFB = LinkState("jifb7r", exists=False, up=False)
SHAPED_RX_IFB = LinkState("jifb7r", qdiscs=(TBF,))


def rx_vif(name: str = "vif7.0", devid: int = 0, to: str = "jifb7r") -> VifState:
    """A vif whose egress (what the guest receives) goes to the domain's receive ifb."""
    state = vif(name, devid, qdiscs=(HTB,))
    link = replace(state.link, egress_redirects=(Redirect(49, to),))
    return replace(state, link=link)


def egress_redirect(dev: str, to: str = "jifb7r") -> tuple[str, ...]:
    return (
        "/x/tc", "filter", "add", "dev", dev, "parent", "d1c:", "protocol", "all",
        "prio", "49", "u32", "match", "u32", "0", "0",
        "action", "mirred", "egress", "redirect", "dev", to,
    )  # fmt: skip


def test_receive_direction_sends_every_vifs_egress_to_the_domains_one_receive_ifb() -> None:
    state = dom(vifs=(vif(), vif("vif7.1", 1)), rx_ifb=NO_RX_IFB)
    assert argvs(plan_apply(RECEIVE, state, {}, TOOLS))[:2] == [
        ("/x/ip", "link", "add", "jifb7r", "type", "ifb"),
        ("/x/ip", "link", "set", "dev", "jifb7r", "up"),
    ]
    commands = argvs(plan_apply(RECEIVE, state, {}, TOOLS))[2:]
    # The whole rate on the one ifb (not split over the vifs), an htb root and a redirect on each.
    assert commands[0][:11] == (
        "/x/tc", "qdisc", "replace", "dev", "jifb7r", "root", "handle", "d1c:", "tbf", "rate",
        "1000000bit",
    )  # fmt: skip
    assert commands[1:] == [
        ("/x/tc", "qdisc", "replace", "dev", "vif7.0", "root", "handle", "d1c:", "htb"),
        egress_redirect("vif7.0"),
        ("/x/tc", "qdisc", "replace", "dev", "vif7.1", "root", "handle", "d1c:", "htb"),
        egress_redirect("vif7.1"),
    ]
    done = dom(vifs=(rx_vif(), rx_vif("vif7.1", 1)), rx_ifb=SHAPED_RX_IFB)
    assert is_applied(RECEIVE, done, {}, TOOLS)
    assert plan_apply(RECEIVE, done, {}, TOOLS) == []  # idempotent
    # Both directions: two ifbs, each with the domain's whole rate.
    both = Action("network_shape", {**SHAPE.params, "direction": "both"})
    assert is_applied(
        both, replace(done, vifs=(replace(rx_vif(), link=replace(
            rx_vif().link, qdiscs=(HTB, INGRESS), redirects=(Redirect(49, "jifb7"),))),),
            ifb=SHAPED_IFB), {}, TOOLS,
    )  # fmt: skip


def test_a_vif_added_while_receive_shaped_joins_and_a_wrong_redirect_is_replaced() -> None:
    state = dom(vifs=(rx_vif(), rx_vif("vif7.1", 1, to="jifb9r"), vif("vif7.2", 2)),
                rx_ifb=SHAPED_RX_IFB)  # fmt: skip
    assert argvs(plan_apply(RECEIVE, state, {}, TOOLS)) == [
        ("/x/tc", "filter", "del", "dev", "vif7.1", "parent", "d1c:", "prio", "49"),
        egress_redirect("vif7.1"),
        ("/x/tc", "qdisc", "replace", "dev", "vif7.2", "root", "handle", "d1c:", "htb"),
        egress_redirect("vif7.2"),
    ]


def test_an_older_per_vif_receive_tbf_is_replaced_by_the_shared_layout() -> None:
    # What remediators before the shared receive limit left: the rate split over per-vif tbfs.
    half = Qdisc("tbf", "d1c:", True, 500_000, 32768)
    old = dom(vifs=(vif(qdiscs=(half,)), vif("vif7.1", 1, qdiscs=(half,))), rx_ifb=NO_RX_IFB)
    assert not is_applied(RECEIVE, old, {}, TOOLS)
    assert argvs(plan_apply(RECEIVE, old, {}, TOOLS))[3:] == [
        ("/x/tc", "qdisc", "del", "dev", "vif7.0", "root"),
        ("/x/tc", "qdisc", "replace", "dev", "vif7.0", "root", "handle", "d1c:", "htb"),
        egress_redirect("vif7.0"),
        ("/x/tc", "qdisc", "del", "dev", "vif7.1", "root"),
        ("/x/tc", "qdisc", "replace", "dev", "vif7.1", "root", "handle", "d1c:", "htb"),
        egress_redirect("vif7.1"),
    ]
    # Released as it stands, too: our root on each vif (no receive ifb to delete).
    assert argvs(plan_release(RECEIVE, old, {}, TOOLS)) == [
        ("/x/tc", "qdisc", "del", "dev", "vif7.0", "root"),
        ("/x/tc", "qdisc", "del", "dev", "vif7.1", "root"),
    ]


def test_receive_release_deletes_our_roots_and_the_receive_ifb() -> None:
    done = dom(vifs=(rx_vif(), rx_vif("vif7.1", 1)), rx_ifb=SHAPED_RX_IFB)
    assert argvs(plan_release(RECEIVE, done, {}, TOOLS)) == [
        ("/x/tc", "qdisc", "del", "dev", "vif7.0", "root"),
        ("/x/tc", "qdisc", "del", "dev", "vif7.1", "root"),
        ("/x/ip", "link", "del", "dev", "jifb7r"),
    ]
    released = dom(vifs=(vif(), vif("vif7.1", 1)), rx_ifb=NO_RX_IFB)
    assert plan_release(RECEIVE, released, {}, TOOLS) == []


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        (dom(vifs=()), "no_interfaces"),
        (dom(vifs=(vif(qdiscs=(NOQUEUE, INGRESS), redirects=(Redirect(1, "ifb0"),)),)),
         "foreign_tc"),
        # An operator's redirect on any vif of the domain stops the whole plan.
        (dom(vifs=(vif(), vif("vif7.1", 1, qdiscs=(NOQUEUE, INGRESS),
                              redirects=(Redirect(1, "ifb0"),)))),
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
    both = vif(qdiscs=(TBF, INGRESS), redirects=(Redirect(49, "jifb7"),))
    other = shaped_vif("vif7.1", 1)
    assert argvs(plan_release(SHAPE, dom(vifs=(both, other), ifb=SHAPED_IFB), {}, TOOLS)) == [
        ("/x/tc", "qdisc", "del", "dev", "vif7.0", "ingress"),
        ("/x/tc", "qdisc", "del", "dev", "vif7.0", "root"),
        ("/x/tc", "qdisc", "del", "dev", "vif7.1", "ingress"),
        ("/x/ip", "link", "del", "dev", "jifb7"),
    ]
    assert plan_release(SHAPE, dom(), {}, TOOLS) == []
    # Per-vif ifbs an older remediator left go too.
    assert argvs(plan_release(SHAPE, dom(old_ifbs=("jifb7.0",)), {}, TOOLS)) == [
        ("/x/ip", "link", "del", "dev", "jifb7.0"),
    ]


def test_unshaping_keeps_an_ingress_qdisc_that_counters_came_to_sit_on() -> None:
    # We added the ingress qdisc; the exporter's direction counters were put on it since.
    counted = replace(SHAPED_VIF, link=replace(SHAPED_VIF.link, other_filters=(11, 12)))
    assert argvs(plan_release(SHAPE, dom(vifs=(counted,)), {}, TOOLS)) == [
        ("/x/tc", "filter", "del", "dev", "vif7.0", "parent", "ffff:", "prio", "49"),
    ]
    # Once our redirect is gone, what is left is theirs: released.
    left = replace(counted, link=replace(counted.link, redirects=()))
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


def test_both_directions_make_their_ifbs_first_then_every_tc_change_in_one_run() -> None:
    both = Action("network_shape", {**SHAPE.params, "direction": "both"})
    programs = [c.argv[0] for c in plan_apply(both, dom(rx_ifb=NO_RX_IFB), {}, TOOLS)]
    # One ip run then one tc run: the round's one `ip -batch -` and one `tc -batch -`.
    assert programs == ["/x/ip"] * 4 + ["/x/tc"] * (len(programs) - 4)
