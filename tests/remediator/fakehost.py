"""A small model of a Dom0 for unit tests: answers `observe` and executes the argv lists the
planner emits (xl, tc, ip), changing its model as the real tools would. Every command run is
recorded in `calls`, so a test can assert that nothing was run."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from remediator.host import (
    FILTER_PREF,
    IFB_PREFIX,
    HostState,
    LinkState,
    ObservedDomain,
    Qdisc,
    Redirect,
    VifState,
    ifb_name,
    is_per_vif_ifb,
    receive_ifb_name,
)
from remediator.observe import ObserveError
from remediator.plan import Command
from remediator.runner import Result

_UUIDS = itertools.count(1)


def new_uuid() -> str:
    return f"00000000-0000-4000-8000-{next(_UUIDS):012d}"


@dataclass
class FakeDomain:
    name: str
    domid: int
    vcpus: int = 2
    scheduler: str = "credit2"
    cap: int = 0
    affinity: list[str] = field(default_factory=lambda: ["all", "all"])
    pauses: int = 0  # the hypervisor's toolstack pause refcount
    vifs: list[tuple[int, bool]] = field(default_factory=lambda: [(0, False)])
    uuid: str = field(default_factory=new_uuid)  # kept across reboots, as Xen does

    def vif_names(self) -> list[tuple[str, int, bool]]:
        return [
            (f"vif{self.domid}.{devid}{'-emu' if emu else ''}", devid, emu)
            for devid, emu in self.vifs
        ]


@dataclass
class FakeLink:
    up: bool = False
    root: Qdisc | None = None
    ingress: bool = False
    redirects: list[Redirect] = field(default_factory=list)
    egress_redirects: list[Redirect] = field(default_factory=list)  # on our root htb


class FakeHost:
    def __init__(self, *domains: FakeDomain) -> None:
        self.domains = {d.name: d for d in domains}
        self.links: dict[str, FakeLink] = {}
        for dom in domains:
            self.plug(dom)
        self.calls: list[tuple[str, ...]] = []
        self.observations = 0
        self.fail: dict[str, str] = {}  # argv prefix (joined) -> stderr: that command fails
        # argv prefixes whose command takes effect but is reported timed out (killed late)
        self.timeout_after: set[str] = set()
        self.observe_failures = 0  # the next N observations raise ObserveError
        self.before_run: Callable[[tuple[str, ...]], None] | None = None  # called unlocked
        self.lock = threading.Lock()

    def plug(self, dom: FakeDomain) -> None:
        for name, _devid, _emu in dom.vif_names():
            self.links[name] = FakeLink(up=True, root=Qdisc("noqueue", "0:", True))

    def destroy(self, name: str) -> FakeDomain:
        dom = self.domains.pop(name)
        for vif, _devid, _emu in dom.vif_names():
            self.links.pop(vif, None)
        return dom

    def create(self, dom: FakeDomain) -> None:
        self.domains[dom.name] = dom
        self.plug(dom)

    def reboot(self, name: str, new_domid: int) -> None:
        dom = self.domains[name]
        for vif, _devid, _emu in dom.vif_names():
            self.links.pop(vif, None)
        dom.domid = new_domid
        dom.cap = 0
        dom.pauses = 0
        dom.affinity = ["all"] * dom.vcpus
        self.plug(dom)

    # -- HostReader ---------------------------------------------------------------------------

    def observe(self, names: Iterable[str], kinds: Iterable[str]) -> HostState:
        with self.lock:
            self.observations += 1
            if self.observe_failures > 0:
                self.observe_failures -= 1
                raise ObserveError("fake host: xl list timed out")
            wanted = set(names)
            states = {}
            for dom in self.domains.values():
                if dom.name not in wanted:
                    continue
                vifs = tuple(
                    VifState(name=vif, devid=devid, emulated=emu, link=self._link_state(vif))
                    for vif, devid, emu in dom.vif_names()
                )
                states[dom.name] = ObservedDomain(
                    name=dom.name,
                    domid=dom.domid,
                    paused=dom.pauses > 0,
                    vcpus=dom.vcpus,
                    scheduler=dom.scheduler,
                    cap=dom.cap,
                    hard_affinity=tuple(dom.affinity),
                    vifs=vifs,
                    uuid=dom.uuid,
                    ifb=self._link_state(ifb_name(dom.domid)),
                    rx_ifb=self._link_state(receive_ifb_name(dom.domid)),
                    old_ifbs=tuple(sorted(n for n in self.links if is_per_vif_ifb(n, dom.domid))),
                )
            ifbs = tuple(sorted(n for n in self.links if n.startswith(IFB_PREFIX)))
            return HostState(domains=states, our_ifbs=ifbs)

    def _link_state(self, name: str) -> LinkState:
        link = self.links.get(name)
        if link is None:
            return LinkState(name=name, exists=False, up=False)
        qdiscs = []
        if link.root is not None:
            qdiscs.append(link.root)
        if link.ingress:
            qdiscs.append(Qdisc("ingress", "ffff:", False))
        return LinkState(
            name=name,
            up=link.up,
            qdiscs=tuple(qdiscs),
            redirects=tuple(link.redirects),
            egress_redirects=tuple(link.egress_redirects),
        )

    # -- Runner -------------------------------------------------------------------------------

    def run(self, command: Command) -> Result:
        argv = command.argv
        if self.before_run is not None:
            self.before_run(argv)
        with self.lock:
            self.calls.append(argv)
            joined = " ".join(argv)
            for prefix, stderr in self.fail.items():
                if joined.startswith(prefix):
                    return Result(argv, 1, "", stderr, 0.001)
            try:
                self._execute(list(argv))
            except (KeyError, ValueError, IndexError) as error:
                return Result(argv, 1, "", f"fake host: {error!r}", 0.001)
            if any(joined.startswith(prefix) for prefix in self.timeout_after):
                return Result(argv, -1, "", "", command.timeout, timed_out=True)
            return Result(argv, 0, "", "", 0.001)

    def _domain(self, domid: str) -> FakeDomain:
        for dom in self.domains.values():
            if str(dom.domid) == domid:
                return dom
        raise KeyError(f"no domain {domid}")

    def _execute(self, argv: list[str]) -> None:
        tool, *rest = argv
        if tool.startswith("/"):
            return  # an operator command: recorded only
        if tool == "xl":
            self._xl(rest)
        elif tool == "ip":
            self._ip(rest)
        elif tool == "tc":
            self._tc(rest)
        else:
            raise ValueError(f"unknown tool {tool}")

    def _xl(self, args: list[str]) -> None:
        sub = args[0]
        if sub.startswith("sched-"):
            dom = self._domain(args[args.index("-d") + 1])
            if sub != f"sched-{dom.scheduler}":
                raise ValueError("scheduler mismatch")
            dom.cap = int(args[args.index("-c") + 1])
        elif sub == "vcpu-pin":
            dom = self._domain(args[1])
            if args[2] == "all":
                dom.affinity = [args[3]] * dom.vcpus
            else:
                dom.affinity[int(args[2])] = args[3]
        elif sub == "pause":
            self._domain(args[1]).pauses += 1
        elif sub == "unpause":
            dom = self._domain(args[1])
            if dom.pauses > 0:  # xl exits 0 either way
                dom.pauses -= 1
        else:
            raise ValueError(f"xl {sub}")

    def _ip(self, args: list[str]) -> None:
        if args[:2] == ["link", "add"]:
            if args[2] in self.links:
                raise ValueError("File exists")
            self.links[args[2]] = FakeLink()
        elif args[:3] == ["link", "set", "dev"]:
            self.links[args[3]].up = True
        elif args[:3] == ["link", "del", "dev"]:
            del self.links[args[3]]
        else:
            raise ValueError(f"ip {args}")

    def _tc(self, args: list[str]) -> None:
        obj, verb, _dev, name = args[:4]
        link = self.links[name]
        if obj == "qdisc" and verb == "replace" and args[-1] == "htb":
            handle = args[args.index("handle") + 1]
            if link.root is not None and link.root.handle == handle and link.root.kind != "htb":
                raise ValueError("Invalid qdisc name: must match existing qdisc")
            if link.root is None or link.root.kind != "htb":
                link.root = Qdisc("htb", handle, True)
        elif obj == "qdisc" and verb == "replace":
            rate = int(args[args.index("rate") + 1].removesuffix("bit"))
            burst = int(args[args.index("burst") + 1].removesuffix("b"))
            link.root = Qdisc("tbf", args[args.index("handle") + 1], True, rate, burst)
        elif obj == "qdisc" and verb == "add" and args[4] == "ingress":
            if link.ingress:
                raise ValueError("Exclusivity flag on, cannot modify")
            link.ingress = True
        elif obj == "qdisc" and verb == "del" and args[4] == "ingress":
            link.ingress = False
            link.redirects = []
        elif obj == "qdisc" and verb == "del" and args[4] == "root":
            link.root = Qdisc("noqueue", "0:", True)
            link.egress_redirects = []
        elif obj == "filter" and args[args.index("parent") + 1] != "ffff:":
            if link.root is None or link.root.kind != "htb":
                raise ValueError("Class doesn't support blocks")
            prio = int(args[args.index("prio") + 1])
            if verb == "add":
                link.egress_redirects.append(Redirect(prio, args[-1]))
            else:
                link.egress_redirects = [r for r in link.egress_redirects if r.pref != prio]
        elif obj == "filter" and verb == "add":
            if not link.ingress:
                raise ValueError("no ingress qdisc")
            link.redirects.append(Redirect(int(args[args.index("prio") + 1]), args[-1]))
        elif obj == "filter" and verb == "del":
            prio = int(args[args.index("prio") + 1])
            link.redirects = [r for r in link.redirects if r.pref != prio]
        else:
            raise ValueError(f"tc {args}")

    # -- what tests look at -------------------------------------------------------------------

    def mutations(self) -> list[tuple[str, ...]]:
        return list(self.calls)

    def shaped(self, name: str) -> bool:
        """Is every vif of the domain redirected to the domain's tbf'd ifb?"""
        dom = self.domains[name]
        ifb = ifb_name(dom.domid)
        for vif, _devid, _emu in dom.vif_names():
            link = self.links[vif]
            if not link.ingress or [r.to_dev for r in link.redirects] != [ifb]:
                return False
            if ifb not in self.links or self.links[ifb].root is None:
                return False
            if FILTER_PREF not in [r.pref for r in link.redirects]:
                return False
        return True

    def clean(self, name: str) -> bool:
        """No trace of any throttle on the domain or in Dom0."""
        dom = self.domains.get(name)
        if dom is None:
            return True
        ours = (ifb_name(dom.domid), receive_ifb_name(dom.domid))
        if any(n in ours or is_per_vif_ifb(n, dom.domid) for n in self.links):
            return False
        for vif, _devid, _emu in dom.vif_names():
            link = self.links[vif]
            if link.ingress or link.redirects or (link.root and link.root.kind != "noqueue"):
                return False
        return dom.cap == 0 and dom.pauses == 0 and set(dom.affinity) == {"all"}
