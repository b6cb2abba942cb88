"""Real Prometheus and Alertmanager processes for tests, started and always stopped.

    with run_prometheus(config, rule_files=[...]) as prom:
        wait_until(lambda: prom.query("up == 1"), timeout=30, what="a successful scrape")
        for labels, value in prom.query("xen_domain_vcpus"): ...

    with run_alertmanager(am_config) as am, run_prometheus(config, alertmanager=am.address) as prom:
        ...

Each process listens on 127.0.0.1 on a free port, keeps its data in its own temporary directory
and is killed (its whole process group) and that directory removed on exit, also when the body
raises. With `netns="NAME"` the process runs under `ip netns exec NAME`, so it can scrape targets
that exist only inside that namespace; its port is then inside the namespace too, and the
handle's HTTP calls are made from a helper thread that has joined the namespace (setns(2) moves
only the calling thread), so a test in the root namespace queries it just the same.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import yaml

from tests.support import require_binary

PROMETHEUS_BINARY = "prometheus"
ALERTMANAGER_BINARY = "prometheus-alertmanager"
READY_TIMEOUT_SECONDS = 60.0
HTTP_TIMEOUT_SECONDS = 10.0
_CLONE_NEWNET = 0x40000000

Sample = tuple[dict[str, str], float]
T = TypeVar("T")


class ServiceError(RuntimeError):
    """A service did not start, died, or answered with an error."""


class ServiceDied(ServiceError):
    """The process exited; waiting longer cannot help."""


def wait_until(
    condition: Callable[[], T],
    *,
    timeout: float,
    what: str,
    interval: float = 0.25,
) -> T:
    """Poll `condition` until it returns something truthy and return that; fail after `timeout`.

    Exceptions inside `condition` count as "not yet" (a service may still be starting); the last
    one is quoted in the failure so a timeout explains itself.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = condition()
        except ServiceDied:
            raise
        except (ServiceError, OSError, ValueError) as error:
            last_error = error
        else:
            if result:
                return result
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)


def _enter_netns(netns: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{netns}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns into network namespace {netns}: {os.strerror(errno)}")
    finally:
        os.close(fd)


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _Caller:
    """Runs callables in the root namespace, or in one thread that joined a network namespace."""

    def __init__(self, netns: str | None) -> None:
        self.netns = netns
        self._executor: ThreadPoolExecutor | None = None
        if netns is not None:
            self._executor = ThreadPoolExecutor(
                max_workers=1,
                thread_name_prefix=f"netns-{netns}",
                initializer=_enter_netns,
                initargs=(netns,),
            )

    def __call__(self, function: Callable[[], T]) -> T:
        if self._executor is None:
            return function()
        return self._executor.submit(function).result()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)


