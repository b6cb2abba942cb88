"""The fake xl against xl's C formats, messages, exit codes and quirks (Xen 4.17 tools/xl).

Expected output is built here from the C format strings (Python's % formatting ignores the
``l`` length modifier and treats ``%u`` as ``%d``, so they are used verbatim), not with the
fake xl's own helpers. No root needed: a temporary XENSIM_STATE_DIR and domains without cgroups.
"""

# The expected output is written with the C format strings themselves, hence % formatting.
# ruff: noqa: UP031

from __future__ import annotations

import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sim import fakexl_sample
from xensim import fakexl
from xensim.state import HostState, StateStore
from xentools import xl as xlparse

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "xl"
REPO = Path(__file__).resolve().parents[2]
LIST_HEADER = "Name                                        ID   Mem VCPUs\tState\tTime(s)\n"
SCHED_HEADER = "%-33s %4s %6s %4s\n" % ("Name", "ID", "Weight", "Cap")


class Result:
    def __init__(self, status: int, out: str, err: str) -> None:
        self.status, self.out, self.err = status, out, err

    def __repr__(self) -> str:
        return f"Result({self.status}, out={self.out!r}, err={self.err!r})"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    yield fakexl_sample.write_sample(tmp_path / "state")


def xl(store: StateStore, *argv: str) -> Result:
    out = fakexl.Output()
    status = fakexl.run(list(argv), store, out)
    return Result(status, "".join(out.out), "".join(out.err))


def seconds(ns: int) -> float:
    """C's ``(float)ns / 1e9``: a single-precision copy divided in double precision."""
    value: float = struct.unpack("f", struct.pack("f", float(ns)))[0]
    return value / 1e9


def bitmap(cpus: set[int], maplen: int) -> str:
    """print_bitmap over ``maplen`` bits, written out from its state machine."""
    parts, i = [], 0
    while i < maplen:
        if i in cpus:
            start = i
            while i + 1 < maplen and i + 1 in cpus:
                i += 1
            parts.append(str(start) if start == i else f"{start}-{i}")
        i += 1
    if not parts:
        return "none"
    return (
        "all"
        if parts == [f"0-{maplen - 1}"] or (maplen == 1 and parts == ["0"])
        else ",".join(parts)
    )


def cpus_of(text: str, maplen: int) -> set[int]:
    if text == "all":
        return set(range(maplen))
    if text == "none":
        return set()
    result: set[int] = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        result.update(range(int(first), int(last or first) + 1))
    return result


# --- formats, byte for byte ------------------------------------------------------------------


def expected_list(host: HostState) -> str:
    lines = [LIST_HEADER]
    for d in sorted(host.domains, key=lambda d: d.domid):
        reason = (
            "-rscwS"[("poweroff", "reboot", "suspend", "crash").index(d.shutdown_reason)]
            if d.shutdown_reason
            else "-"
        )
        running = any(v.online and v.running for v in d.vcpus) and d.pause_count == 0
        online = [v for v in d.vcpus if v.online]
        blocked = bool(online) and all(v.blocked and not v.running for v in online)
        lines.append(
            "%-40s %5d %5lu %5d     %c%c%c%c%c%c  %8.1f\n"
            % (
                d.name,
                d.domid,
                d.memory_kib // 1024,
                len(online),
                "r" if running else "-",
                "b" if blocked else "-",
                "p" if d.pause_count else "-",
                "s" if d.shutdown_reason else "-",
                reason,
                "d" if d.dying else "-",
                seconds(d.cpu_time_ns),
            )
        )
    return "".join(lines)


def test_list_is_byte_exact(store: StateStore) -> None:
    result = xl(store, "list")
    assert (result.status, result.err) == (0, "")
    assert result.out == expected_list(store.read())
    assert result.out.splitlines()[0].count("\t") == 2


