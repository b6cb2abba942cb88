"""Debian's real xenperf against the stub libxenctrl.so.4.17 and the perfc state file.

Expected output is built here from the state file's contents with Python's % formatting of the
C formats in tools/misc/xenperf.c (4.17), never by running the stub, plus a few literal lines
typed from docs/xen-reference.md 1.2 so that both cannot drift together.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import re
import struct
import subprocess
import threading
import time
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import require, require_binary, wait_for
from xensim import fixtures, perfc
from xensim.counters import DEBIAN_12, SHADOW_PAGING, Catalogue, Kind

REPO = Path(__file__).resolve().parents[2]
XENPERF = Path(
    os.environ.get("XENSIM_XENPERF") or REPO / ".cache/xen/root/usr/lib/xen-4.17/bin/xenperf"
)
STUB_DIR = Path(os.environ.get("XENSIM_STUB_DIR") or REPO / "build/stub")
STUB = STUB_DIR / "libxenctrl.so.4.17"
FIXTURES = REPO / "tests/fixtures/xenperf"
UINT32 = 1 << 32

# xenperf 4.17's hypercall_name_table on x86 (docs/xen-reference.md 1.2.2); other indices
# print as [j].
HYPERCALL_NAMES = {
    **dict(
        enumerate(
            [
                "set_trap_table",
                "mmu_update",
                "set_gdt",
                "stack_switch",
                "set_callbacks",
                "fpu_taskswitch",
                "sched_op_compat",
                "platform_op",
                "set_debugreg",
                "get_debugreg",
                "update_descriptor",
            ]
        )
    ),
    **dict(
        enumerate(
            [
                "memory_op",
                "multicall",
                "update_va_mapping",
                "set_timer_op",
                "event_channel_op_compat",
                "xen_version",
                "console_io",
                "physdev_op_compat",
                "grant_table_op",
                "vm_assist",
                "update_va_mapping_otherdomain",
                "iret",
                "vcpu_op",
                "set_segment_base",
                "mmuext_op",
                "xsm_op",
                "nmi_op",
                "sched_op",
                "callback_op",
                "xenoprof_op",
                "event_channel_op",
                "physdev_op",
                "hvm_op",
                "sysctl",
                "domctl",
                "kexec_op",
                "tmem_op",
                "argo_op",
                "xenpmu_op",
                "dm_op",
                "hypfs_op",
            ],
            start=12,
        )
    ),
    48: "mca",
    49: "paging-domctl-continuation",
    **{50 + k: f"arch_{2 + k}" for k in range(6)},
}


def xenperf_4_17(state: perfc.PerfcState, mode: str = "") -> str:
    """What tools/misc/xenperf.c (4.17) prints for `state` with no argument, -f or -p."""
    full, pretty = mode in ("-f", "-p"), mode == "-p"
    out = []
    offset = 0
    for d in state.descriptors:
        values = state.values[offset : offset + d.nr_vals]
        offset += d.nr_vals
        total = sum(values)  # unsigned long long since 4.17
        out.append("%-35s " % d.name)  # noqa: UP031 - the C format, on purpose
        out.append("T=%10u " % total)  # noqa: UP031
        if total and (full or d.nr_vals <= 4):
            if pretty and d.name == "hypercalls":
                out.append("\n")
                for j, value in enumerate(values):
                    if value:
                        name = HYPERCALL_NAMES.get(j, "[%d]" % j)  # noqa: UP031
                        out.append("%-35s %12u\n" % (name, value))  # noqa: UP031
            else:
                out.append("".join(" %10u" % value for value in values) + "\n")  # noqa: UP031
        else:
            out.append("\n")
    return "".join(out)


@dataclass
class Host:
    """A simulated hypervisor's counter state in a temporary directory, and xenperf on it."""

    state_dir: Path

    @property
    def state(self) -> Path:
        return self.state_dir / perfc.STATE_FILE

    def xenperf(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(XENPERF), *args],
            env={
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "LD_LIBRARY_PATH": str(STUB_DIR),
                "XENSIM_STATE_DIR": str(self.state_dir),
                "LC_ALL": "C",
            },
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )

    def output(self, *args: str) -> str:
        result = self.xenperf(*args)
        assert (result.returncode, result.stderr) == (0, ""), result.stderr
        return result.stdout


