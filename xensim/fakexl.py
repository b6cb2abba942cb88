"""A faithful fake ``xl`` for the simulated host: ``python -m xensim.fakexl ARGS...``.

It reads and changes the simulated host's state (``xensim.state``, directory
``$XENSIM_STATE_DIR``) and prints what Xen 4.17's ``xl`` prints, byte for byte: the same
headers, columns, messages, and exit codes, quirks included. Each behaviour below was read from
``tools/xl/*.c`` and ``tools/libs/light/*.c`` at tag RELEASE-4.17.7 of xen-project/xen; libxl
log lines carry that release's file:line, as the real ones do.

Only the commands Judicator runs exist: ``list`` (``-l``, ``-v``, ``-c``), ``vcpu-list``,
``vcpu-pin``, ``info``, ``cpupool-list``, ``sched-credit``, ``sched-credit2``, ``pause`` and
``unpause``; any other prints ``command not implemented``, as xl does for an unknown command.

Quirks kept on purpose (callers must cope with them on a real host too):

- ``pause``/``unpause`` always exit 0, printing libxl's error when the hypervisor refuses
  (pause count over 255, unpausing a domain that is not paused).
- ``vcpu-pin DOM all ...`` exits 0 even when setting the affinity failed.
- A domain argument made only of digits is taken as a domid without checking it exists; each
  command then fails in its own way. A name that matches no domain fails at once with
  ``NAME is an invalid domain identifier (rc=-6)``, exit 1.
- ``sched-credit``/``sched-credit2`` parse numbers with ``strtol`` (garbage is 0: ``-c x``
  removes the cap) and ``-1`` means "leave unchanged"; the wrong scheduler prints the header and
  then fails with exit 1.
- Bad options exit 2 (``option `x' not supported.``), a missing argument exits 2 after the help.

Effects on the simulated guest: a cap calls ``xensim.cgroups.set_cpu_cap`` and a pause count
leaving or reaching 0 calls ``xensim.cgroups.set_frozen`` on the domain's cgroup (domains without
a cgroup only change state). If the effect fails, the state is left unchanged and the command
fails with exit 1.
"""

from __future__ import annotations

import getopt
import struct
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from xensim.state import (
    MAX_PAUSE_COUNT,
    SHUTDOWN_REASONS,
    Domain,
    HostState,
    StateError,
    StateStore,
    cpulist_set,
    cpulist_string,
)

EXIT_SUCCESS = 0
EXIT_FAILURE = 1
ERROR_INVAL = -6
LONG_MAX = 2**63 - 1
ULONG_MAX = 2**64 - 1

# strerror texts for the errnos the hypervisor returns here.
EINVAL = "Invalid argument"
EOVERFLOW = "Value too large for defined data type"
ESRCH = "No such process"


class Exit(Exception):
    """Leave the command with this exit status (xl's exit() or return from main_*)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class Output:
    """stdout and stderr of one xl run, written in order per stream."""

    def __init__(self) -> None:
        self.out: list[str] = []
        self.err: list[str] = []

    def print(self, text: str) -> None:
        self.out.append(text)

    def error(self, text: str) -> None:
        self.err.append(text)

    def libxl(
        self,
        level: str,
        where: str,
        func: str,
        domid: int | None,
        message: str,
        errno_text: str | None = None,
    ) -> None:
        """A libxl log line as xtl's stdio logger prints it (libxl__logv + stdiostream)."""
        domain = f"Domain {domid}:" if domid is not None and domid > 0 else ""
        suffix = f": {errno_text}" if errno_text is not None else ""
        self.error(f"libxl: {level}: {where}:{func}: {domain}{message}{suffix}\n")

    def flush(self) -> None:
        if self.out:
            sys.stdout.write("".join(self.out))
            sys.stdout.flush()
        if self.err:
            sys.stderr.write("".join(self.err))
            sys.stderr.flush()


# --- C library semantics -------------------------------------------------------------------


def c_float(value: int | float) -> float:
    """``(float)value``: xl divides a single-precision copy of the nanoseconds."""
    result: float = struct.unpack("f", struct.pack("f", float(value)))[0]
    return result


def strtol(text: str, maximum: int = LONG_MAX) -> tuple[int, str]:
    """C ``strtol(text, &end, 10)``: the value and the unparsed rest (whole text if none)."""
    i = 0
    while i < len(text) and text[i] in " \t\n\v\f\r":
        i += 1
    sign = 1
    if i < len(text) and text[i] in "+-":
        sign = -1 if text[i] == "-" else 1
        i += 1
    start = i
    while i < len(text) and text[i].isdigit() and text[i].isascii():
        i += 1
    if i == start:
        return 0, text
    value = sign * int(text[start:i])
    value = max(-maximum - 1, min(maximum, value))
    return value, text[i:]


def strtoul(text: str) -> tuple[int, str]:
    """C ``strtoul(text, &end, 10)``: negative input wraps, overflow gives ULONG_MAX."""
    value, rest = strtol(text, maximum=ULONG_MAX)
    if rest == text:
        return 0, text
    if value > ULONG_MAX or value < -ULONG_MAX:
        return ULONG_MAX, rest
    return value % 2**64, rest


def to_c_int(value: int) -> int:
    """Assigning a long to an int: keep the low 32 bits, signed."""
    value &= 0xFFFFFFFF
    return value - 2**32 if value >= 2**31 else value


# --- command table, help, option parsing (xl.c, xl_utils.c, xl_cmdtable.c) ------------------


