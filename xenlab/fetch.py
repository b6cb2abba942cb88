"""Fetch what the lab boots from Debian's packages, and build the perf-counter hypervisor once.

Everything comes from Debian's package registry through its ordinary client: binary packages
are `apt-get download`ed and unpacked with `dpkg -x` into the cache (never installed on the
host); Xen's source comes from `apt-get source` through a private apt configuration with
deb-src enabled, so the machine's own sources are left as they are. Each step is skipped when
its output is already in the cache, so a second `make lab-deps` costs seconds.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from xenlab.paths import REPO_ROOT, LabPaths

log = logging.getLogger(__name__)

# Installed on the host (the machine that runs QEMU and builds the images).
HOST_PACKAGES = (
    "qemu-system-x86",
    "busybox-static",
    "cpio",
    "kmod",
    "dpkg-dev",
    "file",
    "build-essential",
    "flex",
    "bison",
    "python3",
    "iproute2",
    "iputils-ping",
    "iperf",
    "debian-archive-keyring",
)
# Unpacked into the cache for Dom0 and the guests. libxenmisc4.17 holds libxenctrl.so.4.17.
XEN_PACKAGES = (
    "xen-hypervisor-4.17-amd64",
    "xen-utils-4.17",
    "xen-utils-common",
    "xenstore-utils",
    "libxenmisc4.17",
    "libxencall1",
    "libxenevtchn1",
    "libxenforeignmemory1",
    "libxengnttab1",
    "libxenstore4",
    "libxentoollog1",
    "libxenhypfs1",
    "libxendevicemodel1",
    "libxentoolcore1",
    "libyajl2",
)
KERNEL_METAPACKAGE = "linux-image-amd64"
# Debian's bookworm source of xen (the security suite's source is not always on the mirror;
# a 4.17.x hypervisor runs the 4.17.y tools: the domctl/sysctl interface is fixed per release).
SOURCE_SUITES = "bookworm bookworm-updates"
SOURCES = f"""Types: deb deb-src
URIs: http://deb.debian.org/debian
Suites: {SOURCE_SUITES}
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""
PERFC_CONFIG = "CONFIG_EXPERT=y\nCONFIG_PERF_COUNTERS=y\n"
BUILD_TIMEOUT_SECONDS = 3600
APT_TIMEOUT_SECONDS = 900


class FetchError(RuntimeError):
    """A step of lab-deps failed; the message names it."""