@pytest.fixture
def host(tmp_path: Path) -> Host:
    require(XENPERF.is_file(), f"needs the real xenperf at {XENPERF} (make deps)")
    require(STUB.is_file(), f"needs the stub at {STUB} (make deps)")
    return Host(tmp_path)


def busy_4cpu(host: Host, catalogue: Catalogue = DEBIAN_12) -> perfc.PerfcState:
    perfc.create(host.state, catalogue, 4)
    perfc.set_values(
        host.state,
        per_cpu={
            ("apic timer interrupts", 0): 812345,
            ("apic timer interrupts", 1): 790012,
            ("apic timer interrupts", 2): 801234,
            ("apic timer interrupts", 3): 799876,
            ("#interrupts", 0): 2345678,
            ("#interrupts", 1): 1234567,
            ("#interrupts", 2): 1111111,
            ("#interrupts", 3): 1000001,
            ("page faults", 2): 7,  # zeros on the other CPUs are still printed
            ("sched: context switches", 3): UINT32 - 1,  # the widest uint32
        },
        arrays={
            ("exceptions", 13): 57,
            ("exceptions", 14): 981234,
            ("hypercalls", 1): 4567,
            ("hypercalls", 11): 1,  # no name: [11]
            ("hypercalls", 20): 1234567,
            ("hypercalls", 43): 12,  # no name: [43]
            ("hypercalls", 49): 2,  # x86 name: paging-domctl-continuation
            ("hypercalls", 63): 9,  # no name, last element
            ("vmexits", 143): 5,  # SVM nested page fault, last element
        },
    )
    return perfc.read(host.state)


@pytest.mark.parametrize("mode", ["", "-f", "-p"], ids=["default", "full", "pretty"])
def test_every_mode_prints_the_reference_format_byte_for_byte(host: Host, mode: str) -> None:
    state = busy_4cpu(host)
    output = host.output(*([mode] if mode else []))
    assert output == xenperf_4_17(state, mode)
    assert output.count("T=") == len(DEBIAN_12.counters) == 90
    # Typed from the reference, not computed:
    assert (
        "#interrupts                         T=   5691357     2345678    1234567    1111111"
        "    1000001\n" in output
    )
    assert "segmentation fixups                 T=         0 \n" in output
    assert (
        "sched: context switches             T=4294967295           0          0          0"
        " 4294967295\n" in output
    )
    assert output.startswith("exceptions                          T=    981291 ")


def test_default_mode_hides_arrays_and_full_mode_prints_every_element(host: Host) -> None:
    busy_4cpu(host)
    default, full = host.output(), host.output("-f")
    assert "hypercalls                          T=   1239158 \n" in default
    hypercalls = next(line for line in full.splitlines() if line.startswith("hypercalls "))
    assert len(hypercalls.split("T=")[1].split()) == 1 + 64
    assert hypercalls.endswith("          9")


def test_pretty_mode_names_hypercalls_and_skips_zero_entries(host: Host) -> None:
    busy_4cpu(host)
    output = host.output("-p")
    block = output.split("hypercalls                          T=   1239158 \n")[1]
    assert block.splitlines()[:6] == [
        "mmu_update                                  4567",
        "[11]                                           1",
        "grant_table_op                           1234567",
        "[43]                                          12",
        "paging-domctl-continuation                     2",
        "[63]                                           9",
    ]
    assert block.splitlines()[6].startswith("calls from multicall ")


