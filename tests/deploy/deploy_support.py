"""Static readers for the deployment files, shared by the tests in tests/deploy/.

No Docker engine and no systemd run here, so the deployment is checked as text: compose.yaml,
the Dockerfile and the units are read and held against the repository and against the configs
they ship (prometheus.yml, alertmanager.yml, grafana provisioning, the remediator's config).
"""

from __future__ import annotations

import fnmatch
import functools
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "compose.yaml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
SYSTEMD_DIR = REPO / "deploy" / "systemd"
DEPLOY_DOC = REPO / "docs" / "deploy.md"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}

# Host paths the Dom0 services may bind from outside the repository, and why. docs/deploy.md
# must explain each one (a test holds it to that).
XEN_HOST_PATHS = {
    "/dev/xen": "privcmd, hypercall and xenbus devices for xl and libxenctrl",
    "/run/xenstored": "xenstored's socket",
    "/var/lib/xen": "libxl's per-domain userdata and lock files",
    "/run/xen": "libxl's run directory with QEMU's QMP sockets",
    "/etc/xen": "the host's xl.conf",
}


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as stream:
        return yaml.safe_load(stream)


@functools.cache
def compose() -> dict[str, Any]:
    data = load_yaml(COMPOSE_FILE)
    assert isinstance(data, dict), "compose.yaml must be a mapping"
    return data


def service(name: str) -> dict[str, Any]:
    services = compose()["services"]
    assert name in services, f"compose.yaml has no service {name!r}"
    svc = services[name]
    assert isinstance(svc, dict)
    return svc


_DEFAULTED_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*):?-(?P<default>[^}]*)\}")


def interpolate(text: str) -> str:
    """Expand `${VAR:-default}` to its default, as compose does with VAR unset; bare `$VAR` is
    refused, since the file would then not work without an .env file we do not ship."""
    expanded = _DEFAULTED_VARIABLE.sub(lambda m: m["default"], text)
    assert "$" not in expanded.replace("$$", ""), f"variable without a default: {text!r}"
    return expanded


@dataclass(frozen=True)
class Mount:
    source: str  # host path as written (after interpolation), or a named volume
    target: str
    read_only: bool
    named_volume: bool

    @property
    def repo_path(self) -> Path | None:
        """The repository file or folder this bind mount ships, None for host paths."""
        if self.named_volume or self.source.startswith("/"):
            return None
        return (REPO / self.source).resolve()


def mounts(name: str) -> list[Mount]:
    """Volumes (short or long syntax) and secrets of a service, as mounts."""
    svc = service(name)
    result = []
    for entry in svc.get("volumes", []):
        if isinstance(entry, str):
            parts = interpolate(entry).split(":")
            assert len(parts) in (2, 3), f"{name}: cannot read volume {entry!r}"
            source, target = parts[0], parts[1]
            options = parts[2].split(",") if len(parts) == 3 else []
            read_only = "ro" in options
        else:
            source = interpolate(str(entry["source"]))
            target = entry["target"]
            read_only = bool(entry.get("read_only", False))
        named = not source.startswith(("/", ".", "~"))
        result.append(Mount(source, target, read_only, named))
    for entry in svc.get("secrets", []):
        secret_name = entry if isinstance(entry, str) else entry["source"]
        target = entry.get("target", secret_name) if isinstance(entry, dict) else secret_name
        if not target.startswith("/"):
            target = f"/run/secrets/{target}"
        secret = compose()["secrets"][secret_name]
        result.append(Mount(interpolate(secret["file"]), target, True, named_volume=False))
    return result


def host_path(name: str, container_path: str) -> Path | None:
    """Where in the repository a path inside a service's container comes from, or None."""
    wanted = PurePosixPath(container_path)
    best: tuple[int, Path] | None = None
    for mount in mounts(name):
        target = PurePosixPath(mount.target)
        if mount.repo_path is None or not (wanted == target or target in wanted.parents):
            continue
        depth = len(target.parts)
        if best is None or depth > best[0]:
            best = (depth, mount.repo_path / wanted.relative_to(target))
    return best[1] if best else None


def is_mounted(name: str, container_path: str) -> bool:
    wanted = PurePosixPath(container_path)
    return any(
        wanted == PurePosixPath(m.target) or PurePosixPath(m.target) in wanted.parents
        for m in mounts(name)
    )


def flag_values(argv: list[str]) -> dict[str, str]:
    """`--name=value` arguments of an argv list as a mapping (last one wins, as in argparse)."""
    values = {}
    for arg in argv:
        if arg.startswith("--") and "=" in arg:
            key, _, value = arg.partition("=")
            values[key] = value
    return values


