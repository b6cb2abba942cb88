"""The lab agent: runs inside Dom0 and lets the host drive it over one forwarded TCP port.

    python3 -m xenlab.agent --listen 0.0.0.0:8000

Standard library only (Dom0 has Debian's Python and the project's sources, nothing else is
needed to start it). JSON over HTTP:
    GET  /healthy                                      -> {"ok": true}
    POST /run    {"argv": [...], "timeout", "input"}   -> {"rc", "stdout", "stderr", "seconds"}
    POST /spawn  {"name": n, "argv": [...], "env"}     -> {"pid"} (log in /var/log/xenlab)
    POST /kill   {"name": n}                           -> {"rc"}
    GET  /log?name=n                                   -> {"text"}
    POST /poweroff                                     -> {} then the VM powers off
Commands are argv lists, never a shell; every /run has a timeout. This is lab tooling, reached
only through QEMU's restricted user network on the host's loopback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LOG_DIR = Path("/var/log/xenlab")
MAX_TIMEOUT_SECONDS = 600.0
SPAWNED: dict[str, subprocess.Popen[bytes]] = {}
LOCK = threading.Lock()


def run(argv: list[str], timeout: float, stdin: str | None) -> dict[str, Any]:
    started = time.monotonic()
    try:
        result = subprocess.run(
            argv,
            input=stdin,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=min(timeout, MAX_TIMEOUT_SECONDS),
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        out = error.stdout if isinstance(error.stdout, str) else (error.stdout or b"").decode()
        return {"rc": -1, "stdout": out, "stderr": f"timeout after {timeout}s",
                "seconds": time.monotonic() - started}  # fmt: skip
    except OSError as error:
        return {"rc": -2, "stdout": "", "stderr": str(error), "seconds": 0.0}
    return {
        "rc": result.returncode,
        "stdout": result.stdout,
        "stderr": result.stderr,
        "seconds": time.monotonic() - started,
    }


def spawn(name: str, argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    with LOCK:
        old = SPAWNED.get(name)
        if old is not None and old.poll() is None:
            return {"error": f"{name} already running as {old.pid}"}
        with (LOG_DIR / f"{name}.log").open("wb") as output:
            process = subprocess.Popen(
                argv,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **env},
                start_new_session=True,
            )
        SPAWNED[name] = process
    return {"pid": process.pid}


def kill(name: str) -> dict[str, Any]:
    with LOCK:
        process = SPAWNED.pop(name, None)
    if process is None:
        return {"rc": None}
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    return {"rc": process.returncode}


class Handler(BaseHTTPRequestHandler):
    def _reply(self, body: dict[str, Any], status: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        loaded = json.loads(self.rfile.read(length) or b"{}")
        if not isinstance(loaded, dict):
            raise ValueError("body must be a JSON object")
        return loaded

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        if url.path == "/healthy":
            self._reply({"ok": True})
        elif url.path == "/log":
            name = Path(query.get("name", [""])[0]).name
            path = LOG_DIR / f"{name}.log"
            self._reply({"text": path.read_text(errors="replace") if path.exists() else ""})
        else:
            self._reply({"error": "not found"}, 404)

    def do_POST(self) -> None:
        try:
            body = self._body()
            if self.path == "/run":
                argv = [str(a) for a in body["argv"]]
                self._reply(run(argv, float(body.get("timeout", 60)), body.get("input")))
            elif self.path == "/spawn":
                argv = [str(a) for a in body["argv"]]
                env = {str(k): str(v) for k, v in body.get("env", {}).items()}
                self._reply(spawn(str(body["name"]), argv, env))
            elif self.path == "/kill":
                self._reply(kill(str(body["name"])))
            elif self.path == "/poweroff":
                self._reply({})
                threading.Thread(target=_poweroff, daemon=True).start()
            else:
                self._reply({"error": "not found"}, 404)
        except (KeyError, ValueError, TypeError) as error:
            self._reply({"error": str(error)}, 400)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format, *args)


def _poweroff() -> None:
    time.sleep(0.5)
    for name in list(SPAWNED):
        kill(name)
    subprocess.run(["sync"], check=False, timeout=30)
    subprocess.run(["poweroff", "-f"], check=False, timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(prog="xenlab-agent")
    parser.add_argument("--listen", default="0.0.0.0:8000")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    host, _, port = args.listen.rpartition(":")
    server = ThreadingHTTPServer((host, int(port)), Handler)
    print(f"xenlab agent listening on {args.listen}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
