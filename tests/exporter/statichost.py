"""A simulated Xen host frozen in time, without root: the sim's own state files, no daemon.

`xl` is the simulator's fake xl over a `xensim.state` host built like `judicator-sim up`'s
default (Domain-0 on CPU 0, guest i pinned to CPU i); the counters are the stub's perfc file,
filled with a captured xenperf fixture's values; sysfs is tests/fixtures/sysfs.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.exporter.fakes import SYSFS_FIXTURE, XENPERF_FIXTURES
from xensim import perfc
from xensim.counters import DEBIAN_12, SHADOW_PAGING, Catalogue
from xensim.state import StateStore, new_host
from xentools.xenperf import CounterKind, parse_xenperf

REPO = Path(__file__).resolve().parents[2]
STUB_DIR = Path(os.environ.get("XENSIM_STUB_DIR") or REPO / "build/stub")
XENPERF = Path(
    os.environ.get("XENSIM_XENPERF") or REPO / ".cache/xen/root/usr/lib/xen-4.17/bin/xenperf"
)


@dataclass(frozen=True)
class StaticHost:
    state_dir: Path
    xl: str
    xenperf: str
    sysfs: str

    def environment(self) -> dict[str, str]:
        """What the exporter's process needs to reach this host (the stub and its state)."""
        return {"LD_LIBRARY_PATH": str(STUB_DIR), "XENSIM_STATE_DIR": str(self.state_dir)}


def write_script(path: Path, text: str) -> str:
    path.write_text(text)
    path.chmod(0o755)
    return str(path)


def make_static_host(
    directory: Path, fixture: str = "4.17-4cpu-f.txt", guests: int = 3, cpus: int = 4
) -> StaticHost:
    state_dir = directory / "host"
    state_dir.mkdir()
    host = new_host("static", cpus, dom0_vcpus=1)
    host.domains[0].vcpus[0].hard = "0"
    host.domains[0].vcpus[0].cpu = 0
    for number in range(1, guests + 1):
        guest = host.add_domain(
            f"guest{number}",
            pinned_cpus=[number % cpus],
            uuid=f"00000000-0000-4000-8000-{number:012x}",
        )
        guest.cpu_time_ns = guest.vcpus[0].time_ns = number * 1_500_000_000
    StateStore(state_dir).initialize(host)

    text = (XENPERF_FIXTURES / fixture).read_text()
    snapshot = parse_xenperf(text)
    catalogue: Catalogue = SHADOW_PAGING if "shadow" in fixture else DEBIAN_12
    path = state_dir / perfc.STATE_FILE
    perfc.create(path, catalogue, snapshot.online_cpus)
    per_cpu, arrays = {}, {}
    for counter in snapshot.counters:
        target = arrays if counter.kind is CounterKind.ARRAY else per_cpu
        for index, value in enumerate(counter.values):
            target[counter.name, index] = value
    perfc.set_values(path, per_cpu=per_cpu, arrays=arrays)

    xl = write_script(
        directory / "xl",
        "#!/bin/sh\n"
        f"XENSIM_STATE_DIR={shlex.quote(str(state_dir))}\n"
        "export XENSIM_STATE_DIR\n"
        f"PYTHONPATH={shlex.quote(str(REPO))}\n"
        "export PYTHONPATH\n"
        f'exec {shlex.quote(sys.executable)} -S -m xensim.fakexl "$@"\n',
    )
    return StaticHost(state_dir, xl, str(XENPERF), SYSFS_FIXTURE)
