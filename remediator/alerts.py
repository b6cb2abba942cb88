"""Alertmanager webhook payloads (version 4) and what each alert asks of us. Pure functions.

`parse_notification(body)` checks the payload's shape; a payload that can never be accepted
raises `PayloadError` (the webhook answers 400, which Alertmanager does not retry).
`interpret(alert, config)` turns one alert into an `Intent` or a `Refusal`, bounding every
parameter: no label text reaches an argv list, only values parsed from it.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from remediator.config import ACTION_KINDS, Config
from remediator.units import parse_cpu_list, parse_rate, parse_size

# What a Xen domain name may look like before we even ask the host: printable, no spaces, no
# path or shell syntax. A name outside this set cannot be one of ours and is refused early.
DOMAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:+-]{0,63}")
FINGERPRINT = re.compile(r"[0-9a-f]{1,32}")
MAX_ALERTS = 1000
MAX_LABELS = 64
MAX_LABEL_BYTES = 4096
RFC3339 = re.compile(r"(\d{4}-\d\d-\d\d)[Tt ](\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?([Zz]|[+-]\d\d:\d\d)")


class PayloadError(ValueError):
    """The payload is not an Alertmanager version 4 notification; `reason` is a metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class Alert:
    fingerprint: str
    status: str
    labels: Mapping[str, str]
    starts_at: str
    ends_at: str

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "")


@dataclass(frozen=True)
class Notification:
    group_key: str
    status: str
    receiver: str
    truncated_alerts: int
    alerts: tuple[Alert, ...]


