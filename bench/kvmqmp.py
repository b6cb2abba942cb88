"""What the kvmstat collector's QMP source costs per VM and scrape, on real QEMUs.

    .venv/bin/python bench/kvmqmp.py [--vms 16] [--vcpus 2] [--rounds 20]

Starts `--vms` QEMUs with `-accel kvm -S` (KVM VMs that never run: the statistics are zeros,
but QEMU's answers have their real size and cost), each with a QMP unix socket in a temporary
directory, and times the reads `exporter.kvmqmp` makes per scrape: one connection per VM,
query-stats of targets vm and vcpu (schemas and the vCPU map cached after the first, "cold",
round), one VM after another and in `QMP_THREADS` threads. Prints wall-clock medians and this
process's CPU time per scrape. Every QEMU is killed at the end, also on failure. Needs a
/dev/kvm that creates VMs and qemu-system-x86_64.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from exporter.kvm import NoXenToolstack
from exporter.kvmqmp import QMP_THREADS, QmpSource
from exporter.toolstack import Scrape
from kvmtools.proc import KvmVm
from kvmtools.qmpstats import QmpStatsReader


def start(directory: str, index: int, vcpus: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            "qemu-system-x86_64",
            "-accel",
            "kvm",
            "-S",
            "-name",
            f"guest=bench{index},debug-threads=on",
            "-qmp",
            f"unix:{directory}/bench{index}.qmp,server=on,wait=off",
            "-nodefaults",
            "-display",
            "none",
            "-m",
            "64",
            "-smp",
            str(vcpus),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vms", type=int, default=16)
    parser.add_argument("--vcpus", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kvmqmp") as directory:
        processes: list[subprocess.Popen[bytes]] = []
        try:
            processes = [start(directory, index, args.vcpus) for index in range(args.vms)]
            sockets = [f"{directory}/bench{index}.qmp" for index in range(args.vms)]
            deadline = time.monotonic() + 30
            while not all(os.path.exists(path) for path in sockets):
                if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                    raise SystemExit("QEMU did not start (does /dev/kvm create VMs?)")
                time.sleep(0.1)
            vms = [
                KvmVm(f"bench{i}", p.pid, None, (), (), sockets[i], None, None)
                for i, p in enumerate(processes)
            ]
            report(vms, args.rounds)
        finally:
            for process in processes:
                process.kill()
            for process in processes:
                process.wait(timeout=10)
    return 0


def report(vms: list[KvmVm], rounds: int) -> None:
    reader = QmpStatsReader()
    started = time.perf_counter()
    vcpus = 0
    for vm in vms:  # QEMU may still be creating its vCPUs: the cold read waits for the answer
        assert vm.qmp_socket is not None
        vcpus = len(reader.read(vm.pid, vm.qmp_socket, 10).vcpus)
    cold = time.perf_counter() - started
    one_by_one, cpu = [], []
    for _ in range(rounds):
        started, cpu_started = time.perf_counter(), time.process_time()
        for vm in vms:
            assert vm.qmp_socket is not None
            reader.read(vm.pid, vm.qmp_socket, 3)
        one_by_one.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
    source = QmpSource(reader)
    parallel = []
    for _ in range(rounds):
        scrape = Scrape(NoXenToolstack(), time.monotonic() + 9, 3)
        started = time.perf_counter()
        answers = source.read(vms, scrape, [vm.pid for vm in vms])
        parallel.append(time.perf_counter() - started)
        assert len(answers.stats) == len(vms), answers.problems
    n = len(vms)
    ms = 1000
    print(
        f"{n} VMs x {vcpus} vCPUs: "
        f"cold (schemas, vCPU map) {cold * ms:.1f} ms; one by one {median(one_by_one):.1f} ms "
        f"({median(one_by_one) / n:.2f} ms/VM); {QMP_THREADS} threads {median(parallel):.1f} ms; "
        f"exporter CPU {median(cpu):.1f} ms/scrape ({median(cpu) / n:.2f} ms/VM)"
    )


def median(values: list[float]) -> float:
    return statistics.median(values) * 1000


if __name__ == "__main__":
    sys.exit(main())
