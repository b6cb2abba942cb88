"""Decide, then do: pure plans from (action, observed domain state) to argv lists.

Every plan only emits the steps the observed state is missing, so applying twice, or finishing a
half-done apply after a crash, is the same call. `is_applied` / `is_released` are the checks the
engine runs on a fresh observation after executing a plan. Nothing here runs a command.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from remediator.alerts import Action
from remediator.config import OperatorCommand
from remediator.host import (
    FILTER_PREF,
    QDISC_HANDLE,
    LinkState,
    ObservedDomain,
    ifb_name,
    receive_ifb_name,
)
from remediator.units import format_cpu_list
from xentools.cpulist import is_cpulist
from xentools.xl import pause_argv, set_cap_argv, unpause_argv, vcpu_pin_argv

# Root qdiscs the kernel installs by itself; anything else on a vif is an operator's and we
# refuse to replace it.
DEFAULT_ROOT_KINDS = frozenset({"noqueue", "pfifo_fast", "mq", "fq_codel", "pfifo", "fq"})


class PlanError(Exception):
    """The action cannot be planned safely on this host; `reason` is a metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class Command:
    argv: tuple[str, ...]
    timeout: float
    env: Mapping[str, str] = field(default_factory=dict)
    stdin: str | None = None  # `tc -batch -` / `ip -batch -` lines, built from argv lists


class DomainControl(Protocol):
    """The argv of the commands that change a domain's CPU share, affinity or run state: the
    one place a plan differs between platforms (shaping is the same tc chain on a Xen vif and
    a KVM tap). Each raises PlanError for a domain the platform cannot act on."""

    @property
    def counts_pauses(self) -> bool:
        """Xen counts pauses (one unpause per pause); QEMU's stop/cont do not: a VM someone
        else paused must not be continued by our release."""
        ...

    def check_cap(self, dom: ObservedDomain) -> None: ...

    def set_cap(self, dom: ObservedDomain, cap: int) -> tuple[str, ...]: ...

    def pause(self, dom: ObservedDomain) -> tuple[str, ...]: ...

    def unpause(self, dom: ObservedDomain) -> tuple[str, ...]: ...

    def pin(self, dom: ObservedDomain, vcpu: int | str, cpus: str) -> tuple[str, ...]: ...


@dataclass(frozen=True)
class XlControl:
    """Xen: `xl`, by domid (`xentools.xl` builds the argv)."""

    xl: str = "xl"
    counts_pauses: bool = True

    def check_cap(self, dom: ObservedDomain) -> None:
        if dom.scheduler not in ("credit", "credit2"):
            raise PlanError("unsupported_scheduler", f"scheduler {dom.scheduler!r} has no cap")

    def set_cap(self, dom: ObservedDomain, cap: int) -> tuple[str, ...]:
        self.check_cap(dom)
        assert dom.scheduler is not None
        return set_cap_argv(self.xl, dom.scheduler, str(dom.domid), cap)

    def pause(self, dom: ObservedDomain) -> tuple[str, ...]:
        return pause_argv(self.xl, str(dom.domid))

    def unpause(self, dom: ObservedDomain) -> tuple[str, ...]:
        return unpause_argv(self.xl, str(dom.domid))

    def pin(self, dom: ObservedDomain, vcpu: int | str, cpus: str) -> tuple[str, ...]:
        return vcpu_pin_argv(self.xl, str(dom.domid), vcpu, cpus)


# The scheduler a KVM toolstack reports for a VM whose own cgroup has CPU bandwidth control.
KVM_CGROUP_SCHEDULER = "cgroup"


