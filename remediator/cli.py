"""`judicator-remediator`: serve the webhook, list or release throttles, check a config file.

The only module that reads the environment, files named on the command line (and the token file
the config names), and sets up logging.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import yaml
from flask import Flask

from remediator.config import PLATFORM_PATHS, Config, ConfigError, load_config
from remediator.store import StateLocked, Store, lock_state

log = logging.getLogger(__name__)
DEFAULT_LISTEN = "127.0.0.1:10171"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="judicator-remediator",
        description="Alertmanager webhook receiver that throttles the offending Xen or KVM guest.",
    )
    parser.add_argument("--config.file", dest="config_file", required=True)
    parser.add_argument(
        "--log.level",
        dest="log_level",
        default="info",
        choices=["debug", "info", "warn", "error"],
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the webhook receiver")
    serve.add_argument(
        "--web.listen-address",
        dest="listen",
        default=DEFAULT_LISTEN,
        help="host:port, :port or unix:/path (default %(default)s)",
    )
    serve.add_argument(
        "--dry-run", action="store_true", help="plan and log every action, run nothing on the host"
    )
    serve.add_argument("--xl.path", dest="xl_path", help="xl binary (overrides paths.xl)")
    serve.add_argument(
        "--kvmctl.path", dest="kvmctl_path", help="judicator-kvmctl (overrides paths.kvmctl)"
    )
    serve.add_argument("--tc.path", dest="tc_path", help="tc binary (overrides paths.tc)")
    serve.add_argument("--ip.path", dest="ip_path", help="ip binary (overrides paths.ip)")
    serve.add_argument("--path.sysfs", dest="sysfs_path", help="sysfs root (overrides paths.sysfs)")
    listing = commands.add_parser("list", help="list live throttles (or all with --all)")
    listing.add_argument("--all", action="store_true", help="include ended throttles")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    release = commands.add_parser(
        "release", help="release throttles by id (the running server acts within a second)"
    )
    release.add_argument("ids", nargs="+", type=int)
    commands.add_parser("check-config", help="validate the config file and the files it names")
    return parser


def read_config(path: str) -> Config:
    try:
        with open(path, encoding="utf-8") as file:
            raw = yaml.safe_load(file)
    except OSError as error:
        raise ConfigError([f"cannot read {path}: {error.strerror}"]) from None
    except yaml.YAMLError as error:
        raise ConfigError([f"{path} is not valid YAML: {error}"]) from None
    return load_config(raw)


def read_token(config: Config) -> str | None:
    if config.bearer_token_file is None:
        return None
    try:
        with open(config.bearer_token_file, encoding="utf-8") as file:
            token = file.read().strip()
    except OSError as error:
        raise ConfigError(
            [f"auth.bearer_token_file: cannot read {config.bearer_token_file}: {error.strerror}"]
        ) from None
    if len(token) < 16 or any(c.isspace() for c in token):
        raise ConfigError(["auth.bearer_token_file: the token must be >= 16 chars, no spaces"])
    return token


def _check_files(config: Config) -> list[str]:
    problems = []
    tls_files = (("tls.cert_file", config.tls_cert_file), ("tls.key_file", config.tls_key_file))
    for what, path in tls_files:  # fmt: skip
        if path is not None and not os.access(path, os.R_OK):
            problems.append(f"{what}: cannot read {path}")
    directory = os.path.dirname(os.path.abspath(config.state_path))
    if not os.access(directory, os.W_OK):
        problems.append(f"state_path: directory {directory} is not writable")
    for command in config.actions.commands.values():
        for argv in (command.apply, command.release):
            if argv is not None and not os.access(argv[0], os.X_OK):
                problems.append(f"actions.command.{command.name}: {argv[0]} is not executable")
    return problems


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _list(config: Config, everything: bool, as_json: bool) -> int:
    store = Store(config.state_path)
    try:
        throttles = store.recent(1000) if everything else store.live()
        if as_json:
            rows: list[dict[str, Any]] = []
            for throttle in throttles:
                row = dataclasses.asdict(throttle)
                row["action"] = {"kind": throttle.kind, "params": dict(throttle.action.params)}
                row["alerts"] = store.alerts_of(throttle.id)
                rows.append(row)
            print(json.dumps(rows, indent=2, sort_keys=True))
            return 0
        print(f"{'ID':>5} {'DOMAIN':20} {'ACTION':14} {'STATE':10} {'SINCE':21} {'UNTIL':21} WHY")
        for t in throttles:
            print(
                f"{t.id:>5} {t.domain:20.20} {t.kind:14} {t.state:10} "
                f"{_when(t.applied_at or t.created_at):21} {_when(t.until):21} {t.reason}"
            )
    finally:
        store.close()
    return 0


def _release(config: Config, ids: Sequence[int]) -> int:
    store = Store(config.state_path)
    status = 0
    try:
        for throttle_id in ids:
            if store.request_release(throttle_id, time.time(), "operator"):
                print(f"throttle {throttle_id}: release requested")
            else:
                print(f"throttle {throttle_id}: not live", file=sys.stderr)
                status = 1
    finally:
        store.close()
    return status


def _serve(config: Config, args: argparse.Namespace) -> int:
    from remediator.app import create_app
    from remediator.runner import SubprocessRunner
    from remediator.server import RemediatorServer

    overrides = {
        key: getattr(args, key)
        for key in ("xl_path", "kvmctl_path", "tc_path", "ip_path", "sysfs_path")
        if getattr(args, key) is not None
    }
    for key, tool in (("xl_path", "xl"), ("kvmctl_path", "kvmctl")):
        if key in overrides and tool not in PLATFORM_PATHS[config.platform]:
            raise ConfigError([f"--{tool}.path: means nothing on platform {config.platform}"])
    config = dataclasses.replace(config, **overrides)
    token = read_token(config)
    try:
        # Held until the process exits.
        lock_state(config.state_path)
    except (StateLocked, OSError) as error:
        raise ConfigError([f"state_path: {error}"]) from None
    if token is None:
        log.warning("authentication is disabled (auth.disabled: true)")

    def build() -> Flask:
        return create_app(config, SubprocessRunner(), token=token, dry_run=args.dry_run)

    log.info("serving on %s (state %s, dry run %s)", args.listen, config.state_path, args.dry_run)
    RemediatorServer(
        build,
        args.listen,
        certfile=config.tls_cert_file,
        keyfile=config.tls_key_file,
        request_body_limit=config.max_request_bytes,
    ).run()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = read_config(args.config_file)
        if args.command == "check-config":
            read_token(config)
            problems = _check_files(config)
            if problems:
                raise ConfigError(problems)
            print(f"{args.config_file}: OK")
            return 0
        if args.command == "list":
            return _list(config, args.all, args.json)
        if args.command == "release":
            return _release(config, args.ids)
        return _serve(config, args)
    except ConfigError as error:
        print(f"judicator-remediator: {args.config_file}: {error}", file=sys.stderr)
        return 2
