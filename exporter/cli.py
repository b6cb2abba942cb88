"""judicator-exporter: flags, logging, and the embedded hypercorn serving the exporter.

    judicator-exporter [--web.listen-address=:10170] [--no-collector.perfc] ...

The only module that reads files named on the command line or sets up logging.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Sequence

import yaml

from exporter.collector import Exporter, SourceCollector, package_version
from exporter.domains import BlockCollector, DomainCollector, NetworkCollector
from exporter.flowdirection import DEFAULT_SINK, FlowDirectionCollector, XenVifs
from exporter.kvm import (
    DEFAULT_KVMSTAT_INCLUDE,
    KvmBlockCollector,
    KvmDomainCollector,
    KvmHost,
    KvmNetworkCollector,
    KvmStatCollector,
    KvmTaps,
    NoXenToolstack,
)
from exporter.kvmqmp import SOURCES
from exporter.perfc import DEFAULT_INCLUDE, PerfcCollector
from exporter.readers import READERS, open_reader
from exporter.toolstack import Toolstack
from exporter.web import create_app, hypercorn_config, run_server
from exporter.webconfig import WebConfig, WebConfigError, load_web_config
from xentools.libxenctrl import LibraryNotFound
from xentools.toolstack import TOOLSTACK_READERS, ToolstackError, open_toolstack

log = logging.getLogger(__name__)

DEFAULT_PORT = 10170
COLLECTORS = {
    "perfc": "hypervisor performance counters (xenperf / libxenctrl) and CPU -> domain shares",
    "domain": "per-domain CPU time, memory, vCPUs, state and info (libxenctrl or xl list)",
    "network": "per-vif traffic counters (sysfs class/net)",
    "block": "per-vbd blkback counters (sysfs bus/xen-backend)",
    "flowdirection": "per-vif counts of echo requests/replies and TCP SYN/SYN-ACK the guest "
    "sends (installs counting tc filters on each vif's ingress; off by default)",
    "kvmstat": "KVM's per-VM and per-vCPU statistics: exits, interrupt injections, halts, ... "
    "(debugfs or QMP, --kvmstat.source; --platform=kvm only)",
}
# Collectors that change Dom0's state are off unless asked for.
OPT_IN_COLLECTORS = frozenset({"flowdirection"})
PLATFORMS = ("xen", "kvm")
# Flags that mean something on one platform only, by dest; given on the other, they fail at
# start. Their argparse default is None, so that "given" can be told from "defaulted".
PLATFORM_FLAGS = {
    "xen": {
        "collector_perfc": "--collector.perfc",
        "perfc_include": "--collector.perfc.include",
        "perfc_reader": "--perfc.reader",
        "toolstack_reader": "--toolstack.reader",
        "xenperf_path": "--xenperf.path",
        "xl_path": "--xl.path",
    },
    "kvm": {
        "collector_kvmstat": "--collector.kvmstat",
        "kvmstat_include": "--collector.kvmstat.include",
        "procfs": "--path.procfs",
        "debugfs": "--path.debugfs",
        "kvmstat_source": "--kvmstat.source",
    },
}
PLATFORM_DEFAULTS = {
    "collector_perfc": True,
    "perfc_include": DEFAULT_INCLUDE,
    "perfc_reader": "auto",
    "toolstack_reader": "auto",
    "xenperf_path": "xenperf",
    "xl_path": "xl",
    "collector_kvmstat": True,
    "kvmstat_include": DEFAULT_KVMSTAT_INCLUDE,
    "procfs": "/proc",
    "debugfs": "/sys/kernel/debug",
    "kvmstat_source": "auto",
}
LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING}
LOG_LEVELS["error"] = logging.ERROR


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="judicator-exporter",
        description="Prometheus exporter of Xen hypervisor performance counters, per CPU and "
        "domain, and of per-domain statistics. Runs in Dom0, or on a KVM host with "
        "--platform=kvm (docs/kvm.md).",
    )
    parser.add_argument(
        "--platform",
        choices=PLATFORMS,
        default="xen",
        help="the hypervisor of this host (default %(default)s)",
    )
    web = parser.add_argument_group("web")
    web.add_argument(
        "--web.listen-address",
        dest="listen_address",
        default=f"127.0.0.1:{DEFAULT_PORT}",
        help="address to listen on, [host]:port (default %(default)s)",
    )
    web.add_argument("--web.telemetry-path", dest="telemetry_path", default="/metrics")
    web.add_argument(
        "--web.config.file",
        dest="web_config_file",
        help="exporter-toolkit web config (TLS, basic auth)",
    )
    collectors = parser.add_argument_group("collectors")
    for name, help_text in COLLECTORS.items():
        collectors.add_argument(
            f"--collector.{name}",
            dest=f"collector_{name}",
            action=argparse.BooleanOptionalAction,
            default=_default(f"collector_{name}", name not in OPT_IN_COLLECTORS),
            help=help_text,
        )
    collectors.add_argument(
        "--collector.perfc.include",
        dest="perfc_include",
        help="regex of the perf counters to export, matched against the whole metric name "
        f"without _total; default: those the shipped policies and dashboards read "
        f"({DEFAULT_INCLUDE}); '.*' for all",
    )
    collectors.add_argument(
        "--collector.kvmstat.include",
        dest="kvmstat_include",
        help="regex of the KVM statistics to export, matched against the whole name without "
        f"kvm_vm_ and _total; default: those the shipped policies and dashboards read "
        f"({DEFAULT_KVMSTAT_INCLUDE}); '.*' for all",
    )
    sources = parser.add_argument_group("sources")
    sources.add_argument(
        "--perfc.reader",
        dest="perfc_reader",
        choices=READERS,
        help="how to read the counters: libxenctrl (ctypes) where it loads, else xenperf "
        "(default auto)",
    )
    sources.add_argument(
        "--toolstack.reader",
        dest="toolstack_reader",
        choices=TOOLSTACK_READERS,
        help="how to read domains and vCPUs: libxenctrl and libxenstore (ctypes, no process "
        "per scrape) where they load, else xl (default auto)",
    )
    sources.add_argument("--xenperf.path", dest="xenperf_path", help="default xenperf")
    sources.add_argument("--xl.path", dest="xl_path", help="default xl")
    sources.add_argument("--path.sysfs", dest="sysfs", default="/sys")
    sources.add_argument("--path.procfs", dest="procfs", help="KVM only; default /proc")
    sources.add_argument(
        "--path.debugfs", dest="debugfs", help="KVM only; default /sys/kernel/debug"
    )
    sources.add_argument(
        "--kvmstat.source",
        dest="kvmstat_source",
        choices=SOURCES,
        help="where the kvmstat collector reads KVM's statistics: debugfs; qmp (each VM's QMP "
        "unix socket, query-stats: also per vCPU); auto: debugfs, and QMP for each VM whose "
        "debugfs directory is absent or refuses its counters (kernel lockdown). KVM only; "
        "default auto (docs/kvm.md)",
    )
    sources.add_argument(
        "--flowdirection.sink",
        dest="flowdirection_sink",
        default=DEFAULT_SINK,
        help="ifb device the flowdirection counters mirror into where tc has no act_gact "
        "(created, up, dropping everything; default %(default)s)",
    )
    sources.add_argument(
        "--command.timeout",
        dest="command_timeout",
        type=float,
        default=3.0,
        help="seconds any one xl/xenperf run, or one VM's QMP query-stats on KVM, may take "
        "(default %(default)s)",
    )
    sources.add_argument(
        "--scrape.timeout",
        dest="scrape_timeout",
        type=float,
        default=9.0,
        help="seconds a scrape may take when Prometheus does not say "
        "(X-Prometheus-Scrape-Timeout-Seconds); default %(default)s",
    )
    parser.add_argument("--log.level", dest="log_level", choices=list(LOG_LEVELS), default="info")
    parser.add_argument("--version", action="version", version=package_version())
    return parser


def _default(dest: str, default: bool) -> bool | None:
    """None for a platform's own flag (resolved by `resolve_platform`), else `default`."""
    platform_flag = any(dest in flags for flags in PLATFORM_FLAGS.values())
    return None if platform_flag else default