def test_a_name_longer_than_35_characters_pushes_its_line_right(host: Host) -> None:
    name = "shadow flush tlb by removing write perm"
    perfc.create(host.state, SHADOW_PAGING, 4)
    perfc.set_values(host.state, per_cpu={(name, 1): 3})
    output = host.output("-f")
    assert output == xenperf_4_17(perfc.read(host.state), "-f")
    assert f"\n{name} T=         3           0          3          0          0\n" in output
    assert f"\n{name} T=" in host.output()


def test_more_than_four_cpus_prints_totals_only_by_default(host: Host) -> None:
    perfc.create(host.state, DEBIAN_12, 8)
    perfc.set_values(host.state, per_cpu={("#interrupts", cpu): 1000 + cpu for cpu in range(8)})
    state = perfc.read(host.state)
    default, full = host.output(), host.output("-f")
    assert default == xenperf_4_17(state)
    assert full == xenperf_4_17(state, "-f")
    assert all(re.fullmatch(r".{35,} T=\s*\d+ ", line) for line in default.splitlines())
    assert "#interrupts                         T=      8028 \n" in default
    assert "#interrupts                         T=      8028        1000       1001" in full


def test_reset_zeroes_every_counter_but_the_status_one(host: Host) -> None:
    status = "number of shadow pages in use"
    busy_4cpu(host, SHADOW_PAGING)
    perfc.set_values(host.state, per_cpu={(status, 0): 1500, (status, 1): UINT32 - 100})
    before = perfc.read(host.state)

    assert host.xenperf("-r").returncode == 0
    after = perfc.read(host.state)

    assert after.values_of(status) == (1500, UINT32 - 100, 0, 0)
    assert sum(after.values) == 1500 + UINT32 - 100
    assert after.generation == before.generation + 1
    output = host.output("-f")
    assert output == xenperf_4_17(after, "-f")
    assert f"{status:<35} T=4294968696        1500 4294967196          0          0\n" in output
    assert "#interrupts                         T=         0 \n" in output


def test_reset_prints_nothing(host: Host) -> None:
    busy_4cpu(host)
    result = host.xenperf("-r")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


@pytest.mark.parametrize("mode", ["", "-f", "-p"])
def test_a_hypervisor_without_perf_counters_fails_with_enosys(host: Host, mode: str) -> None:
    busy_4cpu(host)
    perfc.set_errno(host.state, perfc_errno=38)
    result = host.xenperf(*([mode] if mode else []))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == "Error getting number of perf counters: 38 (Function not implemented)\n"


def test_reset_without_perf_counters_fails_with_enosys(host: Host) -> None:
    busy_4cpu(host)
    perfc.set_errno(host.state, perfc_errno=38)
    result = host.xenperf("-r")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == "Error resetting performance counters: 38 (Function not implemented)\n"
    assert perfc.read(host.state).values_of("#interrupts") == (2345678, 1234567, 1111111, 1000001)


def test_eacces_from_the_perfc_sysctl(host: Host) -> None:
    busy_4cpu(host)
    perfc.set_errno(host.state, perfc_errno=13)
    result = host.xenperf("-f")
    assert result.returncode == 1
    assert result.stderr == "Error getting number of perf counters: 13 (Permission denied)\n"


def test_eacces_at_open_fails_like_a_non_root_user(host: Host) -> None:
    busy_4cpu(host)
    perfc.set_errno(host.state, open_errno=13)
    for args in ((), ("-f",), ("-r",)):
        result = host.xenperf(*args)
        assert (result.returncode, result.stdout) == (1, "")
        assert result.stderr.splitlines() == [
            "xencall: error: Could not obtain handle on privileged command interface: "
            "Permission denied",
            "Error opening xc interface: 13 (Permission denied)",
        ]
    assert perfc.read(host.state).values_of("#interrupts")[0] == 2345678  # -r did nothing