def test_list_verbose_and_cpupool_columns(store: StateStore) -> None:
    host = store.read()
    verbose = xl(store, "list", "-v").out.splitlines()
    assert verbose[0] == LIST_HEADER.rstrip("\n") + (
        "   UUID                            Reason-Code\tSecurity Label"
    )
    plain = expected_list(host).splitlines()[1:]
    for row, base, domain in zip(
        verbose[1:], plain, sorted(host.domains, key=lambda d: d.domid), strict=True
    ):
        code = " %8x" % 3 if domain.shutdown_reason == "crash" else " %8s" % "-"
        assert row == base + " " + domain.uuid + code + " %16s" % "-"
    pools = xl(store, "list", "-c").out.splitlines()
    assert pools[0] == LIST_HEADER.rstrip("\n") + "         Cpupool"
    for row, base, domain in zip(
        pools[1:], plain, sorted(host.domains, key=lambda d: d.domid), strict=True
    ):
        assert row == base + "%16s" % domain.pool


def test_vcpu_list_is_byte_exact(store: StateStore) -> None:
    host = store.read()
    maplen = host.nr_cpus
    expected = [
        "%-32s %5s %5s %5s %5s %9s %s\n"
        % ("Name", "ID", "VCPU", "CPU", "State", "Time(s)", "Affinity (Hard / Soft)")
    ]
    for d in sorted(host.domains, key=lambda d: d.domid):
        for v in d.vcpus:
            row = "%-32s %5u %5u" % (d.name, d.domid, v.id)
            if not v.online:
                row += "%5c %3c%cp " % ("-", "-", "-")
            else:
                row += "%5u %3c%c- " % (
                    v.cpu,
                    "r" if v.running and not d.pause_count else "-",
                    "b" if v.blocked and not v.running else "-",
                )
            row += "%9.1f  " % seconds(v.time_ns)
            row += bitmap(cpus_of(v.hard, maplen), maplen) + " / "
            row += bitmap(cpus_of(v.soft, maplen), maplen) + "\n"
            expected.append(row)
    result = xl(store, "vcpu-list")
    assert (result.status, result.err) == (0, "")
    assert result.out == "".join(expected)
    only = xl(store, "vcpu-list", "web01", "7")
    assert only.out == expected[0] + "".join(
        line for line in expected[1:] if line.split()[0] in ("web01", "batch02")
    )


def test_sched_listings_are_byte_exact(store: StateStore) -> None:
    host = store.read()
    by_id = sorted(host.domains, key=lambda d: d.domid)
    credit2 = "Cpupool %s: ratelimit=%dus\n" % ("Pool-0", 1000) + SCHED_HEADER
    credit2 += "".join(
        "%-33s %4d %6d %4d\n" % (d.name, d.domid, d.weight, d.cap)
        for d in by_id
        if d.pool == "Pool-0"
    )
    assert xl(store, "sched-credit2").out == credit2
    credit = "Cpupool %s: tslice=%dms ratelimit=%dus migration-delay=%dus\n" % (
        "batch-pool",
        30,
        1000,
        0,
    )
    credit += SCHED_HEADER + "%-33s %4d %6d %4d\n" % ("batch02", 7, 512, 0)
    assert xl(store, "sched-credit").out == credit
    single = xl(store, "sched-credit2", "-d", "web01")
    assert (single.status, single.out) == (
        0,
        SCHED_HEADER + "%-33s %4d %6d %4d\n" % ("web01", 3, 256, 50),
    )
    assert xl(store, "sched-credit2", "-p", "batch-pool").out == ""


def test_cpupool_list_is_byte_exact(store: StateStore) -> None:
    expected = "%-19s" % "Name" + "CPUs   Sched     Active   Domain count\n"
    expected += "%-19s" % "Pool-0" + "%3d %9s       y       %4d\n" % (6, "credit2", 4)
    expected += "%-19s" % "batch-pool" + "%3d %9s       y       %4d\n" % (1, "credit", 1)
    assert xl(store, "cpupool-list").out == expected
    with_cpus = "%-19s" % "Name" + "CPU list\n" + "%-19s" % "Pool-0" + "0,1,2,3,4,5\n"
    with_cpus += "%-19s" % "batch-pool" + "7\n"
    assert xl(store, "cpupool-list", "-c").out == with_cpus
    assert xl(store, "cpupool-list", "batch-pool").out.splitlines()[1:] == [
        "%-19s" % "batch-pool" + "%3d %9s       y       %4d" % (1, "credit", 1)
    ]