def resolve_platform(args: argparse.Namespace) -> list[str]:
    """Problems with flags of the other platform; fills in this platform's defaults and turns
    the other's collectors off."""
    problems = []
    for platform, flags in PLATFORM_FLAGS.items():
        for dest, flag in flags.items():
            if platform == args.platform:
                if getattr(args, dest) is None:
                    setattr(args, dest, PLATFORM_DEFAULTS[dest])
            elif getattr(args, dest) is not None:
                problems.append(f"{flag} is for --platform={platform}, not {args.platform}")
            elif dest.startswith("collector_"):
                setattr(args, dest, False)
    return problems


def bind_address(listen_address: str) -> str:
    """`:10170` -> `0.0.0.0:10170`; `[::1]:10170` and `host:port` as given."""
    host, separator, port = listen_address.rpartition(":")
    if not separator or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--web.listen-address {listen_address!r}: expected [host]:port")
    return f"{host or '0.0.0.0'}:{port}"


def read_web_config(path: str | None) -> WebConfig:
    if path is None:
        return WebConfig()
    try:
        with open(path) as file:
            data = yaml.safe_load(file)
    except (OSError, yaml.YAMLError) as error:
        raise WebConfigError(f"--web.config.file {path}: {error}") from None
    return load_web_config(data, os.path.dirname(os.path.abspath(path)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=LOG_LEVELS[args.log_level],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    problems = resolve_platform(args)
    try:
        bind = bind_address(args.listen_address)
    except ValueError as error:
        problems.append(str(error))
    if not args.telemetry_path.startswith("/") or args.telemetry_path == "/":
        problems.append(
            f"--web.telemetry-path {args.telemetry_path!r}: must start with / and not be /"
        )
    if not 0 < args.command_timeout < args.scrape_timeout:
        problems.append("--command.timeout must be positive and below --scrape.timeout")
    include = re.compile("")
    flag, dest = (
        ("--collector.kvmstat.include", "kvmstat_include")
        if args.platform == "kvm"
        else ("--collector.perfc.include", "perfc_include")
    )
    try:
        include = re.compile(getattr(args, dest))
    except re.error as error:
        problems.append(f"{flag} {getattr(args, dest)!r}: {error}")
    try:
        web_config = read_web_config(args.web_config_file)
    except WebConfigError as error:
        problems.append(str(error))
    if problems:
        parser.error("; ".join(problems))

    if args.platform == "kvm":
        collectors, toolstack = kvm_collectors(args, include)
    else:
        collectors, toolstack = xen_collectors(parser, args, include)
    exporter = Exporter(collectors, toolstack, args.command_timeout, args.scrape_timeout)
    app = create_app(exporter, args.telemetry_path, web_config, package_version())
    log.info(
        "judicator-exporter %s listening on %s%s, collectors: %s",
        package_version(),
        bind,
        " (TLS)" if web_config.tls else "",
        ", ".join(c.name for c in collectors) or "none",
    )
    server_level = "warning" if args.log_level == "warn" else args.log_level
    run_server(app, hypercorn_config(bind, web_config, server_level))
    return 0


def xen_collectors(
    parser: argparse.ArgumentParser, args: argparse.Namespace, include: re.Pattern[str]
) -> tuple[list[SourceCollector], Toolstack]:
    collectors: list[SourceCollector] = []
    if args.collector_perfc:
        try:
            reader = open_reader(args.perfc_reader, args.xenperf_path)
        except LibraryNotFound as error:
            parser.error(f"--perfc.reader=libxenctrl: {error}")
        collectors.append(PerfcCollector(reader, include))
    if args.collector_domain:
        collectors.append(DomainCollector())
    if args.collector_network:
        collectors.append(NetworkCollector(args.sysfs))
    if args.collector_block:
        collectors.append(BlockCollector(args.sysfs))
    if args.collector_flowdirection:
        collectors.append(
            FlowDirectionCollector(
                XenVifs(args.sysfs),
                sink=args.flowdirection_sink,
                command_timeout=args.command_timeout,
            )
        )
    try:
        toolstack = open_toolstack(args.toolstack_reader, args.xl_path)
    except (LibraryNotFound, ToolstackError) as error:
        parser.error(f"--toolstack.reader=libxenctrl: {error}")
    return collectors, toolstack


def kvm_collectors(
    args: argparse.Namespace, include: re.Pattern[str]
) -> tuple[list[SourceCollector], Toolstack]:
    """The KVM collectors, sharing one VM list per scrape (KvmHost)."""
    host = KvmHost(args.procfs, args.debugfs)
    collectors: list[SourceCollector] = []
    if args.collector_domain:
        collectors.append(KvmDomainCollector(host))
    if args.collector_network:
        collectors.append(KvmNetworkCollector(host, args.sysfs))
    if args.collector_block:
        collectors.append(KvmBlockCollector(host))
    if args.collector_kvmstat:
        collectors.append(KvmStatCollector(host, include, args.kvmstat_source))
    if args.collector_flowdirection:
        collectors.append(
            FlowDirectionCollector(
                KvmTaps(host),
                sink=args.flowdirection_sink,
                command_timeout=args.command_timeout,
                prefix="kvm",
            )
        )
    return collectors, NoXenToolstack()


if __name__ == "__main__":
    sys.exit(main())
