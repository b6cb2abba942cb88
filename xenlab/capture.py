"""Capture, from a running lab, every format the product parses, as real fixture files.

    python -m xenlab fixtures [--out tests/fixtures]   # boots perfc then stock Xen, ~6-10 min

Files are named `real-*` (tests/fixtures/xl, tests/fixtures/xenperf) and `sysfs/real/...`;
their README sections say how they were made. Nothing is edited after capture except that
the volatile sysfs tree is copied as plain files (sysfs symlinks become directories).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from xenlab.vm import Lab

log = logging.getLogger(__name__)

# fixture name -> xl arguments (run in Dom0 with guests up and some traffic done)
XL_CAPTURES = {
    "real-info.txt": ("info",),
    "real-list.txt": ("list",),
    "real-list-l.txt": ("list", "-l"),
    "real-list-v.txt": ("list", "-v"),
    "real-list-c.txt": ("list", "-c"),
    "real-vcpu-list.txt": ("vcpu-list",),
    "real-sched-credit2.txt": ("sched-credit2",),
    "real-sched-credit2-d.txt": ("sched-credit2", "-d", "guest1"),
    "real-cpupool-list.txt": ("cpupool-list",),
    "real-cpupool-list-c.txt": ("cpupool-list", "-c"),
}
XENPERF_PERFC = {
    "real-4.17-perfc-default.txt": (),
    "real-4.17-perfc-f.txt": ("-f",),
    "real-4.17-perfc-p.txt": ("-p",),
}
VIF_FILES = ("rx_bytes", "rx_packets", "rx_dropped", "tx_bytes", "tx_packets", "tx_dropped")
VBD_FILES = ("rd_req", "wr_req", "rd_sect", "wr_sect", "oo_req", "f_req", "ds_req")


def _traffic(lab: Lab) -> None:
    """Some traffic and disk I/O first, so that counters are not all zero."""
    lab.guest_command("guest1", "ping", lab.guest("guest2").ip, "20", timeout=40)
    lab.guest_command("guest2", "disk", "2", timeout=60)


def capture_perfc(lab: Lab, out: Path) -> None:
    _traffic(lab)
    for name, args in XL_CAPTURES.items():
        result = lab.xl(*args).check(f"xl {' '.join(args)}")
        (out / "xl" / name).write_text(result.stdout)
    for name, args in XENPERF_PERFC.items():
        result = lab.run("xenperf", *args).check(f"xenperf {' '.join(args)}")
        (out / "xenperf" / name).write_text(result.stdout)
    capture_sysfs(lab, out / "sysfs" / "real")


def capture_sysfs(lab: Lab, root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)
    names = lab.run("ls", "/sys/class/net").check("ls class/net").stdout.split()
    for name in names:
        if not name.startswith("vif") and name not in {"lo", "xenbr0"}:
            continue
        base = f"/sys/class/net/{name}"
        for stat in VIF_FILES:
            value = lab.run("cat", f"{base}/statistics/{stat}").check(f"{name} {stat}").stdout
            path = root / "class/net" / name / "statistics" / stat
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(value)
        nodename = lab.run("cat", f"{base}/device/nodename")
        if nodename.rc == 0:
            path = root / "class/net" / name / "device" / "nodename"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(nodename.stdout)
    devices = "/sys/bus/xen-backend/devices"
    for name in lab.run("ls", devices).check("ls xen-backend").stdout.split():
        if not name.startswith("vbd-"):
            (root / "bus/xen-backend/devices" / name).mkdir(parents=True, exist_ok=True)
            continue
        for stat in VBD_FILES:
            value = lab.run("cat", f"{devices}/{name}/statistics/{stat}").stdout
            path = root / "bus/xen-backend/devices" / name / "statistics" / stat
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(value)


def capture_stock(lab: Lab, out: Path) -> None:
    """Debian's own hypervisor: xenperf fails with ENOSYS (no perf counters)."""
    for name, args in (
        ("real-4.17-stock-enosys.stderr", ()),
        ("real-4.17-stock-enosys-f.stderr", ("-f",)),
    ):
        result = lab.run("xenperf", *args)
        if result.rc == 0:
            raise RuntimeError("xenperf succeeded on Debian's stock hypervisor?")
        (out / "xenperf" / name).write_text(result.stderr)
        log.info("%s: exit %d, stdout %r", name, result.rc, result.stdout)
    (out / "xl" / "real-info-stock.txt").write_text(lab.xl("info").check("xl info").stdout)