def test_network_list_is_byte_exact(store: StateStore) -> None:
    host = store.read()
    web = host.domain("web01")
    expected = "%-3s %-2s %-17s %-6s %-5s %-6s %5s/%-5s %-30s\n" % (
        "Idx",
        "BE",
        "Mac Addr.",
        "handle",
        "state",
        "evt-ch",
        "tx-",
        "rx-ring-ref",
        "BE-path",
    )
    for devid in web.vifs:
        mac = web.mac(devid)
        assert mac.startswith("00:16:3e:") and len(mac) == 17
        expected += "%-3d %-2d " % (devid, 0) + mac
        expected += "%6d %5d %6d %5d/%-11d %-30s\n" % (
            devid, 4, 19 + 2 * devid, 1280 + 2 * devid, 1281 + 2 * devid,
            "/local/domain/0/backend/vif/3/%d" % devid,
        )  # fmt: skip
    assert xl(store, "network-list", "web01").out == expected


def test_info_layout(store: StateStore) -> None:
    result = xl(store, "info")
    lines = result.out.splitlines()
    keys = [line.split(":")[0].rstrip() for line in lines]
    assert keys[:6] == ["host", "release", "version", "machine", "nr_cpus", "max_cpu_id"]
    assert keys[-1] == "xend_config_format"
    assert all(line[23:25] == ": " for line in lines), lines
    values = {key: line[25:] for key, line in zip(keys, lines, strict=True)}
    assert (values["nr_cpus"], values["max_cpu_id"]) == ("7", "7")
    assert values["xen_version"] == "4.17.7"
    assert xl(store, "info", "xen_sched").out == "credit2\n"
    assert xl(store, "info", "nr_").out == "7\n1\n"


def test_list_long_is_json_in_yajl_layout(store: StateStore) -> None:
    text = xl(store, "list", "-l", "web01").out
    assert text.startswith('[\n    {\n        "domid": 3,\n        "config": {\n')
    assert '"type.pvh": {\n\n                }' in text
    [web] = xlparse.parse_list_long(text)
    assert (web.name, web.target_memory_kib, web.cap) == ("web01", 2 * 1024 * 1024, 50)


def test_fixtures_match_a_regeneration() -> None:
    for stem, text in fakexl_sample.captures().items():
        assert (FIXTURES / f"{stem}.txt").read_text() == text, f"{stem}.txt differs: regenerate"


# --- errors and exit codes -------------------------------------------------------------------

ERRORS = [
    # (argv, status, stdout, stderr)
    (["list", "nosuch"], 1, "", "nosuch is an invalid domain identifier (rc=-6)\n"),
    (["list", "99"], 1, "", "Error: Domain '99' does not exist.\n"),
    (["pause", "nosuch"], 1, "", "nosuch is an invalid domain identifier (rc=-6)\n"),
    (
        ["domid", "nosuch"],
        1,
        "",
        "Can't get domid of domain name 'nosuch', maybe this domain does not exist.\n",
    ),
    (["domid", "web01"], 0, "3\n", ""),
    (["domname", "7"], 0, "batch02\n", ""),
    (["domname", "abc"], 1, "", "Invalid domain id.\n\n"),
    (
        ["domname", "99"],
        1,
        "",
        "Can't get domain name of domain id '99', maybe this domain does not exist.\n",
    ),
    (["cpupool-list", "nosuch"], 1, "", "Pool 'nosuch' does not exist\n"),
    (["list", "-q"], 2, "", "option `q' not supported.\n"),
    (["sched-credit2", "-d"], 2, "", "option `d' not supported.\n"),
    (["frobnicate"], 1, "", "command not implemented\n"),
    (["-N", "list"], 1, "", "command does not implement -N (dryrun) option\n"),
    (["sched-credit2", "-p", "nosuch"], 1, "", "unknown cpupool 'nosuch'\n"),
    (["sched-credit2", "-w", "5"], 1, "", "Must specify a domain.\n"),
    (
        ["sched-credit2", "-d", "web01", "-p", "Pool-0"],
        1,
        "",
        "Specifying a cpupool is not allowed with other options.\n",
    ),
    (
        ["sched-credit", "-t", "5"],
        1,
        "",
        "Must specify schedparam to set schedule parameter values.\n",
    ),
    (["mem-set", "web01", "12q"], 1, "", "invalid memory size: 12q\n"),
]


