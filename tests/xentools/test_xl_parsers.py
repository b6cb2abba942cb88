"""xentools.xl parsers and xentools.cpulist: table-driven over the reference's samples and
captures of the fake xl (tests/fixtures/xl/README.md), plus malformed input."""

from __future__ import annotations

from pathlib import Path

import pytest

from xentools.cpulist import CpuListError, format_cpulist, is_cpulist, parse_cpulist
from xentools.xl import (
    DomainState,
    XlParseError,
    parse_cpupool_list,
    parse_info,
    parse_list,
    parse_list_long,
    parse_list_verbose,
    parse_sched,
    parse_vcpu_list,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "xl"
LONG_NAME = "a-guest-with-a-name-longer-than-forty-characters"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


# --- xl list ---------------------------------------------------------------------------------

LIST_CASES: dict[str, list[tuple[str, int, int, int, str, float, str | None]]] = {
    # file: [(name, domid, MiB, vcpus, state chars, seconds, pool)]
    "ref-list.txt": [
        ("Domain-0", 0, 4096, 8, "r-----", 98765.4, None),
        ("web01", 7, 2048, 2, "-b----", 1234.5, None),
        ("batch02", 9, 8192, 4, "--p---", 55.0, None),
    ],
    "fake-list.txt": [
        ("Domain-0", 0, 2048, 2, "r-----", 98765.4, None),
        ("web01", 3, 2048, 1, "-b----", 1234.6, None),
        (LONG_NAME, 4, 512, 1, "--p---", 55.0, None),
        ("batch02", 7, 8192, 4, "r-----", 3600.1, None),
        ("dead01", 8, 256, 1, "-b-scd", 0.0, None),
    ],
    "fake-list-c.txt": [
        ("Domain-0", 0, 2048, 2, "r-----", 98765.4, "Pool-0"),
        ("web01", 3, 2048, 1, "-b----", 1234.6, "Pool-0"),
        (LONG_NAME, 4, 512, 1, "--p---", 55.0, "Pool-0"),
        ("batch02", 7, 8192, 4, "r-----", 3600.1, "batch-pool"),
        ("dead01", 8, 256, 1, "-b-scd", 0.0, "Pool-0"),
    ],
}


@pytest.mark.parametrize("name", sorted(LIST_CASES))
def test_parse_list(name: str) -> None:
    rows = parse_list(fixture(name))
    got = [(r.name, r.domid, r.memory_mib, r.vcpus, r.state, r.cpu_seconds, r.pool) for r in rows]
    expected = [
        (n, d, m, v, DomainState.parse(s), t, p) for n, d, m, v, s, t, p in LIST_CASES[name]
    ]
    assert got == expected


def test_domain_state_letters() -> None:
    crashed = DomainState.parse("-b-scd")
    assert crashed.shutdown and crashed.shutdown_reason == "crash" and crashed.dying
    assert crashed.names == ["blocked", "shutdown", "crashed", "dying"]
    assert DomainState.parse("--p---").names == ["paused"]
    assert DomainState.parse("---sr-").shutdown_reason == "reboot"
    assert DomainState.parse("r-----").shutdown_reason is None


def test_parse_list_verbose() -> None:
    rows = parse_list_verbose(fixture("fake-list-v.txt"))
    assert [(r.name, r.uuid, r.reason_code, r.security_label) for r in rows] == [
        ("Domain-0", "00000000-0000-0000-0000-000000000000", None, None),
        ("web01", "6f9b3c52-2a8e-4d6b-9d3e-0c1f2a3b4c5d", None, None),
        (LONG_NAME, "0a1b2c3d-4e5f-4061-8273-94a5b6c7d8e9", None, None),
        ("batch02", "11111111-2222-4333-8444-555555555555", None, None),
        ("dead01", "deadbeef-0000-4000-8000-000000000001", 3, None),
    ]
    assert rows[4].state.shutdown_reason == "crash"


def test_parse_list_long() -> None:
    rows = {r.name: r for r in parse_list_long(fixture("fake-list-l.txt"))}
    assert sorted(rows) == sorted(["Domain-0", "web01", LONG_NAME, "batch02", "dead01"])
    web = rows["web01"]
    assert (web.domid, web.uuid) == (3, "6f9b3c52-2a8e-4d6b-9d3e-0c1f2a3b4c5d")
    assert (web.max_memory_kib, web.target_memory_kib) == (2097152, 2097152)
    assert (web.max_vcpus, web.online_vcpus) == (2, 1)
    assert (web.scheduler, web.weight, web.cap) == ("credit2", 256, 50)
    assert [(n.devid, n.mac) for n in web.nics] == [
        (0, "00:16:3e:6f:9b:3c"),
        (1, "00:16:3e:6f:9b:3d"),
    ]
    assert rows[LONG_NAME].max_memory_kib == 1048576
    assert rows[LONG_NAME].target_memory_kib == 524288
    assert rows["batch02"].nics[0].ifname == "batch02-eth"
    assert rows["batch02"].scheduler == "credit"
    assert rows["dead01"].nics == ()


# --- xl vcpu-list ----------------------------------------------------------------------------

VCPU_CASES = {
    # file: [(name, domid, vcpu, cpu, state, seconds, hard, soft)]
    "ref-vcpu-list.txt": [
        ("Domain-0", 0, 0, 3, "r--", 12345.6, "all", "all"),
        ("Domain-0", 0, 1, 5, "-b-", 11000.2, "all", "all"),
        ("web01", 7, 0, 2, "---", 873.4, "2-3", "all"),
        ("web01", 7, 1, None, "--p", 0.0, "2-3", "all"),
    ],
    "fake-vcpu-list.txt": [
        ("Domain-0", 0, 0, 0, "r--", 50000.0, "0", "all"),
        ("Domain-0", 0, 1, 0, "-b-", 48765.4, "0", "all"),
        ("web01", 3, 0, 2, "-b-", 873.4, "1-2", "all"),
        ("web01", 3, 1, None, "--p", 0.0, "1-2", "all"),
        (LONG_NAME, 4, 0, 3, "---", 55.0, "3", "all"),
        ("batch02", 7, 0, 7, "r--", 900.0, "7", "all"),
        ("batch02", 7, 1, 7, "-b-", 900.0, "7", "all"),
        ("batch02", 7, 2, 7, "-b-", 900.0, "7", "all"),
        ("batch02", 7, 3, 7, "-b-", 900.0, "7", "all"),
        ("dead01", 8, 0, 0, "-b-", 0.0, "all", "4-5"),
    ],
}


@pytest.mark.parametrize("name", sorted(VCPU_CASES))
def test_parse_vcpu_list(name: str) -> None:
    rows = parse_vcpu_list(fixture(name))
    got = [
        (
            r.name,
            r.domid,
            r.vcpu,
            r.cpu,
            ("r" if r.running else "-") + ("b" if r.blocked else "-") + ("-" if r.online else "p"),
            r.time_seconds,
            r.hard_affinity,
            r.soft_affinity,
        )
        for r in rows
    ]
    assert got == VCPU_CASES[name]


def test_vcpu_affinity_sets() -> None:
    rows = parse_vcpu_list(fixture("fake-vcpu-list.txt"))
    assert rows[2].hard_cpus(8) == {1, 2}
    assert rows[9].hard_cpus(8) == set(range(8))
    assert rows[9].soft_cpus(8) == {4, 5}


# --- xl info ---------------------------------------------------------------------------------


def test_parse_info() -> None:
    info = parse_info(fixture("fake-info.txt"))
    assert (info.nr_cpus, info.max_cpu_id, info.nr_nodes) == (7, 7, 1)
    assert (info.xen_major, info.xen_minor, info.xen_extra) == (4, 17, ".7")
    assert (info.xen_version, info.xen_scheduler) == ("4.17.7", "credit2")
    assert (info.total_memory_mib, info.free_cpus, info.cpu_mhz) == (32768, 0, 2394.0)
    assert info.free_memory_mib == 32768 - (2048 + 2048 + 512 + 8192 + 256)
    assert info.host == "sim-sample"
    assert info.raw["xend_config_format"] == "4"
    assert info.raw["xen_changeset"] == ""


# --- xl cpupool-list -------------------------------------------------------------------------


def test_parse_cpupool_list() -> None:
    pools = parse_cpupool_list(fixture("fake-cpupool-list.txt"))
    assert [(p.name, p.n_cpus, p.scheduler, p.active, p.domain_count) for p in pools] == [
        ("Pool-0", 6, "credit2", True, 4),
        ("batch-pool", 1, "credit", True, 1),
    ]


def test_parse_cpupool_list_cpus() -> None:
    pools = parse_cpupool_list(fixture("fake-cpupool-list-c.txt"))
    assert [(p.name, p.cpus) for p in pools] == [
        ("Pool-0", (0, 1, 2, 3, 4, 5)),
        ("batch-pool", (7,)),
    ]


def test_parse_cpupool_list_cpus_long_name_and_empty_pool() -> None:
    text = "Name               CPU list\nPool-with-a-long-name0,1\nempty\n"
    pools = parse_cpupool_list(text)
    assert [(p.name, p.cpus) for p in pools] == [
        ("Pool-with-a-long-name", (0, 1)),
        ("empty", ()),
    ]


# --- xl sched-credit / sched-credit2 ---------------------------------------------------------

SCHED_CASES = {
    "ref-sched-credit.txt": [("Domain-0", 0, 256, 0, "Pool-0"), ("web01", 7, 256, 50, "Pool-0")],
    "fake-sched-credit2.txt": [
        ("Domain-0", 0, 256, 0, "Pool-0"),
        ("web01", 3, 256, 50, "Pool-0"),
        (LONG_NAME, 4, 256, 0, "Pool-0"),
        ("dead01", 8, 256, 0, "Pool-0"),
    ],
    "fake-sched-credit.txt": [("batch02", 7, 512, 0, "batch-pool")],
    "fake-sched-credit2-d.txt": [("web01", 3, 256, 50, None)],
}


@pytest.mark.parametrize("name", sorted(SCHED_CASES))
def test_parse_sched(name: str) -> None:
    rows = parse_sched(fixture(name))
    assert [(r.name, r.domid, r.weight, r.cap, r.pool) for r in rows] == SCHED_CASES[name]


def test_parse_sched_empty_listing() -> None:
    """A scheduler no pool uses lists nothing, and exits 0."""
    assert parse_sched("") == []


# --- malformed input -------------------------------------------------------------------------

LIST_HEADER = "Name                                        ID   Mem VCPUs\tState\tTime(s)"

MALFORMED = [
    # (parser, text, the line the error must quote)
    (parse_list, "", None),
    (parse_list, "Name ID Mem\n", "Name ID Mem"),
    (parse_list, f"{LIST_HEADER}\nweb01  7  2048  2  -b----\n", "web01  7  2048  2  -b----"),
    (parse_list, f"{LIST_HEADER}\nweb01  7  2048  2  xb----  1.0\n", "web01  7  2048  2  xb----  1.0"),  # noqa: E501
    (parse_list, f"{LIST_HEADER}\nweb01  7  2048  2  -b----  1.0 junk\n", "web01  7  2048  2  -b----  1.0 junk"),  # noqa: E501
    (parse_list_verbose, fixture("ref-list.txt"), "Domain-0                                     0  4096     8     r-----   98765.4"),  # noqa: E501
    (parse_vcpu_list, "Name ID VCPU\n", "Name ID VCPU"),
    (
        parse_vcpu_list,
        fixture("ref-vcpu-list.txt").splitlines()[0] + "\nweb01  7  0  2  ---  873.4  2-3\n",
        "web01  7  0  2  ---  873.4  2-3",
    ),
    (
        parse_vcpu_list,
        fixture("ref-vcpu-list.txt").splitlines()[0] + "\nweb01  7  1  3  --p  0.0  2-3 / all\n",
        "web01  7  1  3  --p  0.0  2-3 / all",
    ),
    (parse_info, "nr_cpus : 4\nthis is not info\n", "this is not info"),
    (parse_info, "nr_cpus : 4\n", None),
    (parse_info, fixture("fake-info.txt").replace("max_cpu_id             : 7", "max_cpu_id             : seven"), "seven"),  # noqa: E501
    (parse_cpupool_list, "Name CPUs\n", "Name CPUs"),
    (parse_cpupool_list, "Name               CPUs   Sched     Active   Domain count\nPool-0 4 credit2\n", "Pool-0 4 credit2"),  # noqa: E501
    (parse_sched, "web01 7 256 0\n", "web01 7 256 0"),
    (parse_sched, "Name                                ID Weight  Cap\nweb01 7 256\n", "web01 7 256"),  # noqa: E501
    (parse_list_long, '[\n  {"domid": 1,\n  "config": {\n}\n', None),
    (parse_list_long, '{"domid": 1}', None),
    (parse_list_long, '[{"domid": 1, "config": {"c_info": {}}}]', None),
]  # fmt: skip


@pytest.mark.parametrize(("parser", "text", "line"), MALFORMED)
def test_malformed_input_is_refused(parser: object, text: str, line: str | None) -> None:
    assert callable(parser)
    with pytest.raises(XlParseError) as caught:
        parser(text)
    if line is not None:
        assert caught.value.line == line
        assert repr(line) in str(caught.value)


CUT_SHORT = [
    (parse_list, "fake-list.txt"),
    (parse_list_verbose, "fake-list-v.txt"),
    (parse_vcpu_list, "fake-vcpu-list.txt"),
    (parse_info, "fake-info.txt"),
    (parse_cpupool_list, "fake-cpupool-list-c.txt"),
    (parse_sched, "fake-sched-credit2.txt"),
]


@pytest.mark.parametrize(("parser", "name"), CUT_SHORT)
def test_output_cut_short_is_refused(parser: object, name: str) -> None:
    """A killed xl's output may end mid-row in a row that still looks whole ("0,1" of "0-3")."""
    assert callable(parser)
    text = fixture(name)
    assert text.endswith("\n")
    parser(text)
    cut = text.rstrip("\n")
    cut = cut[: len(cut) - 1]
    with pytest.raises(XlParseError, match="cut short") as caught:
        parser(cut)
    assert caught.value.line == cut.splitlines()[-1]


# --- CPU lists -------------------------------------------------------------------------------

CPULIST_CASES = [
    # (text, nr_cpus, cpus, printed back)
    ("all", 4, {0, 1, 2, 3}, "all"),
    ("none", 4, set(), "none"),
    ("2", 4, {2}, "2"),
    ("2-3", 4, {2, 3}, "2-3"),
    ("0,2-3", 8, {0, 2, 3}, "0,2-3"),
    ("0-7,^3", 8, {0, 1, 2, 4, 5, 6, 7}, "0-2,4-7"),
    ("all,^0", 4, {1, 2, 3}, "1-3"),
    ("^1,1", 4, {1}, "1"),
    ("1,^1", 4, set(), "none"),
    ("0-3", 4, {0, 1, 2, 3}, "all"),
    ("5,1,3", 8, {1, 3, 5}, "1,3,5"),
    ("0-1,6-7", 8, {0, 1, 6, 7}, "0-1,6-7"),
]


@pytest.mark.parametrize(("text", "nr_cpus", "cpus", "printed"), CPULIST_CASES)
def test_cpulist(text: str, nr_cpus: int, cpus: set[int], printed: str) -> None:
    assert parse_cpulist(text, nr_cpus) == cpus
    assert format_cpulist(cpus, nr_cpus) == printed
    assert parse_cpulist(printed, nr_cpus) == cpus


@pytest.mark.parametrize(
    "text", ["", ",", "x", "1-", "-1", "3-1", "^all", "4", "0-4", "nodes:0", "1 2", "1;2"]
)
def test_cpulist_refused(text: str) -> None:
    with pytest.raises(CpuListError):
        parse_cpulist(text, 4)


@pytest.mark.parametrize(
    ("text", "cpus", "written"),
    [("3", {3}, "3"), ("2-3", {2, 3}, "2-3"), ("0,2-3,5", {0, 2, 3, 5}, "0,2-3,5")],
)
def test_plain_cpulist_is_the_penalty_set_form(text: str, cpus: set[int], written: str) -> None:
    assert parse_cpulist(text, plain=True) == cpus
    assert format_cpulist(cpus) == written  # without nr_cpus: ranges, never "all"


@pytest.mark.parametrize(
    "text", ["", "all", "none", "^1", "0-3,^1", "1,,2", "nodes:0", "99999", ",".join(["1"] * 65)]
)
def test_plain_cpulist_refuses_what_is_not_explicit(text: str) -> None:
    with pytest.raises(CpuListError):
        parse_cpulist(text, plain=True)


@pytest.mark.parametrize(
    ("text", "ok"),
    [("all", True), ("none", True), ("0,2-3", True), ("2-3 / all", False), ("", False),
     ("4096", False)],
)  # fmt: skip
def test_is_cpulist(text: str, ok: bool) -> None:
    assert is_cpulist(text) is ok
