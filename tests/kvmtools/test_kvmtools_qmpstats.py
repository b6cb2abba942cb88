"""kvmtools.qmpstats: QEMU's query-stats answers parsed from fixtures (captured on this machine
and hand-made, tests/fixtures/kvm/README.md), and the reader's caching against a fake monitor."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kvmtools.debugfs import STAT_KINDS, Kind, VmStat
from kvmtools.qmpstats import (
    QmpStatsError,
    QmpStatsReader,
    QmpVmStats,
    StatSchema,
    combine,
    parse_cpu_indexes,
    parse_results,
    parse_schemas,
)
from tests.kvmtools.fakehost import FIXTURES
from tests.kvmtools.fakeqmp import fake_qmp, qmp_answers

PREFIXES = sorted(
    path.name.removesuffix("-qmp-stats-schemas.json")
    for path in FIXTURES.glob("*-qmp-stats-schemas.json")
)


def answer(prefix: str, suffix: str) -> Any:
    return json.loads((FIXTURES / f"{prefix}-qmp-{suffix}.json").read_text())["return"]


def parsed(prefix: str) -> QmpVmStats:
    return combine(
        parse_schemas(answer(prefix, "stats-schemas")),
        answer(prefix, "stats-vm"),
        answer(prefix, "stats-vcpu"),
        parse_cpu_indexes(answer(prefix, "cpus-fast")),
    )


def values(stats: tuple[VmStat, ...]) -> dict[str, int]:
    return {stat.name: stat.value for stat in stats}


def test_every_fixture_set_is_found() -> None:
    assert {"captured-pvm-kvm-S-smp2", "handmade-probe-run6", "handmade-odd"} <= set(PREFIXES)


@pytest.mark.parametrize("prefix", PREFIXES)
def test_vm_level_is_the_vm_target_plus_vcpu_sums(prefix: str) -> None:
    schemas = parse_schemas(answer(prefix, "stats-schemas"))
    stats = parsed(prefix)
    own = {name for _, found in parse_results(answer(prefix, "stats-vm")) for name in found}
    vcpus = [found for _, found in parse_results(answer(prefix, "stats-vcpu"))]
    summed = [name for name in values(stats.vm) if name in schemas.vcpu and name not in own]
    assert summed, "no vCPU statistic at VM level"
    for name in summed:
        # every vCPU's value, mapped to an index or not, counts in the VM's sum
        assert values(stats.vm)[name] == sum(int(found[name]) for found in vcpus), name
    for name in own & schemas.vm.keys():
        if schemas.vm[name].kind is not Kind.HISTOGRAM:
            assert name in values(stats.vm)
    assert all(stat.kind in (Kind.CUMULATIVE, Kind.INSTANT, Kind.PEAK) for stat in stats.vm)


@pytest.mark.parametrize("prefix", PREFIXES)
def test_qemus_schema_agrees_with_the_kernels_descriptors(prefix: str) -> None:
    """QEMU's types come from the stats fd's descriptors, as kvmtools.debugfs's table does
    from the kernel's source: where both know a statistic, they must agree."""
    schemas = parse_schemas(answer(prefix, "stats-schemas"))
    for schema in [*schemas.vm.values(), *schemas.vcpu.values()]:
        if schema.name in STAT_KINDS:
            assert schema.kind is STAT_KINDS[schema.name], schema.name


def test_captured_two_vcpus_mapped_by_qom_path() -> None:
    """A real QEMU 7.2 with -smp 2 on this machine's KVM: vCPU 1 is device[2], and
    query-stats lists it first."""
    assert parse_cpu_indexes(answer("captured-pvm-kvm-S-smp2", "cpus-fast")) == {
        "/machine/unattached/device[0]": 0,
        "/machine/unattached/device[2]": 1,
    }
    paths = [path for path, _ in parse_results(answer("captured-pvm-kvm-S-smp2", "stats-vcpu"))]
    assert paths == ["/machine/unattached/device[2]", "/machine/unattached/device[0]"]
    stats = parsed("captured-pvm-kvm-S-smp2")
    assert list(stats.vcpus) == [0, 1]
    kinds = {stat.name: stat.kind for stat in stats.vm}
    # kinds from QEMU's schema, including a newer kernel's statistics debugfs cannot classify
    assert kinds["exits"] is Kind.CUMULATIVE and kinds["pf_parked"] is Kind.CUMULATIVE
    assert kinds["blocking"] is Kind.INSTANT and kinds["pages_4k"] is Kind.INSTANT
    assert kinds["max_mmu_rmap_size"] is Kind.PEAK
    assert "halt_wait_hist" not in kinds  # histograms are lists: left out
    assert values(stats.vm)["exits"] == 0  # never ran (-S)


