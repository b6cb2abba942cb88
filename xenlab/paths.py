"""Where the lab keeps what it fetched, built and booted (all under one cache directory)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = REPO_ROOT / ".cache" / "lab"


@dataclass(frozen=True)
class LabPaths:
    """The cache layout: debs/ and root/ (Debian packages), src/ (xen source), boot/ (images)."""

    cache: Path

    @property
    def debs(self) -> Path:
        return self.cache / "debs"

    @property
    def root(self) -> Path:
        """Every fetched package unpacked with `dpkg -x` (never installed on the host)."""
        return self.cache / "root"

    @property
    def apt(self) -> Path:
        """A private apt configuration with deb-src (the host's sources stay untouched)."""
        return self.cache / "apt"

    @property
    def src(self) -> Path:
        return self.cache / "src"

    @property
    def boot(self) -> Path:
        return self.cache / "boot"

    @property
    def run(self) -> Path:
        """The running lab's pid file, console log and ports (lab-up / lab-down)."""
        return self.cache / "run"

    @property
    def kernel_release_file(self) -> Path:
        return self.cache / "kernel-release"

    def kernel_release(self) -> str:
        return self.kernel_release_file.read_text().strip()

    @property
    def xen_stock(self) -> Path:
        """Debian's own hypervisor (no perf counters: xenperf gets ENOSYS)."""
        return self.boot / "xen-4.17-amd64"

    @property
    def xen_perfc(self) -> Path:
        """The same source rebuilt with CONFIG_PERF_COUNTERS=y."""
        return self.boot / "xen-perfc"

    @property
    def vmlinuz(self) -> Path:
        return self.boot / "vmlinuz"

    @property
    def dom0_initrd(self) -> Path:
        return self.boot / "dom0.cpio.gz"

    @property
    def domu_initrd(self) -> Path:
        return self.boot / "domu.cpio.gz"
