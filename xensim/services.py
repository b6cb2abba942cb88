"""Our services and Prometheus's, started on a free loopback port and always stopped.

    with run_prometheus(config, rule_files=[...]) as prometheus:
        wait_until(lambda: prometheus.query("up == 1"), timeout=30, what="a scrape")

Every service listens on 127.0.0.1 on a free port, keeps its data in its own temporary
directory and is killed (its whole process group) and that directory removed on exit, also
when the body raises. With `netns="NAME"` a service runs under `ip netns exec NAME`; its port is
then inside the namespace, and the handle's HTTP calls are made from a helper thread that joined
the namespace (setns(2) moves only the calling thread), so a caller in the root namespace uses it
just the same. Each handle (`Prometheus`, `Alertmanager`, `Exporter`, `Remediator`) is also the
HTTP client of its service.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import yaml

from xensim.host import enter_netns
from xensim.poll import StopWaiting, wait_until

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]

PROMETHEUS_BINARY = "prometheus"
ALERTMANAGER_BINARY = "prometheus-alertmanager"
READY_TIMEOUT_SECONDS = 60.0
HTTP_TIMEOUT_SECONDS = 10.0
STOP_TIMEOUT_SECONDS = 10.0

Sample = tuple[dict[str, str], float]
T = TypeVar("T")


class ServiceError(RuntimeError):
    """A service did not start, died, or answered with an error."""


class ServiceDied(ServiceError, StopWaiting):
    """The process exited; waiting longer cannot help."""


def free_loopback_port() -> int:
    """A TCP port free on 127.0.0.1 now (in the calling thread's network namespace)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _require_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ServiceError(f"needs the {name} binary on PATH (`make deps` installs it)")
    return path


class NetnsCaller:
    """Runs callables in the root namespace, or in one thread that joined a network namespace."""

    def __init__(self, netns: str | None) -> None:
        self.netns = netns
        self._executor: ThreadPoolExecutor | None = None
        if netns is not None:
            self._executor = ThreadPoolExecutor(
                max_workers=1,
                thread_name_prefix=f"netns-{netns}",
                initializer=enter_netns,
                initargs=(netns,),
            )

    def __call__(self, function: Callable[[], T]) -> T:
        if self._executor is None:
            return function()
        return self._executor.submit(function).result()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)


class Service:
    """An HTTP service on 127.0.0.1:port, possibly inside a network namespace."""

    ready_path = "/-/ready"

    def __init__(
        self,
        name: str,
        port: int,
        caller: NetnsCaller,
        process: subprocess.Popen[bytes],
        workdir: Path,
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
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, bytes]:
        """One HTTP request to the service; returns (status, body) for any HTTP status."""
        url = self.url + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        data = None if body is None else json.dumps(body).encode()
        all_headers = {"Content-Type": "application/json"} if data is not None else {}
        all_headers.update(headers or {})
        req = urllib.request.Request(url, data=data, method=method, headers=all_headers)

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

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise ServiceDied(f"{self.name} exited with {self.process.returncode}:\n{self.log()}")

    def ready(self) -> bool:
        self.check_alive()
        try:
            status, _ = self.request("GET", self.ready_path)
        except OSError:
            return False
        return status == 200


class Prometheus(Service):
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

    def query_range(
        self, expr: str, start: float, end: float, step: float = 1.0
    ) -> list[tuple[dict[str, str], list[tuple[float, float]]]]:
        """Range query: [(labels, [(timestamp, value), ...])] per series."""
        params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
        data = self._api("query_range", params)
        return [
            (dict(item["metric"]), [(float(t), float(v)) for t, v in item["values"]])
            for item in data["result"]
        ]

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


class Alertmanager(Service):
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


class Exporter(Service):
    """Handle on a running judicator-exporter."""

    ready_path = "/"

    def metrics(self) -> str:
        status, body = self.request("GET", "/metrics")
        if status != 200:
            raise ServiceError(f"exporter GET /metrics: HTTP {status}: {body!r}")
        return body.decode()