def test_probe_run6_matches_the_log() -> None:
    """run6.log's [after1] query-stats vcpu L2a line, one vCPU."""
    stats = parsed("handmade-probe-run6")
    vm, vcpu0 = values(stats.vm), values(stats.vcpus[0])
    assert (vm["exits"], vm["irq_injections"], vm["halt_exits"]) == (84885, 15674, 6545)
    assert vcpu0["exits"] == 84885 and vcpu0["io_exits"] == 38709
    assert vm["remote_tlb_flush"] == 0 and "remote_tlb_flush" not in vcpu0  # a vm statistic


def test_odd_answers() -> None:
    """QEMU 7.1 (no boolean unit: blocking an integer), another provider, an unknown type, a
    statistic missing from the schema, histograms, and a hot-plugged vCPU query-cpus-fast
    did not list yet."""
    schemas = parse_schemas(answer("handmade-odd", "stats-schemas"))
    assert set(schemas.vcpu) == {
        "exits",
        "blocking",
        "halt_wait_ns",
        "halt_wait_hist",
        "halt_poll_linear",
    }
    assert schemas.vcpu["halt_wait_ns"] == StatSchema(
        "halt_wait_ns", Kind.CUMULATIVE, "seconds", 10, -9
    )
    assert schemas.vcpu["halt_wait_ns"].describe() == "cumulative, seconds x 10^-9"
    assert schemas.vcpu["exits"].describe() == "cumulative"
    stats = parsed("handmade-odd")
    assert values(stats.vm) == {
        "blocking": 2,
        "exits": 420,  # 300 of the unmapped vCPU too
        "halt_wait_ns": 6000,
        "max_mmu_rmap_size": 9,
        "pages_4k": 512,
        "remote_tlb_flush": 3,
    }
    assert {index: values(vcpu) for index, vcpu in stats.vcpus.items()} == {
        0: {"blocking": 0, "exits": 100, "halt_wait_ns": 1000},
        1: {"blocking": 1, "exits": 20, "halt_wait_ns": 2000},
    }


@pytest.mark.parametrize(
    "parse, bad",
    [
        (parse_schemas, {"return": []}),
        (parse_schemas, [{"provider": "kvm", "target": "vm", "stats": "x"}]),
        (
            parse_schemas,
            [
                {
                    "provider": "kvm",
                    "target": "vm",
                    "stats": [{"name": "a", "type": "cumulative", "exponent": "-9"}],
                }
            ],
        ),
        (parse_cpu_indexes, [{"qom-path": "/machine/x"}]),
        (parse_cpu_indexes, [{"qom-path": "/machine/x", "cpu-index": -1}]),
        (parse_results, None),
        (parse_results, [{"provider": "kvm", "stats": [1]}]),
    ],
)
def test_malformed_answers(parse: Any, bad: Any) -> None:
    with pytest.raises(QmpStatsError):
        parse(bad)


def test_reader_asks_schemas_once_per_qemu_and_cpus_again_on_hotplug(tmp_path: Path) -> None:
    answers = qmp_answers("captured-pvm-kvm-S-smp2")
    with fake_qmp(tmp_path / "q", answers) as monitor:
        reader = QmpStatsReader()
        first = reader.read(4242, monitor.path, 2)
        second = reader.read(4242, monitor.path, 2)
        assert first == second and list(first.vcpus) == [0, 1]
        assert monitor.asked["query-stats-schemas"] == 1
        assert monitor.asked["query-cpus-fast"] == 1
        assert monitor.asked["query-stats vcpu"] == 2
        # another QEMU on the same pid after a restart would have its own socket; a new pid
        # is a new process: asked again
        reader.read(4343, monitor.path, 2)
        assert monitor.asked["query-stats-schemas"] == 2
        reader.forget_others([4343])
        reader.read(4242, monitor.path, 2)
        assert monitor.asked["query-stats-schemas"] == 3
        # a vCPU query-cpus-fast did not list: asked again in the same connection
        monitor.answers = qmp_answers("handmade-odd")
        reader.read(5000, monitor.path, 2)
        asked = monitor.asked["query-cpus-fast"]
        reader.read(5000, monitor.path, 2)
        assert monitor.asked["query-cpus-fast"] == asked + 1  # the odd set never lists cpu2