@pytest.mark.parametrize(("argv", "status", "out", "err"), ERRORS, ids=lambda v: repr(v))
def test_errors(store: StateStore, argv: list[str], status: int, out: str, err: str) -> None:
    result = xl(store, *argv)
    assert (result.status, result.out, result.err) == (status, out, err)


def test_missing_argument_prints_help_and_exits_2(store: StateStore) -> None:
    result = xl(store, "pause")
    assert result.status == 2
    assert result.err == "'xl pause' requires at least 1 argument.\n\n"
    assert result.out == "Usage: xl [-vtTN] pause <Domain>\n\nPause execution of a domain.\n\n"
    assert xl(store, "vcpu-pin", "web01", "0").err.startswith(
        "'xl vcpu-pin' requires at least 3 arguments."
    )


def test_help_option_exits_0(store: StateStore) -> None:
    result = xl(store, "sched-credit2", "-h")
    assert result.status == 0
    assert result.out.startswith(
        "Usage: xl [-vtTN] sched-credit2 [-d <Domain> [-w[=WEIGHT]]] [-p CPUPOOL]\n"
    )
    assert "-c CAP,    --cap=CAP           Cap (int)\n" in result.out


def test_without_hypervisor_state(tmp_path: Path) -> None:
    result = xl(StateStore(tmp_path / "nothing"), "list")
    assert result.status == 1
    assert result.err.endswith("cannot init xl context\n")
    assert "libxl: error: libxl.c:102:libxl_ctx_alloc: cannot open libxc handle" in result.err


# --- pause / unpause -------------------------------------------------------------------------


def test_pause_is_reference_counted(store: StateStore) -> None:
    def state() -> str:
        return xl(store, "list", "web01").out.splitlines()[1].split()[4]

    assert state() == "-b----"
    assert xl(store, "pause", "web01").status == 0
    assert xl(store, "pause", "3").status == 0
    assert state() == "-bp---"
    assert store.read().domain("web01").pause_count == 2
    xl(store, "unpause", "web01")
    assert state() == "-bp---"
    xl(store, "unpause", "web01")
    assert state() == "-b----"
    again = xl(store, "unpause", "web01")
    assert again.status == 0  # xl ignores libxl's failure
    assert again.err == (
        "libxl: error: libxl_domain.c:688:domain_unpause_done: Domain 3:Unpausing domain: "
        "Invalid argument\n"
    )
    assert store.read().domain("web01").pause_count == 0


def test_pause_count_overflows_at_255(store: StateStore) -> None:
    with store.transaction() as host:
        host.domain("web01").pause_count = 254
    assert xl(store, "pause", "web01").err == ""
    assert store.read().domain("web01").pause_count == 255
    over = xl(store, "pause", "web01")
    assert over.status == 0
    assert over.err == (
        "libxl: error: libxl_domain.c:587:libxl_domain_pause: Domain 3:Pausing domain: "
        "Value too large for defined data type\n"
    )
    assert store.read().domain("web01").pause_count == 255


def test_pause_of_a_missing_domid_exits_0(store: StateStore) -> None:
    result = xl(store, "pause", "42")
    assert result.status == 0
    assert result.err.endswith("Domain 42:Pausing domain: No such process\n")


# --- caps and weights ------------------------------------------------------------------------

