"""Scenario files: one YAML file per scenario under xeneval/scenarios/, validated into dataclasses.

    name: ping-flood                 # optional; the file's stem otherwise
    description: guest1 floods guest2 with ping -f
    tags: [attack, network, fast]    # `--fast` runs the scenarios tagged fast
    cpus: 4                          # physical CPUs of the simulated host (Dom0 on CPU 0)
    duration: 40                     # seconds the run lasts once the stack is up
    baseline: 8                      # seconds before the attack: the victims' baseline
    guests:
      - {name: attacker, cpus: [1], role: attacker}
      - {name: victim, cpus: [2], role: victim}
      - {name: idle, cpus: [3], role: benign, vcpus: 1, vifs: 1}
    workloads:
      - {guest: attacker, kind: pingflood, target: victim, duration: 30}

A guest's role says what the policies should do with it: an `attacker` is throttled, a `victim`
(what an attack is aimed at) and a `benign` guest are spared; `expect: throttled|spared`
overrides that. A workload starts `start` seconds into the run: by default at 0 for benign
guests and victims, at `baseline` for attackers. Its parameters are those of
xensim.workloads (rate, size, threads, duty, period, pad_size, pad_every, ifaces).

The loader is pure (text in, dataclasses out) and lists every problem of a file in one error.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from xensim import workloads

ROLES = ("attacker", "victim", "benign")
VERDICTS = ("throttled", "spared")
MAX_CPUS = 16
MAX_GUESTS = 12
MAX_SCENARIO_SECONDS = 600.0
DEFAULT_BASELINE = 8.0
SCENARIOS_DIR = Path(__file__).resolve().parent / "scenarios"

_GUEST_KEYS = {"name", "cpus", "vcpus", "vifs", "role", "expect", "bar"}
_WORKLOAD_KEYS = {
    "guest",
    "kind",
    "target",
    "start",
    "duration",
    "rate",
    "size",
    "threads",
    "duty",
    "period",
    "pad_size",
    "pad_every",
    "ifaces",
}
_SCENARIO_KEYS = {"name", "description", "tags", "cpus", "duration", "baseline"}
_SCENARIO_KEYS |= {"guests", "workloads"}


class ScenarioError(ValueError):
    """A scenario file that cannot be run; the message lists every problem."""


@dataclass(frozen=True)
class GuestSpec:
    name: str
    cpus: tuple[int, ...]
    role: str
    expect: str
    vcpus: int = 1
    vifs: int = 1
    # An attacker's bar in its class's unit (packets/s sent, CPU s/s per vCPU, faults/s, block
    # requests/s) where the policy needs more than its threshold (e.g. a padded flood's small
    # packets); by default the class's threshold from the shipped rules.
    bar: float | None = None


@dataclass(frozen=True)
class WorkloadSpec:
    guest: str
    kind: str
    start: float
    duration: float
    target: str | None = None
    rate: float | None = None
    size: int | None = None
    threads: int | None = None
    duty: float | None = None
    period: float | None = None
    pad_size: int | None = None
    pad_every: int | None = None
    ifaces: tuple[str, ...] = ()

    @property
    def end(self) -> float:
        return self.start + self.duration


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    tags: tuple[str, ...]
    cpus: int
    duration: float
    baseline: float
    guests: tuple[GuestSpec, ...]
    workloads: tuple[WorkloadSpec, ...]
    path: str = ""

    @property
    def attackers(self) -> list[str]:
        return [g.name for g in self.guests if g.role == "attacker"]

    @property
    def victims(self) -> list[str]:
        return [g.name for g in self.guests if g.role == "victim"]

    def attack_window(self) -> tuple[float, float] | None:
        """(start, end) of the attackers' workloads, seconds into the run; None without any."""
        attacks = [w for w in self.workloads if w.guest in self.attackers]
        if not attacks:
            return None
        return min(w.start for w in attacks), max(w.end for w in attacks)


def _number(value: Any, *, integer: bool = False) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) if integer else isinstance(value, int | float)


