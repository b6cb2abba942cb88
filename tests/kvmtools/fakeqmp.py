"""A fake QMP monitor on a unix socket, in a thread: answers from a fixture set
(`<prefix>-qmp-stats-schemas.json`, `-stats-vm.json`, `-stats-vcpu.json`, `-cpus-fast.json`,
each one answer line as QEMU sent it), or stays silent after accepting (a hung QEMU)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.kvmtools.fakehost import FIXTURES

GREETING = (
    b'{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}}, "capabilities": []}}\r\n'
)


def qmp_answers(prefix: str) -> dict[str, bytes]:
    """The answer lines of one fixture set by command (query-stats by its target)."""
    files = {
        "query-stats-schemas": "stats-schemas",
        "query-stats vm": "stats-vm",
        "query-stats vcpu": "stats-vcpu",
        "query-cpus-fast": "cpus-fast",
    }
    return {
        command: (FIXTURES / f"{prefix}-qmp-{suffix}.json").read_bytes()
        for command, suffix in files.items()
    }


class FakeQmp:
    def __init__(self, path: Path, answers: dict[str, bytes] | None) -> None:
        """`answers` None: accept connections and never say anything."""
        self.path = str(path)
        self.answers = answers
        self.asked: Counter[str] = Counter()
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(self.path)
        self._server.listen(16)
        self._clients: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return  # closed
            self._clients.append(client)
            if self.answers is not None:
                threading.Thread(target=self._session, args=(client,), daemon=True).start()

    def _session(self, client: socket.socket) -> None:
        assert self.answers is not None
        with client, client.makefile("rwb") as stream:
            stream.write(GREETING)
            stream.flush()
            for line in stream:
                request = json.loads(line)
                command = request["execute"]
                if command == "query-stats":
                    command += " " + request["arguments"]["target"]
                self.asked[command] += 1
                if command == "qmp_capabilities":
                    stream.write(b'{"return": {}}\r\n')
                elif command in self.answers:
                    stream.write(self.answers[command])
                else:
                    stream.write(b'{"error": {"class": "CommandNotFound", "desc": "no"}}\r\n')
                stream.flush()

    def close(self) -> None:
        with contextlib.suppress(OSError):  # not connected: nothing to wake
            self._server.shutdown(socket.SHUT_RDWR)  # wakes the accept() under way
        self._server.close()
        for client in self._clients:
            client.close()


@contextmanager
def fake_qmp(path: Path, answers: dict[str, bytes] | None) -> Iterator[FakeQmp]:
    server = FakeQmp(path, answers)
    try:
        yield server
    finally:
        server.close()