def _run(
    argv: list[str],
    *,
    cwd: Path | None = None,
    timeout: float = APT_TIMEOUT_SECONDS,
    env: dict[str, str] | None = None,
    log_file: Path | None = None,
) -> str:
    log.debug("run %s", argv)
    try:
        result = subprocess.run(
            argv,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=env,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise FetchError(f"{argv[0]}: {error}") from error
    if log_file is not None:
        log_file.write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
        raise FetchError(f"{' '.join(argv)}: exit {result.returncode}\n{tail}")
    return result.stdout


def ensure_host_packages() -> None:
    _run([str(REPO_ROOT / "tools" / "ensure-debian-packages"), *HOST_PACKAGES])


def kernel_package() -> str:
    """The versioned kernel package Debian's metapackage points at (linux-image-6.1.0-N-amd64)."""
    out = _run(["apt-cache", "depends", KERNEL_METAPACKAGE])
    for line in out.splitlines():
        match = re.search(r"Depends:\s*(linux-image-\d\S*-amd64)$", line.strip())
        if match:
            return match.group(1)
    raise FetchError(f"apt-cache depends {KERNEL_METAPACKAGE}: no linux-image-<release>-amd64")


def fetch_binaries(paths: LabPaths) -> None:
    """apt-get download + dpkg -x the Xen, library and kernel packages; depmod for the kernel."""
    if paths.kernel_release_file.exists() and paths.xen_stock.exists():
        log.info("binary packages already in %s", paths.cache)
        return
    paths.debs.mkdir(parents=True, exist_ok=True)
    kernel = kernel_package()
    release = kernel.removeprefix("linux-image-")
    wanted = [*XEN_PACKAGES, kernel]
    missing = [p for p in wanted if not list(paths.debs.glob(f"{p}_*.deb"))]
    if missing:
        log.info("apt-get download %s", " ".join(missing))
        try:
            _run(["apt-get", "download", *missing], cwd=paths.debs)
        except FetchError:
            _run(["apt-get", "update", "-qq"])
            _run(["apt-get", "download", *missing], cwd=paths.debs)
    shutil.rmtree(paths.root, ignore_errors=True)
    paths.root.mkdir(parents=True)
    for deb in sorted(paths.debs.glob("*.deb")):
        _run(["dpkg", "-x", str(deb), str(paths.root)])
    _run(["depmod", "-b", str(paths.root), release])
    paths.boot.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(paths.root / "boot" / f"vmlinuz-{release}", paths.vmlinuz)
    # Debian ships the hypervisor gzipped; QEMU's multiboot loader wants the ELF32 image.
    import gzip

    with gzip.open(paths.root / "boot" / "xen-4.17-amd64.gz") as packed:
        paths.xen_stock.write_bytes(packed.read())
    paths.kernel_release_file.write_text(release + "\n")
    log.info("fetched %d packages, kernel %s", len(wanted), release)


def _apt_options(paths: LabPaths) -> list[str]:
    return [
        "-o", "Dir::Etc::SourceList=/dev/null",
        "-o", f"Dir::Etc::SourceParts={paths.apt / 'sources.list.d'}",
        "-o", f"Dir::State::Lists={paths.apt / 'lists'}",
        "-o", f"Dir::Cache={paths.apt / 'cache'}",
    ]  # fmt: skip


def fetch_source(paths: LabPaths) -> Path:
    """Debian's xen source package, unpacked (its patch queue applied): the tree's path."""
    trees = sorted(p for p in paths.src.glob("xen-4.17*") if p.is_dir())
    if trees:
        return trees[-1]
    (paths.apt / "sources.list.d").mkdir(parents=True, exist_ok=True)
    (paths.apt / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (paths.apt / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    (paths.apt / "sources.list.d" / "lab-src.sources").write_text(SOURCES)
    options = _apt_options(paths)
    _run(["apt-get", *options, "update", "-qq"])
    paths.src.mkdir(parents=True, exist_ok=True)
    log.info("apt-get source xen (deb-src through the lab's private apt configuration)")
    _run(["apt-get", *options, "source", "--download-only", "xen"], cwd=paths.src)
    dsc = sorted(paths.src.glob("xen_*.dsc"))
    if not dsc:
        raise FetchError("apt-get source xen: no .dsc downloaded")
    _run(["dpkg-source", "-x", dsc[-1].name], cwd=paths.src)
    trees = sorted(p for p in paths.src.glob("xen-4.17*") if p.is_dir())
    if not trees:
        raise FetchError("dpkg-source -x: no xen-4.17* tree")
    return trees[-1]


def build_perfc(paths: LabPaths, jobs: int = 2) -> None:
    """The hypervisor alone (`make -C xen`) with Debian's .config plus PERF_COUNTERS."""
    if paths.xen_perfc.exists():
        log.info("perf-counter hypervisor already built: %s", paths.xen_perfc)
        return
    tree = fetch_source(paths)
    build = paths.cache / "xen-build"
    shutil.rmtree(build, ignore_errors=True)
    shutil.copytree(tree, build, symlinks=True)
    config = (paths.root / "boot" / "xen-4.17-amd64.config").read_text()
    (build / "xen" / ".config").write_text(config + PERFC_CONFIG)
    env = dict(os.environ, PYTHON="/usr/bin/python3", WGET="/bin/false", GIT="/bin/false")
    make = ["make", "-C", "xen", "XEN_TARGET_ARCH=x86_64", "PYTHON=/usr/bin/python3"]
    _run([*make, "olddefconfig"], cwd=build, env=env)
    built = (build / "xen" / ".config").read_text()
    if "CONFIG_PERF_COUNTERS=y" not in built:
        raise FetchError("olddefconfig dropped CONFIG_PERF_COUNTERS")
    started = time.monotonic()
    log.info("building the perf-counter hypervisor (make -C xen -j%d; ~2-4 min)", jobs)
    _run(
        [*make, f"-j{jobs}"],
        cwd=build,
        env=env,
        timeout=BUILD_TIMEOUT_SECONDS,
        log_file=paths.cache / "xen-build.log",
    )
    shutil.copyfile(build / "xen" / "xen", paths.xen_perfc)
    shutil.rmtree(build, ignore_errors=True)
    log.info("built %s in %.0f s", paths.xen_perfc, time.monotonic() - started)


def deps(paths: LabPaths) -> None:
    ensure_host_packages()
    fetch_binaries(paths)
    build_perfc(paths)
