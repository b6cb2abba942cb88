"""`Toolstack` for the exporter, through `xl` and xentools.xl's parsers.

Commands run with `xentools.command.run_command`, whose timeout also kills what the command
started (a wrapper's children), so a hung `xl` costs at most its timeout. The maximum memory
(`xl list -l`) is kept between scrapes: asked again when the set of domids changes, and every
`MAX_MEMORY_REFRESH_CALLS` scrapes.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from exporter.toolstack import DomainStats, HostInfo, VcpuPlacement
from xentools import xl
from xentools.command import CommandError, run_command

MIB = 1 << 20
KIB = 1 << 10
# `xl list -l` (the JSON of every domain's configuration, xl's costliest answer) is asked again
# when domains come or go, and at least this often: it only gives the maximum memory.
MAX_MEMORY_REFRESH_CALLS = 30


class ToolstackError(RuntimeError):
    """xl failed, timed out, or printed something its parser refuses."""


class XlToolstack:
    def __init__(self, path: str = "xl") -> None:
        self.path = path
        self._max_cpu_id: int | None = None
        self._lock = threading.Lock()
        self._max_memory: dict[int, int] = {}
        self._max_memory_domids: frozenset[int] | None = None
        self._max_memory_age = 0

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

    def _max_memory_of(self, domids: frozenset[int], timeout: float) -> dict[int, int]:
        """domid -> maximum memory in bytes, from `xl list -l` when it may have changed."""
        with self._lock:
            fresh = self._max_memory_age < MAX_MEMORY_REFRESH_CALLS
            if domids == self._max_memory_domids and fresh:
                self._max_memory_age += 1
                return self._max_memory
        try:
            long_rows = xl.parse_list_long(self._output(timeout, "list", "-l"))
        except xl.XlParseError as error:
            raise ToolstackError(f"xl list -l: {error}") from None
        max_memory = {
            row.domid: row.max_memory_kib * KIB
            for row in long_rows
            if row.max_memory_kib is not None
        }
        with self._lock:
            # keyed by the domids -v showed, so a domain created in between is asked next time
            self._max_memory = max_memory
            self._max_memory_domids = domids
            self._max_memory_age = 1
        return max_memory

    def domains(self, timeout: float) -> Sequence[DomainStats]:
        try:
            rows = xl.parse_list_verbose(self._output(timeout, "list", "-v"))
        except xl.XlParseError as error:
            raise ToolstackError(f"xl list -v: {error}") from None
        max_memory = self._max_memory_of(frozenset(row.domid for row in rows), timeout)
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