def test_a_missing_state_file_fails_to_open_with_enoent(host: Host) -> None:
    result = host.xenperf()
    assert result.returncode == 1
    assert result.stderr.endswith("Error opening xc interface: 2 (No such file or directory)\n")


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: b"XSIMPRF0" + data[8:],  # wrong magic
        lambda data: data[:-4],  # one value short
        lambda data: data + b"\0\0\0\0",  # one value too many
        lambda data: data[:20],  # not even a header
        lambda data: data[:32] + b"x" * 80 + data[112:],  # a name without its NUL
    ],
    ids=["magic", "short", "long", "header", "name"],
)
def test_a_corrupt_state_file_is_an_io_error(host: Host, damage: object) -> None:
    busy_4cpu(host)
    assert callable(damage)
    host.state.write_bytes(damage(host.state.read_bytes()))
    result = host.xenperf("-f")
    assert result.returncode == 1
    assert result.stderr.endswith("Error opening xc interface: 5 (Input/output error)\n")


def test_a_per_cpu_value_crossing_2_32_wraps_in_the_output(host: Host) -> None:
    busy_4cpu(host)
    perfc.set_values(
        host.state,
        per_cpu={("#interrupts", 2): UINT32 - 2},
        arrays={("hypercalls", 20): UINT32 - 1},
    )
    before = host.output("-f")
    assert "#interrupts                         T=4299547540     2345678    1234567 4294967294" in (
        before
    )
    perfc.update(host.state, per_cpu={("#interrupts", 2): 5}, arrays={("hypercalls", 20): 3})
    after = perfc.read(host.state)
    output = host.output("-f")
    assert output == xenperf_4_17(after, "-f")
    assert (
        "#interrupts                         T=   4580249     2345678    1234567          3"
        "    1000001\n" in output
    )
    assert after.values_of("hypercalls")[20] == 2


def test_values_follow_the_online_cpus(host: Host) -> None:
    busy_4cpu(host)
    perfc.set_online_cpus(host.state, [0, 1, 2, 3], [0, 1, 3])
    state = perfc.read(host.state)
    output = host.output("-f")
    assert output == xenperf_4_17(state, "-f")
    assert (
        "#interrupts                         T=   4580246     2345678    1234567    1000001\n"
        in output
    )
    assert "exceptions                          T=    981291 " in output  # arrays unchanged


def slow_update(path: Path, step: int) -> None:
    """A writer that follows the file's contract but writes the values in two halves.

    It widens the window a reader without LOCK_SH would fall into (a writer of a large file,
    or one rewriting it for new online CPUs, is not atomic either).
    """
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        data = os.pread(fd, os.fstat(fd).st_size, 0)
        nr_desc, nr_vals = struct.unpack_from("<II", data, 8)
        start = 32 + 88 * nr_desc
        values = array("I")
        values.frombytes(data[start:])
        assert len(values) == nr_vals
        new = array("I", ((v + step) % UINT32 for v in values)).tobytes()
        half = len(new) // 2
        os.pwrite(fd, new[:half], start)
        time.sleep(0.002)  # inside the critical section, on purpose
        os.pwrite(fd, new[half:], start + half)
    finally:
        os.close(fd)


