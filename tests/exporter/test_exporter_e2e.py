"""End to end: the exporter in the simulated host's Dom0, scraped every second by a real Prometheus.

During a ping flood from guest1 (to guest2), guest1's interrupt and context-switch rates, as
Prometheus computes them from the exporter's series, are at least 10x their idle rates while the
uninvolved guest3 stays within 2x of its own. A counter forced to wrap past 2^32 shows no rate
spike or dip beyond 5%.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.services import Prometheus, run_prometheus, wait_until
from tests.support import REPO, STUB, XENPERF, require, require_binary, require_root, sim
from xensim import model, perfc
from xensim.stack import stop_process_group

pytestmark = [pytest.mark.host, pytest.mark.slow]

UINT32 = 1 << 32
EXPORTER_PORT = 10170  # inside the host's own Dom0 namespace: no one else listens there
# #interrupts on CPU 3 (idle guest3) starts this close to 2^32, so that it wraps ~30 s in, when
# the series has more history than the rate windows below look at.
IDLE_INTERRUPTS_PER_SECOND = (
    model.CPU_BASELINE_PER_SECOND["#interrupts"] + model.DOMAIN_BASELINE_PER_SECOND["#interrupts"]
)
WRAP_HEADROOM = round(30 * IDLE_INTERRUPTS_PER_SECOND)


@dataclass
class Host:
    name: str
    env: dict[str, str]
    prometheus: Prometheus
    started: float

    def per_domain_rate(self, metric: str, domain: str, window: str = "10s") -> float:
        samples = self.prometheus.query(
            f'sum(rate(xen_perfc_{metric}_total{{domain="{domain}"}}[{window}]))'
        )
        assert samples, f"no {metric} series for {domain}"
        return samples[0][1]

    def rate_range(self, expr: str, start: float, end: float) -> list[float]:
        data = self.prometheus.get_json(
            "/api/v1/query_range",
            {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": "1"},
        )["data"]["result"]
        assert len(data) == 1, data
        return [float(value) for _, value in data[0]["values"]]


@contextlib.contextmanager
def exporter_in_dom0(env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    netns = env["XENSIM_DOM0_NETNS"]
    subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True, timeout=10)
    argv = [
        "ip", "netns", "exec", netns, sys.executable, "-m", "exporter",
        f"--web.listen-address=127.0.0.1:{EXPORTER_PORT}",
        f"--xl.path={env['XENSIM_XL']}",
        f"--xenperf.path={env['XENSIM_XENPERF_BIN']}",
        f"--path.sysfs={env['XENSIM_SYSFS']}",
        "--log.level=warn",
        # only what these tests look at: every xl run is a Python process in the simulator
        "--no-collector.domain", "--no-collector.network", "--no-collector.block",
    ]  # fmt: skip
    process = subprocess.Popen(
        argv,
        env=dict(os.environ, **env, PYTHONPATH=str(REPO)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        stop_process_group(process)


@pytest.fixture(scope="module")
def host() -> Iterator[Host]:
    require_root()
    require_binary("ping")
    require_binary("prometheus")
    require(XENPERF.exists() and STUB.exists(), "needs the real xenperf and the stub (make deps)")
    name = f"ex{os.getpid() % 100_000_000}"
    try:
        sim("up", "--name", name, "--dom0-netns", "--cpus", "4", "--guests", "3", "--seed", "11")
        env = json.loads(sim("env", "--name", name, "--json").stdout)
        # Before the exporter's first look, so the only thing it ever sees is a wrap.
        perfc.set_values(
            Path(env["XENSIM_STATE_DIR"]) / perfc.STATE_FILE,
            per_cpu={("#interrupts", 3): UINT32 - WRAP_HEADROOM},
        )
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
            "scrape_configs": [
                {"job_name": "xen", "static_configs": [{"targets": [f"127.0.0.1:{EXPORTER_PORT}"]}]}
            ],
        }
        with (
            exporter_in_dom0(env),
            run_prometheus(config, netns=env["XENSIM_DOM0_NETNS"]) as prometheus,
        ):
            wait_until(
                lambda: prometheus.query('xen_exporter_collector_success{collector="perfc"} == 1'),
                timeout=30,
                what="a successful scrape",
            )
            yield Host(name, env, prometheus, time.time())
    finally:
        sim("down", "--name", name, check=False)


def test_forced_wrap_shows_no_rate_spike_or_dip(host: Host) -> None:
    xenperf = [host.env["XENSIM_XENPERF_BIN"], "-f"]
    env = dict(os.environ, **host.env)

    def wrapped() -> bool:
        text = subprocess.run(xenperf, env=env, capture_output=True, text=True, timeout=10).stdout
        line = next(line for line in text.splitlines() if line.startswith("#interrupts "))
        return int(line.split()[-1]) < UINT32 // 2

    wait_until(wrapped, timeout=60, what="#interrupts on CPU 3 to wrap", interval=1)
    wrap_time = time.time()
    wait_until(lambda: time.time() > wrap_time + 12, timeout=15, what="10 s windows past the wrap")
    expr = 'rate(xen_perfc_interrupts_total{cpu="3"}[10s])'
    before = host.rate_range(expr, wrap_time - 10, wrap_time - 1)  # windows ending before it
    across = host.rate_range(expr, wrap_time + 1, wrap_time + 10)  # windows that contain it
    # A wrap not accumulated would be a dip or a spike of 2^32 in the windows across it, and a
    # wrap read as a reset is one for Prometheus: resets() says so exactly, whatever the noise
    # of a rate of a few interrupts a second (an idle CPU's, measured in the Xen lab).
    reference = statistics.median(before)
    assert reference > 0.5 * IDLE_INTERRUPTS_PER_SECOND, before
    assert all(0.5 * reference <= rate <= 1.5 * reference for rate in across), (before, across)
    resets = host.prometheus.query('resets(xen_perfc_interrupts_total{cpu="3"}[1m])')[0][1]
    assert resets == 0, "Prometheus saw the wrap as a counter reset"
    raw = host.prometheus.query('xen_perfc_interrupts_total{cpu="3"}')[0][1]
    assert raw > UINT32, "the exported counter went past 2^32 instead of falling back"


def test_ping_flood_raises_its_guests_rates_tenfold_and_no_one_elses(host: Host) -> None:
    wait_until(lambda: time.time() - host.started > 12, timeout=15, what="idle history")
    idle = {
        (metric, guest): host.per_domain_rate(metric, guest)
        for metric in ("interrupts", "sched_context_switches")
        for guest in ("guest1", "guest3")
    }
    sim("run", "--name", host.name, "guest1", "pingflood", "--target", "guest2", "--duration", "20")
    try:
        flood_start = time.time()
        wait_until(
            lambda: (
                host.per_domain_rate("interrupts", "guest1") >= 10 * idle["interrupts", "guest1"]
            ),
            timeout=15,
            what="guest1's interrupt rate to rise",
        )
        # a whole 10 s window inside the flood
        wait_until(lambda: time.time() - flood_start > 12, timeout=15, what="the flood window")
        flood = {key: host.per_domain_rate(*key) for key in idle}
    finally:
        sim("stop", "--name", host.name, "guest1", check=False)
    for metric in ("interrupts", "sched_context_switches"):
        assert flood[metric, "guest1"] >= 10 * idle[metric, "guest1"], (metric, idle, flood)
        assert flood[metric, "guest3"] <= 2 * idle[metric, "guest3"], (metric, idle, flood)
        assert flood[metric, "guest3"] >= idle[metric, "guest3"] / 2, (metric, idle, flood)