CAPS = [
    # (domain, cap argument, status, cap afterwards, stderr)
    ("batch02", "400", 0, 400, ""),  # 4 vCPUs on a credit pool
    ("web01", "200", 0, 200, ""),  # 2 vCPUs (one offline: libxl counts max_vcpu_id + 1)
    ("web01", "0", 0, 0, ""),
    ("web01", "abc", 0, 0, ""),  # strtol garbage is 0: uncapped
    ("web01", "75%", 0, 75, ""),
    ("web01", "-1", 0, 50, ""),  # LIBXL_DOMAIN_SCHED_PARAM_CAP_DEFAULT: unchanged
    ("web01", "4294967336", 0, 40, ""),  # int truncation of strtol's long: 40
    (
        "web01",
        "201",
        1,
        50,
        "libxl: error: libxl_sched.c:455:sched_credit2_domain_set: Domain 3:Cpu cap out of "
        "range, valid range is from 0 to 200 for specified number of vcpus\n"
        "libxl_domain_sched_params_set failed.\n",
    ),
    (
        "web01",
        "-5",
        1,
        50,
        "libxl: error: libxl_sched.c:455:sched_credit2_domain_set: Domain 3:Cpu cap out of "
        "range, valid range is from 0 to 200 for specified number of vcpus\n"
        "libxl_domain_sched_params_set failed.\n",
    ),
]


@pytest.mark.parametrize(("domain", "cap", "status", "after", "err"), CAPS)
def test_cap(store: StateStore, domain: str, cap: str, status: int, after: int, err: str) -> None:
    command = "sched-credit" if domain == "batch02" else "sched-credit2"
    result = xl(store, command, "-d", domain, "-c", cap)
    assert (result.status, result.out, result.err) == (status, "", err)
    assert store.read().domain(domain).cap == after


def test_weight_range(store: StateStore) -> None:
    bad = xl(store, "sched-credit2", "-d", "web01", "-w", "0")
    assert bad.status == 1
    assert "Cpu weight out of range, valid values are within range from 1 to 65535" in bad.err
    good = xl(store, "sched-credit2", "--domain=web01", "--weight", "1024")
    assert good.status == 0
    assert store.read().domain("web01").weight == 1024


def test_wrong_scheduler_fails_as_xl_does(store: StateStore) -> None:
    read = xl(store, "sched-credit", "-d", "web01")
    assert (read.status, read.out) == (1, SCHED_HEADER)
    assert read.err == "libxl_domain_sched_params_get returned credit2 not credit.\n"
    write = xl(store, "sched-credit", "-d", "web01", "-c", "10")
    assert (write.status, write.out) == (1, "")
    assert write.err == (
        "libxl: error: libxl_sched.c:232:sched_credit_domain_set: Domain 3:Getting domain sched "
        "credit: Invalid argument\nlibxl_domain_sched_params_set failed.\n"
    )
    other = xl(store, "sched-credit2", "-d", "batch02")
    assert other.err == "libxl_domain_sched_params_get returned credit not credit2.\n"
    assert store.read().domain("web01").cap == 50


# --- mem-set ---------------------------------------------------------------------------------

MEMORY = [
    ("1024", 1024 * 1024),
    ("512m", 512 * 1024),
    ("512M", 512 * 1024),
    ("1g", 1024 * 1024),
    ("2G", 2 * 1024 * 1024),
    ("1048576k", 1024 * 1024),
    ("1073741824b", 1024 * 1024),
    ("1073741824B", 1024 * 1024),
    (" 100", 100 * 1024),
]


@pytest.mark.parametrize(("size", "kib"), MEMORY)
def test_mem_set_units(store: StateStore, size: str, kib: int) -> None:
    result = xl(store, "mem-set", "web01", size)
    assert (result.status, result.err) == (0, "")
    assert store.read().domain("web01").memory_kib == kib


@pytest.mark.parametrize("size", ["1.5g", "1gb", "x", "10kk"])
def test_mem_set_invalid_sizes(store: StateStore, size: str) -> None:
    result = xl(store, "mem-set", "web01", size)
    assert (result.status, result.err) == (1, f"invalid memory size: {size}\n")


