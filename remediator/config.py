"""The remediator's YAML configuration, validated at start into frozen dataclasses.

`load_config(mapping)` takes the already-parsed YAML (cli.py reads the file) and either returns
a `Config` or raises `ConfigError` listing every problem found, so an operator fixes them all in
one go.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from remediator.units import parse_cpu_list, parse_duration, parse_rate, parse_size

T = TypeVar("T")

DOM0_NAME = "Domain-0"
ACTION_KINDS = ("network_shape", "cpu_cap", "cpu_pin", "pause", "command")
DIRECTIONS = ("send", "receive", "both")
PLATFORMS = ("xen", "kvm")
# Settings that name one platform's tool: given on the other platform they would be silently
# ignored, so they are refused instead.
PLATFORM_PATHS = {"xen": ("xl",), "kvm": ("kvmctl", "procfs", "debugfs")}


class ConfigError(Exception):
    """The configuration is unusable; `problems` lists every reason."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n  - " + "\n  - ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class NetworkShapeBounds:
    rate_min_bps: int = 8_000
    rate_max_bps: int = 10_000_000_000
    burst_min_bytes: int = 1_600
    burst_max_bytes: int = 16 * 1024 * 1024
    default_burst_bytes: int = 32 * 1024
    latency_ms: int = 50
    directions: tuple[str, ...] = DIRECTIONS


@dataclass(frozen=True)
class CpuCapBounds:
    min_percent: int = 1
    max_percent: int = 6400


@dataclass(frozen=True)
class CpuPinBounds:
    allowed_cpus: frozenset[int]


@dataclass(frozen=True)
class OperatorCommand:
    name: str
    apply: tuple[str, ...]
    release: tuple[str, ...] | None
    timeout_seconds: float


@dataclass(frozen=True)
class Actions:
    network_shape: NetworkShapeBounds | None = None
    cpu_cap: CpuCapBounds | None = None
    cpu_pin: CpuPinBounds | None = None
    pause: bool = False
    commands: Mapping[str, OperatorCommand] = field(default_factory=dict)

    def enabled(self, kind: str) -> bool:
        if kind == "pause":
            return self.pause
        if kind == "command":
            return bool(self.commands)
        return getattr(self, kind, None) is not None


@dataclass(frozen=True)
class Hold:
    """How long a throttle stays after its alerts resolved, growing for repeat offenders."""

    base_seconds: float = 300.0
    factor: float = 2.0
    max_seconds: float = 3600.0
    repeat_window_seconds: float = 3600.0

    def for_offence(self, offence: int) -> float:
        """Hold for the `offence`-th throttle of a domain within the window (1 = first)."""
        exponent = min(max(offence - 1, 0), 32)
        return float(min(self.base_seconds * self.factor**exponent, self.max_seconds))


@dataclass(frozen=True)
class Config:
    instances: frozenset[str]
    state_path: str
    actions: Actions
    protected_domains: frozenset[str] = frozenset({DOM0_NAME})
    bearer_token_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    hold: Hold = Hold()
    max_throttle_seconds: float = 7200.0
    readmit_after_seconds: float = 600.0
    retention_seconds: float = 7 * 86400.0
    max_active_throttles: int = 4
    max_request_bytes: int = 1024 * 1024
    command_timeout_seconds: float = 5.0
    reconcile_interval_seconds: float = 60.0
    workers: int = 8
    platform: str = "xen"
    xl_path: str = "xl"
    kvmctl_path: str = "judicator-kvmctl"
    procfs_path: str = "/proc"
    debugfs_path: str = "/sys/kernel/debug"
    tc_path: str = "tc"
    ip_path: str = "ip"
    sysfs_path: str = "/sys"


_KNOWN_TOP = {
    "instances",
    "state_path",
    "protected_domains",
    "auth",
    "tls",
    "hold",
    "limits",
    "actions",
    "paths",
    "platform",
}
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")


