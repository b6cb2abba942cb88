"""The learning config: groups of similar domains, and bounds per signal.

    # judicator-policy learn --config.file learn.yml
    quantile: 0.999        # the high quantile of each step's peak the threshold starts from
    margin: 2              # times that quantile
    floor_factor: 0.5      # never below the shipped default times this ...
    max_increase: 0.25     # re-learning: at most +25 % over the previous file per period
    max_decrease: 0.5      #              at most -50 % under it
    min_coverage: 0.5      # a domain with history for less of the window keeps its default
    groups:                # domains that learn together (Xen has no flavour label): the first
      - name: web          # group whose pattern (fnmatch) matches a domain's name takes it
        domains: ["web*", "www-*"]
    signals:               # per signal (policy/signal): absolute_floor, ceiling, margin, quantile
      network_flood/interrupts_per_second: {ceiling: 15000}

Every key is optional; the defaults are those above and the floors and ceilings of
policylearn.signals. `load_config` lists every problem in one ConfigError.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from policylearn.signals import BY_KEY, SIGNALS, Signal
from policylearn.stats import Limits


class ConfigError(ValueError):
    """The learning config is invalid; the message lists every problem."""


@dataclass(frozen=True)
class Group:
    name: str
    patterns: tuple[str, ...]

    def matches(self, domain: str) -> bool:
        return any(fnmatch.fnmatchcase(domain, p) for p in self.patterns)


@dataclass(frozen=True)
class LearnConfig:
    limits: Limits = field(default_factory=Limits)
    groups: tuple[Group, ...] = ()
    # Per-signal overrides of `limits` (absolute_floor, ceiling, margin, quantile).
    overrides: Mapping[tuple[str, str], Mapping[str, float]] = field(default_factory=dict)

    def limits_for(self, signal: Signal) -> Limits:
        base = replace(self.limits, absolute_floor=signal.absolute_floor, ceiling=signal.ceiling)
        if signal.margin is not None:
            base = replace(base, margin=signal.margin)
        return replace(base, **dict(self.overrides.get(signal.key, {})))

    def group_of(self, domain: str) -> str:
        """The name of the group `domain` learns with: its group's, or its own."""
        for group in self.groups:
            if group.matches(domain):
                return group.name
        return domain


_GLOBAL = {
    "quantile": (0.5, 1.0),
    "margin": (1.0, 100.0),
    "floor_factor": (0.0, 1.0),
    "max_increase": (0.0, 10.0),
    "max_decrease": (0.0, 1.0),
    "min_coverage": (0.0, 1.0),
}
_PER_SIGNAL = {
    "absolute_floor": (0.0, math.inf),
    "ceiling": (0.0, math.inf),
    "margin": (1.0, 100.0),
    "quantile": (0.5, 1.0),
}


def _number(value: Any, where: str, bounds: tuple[float, float], problems: list[str]) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        problems.append(f"{where}: {value!r} is not a number")
        return math.nan
    low, high = bounds
    if not low <= value <= high:
        problems.append(f"{where}: {value} outside [{low:g}, {high:g}]")
    return float(value)


def load_config(data: Any) -> LearnConfig:
    """The config from parsed YAML (None: every default)."""
    if data is None:
        data = {}
    problems: list[str] = []
    if not isinstance(data, dict):
        raise ConfigError("the learning config must be a mapping")
    unknown = sorted(set(data) - set(_GLOBAL) - {"groups", "signals"})
    problems += [f"unknown key {k!r}" for k in unknown]
    numbers = {
        key: _number(data[key], key, bounds, problems)
        for key, bounds in _GLOBAL.items()
        if key in data
    }
    groups: list[Group] = []
    raw_groups = data.get("groups") or []
    if not isinstance(raw_groups, list):
        problems.append("groups: must be a list")
        raw_groups = []
    names: set[str] = set()
    for i, item in enumerate(raw_groups):
        where = f"groups[{i}]"
        if not isinstance(item, dict) or set(item) != {"name", "domains"}:
            problems.append(f"{where}: needs exactly `name` and `domains`")
            continue
        name, patterns = item["name"], item["domains"]
        if not isinstance(name, str) or not name:
            problems.append(f"{where}.name: must be a non-empty string")
        elif name in names:
            problems.append(f"{where}.name: {name!r} twice")
        names.add(str(name))
        if (
            not isinstance(patterns, list)
            or not patterns
            or not all(isinstance(p, str) and p for p in patterns)
        ):
            problems.append(f"{where}.domains: must be a non-empty list of name patterns")
            continue
        groups.append(Group(str(name), tuple(patterns)))
    overrides: dict[tuple[str, str], dict[str, float]] = {}
    raw_signals = data.get("signals") or {}
    if not isinstance(raw_signals, dict):
        problems.append("signals: must be a mapping of policy/signal to settings")
        raw_signals = {}
    for name, settings in raw_signals.items():
        policy, _, signal = str(name).partition("/")
        if (policy, signal) not in BY_KEY:
            learned = ", ".join(f"{s.policy}/{s.signal}" for s in SIGNALS)
            problems.append(f"signals: {name!r} is not a learned signal ({learned})")
            continue
        if not isinstance(settings, dict):
            problems.append(f"signals.{name}: must be a mapping")
            continue
        extra = sorted(set(settings) - set(_PER_SIGNAL))
        problems += [f"signals.{name}: unknown key {k!r}" for k in extra]
        overrides[(policy, signal)] = {
            k: _number(v, f"signals.{name}.{k}", _PER_SIGNAL[k], problems)
            for k, v in settings.items()
            if k in _PER_SIGNAL
        }
    limits = replace(Limits(), **numbers)
    config = LearnConfig(limits, tuple(groups), overrides)
    if not problems:
        for sig in SIGNALS:
            merged = config.limits_for(sig)
            if merged.absolute_floor > merged.ceiling:
                problems.append(
                    f"signals.{sig.policy}/{sig.signal}: absolute_floor"
                    f" {merged.absolute_floor:g} above ceiling {merged.ceiling:g}"
                )
    if problems:
        raise ConfigError("invalid learning config:\n  " + "\n  ".join(problems))
    return config