def test_a_concurrent_writer_never_produces_a_torn_read(host: Host) -> None:
    """The writers keep every value in the file equal; each xenperf run must see that."""
    perfc.create(host.state, DEBIAN_12, 4)
    plain = [c.name for c in DEBIAN_12.counters if c.kind is not Kind.ARRAY]
    arrays = [(c.name, c.size) for c in DEBIAN_12.counters if c.kind is Kind.ARRAY]
    every_per_cpu = [(name, cpu) for name in plain for cpu in range(4)]
    every_element = [(name, i) for name, size in arrays for i in range(size)]
    stop = threading.Event()
    writes = 0
    failure: list[BaseException] = []

    def writer() -> None:
        nonlocal writes
        deadline = time.monotonic() + 60
        step = 1
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                if writes % 2:
                    slow_update(host.state, step)
                else:
                    perfc.update(
                        host.state,
                        per_cpu=dict.fromkeys(every_per_cpu, step),
                        arrays=dict.fromkeys(every_element, step),
                    )
                writes += 1
                step = step % 997 + 1
        except BaseException as error:  # surfaced below, not lost in the thread
            failure.append(error)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    seen: set[int] = set()
    try:
        # Before the first write every value is 0 and xenperf prints totals only.
        wait_for(lambda: writes > 0 or failure, 10, "the first write")
        for _ in range(60):
            output = host.output("-f")
            values = {
                int(v) for line in output.splitlines() for v in line.split("T=")[1].split()[1:]
            }
            assert len(values) == 1, f"torn read: {sorted(values)[:10]}"
            seen |= values
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not failure, failure
    assert not thread.is_alive()
    assert len(seen) > 5, "the writer hardly ran while xenperf read: the test proved nothing"


# --- the library itself, through ctypes as the exporter binds it -----------------------------


class HypercallBuffer(ctypes.Structure):
    _fields_ = (
        ("hbuf", ctypes.c_void_p),
        ("param_shadow", ctypes.c_void_p),
        ("dir", ctypes.c_int),
        ("ubuf", ctypes.c_void_p),
        ("sz", ctypes.c_size_t),
    )


class PerfcDesc(ctypes.Structure):
    _fields_ = (("name", ctypes.c_char * 80), ("nr_vals", ctypes.c_uint32))


@pytest.fixture
def libxenctrl(host: Host, monkeypatch: pytest.MonkeyPatch) -> Iterator[ctypes.CDLL]:
    monkeypatch.setenv("XENSIM_STATE_DIR", str(host.state_dir))  # read at xc_interface_open
    lib = ctypes.CDLL(str(STUB), use_errno=True)
    lib.xc_interface_open.restype = ctypes.c_void_p
    lib.xc_interface_open.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint)
    lib.xc_interface_close.argtypes = (ctypes.c_void_p,)
    lib.xc__hypercall_buffer_alloc.restype = ctypes.c_void_p
    lib.xc__hypercall_buffer_alloc.argtypes = (
        ctypes.c_void_p,
        ctypes.POINTER(HypercallBuffer),
        ctypes.c_size_t,
    )
    lib.xc__hypercall_buffer_free.argtypes = (ctypes.c_void_p, ctypes.POINTER(HypercallBuffer))
    int_p, buffer_p = ctypes.POINTER(ctypes.c_int), ctypes.POINTER(HypercallBuffer)
    lib.xc_perfc_query_number.argtypes = (ctypes.c_void_p, int_p, int_p)
    lib.xc_perfc_query.argtypes = (ctypes.c_void_p, buffer_p, buffer_p)
    lib.xc_perfc_reset.argtypes = (ctypes.c_void_p,)
    yield lib