@dataclass(frozen=True)
class KvmctlControl:
    """KVM: `judicator-kvmctl`, by QEMU pid AND name: kvmctl refuses a pid that is no longer
    that VM when it runs (the pid may have been reused since the host was read)."""

    kvmctl: str = "judicator-kvmctl"
    counts_pauses: bool = False

    def _target(self, verb: str, dom: ObservedDomain) -> tuple[str, ...]:
        return (self.kvmctl, verb, "--pid", str(dom.domid), "--name", dom.name)

    def check_cap(self, dom: ObservedDomain) -> None:
        if dom.scheduler != KVM_CGROUP_SCHEDULER:
            raise PlanError(
                "unsupported_scheduler",
                f"VM {dom.name!r} has no cgroup of its own with the cpu controller",
            )

    def set_cap(self, dom: ObservedDomain, cap: int) -> tuple[str, ...]:
        self.check_cap(dom)
        if cap < 0:
            raise ValueError(f"CPU cap must be >= 0, not {cap}")
        return (*self._target("cap", dom), str(cap))

    def pause(self, dom: ObservedDomain) -> tuple[str, ...]:
        return self._target("pause", dom)

    def unpause(self, dom: ObservedDomain) -> tuple[str, ...]:
        return self._target("unpause", dom)

    def pin(self, dom: ObservedDomain, vcpu: int | str, cpus: str) -> tuple[str, ...]:
        return (*self._target("pin", dom), "--vcpu", str(vcpu), cpus)


@dataclass(frozen=True)
class Tools:
    xl: str = "xl"
    tc: str = "tc"
    ip: str = "ip"
    timeout: float = 5.0
    latency_ms: int = 50
    commands: Mapping[str, OperatorCommand] = field(default_factory=dict)
    # None: Xen's, with `xl` above.
    control: DomainControl | None = None

    @property
    def domain_control(self) -> DomainControl:
        return self.control if self.control is not None else XlControl(self.xl)

    def cmd(self, *argv: str) -> Command:
        return Command(argv=argv, timeout=self.timeout)

    def argv(self, argv: tuple[str, ...]) -> Command:
        return Command(argv=argv, timeout=self.timeout)


def strictest(current: Action, new: Action) -> Action:
    """The throttle that satisfies both alerts: the lower cap, the lower rate (same kind)."""
    if current.kind != new.kind:
        return current
    if current.kind == "cpu_cap" and int(new.params["cap"]) < int(current.params["cap"]):
        return new
    if current.kind == "network_shape":
        params = dict(current.params)
        if int(new.params["rate_bps"]) < int(params["rate_bps"]):
            params["rate_bps"] = int(new.params["rate_bps"])
            params["burst_bytes"] = int(new.params["burst_bytes"])
        if params["direction"] != new.params["direction"]:
            params["direction"] = "both"
        if params != dict(current.params):
            return Action(kind=current.kind, params=params)
    return current


def _refuse_dom0(dom: ObservedDomain) -> None:
    # Domain 0 is Dom0 whatever it is called: never ours to throttle.
    if dom.domid == 0:
        raise PlanError("protected_domain", f"domain {dom.name!r} is domid 0 (Dom0)")


def capture_prior(
    action: Action, dom: ObservedDomain, tools: Tools | None = None
) -> dict[str, Any]:
    """What the release must restore, read before the first apply step runs."""
    _refuse_dom0(dom)
    if action.kind == "network_shape":
        # An ingress qdisc that was there before us is the operator's: the release keeps it.
        return {"ingress_before": sorted(v.name for v in dom.vifs if v.link.has_ingress)}
    if action.kind == "cpu_cap":
        if dom.cap is None or dom.scheduler is None:
            raise PlanError("host_state", "the domain's current cap could not be read")
        return {"cap": dom.cap, "scheduler": dom.scheduler}
    if action.kind == "cpu_pin":
        if not dom.hard_affinity or not all(is_cpulist(a) for a in dom.hard_affinity):
            raise PlanError("host_state", "the domain's vCPU affinity could not be read")
        return {"hard_affinity": list(dom.hard_affinity)}
    if action.kind == "pause":
        control = (tools or Tools()).domain_control
        if not control.counts_pauses and dom.paused:
            # Paused by someone else: nothing for us to do, and our release must not resume it.
            return {"pauses": 0, "paused_before": 1}
        return {"pauses": 0}
    return {}


