"""A simulated host: `judicator-sim` brought up, driven through its CLI, observed from Dom0.

    with simulated_host("demo", dom0_netns=False) as host:
        host.run_workload("guest1", "pingflood", target="guest2", duration=60)

`simulated_host` brings a `judicator-sim` host up and always takes it down.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xensim.services import REPO_ROOT, python_env

log = logging.getLogger(__name__)

SIM_TIMEOUT_SECONDS = 90.0


class SimError(RuntimeError):
    """judicator-sim failed; the message quotes it."""


def judicator_sim(*args: str, timeout: float = SIM_TIMEOUT_SECONDS) -> str:
    """Run `judicator-sim ARGS` (this repo's) and return its stdout; raise SimError on failure."""
    argv = [sys.executable, "-m", "xensim.cli", *args]
    try:
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=REPO_ROOT,
            env=python_env({}),
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise SimError(f"judicator-sim {' '.join(args)}: {error}") from error
    if result.returncode != 0:
        raise SimError(
            f"judicator-sim {' '.join(args)}: exit {result.returncode}:"
            f" {(result.stderr + result.stdout).strip()}"
        )
    return result.stdout


@dataclass(frozen=True)
class Guest:
    name: str
    domid: int
    cpus: tuple[int, ...]
    address: str | None
    interfaces: tuple[str, ...]


@dataclass
class SimHost:
    """A running judicator-sim host, driven through its CLI and observed from Dom0."""

    name: str
    env: dict[str, str]
    guests: dict[str, Guest]

    @property
    def dom0_netns(self) -> str | None:
        return self.env.get("XENSIM_DOM0_NETNS")

    @property
    def state_dir(self) -> Path:
        return Path(self.env["XENSIM_STATE_DIR"])

    def in_dom0(self, argv: Sequence[str]) -> list[str]:
        if self.dom0_netns:
            return ["ip", "netns", "exec", self.dom0_netns, *argv]
        return list(argv)

    def run_workload(
        self, guest: str, kind: str, *, duration: float, target: str | None = None
    ) -> None:
        args = ["run", "--name", self.name, guest, kind, "--duration", f"{duration:g}"]
        if target is not None:
            args += ["--target", target]
        judicator_sim(*args)

    def stop_workloads(self, guest: str) -> None:
        judicator_sim("stop", "--name", self.name, guest)

    def _tool_json(self, argv: Sequence[str]) -> Any:
        result = subprocess.run(
            self.in_dom0(argv), capture_output=True, text=True, timeout=15, check=False
        )
        if result.returncode != 0:
            raise SimError(f"{' '.join(argv)}: {result.stderr.strip()}")
        return json.loads(result.stdout) if result.stdout.strip() else []

    def link_counters(self) -> dict[str, dict[str, int]]:
        """Every Dom0 link's rx/tx packet counters (and tx bytes), in one `ip -s` call."""
        counters = {}
        for link in self._tool_json(["ip", "-j", "-s", "link", "show"]):
            stats = link.get("stats64", {})
            counters[link["ifname"]] = {
                "rx_packets": int(stats.get("rx", {}).get("packets", 0)),
                "tx_packets": int(stats.get("tx", {}).get("packets", 0)),
                "tx_bytes": int(stats.get("tx", {}).get("bytes", 0)),
            }
        return counters

    def links(self) -> list[str]:
        return [link["ifname"] for link in self._tool_json(["ip", "-j", "link", "show"])]

    def qdiscs(self, link: str) -> list[str]:
        """The kinds of the qdiscs on `link` that someone added (not the kernel's defaults)."""
        kinds = [q["kind"] for q in self._tool_json(["tc", "-j", "qdisc", "show", "dev", link])]
        return [k for k in kinds if k not in ("noqueue", "noop", "pfifo_fast", "mq")]

    def shaped_links(self) -> dict[str, list[str]]:
        """Every guest vif that carries a qdisc of ours, with those qdiscs' kinds.

        An ingress qdisc counts only while it redirects somewhere: the exporter's direction
        counters (filters that count and pass every packet) sit on an ingress qdisc too, and
        shape nothing.
        """
        shaped = {}
        for guest in self.guests.values():
            for vif in guest.interfaces:
                kinds = self.qdiscs(vif)
                if "ingress" in kinds and not self._redirects(vif):
                    kinds.remove("ingress")
                if kinds:
                    shaped[vif] = kinds
        return shaped

    def _redirects(self, link: str) -> bool:
        filters = self._tool_json(["tc", "-j", "filter", "show", "dev", link, "ingress"])
        return any(
            action.get("kind") == "mirred" and action.get("mirred_action") == "redirect"
            for entry in filters
            for action in (entry.get("options") or {}).get("actions") or []
        )

    def xl(self, *args: str) -> str:
        result = subprocess.run(
            [self.env["XENSIM_XL"], *args],
            capture_output=True,
            text=True,
            timeout=15,
            check=False,
            env={**os.environ, **self.env},
        )
        if result.returncode != 0:
            raise SimError(f"xl {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def caps(self) -> dict[str, int]:
        """Each guest's credit2 cap (0 = none), as `xl sched-credit2` shows it."""
        caps = {}
        for line in self.xl("sched-credit2").splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 4 and fields[0] in self.guests:
                caps[fields[0]] = int(fields[-1])
        return caps


def _guests_from_status(status: Mapping[str, Any]) -> dict[str, Guest]:
    guests = {}
    for domain in status["domains"]:
        if domain["domid"] == 0:
            continue
        guests[domain["name"]] = Guest(
            name=domain["name"],
            domid=int(domain["domid"]),
            cpus=tuple(domain["cpus"]),
            address=domain["address"],
            interfaces=tuple(domain["interfaces"]),
        )
    return guests


def host_leftovers(name: str) -> list[str]:
    """What of a simulated host of this name is still there (judicator-sim status says)."""
    argv = [sys.executable, "-m", "xensim.cli", "status", "--name", name]
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=30, check=False, cwd=REPO_ROOT
    )
    if result.returncode == 0:
        return [f"host {name} is up"]
    _, marker, rest = result.stdout.partition("(leftovers: ")
    return [item.strip() for item in rest.rstrip(")\n").split(",")] if marker else []


@contextlib.contextmanager
def simulated_host(
    name: str,
    *,
    dom0_netns: bool,
    cpus: int = 4,
    guests: int = 3,
    seed: int | None = None,
    log_dir: Path | None = None,
    scenario: Path | None = None,
) -> Iterator[SimHost]:
    """`judicator-sim up` a host (Domain-0 on CPU 0, guest i pinned to CPU i), always `down`.

    With `scenario`, a scenario file (docs/simulator.md) says the CPUs and guests instead.
    """
    args = ["up", "--name", name]
    if scenario is None:
        args += ["--cpus", str(cpus), "--guests", str(guests)]
    else:
        args += ["--scenario", str(scenario)]
    if dom0_netns:
        args.append("--dom0-netns")
    if seed is not None:
        args += ["--seed", str(seed)]
    try:
        judicator_sim(*args)
        env = json.loads(judicator_sim("env", "--name", name, "--json"))
        status = json.loads(judicator_sim("status", "--name", name, "--json"))
        yield SimHost(name=name, env=env, guests=_guests_from_status(status))
    finally:
        if log_dir is not None:
            # The daemon's and the workloads' logs go with the state dir: keep them.
            state_dir = Path("/run/judicator-sim") / name
            with contextlib.suppress(OSError):
                shutil.copyfile(state_dir / "daemon.log", log_dir / "sim-daemon.log")
            for workload_log in sorted((state_dir / "logs").glob("*.log")):
                with contextlib.suppress(OSError):
                    shutil.copyfile(workload_log, log_dir / f"sim-{workload_log.name}")
        try:
            judicator_sim("down", "--name", name)
        except SimError as error:
            log.error("taking the simulated host %s down: %s", name, error)
