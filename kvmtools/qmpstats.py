"""KVM's statistics through QEMU's QMP: `query-stats` (QEMU 7.1+), per VM and per vCPU.

QEMU reads them from KVM's binary statistics fds (`KVM_GET_STATS_FD`), which kernel lockdown
does not restrict as it restricts debugfs, and which have each vCPU apart (debugfs's VM
directory only has their sums). QEMU's schema (qapi/stats.json): `query-stats-schemas`
returns, per provider and target (`vm`, `vcpu`), each statistic's `type` (cumulative,
instant, peak, linear-histogram, log2-histogram), `unit` (bytes, seconds, cycles; QEMU 7.2
adds boolean), and `base`/`exponent` (10/-9: nanoseconds); `query-stats` returns, per object
(the VM, or each vCPU by its `qom-path`), `{name, value}` pairs: an unsigned integer, a
boolean (7.2), or a list (histogram buckets). Counter or gauge comes from the schema's type,
not from names, as `kvmtools.debugfs` takes it from the kernel's descriptors.

A vCPU's `qom-path` (`/machine/unattached/device[2]`) is not its index: `query-cpus-fast`
maps qom-path to `cpu-index`. Schemas and that map are fixed for a QEMU process (save CPU
hotplug: an unknown qom-path asks again), so `QmpStatsReader` keeps them per pid and socket.

Parsers here are pure (decoded JSON in, dataclasses out); `QmpStatsReader` speaks to the
monitor with `kvmtools.qmp`, one connection per call, bounded by its timeout.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kvmtools import qmp
from kvmtools.debugfs import Kind, VmStat

log = logging.getLogger(__name__)

PROVIDER = "kvm"
_KINDS = {
    "cumulative": Kind.CUMULATIVE,
    "instant": Kind.INSTANT,
    "peak": Kind.PEAK,
    "linear-histogram": Kind.HISTOGRAM,
    "log2-histogram": Kind.HISTOGRAM,
}


class QmpStatsError(ValueError):
    """An answer that is not what qapi/stats.json describes."""


@dataclass(frozen=True)
class StatSchema:
    name: str
    kind: Kind
    unit: str | None  # None: a plain count
    base: int
    exponent: int

    def describe(self) -> str:
        """`cumulative, seconds x 10^-9` as HELP says it."""
        text = self.kind.value
        if self.unit is not None:
            text += f", {self.unit}"
        if self.exponent:
            text += f" x {self.base}^{self.exponent}"
        return text


@dataclass(frozen=True)
class Schemas:
    """The kvm provider's statistics by target (`vm`, `vcpu`) and name."""

    vm: Mapping[str, StatSchema]
    vcpu: Mapping[str, StatSchema]


@dataclass(frozen=True)
class QmpVmStats:
    """One VM's statistics: `vm` as debugfs's VM directory has them (the VM's own, and each
    vCPU statistic summed over the vCPUs), `vcpus` by vCPU index."""

    vm: tuple[VmStat, ...]
    vcpus: Mapping[int, tuple[VmStat, ...]]


def _list(answer: Any, what: str) -> list[dict[str, Any]]:
    if not isinstance(answer, list) or not all(isinstance(item, dict) for item in answer):
        raise QmpStatsError(f"{what}: expected a list of objects, got {answer!r:.80}")
    return answer


def parse_schemas(answer: Any) -> Schemas:
    """`query-stats-schemas`'s return value: the kvm provider's vm and vcpu schemas. Other
    providers (QEMU 8's cryptodev) and targets are left out; so is a statistic of a type
    this code does not know (a newer QEMU's), which would otherwise be guessed at."""
    targets: dict[str, dict[str, StatSchema]] = {"vm": {}, "vcpu": {}}
    for schema in _list(answer, "query-stats-schemas"):
        stats = targets.get(schema.get("target", ""))
        if schema.get("provider") != PROVIDER or stats is None:
            continue
        for value in _list(schema.get("stats"), "StatsSchema.stats"):
            name, kind = value.get("name"), _KINDS.get(value.get("type", ""))
            if not isinstance(name, str) or kind is None:
                log.debug("statistic %r of type %r left out", name, value.get("type"))
                continue
            unit = value.get("unit")
            base, exponent = value.get("base", 10), value.get("exponent", 0)
            if not isinstance(base, int) or not isinstance(exponent, int):
                raise QmpStatsError(f"StatsSchemaValue {name}: base/exponent not integers")
            stats[name] = StatSchema(
                name, kind, unit if isinstance(unit, str) else None, base, exponent
            )
    return Schemas(vm=targets["vm"], vcpu=targets["vcpu"])


def parse_cpu_indexes(answer: Any) -> dict[str, int]:
    """`query-cpus-fast`'s return value as {qom-path: cpu-index}."""
    indexes = {}
    for cpu in _list(answer, "query-cpus-fast"):
        path, index = cpu.get("qom-path"), cpu.get("cpu-index")
        if not isinstance(path, str) or not isinstance(index, int) or index < 0:
            raise QmpStatsError(f"query-cpus-fast: no qom-path/cpu-index in {cpu!r:.80}")
        indexes[path] = index
    return indexes


