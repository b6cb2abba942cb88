"""tc/ip JSON parsers on captured output (tests/fixtures/tc/README.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from remediator.host import (
    Qdisc,
    Redirect,
    ifb_domid,
    parse_ingress_filters,
    parse_links,
    parse_qdiscs,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tc"


def read(name: str) -> str:
    return (FIXTURES / name).read_text()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("qdisc-vif-shaped.json",
         (Qdisc("tbf", "d1c:", True, 2_000_000, 32768), Qdisc("ingress", "ffff:", False))),
        ("qdisc-vif-ingress-only.json",
         (Qdisc("noqueue", "0:", True), Qdisc("ingress", "ffff:", False))),
        ("qdisc-ifb-tbf.json", (Qdisc("tbf", "d1c:", True, 1_000_000, 32768),)),
        ("qdisc-veth-down-empty.json", ()),
    ],
)  # fmt: skip
def test_qdiscs(name: str, expected: tuple[Qdisc, ...]) -> None:
    assert parse_qdiscs(read(name)) == expected


def test_redirects_only_the_mirred_filter_counts() -> None:
    assert parse_ingress_filters(read("filter-vif-redirect.json")) == (
        (Redirect(49, "jifb9.0"),),
        (),
    )


def test_counting_filters_beside_our_redirect_are_someone_elses() -> None:
    # The exporter's direction counters (mirred mirror, priorities 11-18) and our redirect.
    redirects, others = parse_ingress_filters(read("filter-vif-counters-and-redirect.json"))
    assert redirects == (Redirect(49, "jifb9.0"),)
    assert others == tuple(range(11, 19))


def test_links_and_their_admin_state() -> None:
    assert parse_links(read("ip-link.json")) == {
        "lo": False, "p9": False, "vif9.0": True, "jifb9.0": True,
    }  # fmt: skip


@pytest.mark.parametrize("text", ["", "  \n"])
def test_empty_output_is_no_state(text: str) -> None:
    assert parse_qdiscs(text) == () and parse_ingress_filters(text) == ((), ())


def test_a_non_list_is_an_error() -> None:
    with pytest.raises(ValueError):
        parse_qdiscs('{"kind": "tbf"}')


@pytest.mark.parametrize(
    ("name", "domid"),
    [("jifb7", "7"), ("jifb7r", "7"), ("jifb12.0", "12"), ("jifb12.0e", "12"), ("jifb3r", "3")],
)
def test_every_ifb_of_ours_names_its_domain(name: str, domid: str) -> None:
    # Stray-ifb removal keeps an ifb whose domid a live throttle records: the receive ifb too.
    assert ifb_domid(name) == domid
