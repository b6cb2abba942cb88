"""The lab's two initramfs images, built from the fetched Debian packages and the host's Debian.

Dom0's image holds busybox, Debian's Xen 4.17 toolstack and libraries, bash/iproute2/util-linux
from the host (Debian 12, the same packages a Dom0 would install), Debian's Python 3.11 with the
few libraries the exporter and remediator import, the project's own packages, the kernel modules
(Xen back ends, bridge, and the tc chain: ifb, mirred, u32, tbf, htb, ingress) and the guests'
kernel and image. A guest's image holds busybox, iputils ping, iperf and the Xen front ends.

Why an initramfs rather than a 9p share of the host's root: it boots with nothing but the
Debian kernel's own modules (no virtio-9p in a PV Dom0 to debug), the same way every time,
and Dom0 runs from RAM so the host's files cannot change under a run; rebuilding it takes
seconds (`python -m xenlab images`), so editing the project and re-booting stays cheap.
"""

from __future__ import annotations

import gzip
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from importlib import metadata, resources
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from xenlab.paths import REPO_ROOT, LabPaths

log = logging.getLogger(__name__)

DOM0_MODULES = (
    "xen-evtchn", "xen-gntdev", "xen-gntalloc", "xen-privcmd", "xenfs", "xen-netback",
    "xen-blkback", "bridge", "loop", "virtio_pci", "virtio_net",
    # the remediator's tc chain on the vifs
    "ifb", "act_mirred", "cls_u32", "sch_tbf", "sch_htb", "sch_ingress", "sch_prio",
    "sch_fq_codel", "act_gact", "cls_matchall",
)  # fmt: skip
DOMU_MODULES = ("xen-netfront", "xen-blkfront")
# From the host (Debian 12): what the Xen hotplug scripts and the remediator run.
DOM0_HOST_BINARIES = (
    "/bin/bash", "/usr/bin/flock", "/bin/ip", "/sbin/tc", "/sbin/bridge", "/sbin/losetup",
    "/usr/bin/python3.11",
)  # fmt: skip
# iputils' ping floods (busybox's has no -f); iperf 2 floods UDP (busybox's nc has no UDP).
DOMU_HOST_BINARIES = ("/bin/ping", "/usr/bin/iperf")
PYTHON_STDLIB = Path("/usr/lib/python3.11")
DOM0_PYTHON = Path("/usr/bin/python3.11")
PYTHON_STDLIB_SKIP = {
    "test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "pydoc_data",
    "config-3.11-x86_64-linux-gnu", "distutils",
}  # fmt: skip
# The distribution whose runtime requirements Dom0 gets (the exporter's and the remediator's).
DISTRIBUTION = "judicator"
# What Dom0 runs: the services, every project package they import (kvmtools too: the exporter
# and the remediator import both platforms' readers; tests/lab holds the list to the imports),
# and the lab's agent.
PROJECT_PACKAGES = ("exporter", "remediator", "xentools", "kvmtools", "xenlab")
LIB_DIR = "usr/lib/x86_64-linux-gnu"


class ImageError(RuntimeError):
    """An image could not be built; the message names the missing piece."""


def runtime_modules(distribution: str) -> list[str]:
    """The top-level modules of `distribution`'s runtime requirements, and of theirs (no
    extras), as installed in the running environment: what its programs import."""
    modules: set[str] = set()
    seen: set[str] = set()
    pending = [distribution]
    while pending:
        for text in metadata.distribution(pending.pop()).requires or []:
            requirement = Requirement(text)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue
            name = canonicalize_name(requirement.name)
            if name not in seen:
                seen.add(name)
                pending.append(name)
                modules |= _top_level(metadata.distribution(name))
    return sorted(modules)


def _top_level(dist: metadata.Distribution) -> set[str]:
    listed = dist.read_text("top_level.txt")
    if listed:
        return {line.strip() for line in listed.splitlines() if line.strip()}
    tops = set()
    for path in dist.files or []:
        top = path.parts[0]
        if top.endswith((".dist-info", ".egg-info", ".pth")) or top in ("..", "__pycache__"):
            continue
        tops.add(top.removesuffix(".py").split(".")[0] if top.endswith((".py", ".so")) else top)
    return tops