@dataclass(frozen=True)
class Action:
    """One bounded remediation. `params` holds parsed numbers and fixed words only."""

    kind: str
    params: Mapping[str, Any]

    def to_json(self) -> str:
        return json.dumps({"kind": self.kind, "params": dict(self.params)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Action:
        data = json.loads(text)
        return cls(kind=data["kind"], params=data["params"])


@dataclass(frozen=True)
class Intent:
    alert: Alert
    domain: str
    action: Action | None  # None for a resolved alert: the throttle it released says what to do


@dataclass(frozen=True)
class Refusal:
    alert: Alert
    reason: str  # a short word, used as a metric label
    detail: str
    ignored: bool = False  # True when the alert is not ours to act on (another host)


def _instant(text: str) -> tuple[datetime, str] | None:
    """An RFC 3339 instant as an aware datetime (to the second) and its fraction's digits."""
    match = RFC3339.fullmatch(text)
    if match is None:
        return None
    day, clock, fraction, zone = match.groups()
    try:
        moment = datetime.fromisoformat(f"{day}T{clock}{'+00:00' if zone in 'Zz' else zone}")
    except ValueError:  # 31 February
        return None
    return moment, fraction or ""


@functools.lru_cache(maxsize=4096)  # a group's alerts and its re-flushes repeat their startsAt
def canonical_instant(text: str) -> str:
    """One spelling per instant: UTC, nanoseconds without trailing zeros, as Go's RFC3339Nano.

    An alert episode is known by (fingerprint, startsAt); the same instant written by another
    sender, or with trailing zeros, or in another zone, must not look like a new episode.
    Text that is not an RFC 3339 timestamp is kept as it is: it still names its episode.
    """
    instant = _instant(text)
    if instant is None:
        return text
    moment, fraction = instant
    try:
        utc = moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds")
    except (ValueError, OverflowError):  # year 1 moved before year 1
        return text
    fraction = fraction.rstrip("0")
    return f"{utc}.{fraction}Z" if fraction else f"{utc}Z"


@functools.lru_cache(maxsize=4096)
def instant_seconds(text: str) -> float | None:
    """Seconds since the epoch of an RFC 3339 instant; None for other text and for Go's zero
    time (`0001-01-01T00:00:00Z`, what Alertmanager sends for an unset endsAt)."""
    instant = _instant(text)
    if instant is None or instant[0].year < 1970:
        return None
    moment, fraction = instant
    return moment.timestamp() + float(f"0.{fraction or '0'}")


def _str_map(value: Any, what: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise PayloadError("malformed", f"{what} must be an object")
    if len(value) > MAX_LABELS:
        raise PayloadError("malformed", f"{what} has more than {MAX_LABELS} entries")
    for key, item in value.items():
        if not isinstance(item, str):
            raise PayloadError("malformed", f"{what}.{key} must be a string")
        if len(key) + len(item) > MAX_LABEL_BYTES:
            raise PayloadError("malformed", f"{what}.{key} is too long")
    return value


def parse_notification(body: bytes) -> Notification:
    """Parse and shape-check a webhook body; raise PayloadError if it can never be accepted."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as error:
        # ValueError covers JSONDecodeError, UnicodeDecodeError and an integer longer than
        # Python's int_max_str_digits (4,300 digits): never acceptable, so 400, not 500.
        raise PayloadError("malformed", f"not JSON: {str(error)[:200]}") from None
    if not isinstance(data, dict):
        raise PayloadError("malformed", "the payload must be a JSON object")
    if data.get("version") != "4":
        raise PayloadError("version", f"unsupported version {data.get('version')!r}, want '4'")
    raw_alerts = data.get("alerts")
    if not isinstance(raw_alerts, list):
        raise PayloadError("malformed", "alerts must be a list")
    if len(raw_alerts) > MAX_ALERTS:
        raise PayloadError("malformed", f"more than {MAX_ALERTS} alerts")
    truncated = data.get("truncatedAlerts", 0)
    if isinstance(truncated, bool) or not isinstance(truncated, int) or truncated < 0:
        raise PayloadError("malformed", "truncatedAlerts must be a non-negative integer")
    alerts = []
    for index, raw in enumerate(raw_alerts):
        if not isinstance(raw, dict):
            raise PayloadError("malformed", f"alerts[{index}] must be an object")
        status = raw.get("status")
        if status not in ("firing", "resolved"):
            raise PayloadError("malformed", f"alerts[{index}].status must be firing or resolved")
        fingerprint = raw.get("fingerprint", "")
        starts_at = raw.get("startsAt", "")
        ends_at = raw.get("endsAt", "")
        if not all(isinstance(v, str) and len(v) <= 64 for v in (fingerprint, starts_at, ends_at)):
            raise PayloadError("malformed", f"alerts[{index}]: fingerprint/startsAt/endsAt")
        alerts.append(
            Alert(
                fingerprint=fingerprint,
                status=status,
                labels=_str_map(raw.get("labels", {}), f"alerts[{index}].labels"),
                starts_at=canonical_instant(starts_at),
                ends_at=ends_at,
            )
        )
    group_key = data.get("groupKey", "")
    receiver = data.get("receiver", "")
    status = data.get("status", "")
    if not all(isinstance(v, str) for v in (group_key, receiver, status)):
        raise PayloadError("malformed", "groupKey, receiver and status must be strings")
    return Notification(
        group_key=group_key,
        status=status,
        receiver=receiver,
        truncated_alerts=truncated,
        alerts=tuple(alerts),
    )


def _instance_matches(instance: str, ours: frozenset[str]) -> bool:
    if instance in ours:
        return True
    # `host:port` targets: accept the host alone when that is what the operator listed.
    host = instance.rsplit(":", 1)[0] if instance.count(":") == 1 else instance
    return host in ours


def interpret(alert: Alert, config: Config) -> Intent | Refusal:
    """Decide what an alert asks for, refusing anything unknown, unsafe or out of bounds."""

    def refuse(reason: str, detail: str) -> Refusal:
        return Refusal(alert=alert, reason=reason, detail=detail)

    labels = alert.labels
    if not FINGERPRINT.fullmatch(alert.fingerprint):
        return refuse("bad_fingerprint", "the alert has no usable fingerprint")
    instance = labels.get("instance")
    if instance is None or not _instance_matches(instance, config.instances):
        return Refusal(
            alert=alert,
            reason="other_host",
            detail=f"instance {instance!r} is not this host",
            ignored=True,
        )
    domain = labels.get("domain", "")
    if not DOMAIN_NAME.fullmatch(domain):
        return refuse("bad_domain", f"domain label {domain!r} is not a domain name")
    if domain in config.protected_domains:
        return refuse("protected_domain", f"domain {domain!r} is protected")
    if alert.status == "resolved":
        return Intent(alert=alert, domain=domain, action=None)

    kind = labels.get("remediation", "")
    if kind not in ACTION_KINDS:
        return refuse("unknown_action", f"remediation {kind!r} is not one of {ACTION_KINDS}")
    if not config.actions.enabled(kind):
        return refuse("action_disabled", f"remediation {kind!r} is not enabled in the config")
    try:
        params = _bounded_params(kind, labels, config)
    except ValueError as error:
        return refuse("bad_parameter", str(error))
    return Intent(alert=alert, domain=domain, action=Action(kind=kind, params=params))


def _bounded_params(kind: str, labels: Mapping[str, str], config: Config) -> dict[str, Any]:
    actions = config.actions
    if kind == "network_shape":
        bounds = actions.network_shape
        assert bounds is not None
        rate = parse_rate(labels.get("rate", ""))
        if not bounds.rate_min_bps <= rate <= bounds.rate_max_bps:
            raise ValueError(
                f"rate {rate}bit outside {bounds.rate_min_bps}…{bounds.rate_max_bps}bit"
            )
        burst = bounds.default_burst_bytes
        if "burst" in labels:
            burst = parse_size(labels["burst"])
            if not bounds.burst_min_bytes <= burst <= bounds.burst_max_bytes:
                raise ValueError(f"burst {burst}b outside the configured bounds")
        direction = labels.get("direction", "send")
        if direction not in bounds.directions:
            raise ValueError(f"direction {direction!r} not one of {bounds.directions}")
        return {"rate_bps": rate, "burst_bytes": burst, "direction": direction}
    if kind == "cpu_cap":
        cap_bounds = actions.cpu_cap
        assert cap_bounds is not None
        text = labels.get("cap", "")
        if not re.fullmatch(r"[0-9]{1,5}", text):
            raise ValueError(f"cap {text!r} is not a whole percentage")
        cap = int(text)
        if not cap_bounds.min_percent <= cap <= cap_bounds.max_percent:
            raise ValueError(f"cap {cap} outside {cap_bounds.min_percent}…{cap_bounds.max_percent}")
        return {"cap": cap}
    if kind == "cpu_pin":
        pin_bounds = actions.cpu_pin
        assert pin_bounds is not None
        cpus = parse_cpu_list(labels.get("cpus", ""))
        if not cpus <= pin_bounds.allowed_cpus:
            raise ValueError("cpus outside the configured penalty set")
        return {"cpus": sorted(cpus)}
    if kind == "pause":
        return {}
    name = labels.get("command", "")
    if name not in actions.commands:
        raise ValueError(f"command {name!r} is not defined in the config")
    return {"command": name}