def _guest(raw: Any, where: str, cpus: int, problems: list[str]) -> GuestSpec | None:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("name"), str):
        problems.append(f"{where}: needs a name")
        return None
    problems += [f"{where}: unknown key {key!r}" for key in sorted(set(raw) - _GUEST_KEYS)]
    role = raw.get("role", "benign")
    if role not in ROLES:
        problems.append(f"{where}: role must be one of {', '.join(ROLES)}")
        role = "benign"
    expect = raw.get("expect", "throttled" if role == "attacker" else "spared")
    if expect not in VERDICTS:
        problems.append(f"{where}: expect must be one of {', '.join(VERDICTS)}")
    pinned = raw.get("cpus")
    if (
        not isinstance(pinned, list)
        or not pinned
        or not all(_number(c, integer=True) for c in pinned)
    ):
        problems.append(f"{where}: cpus must be a non-empty list of CPU ids")
        pinned = [1]
    elif not all(1 <= c < cpus for c in pinned):
        problems.append(f"{where}: cpus must be within 1..{cpus - 1} (CPU 0 is Domain-0's)")
    vcpus = raw.get("vcpus", 1)
    vifs = raw.get("vifs", 1)
    if not _number(vcpus, integer=True) or not 1 <= vcpus <= 8:
        problems.append(f"{where}: vcpus must be 1..8")
        vcpus = 1
    if not _number(vifs, integer=True) or not 1 <= vifs <= 2:
        problems.append(f"{where}: vifs must be 1 or 2")
        vifs = 1
    bar = raw.get("bar")
    if bar is not None and (not _number(bar) or bar <= 0):
        problems.append(f"{where}: bar must be a positive number")
        bar = None
    return GuestSpec(raw["name"], tuple(pinned), role, str(expect), vcpus, vifs, bar)


def _optional(
    raw: Mapping[str, Any], key: str, where: str, problems: list[str], integer: bool
) -> Any:
    value = raw.get(key)
    if value is None:
        return None
    if not _number(value, integer=integer) or value <= 0:
        problems.append(f"{where}: {key} must be a positive {'integer' if integer else 'number'}")
        return None
    return value


def _workload(
    raw: Any, where: str, guests: Mapping[str, GuestSpec], baseline: float, problems: list[str]
) -> WorkloadSpec | None:
    if not isinstance(raw, Mapping):
        problems.append(f"{where}: must be a mapping")
        return None
    problems += [f"{where}: unknown key {key!r}" for key in sorted(set(raw) - _WORKLOAD_KEYS)]
    guest = str(raw.get("guest"))
    if guest not in guests:
        problems.append(f"{where}: guest {guest!r} is not among the guests")
        return None
    kind = raw.get("kind")
    if kind not in workloads.KINDS:
        problems.append(f"{where}: kind must be one of {', '.join(workloads.KINDS)}")
        return None
    target = raw.get("target")
    if target is not None and (target not in guests or target == guest):
        problems.append(f"{where}: target {target!r} is not another of the guests")
    default_start = baseline if guests[guest].role == "attacker" else 0.0
    start: Any = raw.get("start", default_start)
    duration: Any = raw.get("duration")
    if not _number(start) or start < 0:
        problems.append(f"{where}: start must be a number of seconds >= 0")
        start = 0.0
    if not _number(duration) or duration <= 0:
        problems.append(f"{where}: duration must be a positive number of seconds")
        duration = 1.0
    ifaces = raw.get("ifaces") or []
    if not isinstance(ifaces, list) or not all(isinstance(i, str) for i in ifaces):
        problems.append(f"{where}: ifaces must be a list of interface names (eth0, eth1)")
        ifaces = []
    spec = WorkloadSpec(
        guest=guest,
        kind=kind,
        start=float(start),
        duration=float(duration),
        target=target,
        rate=_optional(raw, "rate", where, problems, integer=False),
        size=_optional(raw, "size", where, problems, integer=True),
        threads=_optional(raw, "threads", where, problems, integer=True),
        duty=_optional(raw, "duty", where, problems, integer=False),
        period=_optional(raw, "period", where, problems, integer=False),
        pad_size=_optional(raw, "pad_size", where, problems, integer=True),
        pad_every=_optional(raw, "pad_every", where, problems, integer=True),
        ifaces=tuple(ifaces),
    )
    try:
        workload_argv(spec, target_address="198.18.0.2" if target else None)
    except ValueError as error:
        problems.append(f"{where}: {error}")
    return spec


def workload_argv(spec: WorkloadSpec, *, target_address: str | None) -> list[str]:
    """The argv that runs `spec` in its guest (xensim.workloads'); ValueError if it cannot."""
    return workloads.workload_argv(
        spec.kind,
        duration=spec.duration,
        target=target_address,
        rate=spec.rate,
        size=spec.size,
        threads=spec.threads,
        duty=spec.duty,
        period=spec.period,
        pad_size=spec.pad_size,
        pad_every=spec.pad_every,
        ifaces=spec.ifaces or None,
    )