def test_mem_set_above_static_max(store: StateStore) -> None:
    result = xl(store, "mem-set", "web01", "3g")
    assert result.status == 1
    assert result.err == (
        "libxl: error: libxl_mem.c:278:libxl_set_memory_target: Domain 3:memory_dynamic_max "
        "must be less than or equal to memory_static_max\n\n"
        "cannot set domid 3 dynamic max memory to : 3g\n"
    )
    assert store.read().domain("web01").memory_kib == 2 * 1024 * 1024
    long = fakexl_sample.LONG_NAME
    assert xl(store, "mem-set", long, "1g").status == 0  # up to its max (1 GiB), above current
    assert xl(store, "list", long).out.split()[8] == "1024"


# --- vcpu-pin --------------------------------------------------------------------------------

PINS = [
    # (argv after the domain, status, vcpu 0 (hard, soft, cpu), vcpu 1 (hard, soft, cpu), stderr)
    (["0", "3"], 0, ("3", "all", 3), ("1-2", "all", 1), ""),
    (["0", "2-4"], 0, ("2-4", "all", 2), ("1-2", "all", 1), ""),  # already on 2: stays
    (["0", "all,^2"], 0, ("0-1,3-7", "all", 0), ("1-2", "all", 1), ""),
    (["0", "-", "1-5"], 0, ("1-2", "1-5", 2), ("1-2", "all", 1), ""),
    (["1", "0-3,^0", "-"], 0, ("1-2", "all", 2), ("1-3", "all", 1), ""),
    (["all", "5"], 0, ("5", "all", 5), ("5", "all", 5), ""),
    (["all", "4-7", "all"], 0, ("4-7", "all", 4), ("4-7", "all", 4), ""),  # 6 offline, 7 other pool
    (["0", "0-9"], 0, ("all", "all", 2), ("1-2", "all", 1), ""),  # bits past the last CPU dropped
    (["0", "x"], 1, ("1-2", "all", 2), ("1-2", "all", 1), "Invalid pcpu range: x.\n"),
    (["0", "3-1"], 1, ("1-2", "all", 2), ("1-2", "all", 1), "Invalid pcpu range: 3-1.\n"),
    (["0", "^all"], 1, ("1-2", "all", 2), ("1-2", "all", 1), 'Can\'t combine "^" and "all".\n'),
    (["x", "3"], 1, ("1-2", "all", 2), ("1-2", "all", 1), "Error: Invalid argument x as VCPU.\n"),
    (
        ["5", "3"],
        1,
        ("1-2", "all", 2),
        ("1-2", "all", 1),
        "libxl: error: libxl_sched.c:62:libxl__set_vcpuaffinity: Domain 3:Setting vcpu "
        "affinity: Invalid argument\nCould not set affinity for vcpu `5'.\n",
    ),
    (
        ["0", "7"],  # only in another pool
        1,
        ("1-2", "all", 2),
        ("1-2", "all", 1),
        "libxl: error: libxl_sched.c:62:libxl__set_vcpuaffinity: Domain 3:Setting vcpu "
        "affinity: Invalid argument\nCould not set affinity for vcpu `0'.\n",
    ),
    (
        ["all", "6-7"],  # fails for every vCPU, and xl still exits 0
        0,
        ("1-2", "all", 2),
        ("1-2", "all", 1),
        "libxl: error: libxl_sched.c:62:libxl__set_vcpuaffinity: Domain 3:Setting vcpu "
        "affinity: Invalid argument\n"
        "libxl: warning: libxl_sched.c:124:libxl_set_vcpuaffinity_all: Domain 3:Failed to set "
        "affinity for 0\n"
        "libxl: error: libxl_sched.c:62:libxl__set_vcpuaffinity: Domain 3:Setting vcpu "
        "affinity: Invalid argument\n"
        "libxl: warning: libxl_sched.c:124:libxl_set_vcpuaffinity_all: Domain 3:Failed to set "
        "affinity for 1\n"
        "Could not set affinity.\n",
    ),
    (
        ["0", "-", "4"],
        0,
        ("1-2", "4", 2),
        ("1-2", "all", 1),
        "libxl: warning: libxl_sched.c:84:libxl__set_vcpuaffinity: Domain 3:All cpus in soft "
        "affinity of vcpu 0 are unreachable. Only hard affinity will be considered for "
        "scheduling\n",
    ),
    (
        ["-f", "all", "3"],
        1,
        ("1-2", "all", 2),
        ("1-2", "all", 1),
        "Error: --force and 'all' as VCPU not allowed.\n",
    ),
    (["0", "-"], 1, ("1-2", "all", 2), ("1-2", "all", 1), "Could not set affinity for vcpu `0'.\n"),
]


