"""Every query of the shipped Grafana dashboards returns data from a real Prometheus scraping a
simulated host, with the whole stack running: while a guest floods and is throttled, so that
the panels for firing policies and active throttles have something to show too. The JSON's
fields for provisioning are checked statically by tools/check-configs."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services import wait_until
from tests.support import require_binary, require_root
from xensim.stack import Stack, run_stack, simulated_host

DASHBOARDS = sorted((Path(__file__).resolve().parents[2] / "grafana" / "dashboards").glob("*.json"))
LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>\w+)\)$")


def _queries() -> list[tuple[str, str]]:
    """(where, expr) for every panel query and every variable's label_values() selector."""
    queries = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        for variable in board["templating"]["list"]:
            if variable["type"] == "query":
                match = LABEL_VALUES.match(variable["definition"])
                assert match, f"{path.name} ${variable['name']}: not a label_values() query"
                queries.append((f"{path.name} ${variable['name']}", match["selector"]))
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                where = f"{path.name} panel {panel['title']!r} {target['refId']}"
                queries.append((where, target["expr"]))
    return queries


def _substitute(expr: str, instance: str) -> str:
    # As Grafana would with $instance = this host and $domain, $cpu = All (".+").
    return expr.replace("$instance", instance).replace("$domain", ".+").replace("$cpu", ".+")


@pytest.fixture(scope="module")
def flooded_stack() -> Iterator[Stack]:
    require_root()
    require_binary("prometheus")
    require_binary("prometheus-alertmanager")
    with (
        simulated_host(f"dash{os.getpid() % 100000}", dom0_netns=False) as host,
        run_stack(host) as stack,
    ):
        host.run_workload("guest1", "pingflood", target="guest2", duration=120)
        host.run_workload("guest3", "bulk", target="guest2", duration=120)
        try:
            # Both at once: the throttle holds while the policy fires (keep_firing_for), then
            # the shaped flood resolves it and the hold releases it.
            wait_until(
                lambda: stack.prometheus.query(
                    "sum(judicator_remediator_active_throttles) > 0 and on ()"
                    ' count(ALERTS{alertstate="firing", severity="remediate"}) > 0'
                ),
                timeout=90,
                what="the flood to be throttled and Prometheus to see the throttle",
            )
            yield stack
        finally:
            for guest in host.guests:
                host.stop_workloads(guest)


@pytest.mark.host
@pytest.mark.slow
def test_every_dashboard_query_returns_data(flooded_stack: Stack) -> None:
    empty = []
    for where, expr in _queries():
        if not flooded_stack.prometheus.query(_substitute(expr, flooded_stack.instance)):
            empty.append(f"{where}: {expr}")
    assert not empty, "queries without data:\n" + "\n".join(empty)


def test_the_dashboards_have_queries() -> None:
    assert len(DASHBOARDS) == 2
    assert len(_queries()) > 30
