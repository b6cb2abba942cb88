"""The KVM lab's two initramfs images, built with the Xen lab's helpers (xenlab.images).

L1 (the KVM host, under QEMU TCG): busybox, bash, iproute2's ip/tc/bridge, iputils ping, the
host's Debian qemu-system-x86_64 with its libraries and the firmware a `-machine pc` guest
loads (SeaBIOS, the kvmvapic and linuxboot option ROMs), Debian's Python 3.11 with the
project's packages and the lab agent (xenlab.agent), the kernel modules (kvm_amd, tun,
bridge, the tc chain's) and, under /guest, the L2 kernel and image. L2 (a KVM guest): busybox,
iputils ping (flood), iperf 2, virtio-net, and a control listener (image/l2-ctl.sh).
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

from kvmlab.paths import KvmLabPaths
from xenlab.images import (
    DOMU_HOST_BINARIES,
    ImageError,
    add_modules,
    add_python,
    copy_file,
    copy_libraries,
    pack,
    skeleton,
)
from xenlab.paths import REPO_ROOT

log = logging.getLogger(__name__)

# (module, its parameters) loaded in this order by L1's init; kvm_amd with nested paging.
L1_MODULES = (
    ("kvm", ""), ("kvm_amd", "npt=1"), ("tun", ""), ("vhost_net", ""), ("bridge", ""),
    ("virtio_pci", ""), ("virtio_net", ""),
    # the remediator's tc chain on the taps (ifb makes two devices by default: none here)
    ("ifb", "numifbs=0"), ("sch_tbf", ""), ("sch_htb", ""), ("sch_ingress", ""),
    ("cls_u32", ""), ("act_mirred", ""), ("sch_prio", ""), ("sch_fq_codel", ""),
    ("act_gact", ""), ("cls_matchall", ""),
)  # fmt: skip
L2_MODULES = ("virtio_pci", "virtio_net")
L1_HOST_BINARIES = (
    "/usr/bin/bash", "/usr/sbin/ip", "/usr/sbin/tc", "/usr/sbin/bridge", "/usr/bin/ping",
    "/usr/bin/qemu-system-x86_64",
)  # fmt: skip
L2_HOST_BINARIES = DOMU_HOST_BINARIES  # iputils ping (-f) and iperf 2, as the Xen guests
# What `qemu-system-x86_64 -machine pc -nodefaults -kernel ...` reads, in QEMU's data and
# firmware directories: SeaBIOS, the kvmvapic ROM (KVM's TPR patching), linuxboot(_dma) for
# -kernel; the NIC's option ROM is turned off (romfile=).
QEMU_FIRMWARE = (
    "/usr/share/seabios/bios-256k.bin", "/usr/share/seabios/bios.bin",
    "/usr/share/qemu/kvmvapic.bin", "/usr/share/qemu/linuxboot_dma.bin",
    "/usr/share/qemu/linuxboot.bin",
)  # fmt: skip
# The project's packages L1 runs (kvmtools when this branch has it).
L1_PROJECT_PACKAGES = ("exporter", "remediator", "xentools", "kvmtools", "xenlab", "kvmlab")
L1_SCRIPTS = {"l1-init.sh": "init", "l2-start.sh": "usr/lib/kvmlab/l2-start"}
L2_SCRIPTS = {"l2-init.sh": "init", "l2-ctl.sh": "ctl.sh"}


def project_packages() -> list[str]:
    return [p for p in L1_PROJECT_PACKAGES if (REPO_ROOT / p / "__init__.py").is_file()]


def _script(name: str) -> str:
    return resources.files("kvmlab").joinpath("image", name).read_text()


def _install_scripts(root: Path, scripts: dict[str, str]) -> None:
    for name, target in scripts.items():
        path = root / target
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_script(name))
        path.chmod(0o755)


def l1_module_lines() -> list[str]:
    """/etc/kvmlab/modules: one `name [params]` a line, in load order."""
    return [f"{name} {params}".strip() for name, params in L1_MODULES]


def build_l2(paths: KvmLabPaths) -> None:
    root = paths.cache / "rootfs-l2"
    skeleton(root)
    for binary in L2_HOST_BINARIES:
        copy_file(Path(binary), root / "usr/bin" / Path(binary).name)
    add_modules(paths.lab, root, L2_MODULES)
    _install_scripts(root, L2_SCRIPTS)
    copy_libraries(root)
    pack(root, paths.l2_initrd)


def build_l1(paths: KvmLabPaths) -> None:
    root = paths.cache / "rootfs-l1"
    skeleton(root)
    for binary in L1_HOST_BINARIES:
        copy_file(Path(binary), root / "usr/bin" / Path(binary).name)
    for firmware in QEMU_FIRMWARE:
        copy_file(Path(firmware), root / firmware.lstrip("/"))
    add_python(root, project_packages())
    add_modules(paths.lab, root, [name for name, _ in L1_MODULES])
    (root / "etc/kvmlab").mkdir(parents=True, exist_ok=True)
    (root / "etc/kvmlab/modules").write_text("\n".join(l1_module_lines()) + "\n")
    copy_file(paths.vmlinuz, root / "guest/vmlinuz")
    copy_file(paths.l2_initrd, root / "guest/l2.cpio.gz")
    _install_scripts(root, L1_SCRIPTS)
    copy_libraries(root)
    pack(root, paths.l1_initrd)


def _newest_source() -> float:
    newest = 0.0
    for package in project_packages():
        for path in (REPO_ROOT / package).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                newest = max(newest, path.stat().st_mtime)
    return newest


def build(paths: KvmLabPaths, *, force: bool = False) -> None:
    """Both images; skipped when L1's is newer than the project's sources and the kernel."""
    if not paths.lab.kernel_release_file.exists() or not paths.vmlinuz.exists():
        raise ImageError(f"no kernel in {paths.lab.cache}: run `make kvmlab-deps` first")
    if not force and paths.l1_initrd.exists():
        built = paths.l1_initrd.stat().st_mtime
        if built > max(_newest_source(), paths.lab.kernel_release_file.stat().st_mtime):
            log.info("images up to date: %s", paths.boot)
            return
    build_l2(paths)
    build_l1(paths)