class _Checker:
    """Collects problems instead of stopping at the first one."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def section(self, raw: Mapping[str, Any], key: str, known: set[str]) -> Mapping[str, Any]:
        value = raw.get(key, {})
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.problems.append(f"{key}: must be a mapping")
            return {}
        for unknown in sorted(set(value) - known):
            self.problems.append(f"{key}.{unknown}: unknown setting")
        return value

    def get(
        self,
        raw: Mapping[str, Any],
        where: str,
        key: str,
        convert: Callable[[Any], T],
        default: T,
    ) -> T:
        if key not in raw or raw[key] is None:
            return default
        try:
            return convert(raw[key])
        except (TypeError, ValueError) as error:
            self.problems.append(f"{where}{key}: {error}")
            return default


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"must be a positive integer, got {value!r}")
    return value


def _positive_duration(value: Any) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"must be positive, got {value!r}")
    return seconds


def _factor(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 1:
        raise ValueError(f"must be a number >= 1, got {value!r}")
    return float(value)


def _string(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"must be a non-empty string, got {value!r}")
    return value


def _argv(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(a, str) for a in value):
        raise ValueError("must be a non-empty list of strings (an argv list, no shell)")
    if not value[0].startswith("/"):
        raise ValueError(f"the program must be an absolute path, got {value[0]!r}")
    return tuple(value)


def _platform(value: Any) -> str:
    if value not in PLATFORMS:
        raise ValueError(f"must be one of {', '.join(PLATFORMS)}, got {value!r}")
    return str(value)


def _string_set(value: Any) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError("must be a list of non-empty strings")
    return frozenset(value)


def load_config(raw: Any) -> Config:
    """Validate parsed YAML into a Config, or raise ConfigError listing every problem."""
    check = _Checker()
    if not isinstance(raw, Mapping):
        raise ConfigError(["the configuration must be a YAML mapping"])
    for unknown in sorted(set(raw) - _KNOWN_TOP):
        check.problems.append(f"{unknown}: unknown setting")

    instances: frozenset[str] = check.get(raw, "", "instances", _string_set, frozenset())
    if not instances:
        check.problems.append(
            "instances: required, the `instance` label values of this host's exporter"
        )
    state_path = check.get(raw, "", "state_path", _string, "")
    if not state_path:
        check.problems.append("state_path: required, the SQLite file holding throttles")
    protected: frozenset[str] = check.get(raw, "", "protected_domains", _string_set, frozenset())

    auth = check.section(raw, "auth", {"bearer_token_file", "disabled"})
    token_file = check.get(auth, "auth.", "bearer_token_file", _string, None)
    if token_file is None and auth.get("disabled") is not True:
        check.problems.append(
            "auth.bearer_token_file: required (or set auth.disabled: true on a trusted socket)"
        )
    tls = check.section(raw, "tls", {"cert_file", "key_file"})
    cert = check.get(tls, "tls.", "cert_file", _string, None)
    key = check.get(tls, "tls.", "key_file", _string, None)
    if (cert is None) != (key is None):
        check.problems.append("tls: cert_file and key_file go together")

    hold_raw = check.section(
        raw, "hold", {"base", "factor", "max", "repeat_window", "max_throttle", "readmit_after"}
    )
    hold = Hold(
        base_seconds=check.get(hold_raw, "hold.", "base", parse_duration, 300.0),
        factor=check.get(hold_raw, "hold.", "factor", _factor, 2.0),
        max_seconds=check.get(hold_raw, "hold.", "max", parse_duration, 3600.0),
        repeat_window_seconds=check.get(hold_raw, "hold.", "repeat_window", parse_duration, 3600.0),
    )
    if hold.max_seconds < hold.base_seconds:
        check.problems.append("hold.max: must be at least hold.base")
    max_throttle = check.get(hold_raw, "hold.", "max_throttle", _positive_duration, 7200.0)
    readmit_after = check.get(hold_raw, "hold.", "readmit_after", _positive_duration, 600.0)

    limits = check.section(
        raw,
        "limits",
        {
            "max_active_throttles",
            "max_request_bytes",
            "command_timeout",
            "reconcile_interval",
            "workers",
            "retention",
        },
    )
    platform = check.get(raw, "", "platform", _platform, "xen")
    paths = check.section(raw, "paths", {"xl", "tc", "ip", "sysfs", *PLATFORM_PATHS["kvm"]})
    for other, tools in PLATFORM_PATHS.items():
        for tool in tools:
            if other != platform and tool in paths:
                check.problems.append(
                    f"paths.{tool}: means nothing on platform {platform} (only on {other})"
                )
    actions = _load_actions(check, raw)

    max_active = check.get(limits, "limits.", "max_active_throttles", _positive_int, 4)
    max_request = check.get(limits, "limits.", "max_request_bytes", _positive_int, 1024 * 1024)
    timeout = check.get(limits, "limits.", "command_timeout", _positive_duration, 5.0)
    reconcile = check.get(limits, "limits.", "reconcile_interval", _positive_duration, 60.0)
    workers = check.get(limits, "limits.", "workers", _positive_int, 8)
    retention = check.get(limits, "limits.", "retention", _positive_duration, 7 * 86400.0)
    if retention < max(hold.repeat_window_seconds, max_throttle + readmit_after):
        check.problems.append(
            "limits.retention: must cover hold.repeat_window and hold.max_throttle + "
            "hold.readmit_after (the records those settings look back on)"
        )
    xl_path = check.get(paths, "paths.", "xl", _string, "xl")
    tc_path = check.get(paths, "paths.", "tc", _string, "tc")
    ip_path = check.get(paths, "paths.", "ip", _string, "ip")
    sysfs_path = check.get(paths, "paths.", "sysfs", _string, "/sys")
    kvmctl_path = check.get(paths, "paths.", "kvmctl", _string, "judicator-kvmctl")
    procfs_path = check.get(paths, "paths.", "procfs", _string, "/proc")
    debugfs_path = check.get(paths, "paths.", "debugfs", _string, "/sys/kernel/debug")
    if check.problems:
        raise ConfigError(check.problems)
    return Config(
        instances=instances,
        state_path=state_path,
        actions=actions,
        protected_domains=protected | {DOM0_NAME},
        bearer_token_file=token_file,
        tls_cert_file=cert,
        tls_key_file=key,
        hold=hold,
        max_throttle_seconds=max_throttle,
        readmit_after_seconds=readmit_after,
        retention_seconds=retention,
        max_active_throttles=max_active,
        max_request_bytes=max_request,
        command_timeout_seconds=timeout,
        reconcile_interval_seconds=reconcile,
        workers=workers,
        platform=platform,
        xl_path=xl_path,
        kvmctl_path=kvmctl_path,
        procfs_path=procfs_path,
        debugfs_path=debugfs_path,
        tc_path=tc_path,
        ip_path=ip_path,
        sysfs_path=sysfs_path,
    )


def _load_actions(check: _Checker, raw: Mapping[str, Any]) -> Actions:
    section = check.section(raw, "actions", set(ACTION_KINDS))
    network = None
    if "network_shape" in section:
        net = check.section(
            section,
            "network_shape",
            {
                "rate_min",
                "rate_max",
                "burst_min",
                "burst_max",
                "default_burst",
                "latency",
                "directions",
            },
        )
        where = "actions.network_shape."
        defaults = NetworkShapeBounds()
        directions = check.get(net, where, "directions", _string_set, frozenset(DIRECTIONS))
        for bad in sorted(directions - set(DIRECTIONS)):
            check.problems.append(f"{where}directions: unknown direction {bad!r}")
        network = NetworkShapeBounds(
            rate_min_bps=check.get(net, where, "rate_min", parse_rate, defaults.rate_min_bps),
            rate_max_bps=check.get(net, where, "rate_max", parse_rate, defaults.rate_max_bps),
            burst_min_bytes=check.get(
                net, where, "burst_min", parse_size, defaults.burst_min_bytes
            ),
            burst_max_bytes=check.get(
                net, where, "burst_max", parse_size, defaults.burst_max_bytes
            ),
            default_burst_bytes=check.get(
                net, where, "default_burst", parse_size, defaults.default_burst_bytes
            ),
            latency_ms=int(1000 * check.get(net, where, "latency", _positive_duration, 0.05)),
            directions=tuple(d for d in DIRECTIONS if d in directions),
        )
        if network.rate_min_bps > network.rate_max_bps:
            check.problems.append(f"{where}rate_min: above rate_max")
        if not (network.burst_min_bytes <= network.default_burst_bytes <= network.burst_max_bytes):
            check.problems.append(f"{where}default_burst: outside burst_min … burst_max")

    cap = None
    if "cpu_cap" in section:
        raw_cap = check.section(section, "cpu_cap", {"min", "max"})
        cap = CpuCapBounds(
            min_percent=check.get(raw_cap, "actions.cpu_cap.", "min", _positive_int, 1),
            max_percent=check.get(raw_cap, "actions.cpu_cap.", "max", _positive_int, 6400),
        )
        if cap.min_percent > cap.max_percent:
            check.problems.append("actions.cpu_cap.min: above max")

    pin = None
    if "cpu_pin" in section:
        raw_pin = check.section(section, "cpu_pin", {"allowed_cpus"})
        allowed = check.get(
            raw_pin, "actions.cpu_pin.", "allowed_cpus", lambda v: parse_cpu_list(str(v)), None
        )
        if allowed is None:
            check.problems.append('actions.cpu_pin.allowed_cpus: required, e.g. "3" or "2-3"')
        else:
            pin = CpuPinBounds(allowed_cpus=allowed)

    pause = False
    if "pause" in section:
        raw_pause = check.section(section, "pause", {"enabled"})
        pause = raw_pause.get("enabled", True) is True

    commands: dict[str, OperatorCommand] = {}
    if "command" in section:
        raw_commands = section["command"]
        if not isinstance(raw_commands, Mapping):
            check.problems.append("actions.command: must map command names to definitions")
            raw_commands = {}
        for name, definition in raw_commands.items():
            where = f"actions.command.{name}."
            if not isinstance(name, str) or not _NAME.fullmatch(name):
                check.problems.append(f"actions.command: bad command name {name!r}")
                continue
            if not isinstance(definition, Mapping):
                check.problems.append(f"{where[:-1]}: must be a mapping")
                continue
            for unknown in sorted(set(definition) - {"apply", "release", "timeout"}):
                check.problems.append(f"{where}{unknown}: unknown setting")
            apply_argv: tuple[str, ...] = check.get(definition, where, "apply", _argv, ())
            if not apply_argv:
                check.problems.append(f"{where}apply: required")
            commands[name] = OperatorCommand(
                name=name,
                apply=apply_argv,
                release=check.get(definition, where, "release", _argv, None),
                timeout_seconds=check.get(definition, where, "timeout", _positive_duration, 10.0),
            )
    return Actions(network_shape=network, cpu_cap=cap, cpu_pin=pin, pause=pause, commands=commands)
