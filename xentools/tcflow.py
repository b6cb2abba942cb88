"""Who starts the traffic: tc counters on a vif's ingress (what the guest sends).

Each vif gets one u32 filter per kind of packet that opens or answers an exchange, at its own
priority (FLOW_PREFS, below the remediator's redirect at 49, so they see every packet the guest
offers, shaped or not). Their action only counts and lets classification continue to the next
filter: `gact continue` where the kernel has act_gact, else `mirred egress mirror` to a sink
device that is up and drops all it is given (an ifb under `pfifo limit 0`), which counts in the
action's statistics. IPv4 without options (IHL 5) and first fragments only; IPv6 without
extension headers. One more kind counts IP fragments after the first: a datagram larger than
the MTU leaves as n fragments and only its first can be told request or answer, so the others
are counted apart (as the fragments that announce more to follow, IPv4's MF flag or IPv6's M
flag: n - 1 of them, as many). Pure: argv lists and a parser; nothing here runs a command.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FlowFilter:
    pref: int
    packet: str  # echo_request, echo_reply, syn, syn_ack, fragment
    protocol: str  # ip or ipv6
    matches: tuple[str, ...]


_IPV4 = ("match", "u8", "0x45", "0xff", "at", "0", "match", "u16", "0", "0x1fff", "at", "6")
FLOW_FILTERS: tuple[FlowFilter, ...] = (
    FlowFilter(
        11,
        "echo_request",
        "ip",
        (*_IPV4, "match", "ip", "protocol", "1", "0xff", "match", "u8", "8", "0xff", "at", "20"),
    ),
    FlowFilter(
        12,
        "echo_reply",
        "ip",
        (*_IPV4, "match", "ip", "protocol", "1", "0xff", "match", "u8", "0", "0xff", "at", "20"),
    ),
    FlowFilter(
        13,
        "syn",
        "ip",
        (*_IPV4, "match", "ip", "protocol", "6", "0xff", "match", "u8", "0x02", "0x12", "at", "33"),
    ),
    FlowFilter(
        14,
        "syn_ack",
        "ip",
        (*_IPV4, "match", "ip", "protocol", "6", "0xff", "match", "u8", "0x12", "0x12", "at", "33"),
    ),
    FlowFilter(
        15,
        "echo_request",
        "ipv6",
        ("match", "u8", "58", "0xff", "at", "6", "match", "u8", "128", "0xff", "at", "40"),
    ),
    FlowFilter(
        16,
        "echo_reply",
        "ipv6",
        ("match", "u8", "58", "0xff", "at", "6", "match", "u8", "129", "0xff", "at", "40"),
    ),
    FlowFilter(
        17,
        "syn",
        "ipv6",
        ("match", "u8", "6", "0xff", "at", "6", "match", "u8", "0x02", "0x12", "at", "53"),
    ),
    FlowFilter(
        18,
        "syn_ack",
        "ipv6",
        ("match", "u8", "6", "0xff", "at", "6", "match", "u8", "0x12", "0x12", "at", "53"),
    ),
    # IPv4 of any header length with More Fragments set.
    FlowFilter(
        19,
        "fragment",
        "ip",
        ("match", "u8", "0x40", "0xf0", "at", "0", "match", "u16", "0x2000", "0x2000", "at", "6"),
    ),
    # IPv6 whose first extension header is a Fragment header with its M flag set.
    FlowFilter(
        20,
        "fragment",
        "ipv6",
        ("match", "u8", "44", "0xff", "at", "6", "match", "u8", "0x01", "0x01", "at", "43"),
    ),
)
FLOW_PREFS: Mapping[int, FlowFilter] = {f.pref: f for f in FLOW_FILTERS}
PACKET_KINDS = ("echo_request", "echo_reply", "syn", "syn_ack", "fragment")


def count_action(sink: str | None) -> tuple[str, ...]:
    """The counting action: gact continue, or a mirror to `sink` that continues."""
    if sink is None:
        return ("action", "gact", "continue")
    return ("action", "mirred", "egress", "mirror", "dev", sink, "continue")


def sink_argvs(tc: str, ip: str, sink: str) -> list[list[str]]:
    """Create the sink (an error from `link add` means it exists), bring it up, drop all."""
    return [
        [ip, "link", "add", sink, "type", "ifb"],
        [ip, "link", "set", "dev", sink, "up"],
        [tc, "qdisc", "replace", "dev", sink, "root", "pfifo", "limit", "0"],
    ]


def install_argvs(tc: str, vif: str, sink: str | None, missing: set[int]) -> list[list[str]]:
    """The ingress qdisc (an error means it exists) and the filters of `missing` priorities."""
    argvs = [[tc, "qdisc", "add", "dev", vif, "ingress"]]
    for flow in FLOW_FILTERS:
        if flow.pref in missing:
            argvs.append(
                [
                    tc,
                    "filter",
                    "add",
                    "dev",
                    vif,
                    "parent",
                    "ffff:",
                    "protocol",
                    flow.protocol,
                    "prio",
                    str(flow.pref),
                    "u32",
                    *flow.matches,
                    *count_action(sink),
                ]
            )
    return argvs


def show_argv(tc: str, vif: str) -> list[str]:
    return [tc, "-s", "-j", "filter", "show", "dev", vif, "parent", "ffff:"]


def actions_argv(tc: str, kind: str) -> list[str]:
    """Every action of `kind` (gact or mirred) in the namespace, with its statistics."""
    return [tc, "-s", "-j", "actions", "ls", "action", kind]


def parse_action_counts(text: str) -> dict[int, int]:
    """`tc -s -j actions ls action KIND` -> packets, by action index."""
    counts: dict[int, int] = {}
    data = json.loads(text) if text.strip() else []
    for entry in data if isinstance(data, list) else []:
        for action in entry.get("actions", []) if isinstance(entry, dict) else []:
            index, stats = action.get("index"), action.get("stats", {})
            if isinstance(index, int) and isinstance(stats.get("packets"), int):
                counts[index] = stats["packets"]
    return counts


def _flow_actions(text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """`tc -s -j filter show dev VIF parent ffff:` -> (our priority, action) for each action."""
    data = json.loads(text) if text.strip() else []
    for entry in data if isinstance(data, list) else []:
        pref = entry.get("pref")
        if pref in FLOW_PREFS:
            for action in entry.get("options", {}).get("actions", []) or []:
                yield pref, action


def parse_flow_indexes(text: str) -> dict[int, int]:
    """`tc -s -j filter show dev VIF parent ffff:` -> our priority -> its action's index."""
    return {pref: a["index"] for pref, a in _flow_actions(text) if isinstance(a.get("index"), int)}


def parse_flow_counts(text: str) -> dict[int, int]:
    """`tc -s -j filter show dev VIF parent ffff:` -> packets counted, by our priority."""
    counts: dict[int, int] = {}
    for pref, action in _flow_actions(text):
        packets = action.get("stats", {}).get("packets")
        if isinstance(packets, int):
            counts[pref] = counts.get(pref, 0) + packets
    return counts
