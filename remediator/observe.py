"""Reading the host: which domains run, their caps, affinity and pauses, and our tc state.

Interface names come from Dom0's sysfs (`xentools.sysfs.list_vifs`), never from a label. tc and
ip are read as JSON through the runner. Everything the toolstack knows comes through a
`Toolstack` (the shared xl module in production, a fake in unit tests).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Protocol

from remediator.host import (
    IFB_PREFIX,
    INGRESS_HANDLE,
    QDISC_HANDLE,
    HostState,
    LinkState,
    ObservedDomain,
    VifState,
    ifb_name,
    is_per_vif_ifb,
    parse_ingress_filters,
    parse_links,
    parse_qdiscs,
    parse_qdiscs_by_dev,
    receive_ifb_name,
    split_json_lists,
)
from remediator.plan import Command, Tools
from remediator.runner import Result, Runner, batch_word
from xentools.sysfs import Vif

log = logging.getLogger(__name__)


class ObserveError(Exception):
    """The host could not be read; acting blind would be unsafe, so the action waits."""


@dataclass(frozen=True)
class ToolstackDomain:
    name: str
    domid: int
    # None: not known from the listing (a KVM VM's run state is QEMU's, asked over QMP only
    # when a pause needs it: `Toolstack.paused`).
    paused: bool | None
    vcpus: int
    uuid: str | None = None  # survives a reboot; tells a reboot from a new domain of that name


class Toolstack(Protocol):
    def domains(self) -> list[ToolstackDomain]: ...

    def scheduler(self, domid: int) -> str: ...

    def cap(self, domid: int, scheduler: str) -> int: ...

    def hard_affinity(self, domid: int) -> list[str]: ...

    def paused(self, domid: int) -> bool:
        """The run state `domains` left unknown; ObserveError when it cannot be told."""
        ...


class HostReader(Protocol):
    def observe(self, names: Iterable[str], kinds: Iterable[str]) -> HostState: ...


# Up to this many devices, a read asks tc for each one's qdiscs (`qdisc show dev X`, a
# fraction of a millisecond each); beyond, for every device's in one dump (a few
# milliseconds whatever their number: the kernel walks every device for either).
PER_DEVICE_QDISC_READS = 8

# Dom0's interfaces by name, and whether each of those asked about is up
# (`xentools.sysfs.read_links`).
LinkReader = Callable[[Iterable[str]], tuple[frozenset[str], dict[str, bool]]]


class HostObserver:
    """Builds a HostState for the named domains, reading only what the action kinds need."""

    def __init__(
        self,
        toolstack: Toolstack,
        runner: Runner,
        tools: Tools,
        list_vifs: Callable[[], list[Vif]],
        read_links: LinkReader | None = None,
    ) -> None:
        """`read_links`: Dom0's interfaces, and whether those asked about are up, read
        in-process (sysfs); None: `ip -j link show`, a process per read."""
        self._toolstack = toolstack
        self._runner = runner
        self._tools = tools
        self._list_vifs = list_vifs
        self._read_links = read_links

    def _links(self, wanted: Iterable[str]) -> tuple[frozenset[str], dict[str, bool]]:
        if self._read_links is not None:
            return self._read_links(wanted)
        every = parse_links(self._read(self._tools.ip, "-j", "link", "show"))
        return frozenset(every), {name: every[name] for name in wanted if name in every}

    def _read(self, *argv: str, stdin: str | None = None) -> str:
        result = self._runner.run(Command(argv=argv, timeout=self._tools.timeout, stdin=stdin))
        if not result.ok:
            raise ObserveError(result.describe())
        return result.stdout

    def _tc_state(
        self,
        links: dict[str, bool],
        devices: list[str],
        vifs: set[str],
        first: Command | None = None,
        ran: list[Result] | None = None,
    ) -> dict[str, LinkState]:
        """The tc state of every device asked about in one `tc -j -batch -` whatever their
        number: the qdiscs (of each existing device when they are few, else of every device:
        one dump, `PER_DEVICE_QDISC_READS`), then each existing vif's ingress filters (none
        where it has no ingress qdisc); tc prints one JSON list per line, in order. `first`: a
        plan's `tc -batch -` whose lines run before the reads, in the same process (they print
        nothing); its result is appended to `ran`."""
        existing = [d for d in devices if d in links]
        shown = [d for d in existing if d in vifs]
        if not all(batch_word(d) for d in existing):
            raise ObserveError(f"an interface name unfit for a tc -batch line in {existing}")
        one_by_one = len(existing) <= PER_DEVICE_QDISC_READS
        qdisc_lines = (
            [f"qdisc show dev {d}\n" for d in existing] if one_by_one else ["qdisc show\n"]
        )
        # Per vif: its ingress filters, then those on our root qdisc (none when it is not ours).
        lines = "".join(qdisc_lines) + "".join(
            f"filter show dev {d} parent {parent}\n"
            for d in shown
            for parent in (INGRESS_HANDLE, QDISC_HANDLE)
        )
        argv = (self._tools.tc, "-j", "-batch", "-")
        if first is None:
            text = self._read(*argv, stdin=lines) if lines else ""
        else:
            result = self._runner.run(
                Command(
                    argv=argv,
                    timeout=first.timeout + self._tools.timeout,
                    stdin=(first.stdin or "") + lines,
                )
            )
            if ran is not None:
                ran.append(result)
            if not result.ok:
                raise _FirstFailed(result)
            text = result.stdout
        outputs = split_json_lists(text)
        asked = len(qdisc_lines) + 2 * len(shown)
        if len(outputs) != asked:
            raise ObserveError(f"tc -batch printed {len(outputs)} answers to {asked}")
        qdisc_outputs, filter_outputs = outputs[: len(qdisc_lines)], outputs[len(qdisc_lines) :]
        if one_by_one:
            qdiscs = {
                d: parse_qdiscs(text) for d, text in zip(existing, qdisc_outputs, strict=True)
            }
        else:
            qdiscs = parse_qdiscs_by_dev(qdisc_outputs[0])
        filters = {
            d: parse_ingress_filters(text)
            for d, text in zip(shown, filter_outputs[0::2], strict=True)
        }
        egress = {
            d: parse_ingress_filters(text)[0]
            for d, text in zip(shown, filter_outputs[1::2], strict=True)
        }
        return {
            d: LinkState(
                name=d,
                up=links[d],
                qdiscs=qdiscs.get(d, ()),
                redirects=filters.get(d, ((), ()))[0],
                other_filters=filters.get(d, ((), ()))[1],
                egress_redirects=egress.get(d, ()),
            )
            if d in links
            else LinkState(name=d, exists=False, up=False)
            for d in devices
        }

    def observe(self, names: Iterable[str], kinds: Iterable[str]) -> HostState:
        return self._observe(names, kinds)

    def observe_after(
        self, names: Iterable[str], kinds: Iterable[str], command: Command
    ) -> tuple[Result, HostState | None]:
        """Run `command`, a plan's `tc -batch -`, with `observe`'s tc reads appended to its
        lines: the check after applying costs no process of its own. The state is None when
        the command failed (tc stops at its first failing line, before the reads) or the host
        could not be read after it."""
        ran: list[Result] = []
        try:
            state: HostState | None = self._observe(names, kinds, command, ran)
        except _FirstFailed:
            state = None
        except ObserveError as error:
            log.warning("reading the host with %s failed: %s", command.argv, error)
            state = None
        if not ran:  # failed before it, or no vif to read: the command runs alone
            return self._runner.run(command), state
        return replace(ran[0], argv=command.argv), state

    def _observe(
        self,
        names: Iterable[str],
        kinds: Iterable[str],
        first: Command | None = None,
        ran: list[Result] | None = None,
    ) -> HostState:
        wanted = set(names)
        needs = set(kinds)
        try:
            running = {d.name: d for d in self._toolstack.domains() if d.name in wanted}
            network = "network_shape" in needs
            vifs = self._list_vifs() if network else []
            theirs = [vif for vif in vifs if any(vif.domid == d.domid for d in running.values())]
            # Every vif of the domains asked about, and each domain's one ifb.
            devices = [vif.name for vif in theirs]
            devices += [ifb_name(dom.domid) for dom in running.values()]
            devices += [receive_ifb_name(dom.domid) for dom in running.values()]
            link_names, links = self._links(devices if network else ())
            our_ifbs = tuple(sorted(n for n in link_names if n.startswith(IFB_PREFIX)))
            tc: dict[str, LinkState] = {}
            if network and running:
                tc = self._tc_state(links, devices, {vif.name for vif in theirs}, first, ran)
            states = {}
            for name, dom in running.items():
                paused = dom.paused
                if paused is None and "pause" in needs:
                    paused = self._paused(dom)
                scheduler = cap = None
                affinity: tuple[str, ...] = ()
                if "cpu_cap" in needs:
                    scheduler = self._toolstack.scheduler(dom.domid)
                    cap = self._toolstack.cap(dom.domid, scheduler)
                if "cpu_pin" in needs:
                    affinity = tuple(self._toolstack.hard_affinity(dom.domid))
                vif_states = tuple(
                    VifState(
                        name=vif.name, devid=vif.devid, emulated=vif.emulated, link=tc[vif.name]
                    )
                    for vif in theirs
                    if vif.domid == dom.domid
                )
                states[name] = ObservedDomain(
                    name=name,
                    domid=dom.domid,
                    paused=paused,
                    vcpus=dom.vcpus,
                    uuid=dom.uuid,
                    scheduler=scheduler,
                    cap=cap,
                    hard_affinity=affinity,
                    vifs=vif_states,
                    ifb=tc.get(ifb_name(dom.domid)),
                    rx_ifb=tc.get(receive_ifb_name(dom.domid)),
                    old_ifbs=tuple(n for n in our_ifbs if is_per_vif_ifb(n, dom.domid))
                    if network
                    else (),
                )
        except (OSError, ValueError, KeyError) as error:
            raise ObserveError(f"reading the host failed: {error}") from error
        return HostState(domains=states, our_ifbs=our_ifbs)

    def _paused(self, dom: ToolstackDomain) -> bool | None:
        # Unknown for one domain only: the other domains of the read (a reconcile reads every
        # live throttle's) are still known; the pause of this one waits (`Engine._observe`).
        try:
            return self._toolstack.paused(dom.domid)
        except ObserveError as error:
            log.warning("the run state of %s (%d) is unknown: %s", dom.name, dom.domid, error)
            return None


class _FirstFailed(Exception):
    def __init__(self, result: Result) -> None:
        super().__init__(result.describe())
        self.result = result


class SharedReads:
    """One host read for every action that asks at about the same time.

    A caller's answer comes from a read that started after it asked (never an older one): the
    first caller reads for everyone waiting then; those who ask during that read are served,
    all together, by the next. The answer covers the union of what they asked (a domain or
    kind more does no harm to a caller: it looks up its own). With N workers acting on N
    domains, the host is read once per round instead of N times.
    """

    def __init__(self, reader: HostObserver) -> None:
        self._reader = reader
        self._cond = threading.Condition()
        self._reading = False
        self._waiting: list[_Ask] = []

    def observe(self, names: Iterable[str], kinds: Iterable[str]) -> HostState:
        ask = _Ask(frozenset(names), frozenset(kinds))
        with self._cond:
            self._waiting.append(ask)
            while self._reading and not ask.done:
                self._cond.wait()
            if not ask.done:
                batch, self._waiting = self._waiting, []
                self._reading = True
        if not ask.done:
            state: HostState | None = None
            error: ObserveError | None = None
            try:
                state = self._reader.observe(
                    set().union(*(a.names for a in batch)), set().union(*(a.kinds for a in batch))
                )
            except ObserveError as failure:
                error = failure
            finally:
                with self._cond:
                    for waiting in batch:
                        waiting.state, waiting.error = state, error
                        waiting.done = True
                    self._reading = False
                    self._cond.notify_all()
        if ask.error is not None:
            raise ask.error
        if ask.state is None:  # the read died of something else; that caller saw it
            raise ObserveError("the shared host read failed")
        return ask.state

    def observe_after(
        self, names: Iterable[str], kinds: Iterable[str], command: Command
    ) -> tuple[Result, HostState | None]:
        """`HostObserver.observe_after`, not shared: it changes the host before reading."""
        return self._reader.observe_after(names, kinds, command)


@dataclass
class _Ask:
    names: frozenset[str]
    kinds: frozenset[str]
    done: bool = False
    state: HostState | None = None
    error: ObserveError | None = None
