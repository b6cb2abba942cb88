"""`Toolstack` for the exporter, through `xl` and xentools.xl's parsers.

Commands run with `exporter.commands.run_command`, whose timeout also kills what the command
started (a wrapper's children), so a hung `xl` costs at most its timeout.
"""

from __future__ import annotations

from collections.abc import Sequence

from exporter.commands import CommandError, run_command
from exporter.toolstack import DomainStats, HostInfo, VcpuPlacement
from xentools import xl

MIB = 1 << 20
KIB = 1 << 10


class ToolstackError(RuntimeError):
    """xl failed, timed out, or printed something its parser refuses."""


class XlToolstack:
    def __init__(self, path: str = "xl") -> None:
        self.path = path
        self._max_cpu_id: int | None = None

    def _output(self, timeout: float, *args: str) -> str:
        argv = [self.path, *args]
        try:
            result = run_command(argv, timeout=timeout)
        except CommandError as error:
            raise ToolstackError(str(error)) from None
        if result.returncode != 0:
            detail = result.stderr.strip().splitlines()
            raise ToolstackError(
                f"{' '.join(argv)} exited {result.returncode}"
                + (f": {detail[-1]}" if detail else "")
            )
        return result.stdout

    def info(self, timeout: float) -> HostInfo:
        try:
            parsed = xl.parse_info(self._output(timeout, "info"))
        except xl.XlParseError as error:
            raise ToolstackError(f"xl info: {error}") from None
        self._max_cpu_id = parsed.max_cpu_id
        return HostInfo(parsed.nr_cpus, parsed.max_cpu_id, parsed.xen_version)

    def vcpu_list(self, timeout: float) -> Sequence[VcpuPlacement]:
        try:
            rows = xl.parse_vcpu_list(self._output(timeout, "vcpu-list"))
            nr_cpus = (self._max_cpu_id or 0) + 1
            return [
                VcpuPlacement(
                    domain=row.name,
                    domid=row.domid,
                    vcpu=row.vcpu,
                    cpu=row.cpu if row.online else None,
                    hard=None if row.hard_affinity == "all" else row.hard_cpus(nr_cpus),
                    time_seconds=row.time_seconds,
                )
                for row in rows
            ]
        except (xl.XlParseError, xl.CpuListError) as error:
            raise ToolstackError(f"xl vcpu-list: {error}") from None

    def pool_cpus(self, timeout: float) -> frozenset[int]:
        try:
            pools = xl.parse_cpupool_list(self._output(timeout, "cpupool-list", "-c"))
        except xl.XlParseError as error:
            raise ToolstackError(f"xl cpupool-list -c: {error}") from None
        return frozenset(cpu for pool in pools for cpu in pool.cpus or ())

    def domains(self, timeout: float) -> Sequence[DomainStats]:
        try:
            rows = xl.parse_list_verbose(self._output(timeout, "list", "-v"))
            long_rows = xl.parse_list_long(self._output(timeout, "list", "-l"))
        except xl.XlParseError as error:
            raise ToolstackError(f"xl list: {error}") from None
        max_memory = {
            row.domid: row.max_memory_kib * KIB
            for row in long_rows
            if row.max_memory_kib is not None
        }
        return [
            DomainStats(
                name=row.name,
                domid=row.domid,
                uuid=row.uuid,
                memory_bytes=row.memory_mib * MIB,
                max_memory_bytes=max_memory.get(row.domid),
                vcpus=row.vcpus,
                cpu_seconds=row.cpu_seconds,
                states=frozenset(row.state.names),
            )
            for row in rows
        ]