def _is_elf(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(4) == b"\x7fELF"
    except OSError:
        return False


def copy_file(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    shutil.copy2(src, dst, follow_symlinks=True)


def copy_libraries(root: Path) -> None:
    """Copies into `root` every shared library its ELF files need that it does not hold yet."""
    search = f"{root / LIB_DIR}:{root / 'usr/lib/xen-4.17/lib/x86_64-linux-gnu'}"
    elves = [p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and _is_elf(p)]
    needed: set[str] = set()
    for elf in elves:
        result = subprocess.run(
            ["ldd", str(elf)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env={"LD_LIBRARY_PATH": search, "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        )
        for line in result.stdout.splitlines():
            match = re.search(r"=>\s+(/\S+)", line) or re.match(r"\s*(/lib64/\S+)", line)
            if match:
                needed.add(match.group(1))
    for lib in sorted(needed):
        if lib.startswith(str(root)):
            continue
        target = root / lib.lstrip("/")
        if not target.exists():
            copy_file(Path(lib), target)
    # glibc dlopen()s libgcc_s for pthread_cancel; ldd cannot see it and xl aborts without it.
    copy_file(Path("/usr/lib/x86_64-linux-gnu/libgcc_s.so.1"), root / LIB_DIR / "libgcc_s.so.1")


def skeleton(root: Path) -> None:
    """A merged-/usr tree with busybox (not its brctl or ip: the vif scripts need iproute2)."""
    shutil.rmtree(root, ignore_errors=True)
    for d in ("usr/bin", "usr/sbin", LIB_DIR, "usr/lib64", "proc", "sys", "dev", "run", "tmp",
              "root", "etc", "var/lib", "var/log", "mnt"):  # fmt: skip
        (root / d).mkdir(parents=True, exist_ok=True)
    for link, target in (("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"),
                         ("lib64", "usr/lib64"), ("var/run", "../run"),
                         ("var/lock", "../run/lock")):  # fmt: skip
        (root / link).symlink_to(target)
    busybox = Path("/bin/busybox")
    if not busybox.exists():
        raise ImageError("no /bin/busybox: install busybox-static (make lab-deps)")
    shutil.copy2(busybox, root / "usr/bin/busybox")
    applets = subprocess.run(
        [str(busybox), "--list"], capture_output=True, text=True, timeout=10, check=True
    ).stdout.split()
    for applet in applets:
        if applet in {"busybox", "brctl", "ip", "tc", "losetup", "ping"}:
            continue
        applet_link = root / "usr/bin" / applet
        if not applet_link.exists():
            applet_link.symlink_to("busybox")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\n")
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n")


def add_modules(paths: LabPaths, root: Path, names: Iterable[str]) -> None:
    """Copies the modules and their dependencies (modules.dep) and the index files."""
    release = paths.kernel_release()
    source = paths.root / "lib/modules" / release
    target = root / "lib/modules" / release
    deps: dict[str, list[str]] = {}
    for line in (source / "modules.dep").read_text().splitlines():
        module, _, rest = line.partition(":")
        deps[module] = rest.split()
    by_name = {Path(m).name.split(".ko")[0].replace("-", "_"): m for m in deps}
    for name in names:
        found = by_name.get(name.replace("-", "_"))
        if found is None:
            log.info("module %s is built in or absent in %s", name, release)
            continue
        for rel in (found, *deps[found]):
            copy_file(source / rel, target / rel)
    for index in source.glob("modules.*"):
        copy_file(index, target / index.name)


def _script(name: str) -> str:
    return resources.files("xenlab").joinpath("image", name).read_text()


def pack(root: Path, out: Path) -> None:
    """cpio newc of `root`, gzip level 1 (fast; the kernel unpacks it)."""
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    listing = "\n".join([".", *names]) + "\n"
    result = subprocess.run(
        ["cpio", "-o", "-H", "newc", "--quiet"],
        input=listing.encode(),
        capture_output=True,
        cwd=root,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        raise ImageError(f"cpio: {result.stderr.decode(errors='replace')}")
    out.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(out, "wb", compresslevel=1) as packed:
        packed.write(result.stdout)
    log.info("%s: %.1f MiB", out, out.stat().st_size / 2**20)


def build_domu(paths: LabPaths) -> None:
    root = paths.cache / "rootfs-domu"
    skeleton(root)
    for binary in DOMU_HOST_BINARIES:
        copy_file(Path(binary), root / "usr/bin" / Path(binary).name)
    add_modules(paths, root, DOMU_MODULES)
    (root / "init").write_text(_script("domu-init.sh"))
    (root / "ctl.sh").write_text(_script("domu-ctl.sh"))
    (root / "init").chmod(0o755)
    (root / "ctl.sh").chmod(0o755)
    copy_libraries(root)
    pack(root, paths.domu_initrd)


def copy_tree(src: Path, dst: Path, skip: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    shutil.copytree(
        src, dst, symlinks=True, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*skip)
    )


def add_python(root: Path, packages: Iterable[str]) -> None:
    """Debian's Python 3.11 (the host's: the image's binary is the host's /usr/bin/python3.11),
    the runtime requirements of the project (from the venv) and the project's `packages`,
    byte-compiled, under /opt/judicator."""
    copy_file(DOM0_PYTHON, root / "usr/bin/python3.11")
    (root / "usr/bin/python3").symlink_to("python3.11")
    copy_tree(PYTHON_STDLIB, root / "usr/lib/python3.11", PYTHON_STDLIB_SKIP)
    site = Path(
        subprocess.run(
            [str(REPO_ROOT / ".venv/bin/python"), "-c",
             "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout.strip()
    )  # fmt: skip
    for name in runtime_modules(DISTRIBUTION):
        if (site / name).is_dir():
            copy_tree(site / name, root / "opt/judicator/site-packages" / name, {"__pycache__"})
        elif (site / f"{name}.py").is_file():
            copy_file(site / f"{name}.py", root / "opt/judicator/site-packages" / f"{name}.py")
        elif not list(site.glob(f"{name}*.so")):
            raise ImageError(f"{name} not in {site}: run `make deps` first")
        for extra in site.glob(f"{name}*.so"):
            copy_file(extra, root / "opt/judicator/site-packages" / extra.name)
    for package in packages:
        copy_tree(REPO_ROOT / package, root / "opt/judicator" / package, {"__pycache__"})
    # Byte-compile what Debian's Python will import: under emulation, compiling the imports
    # at every start costs minutes.
    subprocess.run(
        [str(DOM0_PYTHON), "-m", "compileall", "-q", "-j", "0", str(root / "opt/judicator")],
        capture_output=True,
        timeout=600,
        check=True,
    )


def build_dom0(paths: LabPaths) -> None:
    root = paths.cache / "rootfs-dom0"
    skeleton(root)
    x = paths.root
    copy_tree(x / "usr/lib/xen-4.17", root / "usr/lib/xen-4.17", {"boot", "python"})
    copy_tree(x / LIB_DIR, root / LIB_DIR)
    copy_tree(x / "etc/xen", root / "etc/xen")
    for store_tool in (x / "usr/bin").glob("xenstore*"):
        copy_file(store_tool, root / "usr/bin" / store_tool.name)
    for d in ("var/lib/xen", "var/lib/xenstored", "var/log/xen", "etc/xenlab", "opt/judicator"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for tool in ("xl", "xenperf", "xentop"):
        (root / "usr/sbin" / tool).symlink_to(f"/usr/lib/xen-4.17/bin/{tool}")
    for binary in DOM0_HOST_BINARIES:
        copy_file(Path(binary), root / "usr/bin" / Path(binary).name)
    add_python(root, PROJECT_PACKAGES)
    add_modules(paths, root, DOM0_MODULES)
    # ifb makes two devices by default; the remediator creates its own
    modules = [f"{m} numifbs=0" if m == "ifb" else m for m in DOM0_MODULES]
    (root / "etc/xenlab/modules").write_text("\n".join(modules) + "\n")
    (root / "guest").mkdir()
    copy_file(paths.vmlinuz, root / "guest/vmlinuz")
    copy_file(paths.domu_initrd, root / "guest/domu.cpio.gz")
    (root / "init").write_text(_script("dom0-init.sh"))
    (root / "init").chmod(0o755)
    for script in ("vif-xenlab", "block-xenlab"):
        installed = root / "etc/xen/scripts" / script
        installed.write_text(_script(f"{script}.sh"))
        installed.chmod(0o755)
    copy_libraries(root)
    pack(root, paths.dom0_initrd)


def _newest_source() -> float:
    newest = 0.0
    for package in PROJECT_PACKAGES:
        for path in (REPO_ROOT / package).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                newest = max(newest, path.stat().st_mtime)
    return newest


def build(paths: LabPaths, *, force: bool = False) -> None:
    """Both images; skipped when they are newer than the project's sources and the fetch."""
    if not paths.kernel_release_file.exists():
        raise ImageError(f"nothing fetched in {paths.cache}: run `make lab-deps` first")
    if not force and paths.dom0_initrd.exists():
        built = paths.dom0_initrd.stat().st_mtime
        if built > max(_newest_source(), paths.kernel_release_file.stat().st_mtime):
            log.info("images up to date: %s", paths.boot)
            return
    build_domu(paths)
    build_dom0(paths)
