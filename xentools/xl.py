"""Parse what Xen's ``xl`` prints, and build the argv of the commands that change a domain.

- Pure parsers, text in, dataclasses out, raising ``XlParseError`` (which quotes the offending
  line) on anything they do not recognise: ``parse_list`` (``xl list``, also ``-c``),
  ``parse_list_verbose`` (``-v``), ``parse_list_long`` (``-l``, JSON), ``parse_vcpu_list``,
  ``parse_info``, ``parse_cpupool_list`` (with or without ``-c``), ``parse_sched``
  (``xl sched-credit`` / ``sched-credit2`` output, with or without ``Cpupool`` lines).
  CPU lists: ``xentools.cpulist``.
- Argv builders for the commands that change a domain (``set_cap_argv``, ``pause_argv``,
  ``unpause_argv``, ``vcpu_pin_argv``): the remediator plans with them, so the argv of each
  such command is written once.

Running xl and reading the host through these parsers is ``xentools.toolstack``'s.

Formats are Xen 4.17's ``tools/xl/*.c`` (see ``docs/xen-reference.md`` section 4). Names are
matched with regexes anchored on the numeric columns, never by fixed columns, since a name may
be longer than its column.

Quirks of xl that callers must know (the remediator therefore checks every step by reading
the host again, never by the exit status alone):

- ``xl pause`` / ``xl unpause`` exit 0 even when libxl failed (the toolstack pause count is
  full at 255, or the domain was not paused), printing a ``libxl: error:`` line. Pauses are
  reference-counted: one unpause per pause.
- ``xl vcpu-pin DOM all ...`` exits 0 even when setting the affinity failed ("Could not set
  affinity.").
- ``xl sched-credit`` and ``xl sched-credit2`` must match the scheduler of the domain's cpupool,
  otherwise they fail (exit 1); ``set_cap_argv`` takes that scheduler
  (``xentools.toolstack.XlToolstack.scheduler``). A cap is a percentage of one
  physical CPU, 0 = uncapped, at most 100 x vCPUs; xl reads numbers with ``strtol``, so garbage
  silently becomes 0 (uncapped): validate before calling.
- ``xl mem-set`` takes MiB for a bare number (the man page is wrong).
- A domain argument made only of digits is taken as a domid without checking that it exists.
- Domain ids change when a domain reboots: key state by name (or uuid), resolve ids each time.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from xentools.cpulist import CpuListError, format_cpulist, parse_cpulist

__all__ = [
    "CpuListError",
    "CpuPool",
    "DomainInfo",
    "DomainState",
    "LongDomainInfo",
    "SchedParams",
    "VcpuInfo",
    "VerboseDomainInfo",
    "XlInfo",
    "XlParseError",
    "format_cpulist",
    "parse_cpulist",
    "parse_cpupool_list",
    "parse_info",
    "parse_list",
    "parse_list_long",
    "parse_list_verbose",
    "parse_sched",
    "parse_vcpu_list",
    "pause_argv",
    "set_cap_argv",
    "unpause_argv",
    "vcpu_pin_argv",
]

SCHEDULERS = ("credit", "credit2")


class XlParseError(ValueError):
    """xl printed something the parser does not recognise."""

    def __init__(self, what: str, line: str | None = None) -> None:
        self.what = what
        self.line = line
        super().__init__(what if line is None else f"{what}: {line!r}")


# --- dataclasses -----------------------------------------------------------------------------

SHUTDOWN_REASONS = {
    "-": "poweroff",
    "r": "reboot",
    "s": "suspend",
    "c": "crash",
    "w": "watchdog",
    "S": "soft_reset",
    "?": "unknown",
}


@dataclass(frozen=True)
class DomainState:
    """The six state characters of ``xl list`` (``r b p s <reason> d``)."""

    running: bool
    blocked: bool
    paused: bool
    shutdown: bool
    shutdown_reason: str | None
    dying: bool

    @classmethod
    def parse(cls, chars: str) -> DomainState:
        if not re.fullmatch(r"[r-][b-][p-][s-][-rscwS?][d-]", chars):
            raise XlParseError("invalid domain state", chars)
        shutdown = chars[3] == "s"
        return cls(
            running=chars[0] == "r",
            blocked=chars[1] == "b",
            paused=chars[2] == "p",
            shutdown=shutdown,
            shutdown_reason=SHUTDOWN_REASONS[chars[4]] if shutdown else None,
            dying=chars[5] == "d",
        )

    @property
    def names(self) -> list[str]:
        """State names for ``xen_domain_state``: running, blocked, paused, shutdown, crashed,
        dying (a crash is a shutdown whose reason is crash)."""
        names = [
            name
            for name, on in (
                ("running", self.running),
                ("blocked", self.blocked),
                ("paused", self.paused),
                ("shutdown", self.shutdown),
                ("crashed", self.shutdown_reason == "crash"),
                ("dying", self.dying),
            )
            if on
        ]
        return names


@dataclass(frozen=True)
class DomainInfo:
    """A row of ``xl list`` (``pool`` only with ``-c``)."""

    name: str
    domid: int
    memory_mib: int
    vcpus: int
    state: DomainState
    cpu_seconds: float
    pool: str | None = None


@dataclass(frozen=True)
class VerboseDomainInfo(DomainInfo):
    """A row of ``xl list -v``: adds the uuid, the shutdown reason code and security label."""

    uuid: str = ""
    reason_code: int | None = None
    security_label: str | None = None


@dataclass(frozen=True)
class Nic:
    devid: int
    mac: str | None
    bridge: str | None = None
    ifname: str | None = None
    nictype: str | None = None


@dataclass(frozen=True)
class LongDomainInfo:
    """What Judicator reads from ``xl list -l`` (libxl's domain configuration, as JSON)."""

    name: str
    domid: int
    uuid: str | None
    max_memory_kib: int | None
    target_memory_kib: int | None
    max_vcpus: int | None
    online_vcpus: int | None
    nics: tuple[Nic, ...] = ()
    scheduler: str | None = None
    weight: int | None = None
    cap: int | None = None


@dataclass(frozen=True)
class VcpuInfo:
    """A row of ``xl vcpu-list``; ``cpu`` is None for an offline vCPU."""

    name: str
    domid: int
    vcpu: int
    cpu: int | None
    running: bool
    blocked: bool
    online: bool
    time_seconds: float
    hard_affinity: str
    soft_affinity: str

    def hard_cpus(self, nr_cpus: int) -> frozenset[int]:
        return parse_cpulist(self.hard_affinity, nr_cpus)

    def soft_cpus(self, nr_cpus: int) -> frozenset[int]:
        return parse_cpulist(self.soft_affinity, nr_cpus)


@dataclass(frozen=True)
class XlInfo:
    """``xl info``. ``nr_cpus`` counts online CPUs; CPU ids go up to ``max_cpu_id``."""

    host: str
    nr_cpus: int
    max_cpu_id: int
    nr_nodes: int
    cores_per_socket: int
    threads_per_core: int
    cpu_mhz: float
    total_memory_mib: int
    free_memory_mib: int
    free_cpus: int
    xen_major: int
    xen_minor: int
    xen_extra: str
    xen_version: str
    xen_scheduler: str
    raw: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CpuPool:
    """A row of ``xl cpupool-list`` (``cpus`` with ``-c``; the counts without it)."""

    name: str
    n_cpus: int
    scheduler: str | None = None
    active: bool | None = None
    domain_count: int | None = None
    cpus: tuple[int, ...] | None = None


@dataclass(frozen=True)
class SchedParams:
    """A domain row of ``xl sched-credit`` / ``sched-credit2`` (pool from its ``Cpupool`` line)."""

    name: str
    domid: int
    weight: int
    cap: int
    pool: str | None = None


# --- parsers ---------------------------------------------------------------------------------

_LIST_HEADER = "Name                                        ID   Mem VCPUs\tState\tTime(s)"
_LIST_ROW = re.compile(
    r"(?P<name>\S.*?) +(?P<domid>\d+) +(?P<mem>\d+) +(?P<vcpus>\d+) +"
    r"(?P<state>[r-][b-][p-][s-][-rscwS?][d-]) +(?P<time>\d+\.\d)(?P<rest>.*)"
)
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_VERBOSE_REST = re.compile(
    rf" (?P<uuid>{_UUID}) +(?P<reason>-|[0-9a-f]+) +(?P<label>\S+)(?P<rest>.*)"
)


def _lines(text: str) -> list[str]:
    # xl ends every table with a newline; output without one was cut short (a killed or timed-out
    # xl), and its last row may look whole while it is not ("0,1" of "0,1,2,3").
    if text and not text.endswith("\n"):
        raise XlParseError("output cut short (no final newline)", text.splitlines()[-1])
    return [line for line in text.splitlines() if line.strip()]


def _header(lines: list[str], expected: str, what: str) -> list[str]:
    if not lines:
        raise XlParseError(f"{what}: empty output")
    if not lines[0].startswith(expected):
        raise XlParseError(f"{what}: unexpected header", lines[0])
    return lines[1:]


def _list_rows(text: str, verbose: bool) -> list[DomainInfo]:
    lines = _lines(text)
    header = lines[0] if lines else ""
    with_pool = "Cpupool" in header
    rows: list[DomainInfo] = []
    for line in _header(lines, _LIST_HEADER, "xl list"):
        match = _LIST_ROW.fullmatch(line)
        if match is None:
            raise XlParseError("xl list: unrecognised row", line)
        rest = match["rest"]
        extra: dict[str, object] = {}
        if verbose:
            verbose_match = _VERBOSE_REST.fullmatch(rest)
            if verbose_match is None:
                raise XlParseError("xl list -v: no uuid, reason code and label", line)
            reason = verbose_match["reason"]
            extra = {
                "uuid": verbose_match["uuid"],
                "reason_code": None if reason == "-" else int(reason, 16),
                "security_label": None if verbose_match["label"] == "-" else verbose_match["label"],
            }
            rest = verbose_match["rest"]
        pool = None
        if with_pool:
            pool = rest.strip() or None
            if pool is None or " " in pool:
                raise XlParseError("xl list -c: no cpupool", line)
        elif rest.strip():
            raise XlParseError("xl list: unexpected trailing text", line)
        cls = VerboseDomainInfo if verbose else DomainInfo
        rows.append(
            cls(
                name=match["name"],
                domid=int(match["domid"]),
                memory_mib=int(match["mem"]),
                vcpus=int(match["vcpus"]),
                state=DomainState.parse(match["state"]),
                cpu_seconds=float(match["time"]),
                pool=pool,
                **extra,
            )
        )
    return rows


def parse_list(text: str) -> list[DomainInfo]:
    """``xl list`` (or ``xl list -c``, then ``pool`` is set)."""
    return _list_rows(text, verbose=False)


def parse_list_verbose(text: str) -> list[VerboseDomainInfo]:
    """``xl list -v``."""
    rows = _list_rows(text, verbose=True)
    return [row for row in rows if isinstance(row, VerboseDomainInfo)]


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def parse_list_long(text: str) -> list[LongDomainInfo]:
    """``xl list -l``: a JSON array of ``{"domid": N, "config": {libxl_domain_config}}``."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        lines = text.splitlines()
        line = lines[e.lineno - 1] if 0 < e.lineno <= len(lines) else None
        raise XlParseError(f"xl list -l: invalid JSON ({e.msg})", line) from e
    if not isinstance(data, list):
        raise XlParseError("xl list -l: expected a JSON array", text.splitlines()[0])
    domains = []
    for entry in data:
        config = entry.get("config") if isinstance(entry, dict) else None
        domid = entry.get("domid") if isinstance(entry, dict) else None
        if not isinstance(config, dict) or not isinstance(domid, int):
            raise XlParseError("xl list -l: entry without domid and config", json.dumps(entry))
        c_info = config.get("c_info") or {}
        b_info = config.get("b_info") or {}
        name = c_info.get("name")
        if not isinstance(name, str):
            raise XlParseError("xl list -l: domain without a name", json.dumps(c_info))
        avail = b_info.get("avail_vcpus")
        sched = b_info.get("sched_params") or {}
        nics = tuple(
            Nic(
                devid=int(nic.get("devid", index)),
                mac=nic.get("mac"),
                bridge=nic.get("bridge"),
                ifname=nic.get("ifname"),
                nictype=nic.get("nictype"),
            )
            for index, nic in enumerate(config.get("nics") or [])
        )
        domains.append(
            LongDomainInfo(
                name=name,
                domid=domid,
                uuid=c_info.get("uuid"),
                max_memory_kib=_int_or_none(b_info.get("max_memkb")),
                target_memory_kib=_int_or_none(b_info.get("target_memkb")),
                max_vcpus=_int_or_none(b_info.get("max_vcpus")),
                online_vcpus=len(avail) if isinstance(avail, list) else None,
                nics=nics,
                scheduler=sched.get("sched"),
                weight=_int_or_none(sched.get("weight")),
                cap=_int_or_none(sched.get("cap")),
            )
        )
    return domains


_VCPU_HEADER = (
    "Name                                ID  VCPU   CPU State   Time(s) Affinity (Hard / Soft)"
)
_VCPU_ROW = re.compile(
    r"(?P<name>\S.*?) +(?P<domid>\d+) +(?P<vcpu>\d+) +(?P<cpu>\d+|-) +"
    r"(?P<state>[r-][b-][p-]) +(?P<time>\d+\.\d) +(?P<hard>\S+) / (?P<soft>\S+)"
)


def parse_vcpu_list(text: str) -> list[VcpuInfo]:
    """``xl vcpu-list``; the affinities stay xl CPU lists (see ``VcpuInfo.hard_cpus``)."""
    rows = []
    for line in _header(_lines(text), _VCPU_HEADER, "xl vcpu-list"):
        match = _VCPU_ROW.fullmatch(line)
        if match is None:
            raise XlParseError("xl vcpu-list: unrecognised row", line)
        state = match["state"]
        online = state[2] != "p"
        if online == (match["cpu"] == "-"):
            raise XlParseError("xl vcpu-list: CPU column contradicts the state", line)
        rows.append(
            VcpuInfo(
                name=match["name"],
                domid=int(match["domid"]),
                vcpu=int(match["vcpu"]),
                cpu=int(match["cpu"]) if online else None,
                running=state[0] == "r",
                blocked=state[1] == "b",
                online=online,
                time_seconds=float(match["time"]),
                hard_affinity=match["hard"],
                soft_affinity=match["soft"],
            )
        )
    return rows


_INFO_LINE = re.compile(r"(?P<key>[a-z_][a-z0-9_]*) *: ?(?P<value>.*)")
_INFO_REQUIRED = ("nr_cpus", "max_cpu_id", "xen_scheduler", "xen_version", "total_memory")


def parse_info(text: str) -> XlInfo:
    """``xl info`` (without ``-n``): ``key : value`` lines."""
    raw: dict[str, str] = {}
    for line in _lines(text):
        match = _INFO_LINE.fullmatch(line)
        if match is None:
            raise XlParseError("xl info: not a 'key : value' line", line)
        raw[match["key"]] = match["value"].strip()
    missing = [key for key in _INFO_REQUIRED if key not in raw]
    if missing:
        raise XlParseError(f"xl info: missing {', '.join(missing)}")

    def number(key: str, default: int = 0) -> int:
        value = raw.get(key)
        if value is None:
            return default
        try:
            return int(value)
        except ValueError:
            raise XlParseError(f"xl info: {key} is not a number", value) from None

    try:
        cpu_mhz = float(raw.get("cpu_mhz", "0"))
    except ValueError:
        raise XlParseError("xl info: cpu_mhz is not a number", raw["cpu_mhz"]) from None
    version_parts = raw["xen_version"].split(".")
    return XlInfo(
        host=raw.get("host", ""),
        nr_cpus=number("nr_cpus"),
        max_cpu_id=number("max_cpu_id"),
        nr_nodes=number("nr_nodes", 1),
        cores_per_socket=number("cores_per_socket"),
        threads_per_core=number("threads_per_core", 1),
        cpu_mhz=cpu_mhz,
        total_memory_mib=number("total_memory"),
        free_memory_mib=number("free_memory"),
        free_cpus=number("free_cpus"),
        xen_major=number("xen_major", int(version_parts[0]) if version_parts[0].isdigit() else 0),
        xen_minor=number("xen_minor"),
        xen_extra=raw.get("xen_extra", ""),
        xen_version=raw["xen_version"],
        xen_scheduler=raw["xen_scheduler"],
        raw=raw,
    )


_POOL_ROW = re.compile(
    r"(?P<name>\S.*?) *(?P<cpus>\d+) +(?P<sched>\S+) +(?P<active>[yn]) +(?P<domains>\d+)"
)
_POOL_CPUS_ROW = re.compile(r"(?P<name>\S*[^\d,\s]) *(?P<cpus>(?:\d+(?:,\d+)*)?)")


def parse_cpupool_list(text: str) -> list[CpuPool]:
    """``xl cpupool-list`` or ``xl cpupool-list -c`` (told apart by the header)."""
    lines = _lines(text)
    if lines and lines[0].startswith("Name") and lines[0].rstrip().endswith("CPU list"):
        pools = []
        for line in lines[1:]:
            # "%-19s" then the list: a name of 19 characters or more runs straight into the
            # first CPU id, and then only a name not ending in a digit can be told apart.
            if len(line) > 19 and line[18] == " ":
                name, cpu_text = line[:19].strip(), line[19:].strip()
            else:
                match = _POOL_CPUS_ROW.fullmatch(line.strip())
                if match is None:
                    raise XlParseError("xl cpupool-list -c: unrecognised row", line)
                name, cpu_text = match["name"], match["cpus"]
            if not name or not re.fullmatch(r"(?:\d+(?:,\d+)*)?", cpu_text):
                raise XlParseError("xl cpupool-list -c: unrecognised row", line)
            cpus = tuple(int(c) for c in cpu_text.split(",")) if cpu_text else ()
            pools.append(CpuPool(name=name, n_cpus=len(cpus), cpus=cpus))
        return pools
    pools = []
    for line in _header(lines, "Name               CPUs   Sched", "xl cpupool-list"):
        match = _POOL_ROW.fullmatch(line)
        if match is None:
            raise XlParseError("xl cpupool-list: unrecognised row", line)
        pools.append(
            CpuPool(
                name=match["name"],
                n_cpus=int(match["cpus"]),
                scheduler=match["sched"],
                active=match["active"] == "y",
                domain_count=int(match["domains"]),
            )
        )
    return pools


_SCHED_HEADER = re.compile(r"Name +ID +Weight +Cap")
_SCHED_POOL = re.compile(r"Cpupool (?P<pool>.+?): (?P<params>.*)")
_SCHED_ROW = re.compile(r"(?P<name>\S.*?) +(?P<domid>\d+) +(?P<weight>\d+) +(?P<cap>\d+)")


def parse_sched(text: str) -> list[SchedParams]:
    """``xl sched-credit`` / ``sched-credit2``: listing (with ``Cpupool`` lines) or ``-d``."""
    rows: list[SchedParams] = []
    pool: str | None = None
    seen_header = False
    for line in _lines(text):
        pool_match = _SCHED_POOL.fullmatch(line)
        if pool_match is not None:
            pool, seen_header = pool_match["pool"], False
            continue
        if _SCHED_HEADER.fullmatch(line):
            seen_header = True
            continue
        match = _SCHED_ROW.fullmatch(line)
        if match is None or not seen_header:
            raise XlParseError("xl sched-credit: unrecognised line", line)
        rows.append(
            SchedParams(
                name=match["name"],
                domid=int(match["domid"]),
                weight=int(match["weight"]),
                cap=int(match["cap"]),
                pool=pool,
            )
        )
    return rows


# --- argv builders for the commands that change a domain -------------------------------------


def set_cap_argv(xl_path: str, scheduler: str, domain: str, cap: int) -> tuple[str, ...]:
    """``xl sched-credit[2] -d DOMAIN -c CAP``: the command must match the cpupool's scheduler.

    A negative cap is refused: xl would read -1 as "leave unchanged".
    """
    if cap < 0:
        raise ValueError(f"CPU cap must be >= 0, not {cap}")
    return (xl_path, _sched_command(scheduler), "-d", domain, "-c", str(cap))


def pause_argv(xl_path: str, domain: str) -> tuple[str, ...]:
    """``xl pause DOMAIN`` (exits 0 even when libxl refused: check stderr or the state)."""
    return (xl_path, "pause", domain)


def unpause_argv(xl_path: str, domain: str) -> tuple[str, ...]:
    """``xl unpause DOMAIN`` (one per pause: Xen counts them)."""
    return (xl_path, "unpause", domain)


def vcpu_pin_argv(
    xl_path: str, domain: str, vcpu: int | str, hard: str, soft: str = "-"
) -> tuple[str, ...]:
    """``xl vcpu-pin DOMAIN VCPU HARD SOFT``; ``vcpu`` may be ``all``, ``-`` keeps an affinity."""
    return (xl_path, "vcpu-pin", domain, str(vcpu), hard, soft)


def _sched_command(scheduler: str) -> str:
    if scheduler not in SCHEDULERS:
        raise ValueError(f"no xl command for scheduler {scheduler!r}")
    return f"sched-{scheduler}"
