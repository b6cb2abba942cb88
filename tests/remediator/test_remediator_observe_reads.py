"""The host read asks tc for a few devices' qdiscs one by one and for many in one dump: both
ways give each domain the same state, on real tc in a namespace of its own.

Twelve domains' vifs (ifb devices named as Xen names vifs: only their names and qdiscs matter
to the read), half of them shaped the remediator's way (ingress on the vif, a tbf on the
domain's ifb), the other half with a qdisc of someone else's."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from remediator.host import IFB_PREFIX
from remediator.observe import PER_DEVICE_QDISC_READS, HostObserver, ToolstackDomain
from remediator.runner import SubprocessRunner
from tests.remediator.helpers import netns_tools
from tests.support import require_binary, require_root
from xentools.sysfs import Vif

pytestmark = [pytest.mark.host]

DOMAINS = {f"guest{domid}": domid for domid in range(1, 13)}


class Toolstack:
    def domains(self) -> list[ToolstackDomain]:
        return [ToolstackDomain(name, domid, False, 1) for name, domid in DOMAINS.items()]

    # A network read asks for none of these.
    def scheduler(self, domid: int) -> str:
        raise AssertionError("not read for network_shape")

    def cap(self, domid: int, scheduler: str) -> int:
        raise AssertionError("not read for network_shape")

    def hard_affinity(self, domid: int) -> list[str]:
        raise AssertionError("not read for network_shape")


def _batch(namespace: str, tool: str, lines: list[str]) -> None:
    subprocess.run(
        ["ip", "netns", "exec", namespace, tool, "-batch", "-"],
        input="".join(f"{line}\n" for line in lines),
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.fixture
def observer(tmp_path: Path) -> Iterator[HostObserver]:
    require_root()
    for binary in ("tc", "ip"):
        require_binary(binary)
    namespace = f"jt-reads-{os.getpid() % 100_000}"
    try:
        subprocess.run(["ip", "netns", "add", namespace], check=True, timeout=15)
        links, shaping = [], []
        for domid in DOMAINS.values():
            vif, ifb = f"vif{domid}.0", f"{IFB_PREFIX}{domid}"
            links += [f"link add {vif} type ifb", f"link set {vif} up"]
            if domid % 2:
                links += [f"link add {ifb} type ifb", f"link set {ifb} up"]
                shaping += [
                    f"qdisc add dev {vif} handle ffff: ingress",
                    f"qdisc add dev {ifb} root handle d1c: tbf rate 1mbit burst 32k latency 50ms",
                ]
            else:
                shaping.append(f"qdisc add dev {vif} root tbf rate 5mbit burst 32k latency 50ms")
        _batch(namespace, "ip", links)
        _batch(namespace, "tc", shaping)
        vifs = [Vif(f"vif{domid}.0", domid, 0, False) for domid in DOMAINS.values()]
        yield HostObserver(
            Toolstack(),
            SubprocessRunner(),
            netns_tools(tmp_path, namespace),
            lambda: vifs,
        )
    finally:
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=15)


def test_one_domain_read_alone_equals_its_part_of_a_read_of_all(observer: HostObserver) -> None:
    everyone = observer.observe(DOMAINS, ["network_shape"]).domains
    assert len(everyone) * 3 > PER_DEVICE_QDISC_READS  # a vif and two ifb names each: one dump
    for name in ("guest3", "guest4"):
        alone = observer.observe([name], ["network_shape"]).domains[name]
        assert alone == everyone[name]
    shaped, other = everyone["guest3"], everyone["guest4"]
    assert shaped.ifb is not None and shaped.ifb.exists
    assert [q.kind for q in shaped.ifb.qdiscs] == ["tbf"]
    assert [q.kind for q in shaped.vifs[0].link.qdiscs if q.kind == "ingress"] == ["ingress"]
    assert other.ifb is not None and not other.ifb.exists
    assert [q.kind for q in other.vifs[0].link.qdiscs] == ["tbf"]
