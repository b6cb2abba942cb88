"""Rewriting the shipped rules for a backtest, as text (pure functions, no Prometheus).

The backtest does not restate the policies in Python. It asks Prometheus to evaluate each
shipped alert's own expression over the stored history, with two changes:

- every **constant table** (a recorded series whose rules are all `vector(NUMBER)`, such as
  `judicator:policy_threshold:constant` and `judicator:policy_threshold:domain`) is replaced by a
  literal of the candidate's records: `label_replace(vector(1234), "domain", "guest7", "", "")`,
  one per record (with all its labels), joined by `or`; so `on ()` and `on (domain)` joins match
  as they would against the real series;
- every recorded series that **depends** on such a table (the policies' `:active` series, the
  small and initiated packet rates) is replaced by its own expression in parentheses, since the
  history holds it as computed with the thresholds of its time. Label matchers on it become
  `and on (l)` / `unless on (l)` with a one-label vector; a range `[2m]` over it becomes the
  subquery `[2m:STEP]` at the evaluation interval.

Every other selector (the rates recorded from the exporter's counters) is read from the history as
it is. The result is an ordinary PromQL expression for a range query.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from policylearn.thresholdfile import format_value

_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_MATCHER = re.compile(
    r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*')\s*(,|$)"
)
_OFFSET = re.compile(r"\s*(offset\s+-?[0-9a-z]+|@\s*[0-9.]+|@\s*(?:start|end)\(\))", re.I)
_LITERAL = re.compile(r"^\s*vector\(\s*([-+0-9.eE]+)\s*\)\s*$")
_DURATION_PART = re.compile(r"([0-9]+)(ms|y|w|d|h|m|s)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}

Matcher = tuple[str, str, str]
# The shipped alerts rewrite to 1-6 kB; a rewrite past this is a query no Prometheus answers.
MAX_REWRITTEN_CHARS = 100_000


class PromQLError(ValueError):
    """A rule expression this rewriter does not handle (it says which and why)."""


def parse_duration(text: str) -> float:
    """Prometheus duration ("1m30s", "15s", "0s") in seconds."""
    text = str(text).strip()
    if not text:
        raise PromQLError("empty duration")
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += int(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text):
        raise PromQLError(f"not a duration: {text!r}")
    return total


def format_duration(seconds: float) -> str:
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{round(seconds * 1000)}ms"


@dataclass(frozen=True)
class RecordingRule:
    record: str
    expr: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AlertRule:
    alert: str
    expr: str
    for_seconds: float
    keep_firing_for_seconds: float
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass
class RuleSet:
    """The rules of a rules directory, in file and group order."""

    recording: list[RecordingRule] = field(default_factory=list)
    alerts: list[AlertRule] = field(default_factory=list)

    def add_file(self, data: Any) -> None:
        for group in (data or {}).get("groups") or []:
            for rule in group.get("rules") or []:
                labels = {str(k): str(v) for k, v in (rule.get("labels") or {}).items()}
                if "record" in rule:
                    self.recording.append(RecordingRule(rule["record"], str(rule["expr"]), labels))
                elif "alert" in rule:
                    self.alerts.append(
                        AlertRule(
                            rule["alert"],
                            str(rule["expr"]),
                            parse_duration(rule.get("for", "0s")),
                            parse_duration(rule.get("keep_firing_for", "0s")),
                            labels,
                        )
                    )

    def tables(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        """Constant tables: record name -> [(labels, value)], for names whose every rule is a
        vector(NUMBER) literal."""
        by_name: dict[str, list[RecordingRule]] = {}
        for rule in self.recording:
            by_name.setdefault(rule.record, []).append(rule)
        out = {}
        for name, rules in by_name.items():
            matches = [_LITERAL.match(r.expr) for r in rules]
            if all(matches):
                out[name] = [
                    (dict(r.labels), float(m.group(1)))
                    for r, m in zip(rules, matches, strict=True)
                    if m is not None
                ]
        return out


def _unquote(token: str) -> str:
    if token.startswith('"'):
        value: str = json.loads(token)
        return value
    return token[1:-1].replace("\\'", "'").replace("\\\\", "\\")


def parse_matchers(text: str) -> list[Matcher]:
    """`policy="x", signal!="y"` -> [("policy", "=", "x"), ("signal", "!=", "y")]."""
    out: list[Matcher] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        match = _MATCHER.match(text, pos)
        if match is None:
            raise PromQLError(f"cannot read label matchers {{{text}}}")
        out.append((match.group(1), match.group(2), _unquote(match.group(3))))
        pos = match.end()
    return out


def matches(labels: Mapping[str, str], matchers: Sequence[Matcher]) -> bool:
    for name, op, value in matchers:
        have = labels.get(name, "")
        if op == "=" and have != value:
            return False
        if op == "!=" and have == value:
            return False
        if op == "=~" and not re.fullmatch(value, have):
            return False
        if op == "!~" and re.fullmatch(value, have):
            return False
    return True


def _q(value: str) -> str:
    return json.dumps(value)


def with_labels(expr: str, labels: Mapping[str, str]) -> str:
    """`expr` with each label set (label_replace with an empty regex sets a constant)."""
    for name, value in sorted(labels.items()):
        expr = f'label_replace({expr}, {_q(name)}, {_q(value)}, "", "")'
    return expr


EMPTY = "(vector(0) < -1)"


def literal(name: str, records: Sequence[tuple[Mapping[str, str], float]]) -> str:
    """A PromQL expression equal to the series of a constant table `name`, with every label."""
    parts = [
        with_labels(f"vector({format_value(value)})", {**labels, "__name__": name})
        for labels, value in records
    ]
    return balanced_or(parts)


def balanced_or(parts: Sequence[str]) -> str:
    """`a or b or c or d` as `((a or b) or (c or d))`: `or` copies its left side, so a chain
    of n terms costs n^2 and a balanced tree n log n (1000 overrides of one threshold)."""
    if not parts:
        return EMPTY
    if len(parts) == 1:
        return f"({parts[0]})"
    middle = len(parts) // 2
    return f"({balanced_or(parts[:middle])} or {balanced_or(parts[middle:])})"


def _filter(expr: str, matchers: Sequence[Matcher]) -> str:
    for name, op, value in matchers:
        if name == "__name__":
            continue
        one = with_labels("vector(0)", {name: value})
        if op == "=" and value:
            expr = f"({expr} and on ({name}) {one})"
        elif op == "!=" and value:
            expr = f"({expr} unless on ({name}) {one})"
        else:
            raise PromQLError(
                f"matcher {name}{op}{_q(value)} on an inlined series: only = and != with a value"
            )
    return expr


class Rewriter:
    """Replaces constant tables by a candidate's literals and inlines what depends on them."""

    def __init__(
        self,
        rules: RuleSet,
        tables: Mapping[str, Sequence[tuple[Mapping[str, str], float]]],
        step: float,
        also_inline: Iterable[str] = (),
    ) -> None:
        """`also_inline`: recorded series to compute from their rules although they read no
        threshold (the history lacks them: it predates their rule). Only those: a series the
        history holds that was recorded from one of them was right as recorded, and is read."""
        self.tables = dict(tables)
        self.step = step
        self.inline: dict[str, list[RecordingRule]] = {}
        dependent: set[str] = set(self.tables)
        changed = True
        while changed:
            changed = False
            for rule in rules.recording:
                if rule.record in dependent:
                    continue
                if any(name in dependent for name in referenced(rule.expr)):
                    dependent.add(rule.record)
                    changed = True
        dependent |= set(also_inline)
        for rule in rules.recording:
            if rule.record in dependent and rule.record not in self.tables:
                self.inline.setdefault(rule.record, []).append(rule)

    def rewrite_alert(self, expr: str) -> str:
        """`rewrite`, refusing a result too long for a Prometheus to evaluate in time: rules
        that read the same dependent series several times (the simple-policy engine's ranks
        read each other) repeat its whole expression at every read."""
        out = self.rewrite(expr)
        if len(out) > MAX_REWRITTEN_CHARS:
            raise PromQLError(
                f"rewritten to {len(out):,} characters (over {MAX_REWRITTEN_CHARS:,}): the "
                "recording rules it reads repeat each other's expressions"
            )
        return out

    def rewrite(self, expr: str, depth: int = 0) -> str:
        if depth > 20:
            raise PromQLError("recording rules nest deeper than 20 levels (a cycle?)")
        out: list[str] = []
        pos = 0
        n = len(expr)
        while pos < n:
            ch = expr[pos]
            if ch in "\"'`":
                end = _string_end(expr, pos)
                out.append(expr[pos:end])
                pos = end
                continue
            if ch == "#":
                end = expr.find("\n", pos)
                pos = n if end < 0 else end
                continue
            match = _IDENT.match(expr, pos)
            if match is None or (pos > 0 and (expr[pos - 1].isalnum() or expr[pos - 1] in "_.")):
                out.append(ch)
                pos += 1
                continue
            name = match.group(0)
            pos = match.end()
            if name not in self.tables and name not in self.inline:
                out.append(name)
                continue
            # The selector's label matchers, range and modifiers.
            rest = pos
            matchers: list[Matcher] = []
            after = _skip_space(expr, rest)
            if after < n and expr[after] == "{":
                close = _brace_end(expr, after)
                matchers = parse_matchers(expr[after + 1 : close])
                rest = close + 1
            range_text = ""
            after = _skip_space(expr, rest)
            if after < n and expr[after] == "[":
                close = expr.index("]", after)
                range_text = expr[after + 1 : close].strip()
                rest = close + 1
            modifiers = ""
            while True:
                mod = _OFFSET.match(expr, rest)
                if mod is None:
                    break
                modifiers += " " + mod.group(1)
                rest = mod.end()
            pos = rest
            if name in self.tables:
                records = [(lb, v) for lb, v in self.tables[name] if matches(lb, matchers)]
                body = literal(name, records)
            else:
                # Rules whose own labels contradict a matcher cannot contribute; matchers on
                # labels every remaining rule sets need no filter.
                chosen = [
                    r
                    for r in self.inline[name]
                    if matches(r.labels, [m for m in matchers if m[0] in r.labels])
                ]
                rest_matchers = [
                    m for m in matchers if not chosen or any(m[0] not in r.labels for r in chosen)
                ]
                parts = [
                    with_labels(f"({self.rewrite(r.expr, depth + 1)})", r.labels) for r in chosen
                ]
                body = _filter(balanced_or(parts), rest_matchers) if parts else EMPTY
            step = format_duration(self.step)
            if range_text:
                if ":" in range_text:
                    raise PromQLError(f"a subquery over {name}: not supported")
                body = f"{body}[{range_text}:{step}]"
            elif modifiers:
                # `offset` and `@` take a selector or a subquery, never a parenthesised
                # expression: the value one evaluation step before, through a subquery.
                body, modifiers = f"last_over_time({body}[{step}:{step}]{modifiers})", ""
            out.append(body + modifiers)
        return "".join(out)


def referenced(expr: str) -> set[str]:
    """Metric names with a colon (recorded series) that `expr` selects."""
    names = set()
    pos = 0
    while pos < len(expr):
        if expr[pos] in "\"'`":
            pos = _string_end(expr, pos)
            continue
        match = _IDENT.match(expr, pos)
        if match is None:
            pos += 1
            continue
        if ":" in match.group(0):
            names.add(match.group(0))
        pos = match.end()
    return names


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def _string_end(text: str, pos: int) -> int:
    quote = text[pos]
    i = pos + 1
    while i < len(text):
        if text[i] == "\\" and quote != "`":
            i += 2
            continue
        if text[i] == quote:
            return i + 1
        i += 1
    raise PromQLError(f"unterminated string at {pos}")


def _brace_end(text: str, pos: int) -> int:
    i = pos + 1
    while i < len(text):
        if text[i] in "\"'`":
            i = _string_end(text, i)
            continue
        if text[i] == "}":
            return i
        i += 1
    raise PromQLError(f"unterminated {{ at {pos}")