def load_scenario(text: str, origin: str) -> Scenario:
    """Validate one scenario file's text; raise ScenarioError naming every problem."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ScenarioError(f"{origin}: not YAML: {error}") from error
    if not isinstance(data, dict):
        raise ScenarioError(f"{origin}: must be a mapping")
    problems = [f"unknown key {key!r}" for key in sorted(set(data) - _SCENARIO_KEYS)]
    name = data.get("name", Path(origin).stem)
    if not isinstance(name, str) or not name:
        problems.append("name must be a string")
        name = Path(origin).stem
    tags = data.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        problems.append("tags must be a list of words")
        tags = []
    cpus: Any = data.get("cpus", 4)
    if not _number(cpus, integer=True) or not 2 <= cpus <= MAX_CPUS:
        problems.append(f"cpus must be an integer 2..{MAX_CPUS}")
        cpus = 4
    duration: Any = data.get("duration")
    if not _number(duration) or not 0 < duration <= MAX_SCENARIO_SECONDS:
        problems.append(f"duration must be a number of seconds in (0, {MAX_SCENARIO_SECONDS:g}]")
        duration = 1.0
    baseline: Any = data.get("baseline", DEFAULT_BASELINE)
    if not _number(baseline) or not 0 <= baseline < duration:
        problems.append("baseline must be a number of seconds below duration")
        baseline = 0.0
    raw_guests = data.get("guests")
    if not isinstance(raw_guests, list) or not 1 <= len(raw_guests) <= MAX_GUESTS:
        problems.append(f"guests must be a list of 1..{MAX_GUESTS} guests")
        raw_guests = []
    guests: dict[str, GuestSpec] = {}
    for index, raw in enumerate(raw_guests):
        guest = _guest(raw, f"guests[{index}]", cpus, problems)
        if guest is None:
            continue
        if guest.name in guests:
            problems.append(f"guests[{index}]: duplicate guest {guest.name!r}")
        guests[guest.name] = guest
    raw_workloads = data.get("workloads") or []
    if not isinstance(raw_workloads, list):
        problems.append("workloads must be a list")
        raw_workloads = []
    specs = []
    for index, raw in enumerate(raw_workloads):
        spec = _workload(raw, f"workloads[{index}]", guests, float(baseline), problems)
        if spec is None:
            continue
        if spec.end > duration:
            problems.append(
                f"workloads[{index}]: ends at {spec.end:g} s, after the run ({duration:g} s)"
            )
        specs.append(spec)
    attackers = [g for g in guests.values() if g.role == "attacker"]
    for guest in attackers:
        if not any(w.guest == guest.name for w in specs):
            problems.append(f"attacker {guest.name!r} runs no workload")
    if problems:
        raise ScenarioError(f"{origin}: " + "; ".join(problems))
    return Scenario(
        name=name,
        description=str(data.get("description", "")).strip(),
        tags=tuple(tags),
        cpus=cpus,
        duration=float(duration),
        baseline=float(baseline),
        guests=tuple(guests.values()),
        workloads=tuple(specs),
        path=origin,
    )


def load_file(path: Path) -> Scenario:
    try:
        text = path.read_text()
    except OSError as error:
        raise ScenarioError(f"{path}: cannot read: {error.strerror}") from error
    return load_scenario(text, str(path))


def discover(directory: Path = SCENARIOS_DIR) -> list[Path]:
    return sorted(directory.glob("*.yaml"))


def select(paths: Iterable[Path], patterns: Sequence[str], *, fast: bool = False) -> list[Scenario]:
    """The scenarios whose name matches one of `patterns` (globs; none = all), or a file path.

    With `fast`, only those tagged `fast`. Raises ScenarioError for a pattern matching nothing
    and for any invalid file (all of them at once).
    """
    problems: list[str] = []
    loaded: list[Scenario] = []
    for path in paths:
        try:
            loaded.append(load_file(path))
        except ScenarioError as error:
            problems.append(str(error))
    extra = [p for p in patterns if p.endswith((".yaml", ".yml"))]
    for item in extra:
        try:
            loaded.append(load_file(Path(item)))
        except ScenarioError as error:
            problems.append(str(error))
    if problems:
        raise ScenarioError("\n".join(problems))
    names = [p for p in patterns if p not in extra]
    chosen = []
    for scenario in loaded:
        if (
            scenario.path in extra
            or (names and any(fnmatch.fnmatchcase(scenario.name, n) for n in names))
            or not patterns
        ):
            chosen.append(scenario)
    unmatched = [n for n in names if not any(fnmatch.fnmatchcase(s.name, n) for s in loaded)]
    if unmatched:
        raise ScenarioError(f"no scenario matches {', '.join(unmatched)}")
    if fast:
        chosen = [s for s in chosen if "fast" in s.tags]
    seen: set[str] = set()
    unique = []
    for scenario in chosen:
        if scenario.name not in seen:
            seen.add(scenario.name)
            unique.append(scenario)
    return unique
