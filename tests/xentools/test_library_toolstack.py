"""xentools.toolstack.LibraryToolstack (libxenctrl + libxenstore by ctypes, here the stubs)
against XlToolstack (the fake xl) on the same simulated host: the two must tell the same story.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import pytest

from tests.sim import fakexl_sample
from tests.support import require
from xensim import perfc
from xensim.counters import DEBIAN_12
from xensim.state import StateStore
from xentools import libxenctrl, xenstore
from xentools.toolstack import (
    LibraryToolstack,
    ToolstackError,
    XlToolstack,
    open_toolstack,
)

REPO = Path(__file__).resolve().parents[2]
STUB_DIR = Path(os.environ.get("XENSIM_STUB_DIR", REPO / "build/stub"))


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[StateStore, str]:
    for name in ("libxenctrl.so.4.17", "libxenstore.so.4"):
        require((STUB_DIR / name).exists(), f"needs the stub {name} (make deps)")
    store = fakexl_sample.write_sample(tmp_path / "state")
    perfc.create(Path(store.dir) / perfc.STATE_FILE, DEBIAN_12, 7)
    monkeypatch.setenv("XENSIM_STATE_DIR", str(store.dir))
    monkeypatch.setenv("LD_LIBRARY_PATH", str(STUB_DIR))
    xl = tmp_path / "xl"
    xl.write_text(
        "#!/bin/sh\n"
        f"XENSIM_STATE_DIR={shlex.quote(str(store.dir))} PYTHONPATH={shlex.quote(str(REPO))} "
        f'exec {shlex.quote(sys.executable)} -m xensim.fakexl "$@"\n'
    )
    xl.chmod(0o755)
    return store, str(xl)


def library(xl: str) -> LibraryToolstack:
    return LibraryToolstack(
        libxenctrl.LibXenCtrl.load([str(STUB_DIR / "libxenctrl.so.4.17")]),
        xenstore.LibXenStore.load([str(STUB_DIR / "libxenstore.so.4")]),
        XlToolstack(xl),
    )


def test_the_libraries_and_xl_agree(host: tuple[StateStore, str]) -> None:
    _, xl_path = host
    lib, xl = library(xl_path), XlToolstack(xl_path)
    ours_info, xl_info = lib.info(timeout=30), xl.info(timeout=30)
    assert (ours_info.nr_cpus, ours_info.max_cpu_id) == (xl_info.nr_cpus, xl_info.max_cpu_id)
    by_lib = lib.domains(timeout=30)
    by_xl = xl.domains(timeout=30)
    assert [d.name for d in by_lib] == [d.name for d in by_xl]
    for ours, theirs in zip(by_lib, by_xl, strict=True):
        assert (ours.domid, ours.uuid, ours.vcpus, ours.states) == (
            theirs.domid,
            theirs.uuid,
            theirs.vcpus,
            theirs.states,
        ), ours.name
        assert ours.memory_bytes == theirs.memory_bytes
        assert ours.max_memory_bytes == theirs.max_memory_bytes
        assert ours.cpu_seconds == pytest.approx(theirs.cpu_seconds, abs=0.06)  # xl: %.1f
    vcpus_lib, vcpus_xl = lib.vcpu_list(timeout=30), xl.vcpu_list(timeout=30)
    assert [(v.domain, v.domid, v.vcpu, v.cpu, v.hard) for v in vcpus_lib] == [
        (v.domain, v.domid, v.vcpu, v.cpu, v.hard) for v in vcpus_xl
    ]
    for ours, theirs in zip(vcpus_lib, vcpus_xl, strict=True):
        assert ours.time_seconds == pytest.approx(theirs.time_seconds, abs=0.06)
    for domain in by_xl:
        assert lib.hard_affinity(domain.domid, 30) == xl.hard_affinity(domain.domid, 30)
    # what the libraries do not answer, xl does
    assert lib.pool_cpus(timeout=30) == xl.pool_cpus(timeout=30)
    web01 = next(d for d in by_xl if d.name == "web01")
    assert lib.scheduler(web01.domid, timeout=30) == "credit2"


def test_the_library_follows_the_host(host: tuple[StateStore, str]) -> None:
    store, xl_path = host
    lib = library(xl_path)
    before = {d.name: d for d in lib.domains(timeout=30)}
    with store.transaction() as state:
        state.domain("web01").pause_count = 1
        state.domain("web01").vcpus[0].hard = "3"
        state.destroy_domain("batch02")
    after = {d.name: d for d in lib.domains(timeout=30)}
    assert "paused" in after["web01"].states and "paused" not in before["web01"].states
    assert "batch02" in before and "batch02" not in after
    web01 = after["web01"].domid
    assert lib.hard_affinity(web01, 30)[0] == "3"
    assert {v.domain for v in lib.vcpu_list(timeout=30)} == set(after)


def test_a_domain_gone_between_calls_is_a_toolstack_error(host: tuple[StateStore, str]) -> None:
    _, xl_path = host
    with pytest.raises(ToolstackError, match="no domain 999"):
        library(xl_path).hard_affinity(999, 30)


def test_auto_falls_back_to_xl_without_the_libraries(
    host: tuple[StateStore, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _, xl_path = host
    assert isinstance(open_toolstack("auto", xl_path), LibraryToolstack)
    monkeypatch.setattr(libxenctrl, "LIBRARY_DIRS", ())
    monkeypatch.setattr(libxenctrl, "SONAME", str(tmp_path / "none.so"))
    monkeypatch.setenv("LD_LIBRARY_PATH", str(tmp_path))
    assert isinstance(open_toolstack("auto", xl_path), XlToolstack)
    with pytest.raises(libxenctrl.LibraryNotFound):
        open_toolstack("libxenctrl", xl_path)


def test_cpu_idle_time_comes_from_xc_getcpuinfo_and_not_from_xl(
    host: tuple[StateStore, str],
) -> None:
    store, xl_path = host
    lib = library(xl_path)
    with store.transaction() as state:
        online = set(state.online_cpus)
        state.cpu_idle_ns = [(cpu + 1) * 1_500_000_000 for cpu in range(state.nr_cpus)]
        expected = {cpu: (cpu + 1) * 1.5 for cpu in range(state.nr_cpus) if cpu in online}
        nr_cpus = state.nr_cpus
    assert lib.cpu_idle(timeout=30) == pytest.approx(expected)
    assert XlToolstack(xl_path).cpu_idle(timeout=30) is None
    # Asked for fewer CPUs than there are, it fills and counts only those.
    with lib._xenctrl.open() as ctrl:
        assert len(ctrl.cpu_idle_ns(1)) == 1
        assert len(ctrl.cpu_idle_ns(nr_cpus + 4)) == nr_cpus