def test_ctypes_query_returns_the_files_descriptors_and_values(
    host: Host, libxenctrl: ctypes.CDLL
) -> None:
    assert ctypes.sizeof(HypercallBuffer) == 40 and ctypes.sizeof(PerfcDesc) == 84
    state = busy_4cpu(host)
    xch = libxenctrl.xc_interface_open(None, None, 0)
    assert xch
    try:
        nr_desc, nr_vals = ctypes.c_int(-1), ctypes.c_int(-1)
        assert (
            libxenctrl.xc_perfc_query_number(xch, ctypes.byref(nr_desc), ctypes.byref(nr_vals)) == 0
        )
        assert (nr_desc.value, nr_vals.value) == (90, 616)
        # DECLARE_HYPERCALL_BUFFER's initial values
        desc_buf = HypercallBuffer(None, None, 0, ctypes.c_void_p(-1 & (2**64 - 1)), 0)
        val_buf = HypercallBuffer(None, None, 0, ctypes.c_void_p(-1 & (2**64 - 1)), 0)
        assert libxenctrl.xc__hypercall_buffer_alloc(xch, ctypes.byref(desc_buf), 84 * 90)
        assert libxenctrl.xc__hypercall_buffer_alloc(xch, ctypes.byref(val_buf), 4 * 616)
        assert desc_buf.hbuf and val_buf.hbuf
        assert libxenctrl.xc_perfc_query(xch, ctypes.byref(desc_buf), ctypes.byref(val_buf)) == 0
        descs = (PerfcDesc * 90).from_address(desc_buf.hbuf)
        values = (ctypes.c_uint32 * 616).from_address(val_buf.hbuf)
        assert [(d.name.decode(), d.nr_vals) for d in descs] == [
            (d.name, d.nr_vals) for d in state.descriptors
        ]
        assert tuple(values) == state.values
        libxenctrl.xc__hypercall_buffer_free(xch, ctypes.byref(desc_buf))
        libxenctrl.xc__hypercall_buffer_free(xch, ctypes.byref(val_buf))
    finally:
        assert libxenctrl.xc_interface_close(xch) == 0


def test_ctypes_query_number_writes_the_counts_even_when_it_fails(
    host: Host, libxenctrl: ctypes.CDLL
) -> None:
    busy_4cpu(host)
    xch = libxenctrl.xc_interface_open(None, None, 0)
    assert xch
    try:
        perfc.set_errno(host.state, perfc_errno=38)  # every call re-reads the hypervisor
        nr_desc, nr_vals = ctypes.c_int(-1), ctypes.c_int(-1)
        rc = libxenctrl.xc_perfc_query_number(xch, ctypes.byref(nr_desc), ctypes.byref(nr_vals))
        assert (rc, ctypes.get_errno()) == (-1, 38)
        assert (nr_desc.value, nr_vals.value) == (0, 0)
        assert libxenctrl.xc_perfc_reset(xch) == -1
    finally:
        libxenctrl.xc_interface_close(xch)


def test_the_stub_exports_exactly_the_versioned_symbols_its_users_import() -> None:
    # xenperf's seven, and the domain, vCPU and CPU calls (idle time too) of xentools.libxenctrl.
    require(STUB.is_file(), f"needs the stub at {STUB} (make deps)")
    readelf = require_binary("readelf")
    symbols = subprocess.run(
        [readelf, "--dyn-syms", "--wide", str(STUB)], capture_output=True, text=True, check=True
    ).stdout
    exported = set(re.findall(r" GLOBAL +DEFAULT +\d+ (\w+@@VERS_4\.17\.0)", symbols))
    assert exported == {
        f"{name}@@VERS_4.17.0"
        for name in (
            "xc_interface_open",
            "xc_interface_close",
            "xc__hypercall_buffer_alloc",
            "xc__hypercall_buffer_free",
            "xc_perfc_query_number",
            "xc_perfc_query",
            "xc_perfc_reset",
            "xc_physinfo",
            "xc_getcpuinfo",
            "xc_get_max_cpus",
            "xc_get_cpumap_size",
            "xc_domain_getinfolist",
            "xc_vcpu_getinfo",
            "xc_vcpu_getaffinity",
        )
    }
    dynamic = subprocess.run(
        [readelf, "--dynamic", str(STUB)], capture_output=True, text=True, check=True
    ).stdout
    assert "Library soname: [libxenctrl.so.4.17]" in dynamic


def test_the_committed_fixtures_are_what_the_generator_produces(host: Host) -> None:
    written = fixtures.generate(host.state_dir / "out", XENPERF, STUB_DIR)
    assert len(written) == 14
    for path in written:
        assert path.read_bytes() == (FIXTURES / path.name).read_bytes(), (
            f"{path.name} differs: regenerate with python -m xensim.fixtures {FIXTURES}"
        )
