"""Fixtures shared by every test directory (the Flask tutorial's way: pytest finds them here,
never import this module). Helpers that are not fixtures live in `tests/support.py` (requirements,
`sim`, `wait_for`) and `tests/remediator/helpers.py`.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from remediator.app import create_app
from remediator.config import Config, load_config
from remediator.engine import Engine
from tests.remediator import simhost as remediator_simhost
from tests.remediator.fakehost import FakeDomain, FakeHost
from tests.remediator.helpers import TOKEN, Clock, base_config
from tests.support import require_root, require_simulated_host
from xensim.simhost import SimHost, simulated_host


@pytest.fixture
def sim_host() -> Iterator[SimHost]:
    """A fresh simulated host for one test: 4 CPUs, Domain-0 and guest1..2, Dom0 in a netns."""
    require_simulated_host()
    with simulated_host(f"tc{os.getpid() % 100_000_000}", dom0_netns=True, guests=2) as host:
        yield host


@pytest.fixture
def netns() -> Iterator[str]:
    """An empty network namespace of this test's own, deleted afterwards."""
    require_root()
    name = f"test-{os.getpid()}-{int(time.monotonic() * 1000) % 100000}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False, timeout=10)


# -- the remediator's app on a fake host (no root) --------------------------------------------


@pytest.fixture
def fake_host() -> FakeHost:
    return FakeHost(
        FakeDomain("web01", 7, vifs=[(0, False), (0, True)]),
        FakeDomain("web02", 8),
        FakeDomain("batch03", 9, scheduler="credit", vcpus=4, affinity=["all"] * 4),
        FakeDomain("infra", 3),
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_app(tmp_path: Path, fake_host: FakeHost, clock: Clock) -> Iterator[Callable[..., Flask]]:
    engines: list[Engine] = []

    def make(dry_run: bool = False, start: bool = True, **overrides: Any) -> Flask:
        config: Config = load_config(base_config(tmp_path / "state.db", **overrides))
        app = create_app(
            config, fake_host, token=TOKEN, host=fake_host, dry_run=dry_run, clock=clock
        )
        engine: Engine = app.extensions["remediator"]
        engines.append(engine)
        if start:
            engine.start()
            assert engine.ready.wait(5)
        return app

    yield make
    for engine in engines:
        engine.stop()
        engine.store.close()


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


# -- the simulated host and remediator servers on it (root) -----------------------------------


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[remediator_simhost.Host]:
    """One simulated Xen host with a Dom0 namespace per test module, always taken down."""
    with remediator_simhost.simulated_host("rem", tmp_path_factory.mktemp("sim-host")) as simulated:
        yield simulated


@pytest.fixture
def servers(host: remediator_simhost.Host, tmp_path: Path) -> Iterator[remediator_simhost.Launcher]:
    """Remediator servers on the simulated host; stopped and the host cleaned afterwards."""
    with remediator_simhost.launcher(host, tmp_path) as started:
        yield started