def plan_apply(
    action: Action, dom: ObservedDomain, prior: Mapping[str, Any], tools: Tools
) -> list[Command]:
    """The commands that bring `dom` to the throttled state; [] when it already is."""
    _refuse_dom0(dom)
    params = action.params
    if action.kind == "network_shape":
        return _plan_shape(params, dom, tools)
    control = tools.domain_control
    if action.kind == "cpu_cap":
        control.check_cap(dom)
        cap = cap_target(params, prior)
        if cap > 100 * dom.vcpus:
            raise PlanError("bad_parameter", f"cap {cap} above 100 x {dom.vcpus} vCPUs")
        if dom.cap is not None and 0 < dom.cap <= cap:
            return []  # as strict or stricter (someone tightened it further): leave it
        return [tools.argv(control.set_cap(dom, cap))]
    if action.kind == "cpu_pin":
        target = format_cpu_list(frozenset(int(c) for c in params["cpus"]))
        if dom.hard_affinity and all(a == target for a in dom.hard_affinity):
            return []
        return [tools.argv(control.pin(dom, "all", target))]
    if action.kind == "pause":
        # xl refcounts pauses: we issue exactly one, whatever else paused the domain. QEMU
        # does not: a VM paused before us is left to whoever paused it (`capture_prior`).
        if int(prior.get("pauses", 0)) > 0 or prior.get("paused_before"):
            return []
        return [tools.argv(control.pause(dom))]
    if action.kind == "command":
        command = _operator_command(params, tools)
        return [_operator_run(command, command.apply, dom, "apply")]
    raise PlanError("unknown_action", f"no plan for {action.kind!r}")


def plan_release(
    action: Action, dom: ObservedDomain, prior: Mapping[str, Any], tools: Tools
) -> list[Command]:
    """The commands that undo the throttle on `dom`; [] when nothing of it is left."""
    _refuse_dom0(dom)
    if action.kind == "network_shape":
        return _plan_unshape(dom, prior, tools)
    control = tools.domain_control
    if action.kind == "cpu_cap":
        control.check_cap(dom)
        previous = int(prior["cap"])
        if dom.cap == previous or dom.cap != cap_target(action.params, prior):
            return []  # back where it was, or changed by someone else since: theirs now
        return [tools.argv(control.set_cap(dom, previous))]
    if action.kind == "cpu_pin":
        affinity = [str(a) for a in prior["hard_affinity"]]
        commands = []
        for vcpu, now in enumerate(dom.hard_affinity):
            if vcpu < len(affinity) and now != affinity[vcpu]:
                if not is_cpulist(affinity[vcpu]):
                    raise PlanError("host_state", f"recorded affinity {affinity[vcpu]!r}")
                commands.append(tools.argv(control.pin(dom, vcpu, affinity[vcpu])))
        return commands
    if action.kind == "pause":
        unpause = tools.argv(control.unpause(dom))
        return [unpause] * int(prior.get("pauses", 0))
    if action.kind == "command":
        command = _operator_command(action.params, tools)
        if command.release is None:
            return []
        return [_operator_run(command, command.release, dom, "release")]
    raise PlanError("unknown_action", f"no plan for {action.kind!r}")


def is_applied(action: Action, dom: ObservedDomain, prior: Mapping[str, Any], tools: Tools) -> bool:
    """Does the observed state carry the throttle? (Operator commands cannot be checked.)"""
    if action.kind == "pause":
        return dom.paused is True
    if action.kind == "command":
        return True
    return not plan_apply(action, dom, prior, tools)


def is_released(
    action: Action, dom: ObservedDomain, prior: Mapping[str, Any], tools: Tools
) -> bool:
    if action.kind == "pause":
        return int(prior.get("pauses", 0)) == 0
    if action.kind == "command":
        return True
    return not plan_release(action, dom, prior, tools)


def cap_target(params: Mapping[str, Any], prior: Mapping[str, Any]) -> int:
    """The strictest of the alert's cap and the cap the domain had (0 means uncapped)."""
    cap = int(params["cap"])
    before = int(prior.get("cap", 0) or 0)
    return min(cap, before) if before > 0 else cap


def _operator_command(params: Mapping[str, Any], tools: Tools) -> OperatorCommand:
    name = str(params["command"])
    if name not in tools.commands:
        raise PlanError("unknown_command", f"command {name!r} is no longer configured")
    return tools.commands[name]


def _operator_run(
    command: OperatorCommand, argv: tuple[str, ...], dom: ObservedDomain, phase: str
) -> Command:
    # Validated values only, as environment: the domain name matched our pattern and exists
    # now, the domid and interface names come from the host.
    env = {
        "JUDICATOR_PHASE": phase,
        "JUDICATOR_COMMAND": command.name,
        "JUDICATOR_DOMAIN": dom.name,
        "JUDICATOR_DOMID": str(dom.domid),
        "JUDICATOR_VIFS": " ".join(v.name for v in dom.vifs),
    }
    return Command(argv=argv, timeout=command.timeout_seconds, env=env)