def listen_port(address: str) -> int:
    """The port of a listen address such as `:10170`, `127.0.0.1:9090` or `[::]:10171`."""
    port = address.rpartition(":")[2]
    assert port.isdigit(), f"no port in listen address {address!r}"
    return int(port)


def listen_host(address: str) -> str:
    return address.rpartition(":")[0].strip("[]")


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    path: str


def endpoint(url_or_target: str) -> Endpoint:
    """Host, port and path of `http://h:p/path` or of a scrape target `h:p`."""
    text = url_or_target if "://" in url_or_target else f"http://{url_or_target}"
    parts = urlsplit(text)
    assert parts.hostname and parts.port, f"no host and port in {url_or_target!r}"
    return Endpoint(parts.hostname, parts.port, parts.path or "/")


@functools.cache
def console_scripts() -> dict[str, str]:
    with (REPO / "pyproject.toml").open("rb") as stream:
        scripts = tomllib.load(stream)["project"]["scripts"]
    assert isinstance(scripts, dict)
    return {str(k): str(v) for k, v in scripts.items()}


def script_path(script: str) -> Path:
    """The installed console script of the running interpreter's environment (the venv)."""
    return Path(sys.executable).parent / script


@functools.cache
def cli_help(script: str, subcommand: str | None = None) -> str:
    """A console script's `--help` (or its subcommand's), run from this checkout's venv."""
    argv = [str(script_path(script)), *([subcommand] if subcommand else []), "--help"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, f"{' '.join(argv[1:])} failed:\n{result.stdout}{result.stderr}"
    return result.stdout


def _flags_in(help_text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])--[a-z0-9][a-z0-9._-]*", help_text))


def _subcommands_in(help_text: str) -> set[str]:
    choices = re.search(r"positional arguments:\s*\{([a-z0-9_,-]+)\}", help_text)
    return set(choices[1].split(",")) if choices else set()


def cli_problems(script: str, argv: list[str]) -> list[str]:
    """What the CLI's own `--help` says is wrong with `argv` (the arguments after the program).

    Flags must be written `--name=value` (or be bare switches); the first other word is a
    subcommand, and the flags after it must be the subcommand's."""
    problems = []
    subcommand: str | None = None
    for arg in argv:
        if not arg.startswith("--"):
            if subcommand is not None:
                if "positional arguments:" not in cli_help(script, subcommand):
                    problems.append(f"unexpected word {arg!r} after subcommand {subcommand!r}")
            elif arg not in _subcommands_in(cli_help(script)):
                problems.append(f"{script} has no subcommand {arg!r}")
            else:
                subcommand = arg
            continue
        flag = arg.partition("=")[0]
        if flag not in _flags_in(cli_help(script, subcommand)):
            where = f"{script} {subcommand}" if subcommand else script
            problems.append(f"{where} --help does not know {flag}")
    return problems


def dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [line.strip().lstrip("/") for line in lines if line.strip() and line[0] != "#"]


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps `path` (relative to the context) out of the build context.

    Follows Docker's rules for what we use: a pattern excludes what it matches and everything
    under it, `**/` matches any number of folders, and a later `!pattern` re-includes."""
    candidates = [PurePosixPath(path), *PurePosixPath(path).parents]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        forms = {body, body.replace("**/", "")}
        if any(fnmatch.fnmatchcase(str(c), form) for c in candidates for form in forms):
            excluded = not negate
    return excluded


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str
    line: int


def dockerfile_instructions() -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    instructions = []
    pending = ""
    start = 0
    for number, raw in enumerate(DOCKERFILE.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        text = pending + line
        pending = ""
        keyword, _, arguments = text.partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip(), start))
    assert not pending, "Dockerfile ends in a continuation line"
    return instructions


def unit_file(name: str) -> dict[str, dict[str, list[str]]]:
    """A systemd unit as {section: {key: [values in order]}}, continuation lines joined."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in (SYSTEMD_DIR / name).read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line[0] in "#;"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{name}: setting before the first section: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"{name}: not a key=value line: {line!r}"
        current.setdefault(key.strip(), []).append(" ".join(value.split()))
    return sections


def exec_argv(value: str) -> list[str]:
    """An Exec*= value as argv, its prefix characters (-, +, @, !, :) dropped."""
    argv = value.split()
    argv[0] = argv[0].lstrip("-+@!:")
    return argv