@pytest.mark.parametrize(("args", "status", "vcpu0", "vcpu1", "err"), PINS, ids=lambda v: repr(v))
def test_vcpu_pin(
    store: StateStore,
    args: list[str],
    status: int,
    vcpu0: tuple[str, str, int],
    vcpu1: tuple[str, str, int],
    err: str,
) -> None:
    options = [a for a in args if a.startswith("-") and len(a) == 2 and a != "-"]
    rest = [a for a in args if a not in options]
    result = xl(store, "vcpu-pin", *options, "web01", *rest)
    assert (result.status, result.out, result.err) == (status, "", err)
    web = store.read().domain("web01")
    assert [(v.hard, v.soft, v.cpu) for v in web.vcpus] == [vcpu0, vcpu1]
    rows = xlparse.parse_vcpu_list(xl(store, "vcpu-list", "web01").out)
    assert [(r.hard_affinity, r.soft_affinity) for r in rows] == [vcpu0[:2], vcpu1[:2]]


def test_vcpu_pin_dry_run_changes_nothing(store: StateStore) -> None:
    result = xl(store, "-N", "vcpu-pin", "web01", "0", "3-5", "all")
    assert (result.status, result.out) == (0, "cpumap: 3-5 all\n")
    assert store.read().domain("web01").vcpus[0].hard == "1-2"


# --- effects on the guest's cgroup -----------------------------------------------------------


class FakeCgroups:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[str, str, object]] = []
        self.fail = fail

    def set_cpu_cap(self, cgroup: str, cap_percent: int) -> None:
        if self.fail:
            raise OSError("cgroup is gone")
        self.calls.append(("cap", cgroup, cap_percent))

    def set_frozen(self, cgroup: str, frozen: bool) -> None:
        if self.fail:
            raise OSError("cgroup is gone")
        self.calls.append(("frozen", cgroup, frozen))


def with_cgroup(
    store: StateStore, monkeypatch: pytest.MonkeyPatch, fail: bool = False
) -> FakeCgroups:
    import xensim

    fake = FakeCgroups(fail)
    monkeypatch.setitem(sys.modules, "xensim.cgroups", fake)
    monkeypatch.setattr(xensim, "cgroups", fake, raising=False)
    with store.transaction() as host:
        host.domain("web01").cgroup = "fakexl-test/web01"
    return fake