def _tbf(tools: Tools, dev: str, params: Mapping[str, Any]) -> Command:
    return tools.cmd(
        tools.tc,
        "qdisc",
        "replace",
        "dev",
        dev,
        "root",
        "handle",
        QDISC_HANDLE,
        "tbf",
        "rate",
        f"{int(params['rate_bps'])}bit",
        "burst",
        f"{int(params['burst_bytes'])}b",
        "latency",
        f"{tools.latency_ms}ms",
    )


def _tbf_matches(link: LinkState, params: Mapping[str, Any]) -> bool:
    root = link.root
    if root is None or root.kind != "tbf" or root.handle != QDISC_HANDLE:
        return False
    want_rate = int(params["rate_bps"])
    want_burst = int(params["burst_bytes"])
    # tc stores the rate in bytes/s and the burst as a time at that rate: allow its rounding.
    return (
        root.rate_bps is not None
        and abs(root.rate_bps - want_rate) <= max(8, want_rate // 100)
        and root.burst_bytes is not None
        and abs(root.burst_bytes - want_burst) <= max(64, want_burst // 50)
    )


def _plan_shape(params: Mapping[str, Any], dom: ObservedDomain, tools: Tools) -> list[Command]:
    if not dom.vifs:
        raise PlanError("no_interfaces", f"domain {dom.name} has no vif in this Dom0")
    direction = params["direction"]
    commands: list[Command] = []
    if direction in ("send", "both"):
        commands += _plan_shape_send(params, dom, tools)
    if direction in ("receive", "both"):
        commands += _plan_shape_receive(params, dom, tools)

    # One `ip -batch` and one `tc -batch` in a round, both directions together: every ifb made
    # and up first, then every tc change, then the per-vif ifbs of an older remediator deleted
    # (each direction's own order kept within a phase).
    def phase(command: Command) -> int:
        if command.argv[0] != tools.ip:
            return 1
        return 2 if command.argv[1:3] == ("link", "del") else 0

    return sorted(commands, key=phase)


def _ifb_up(
    tools: Tools, ifb: str, link: LinkState | None, params: Mapping[str, Any]
) -> list[Command]:
    """The commands that make `ifb` exist, up, with our tbf at the domain's rate."""
    link = link if link is not None else LinkState(ifb, exists=False, up=False)
    commands: list[Command] = []
    if not link.exists:
        commands.append(tools.cmd(tools.ip, "link", "add", ifb, "type", "ifb"))
    if not (link.exists and link.up):
        commands.append(tools.cmd(tools.ip, "link", "set", "dev", ifb, "up"))
    if not _tbf_matches(link, params):
        commands.append(_tbf(tools, ifb, params))
    return commands


def _redirect(tools: Tools, vif: str, parent: str, ifb: str) -> Command:
    return tools.cmd(
        tools.tc, "filter", "add", "dev", vif, "parent", parent, "protocol", "all",
        "prio", str(FILTER_PREF), "u32", "match", "u32", "0", "0",
        "action", "mirred", "egress", "redirect", "dev", ifb,
    )  # fmt: skip


def _plan_shape_receive(
    params: Mapping[str, Any], dom: ObservedDomain, tools: Tools
) -> list[Command]:
    """Per domain: a second ifb (`jifb<domid>r`) with one tbf, and every vif's egress (what Dom0
    sends into the guest) redirected to it by a filter on an htb we put at the vif's root (its
    default class is none: what the ifb sends back leaves unclassified, unshaped), so that the
    domain's vifs share its rate. A vif that carries an older remediator's per-vif tbf (`d1c:`
    too) has it deleted first: tc cannot replace a qdisc by one of another kind."""
    ifb = receive_ifb_name(dom.domid)
    commands = _ifb_up(tools, ifb, dom.rx_ifb, params)
    for vif in dom.vifs:
        root = vif.link.root
        if root is not None and root.handle != QDISC_HANDLE and root.kind not in DEFAULT_ROOT_KINDS:
            raise PlanError("foreign_tc", f"{vif.name} has an operator's {root.kind}")
        ours = root is not None and root.handle == QDISC_HANDLE
        if ours and root is not None and root.kind != "htb":
            commands.append(tools.cmd(tools.tc, "qdisc", "del", "dev", vif.name, "root"))
            ours = False
        if not ours:
            commands.append(
                tools.cmd(
                    tools.tc,
                    "qdisc",
                    "replace",
                    "dev",
                    vif.name,
                    "root",
                    "handle",
                    QDISC_HANDLE,
                    "htb",
                )
            )
            commands.append(_redirect(tools, vif.name, QDISC_HANDLE, ifb))
            continue
        redirects = [r for r in vif.link.egress_redirects if r.pref == FILTER_PREF]
        if [r.to_dev for r in redirects] == [ifb]:
            continue
        if redirects:
            commands.append(
                tools.cmd(
                    tools.tc,
                    "filter",
                    "del",
                    "dev",
                    vif.name,
                    "parent",
                    QDISC_HANDLE,
                    "prio",
                    str(FILTER_PREF),
                )
            )
        commands.append(_redirect(tools, vif.name, QDISC_HANDLE, ifb))
    return commands


def _plan_shape_send(params: Mapping[str, Any], dom: ObservedDomain, tools: Tools) -> list[Command]:
    """Per domain: one ifb (`jifb<domid>`) with one tbf, and every vif's ingress redirected to
    it, so that the domain's vifs share its rate (N vifs do not get N times it)."""
    for vif in dom.vifs:
        if any(r.pref != FILTER_PREF for r in vif.link.redirects):
            raise PlanError("foreign_tc", f"{vif.name} has an operator's ingress redirect")
    ifb = ifb_name(dom.domid)
    commands = _ifb_up(tools, ifb, dom.ifb, params)
    for vif in dom.vifs:
        if not vif.link.has_ingress:
            commands.append(tools.cmd(tools.tc, "qdisc", "add", "dev", vif.name, "ingress"))
        ours = [r for r in vif.link.redirects if r.pref == FILTER_PREF]
        if [r.to_dev for r in ours] == [ifb]:
            continue
        if ours:
            commands.append(_delete_our_filter(vif.name, tools))
        commands.append(_redirect(tools, vif.name, "ffff:", ifb))
    # Per-vif ifbs of an older remediator: the redirects above no longer point there.
    commands += [tools.cmd(tools.ip, "link", "del", "dev", old) for old in dom.old_ifbs]
    return commands


def _delete_our_filter(vif: str, tools: Tools) -> Command:
    """Removes our redirect (priority FILTER_PREF) from `vif`'s ingress, leaving others' alone."""
    return tools.cmd(
        tools.tc, "filter", "del", "dev", vif, "parent", "ffff:", "prio", str(FILTER_PREF)
    )


def _plan_unshape(dom: ObservedDomain, prior: Mapping[str, Any], tools: Tools) -> list[Command]:
    """Remove only what we created: our redirects, the ingress qdisc where we added it and
    nobody else's filter has come to sit on it since (the exporter's direction counters), our
    root qdisc on a vif (the receive direction's htb and its redirect, or an older remediator's
    per-vif tbf), then the domain's ifbs (and per-vif ifbs of an older remediator)."""
    theirs = set(prior.get("ingress_before", ()))
    commands: list[Command] = []
    for vif in dom.vifs:
        ours = [r for r in vif.link.redirects if r.pref == FILTER_PREF]
        others = [r.pref for r in vif.link.redirects if r.pref != FILTER_PREF]
        others += [pref for pref in vif.link.other_filters if pref != FILTER_PREF]
        if vif.link.has_ingress and not others and vif.name not in theirs:
            commands.append(tools.cmd(tools.tc, "qdisc", "del", "dev", vif.name, "ingress"))
        elif ours:
            commands.append(_delete_our_filter(vif.name, tools))
        root = vif.link.root
        if root is not None and root.handle == QDISC_HANDLE:
            commands.append(tools.cmd(tools.tc, "qdisc", "del", "dev", vif.name, "root"))
    for ifb in (dom.ifb, dom.rx_ifb):
        if ifb is not None and ifb.exists:
            commands.append(tools.cmd(tools.ip, "link", "del", "dev", ifb.name))
    commands += [tools.cmd(tools.ip, "link", "del", "dev", old) for old in dom.old_ifbs]
    return commands
