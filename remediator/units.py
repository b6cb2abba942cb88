"""Pure parsers for the tc-style quantities that reach us from configs and alert labels.

CPU lists are xl's grammar, `xentools.cpulist`; the two functions here only fix its plain form.

Values are parsed into plain integers and re-rendered in one canonical unit, so the text of a
label never reaches an argv list: only the number we parsed from it does.
"""

from __future__ import annotations

import re

from xentools.cpulist import MAX_CPUS, format_cpulist, parse_cpulist

_RATE = re.compile(r"(?P<num>[0-9]{1,12}(?:\.[0-9]{1,6})?)(?P<unit>[a-z]*)")
# tc(8) "RATES": bit units are decimal, bps units are bytes per second.
_RATE_UNITS = {
    "": 1,
    "bit": 1,
    "kbit": 1_000,
    "mbit": 1_000_000,
    "gbit": 1_000_000_000,
    "bps": 8,
    "kbps": 8_000,
    "mbps": 8_000_000,
    "gbps": 8_000_000_000,
}
# tc(8) "SIZES": b/k/m are bytes with binary multipliers.
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "m": 1024**2, "mb": 1024**2}


def parse_rate(text: str) -> int:
    """Parse a tc rate (`1mbit`, `512kbit`, `100kbps`) into bits per second."""
    match = _RATE.fullmatch(text.strip().lower())
    if match is None or match["unit"] not in _RATE_UNITS:
        raise ValueError(f"not a tc rate: {text!r}")
    bits = float(match["num"]) * _RATE_UNITS[match["unit"]]
    if bits < 1:
        raise ValueError(f"rate below 1bit: {text!r}")
    return int(bits)


def parse_size(text: str) -> int:
    """Parse a tc size (`32kb`, `1mb`, `1514b`) into bytes."""
    match = _RATE.fullmatch(text.strip().lower())
    if match is None or match["unit"] not in _SIZE_UNITS:
        raise ValueError(f"not a tc size: {text!r}")
    size = float(match["num"]) * _SIZE_UNITS[match["unit"]]
    if size < 1:
        raise ValueError(f"size below 1 byte: {text!r}")
    return int(size)


def parse_cpu_list(text: str, max_cpus: int = MAX_CPUS) -> frozenset[int]:
    """A penalty set in xl's CPU list grammar (`xentools.cpulist`), plain form only (`3`,
    `2-3`, `0,2-3`): `all`, exclusions and NUMA node syntax are refused because a penalty set
    must be explicit."""
    return parse_cpulist(text, max_cpus, plain=True)


def format_cpu_list(cpus: frozenset[int]) -> str:
    """Render CPU ids as an xl CPU list with ranges, in ascending order (`0,2-3`)."""
    if not cpus:
        raise ValueError("empty CPU set")
    return format_cpulist(cpus)


def parse_duration(text: str | int | float) -> float:
    """Parse a config duration (`30s`, `5m`, `1h`, `250ms`, or a number of seconds)."""
    if isinstance(text, bool):
        raise ValueError(f"not a duration: {text!r}")
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError(f"negative duration: {text!r}")
        return float(text)
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)", str(text).strip())
    if match is None:
        raise ValueError(f"not a duration: {text!r}")
    factor = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[match[2]]
    return float(match[1]) * factor
