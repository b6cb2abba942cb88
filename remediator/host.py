"""What the host looks like right now, as far as a throttle is concerned.

The dataclasses here are the planner's whole view of the world: plans are computed from them,
so a test can describe any host without root. The tc/ip JSON parsers are pure; reading the host
(running xl, tc and ip, listing vifs in sysfs) lives in `remediator.observe`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

# Our marks on the host, so that state can be recognised after a restart and never confused with
# an operator's own tc setup: the root qdisc handle we use and the ingress filter priority.
QDISC_HANDLE = "d1c:"
INGRESS_HANDLE = "ffff:"
FILTER_PREF = 49
IFB_PREFIX = "jifb"


def ifb_name(domid: int) -> str:
    """The ifb that takes the ingress of every vif of a domain: `jifb<domid>`. One per domain,
    so that its one tbf holds the domain to its rate whatever its number of vifs."""
    return f"{IFB_PREFIX}{domid}"


def receive_ifb_name(domid: int) -> str:
    """The ifb that takes the egress of every vif of a domain (what Dom0 sends into the guest):
    `jifb<domid>r`, at most 10 characters (IFNAMSIZ allows 15)."""
    return f"{IFB_PREFIX}{domid}r"


def ifb_domid(name: str) -> str:
    """The domid an ifb of ours belongs to (`jifb<domid>`, `jifb<domid>r`, `jifb<domid>.…`)."""
    return name[len(IFB_PREFIX) :].split(".", 1)[0].removesuffix("r")


def is_per_vif_ifb(name: str, domid: int) -> bool:
    """One of the per-vif ifbs (`jifb<domid>.<devid>[e]`) that remediators before per-domain
    shaping created: a throttle applied by one is moved to the domain's ifb."""
    return name.startswith(f"{IFB_PREFIX}{domid}.")


@dataclass(frozen=True)
class Qdisc:
    kind: str
    handle: str
    root: bool
    rate_bps: int | None = None  # tbf/htb rate in bits per second
    burst_bytes: int | None = None


@dataclass(frozen=True)
class Redirect:
    pref: int
    to_dev: str


@dataclass(frozen=True)
class LinkState:
    """One network device's tc state: its qdiscs and, on a vif, the ingress filters.

    `redirects` are the ingress filters that redirect (ours at FILTER_PREF, or someone else's);
    `other_filters` the priorities of those that do not (the exporter's direction counters, an
    operator's policer): an ingress qdisc that carries any of them is not ours to delete.
    """

    name: str
    exists: bool = True
    up: bool = True
    qdiscs: tuple[Qdisc, ...] = ()
    redirects: tuple[Redirect, ...] = ()
    other_filters: tuple[int, ...] = ()
    # The redirects of the filters on our root qdisc (`d1c:`, an htb on a vif whose receive
    # direction is shaped): the vif's egress sent to the domain's receive ifb.
    egress_redirects: tuple[Redirect, ...] = ()

    @property
    def root(self) -> Qdisc | None:
        return next((q for q in self.qdiscs if q.root), None)

    @property
    def has_ingress(self) -> bool:
        return any(q.kind == "ingress" for q in self.qdiscs)


@dataclass(frozen=True)
class VifState:
    name: str  # from sysfs, never from a label
    devid: int
    emulated: bool
    link: LinkState


@dataclass(frozen=True)
class ObservedDomain:
    """One running domain as the planner sees it (xl's view plus our tc state on its vifs)."""

    name: str
    domid: int
    paused: bool | None  # None: unknown (a KVM VM whose QMP monitor is absent or silent)
    vcpus: int
    scheduler: str | None = None  # "credit", "credit2" or (KVM) "cgroup"; None when not read
    cap: int | None = None
    hard_affinity: tuple[str, ...] = ()  # per vCPU, as xl prints it ("all", "2-3")
    vifs: tuple[VifState, ...] = ()
    uuid: str | None = None  # None when the toolstack did not say
    # The domain's ifb (`ifb_name(domid)`; exists=False when there is none, None when the
    # network was not read), and per-vif ifbs an older remediator left (`is_per_vif_ifb`).
    ifb: LinkState | None = None
    old_ifbs: tuple[str, ...] = ()
    # The domain's receive ifb (`receive_ifb_name(domid)`), as `ifb`.
    rx_ifb: LinkState | None = None


@dataclass(frozen=True)
class HostState:
    """The domains we were asked about (absent = not running) and stray ifbs of ours."""

    domains: dict[str, ObservedDomain] = field(default_factory=dict)
    our_ifbs: tuple[str, ...] = ()


def parse_qdiscs(text: str) -> tuple[Qdisc, ...]:
    """Parse `tc -j qdisc show dev X` (rates in the JSON are bytes per second)."""
    return tuple(_qdisc(entry) for entry in _json_list(text))


def _qdisc(entry: dict[str, Any]) -> Qdisc:
    options = entry.get("options") or {}
    rate = options.get("rate")
    burst = options.get("burst")
    return Qdisc(
        kind=str(entry.get("kind", "")),
        handle=str(entry.get("handle", "")),
        root=bool(entry.get("root", False)),
        rate_bps=int(rate) * 8 if isinstance(rate, int) else None,
        burst_bytes=int(burst) if isinstance(burst, int) else None,
    )


def parse_qdiscs_by_dev(text: str) -> dict[str, tuple[Qdisc, ...]]:
    """Parse `tc -j qdisc show` (every device): device name -> its qdiscs."""
    by_dev: dict[str, list[Qdisc]] = {}
    for entry in _json_list(text):
        dev = entry.get("dev")
        if isinstance(dev, str):
            by_dev.setdefault(dev, []).append(_qdisc(entry))
    return {dev: tuple(qdiscs) for dev, qdiscs in by_dev.items()}


def split_json_lists(text: str) -> list[str]:
    """Split what `tc -j -batch -` prints (one JSON list per command, one after the other) into
    one text per command, in order."""
    decoder = json.JSONDecoder()
    parts: list[str] = []
    position = 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position == len(text):
            return parts
        _, end = decoder.raw_decode(text, position)
        parts.append(text[position:end])
        position = end


def parse_ingress_filters(text: str) -> tuple[tuple[Redirect, ...], tuple[int, ...]]:
    """`tc -j filter show dev X parent ffff:` (or `parent d1c:`, the root's): its mirred egress
    redirects, and the priorities of the filters that redirect nowhere."""
    redirects = []
    others = set()
    for entry in _json_list(text):
        options = entry.get("options") or {}
        pref = int(entry.get("pref", 0))
        redirecting = False
        for action in options.get("actions") or []:
            if (
                action.get("kind") == "mirred"
                and action.get("mirred_action") == "redirect"
                and action.get("direction") == "egress"
            ):
                redirects.append(Redirect(pref=pref, to_dev=str(action.get("to_dev"))))
                redirecting = True
        if not redirecting:
            others.add(pref)
    return tuple(redirects), tuple(sorted(others - {r.pref for r in redirects}))


def parse_links(text: str) -> dict[str, bool]:
    """Parse `ip -j link show`: interface name -> administratively up."""
    return {
        str(entry["ifname"]): "UP" in (entry.get("flags") or [])
        for entry in _json_list(text)
        if "ifname" in entry
    }


def _json_list(text: str) -> list[dict[str, Any]]:
    if not text.strip():
        return []
    data = json.loads(text)
    if not isinstance(data, list):
        raise ValueError("expected a JSON list")
    return [entry for entry in data if isinstance(entry, dict)]
