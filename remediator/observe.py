"""Reading the host: which domains run, their caps, affinity and pauses, and our tc state.

Interface names come from Dom0's sysfs (`xentools.sysfs.list_vifs`), never from a label. tc and
ip are read as JSON through the runner. Everything the toolstack knows comes through a
`Toolstack` (the shared xl module in production, a fake in unit tests).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from remediator.host import (
    IFB_PREFIX,
    HostState,
    LinkState,
    ObservedDomain,
    Redirect,
    VifState,
    ifb_name,
    parse_ingress_filters,
    parse_links,
    parse_qdiscs,
)
from remediator.plan import Command, Tools
from remediator.runner import Runner
from xentools.sysfs import Vif

log = logging.getLogger(__name__)


class ObserveError(Exception):
    """The host could not be read; acting blind would be unsafe, so the action waits."""


@dataclass(frozen=True)
class ToolstackDomain:
    name: str
    domid: int
    paused: bool
    vcpus: int
    uuid: str | None = None  # survives a reboot; tells a reboot from a new domain of that name


class Toolstack(Protocol):
    def domains(self) -> list[ToolstackDomain]: ...

    def scheduler(self, domid: int) -> str: ...

    def cap(self, domid: int, scheduler: str) -> int: ...

    def hard_affinity(self, domid: int) -> list[str]: ...


class HostReader(Protocol):
    def observe(self, names: Iterable[str], kinds: Iterable[str]) -> HostState: ...


class HostObserver:
    """Builds a HostState for the named domains, reading only what the action kinds need."""

    def __init__(
        self,
        toolstack: Toolstack,
        runner: Runner,
        tools: Tools,
        list_vifs: Callable[[], list[Vif]],
    ) -> None:
        self._toolstack = toolstack
        self._runner = runner
        self._tools = tools
        self._list_vifs = list_vifs

    def _read(self, *argv: str) -> str:
        result = self._runner.run(Command(argv=argv, timeout=self._tools.timeout))
        if not result.ok:
            raise ObserveError(result.describe())
        return result.stdout

    def _link(self, name: str, links: dict[str, bool], ingress_filters: bool) -> LinkState:
        if name not in links:
            return LinkState(name=name, exists=False, up=False)
        qdiscs = parse_qdiscs(self._read(self._tools.tc, "-j", "qdisc", "show", "dev", name))
        redirects: tuple[Redirect, ...] = ()
        others: tuple[int, ...] = ()
        if ingress_filters and any(q.kind == "ingress" for q in qdiscs):
            redirects, others = parse_ingress_filters(
                self._read(self._tools.tc, "-j", "filter", "show", "dev", name, "parent", "ffff:")
            )
        return LinkState(
            name=name, up=links[name], qdiscs=qdiscs, redirects=redirects, other_filters=others
        )

    def observe(self, names: Iterable[str], kinds: Iterable[str]) -> HostState:
        wanted = set(names)
        needs = set(kinds)
        try:
            running = {d.name: d for d in self._toolstack.domains() if d.name in wanted}
            links = parse_links(self._read(self._tools.ip, "-j", "link", "show"))
            our_ifbs = tuple(sorted(n for n in links if n.startswith(IFB_PREFIX)))
            vifs = self._list_vifs() if "network_shape" in needs else []
            states = {}
            for name, dom in running.items():
                scheduler = cap = None
                affinity: tuple[str, ...] = ()
                if "cpu_cap" in needs:
                    scheduler = self._toolstack.scheduler(dom.domid)
                    cap = self._toolstack.cap(dom.domid, scheduler)
                if "cpu_pin" in needs:
                    affinity = tuple(self._toolstack.hard_affinity(dom.domid))
                vif_states = tuple(
                    VifState(
                        name=vif.name,
                        devid=vif.devid,
                        emulated=vif.emulated,
                        link=self._link(vif.name, links, ingress_filters=True),
                        ifb=self._link(ifb_name(dom.domid, vif.devid, vif.emulated), links, False),
                    )
                    for vif in vifs
                    if vif.domid == dom.domid
                )
                states[name] = ObservedDomain(
                    name=name,
                    domid=dom.domid,
                    paused=dom.paused,
                    vcpus=dom.vcpus,
                    uuid=dom.uuid,
                    scheduler=scheduler,
                    cap=cap,
                    hard_affinity=affinity,
                    vifs=vif_states,
                )
        except (OSError, ValueError, KeyError) as error:
            raise ObserveError(f"reading the host failed: {error}") from error
        return HostState(domains=states, our_ifbs=our_ifbs)
