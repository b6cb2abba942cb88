"""The threshold files: the shipped defaults (thresholds.yml) and the per-domain overrides
(thresholds-domains.yml), parsed and written.

    defaults = parse_defaults(Path("prometheus/rules/thresholds.yml").read_text())
    overrides = parse_overrides(text)           # {(policy, signal, domain): value}
    text = render_overrides(entries, header)    # the generated rules file

The overrides file is a Prometheus rules file of records, one per domain and signal:

    - record: judicator:policy_threshold:domain
      expr: vector(1234)
      labels: {policy: network_flood, signal: interrupts_per_second, domain: guest7}

which the rules use for that domain instead of `judicator:policy_threshold:constant{policy,
signal}` (docs/policies.md#learned-thresholds). Each record is preceded by a comment saying why
it has its value, so a reviewer reads the file and its reasons together.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import yaml

DEFAULT_RECORD = "judicator:policy_threshold:constant"
DOMAIN_RECORD = "judicator:policy_threshold:domain"
GROUP_NAME = "judicator-policy-thresholds-domains"
INTERVAL = "10s"
_VECTOR = re.compile(r"^\s*vector\(\s*([-+0-9.eE]+|[-+]?Inf|NaN)\s*\)\s*$")
# Prometheus label values are any UTF-8; Xen domain names are at most 63 bytes of printable
# characters. Names outside this set are written quoted by json.dumps (valid YAML).
_PLAIN = re.compile(r"^[A-Za-z0-9_.-]+$")


class ThresholdFileError(ValueError):
    """A threshold file that is not what the rules expect; the message lists every problem."""


@dataclass(frozen=True)
class Override:
    policy: str
    signal: str
    domain: str
    value: float
    why: tuple[str, ...] = ()


def _records(text: str, record: str, where: str) -> list[tuple[dict[str, str], float]]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ThresholdFileError(f"{where}: not YAML: {error}") from None
    problems: list[str] = []
    found: list[tuple[dict[str, str], float]] = []
    groups = data.get("groups") if isinstance(data, dict) else None
    if not isinstance(groups, list):
        raise ThresholdFileError(f"{where}: not a rules file (no `groups:` list)")
    for group in groups:
        for i, rule in enumerate((group or {}).get("rules") or []):
            if not isinstance(rule, dict) or rule.get("record") != record:
                continue
            match = _VECTOR.match(str(rule.get("expr", "")))
            labels = rule.get("labels") or {}
            if match is None:
                problems.append(
                    f"{where}: {group.get('name')} rule {i}: expr {rule.get('expr')!r} is not"
                    " vector(NUMBER)"
                )
                continue
            found.append(({str(k): str(v) for k, v in labels.items()}, float(match.group(1))))
    if problems:
        raise ThresholdFileError("\n".join(problems))
    return found


def parse_defaults(text: str, where: str = "thresholds.yml") -> dict[tuple[str, str], float]:
    """{(policy, signal): value} of the shipped constant thresholds."""
    out: dict[tuple[str, str], float] = {}
    for labels, value in _records(text, DEFAULT_RECORD, where):
        key = (labels.get("policy", ""), labels.get("signal", ""))
        if key in out:
            raise ThresholdFileError(f"{where}: {key[0]}/{key[1]} defined twice")
        out[key] = value
    return out


def parse_overrides(
    text: str, where: str = "thresholds-domains.yml"
) -> dict[tuple[str, str, str], float]:
    """{(policy, signal, domain): value} of a per-domain overrides file."""
    out: dict[tuple[str, str, str], float] = {}
    problems = []
    for labels, value in _records(text, DOMAIN_RECORD, where):
        key = (labels.get("policy", ""), labels.get("signal", ""), labels.get("domain", ""))
        if not all(key):
            problems.append(f"{where}: a record without policy, signal and domain: {labels}")
        elif key in out:
            problems.append(f"{where}: {key[0]}/{key[1]} for {key[2]} defined twice")
        out[key] = value
    if problems:
        raise ThresholdFileError("\n".join(problems))
    return out


def _label(value: str) -> str:
    return value if _PLAIN.match(value) else json.dumps(value)


def format_value(value: float) -> str:
    """A threshold as PromQL reads it: integers without a fraction, others shortest-exact."""
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def render_overrides(overrides: Iterable[Override], header: Iterable[str] = ()) -> str:
    """The generated rules file: a header comment, one group, a commented record per override
    (sorted by domain, policy and signal, so two runs on the same history diff cleanly)."""
    lines = [f"# {line}".rstrip() for line in header]
    # Evaluated every 10 s, not every cycle, as the shipped file is: a record costs a rule
    # evaluation and the policies' `for:` is longer (docs/policies.md#per-domain-thresholds).
    lines += ["groups:", f"  - name: {GROUP_NAME}", f"    interval: {INTERVAL}", "    rules:"]
    items = sorted(overrides, key=lambda o: (o.domain, o.policy, o.signal))
    if not items:
        lines[-1] = "    rules: []"
    for o in items:
        for reason in o.why:
            lines.append(f"      # {reason}")
        lines.append(f"      - record: {DOMAIN_RECORD}")
        lines.append(f"        expr: vector({format_value(o.value)})")
        lines.append(
            f"        labels: {{policy: {o.policy}, signal: {o.signal},"
            f" domain: {_label(o.domain)}}}"
        )
    return "\n".join(lines) + "\n"


def overrides_by_signal(
    overrides: Mapping[tuple[str, str, str], float],
) -> dict[tuple[str, str], dict[str, float]]:
    """{(policy, signal): {domain: value}}."""
    out: dict[tuple[str, str], dict[str, float]] = {}
    for (policy, signal, domain), value in overrides.items():
        out.setdefault((policy, signal), {})[domain] = value
    return out
