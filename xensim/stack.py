"""The real parts of Judicator on a simulated Xen host, started and always stopped.

    with simulated_host("demo", dom0_netns=False) as host, run_stack(host, log_dir=out) as stack:
        host.run_workload("guest1", "pingflood", target="guest2", duration=60)
        wait_until(lambda: stack.prometheus.alerts(), timeout=60, what="an alert")

`run_stack` starts the exporter, Prometheus (the shipped prometheus.yml, at 1 s scrape and
evaluation, and the shipped rules), Alertmanager
(the shipped alertmanager.yml) and the remediator (the shipped deploy/remediator.yml), each
rendered into a temporary directory with the stack's ports, token file and paths; the policies
themselves are never copied or changed. With a Dom0 namespace, the whole stack runs in it,
beside the vifs it watches.

The pieces live in their own modules: `xensim.services` (launchers and HTTP clients),
`xensim.configs` (rendering the shipped configuration), `xensim.simhost` (the simulated host)
and `xensim.poll` (the one bounded poll). Their public names are importable from here too.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from xensim.configs import (
    REMEDIATOR_RECEIVER,
    SHIPPED_ALERTMANAGER_CONFIG,
    SHIPPED_PROMETHEUS_CONFIG,
    SHIPPED_REMEDIATOR_CONFIG,
    SHIPPED_RULES_DIR,
    SIMULATION_INTERVALS,
    render_alertmanager_config,
    render_prometheus_config,
    render_remediator_config,
)
from xensim.poll import wait_until
from xensim.services import (
    ALERTMANAGER_BINARY,
    HTTP_TIMEOUT_SECONDS,
    PROMETHEUS_BINARY,
    READY_TIMEOUT_SECONDS,
    REPO_ROOT,
    STOP_TIMEOUT_SECONDS,
    Alertmanager,
    Exporter,
    NetnsCaller,
    Prometheus,
    Remediator,
    Sample,
    Service,
    ServiceDied,
    ServiceError,
    free_loopback_port,
    run_alertmanager,
    run_exporter,
    run_prometheus,
    run_remediator,
    stop_process_group,
)
from xensim.simhost import (
    SIM_TIMEOUT_SECONDS,
    Guest,
    SimError,
    SimHost,
    host_leftovers,
    judicator_sim,
    simulated_host,
)

# The names this module held before it was split, for code that imports them from here.
_Caller = NetnsCaller
__all__ = [
    "ALERTMANAGER_BINARY",
    "HTTP_TIMEOUT_SECONDS",
    "PROMETHEUS_BINARY",
    "READY_TIMEOUT_SECONDS",
    "REMEDIATOR_RECEIVER",
    "REPO_ROOT",
    "SHIPPED_ALERTMANAGER_CONFIG",
    "SHIPPED_PROMETHEUS_CONFIG",
    "SHIPPED_REMEDIATOR_CONFIG",
    "SHIPPED_RULES_DIR",
    "SIMULATION_INTERVALS",
    "SIM_TIMEOUT_SECONDS",
    "STOP_TIMEOUT_SECONDS",
    "Alertmanager",
    "Exporter",
    "Guest",
    "NetnsCaller",
    "Prometheus",
    "Remediator",
    "Sample",
    "Service",
    "ServiceDied",
    "ServiceError",
    "SimError",
    "SimHost",
    "Stack",
    "free_loopback_port",
    "host_leftovers",
    "judicator_sim",
    "render_alertmanager_config",
    "render_prometheus_config",
    "render_remediator_config",
    "run_alertmanager",
    "run_exporter",
    "run_prometheus",
    "run_remediator",
    "run_stack",
    "simulated_host",
    "stop_process_group",
    "wait_until",
]


@dataclass
class Stack:
    """Every real part, running against one simulated host."""

    host: SimHost
    exporter: Exporter
    prometheus: Prometheus
    alertmanager: Alertmanager
    remediator: Remediator

    @property
    def instance(self) -> str:
        """The `instance` label Prometheus gives the exporter (the remediator's own host)."""
        return self.exporter.address


def _delete_link(name: str, netns: str | None) -> None:
    argv = ["ip", "link", "del", name]
    if netns is not None:
        argv = ["ip", "-n", netns, "link", "del", name]
    subprocess.run(argv, capture_output=True, timeout=10, check=False)


@contextlib.contextmanager
def run_stack(
    host: SimHost,
    *,
    hold_seconds: float = 5.0,
    log_dir: Path | None = None,
    ready_timeout: float = READY_TIMEOUT_SECONDS,
    rules_dir: Path = SHIPPED_RULES_DIR,
    intervals: Mapping[str, str] = SIMULATION_INTERVALS,
) -> Iterator[Stack]:
    """Start the exporter, remediator, Alertmanager and Prometheus on `host`; stop them all.

    Prometheus loads the rules in `rules_dir` (the shipped policies unless a benchmark tries
    other settings) and scrapes and evaluates at `intervals` (the simulation's 1 s unless a
    benchmark measures the shipped ones).

    In a Dom0 namespace they all run inside it (the vifs, tc and the exporter's sysfs are
    there); otherwise in the machine's own namespace, on 127.0.0.1.
    """
    netns = host.dom0_netns
    token = secrets.token_urlsafe(32)

    def log_path(name: str) -> Path | None:
        return None if log_dir is None else log_dir / f"{name}.log"

    shipped_prometheus = yaml.safe_load(SHIPPED_PROMETHEUS_CONFIG.read_text())
    shipped_alertmanager = yaml.safe_load(SHIPPED_ALERTMANAGER_CONFIG.read_text())
    shipped_remediator = yaml.safe_load(SHIPPED_REMEDIATOR_CONFIG.read_text())
    with contextlib.ExitStack() as stack:
        # The direction counters (who starts the traffic) install tc filters on the vifs and,
        # on a kernel without act_gact, a sink device: one per simulated host, removed at the end.
        sink = f"jdfs{host.name}"[:15]
        stack.callback(_delete_link, sink, netns)
        exporter = stack.enter_context(
            run_exporter(
                host.env,
                netns=netns,
                ready_timeout=ready_timeout,
                log_path=log_path("exporter"),
                extra_args=("--collector.flowdirection", f"--flowdirection.sink={sink}"),
            )
        )
        remediator_config = render_remediator_config(
            shipped_remediator,
            instance=exporter.address,
            host_env=host.env,
            hold_seconds=hold_seconds,
        )
        remediator = stack.enter_context(
            run_remediator(
                remediator_config,
                token=token,
                host_env=host.env,
                netns=netns,
                ready_timeout=ready_timeout,
                log_path=log_path("remediator"),
            )
        )
        alertmanager_config = render_alertmanager_config(
            shipped_alertmanager,
            remediator_url=f"{remediator.url}/alerts",
            token_file="{workdir}/remediator.token",
        )
        alertmanager = stack.enter_context(
            run_alertmanager(
                yaml.safe_dump(alertmanager_config, sort_keys=False),
                files={"remediator.token": token + "\n"},
                netns=netns,
                ready_timeout=ready_timeout,
                log_path=log_path("alertmanager"),
            )
        )
        prometheus_config = render_prometheus_config(
            shipped_prometheus,
            targets={
                "xen": exporter.address,
                "judicator-remediator": remediator.address,
                "prometheus": "{listen}",
            },
            rules_dir=rules_dir,
            credentials_files={"judicator-remediator": remediator.workdir / "remediator.token"},
            intervals=intervals,
        )
        prometheus = stack.enter_context(
            run_prometheus(
                yaml.safe_dump(prometheus_config, sort_keys=False),
                alertmanager=alertmanager.address,
                netns=netns,
                ready_timeout=ready_timeout,
                log_path=log_path("prometheus"),
            )
        )
        yield Stack(host, exporter, prometheus, alertmanager, remediator)
