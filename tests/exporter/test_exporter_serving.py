"""The exporter as a process: HTTP, flags, web config, and misbehaving xl / xenperf binaries."""

from __future__ import annotations

import base64
import contextlib
import http.client
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.exporter.statichost import STUB_DIR, XENPERF, StaticHost, make_static_host, write_script
from tests.support import require, require_binary
from xensim.stack import stop_process_group

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30.0


@pytest.fixture
def host(tmp_path: Path) -> StaticHost:
    require(XENPERF.exists() and (STUB_DIR / "libxenctrl.so.4.17").exists(), "needs make deps")
    return make_static_host(tmp_path)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get(
    url: str,
    *,
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
    timeout: float = 15.0,
) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@contextlib.contextmanager
def exporter_process(
    host: StaticHost, *flags: str, scheme: str = "http", context: ssl.SSLContext | None = None
) -> Iterator[str]:
    with serving(
        f"--xl.path={host.xl}",
        f"--xenperf.path={host.xenperf}",
        f"--path.sysfs={host.sysfs}",
        *flags,
        env=dict(os.environ, **host.environment(), PYTHONPATH=str(REPO)),
        scheme=scheme,
        context=context,
    ) as base:
        yield base


@contextlib.contextmanager
def serving(
    *flags: str,
    env: dict[str, str] | None = None,
    scheme: str = "http",
    context: ssl.SSLContext | None = None,
) -> Iterator[str]:
    """`judicator-exporter FLAGS` on a free port, until it answers; its base URL. Stopped after."""
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "exporter",
        f"--web.listen-address=127.0.0.1:{port}",
        *flags,
    ]
    process = subprocess.Popen(
        argv,
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    base = f"{scheme}://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"exporter exited {process.returncode}: {process.stdout.read()}")  # type: ignore[union-attr]
            try:
                if get(base + "/", context=context, timeout=2)[0] in (200, 401):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("exporter did not start listening")
            time.sleep(0.1)
        yield base
    finally:
        stop_process_group(process)
        if process.stdout:
            process.stdout.close()


def sample(text: str, line_start: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_landing_page_metrics_and_not_found(host: StaticHost) -> None:
    with exporter_process(host) as base:
        status, page = get(base + "/")
        assert status == 200 and 'href="/metrics"' in page
        status, metrics = get(base + "/metrics")
        assert status == 200
        assert sample(metrics, 'xen_perfc_interrupts_total{cpu="1",domain="guest1"}') == 1014098
        assert sample(metrics, 'xen_exporter_collector_success{collector="network"}') == 1
        assert get(base + "/nothing")[0] == 404


def test_concurrent_scrapes_are_safe(host: StaticHost) -> None:
    results: list[tuple[int, str]] = []
    with exporter_process(host, "--web.telemetry-path=/probe") as base:

        def scrape() -> None:
            for _ in range(3):
                results.append(get(base + "/probe", timeout=30))

        threads = [threading.Thread(target=scrape) for _ in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    assert len(results) == 15
    for status, text in results:
        assert status == 200
        assert sample(text, 'xen_exporter_collector_success{collector="perfc"}') == 1
        # no wrap can happen on a frozen host: the value stays exact under concurrency
        assert sample(text, 'xen_perfc_interrupts_total{cpu="3",domain="guest3"}') == 1058297


MISBEHAVIOURS = {
    "hanging": "#!/bin/sh\nsleep 60\n",
    "failing": "#!/bin/sh\necho 'Error: something broke' >&2\nexit 1\n",
    "garbage": "#!/bin/sh\necho 'Qu T= the quick brown fox'\necho 'jumps 12 over'\n",
}


@pytest.mark.parametrize("behaviour", sorted(MISBEHAVIOURS))
def test_misbehaving_xenperf_fails_only_perfc(
    host: StaticHost, tmp_path: Path, behaviour: str
) -> None:
    xenperf = write_script(tmp_path / "bad-xenperf", MISBEHAVIOURS[behaviour])
    with exporter_process(
        host, "--perfc.reader=xenperf", f"--xenperf.path={xenperf}", "--command.timeout=1"
    ) as base:
        started = time.monotonic()
        status, text = get(base + "/metrics")
        assert time.monotonic() - started < 5
    assert status == 200
    assert sample(text, 'xen_exporter_collector_success{collector="perfc"}') == 0
    assert sample(text, 'xen_exporter_collector_success{collector="domain"}') == 1
    assert sample(text, 'xen_domain_vcpus{domain="guest2"}') == 1


@pytest.mark.parametrize("behaviour", sorted(MISBEHAVIOURS))
def test_misbehaving_xl_never_hangs_the_scrape(
    host: StaticHost, tmp_path: Path, behaviour: str
) -> None:
    xl = write_script(tmp_path / "bad-xl", MISBEHAVIOURS[behaviour])
    with exporter_process(
        host, "--toolstack.reader=xl", f"--xl.path={xl}", "--command.timeout=1"
    ) as base:
        started = time.monotonic()
        status, text = get(base + "/metrics")
        elapsed = time.monotonic() - started
    assert status == 200
    # one timeout for `xl info`, one for `xl list`: each question is asked once per scrape
    assert elapsed < 5
    for collector in ("perfc", "domain", "network", "block"):
        assert sample(text, f'xen_exporter_collector_success{{collector="{collector}"}}') == 0
    assert "xen_exporter_build_info{" in text


def test_with_the_libraries_a_scrape_starts_no_process(host: StaticHost, tmp_path: Path) -> None:
    """libxenctrl and libxenstore (the stubs here) answer every scrape's questions: xl is not
    started once, and the answers are the host's."""
    calls = tmp_path / "xl-calls"
    xl = write_script(tmp_path / "counting-xl", f'#!/bin/sh\necho "$@" >> {calls}\nexit 1\n')
    with exporter_process(host, "--toolstack.reader=libxenctrl", f"--xl.path={xl}") as base:
        for _ in range(3):
            status, text = get(base + "/metrics")
            assert status == 200
    assert not calls.exists(), calls.read_text()
    for collector in ("perfc", "domain", "network", "block"):
        assert sample(text, f'xen_exporter_collector_success{{collector="{collector}"}}') == 1
    assert sample(text, 'xen_domain_vcpus{domain="guest2"}') == 1
    assert sample(text, 'xen_pcpu_domain_share_ratio{cpu="2",domain="guest2"}') == 1


def test_scrape_budget_follows_prometheus_timeout_header(host: StaticHost, tmp_path: Path) -> None:
    xl = write_script(tmp_path / "slow-xl", MISBEHAVIOURS["hanging"])
    with exporter_process(
        host, "--toolstack.reader=xl", f"--xl.path={xl}", "--command.timeout=5"
    ) as base:
        started = time.monotonic()
        status, _ = get(base + "/metrics", headers={"X-Prometheus-Scrape-Timeout-Seconds": "2"})
        assert status == 200
        assert time.monotonic() - started < 4


def make_certificate(directory: Path) -> tuple[Path, Path]:
    openssl = require_binary("openssl")
    cert, key = directory / "server.crt", directory / "server.key"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def test_tls_and_basic_auth_from_web_config(host: StaticHost, tmp_path: Path) -> None:
    bcrypt = (
        pytest.importorskip("bcrypt") if os.environ.get("CI") != "true" else __import__("bcrypt")
    )
    cert, _key = make_certificate(tmp_path)
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()
    config = tmp_path / "web.yml"
    config.write_text(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        f"basic_auth_users:\n  prometheus: '{hashed}'\n"
    )
    context = ssl.create_default_context(cafile=str(cert))
    with exporter_process(
        host, f"--web.config.file={config}", scheme="https", context=context
    ) as base:
        assert get(base + "/metrics", context=context)[0] == 401
        wrong = base64.b64encode(b"prometheus:nope").decode()
        assert (
            get(base + "/metrics", context=context, headers={"Authorization": f"Basic {wrong}"})[0]
            == 401
        )
        right = base64.b64encode(b"prometheus:s3cret").decode()
        status, text = get(
            base + "/metrics", context=context, headers={"Authorization": f"Basic {right}"}
        )
        assert status == 200 and "xen_perfc_available 1.0" in text
        with pytest.raises((OSError, http.client.HTTPException)):
            get(base.replace("https", "http") + "/metrics", timeout=5)


@pytest.mark.parametrize(
    ("flags", "config", "message"),
    [
        (["--web.listen-address=nonsense"], None, "--web.listen-address"),
        (["--web.telemetry-path=metrics"], None, "--web.telemetry-path"),
        ([], "tls_server_config:\n  cert_file: /nonexistent.crt\n", "key_file is required"),
        ([], "basic_auth_users:\n  bob: plaintext\n", "not a bcrypt hash"),
        ([], "tls_config: {}\n", "unknown key 'tls_config'"),
        (["--command.timeout=20"], None, "--command.timeout"),
    ],
)
def test_configuration_errors_fail_at_start(
    tmp_path: Path, flags: Sequence[str], config: str | None, message: str
) -> None:
    argv = [sys.executable, "-m", "exporter", *flags]
    if config is not None:
        path = tmp_path / "web.yml"
        path.write_text(config)
        argv.append(f"--web.config.file={path}")
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=REPO)
    assert result.returncode == 2
    assert message in result.stderr
