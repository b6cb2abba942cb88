"""A minimal QMP client: one unix-socket connection per command, bounded by a timeout.

QMP (docs/interop/qmp-spec.rst in QEMU): the server greets with `{"QMP": {...}}`, the client
sends `{"execute": "qmp_capabilities"}` to leave negotiation, then commands; each answer is one
JSON object per line, `{"return": ...}` or `{"error": {"class", "desc"}}`. Asynchronous events
(`{"event": ...}`, e.g. STOP after `stop`) may come before an answer and are skipped.

Used by the remediator's `judicator-kvmctl` (pause = `stop`, unpause = `cont`) and to tell a
paused VM; the exporter reads no QMP (a hung QEMU must not stall a scrape).
"""

from __future__ import annotations

import json
import logging
import socket
import time
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 5.0
# An answer larger than this is not one we asked for (query-status is ~80 bytes).
MAX_LINE = 1 << 20


class QmpError(RuntimeError):
    """The monitor could not be reached, answered too late, or refused the command."""


class QmpConnection:
    """One QMP session, capabilities negotiated; every read and write within `deadline`."""

    def __init__(self, path: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._deadline = time.monotonic() + timeout
        self._buffer = b""
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._socket.settimeout(self._remaining())
            self._socket.connect(path)
            greeting = self._read_message()
            if "QMP" not in greeting:
                raise QmpError(f"{path}: not a QMP monitor (greeting {greeting!r:.80})")
            self.execute("qmp_capabilities")
        except OSError as error:
            self.close()
            raise QmpError(f"{path}: {error}") from None
        except QmpError:
            self.close()
            raise

    def __enter__(self) -> QmpConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._socket.close()

    def _remaining(self) -> float:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise QmpError("QMP: no answer within the timeout")
        return remaining

    def _read_message(self) -> dict[str, Any]:
        while b"\n" not in self._buffer:
            if len(self._buffer) > MAX_LINE:
                raise QmpError("QMP: answer line too long")
            self._socket.settimeout(self._remaining())
            try:
                chunk = self._socket.recv(65536)
            except TimeoutError:
                raise QmpError("QMP: no answer within the timeout") from None
            if not chunk:
                raise QmpError("QMP: the monitor closed the connection")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            message = json.loads(line)
        except ValueError:
            raise QmpError(f"QMP: not JSON: {line[:80]!r}") from None
        if not isinstance(message, dict):
            raise QmpError(f"QMP: not an object: {line[:80]!r}")
        return message

    def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """The command's `return` value; QmpError with the monitor's `desc` on an error."""
        request: dict[str, Any] = {"execute": command}
        if arguments:
            request["arguments"] = arguments
        self._socket.settimeout(self._remaining())
        try:
            self._socket.sendall(json.dumps(request).encode() + b"\n")
        except OSError as error:
            raise QmpError(f"QMP {command}: {error}") from None
        while True:
            message = self._read_message()
            if "event" in message:
                log.debug("QMP event while waiting for %s: %s", command, message.get("event"))
                continue
            if "error" in message:
                failure = message["error"]
                desc = failure.get("desc") if isinstance(failure, dict) else failure
                raise QmpError(f"QMP {command}: {desc}")
            if "return" in message:
                return message["return"]
            raise QmpError(f"QMP {command}: unexpected answer {message!r:.80}")


def execute(path: str, command: str, timeout: float = DEFAULT_TIMEOUT) -> Any:
    """Connect, negotiate, run one command, close."""
    with QmpConnection(path, timeout) as connection:
        return connection.execute(command)


def query_status(path: str, timeout: float = DEFAULT_TIMEOUT) -> str:
    """The VM's run state ("running", "paused", "prelaunch", "shutdown", ...)."""
    answer = execute(path, "query-status", timeout)
    status = answer.get("status") if isinstance(answer, dict) else None
    if not isinstance(status, str):
        raise QmpError(f"QMP query-status: no status in {answer!r:.80}")
    return status


def stop(path: str, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Pause the VM's vCPUs (idempotent: stopping a paused VM succeeds)."""
    execute(path, "stop", timeout)


def cont(path: str, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Resume the VM's vCPUs (idempotent on a running VM)."""
    execute(path, "cont", timeout)
