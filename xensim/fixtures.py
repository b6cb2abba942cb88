"""Regenerate the xenperf fixtures: `python -m xensim.fixtures OUTDIR`.

Every `4.17-*` file is the output of Debian's real xenperf 4.17 run against the stub
libxenctrl, on a counter state built here deterministically (fixed seeds, no clock), so a
rerun reproduces the files byte for byte and they change only when someone means them to.
The `4.16-*` files cannot be captured (no 4.16 binary here): they are constructed by
`format_xenperf_4_16`, which re-implements the 4.16 printf logic of tools/misc/xenperf.c
(`T=%10u` of a 32-bit sum, values printed even when all are zero).

Options: `--xenperf PATH` and `--stub-dir DIR` (default: $XENSIM_XENPERF and $XENSIM_STUB_DIR,
else the paths the Makefile builds).
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from xensim import perfc
from xensim.counters import DEBIAN_12, SHADOW_PAGING, XEN_4_16, Catalogue

REPO = Path(__file__).resolve().parents[1]
DEFAULT_XENPERF = REPO / ".cache/xen/root/usr/lib/xen-4.17/bin/xenperf"
DEFAULT_STUB_DIR = REPO / "build/stub"
UINT32 = 1 << 32

# Events per second on one CPU: (CPU 0, where Domain-0 runs, a CPU running one guest).
PER_CPU_RATES: Mapping[str, tuple[float, float]] = {
    "apic timer interrupts": (250, 250),
    "domain page tlb flushes": (3, 0.5),
    "calls to mmuext_op": (12, 0),
    "mmuext ops": (18, 0),
    "calls to mmu_update": (25, 0),
    "page updates": (70, 0),
    "mmu_updates of writable pages": (4, 0),
    "calls to update_va_map": (6, 0),
    "page faults": (45, 2),
    "copy_user faults": (0.02, 0),
    "map_domain_page count": (2200, 600),
    "writable pt emulations": (1.5, 0),
    "pre-exception fixed": (0.01, 0),
    "guest pagetable walks": (120, 15),
    "vmexits from Pause-Loop Detection": (0, 0.3),
    "calls from multicall": (35, 0),
    "calls to multicall": (9, 0),  # 4.16 only
    "#interrupts": (1100, 320),
    "#IPIs": (60, 25),
    "RCU: idle_timer": (4, 6),
    "sched: timer": (100, 100),
    "sched: runs through scheduler": (450, 380),
    "sched: context switches": (400, 330),
    "sched: specific scheduler": (450, 380),
    "sched: vcpu_yield": (0.5, 2),
    "sched: unit_sleep": (200, 160),
    "sched: unit_wake_running": (1, 0.5),
    "sched: unit_wake_runnable": (200, 160),
    "sched: tickled_idle_cpu": (180, 150),
    "sched: tickled_busy_cpu": (2, 1),
    "csched2: burn_credits_t2c": (520, 400),
    "csched2: runtime_min_timer": (8, 5),
    "csched2: runtime_max_timer": (4, 9),
    "csched2: pick_resource": (1, 0.2),
    "csched2: credit_reset": (0.1, 0.2),
    "PG_need_flush tlb flushes": (1, 0.2),
    # shadow paging builds only: the guests run on shadow page tables
    "calls to shadow_alloc": (0, 3),
    "calls to shadow_free": (0, 2.5),
    "shadow recycles old shadows": (0, 0.1),
    "shadow A&D bit update": (0, 40),
    "calls to shadow_fault": (0, 900),
    "shadow_fault fast path n/p": (0, 30),
    "shadow_fault really guest fault": (0, 60),
    "shadow_fault emulates a write": (0, 25),
    "shadow_fault fixed fault": (0, 780),
    "calls to shadow_validate_gl1e": (0, 300),
    "calls to shadow_hash_lookup": (0, 1500),
    "shadow hash hit in bucket head": (0, 1300),
    "shadow hash misses": (0, 40),
    "calls to get_shadow_status": (0, 1500),
    "calls to shadow_hash_insert": (0, 3),
    "calls to shadow_hash_delete": (0, 2.5),
    "shadow removes write access": (0, 4),
    "shadow flush tlb by removing write perm": (0, 1.5),
    "shadow OOS unsyncs": (0, 10),
    "shadow OOS resyncs": (0, 10),
}

# Counts that do not grow with time, on CPU 0 only: domains created, units placed.
ONCE_ON_CPU0: Mapping[str, int] = {
    "sched: dom_init": 4,
    "sched: unit_alloc": 7,
    "sched: unit_insert": 7,
}

# Host-wide events per second by array element (exceptions by vector, vmexits by VMX basic
# exit reason, hypercalls by number: see docs/xen-reference.md 1.2.2 and 3.3).
ARRAY_RATES: Mapping[str, Mapping[int, float]] = {
    "exceptions": {1: 0.001, 3: 0.001, 6: 0.05, 7: 0.5, 13: 1.2, 14: 260},
    "vmexits": {0: 2, 1: 900, 7: 30, 10: 45, 12: 750, 28: 8, 30: 650, 31: 40, 32: 95, 48: 180},
    "cause vector": {14: 1.5, 2: 0.001},
    "hypercalls": {
        1: 25,
        12: 14,
        13: 35,
        17: 3,
        20: 420,
        24: 60,
        26: 12,
        29: 380,
        32: 510,
        33: 6,
        34: 140,
        35: 2,
        36: 4,
        41: 20,
        43: 0.001,  # an unused number a guest probed: xenperf -p prints it as [43]
    },
}


@dataclass(frozen=True)
class Host:
    catalogue: Catalogue
    nr_cpus: int
    seconds: float  # how long the counters have been running
    seed: int
    offline: tuple[int, ...] = ()


def host_values(host: Host) -> tuple[dict[tuple[str, int], int], dict[tuple[str, int], int]]:
    """Per-CPU values and array elements of a busy host after `host.seconds`, mod 2^32."""
    rng = random.Random(host.seed)
    names = {c.name: c for c in host.catalogue.counters}
    per_cpu: dict[tuple[str, int], int] = {}
    for name, (dom0_rate, guest_rate) in PER_CPU_RATES.items():
        if name not in names:
            continue
        for cpu in range(host.nr_cpus):
            rate = dom0_rate if cpu == 0 else guest_rate
            per_cpu[(name, cpu)] = _count(rate * host.seconds, rng)
    for name, count in ONCE_ON_CPU0.items():
        per_cpu[(name, 0)] = count
    arrays: dict[tuple[str, int], int] = {}
    for name, rates in ARRAY_RATES.items():
        if name not in names:
            continue
        guests = host.nr_cpus - 1
        for index, rate in rates.items():
            arrays[(name, index)] = _count(rate * host.seconds * guests / 3, rng)
    return per_cpu, arrays


def _count(expected: float, rng: random.Random) -> int:
    # +-15 % so that no two CPUs look alike; rng.random() is the stable part of `random`.
    return int(expected * (0.85 + 0.3 * rng.random())) % UINT32


def write_host(path: Path, host: Host) -> None:
    perfc.create(path, host.catalogue, host.nr_cpus)
    per_cpu, arrays = host_values(host)
    perfc.set_values(path, per_cpu=per_cpu, arrays=arrays)
    if host.offline:
        online = [cpu for cpu in range(host.nr_cpus) if cpu not in host.offline]
        perfc.set_online_cpus(path, list(range(host.nr_cpus)), online)


class Xenperf:
    """Runs the real xenperf against the stub and a state directory."""

    def __init__(self, xenperf: Path, stub_dir: Path, state_dir: Path) -> None:
        self.xenperf = xenperf
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LD_LIBRARY_PATH": str(stub_dir),
            "XENSIM_STATE_DIR": str(state_dir),
            "LC_ALL": "C",
        }

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.xenperf), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def stdout(self, *args: str) -> str:
        result = self.run(*args)
        if result.returncode != 0:
            raise RuntimeError(f"xenperf {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout


def format_xenperf_4_16(state: perfc.PerfcState, *, full: bool) -> str:
    """What xenperf 4.16 printed: a 32-bit `T=%10u` sum, and values even when all are zero."""
    lines = []
    offset = 0
    for d in state.descriptors:
        values = state.values[offset : offset + d.nr_vals]
        offset += d.nr_vals
        text = "%-35s T=%10u " % (d.name, sum(values) % UINT32)  # noqa: UP031 - xenperf's formats
        if full or d.nr_vals <= 4:
            text += "".join(" %10u" % value for value in values)  # noqa: UP031
        lines.append(text + "\n")
    return "".join(lines)


# 4 CPUs and one guest per CPU as in the published experiment, after one hour.
HOST_4CPU = Host(DEBIAN_12, 4, 3600, seed=4)
# 8 CPUs up for 40 days: per-CPU values have wrapped and `T=` needs more than 10 digits.
HOST_8CPU = Host(DEBIAN_12, 8, 40 * 86400, seed=8)
HOST_OFFLINE = Host(DEBIAN_12, 4, 3600, seed=4, offline=(2,))
HOST_SHADOW = Host(SHADOW_PAGING, 4, 3600, seed=17)
HOST_4_16 = Host(XEN_4_16, 4, 86400 * 7, seed=416)

# "number of shadow pages in use": allocated on one CPU, freed on another; the true count is
# the sum mod 2^32 as signed (here 1100), xenperf's 64-bit T= is off by 2 * 2^32.
SHADOW_PAGES_IN_USE = (1500, UINT32 - 100, UINT32 - 500, 200)
# Just below the wrap: +1000 interrupts on CPU 2 and +10^6 event_channel_op wrap both.
BEFORE_WRAP = {("#interrupts", 2): UINT32 - 300}, {("hypercalls", 32): UINT32 - 5000}
WRAP_STEP = {("#interrupts", 2): 1000, ("#interrupts", 0): 5000}, {("hypercalls", 32): 10**6}


def generate(outdir: Path, xenperf: Path, stub_dir: Path) -> list[Path]:
    outdir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def save(name: str, text: str) -> None:
        path = outdir / name
        path.write_text(text)
        written.append(path)

    with tempfile.TemporaryDirectory(prefix="xensim-fixtures-") as tmp:
        state_dir = Path(tmp)
        state = state_dir / perfc.STATE_FILE
        run = Xenperf(xenperf, stub_dir, state_dir)

        write_host(state, HOST_4CPU)
        save("4.17-4cpu-default.txt", run.stdout())
        save("4.17-4cpu-f.txt", run.stdout("-f"))
        save("4.17-4cpu-p.txt", run.stdout("-p"))

        write_host(state, HOST_8CPU)
        save("4.17-8cpu-default.txt", run.stdout())
        save("4.17-8cpu-f.txt", run.stdout("-f"))

        write_host(state, HOST_OFFLINE)
        save("4.17-offline-f.txt", run.stdout("-f"))

        write_host(state, HOST_4CPU)
        per_cpu, arrays = BEFORE_WRAP
        perfc.set_values(state, per_cpu=per_cpu, arrays=arrays)
        save("4.17-wrapped-before-f.txt", run.stdout("-f"))
        per_cpu, arrays = WRAP_STEP
        perfc.update(state, per_cpu=per_cpu, arrays=arrays)
        save("4.17-wrapped-after-f.txt", run.stdout("-f"))

        write_host(state, HOST_SHADOW)
        perfc.set_values(
            state,
            per_cpu={
                ("number of shadow pages in use", cpu): value
                for cpu, value in enumerate(SHADOW_PAGES_IN_USE)
            },
        )
        save("4.17-shadow-f.txt", run.stdout("-f"))

        perfc.set_errno(state, perfc_errno=38)
        save("enosys.stderr", run.run().stderr)
        save("enosys-reset.stderr", run.run("-r").stderr)
        perfc.set_errno(state, perfc_errno=0, open_errno=13)
        save("eacces-open.stderr", run.run("-f").stderr)

        write_host(state, HOST_4_16)
        per_cpu_4_16, arrays_4_16 = _xen_4_16_extras()
        perfc.set_values(state, per_cpu=per_cpu_4_16, arrays=arrays_4_16)
        snapshot = perfc.read(state)
        save("4.16-4cpu-default.txt", format_xenperf_4_16(snapshot, full=False))
        save("4.16-4cpu-f.txt", format_xenperf_4_16(snapshot, full=True))
    return written


def _xen_4_16_extras() -> tuple[dict[tuple[str, int], int], dict[tuple[str, int], int]]:
    """4.16 counted every PV hypercall into element 0 and HVM ones not at all; #interrupts
    near 2^32 on every CPU makes the 32-bit `T=` wrap."""
    hypercalls = {("hypercalls", i): 0 for i in range(1, 64)}
    hypercalls[("hypercalls", 0)] = 123456789
    interrupts = {("#interrupts", cpu): 1_500_000_000 + 7919 * cpu for cpu in range(4)}
    return interrupts, hypercalls


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xensim.fixtures", description=__doc__)
    parser.add_argument("outdir", type=Path)
    parser.add_argument(
        "--xenperf", type=Path, default=Path(os.environ.get("XENSIM_XENPERF", DEFAULT_XENPERF))
    )
    parser.add_argument(
        "--stub-dir", type=Path, default=Path(os.environ.get("XENSIM_STUB_DIR", DEFAULT_STUB_DIR))
    )
    args = parser.parse_args(argv)
    for path in (args.xenperf, args.stub_dir / "libxenctrl.so.4.17"):
        if not path.exists():
            parser.error(f"{path} does not exist (make deps builds it)")
    for path in generate(args.outdir, args.xenperf, args.stub_dir):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