class Command:
    def __init__(
        self,
        name: str,
        impl: Callable[[Context, list[str]], int],
        modifies: bool,
        can_dryrun: bool,
        desc: str,
        usage: str,
        options: str | None = None,
    ) -> None:
        self.name = name
        self.impl = impl
        self.modifies = modifies
        self.can_dryrun = can_dryrun
        self.desc = desc
        self.usage = usage
        self.options = options


def help_text(command: Command) -> str:
    text = (
        f"Usage: xl [-vtT{'f' if command.modifies else ''}{'N' if command.can_dryrun else ''}] "
        f"{command.name} {command.usage}\n\n{command.desc}.\n\n"
    )
    if command.options:
        text += f"Options:\n\n{command.options}\n"
    return text


class Context:
    def __init__(self, store: StateStore, out: Output, dryrun: bool) -> None:
        self.store = store
        self.out = out
        self.dryrun = dryrun
        self.command: Command | None = None

    def fail(self, status: int = EXIT_FAILURE) -> NoReturn:
        raise Exit(status)

    def getopt(
        self, args: list[str], shorts: str, longs: Sequence[tuple[str, bool, str]], required: int
    ) -> tuple[list[tuple[str, str]], list[str]]:
        """def_getopt: GNU getopt_long with xl's error handling; returns (options, operands).

        ``longs`` are (name, takes_argument, short letter).
        """
        assert self.command is not None
        long_specs = [name + ("=" if arg else "") for name, arg, _ in longs] + ["help"]
        letters = {f"--{name}": f"-{letter}" for name, _, letter in longs}
        letters["--help"] = "-h"
        try:
            found, operands = getopt.gnu_getopt(args[1:], "h" + shorts, long_specs)
        except getopt.GetoptError as e:
            opt = e.opt or ""
            letter = opt if len(opt) == 1 else letters.get(f"--{opt}", "-\0")[1]
            if letter == "h":
                self.out.print(help_text(self.command))
                self.fail(0)
            self.out.error(f"option `{letter}' not supported.\n")
            self.fail(2)
        options = [(letters.get(opt, opt), value) for opt, value in found]
        if any(opt == "-h" for opt, _ in options):
            self.out.print(help_text(self.command))
            self.fail(0)
        if len(operands) <= required - 1:
            plural = "s" if required > 1 else ""
            self.out.error(
                f"'xl {self.command.name}' requires at least {required} argument{plural}.\n\n"
            )
            self.out.print(help_text(self.command))
            self.fail(2)
        return options, operands

    def find_domain(self, host: HostState, ref: str) -> int:
        """xl's find_domain: all digits is a domid (unchecked), otherwise a name must match."""
        if all(c in "0123456789" for c in ref):
            return int(ref) if ref else 0
        for domain in host.domains:
            if domain.name == ref:
                return domain.domid
        self.out.error(f"{ref} is an invalid domain identifier (rc={ERROR_INVAL})\n")
        self.fail()


def by_domid(host: HostState, domid: int) -> Domain | None:
    for domain in host.domains:
        if domain.domid == domid:
            return domain
    return None


def sorted_domains(host: HostState) -> list[Domain]:
    return sorted(host.domains, key=lambda d: d.domid)


def print_bitmap(cpus: set[int], maplen: int) -> str:
    """xl_utils.c print_bitmap: ranges, ``all`` if every bit from 0 is set, ``none``."""
    return cpulist_string(cpus, maplen) if maplen > 0 else "none"


# --- xl list (xl_info.c) ---------------------------------------------------------------------

SHUTDOWN_LETTERS = "-rscwS"


def state_chars(domain: Domain) -> str:
    reason = SHUTDOWN_REASONS.index(domain.shutdown_reason) if domain.shutdown_reason else 0
    shutdown = domain.shutdown_reason is not None
    return "".join(
        (
            "r" if domain.running and not domain.paused else "-",
            "b" if domain.blocked else "-",
            "p" if domain.paused else "-",
            "s" if shutdown else "-",
            SHUTDOWN_LETTERS[reason] if shutdown else "-",
            "d" if domain.dying else "-",
        )
    )


def main_list(ctx: Context, args: list[str]) -> int:
    options, operands = ctx.getopt(
        args,
        "lvhZcn",
        [
            ("long", False, "l"),
            ("verbose", False, "v"),
            ("context", False, "Z"),
            ("cpupool", False, "c"),
            ("numa", False, "n"),
        ],
        0,
    )
    flags = {opt for opt, _ in options}
    host = ctx.store.read()
    if not operands:
        domains = sorted_domains(host)
    elif len(operands) == 1:
        domid = ctx.find_domain(host, operands[0])
        found = by_domid(host, domid)
        if found is None:
            ctx.out.error(f"Error: Domain '{operands[0]}' does not exist.\n")
            return EXIT_FAILURE
        domains = [found]
    else:
        assert ctx.command is not None
        ctx.out.print(help_text(ctx.command))
        return EXIT_FAILURE
    if "-l" in flags:
        ctx.out.print(list_long(host, domains))
        return EXIT_SUCCESS
    verbose, context, cpupool, numa = ("-v" in flags, "-Z" in flags, "-c" in flags, "-n" in flags)
    header = "Name                                        ID   Mem VCPUs\tState\tTime(s)"
    if verbose:
        header += "   UUID                            Reason-Code\tSecurity Label"
    if context and not verbose:
        header += "   Security Label"
    if cpupool:
        header += "         Cpupool"
    if numa:
        header += " NODE Affinity"
    lines = [header + "\n"]
    for domain in domains:
        row = (
            f"{domain.name:<40} {domain.domid:5d} {domain.memory_kib // 1024:5d} "
            f"{domain.online_vcpus:5d}     {state_chars(domain)}  "
            f"{c_float(domain.cpu_time_ns) / 1e9:8.1f}"
        )
        if verbose:
            row += f" {domain.uuid}"
            if domain.shutdown_reason is not None:
                row += f" {SHUTDOWN_REASONS.index(domain.shutdown_reason):8x}"
            else:
                row += f" {'-':>8}"
        if verbose or context:
            row += f" {'-':>16}"
        if cpupool:
            row += f"{domain.pool:>16}"
        if numa:
            row += " all"
        lines.append(row + "\n")
    ctx.out.print("".join(lines))
    return EXIT_SUCCESS