def parse_results(answer: Any) -> list[tuple[str | None, dict[str, Any]]]:
    """`query-stats`'s return value: (qom-path or None, {name: value}) per kvm StatsResult."""
    results = []
    for result in _list(answer, "query-stats"):
        if result.get("provider") != PROVIDER:
            continue
        values = {}
        for stat in _list(result.get("stats"), "StatsResult.stats"):
            if isinstance(stat.get("name"), str) and "value" in stat:
                values[stat["name"]] = stat["value"]
        path = result.get("qom-path")
        results.append((path if isinstance(path, str) else None, values))
    return results


def _scalar(value: Any) -> int | None:
    """A StatsValue as one number: booleans as 0/1, lists (histograms) and negatives None."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) and value >= 0:
        return value
    return None


def _stats(values: Mapping[str, Any], schemas: Mapping[str, StatSchema]) -> list[VmStat]:
    """Scalar values whose schema is known, sorted by name, histograms left out."""
    stats = []
    for name in sorted(values):
        schema, value = schemas.get(name), _scalar(values[name])
        if schema is None or value is None or schema.kind is Kind.HISTOGRAM:
            continue
        stats.append(VmStat(name, schema.kind, value))
    return stats


def combine(
    schemas: Schemas,
    vm_answer: Any,
    vcpu_answer: Any,
    cpu_indexes: Mapping[str, int],
) -> QmpVmStats:
    """The VM's statistics from the `query-stats` answers of targets vm and vcpu.

    VM level mirrors debugfs's VM directory (virt/kvm/kvm_main.c `kvm_stat_data_get`: a vCPU
    statistic there is the sum over the VM's vCPUs), so that kvm_vm_<stat> means the same from
    either source: the vm target's own statistics, plus each vCPU statistic summed. A vCPU
    whose qom-path `cpu_indexes` lacks still counts in the sums; `unmapped_vcpus` tells the
    reader to ask query-cpus-fast again.
    """
    vm = {stat.name: stat for stat in _stats(_merged(parse_results(vm_answer)), schemas.vm)}
    sums: dict[str, VmStat] = {}
    vcpus: dict[int, tuple[VmStat, ...]] = {}
    for path, values in parse_results(vcpu_answer):
        stats = _stats(values, schemas.vcpu)
        for stat in stats:
            total = sums.get(stat.name)
            sums[stat.name] = (
                stat if total is None else VmStat(stat.name, stat.kind, total.value + stat.value)
            )
        index = cpu_indexes.get(path) if path is not None else None
        if index is not None:
            vcpus[index] = tuple(stats)
    for name, stat in sums.items():
        if name in vm:
            log.debug("statistic %s is both a vm and a vcpu one: the vm's kept", name)
        else:
            vm[name] = stat
    return QmpVmStats(vm=tuple(vm[name] for name in sorted(vm)), vcpus=dict(sorted(vcpus.items())))


def _merged(results: Iterable[tuple[str | None, dict[str, Any]]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for _, values in results:
        merged.update(values)
    return merged


def unmapped_vcpus(vcpu_answer: Any, cpu_indexes: Mapping[str, int]) -> bool:
    return any(path not in cpu_indexes for path, _ in parse_results(vcpu_answer) if path)


# -- reading a live QEMU --------------------------------------------------------------------


@dataclass(frozen=True)
class _Known:
    schemas: Schemas
    cpu_indexes: Mapping[str, int]


class QmpStatsReader:
    """`query-stats` of one VM per call, over one short connection; the schemas and the
    vCPU map are asked once per QEMU process (pid and socket) and kept.

    Safe to call from several threads at once (one VM per call).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: dict[tuple[int, str], _Known] = {}

    def read(self, pid: int, socket_path: str, timeout: float) -> QmpVmStats:
        """Raises `qmp.QmpError` (no answer within `timeout`, refused, closed) or
        `QmpStatsError` (an answer unlike the schema)."""
        key = (pid, socket_path)
        with self._lock:
            known = self._known.get(key)
        with qmp.QmpConnection(socket_path, timeout) as connection:
            if known is None:
                known = _Known(
                    parse_schemas(connection.execute("query-stats-schemas")),
                    parse_cpu_indexes(connection.execute("query-cpus-fast")),
                )
            vm_answer = connection.execute("query-stats", {"target": "vm"})
            vcpu_answer = connection.execute("query-stats", {"target": "vcpu"})
            if unmapped_vcpus(vcpu_answer, known.cpu_indexes):  # a vCPU was hot-plugged
                known = _Known(
                    known.schemas, parse_cpu_indexes(connection.execute("query-cpus-fast"))
                )
        with self._lock:
            self._known[key] = known
        return combine(known.schemas, vm_answer, vcpu_answer, known.cpu_indexes)

    def forget_others(self, pids: Iterable[int]) -> None:
        """Drop what is kept of QEMU processes not in `pids` (ended VMs)."""
        alive = set(pids)
        with self._lock:
            for key in [key for key in self._known if key[0] not in alive]:
                del self._known[key]
