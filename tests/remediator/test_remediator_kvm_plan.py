"""`platform: kvm`: the config switch, and the plans' non-tc steps as `judicator-kvmctl` argv.

Shaping plans are the same tc chain on a tap as on a vif (tests/remediator/test_remediator_plan.py
covers them); what differs is the `DomainControl` the plans take their argv from.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from remediator.alerts import Action
from remediator.config import ConfigError, load_config
from remediator.engine import tools_from
from remediator.host import ObservedDomain
from remediator.plan import (
    KvmctlControl,
    PlanError,
    Tools,
    XlControl,
    capture_prior,
    is_applied,
    is_released,
    plan_apply,
    plan_release,
)
from tests.remediator.helpers import base_config

KVMCTL = "/opt/judicator-kvmctl"
TOOLS = Tools(control=KvmctlControl(KVMCTL))
VM = ObservedDomain(
    "web01", 4242, paused=False, vcpus=2, scheduler="cgroup", cap=0, hard_affinity=("0-3", "0-3")
)
TARGET = (KVMCTL, "--pid", "4242", "--name", "web01")


def _argv(*words: str) -> tuple[str, ...]:
    return (TARGET[0], words[0], *TARGET[1:], *words[1:])


def test_platform_defaults_to_xen_and_kvm_takes_kvmctl(tmp_path: Path) -> None:
    xen = load_config(base_config(tmp_path / "s.db"))
    assert xen.platform == "xen"
    assert isinstance(tools_from(xen).domain_control, XlControl)
    raw = base_config(tmp_path / "s.db", platform="kvm", paths={"kvmctl": KVMCTL, "tc": "tc"})
    kvm = load_config(raw)
    assert (kvm.platform, kvm.kvmctl_path) == ("kvm", KVMCTL)
    assert tools_from(kvm).domain_control == KvmctlControl(KVMCTL)


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"platform": "vmware"}, "platform: must be one of xen, kvm, got 'vmware'"),
        ({"platform": "kvm"}, "paths.xl: means nothing on platform kvm (only on xen)"),
        (
            {"paths": {"kvmctl": KVMCTL}},
            "paths.kvmctl: means nothing on platform xen (only on kvm)",
        ),
        (
            {"paths": {"procfs": "/proc"}},
            "paths.procfs: means nothing on platform xen (only on kvm)",
        ),
        (
            {"paths": {"debugfs": "/sys/kernel/debug"}},
            "paths.debugfs: means nothing on platform xen (only on kvm)",
        ),
    ],
)
def test_a_platform_mismatch_is_named_at_start(
    tmp_path: Path, overrides: dict[str, object], problem: str
) -> None:
    # base_config sets paths.xl: on kvm that setting is the mistake.
    with pytest.raises(ConfigError) as error:
        load_config(base_config(tmp_path / "s.db", **overrides))
    assert problem in error.value.problems


def test_serve_refuses_the_other_platforms_tool_flag(tmp_path: Path) -> None:
    config = tmp_path / "kvm.yml"
    raw = base_config(tmp_path / "s.db", platform="kvm", paths={"tc": "tc"})
    config.write_text(yaml.safe_dump(raw))
    result = subprocess.run(
        [sys.executable, "-m", "remediator", "--config.file", str(config), "serve",
         "--xl.path", "/usr/sbin/xl"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--xl.path: means nothing on platform kvm" in result.stderr


def test_cap_pause_and_pin_are_kvmctl_by_pid_and_name() -> None:
    cap = Action("cpu_cap", {"cap": 50})
    assert [c.argv for c in plan_apply(cap, VM, {"cap": 0}, TOOLS)] == [_argv("cap", "50")]
    capped = dataclasses.replace(VM, cap=50)
    assert is_applied(cap, capped, {"cap": 0}, TOOLS)
    assert [c.argv for c in plan_release(cap, capped, {"cap": 0}, TOOLS)] == [_argv("cap", "0")]
    assert is_released(cap, VM, {"cap": 0}, TOOLS)

    pin = Action("cpu_pin", {"cpus": [2, 3]})
    prior = capture_prior(pin, VM, TOOLS)
    assert prior == {"hard_affinity": ["0-3", "0-3"]}
    assert [c.argv for c in plan_apply(pin, VM, prior, TOOLS)] == [
        _argv("pin", "--vcpu", "all", "2-3")
    ]
    pinned = dataclasses.replace(VM, hard_affinity=("2-3", "2-3"))
    assert plan_apply(pin, pinned, prior, TOOLS) == []
    assert [c.argv for c in plan_release(pin, pinned, prior, TOOLS)] == [
        _argv("pin", "--vcpu", "0", "0-3"),
        _argv("pin", "--vcpu", "1", "0-3"),
    ]

    pause = Action("pause", {})
    assert capture_prior(pause, VM, TOOLS) == {"pauses": 0}
    assert [c.argv for c in plan_apply(pause, VM, {"pauses": 0}, TOOLS)] == [_argv("pause")]
    assert [c.argv for c in plan_release(pause, VM, {"pauses": 1}, TOOLS)] == [_argv("unpause")]


def test_a_vm_paused_by_someone_else_is_neither_paused_again_nor_continued() -> None:
    pause = Action("pause", {})
    held = dataclasses.replace(VM, paused=True)
    prior = capture_prior(pause, held, TOOLS)
    assert prior == {"pauses": 0, "paused_before": 1}
    assert plan_apply(pause, held, prior, TOOLS) == []
    assert is_applied(pause, held, prior, TOOLS)
    assert plan_release(pause, held, prior, TOOLS) == []
    # On Xen the same state is paused once more: xl counts pauses.
    assert capture_prior(pause, held) == {"pauses": 0}


@pytest.mark.parametrize("scheduler", ["none", None, "credit2"])
def test_a_vm_without_its_own_cpu_cgroup_cannot_be_capped(scheduler: str | None) -> None:
    vm = dataclasses.replace(VM, scheduler=scheduler)
    with pytest.raises(PlanError) as error:
        plan_apply(Action("cpu_cap", {"cap": 50}), vm, {"cap": 0}, TOOLS)
    assert error.value.reason == "unsupported_scheduler"


def test_the_xen_plans_are_unchanged_by_the_seam() -> None:
    dom = dataclasses.replace(VM, domid=7, scheduler="credit2", hard_affinity=("all", "all"))
    xl = Tools(xl="/x/xl")
    assert [c.argv for c in plan_apply(Action("cpu_cap", {"cap": 50}), dom, {}, xl)] == [
        ("/x/xl", "sched-credit2", "-d", "7", "-c", "50")
    ]
    assert [c.argv for c in plan_apply(Action("pause", {}), dom, {"pauses": 0}, xl)] == [
        ("/x/xl", "pause", "7")
    ]
    with pytest.raises(PlanError):
        plan_apply(Action("cpu_cap", {"cap": 50}), dataclasses.replace(dom, scheduler="cgroup"),
                   {}, xl)  # fmt: skip
