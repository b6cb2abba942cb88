"""`--web.config.file`: TLS and basic auth in the Prometheus exporter-toolkit's format.

    tls_server_config:
      cert_file: server.crt
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert   # or VerifyClientCertIfGiven, NoClientCert
      client_ca_file: ca.crt
    basic_auth_users:
      prometheus: $2y$10$...                         # bcrypt hash, as htpasswd -B makes

Relative paths are relative to the file, as in the toolkit. Every problem is reported at once
(`WebConfigError`), at start. Client auth types Python's ssl cannot express (RequestClientCert,
RequireAnyClientCert: asking for a certificate without verifying it) are refused.
"""

from __future__ import annotations

import hashlib
import os
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

CLIENT_AUTH_TYPES = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_UNSUPPORTED_AUTH_TYPES = ("RequestClientCert", "RequireAnyClientCert")
_TLS_KEYS = {"cert_file", "key_file", "client_auth_type", "client_ca_file"}
_TOP_KEYS = {"tls_server_config", "basic_auth_users"}


class WebConfigError(ValueError):
    """The web config file is invalid; the message lists every problem."""


@dataclass(frozen=True)
class TlsConfig:
    cert_file: str
    key_file: str
    client_ca_file: str | None
    cert_reqs: int


@dataclass
class WebConfig:
    tls: TlsConfig | None = None
    basic_auth_users: dict[str, bytes] = field(default_factory=dict)
    # bcrypt is slow on purpose; remember what was already verified (as the toolkit does)
    _verified: set[tuple[str, bytes]] = field(default_factory=set, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def authorized(self, user: str | None, password: str | None) -> bool:
        if not self.basic_auth_users:
            return True
        if user is None or password is None or user not in self.basic_auth_users:
            return False
        digest = hashlib.sha256(password.encode()).digest()
        with self._lock:
            if (user, digest) in self._verified:
                return True
        import bcrypt  # checked at load time

        if bcrypt.checkpw(password.encode(), self.basic_auth_users[user]):
            with self._lock:
                self._verified.add((user, digest))
            return True
        return False


def _resolve(base: str, path: str) -> str:
    return path if os.path.isabs(path) else os.path.join(base, path)


def load_web_config(data: Any, base_dir: str) -> WebConfig:
    """Validate the parsed YAML of a web config file; raises WebConfigError listing problems."""
    problems: list[str] = []
    if data is None:
        return WebConfig()
    if not isinstance(data, Mapping):
        raise WebConfigError("web config: the top level must be a mapping")
    problems += [f"unknown key {key!r}" for key in sorted(set(data) - _TOP_KEYS)]
    tls = None
    tls_data = data.get("tls_server_config")
    if tls_data is not None:
        if not isinstance(tls_data, Mapping):
            problems.append("tls_server_config must be a mapping")
        else:
            problems += [
                f"tls_server_config: unknown or unsupported key {key!r}"
                for key in sorted(set(tls_data) - _TLS_KEYS)
            ]
            tls = _tls(tls_data, base_dir, problems)
    users: dict[str, bytes] = {}
    users_data = data.get("basic_auth_users")
    if users_data is not None:
        if not isinstance(users_data, Mapping):
            problems.append("basic_auth_users must be a mapping of user to bcrypt hash")
        else:
            users = _users(users_data, problems)
    if problems:
        raise WebConfigError("web config: " + "; ".join(problems))
    return WebConfig(tls=tls, basic_auth_users=users)


def _tls(data: Mapping[str, Any], base_dir: str, problems: list[str]) -> TlsConfig | None:
    files = {}
    for key in ("cert_file", "key_file", "client_ca_file"):
        value = data.get(key)
        if value is None:
            continue
        path = _resolve(base_dir, str(value))
        if not os.path.isfile(path):
            problems.append(f"tls_server_config.{key}: no such file {path}")
        files[key] = path
    for key in ("cert_file", "key_file"):
        if key not in files:
            problems.append(f"tls_server_config.{key} is required")
    auth_type = str(data.get("client_auth_type", "NoClientCert"))
    if auth_type in _UNSUPPORTED_AUTH_TYPES:
        problems.append(f"client_auth_type {auth_type} is not supported (Python's ssl verifies)")
    elif auth_type not in CLIENT_AUTH_TYPES:
        problems.append(f"unknown client_auth_type {auth_type!r}")
    elif auth_type != "NoClientCert" and "client_ca_file" not in files:
        problems.append(f"client_auth_type {auth_type} needs client_ca_file")
    if "cert_file" not in files or "key_file" not in files or auth_type not in CLIENT_AUTH_TYPES:
        return None
    return TlsConfig(
        files["cert_file"],
        files["key_file"],
        files.get("client_ca_file"),
        CLIENT_AUTH_TYPES[auth_type],
    )


def _users(data: Mapping[Any, Any], problems: list[str]) -> dict[str, bytes]:
    try:
        import bcrypt  # noqa: F401
    except ImportError:
        problems.append("basic_auth_users needs the Python package bcrypt")
        return {}
    users = {}
    for user, hashed in data.items():
        text = str(hashed)
        if not text.startswith(("$2a$", "$2b$", "$2y$")) or len(text) != 60:
            problems.append(f"basic_auth_users.{user}: not a bcrypt hash")
            continue
        users[str(user)] = text.encode()
    return users
