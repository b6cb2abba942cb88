"""Restartable Prometheus and clustered Alertmanagers inside a network namespace.

This is not a second `Stack`. `xensim.stack.Stack` (from `run_stack`) is the product as it
ships: one exporter, remediator, Alertmanager and Prometheus, on the shipped configuration,
each with gossip off and a throwaway directory, started together and stopped together. The
reliability tests need what it does not offer: their own configurations (an attack rule, a
remediator receiver on a chosen port), two Alertmanagers gossiping on loopback
(`--cluster.listen-address`/`--cluster.peer`, distinct ports), and processes that are killed
and started again, one by one, on the same data directory (notification log, TSDB). So
`RestartableServices` hands out `Restartable` members, built on `xensim.services`' clients and
the one bounded poll, that a test starts, kills and restarts itself. Everything stays on the
namespace's loopback and is killed, and its directory removed, by `close()`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.support import require_binary
from xensim.poll import wait_until
from xensim.services import (
    ALERTMANAGER_BINARY,
    PROMETHEUS_BINARY,
    Alertmanager,
    NetnsCaller,
    Prometheus,
    free_loopback_port,
)


class Restartable:
    """One service process that can be SIGKILLed and started again on the same directory."""

    def __init__(
        self,
        kind: type[Alertmanager] | type[Prometheus],
        name: str,
        workdir: Path,
        caller: NetnsCaller,
        argv: Callable[[], list[str]],
        port: int,
    ) -> None:
        self.kind = kind
        self.name = name
        self.workdir = workdir
        self.caller = caller
        self._argv = argv
        self.port = port
        self.service: Any = None
        self.starts = 0

    def start(self, ready_timeout: float = 60) -> Any:
        argv = self._argv()
        if self.caller.netns is not None:
            argv = ["ip", "netns", "exec", self.caller.netns, *argv]
        with (self.workdir / f"output{self.starts}.log").open("wb") as output:
            process = subprocess.Popen(
                argv, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.workdir, start_new_session=True,
            )  # fmt: skip
        self.starts += 1
        self.service = self.kind(self.name, self.port, self.caller, process, self.workdir)
        wait_until(self.service.ready, timeout=ready_timeout, what=f"{self.name} ready")
        return self.service

    def log(self) -> str:
        return "".join(
            (self.workdir / f"output{i}.log").read_text(errors="replace")
            for i in range(self.starts)
        )

    def kill9(self) -> None:
        if self.service is not None and self.service.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.service.process.pid, signal.SIGKILL)
            self.service.process.wait(15)

    def stop(self) -> None:
        if self.service is None or self.service.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.service.process.pid, signal.SIGTERM)
        try:
            self.service.process.wait(10)
        except subprocess.TimeoutExpired:
            self.kill9()


class RestartableServices:
    """`Restartable` services in one namespace, all stopped by `close()`."""

    def __init__(self, netns: str | None, prefix: str) -> None:
        self.caller = NetnsCaller(netns)
        self.root = Path(tempfile.mkdtemp(prefix=f"judicator-{prefix}-{os.getpid()}-"))
        self.members: list[Restartable] = []
        if netns is not None:
            subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True, timeout=10)

    def port(self) -> int:
        return self.caller(free_loopback_port)

    def alertmanager_pair(
        self, config: dict[str, Any], files: dict[str, str], peer_timeout: str = "2s"
    ) -> tuple[Restartable, Restartable]:
        """Two Alertmanagers clustered with each other; not started yet."""
        require_binary(ALERTMANAGER_BINARY)
        web = [self.port(), self.port()]
        gossip = [self.port(), self.port()]
        pair = []
        for index in (0, 1):
            workdir = self.root / f"am{index}"
            workdir.mkdir()
            for name, content in files.items():
                (workdir / name).write_text(content)
            text = yaml.safe_dump(config).replace("{workdir}", str(workdir))
            (workdir / "alertmanager.yml").write_text(text)

            def argv(workdir: Path = workdir, index: int = index) -> list[str]:
                return [
                    ALERTMANAGER_BINARY,
                    f"--config.file={workdir / 'alertmanager.yml'}",
                    f"--storage.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{web[index]}",
                    f"--cluster.listen-address=127.0.0.1:{gossip[index]}",
                    f"--cluster.advertise-address=127.0.0.1:{gossip[index]}",
                    f"--cluster.peer=127.0.0.1:{gossip[1 - index]}",
                    f"--cluster.peer-timeout={peer_timeout}",
                    "--cluster.gossip-interval=100ms",
                    "--cluster.pushpull-interval=2s",
                    "--cluster.settle-timeout=3s",
                    "--cluster.reconnect-interval=1s",
                ]

            member = Restartable(Alertmanager, f"alertmanager{index}", workdir, self.caller,
                                 argv, web[index])  # fmt: skip
            self.members.append(member)
            pair.append(member)
        return pair[0], pair[1]

    def prometheus(self, config: dict[str, Any], rules: dict[str, str]) -> Restartable:
        """A Prometheus that keeps its TSDB across restarts; `rules` are files beside it."""
        require_binary(PROMETHEUS_BINARY)
        workdir = self.root / "prometheus"
        workdir.mkdir()
        for name, content in rules.items():
            (workdir / name).write_text(content)
        settings = dict(config)
        settings["rule_files"] = [str(workdir / name) for name in rules]
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(settings))
        port = self.port()

        def argv() -> list[str]:
            return [
                PROMETHEUS_BINARY,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--web.enable-lifecycle",
                # Alerts stay valid in Alertmanager for 4 x 10s: longer than a restart takes.
                "--rules.alert.resend-delay=10s",
            ]

        member = Restartable(Prometheus, "prometheus", workdir, self.caller, argv, port)
        self.members.append(member)
        return member

    def close(self) -> None:
        for member in self.members:
            member.stop()
        self.caller.close()
        shutil.rmtree(self.root, ignore_errors=True)
