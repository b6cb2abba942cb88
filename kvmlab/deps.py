"""`kvmlab deps`: the host's Debian packages, Debian's kernel (fetched by the Xen lab, shared),
and the images."""

from __future__ import annotations

import logging

from kvmlab.images import build
from kvmlab.paths import KvmLabPaths
from xenlab.fetch import _run
from xenlab.paths import REPO_ROOT

log = logging.getLogger(__name__)

# On the host: QEMU for L1 (and, copied into L1, for the guests), the firmware it loads, what
# the images are built from. All Debian packages, installed by their ordinary client.
HOST_PACKAGES = (
    "qemu-system-x86", "qemu-system-data", "seabios", "busybox-static", "cpio", "kmod",
    "python3.11", "iproute2", "iputils-ping", "iperf", "bash",
)  # fmt: skip


def ensure_host_packages() -> None:
    _run([str(REPO_ROOT / "tools" / "ensure-debian-packages"), *HOST_PACKAGES])


def deps(paths: KvmLabPaths) -> None:
    ensure_host_packages()
    if not paths.lab.kernel_release_file.exists() or not paths.vmlinuz.exists():
        from xenlab.fetch import fetch_binaries

        log.info("no Debian kernel in %s yet: fetching the Xen lab's packages", paths.lab.cache)
        fetch_binaries(paths.lab)
    build(paths)