def yajl_beautify(value: object, indent: int = 0) -> str:
    """JSON as libxl's yajl generator beautifies it (4 spaces, empty maps as ``{\\n\\n}``)."""
    import json

    pad = " " * (indent + 4)
    if isinstance(value, dict):
        items = [f"{pad}{json.dumps(k)}: {yajl_beautify(v, indent + 4)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    if isinstance(value, list):
        items = [pad + yajl_beautify(v, indent + 4) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"
    return json.dumps(value)


def list_long(host: HostState, domains: list[Domain]) -> str:
    """`xl list -l`: libxl_domain_config as JSON, refreshed from the live domain as libxl does."""
    entries = []
    for domain in domains:
        c_info: dict[str, object] = {"type": domain.domain_type, "name": domain.name}
        c_info["uuid"] = domain.uuid
        if domain.domid != 0:
            c_info["run_hotplug_scripts"] = "True"
        if domain.pool != "Pool-0":
            c_info["pool_name"] = domain.pool
        b_info: dict[str, object] = {
            "max_vcpus": len(domain.vcpus),
            "avail_vcpus": [v.id for v in domain.vcpus if v.online],
        }
        hard = [sorted(cpulist_set(v.hard, host.nr_cpus)) for v in domain.vcpus]
        if any(v.hard != "all" for v in domain.vcpus):
            b_info["vcpu_hard_affinity"] = hard
        b_info["numa_placement"] = "False"
        b_info["max_memkb"] = domain.max_memory_kib
        b_info["target_memkb"] = domain.memory_kib
        b_info["sched_params"] = {
            "sched": host.scheduler_of(domain),
            "weight": domain.weight,
            "cap": domain.cap,
        }
        b_info[f"type.{domain.domain_type}"] = {}
        b_info["arch_arm"] = {}
        b_info["arch_x86"] = {"msr_relaxed": "False"}
        config: dict[str, object] = {"c_info": c_info, "b_info": b_info}
        if domain.vifs:
            nics: list[dict[str, object]] = []
            for devid in domain.vifs:
                nic: dict[str, object] = {"devid": devid, "mac": domain.mac(devid)}
                nic["bridge"] = "xenbr0"
                if domain.vifname is not None:
                    nic["ifname"] = domain.vifname
                nic["script"] = "vif-bridge"
                nic["nictype"] = "vif_ioemu" if domain.emu_vif else "vif"
                nics.append(nic)
            config["nics"] = nics
        config["on_reboot"] = "restart"
        config["on_soft_reset"] = "soft_reset"
        entries.append({"domid": domain.domid, "config": config})
    return yajl_beautify(entries) + "\n"


# --- xl vcpu-list / vcpu-pin (xl_vcpu.c) -----------------------------------------------------


def vcpu_rows(host: HostState, domain: Domain) -> list[str]:
    rows = []
    maplen = host.nr_cpus
    for vcpu in domain.vcpus:
        row = f"{domain.name:<32} {domain.domid:5d} {vcpu.id:5d}"
        if not vcpu.online:
            row += f"{'-':>5} {'-':>3}-p "
        else:
            running = "r" if vcpu.running and not domain.paused else "-"
            blocked = "b" if vcpu.blocked and not vcpu.running else "-"
            row += f"{vcpu.cpu:5d} {running:>3}{blocked}- "
        row += f"{c_float(vcpu.time_ns) / 1e9:9.1f}  "
        row += print_bitmap(cpulist_set(vcpu.hard, maplen), maplen)
        row += " / "
        row += print_bitmap(cpulist_set(vcpu.soft, maplen), maplen)
        rows.append(row + "\n")
    return rows


def main_vcpulist(ctx: Context, args: list[str]) -> int:
    _, operands = ctx.getopt(args, "", [], 0)
    host = ctx.store.read()
    ctx.out.print(
        f"{'Name':<32} {'ID':>5} {'VCPU':>5} {'CPU':>5} {'State':>5} {'Time(s)':>9} "
        "Affinity (Hard / Soft)\n"
    )
    if not operands:
        for domain in sorted_domains(host):
            ctx.out.print("".join(vcpu_rows(host, domain)))
        return EXIT_SUCCESS
    for ref in operands:
        domid = ctx.find_domain(host, ref)
        found = by_domid(host, domid)
        if found is None:
            ctx.out.libxl(
                "error",
                "libxl_domain.c:1667",
                "libxl_list_vcpu",
                domid,
                "Getting infolist",
                "Success",
            )
            continue
        ctx.out.print("".join(vcpu_rows(host, found)))
    return EXIT_SUCCESS


class CpuRangeError(Exception):
    pass


def parse_cpurange(ctx: Context, text: str, nr_cpus: int) -> set[int]:
    """xl_parse.c parse_cpurange over a bitmap of max_cpu_id+1 CPUs (one NUMA node)."""
    bitmap_bits = (nr_cpus + 7) // 8 * 8
    cpus: set[int] = set()
    for token in (t for t in text.split(",") if t):
        part = token
        negate = part.startswith("^")
        if negate:
            part = part[1:]
        nodes = False
        for prefix in ("node:", "nodes:"):
            if part.startswith(prefix):
                part, nodes = part[len(prefix) :], True
                break
        if part == "all":
            if negate:
                ctx.out.error('Can\'t combine "^" and "all".\n')
                raise CpuRangeError(token)
            cpus |= set(range(bitmap_bits))
            continue
        first, rest = strtoul(part)
        last = first
        valid = rest != part and first != ULONG_MAX
        if valid and rest.startswith("-"):
            last, rest2 = strtoul(rest[1:])
            valid = rest2 != rest[1:] and last != ULONG_MAX and last >= first
            rest = rest2
        if not valid or rest:
            ctx.out.error(f"Invalid pcpu range: {part}.\n")
            raise CpuRangeError(token)
        if nodes:
            if last > 0:
                ctx.out.error("libxl_node_to_cpumap failed.\n")
                raise CpuRangeError(token)
            selected = set(range(nr_cpus))
        else:
            selected = set(range(first, min(last, bitmap_bits - 1) + 1))
        cpus = cpus - selected if negate else cpus | selected
    return cpus


def set_vcpu_affinity(
    ctx: Context,
    host: HostState,
    domain: Domain,
    vcpu_id: int,
    hard: set[int] | None,
    soft: set[int] | None,
) -> bool:
    """libxl__set_vcpuaffinity + the hypervisor's vcpu_affinity_domctl; False on failure."""
    if hard is None and soft is None:
        return False
    pool_cpus = set(host.pool(domain.pool).cpus) & set(host.online_cpus)
    if not 0 <= vcpu_id < len(domain.vcpus) or (hard is not None and not hard & pool_cpus):
        ctx.out.libxl(
            "error",
            "libxl_sched.c:62",
            "libxl__set_vcpuaffinity",
            domain.domid,
            "Setting vcpu affinity",
            EINVAL,
        )
        return False
    vcpu = domain.vcpus[vcpu_id]
    in_range = set(range(host.nr_cpus))
    if hard is not None:
        vcpu.hard = cpulist_string(hard & in_range, host.nr_cpus)
        effective = hard & pool_cpus
        if vcpu.cpu not in effective:
            # The scheduler migrates a vCPU off CPUs its new hard affinity excludes.
            vcpu.cpu = min(effective)
    if soft is not None:
        vcpu.soft = cpulist_string(soft & in_range, host.nr_cpus)
        effective_hard = cpulist_set(vcpu.hard, host.nr_cpus) & pool_cpus
        if not soft & effective_hard:
            ctx.out.libxl(
                "warning",
                "libxl_sched.c:84",
                "libxl__set_vcpuaffinity",
                domain.domid,
                f"All cpus in soft affinity of vcpu {vcpu_id} are unreachable. "
                "Only hard affinity will be considered for scheduling",
            )
    return True


def main_vcpupin(ctx: Context, args: list[str]) -> int:
    options, operands = ctx.getopt(
        args, "fi", [("force", False, "f"), ("ignore-global-affinity-masks", False, "i")], 3
    )
    force = any(opt == "-f" for opt, _ in options)
    with ctx.store.transaction() as host:
        domid = ctx.find_domain(host, operands[0])
        vcpu_text, hard_text = operands[1], operands[2]
        soft_text = operands[3] if len(operands) > 3 else None
        vcpu_id, rest = strtol(vcpu_text)
        if rest == vcpu_text or vcpu_id < 0:
            if vcpu_text != "all":
                ctx.out.error(f"Error: Invalid argument {vcpu_text} as VCPU.\n")
                return EXIT_FAILURE
            if force:
                ctx.out.error("Error: --force and 'all' as VCPU not allowed.\n")
                return EXIT_FAILURE
            vcpu_id = -1
        try:
            hard = None if hard_text == "-" else parse_cpurange(ctx, hard_text, host.nr_cpus)
            soft = (
                None
                if soft_text is None or soft_text == "-"
                else parse_cpurange(ctx, soft_text, host.nr_cpus)
            )
        except CpuRangeError:
            return EXIT_FAILURE
        if ctx.dryrun:
            line = "cpumap: " + (print_bitmap(hard, host.nr_cpus) if hard is not None else "-")
            if soft is not None:
                line += " " + print_bitmap(soft, host.nr_cpus)
            ctx.out.print(line + "\n")
            return EXIT_SUCCESS
        domain = by_domid(host, domid)
        if domain is None:
            if vcpu_id == -1:
                ctx.out.libxl(
                    "error",
                    "libxl_domain.c:1667",
                    "libxl_list_vcpu",
                    domid,
                    "Getting infolist",
                    "Success",
                )
                ctx.out.error("libxl_list_vcpu failed.\n")
                return EXIT_FAILURE
            ctx.out.libxl(
                "error",
                "libxl_sched.c:62",
                "libxl__set_vcpuaffinity",
                domid,
                "Setting vcpu affinity",
                ESRCH,
            )
            ctx.out.error(f"Could not set affinity for vcpu `{vcpu_id}'.\n")
            return EXIT_FAILURE
        if vcpu_id != -1:
            if not set_vcpu_affinity(ctx, host, domain, vcpu_id, hard, soft):
                ctx.out.error(f"Could not set affinity for vcpu `{vcpu_id}'.\n")
                return EXIT_FAILURE
            return EXIT_SUCCESS
        failed = False
        for i in range(len(domain.vcpus)):
            if not set_vcpu_affinity(ctx, host, domain, i, hard, soft):
                ctx.out.libxl(
                    "warning",
                    "libxl_sched.c:124",
                    "libxl_set_vcpuaffinity_all",
                    domain.domid,
                    f"Failed to set affinity for {i}",
                )
                failed = True
        if failed:
            ctx.out.error("Could not set affinity.\n")
        # xl sets rc = EXIT_SUCCESS here whatever happened.
        return EXIT_SUCCESS


# --- xl info, domid, domname (xl_info.c, xl_misc.c) ------------------------------------------


def info_lines(host: HostState) -> list[str]:
    major, minor, *rest = host.xen_version.split(".")
    extra = "".join("." + part for part in rest)
    assigned = {cpu for pool in host.pools for cpu in pool.cpus}
    free_cpus = len([c for c in host.online_cpus if c not in assigned])
    used_kib = sum(d.memory_kib for d in host.domains)
    cores = host.cores_per_socket or len(host.online_cpus)
    return [
        f"host                   : {host.name}\n",
        f"release                : {host.dom0_kernel_release}\n",
        f"version                : {host.dom0_kernel_version}\n",
        f"machine                : {host.machine}\n",
        f"nr_cpus                : {len(host.online_cpus)}\n",
        f"max_cpu_id             : {host.max_cpu_id}\n",
        "nr_nodes               : 1\n",
        f"cores_per_socket       : {cores}\n",
        f"threads_per_core       : {host.threads_per_core}\n",
        f"cpu_mhz                : {host.cpu_mhz}.000\n",
        "hw_caps                : "
        "bfebfbff:77fafbff:2c100800:00000121:0000000f:009c6fbf:00000000:00000100\n",
        "virt_caps              : pv hvm hvm_directio pv_directio hap iommu_hap_pt_share "
        "vmtrace gnttab-v1\n",
        f"total_memory           : {host.total_memory_kib // 1024}\n",
        f"free_memory            : {max(0, host.total_memory_kib - used_kib) // 1024}\n",
        "sharing_freed_memory   : 0\n",
        "sharing_used_memory    : 0\n",
        "outstanding_claims     : 0\n",
        f"free_cpus              : {free_cpus}\n",
        f"xen_major              : {major}\n",
        f"xen_minor              : {minor}\n",
        f"xen_extra              : {extra}\n",
        f"xen_version            : {major}.{minor}{extra}\n",
        "xen_caps               : xen-3.0-x86_64 hvm-3.0-x86_32 hvm-3.0-x86_32p hvm-3.0-x86_64\n",
        f"xen_scheduler          : {host.pools[0].scheduler}\n",
        "xen_pagesize           : 4096\n",
        "platform_params        : virt_start=0xffff800000000000\n",
        "xen_changeset          : \n",
        "xen_commandline        : placeholder no-real-mode edd=off\n",
        "cc_compiler            : x86_64-linux-gnu-gcc (Debian 12.2.0-14) 12.2.0\n",
        "cc_compile_by          : pkg-xen-devel\n",
        "cc_compile_domain      : lists.alioth.debian.org\n",
        "cc_compile_date        : Tue Jul  1 00:00:00 UTC 2025\n",
        "build_id               : 0e5b1d4bd5ab1d4c5f7a9b2b4e7b0f1f0c1d2e3f\n",
        "xend_config_format     : 4\n",
    ]


def main_info(ctx: Context, args: list[str]) -> int:
    options, operands = ctx.getopt(args, "n", [("numa", False, "n")], 0)
    numa = bool(options)
    host = ctx.store.read()
    lines = info_lines(host)
    if numa:
        topology = ["cpu_topology           :\n", "cpu:    core    socket     node\n"]
        topology += [f"{cpu:3d}:    {cpu:4d}     {0:4d}     {0:4d}\n" for cpu in host.online_cpus]
        topology += [
            "device topology        :\n",
            "device           node\n",
            "No device topology data available\n",
            "numa_info              :\n",
            "node:    memsize    memfree    distances\n",
            f"{0:4d}:    {host.total_memory_kib // 1024:6d}     "
            f"{int(lines[13].split(':')[1]):6d}      10\n",
        ]
        lines = lines[:18] + topology + lines[18:]
    elif operands:
        # maybe_printf: lines starting with the name print just their value.
        name = operands[0]
        lines = [
            line[line.index(":") + 2 :]
            for line in lines
            if line.startswith(name) and ": " in line and line.index(":") == line.index(": ")
        ]
    ctx.out.print("".join(lines))
    return EXIT_SUCCESS


# --- xl cpupool-list (xl_cpupool.c) ----------------------------------------------------------


def main_cpupoollist(ctx: Context, args: list[str]) -> int:
    options, operands = ctx.getopt(args, "c", [("cpus", False, "c")], 0)
    show_cpus = bool(options)
    host = ctx.store.read()
    names = [pool.name for pool in host.pools]
    if operands and operands[0] not in names:
        ctx.out.error(f"Pool '{operands[0]}' does not exist\n")
        return EXIT_FAILURE
    lines = [
        f"{'Name':<19}"
        + ("CPU list\n" if show_cpus else "CPUs   Sched     Active   Domain count\n")
    ]
    for pool in host.pools:
        if operands and pool.name != operands[0]:
            continue
        row = f"{pool.name:<19}"
        cpus = sorted(pool.cpus)
        if show_cpus:
            row += ",".join(str(c) for c in cpus)
        else:
            n_dom = sum(1 for d in host.domains if d.pool == pool.name)
            row += f"{len(cpus):3d} {pool.scheduler:>9}       y       {n_dom:4d}"
        lines.append(row + "\n")
    ctx.out.print("".join(lines))
    return EXIT_SUCCESS


# --- xl sched-credit / sched-credit2 (xl_sched.c, libxl_sched.c) -----------------------------

SCHED_HEADER = f"{'Name':<33} {'ID':>4} {'Weight':>6} {'Cap':>4}\n"
# file:line:function of libxl's checks in sched_credit{,2}_domain_set, RELEASE-4.17.7.
SCHED_SET_SITES = {
    "credit": ("libxl_sched.c:232", "libxl_sched.c:238", "libxl_sched.c:248"),
    "credit2": ("libxl_sched.c:439", "libxl_sched.c:445", "libxl_sched.c:455"),
}


def pool_line(host: HostState, scheduler: str, pool_name: str) -> str:
    pool = host.pool(pool_name)
    if scheduler == "credit":
        return (
            f"Cpupool {pool.name}: tslice={pool.tslice_ms}ms ratelimit={pool.ratelimit_us}us "
            f"migration-delay={pool.migration_delay_us}us\n"
        )
    return f"Cpupool {pool.name}: ratelimit={pool.ratelimit_us}us\n"


def sched_row(domain: Domain) -> str:
    return f"{domain.name:<33} {domain.domid:4d} {domain.weight:6d} {domain.cap:4d}\n"


def find_pool(host: HostState, ref: str) -> str | None:
    """libxl_cpupool_qualifier_to_cpupoolid: digits are a pool id (its index here)."""
    if ref and all(c in "0123456789" for c in ref):
        index = int(ref)
        return host.pools[index].name if index < len(host.pools) else None
    return ref if any(pool.name == ref for pool in host.pools) else None


def apply_cap(domain: Domain, cap: int) -> None:
    if domain.cgroup is None:
        return
    try:
        # Imported here: the simulator's host provides it, and most calls never need it.
        from xensim import cgroups

        cgroups.set_cpu_cap(domain.cgroup, cap)
    except Exception as e:
        raise StateError(f"cannot cap cgroup {domain.cgroup} of {domain.name}: {e}") from e


def apply_frozen(domain: Domain, frozen: bool) -> None:
    if domain.cgroup is None:
        return
    try:
        from xensim import cgroups

        cgroups.set_frozen(domain.cgroup, frozen)
    except Exception as e:
        action = "freeze" if frozen else "thaw"
        raise StateError(f"cannot {action} cgroup {domain.cgroup} of {domain.name}: {e}") from e


def main_sched(ctx: Context, args: list[str], scheduler: str) -> int:
    credit = scheduler == "credit"
    shorts = "d:w:c:p:t:r:m:s" if credit else "d:w:c:p:r:s"
    longs = [
        ("domain", True, "d"),
        ("weight", True, "w"),
        ("cap", True, "c"),
        ("schedparam", False, "s"),
        ("ratelimit_us", True, "r"),
        ("cpupool", True, "p"),
    ]
    if credit:
        longs += [("tslice_ms", True, "t"), ("migration_delay_us", True, "m")]
    options, _ = ctx.getopt(args, shorts, longs, 0)
    values: dict[str, str] = {}
    for opt, value in options:
        values[opt[1]] = value
    dom, cpupool = values.get("d"), values.get("p")
    opt_s = "s" in values
    if credit:
        if (cpupool is not None or opt_s) and (dom is not None or "w" in values or "c" in values):
            ctx.out.error(
                "Specifying a cpupool or schedparam is not allowed with domain options.\n"
            )
            return EXIT_FAILURE
    elif cpupool is not None and (dom is not None or "w" in values or "c" in values):
        ctx.out.error("Specifying a cpupool is not allowed with other options.\n")
        return EXIT_FAILURE
    if dom is None and ("w" in values or "c" in values):
        ctx.out.error("Must specify a domain.\n")
        return EXIT_FAILURE
    if credit and not opt_s and any(k in values for k in "trm"):
        ctx.out.error("Must specify schedparam to set schedule parameter values.\n")
        return EXIT_FAILURE

    if opt_s:
        return sched_params(ctx, scheduler, values, cpupool)
    if dom is None:
        host = ctx.store.read()
        only_pool = None
        if cpupool is not None:
            only_pool = find_pool(host, cpupool)
            if only_pool is None:
                ctx.out.error(f"unknown cpupool '{cpupool}'\n")
                return EXIT_FAILURE
        lines = []
        for pool in host.pools:
            if pool.scheduler != scheduler or (only_pool and pool.name != only_pool):
                continue
            lines.append(pool_line(host, scheduler, pool.name))
            lines.append(SCHED_HEADER)
            lines += [sched_row(d) for d in sorted_domains(host) if d.pool == pool.name]
        ctx.out.print("".join(lines))
        return EXIT_SUCCESS

    if "w" not in values and "c" not in values:
        host = ctx.store.read()
        domid = ctx.find_domain(host, dom)
        ctx.out.print(SCHED_HEADER)
        domain = by_domid(host, domid)
        if domain is None:
            ctx.out.libxl(
                "error",
                "libxl_sched.c:905",
                "libxl_domain_sched_params_get",
                domid,
                "Unknown scheduler",
            )
            ctx.out.error("libxl_domain_sched_params_get failed.\n")
            return EXIT_FAILURE
        actual = host.scheduler_of(domain)
        if actual != scheduler:
            ctx.out.error(f"libxl_domain_sched_params_get returned {actual} not {scheduler}.\n")
            return EXIT_FAILURE
        ctx.out.print(sched_row(domain))
        return EXIT_SUCCESS

    weight = to_c_int(strtol(values["w"])[0]) if "w" in values else -1
    cap = to_c_int(strtol(values["c"])[0]) if "c" in values else -1
    get_site, weight_site, cap_site = SCHED_SET_SITES[scheduler]
    func = f"sched_{scheduler}_domain_set"
    with ctx.store.transaction() as host:
        domid = ctx.find_domain(host, dom)
        domain = by_domid(host, domid)
        if domain is None:
            # libxl returns ERROR_INVAL without logging when the domain is gone.
            ctx.out.error("libxl_domain_sched_params_set failed.\n")
            return EXIT_FAILURE
        if host.scheduler_of(domain) != scheduler:
            ctx.out.libxl(
                "error", get_site, func, domid, f"Getting domain sched {scheduler}", EINVAL
            )
            ctx.out.error("libxl_domain_sched_params_set failed.\n")
            return EXIT_FAILURE
        if weight != -1 and not 1 <= weight <= 65535:
            ctx.out.libxl(
                "error",
                weight_site,
                func,
                domid,
                "Cpu weight out of range, valid values are within range from 1 to 65535",
            )
            ctx.out.error("libxl_domain_sched_params_set failed.\n")
            return EXIT_FAILURE
        if cap != -1:
            limit = len(domain.vcpus) * 100
            if not 0 <= cap <= limit:
                ctx.out.libxl(
                    "error",
                    cap_site,
                    func,
                    domid,
                    f"Cpu cap out of range, valid range is from 0 to {limit} for "
                    "specified number of vcpus",
                )
                ctx.out.error("libxl_domain_sched_params_set failed.\n")
                return EXIT_FAILURE
        if weight != -1:
            domain.weight = weight
        if cap != -1:
            apply_cap(domain, cap)
            domain.cap = cap
    return EXIT_SUCCESS


def sched_params(ctx: Context, scheduler: str, values: dict[str, str], cpupool: str | None) -> int:
    """``-s``: print or set the pool's scheduler parameters (default pool 0)."""
    with ctx.store.transaction() as host:
        pool_name: str | None = host.pools[0].name
        if cpupool is not None:
            pool_name = find_pool(host, cpupool)
            if pool_name is None:
                ctx.out.error(f"unknown cpupool '{cpupool}'\n")
                return EXIT_FAILURE
        assert pool_name is not None
        pool = host.pool(pool_name)
        setting = [k for k in ("t", "r", "m") if k in values]
        if not setting:
            if pool.scheduler != scheduler:
                ctx.out.print(f"Cpupool {pool.name}: [sched params unavailable]\n")
            else:
                ctx.out.print(pool_line(host, scheduler, pool.name))
            return EXIT_SUCCESS
        if pool.scheduler != scheduler:
            ctx.out.error(f"libxl_sched_{scheduler}_params_set failed.\n")
            return EXIT_FAILURE
        if "t" in values:
            pool.tslice_ms = to_c_int(strtol(values["t"])[0])
        if "r" in values:
            pool.ratelimit_us = to_c_int(strtol(values["r"])[0])
        if "m" in values:
            pool.migration_delay_us = to_c_int(strtol(values["m"])[0])
    return EXIT_SUCCESS


def main_sched_credit(ctx: Context, args: list[str]) -> int:
    return main_sched(ctx, args, "credit")


def main_sched_credit2(ctx: Context, args: list[str]) -> int:
    return main_sched(ctx, args, "credit2")


# --- xl pause / unpause (xl_vmcontrol.c, libxl_domain.c) -------------------------------------


def main_pause(ctx: Context, args: list[str]) -> int:
    _, operands = ctx.getopt(args, "", [], 1)
    with ctx.store.transaction() as host:
        domid = ctx.find_domain(host, operands[0])
        domain = by_domid(host, domid)
        if domain is None or domain.domid == 0 or domain.pause_count >= MAX_PAUSE_COUNT:
            # Xen: no such domain, pausing the caller's own domain, or the count is full.
            reason = ESRCH if domain is None else EINVAL if domain.domid == 0 else EOVERFLOW
            ctx.out.libxl(
                "error", "libxl_domain.c:587", "libxl_domain_pause", domid, "Pausing domain", reason
            )
            return EXIT_SUCCESS
        if domain.pause_count == 0:
            apply_frozen(domain, True)
        domain.pause_count += 1
    return EXIT_SUCCESS


def main_unpause(ctx: Context, args: list[str]) -> int:
    _, operands = ctx.getopt(args, "", [], 1)
    with ctx.store.transaction() as host:
        domid = ctx.find_domain(host, operands[0])
        domain = by_domid(host, domid)
        if domain is None:
            ctx.out.libxl(
                "error",
                "libxl_dom.c:37",
                "libxl__domain_type",
                None,
                f"unable to get domain type for domid={domid}",
            )
            return EXIT_SUCCESS
        if domain.pause_count == 0:
            ctx.out.libxl(
                "error",
                "libxl_domain.c:688",
                "domain_unpause_done",
                domid,
                "Unpausing domain",
                EINVAL,
            )
            return EXIT_SUCCESS
        if domain.pause_count == 1:
            apply_frozen(domain, False)
        domain.pause_count -= 1
    return EXIT_SUCCESS


# --- main (xl.c) -----------------------------------------------------------------------------

COMMANDS = {
    c.name: c
    for c in (
        Command(
            "list",
            main_list,
            False,
            False,
            "List information about all/some domains",
            "[options] [Domain]\n",
            "-l, --long              Output all VM details\n"
            "-v, --verbose           Prints out UUIDs and security context\n"
            "-Z, --context           Prints out security context\n"
            "-c, --cpupool           Prints the cpupool the domain is in\n"
            "-n, --numa              Prints out NUMA node affinity",
        ),
        Command(
            "vcpu-list",
            main_vcpulist,
            False,
            False,
            "List the VCPUs for all/some domains",
            "[Domain, ...]",
        ),
        Command(
            "vcpu-pin",
            main_vcpupin,
            True,
            True,
            "Set which CPUs a VCPU can use",
            "[option] <Domain> <VCPU|all> <Hard affinity|-|all> <Soft affinity|-|all>",
            "-f, --force        undo an override pinning done by the kernel\n"
            "--ignore-global-affinity-masks Ignore global masks in xl.conf",
        ),
        Command(
            "info",
            main_info,
            False,
            False,
            "Get information about Xen host",
            "-n, --numa         List host NUMA topology information",
        ),
        Command(
            "cpupool-list",
            main_cpupoollist,
            False,
            False,
            "List CPU pools on host",
            "[-c|--cpus] [<CPU Pool>]",
            "-c, --cpus                     Output list of CPUs used by a pool",
        ),
        Command(
            "sched-credit",
            main_sched_credit,
            False,
            True,
            "Get/set credit scheduler parameters",
            "[-d <Domain> [-w[=WEIGHT]|-c[=CAP]]] [-s [-t TSLICE] [-r RATELIMIT]] [-p CPUPOOL]",
            "-d DOMAIN, --domain=DOMAIN        Domain to modify\n"
            "-w WEIGHT, --weight=WEIGHT        Weight (int)\n"
            "-c CAP, --cap=CAP                 Cap (int)\n"
            "-s         --schedparam           Query / modify scheduler parameters\n"
            "-t TSLICE, --tslice_ms=TSLICE     Set the timeslice, in milliseconds\n"
            "-r RLIMIT, --ratelimit_us=RLIMIT  Set the scheduling rate limit, in "
            "microseconds\n"
            "-m DLY, --migration_delay_us=DLY  Set the migration delay, in microseconds\n"
            "-p CPUPOOL, --cpupool=CPUPOOL     Restrict output to CPUPOOL",
        ),
        Command(
            "sched-credit2",
            main_sched_credit2,
            False,
            True,
            "Get/set credit2 scheduler parameters",
            "[-d <Domain> [-w[=WEIGHT]]] [-p CPUPOOL]",
            "-d DOMAIN, --domain=DOMAIN     Domain to modify\n"
            "-w WEIGHT, --weight=WEIGHT     Weight (int)\n"
            "-c CAP,    --cap=CAP           Cap (int)\n"
            "-s         --schedparam        Query / modify scheduler parameters\n"
            "-r RLIMIT, --ratelimit_us=RLIMIT Set the scheduling rate limit, in "
            "microseconds\n"
            "-p CPUPOOL, --cpupool=CPUPOOL  Restrict output to CPUPOOL",
        ),
        Command("pause", main_pause, False, True, "Pause execution of a domain", "<Domain>"),
        Command("unpause", main_unpause, False, True, "Unpause a paused domain", "<Domain>"),
    )
}


def no_hypervisor(out: Output) -> int:
    """What xl prints on a Dom0 where the hypervisor interface cannot be opened."""
    out.error(
        "xencall: error: Could not obtain handle on privileged command interface: "
        "No such file or directory\n"
    )
    out.libxl(
        "error",
        "libxl.c:102",
        "libxl_ctx_alloc",
        None,
        "cannot open libxc handle",
        "No such file or directory",
    )
    out.error("cannot init xl context\n")
    return EXIT_FAILURE


def run(argv: Sequence[str], store: StateStore, out: Output) -> int:
    """Run one xl command line (without the program name); output goes to ``out``."""
    try:
        global_options, rest = getopt.getopt(list(argv), "vftTN")
    except getopt.GetoptError:
        out.error("unknown global option\n")
        return EXIT_FAILURE
    dryrun = any(opt == "-N" for opt, _ in global_options)
    if not rest:
        out.print("Usage xl [-vfNtT] <subcommand> [args]\n\n")
        return EXIT_FAILURE
    if not store.exists():
        return no_hypervisor(out)
    name = rest[0]
    command = COMMANDS.get(name)
    if command is None:
        if name == "help":
            if len(rest) > 1 and rest[1] in COMMANDS:
                out.print(help_text(COMMANDS[rest[1]]))
            elif len(rest) > 1:
                out.print(f'command "{rest[1]}" not implemented\n')
            return EXIT_SUCCESS
        out.error("command not implemented\n")
        return EXIT_FAILURE
    if dryrun and not command.can_dryrun:
        out.error("command does not implement -N (dryrun) option\n")
        return EXIT_FAILURE
    ctx = Context(store, out, dryrun)
    ctx.command = command
    try:
        return command.impl(ctx, rest)
    except Exit as e:
        return e.status


def main(argv: Sequence[str] | None = None) -> int:
    out = Output()
    store = StateStore.from_environment()
    try:
        status = run(sys.argv[1:] if argv is None else argv, store, out)
    except (StateError, OSError, ImportError) as e:
        out.error(f"xensim: fake xl: {e}\n")
        status = EXIT_FAILURE
    out.flush()
    return status


if __name__ == "__main__":
    sys.exit(main())