class Remediator(Service):
    """Handle on a running judicator-remediator (its config file is in its workdir)."""

    @property
    def config_file(self) -> Path:
        return self.workdir / "remediator.yml"

    def throttles(self, *, everything: bool = True) -> list[dict[str, Any]]:
        """Throttles as `judicator-remediator list --json [--all]` reports them."""
        argv = [sys.executable, "-m", "remediator", "--config.file", str(self.config_file)]
        argv += ["list", "--json", *(["--all"] if everything else [])]
        try:
            result = subprocess.run(
                argv, capture_output=True, text=True, timeout=30, check=False, cwd=REPO_ROOT
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise ServiceError(f"remediator list: {error}") from error
        if result.returncode != 0:
            raise ServiceError(f"remediator list: exit {result.returncode}: {result.stderr}")
        rows: list[dict[str, Any]] = json.loads(result.stdout)
        return rows

    def audit(self) -> list[dict[str, Any]]:
        """The audit records the remediator logged so far (one JSON object per line)."""
        records = []
        for line in self.log().splitlines():
            _, marker, record = line.partition("remediator.audit: ")
            if marker:
                with contextlib.suppress(ValueError):
                    records.append(json.loads(record))
        return records


ServiceT = TypeVar("ServiceT", bound=Service)


@contextlib.contextmanager
def _run(
    kind: type[ServiceT],
    name: str,
    argv_for: Callable[[Path, str], list[str]],
    write_files: Callable[[Path, str], None],
    netns: str | None,
    ready_timeout: float,
    env: Mapping[str, str] | None = None,
    log_path: Path | None = None,
) -> Iterator[ServiceT]:
    workdir = Path(tempfile.mkdtemp(prefix=f"judicator-{name}-{os.getpid()}-"))
    caller = NetnsCaller(netns)
    process: subprocess.Popen[bytes] | None = None
    try:
        if netns is not None:
            # A fresh namespace has its loopback down; nothing can listen on 127.0.0.1 without it.
            subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True, timeout=10)
        port = caller(free_loopback_port)
        listen = f"127.0.0.1:{port}"
        write_files(workdir, listen)
        argv = argv_for(workdir, listen)
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
                env=None if env is None else dict(env),
            )
        service = kind(name, port, caller, process, workdir)
        log.debug("started %s as pid %d: %s", name, process.pid, argv)
        try:
            wait_until(
                service.ready,
                timeout=ready_timeout,
                what=f"{name} on {service.url}{kind.ready_path}",
            )
        except TimeoutError as error:
            raise ServiceError(f"{error}\n{name} output:\n{service.log()}") from None
        yield service
    finally:
        if process is not None:
            stop_process_group(process)
        caller.close()
        if log_path is not None:
            with contextlib.suppress(OSError):
                shutil.copyfile(workdir / "output.log", log_path)
        shutil.rmtree(workdir, ignore_errors=True)


def stop_process_group(process: subprocess.Popen[Any]) -> None:
    """SIGTERM the process group, SIGKILL it if it lingers; never leave a child behind."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=STOP_TIMEOUT_SECONDS)
    # Children that outlived the leader still carry its process group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


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
    log_path: Path | None = None,
    storage_path: Path | None = None,
) -> contextlib.AbstractContextManager[Prometheus]:
    """Start Prometheus 2.42 with `config` (YAML text or a mapping).

    `rule_files` replace the config's own rule_files (made absolute, so relative paths are taken
    from the current directory); `alertmanager` ("host:port") replaces its alerting section. The
    text "{listen}" in a string `config` becomes Prometheus's own address (its self-scrape).
    Alerts are re-sent every second (--rules.alert.resend-delay=1s) so a caller sees changes fast.
    `storage_path` is a TSDB to open (e.g. blocks written by promtool's backfill; the caller
    keeps and removes it) instead of an empty one in the service's temporary directory.
    """
    binary = _require_binary(PROMETHEUS_BINARY)

    def write_files(workdir: Path, listen: str) -> None:
        text = config.replace("{listen}", listen) if isinstance(config, str) else config
        settings = _load_config(text)
        if rule_files:
            settings["rule_files"] = [str(Path(path).resolve()) for path in rule_files]
        if alertmanager is not None:
            settings["alerting"] = {
                "alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]
            }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(settings, sort_keys=False))

    def argv_for(workdir: Path, listen: str) -> list[str]:
        return [
            binary,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={storage_path or workdir / 'data'}",
            f"--web.listen-address={listen}",
            "--web.enable-lifecycle",
            "--rules.alert.resend-delay=1s",
            *extra_args,
        ]

    return _run(
        Prometheus, "prometheus", argv_for, write_files, netns, ready_timeout, log_path=log_path
    )


def run_alertmanager(
    config: str | Mapping[str, Any],
    *,
    files: Mapping[str, str] | None = None,
    netns: str | None = None,
    extra_args: Sequence[str] = (),
    ready_timeout: float = READY_TIMEOUT_SECONDS,
    log_path: Path | None = None,
) -> contextlib.AbstractContextManager[Alertmanager]:
    """Start Alertmanager 0.25 with `config` (YAML text or a mapping), clustering off.

    `files` are written beside the config before start (name -> content), and the text
    "{workdir}" in a string `config` is replaced by that directory: e.g. a bearer token file
    `credentials_file: {workdir}/token` with files={"token": "secret"}.
    """
    binary = _require_binary(ALERTMANAGER_BINARY)

    def write_files(workdir: Path, _listen: str) -> None:
        for name, content in (files or {}).items():
            path = workdir / name
            path.write_text(content)
            path.chmod(0o600)
        text = (
            config.replace("{workdir}", str(workdir))
            if isinstance(config, str)
            else yaml.safe_dump(dict(config), sort_keys=False)
        )
        _load_config(text)
        (workdir / "alertmanager.yml").write_text(text)

    def argv_for(workdir: Path, listen: str) -> list[str]:
        return [
            binary,
            f"--config.file={workdir / 'alertmanager.yml'}",
            f"--storage.path={workdir / 'data'}",
            f"--web.listen-address={listen}",
            # An empty cluster address disables gossip, which would otherwise bind :9094 and
            # collide with every other Alertmanager started beside it.
            "--cluster.listen-address=",
            *extra_args,
        ]

    return _run(
        Alertmanager, "alertmanager", argv_for, write_files, netns, ready_timeout, log_path=log_path
    )


def python_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The environment for one of our own Python processes: this repo importable, `extra` set."""
    env = dict(os.environ)
    env.update(extra)
    env["PYTHONPATH"] = (
        f"{REPO_ROOT}:{env['PYTHONPATH']}" if env.get("PYTHONPATH") else str(REPO_ROOT)
    )
    return env


