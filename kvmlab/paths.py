"""Where the KVM lab keeps its images and its running state; the kernel is the Xen lab's."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from xenlab.paths import DEFAULT_CACHE as XENLAB_CACHE
from xenlab.paths import REPO_ROOT, LabPaths

DEFAULT_CACHE = REPO_ROOT / ".cache" / "kvmlab"


@dataclass(frozen=True)
class KvmLabPaths:
    """boot/ (the two initramfs images) and run/ (the running L1) under `cache`; Debian's kernel
    and its modules from the Xen lab's cache `lab` (fetched once by `python -m xenlab deps`)."""

    cache: Path
    lab: LabPaths = field(default_factory=lambda: LabPaths(XENLAB_CACHE))

    @property
    def boot(self) -> Path:
        return self.cache / "boot"

    @property
    def run(self) -> Path:
        return self.cache / "run"

    @property
    def state_file(self) -> Path:
        return self.run / "state.json"

    @property
    def retries_file(self) -> Path:
        """The last `test-flood` run's record of its attempts (emulation faults retried)."""
        return self.run / "retries.json"

    @property
    def last_run_file(self) -> Path:
        """The last successful `test-flood` run's measurements (JSON)."""
        return self.run / "last-run.json"

    @property
    def vmlinuz(self) -> Path:
        """Debian's kernel, for L1 and, inside it, for the L2 guests."""
        return self.lab.vmlinuz

    @property
    def l1_initrd(self) -> Path:
        return self.boot / "l1.cpio.gz"

    @property
    def l2_initrd(self) -> Path:
        return self.boot / "l2.cpio.gz"