class _Service:
    """An HTTP service on 127.0.0.1:port, possibly inside a network namespace."""

    def __init__(
        self, name: str, port: int, caller: _Caller, process: subprocess.Popen[bytes], workdir: Path
    ) -> None:
        self.name = name
        self.port = port
        self.address = f"127.0.0.1:{port}"
        self.url = f"http://{self.address}"
        self.netns = caller.netns
        self.process = process
        self.workdir = workdir
        self._call = caller

    def log(self) -> str:
        """The process's stdout and stderr so far (for failure messages)."""
        try:
            return (self.workdir / "output.log").read_text(errors="replace")
        except OSError:
            return ""

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: object = None,
    ) -> tuple[int, bytes]:
        """One HTTP request to the service; returns (status, body) for any HTTP status."""
        url = self.url + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        req = urllib.request.Request(url, data=data, method=method, headers=headers)

        def send() -> tuple[int, bytes]:
            try:
                with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_SECONDS) as response:
                    return int(response.status), bytes(response.read())
            except urllib.error.HTTPError as error:
                return int(error.code), bytes(error.read())

        return self._call(send)

    def get_json(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        status, body = self.request("GET", path, params=params)
        if status != 200:
            raise ServiceError(f"{self.name} GET {path} {params or ''}: HTTP {status}: {body!r}")
        return json.loads(body)

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise ServiceDied(f"{self.name} exited with {self.process.returncode}:\n{self.log()}")
        try:
            status, _ = self.request("GET", "/-/ready")
        except OSError:
            return False
        return status == 200


class Prometheus(_Service):
    """Handle on a running Prometheus (HTTP API v1)."""

    def _api(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        reply = self.get_json("/api/v1/" + path, params)
        if reply.get("status") != "success":
            raise ServiceError(f"prometheus {path} {params or ''}: {reply}")
        return reply["data"]

    def query(self, expr: str, at: float | None = None) -> list[Sample]:
        """Instant query: [(labels, value)] for a vector, [({}, value)] for a scalar."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self._api("query", params)
        if data["resultType"] == "vector":
            return [(dict(item["metric"]), float(item["value"][1])) for item in data["result"]]
        if data["resultType"] == "scalar":
            return [({}, float(data["result"][1]))]
        raise ServiceError(f"query {expr!r} returned a {data['resultType']}, not a vector")

    def alerts(self) -> list[dict[str, Any]]:
        """Pending and firing alerts: dicts with labels, annotations, state, activeAt, value."""
        alerts: list[dict[str, Any]] = self._api("alerts")["alerts"]
        return alerts

    def rules(self) -> list[dict[str, Any]]:
        """Rule groups as /api/v1/rules reports them (with health and lastError per rule)."""
        groups: list[dict[str, Any]] = self._api("rules")["groups"]
        return groups

    def targets(self) -> list[dict[str, Any]]:
        """Active scrape targets (with health, lastError, labels)."""
        targets: list[dict[str, Any]] = self._api("targets")["activeTargets"]
        return targets


class Alertmanager(_Service):
    """Handle on a running Alertmanager (HTTP API v2)."""

    def alerts(self, *, active_only: bool = True) -> list[dict[str, Any]]:
        """Alerts Alertmanager holds: dicts with labels, annotations, status, receivers, ..."""
        params = (
            {} if not active_only else {"active": "true", "silenced": "false", "inhibited": "false"}
        )
        alerts: list[dict[str, Any]] = self.get_json("/api/v2/alerts", params)
        return alerts

    def all_alerts(self) -> list[dict[str, Any]]:
        """Every alert, with status.state active, suppressed (silenced/inhibited) or unprocessed."""
        alerts: list[dict[str, Any]] = self.get_json("/api/v2/alerts")
        return alerts

    def post_alerts(self, alerts: Sequence[Mapping[str, Any]]) -> None:
        """Push alerts as Prometheus would (labels, annotations, startsAt/endsAt)."""
        status, body = self.request("POST", "/api/v2/alerts", body=list(alerts))
        if status != 200:
            raise ServiceError(f"alertmanager POST /api/v2/alerts: HTTP {status}: {body!r}")


@contextlib.contextmanager
def _run(
    kind: type[_Service],
    name: str,
    argv_for: Callable[[Path, str], list[str]],
    write_files: Callable[[Path], None],
    netns: str | None,
    ready_timeout: float,
) -> Iterator[Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"judicator-{name}-{os.getpid()}-"))
    caller = _Caller(netns)
    process: subprocess.Popen[bytes] | None = None
    try:
        write_files(workdir)
        if netns is not None:
            # A fresh namespace has its loopback down; Prometheus cannot listen without it.
            subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True, timeout=10)
        port = caller(_free_loopback_port)
        argv = argv_for(workdir, f"127.0.0.1:{port}")
        if netns is not None:
            argv = ["ip", "netns", "exec", netns, *argv]
        with (workdir / "output.log").open("wb") as output:
            process = subprocess.Popen(
                argv,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=workdir,
                start_new_session=True,
            )
        service = kind(name, port, caller, process, workdir)
        try:
            wait_until(
                service.ready, timeout=ready_timeout, what=f"{name} on {service.url}/-/ready"
            )
        except TimeoutError as error:
            raise ServiceError(f"{error}\n{name} output:\n{service.log()}") from None
        yield service
    finally:
        if process is not None:
            _stop(process)
        caller.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group, SIGKILL it if it lingers; never leave a child behind."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def _load_config(config: str | Mapping[str, Any]) -> dict[str, Any]:
    loaded = yaml.safe_load(config) if isinstance(config, str) else dict(config)
    if not isinstance(loaded, dict):
        raise ValueError("a Prometheus/Alertmanager config must be a YAML mapping")
    return loaded


def run_prometheus(
    config: str | Mapping[str, Any],
    *,
    rule_files: Sequence[str | os.PathLike[str]] = (),
    alertmanager: str | None = None,
    netns: str | None = None,
    extra_args: Sequence[str] = (),
    ready_timeout: float = READY_TIMEOUT_SECONDS,
) -> contextlib.AbstractContextManager[Prometheus]:
    """Start Prometheus 2.42 with `config` (YAML text or a mapping).

    `rule_files` replace the config's own rule_files (made absolute, so relative paths are taken
    from the current directory); `alertmanager` ("host:port") replaces its alerting section.
    Alerts are re-sent every second (--rules.alert.resend-delay=1s) so a test sees changes fast.
    """
    require_binary(PROMETHEUS_BINARY)
    settings = _load_config(config)
    if rule_files:
        settings["rule_files"] = [str(Path(path).resolve()) for path in rule_files]
    if alertmanager is not None:
        settings["alerting"] = {
            "alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]
        }

    def write_files(workdir: Path) -> None:
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(settings, sort_keys=False))

    def argv_for(workdir: Path, listen: str) -> list[str]:
        return [
            PROMETHEUS_BINARY,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address={listen}",
            "--web.enable-lifecycle",
            "--rules.alert.resend-delay=1s",
            *extra_args,
        ]

    return _run(Prometheus, "prometheus", argv_for, write_files, netns, ready_timeout)


def run_alertmanager(
    config: str | Mapping[str, Any],
    *,
    files: Mapping[str, str] | None = None,
    netns: str | None = None,
    extra_args: Sequence[str] = (),
    ready_timeout: float = READY_TIMEOUT_SECONDS,
) -> contextlib.AbstractContextManager[Alertmanager]:
    """Start Alertmanager 0.25 with `config` (YAML text or a mapping), clustering off.

    `files` are written beside the config before start (name -> content), and the text
    "{workdir}" in a string `config` is replaced by that directory: e.g. a bearer token file
    `credentials_file: {workdir}/token` with files={"token": "secret"}.
    """
    require_binary(ALERTMANAGER_BINARY)

    def write_files(workdir: Path) -> None:
        for name, content in (files or {}).items():
            (workdir / name).write_text(content)
        text = (
            config.replace("{workdir}", str(workdir))
            if isinstance(config, str)
            else yaml.safe_dump(dict(config), sort_keys=False)
        )
        _load_config(text)
        (workdir / "alertmanager.yml").write_text(text)

    def argv_for(workdir: Path, listen: str) -> list[str]:
        return [
            ALERTMANAGER_BINARY,
            f"--config.file={workdir / 'alertmanager.yml'}",
            f"--storage.path={workdir / 'data'}",
            f"--web.listen-address={listen}",
            # An empty cluster address disables gossip, which would otherwise bind :9094 and
            # collide with every other Alertmanager a concurrent test starts.
            "--cluster.listen-address=",
            *extra_args,
        ]

    return _run(Alertmanager, "alertmanager", argv_for, write_files, netns, ready_timeout)