def run_exporter(
    host_env: Mapping[str, str],
    *,
    netns: str | None = None,
    extra_args: Sequence[str] = (),
    ready_timeout: float = READY_TIMEOUT_SECONDS,
    log_path: Path | None = None,
) -> contextlib.AbstractContextManager[Exporter]:
    """Start judicator-exporter against a simulated host (`judicator-sim env --json`).

    It reaches the host only as it reaches a real one: through --xl.path, --xenperf.path,
    --path.sysfs and the library search path (the stub libxenctrl).
    """

    def write_files(_workdir: Path, _listen: str) -> None:
        """Nothing to write: the exporter takes flags only."""

    def argv_for(_workdir: Path, listen: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "exporter",
            f"--web.listen-address={listen}",
            f"--xl.path={host_env['XENSIM_XL']}",
            f"--xenperf.path={host_env['XENSIM_XENPERF_BIN']}",
            f"--path.sysfs={host_env['XENSIM_SYSFS']}",
            *extra_args,
        ]

    return _run(
        Exporter,
        "exporter",
        argv_for,
        write_files,
        netns,
        ready_timeout,
        env=python_env(host_env),
        log_path=log_path,
    )


def run_remediator(
    config: Mapping[str, Any],
    *,
    token: str,
    host_env: Mapping[str, str] | None = None,
    netns: str | None = None,
    extra_args: Sequence[str] = (),
    ready_timeout: float = READY_TIMEOUT_SECONDS,
    log_path: Path | None = None,
) -> contextlib.AbstractContextManager[Remediator]:
    """Start `judicator-remediator serve` with `config` (a mapping).

    The token is written to `<workdir>/remediator.token` (mode 0600); "{workdir}" in any string
    value of `config` is replaced by that directory, e.g. `state_path: {workdir}/throttles.sqlite`.
    """

    def write_files(workdir: Path, _listen: str) -> None:
        token_path = workdir / "remediator.token"
        token_path.write_text(token + "\n")
        token_path.chmod(0o600)
        rendered = _substitute(config, "{workdir}", str(workdir))
        (workdir / "remediator.yml").write_text(yaml.safe_dump(rendered, sort_keys=False))

    def argv_for(workdir: Path, listen: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "remediator",
            f"--config.file={workdir / 'remediator.yml'}",
            "serve",
            f"--web.listen-address={listen}",
            *extra_args,
        ]

    return _run(
        Remediator,
        "remediator",
        argv_for,
        write_files,
        netns,
        ready_timeout,
        env=python_env(host_env or {}),
        log_path=log_path,
    )


def _substitute(value: Any, placeholder: str, replacement: str) -> Any:
    if isinstance(value, str):
        return value.replace(placeholder, replacement)
    if isinstance(value, Mapping):
        return {key: _substitute(item, placeholder, replacement) for key, item in value.items()}
    if isinstance(value, list):
        return [_substitute(item, placeholder, replacement) for item in value]
    return value
