"""tc and ip in batch mode: how a plan's commands are joined, and how a batch of reads is split."""

from __future__ import annotations

import pytest

from remediator.host import Qdisc, parse_qdiscs_by_dev, split_json_lists
from remediator.plan import Command
from remediator.runner import as_batch, batch_word, batched, merged


def cmd(*argv: str, timeout: float = 5.0, **env: str) -> Command:
    return Command(argv=argv, timeout=timeout, env=env)


def test_consecutive_commands_of_one_program_become_one_batch_in_order() -> None:
    plan = [
        cmd("ip", "link", "add", "jifb3.0", "type", "ifb"),
        cmd("ip", "link", "set", "dev", "jifb3.0", "up"),
        cmd("tc", "qdisc", "replace", "dev", "jifb3.0", "root", "handle", "d1c:", "tbf"),
        cmd("tc", "qdisc", "add", "dev", "vif3.0", "ingress"),
        cmd("tc", "filter", "add", "dev", "vif3.0", "parent", "ffff:", "prio", "49"),
    ]
    ip, tc = batched(plan)
    assert ip.argv == ("ip", "-batch", "-")
    assert ip.stdin == "link add jifb3.0 type ifb\nlink set dev jifb3.0 up\n"
    assert tc.argv == ("tc", "-batch", "-")
    assert tc.stdin is not None and tc.stdin.splitlines() == [
        "qdisc replace dev jifb3.0 root handle d1c: tbf",
        "qdisc add dev vif3.0 ingress",
        "filter add dev vif3.0 parent ffff: prio 49",
    ]
    assert tc.timeout == 15.0  # each line keeps its time


@pytest.mark.parametrize(
    "plan",
    [
        [cmd("tc", "qdisc", "del", "dev", "vif3.0", "ingress")],  # alone: as it is
        [cmd("tc", "qdisc", "del", "dev", "v", "ingress"), cmd("ip", "link", "del", "dev", "j")],
        [cmd("xl", "pause", "3"), cmd("xl", "unpause", "3")],  # xl has no batch mode
        [cmd("/sbin/op", "a", OP="1"), cmd("/sbin/op", "b", OP="1")],  # operator commands
        [cmd("tc", "qdisc", "del", "dev", "a b", "root"), cmd("tc", "qdisc", "del", "dev", "c")],
        [cmd("tc", "-j", "qdisc", "show"), cmd("tc", "qdisc", "del", "dev", "c")],
    ],
)
def test_what_is_not_batched_runs_as_it_is(plan: list[Command]) -> None:
    assert batched(plan) == plan


@pytest.mark.parametrize(
    ("word", "ok"),
    [("vif3.0", True), ("jifb3.0e", True), ("d1c:", True), ("a b", False), ("a\nb", False),
     ('a"', False), ("a'", False), ("a\\", False), ("#", False), ("", False)],
)  # fmt: skip
def test_batch_words(word: str, ok: bool) -> None:
    assert batch_word(word) is ok


def test_a_batch_of_json_reads_splits_into_one_answer_per_line() -> None:
    text = '[{"pref":49,"kind":"u32"}]\n[]\n[\n{"a": [1, 2]}\n]\n'
    assert split_json_lists(text) == ['[{"pref":49,"kind":"u32"}]', "[]", '[\n{"a": [1, 2]}\n]']
    assert split_json_lists("") == []


def test_every_device_qdiscs_from_one_read() -> None:
    # `tc -j qdisc show` (iproute2 6.1) in a Dom0 with one vif shaped by us and one untouched.
    text = (
        '[{"kind":"noqueue","handle":"0:","dev":"vif2.0","root":true,"refcnt":2,"options":{}},'
        '{"kind":"ingress","handle":"ffff:","dev":"vif2.0","parent":"ffff:fff1","options":{}},'
        '{"kind":"noqueue","handle":"0:","dev":"vif1.0","root":true,"refcnt":2,"options":{}},'
        '{"kind":"tbf","handle":"d1c:","dev":"jifb2.0","root":true,"refcnt":2,'
        '"options":{"rate":125000,"burst":32768,"lat":50000}}]'
    )
    by_dev = parse_qdiscs_by_dev(text)
    assert set(by_dev) == {"vif2.0", "vif1.0", "jifb2.0"}
    assert [q.kind for q in by_dev["vif2.0"]] == ["noqueue", "ingress"]
    assert by_dev["jifb2.0"] == (Qdisc("tbf", "d1c:", True, 1_000_000, 32768),)


def test_plans_of_a_round_merge_into_one_ip_and_one_tc_batch_each_plan_in_its_order() -> None:
    def shape(domid: int) -> list[Command]:
        ifb, vif = f"jifb{domid}.0", f"vif{domid}.0"
        return [
            cmd("ip", "link", "add", ifb, "type", "ifb"),
            cmd("ip", "link", "set", "dev", ifb, "up"),
            cmd("tc", "qdisc", "replace", "dev", ifb, "root", "handle", "d1c:", "tbf"),
            cmd("tc", "qdisc", "add", "dev", vif, "ingress"),
        ]

    finish = [cmd("tc", "qdisc", "add", "dev", "vif9.0", "ingress")]  # a half-done apply
    two_vifs = [*shape(5), cmd("ip", "link", "add", "jifb5.1", "type", "ifb")]
    commands = batched(merged([shape(3), finish, two_vifs]))
    assert [c.argv for c in commands] == [
        ("ip", "-batch", "-"),
        ("tc", "-batch", "-"),
        ("ip", "link", "add", "jifb5.1", "type", "ifb"),
    ]
    ip, tc = commands[0].stdin, commands[1].stdin
    assert ip is not None and tc is not None
    assert ip.splitlines() == [
        "link add jifb3.0 type ifb",
        "link set dev jifb3.0 up",
        "link add jifb5.0 type ifb",
        "link set dev jifb5.0 up",
    ]
    assert tc.splitlines() == [
        "qdisc add dev vif9.0 ingress",
        "qdisc replace dev jifb3.0 root handle d1c: tbf",
        "qdisc add dev vif3.0 ingress",
        "qdisc replace dev jifb5.0 root handle d1c: tbf",
        "qdisc add dev vif5.0 ingress",
    ]
    assert merged([]) == []


def test_a_plan_line_becomes_a_batch_to_read_after() -> None:
    line = cmd("tc", "qdisc", "add", "dev", "vif3.0", "ingress")
    batch = as_batch(line, "tc")
    assert batch is not None and batch.argv == ("tc", "-batch", "-")
    assert batch.stdin == "qdisc add dev vif3.0 ingress\n"
    assert as_batch(batch, "tc") is batch
    assert as_batch(cmd("ip", "link", "del", "dev", "j"), "tc") is None
    assert as_batch(cmd("tc", "qdisc", "del", "dev", "a b", "root"), "tc") is None