def test_cap_and_pause_act_on_the_cgroup(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = with_cgroup(store, monkeypatch)
    xl(store, "sched-credit2", "-d", "web01", "-c", "25")
    xl(store, "pause", "web01")
    xl(store, "pause", "web01")
    xl(store, "unpause", "web01")
    assert fake.calls == [("cap", "fakexl-test/web01", 25), ("frozen", "fakexl-test/web01", True)]
    xl(store, "unpause", "web01")
    xl(store, "unpause", "web01")  # refused by "Xen": no second thaw
    xl(store, "sched-credit2", "-d", "batch02", "-c", "25")  # no cgroup: state only
    assert fake.calls[2:] == [("frozen", "fakexl-test/web01", False)]


def test_a_failing_effect_changes_nothing(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    with_cgroup(store, monkeypatch, fail=True)
    monkeypatch.setenv("XENSIM_STATE_DIR", store.dir)
    status = fakexl.main(["sched-credit2", "-d", "web01", "-c", "25"])
    assert status == 1
    assert store.read().domain("web01").cap == 50
    assert fakexl.main(["pause", "web01"]) == 1
    assert store.read().domain("web01").pause_count == 0


# --- round trip: fake xl output parsed by xentools.xl gives back the state -------------------


def test_round_trip(store: StateStore) -> None:
    host = store.read()
    by_name = {d.name: d for d in host.domains}
    listed = xlparse.parse_list(xl(store, "list").out)
    assert [r.name for r in listed] == [d.name for d in sorted(host.domains, key=lambda d: d.domid)]
    for row in listed:
        domain = by_name[row.name]
        assert row.domid == domain.domid
        assert row.memory_mib == domain.memory_kib // 1024
        assert row.vcpus == domain.online_vcpus
        assert row.state.paused == (domain.pause_count > 0)
        assert row.state.dying == domain.dying
        assert row.state.shutdown_reason == domain.shutdown_reason
        assert row.cpu_seconds == pytest.approx(domain.cpu_time_ns / 1e9, abs=0.06)
    verbose = xlparse.parse_list_verbose(xl(store, "list", "-v").out)
    assert {r.name: r.uuid for r in verbose} == {d.name: d.uuid for d in host.domains}
    pools = {r.name: r.pool for r in xlparse.parse_list(xl(store, "list", "-c").out)}
    assert pools == {d.name: d.pool for d in host.domains}
    long = {r.name: r for r in xlparse.parse_list_long(xl(store, "list", "-l").out)}
    for name, domain in by_name.items():
        assert (long[name].domid, long[name].uuid) == (domain.domid, domain.uuid)
        assert long[name].max_memory_kib == domain.max_memory_kib
        assert long[name].target_memory_kib == domain.memory_kib
        assert [n.mac for n in long[name].nics] == [domain.mac(i) for i in domain.vifs]
    vcpus = xlparse.parse_vcpu_list(xl(store, "vcpu-list").out)
    info = xlparse.parse_info(xl(store, "info").out)
    assert (info.nr_cpus, info.max_cpu_id + 1) == (len(host.online_cpus), host.nr_cpus)
    for vcpu_row in vcpus:
        vcpu = by_name[vcpu_row.name].vcpus[vcpu_row.vcpu]
        assert vcpu_row.online == vcpu.online
        assert vcpu_row.cpu == (vcpu.cpu if vcpu.online else None)
        assert vcpu_row.hard_cpus(info.max_cpu_id + 1) == cpus_of(vcpu.hard, host.nr_cpus)
        assert vcpu_row.soft_cpus(info.max_cpu_id + 1) == cpus_of(vcpu.soft, host.nr_cpus)
    cpupools = xlparse.parse_cpupool_list(xl(store, "cpupool-list").out)
    assert {p.name: p.scheduler for p in cpupools} == {p.name: p.scheduler for p in host.pools}
    with_cpus = xlparse.parse_cpupool_list(xl(store, "cpupool-list", "-c").out)
    assert {p.name: list(p.cpus or ()) for p in with_cpus} == {p.name: p.cpus for p in host.pools}
    sched = xlparse.parse_sched(xl(store, "sched-credit2").out + xl(store, "sched-credit").out)
    assert {r.name: (r.weight, r.cap, r.pool) for r in sched} == {
        d.name: (d.weight, d.cap, d.pool) for d in host.domains
    }


# --- as a program ----------------------------------------------------------------------------


def test_runs_as_a_program(store: StateStore) -> None:
    env = dict(os.environ, XENSIM_STATE_DIR=store.dir, PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, "-m", "xensim.fakexl", "list"],
        capture_output=True, text=True, env=env, timeout=30, check=False,
    )  # fmt: skip
    assert (result.returncode, result.stdout, result.stderr) == (0, xl(store, "list").out, "")
    failing = subprocess.run(
        [sys.executable, "-m", "xensim.fakexl", "sched-credit", "-d", "web01"],
        capture_output=True, text=True, env=env, timeout=30, check=False,
    )  # fmt: skip
    assert (failing.returncode, failing.stdout) == (1, SCHED_HEADER)
    assert failing.stderr == "libxl_domain_sched_params_get returned credit2 not credit.\n"
