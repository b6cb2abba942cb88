"""A synthetic exporter target: the real exporter's exposition, scaled to any host shape.

The template is the golden scrape of the default simulated host
(tests/fixtures/expected/exporter.prom: 4 CPUs, Domain-0 on CPU 0, guests 1-3 pinned one per
CPU). Scaled to `domains` domains on as many CPUs (Domain-0 + guests, guest i alone on CPU i):

- a family with a `cpu` label gets one series per CPU, `domain` set to the CPU's owner;
- a family with a `domain` label gets guest1's series for every guest (vif names and ids
  renumbered) and Domain-0's own;
- host-wide families (arrays such as hypercalls) stay as they are.

Counters advance at steady, benign rates (below every policy threshold) so that every rate and
recording rule has data; nothing fires. So 256 domains cost one HTTP server, not 256 namespaces.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from bench.common import REPO_ROOT

GOLDEN = REPO_ROOT / "tests" / "fixtures" / "expected" / "exporter.prom"
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
# Per-second increase of the busiest counters, a quiet guest's (thresholds: docs/policies.md).
RATES = {
    "xen_perfc_interrupts_total": 150.0,
    "xen_perfc_apic_timer_interrupts_total": 100.0,
    "xen_perfc_sched_context_switches_total": 120.0,
    "xen_perfc_ipis_total": 20.0,
    "xen_perfc_page_faults_total": 20.0,
    "xen_domain_cpu_seconds_total": 0.02,
    "xen_domain_network_transmit_packets_total": 5.0,
    "xen_domain_network_receive_packets_total": 5.0,
    "xen_domain_network_transmit_bytes_total": 600.0,
    "xen_domain_network_receive_bytes_total": 600.0,
}
DEFAULT_RATE = 1.0


@dataclass(frozen=True)
class Series:
    name: str
    labels: str  # rendered, with braces, or ""
    start: float
    rate: float  # 0 for gauges


def _labels(text: str | None) -> dict[str, str]:
    return dict(_LABEL.findall(text or ""))


def _render_labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{key}="{value}"' for key, value in labels.items()) + "}"


def domain_name(index: int) -> str:
    return "Domain-0" if index == 0 else f"guest{index}"


def scaled_exposition(domains: int, template: Path = GOLDEN) -> tuple[list[str], list[Series]]:
    """The golden scrape scaled to `domains` domains on as many CPUs: (HELP/TYPE lines, series).

    The first list holds, per family, its comment lines; series follow their family's order.
    """
    families: dict[str, list[str]] = {}
    samples: dict[str, list[tuple[str, dict[str, str], float]]] = {}
    current = ""
    for line in template.read_text().splitlines():
        if line.startswith("# HELP "):
            current = line.split()[2]
            families[current] = [line]
            samples[current] = []
            continue
        if line.startswith("#") or not line.strip():
            families[current].append(line)
            continue
        found = _SAMPLE.match(line)
        if found is None:
            raise ValueError(f"{template}: cannot read {line!r}")
        samples[current].append((found[1], _labels(found[3]), float(found[4])))
    comments: list[str] = []
    series: list[Series] = []
    for family, lines in families.items():
        comments.append(f"@{family}")
        comments.extend(lines)
        is_counter = any(line.startswith("# TYPE") and line.endswith("counter") for line in lines)
        for name, labels, value in _scale_family(samples[family], domains):
            rate = RATES.get(name, DEFAULT_RATE) if is_counter else 0.0
            series.append(Series(name, _render_labels(labels), value, rate))
    return comments, series


def _scale_family(
    rows: list[tuple[str, dict[str, str], float]], domains: int
) -> Iterator[tuple[str, dict[str, str], float]]:
    if rows and "cpu" in rows[0][1]:
        name, labels, value = rows[0]
        for cpu in range(domains):
            scaled = dict(labels, cpu=str(cpu))
            if "domain" in labels:
                scaled["domain"] = domain_name(cpu)
            yield name, scaled, value
        return
    if rows and any("domain" in labels for _, labels, _ in rows):
        dom0 = [row for row in rows if row[1].get("domain") == "Domain-0"]
        guest = [row for row in rows if row[1].get("domain") == "guest1"]
        yield from dom0
        for index in range(1, domains):
            for name, labels, value in guest:
                scaled = dict(labels, domain=domain_name(index))
                if "domid" in scaled:
                    scaled["domid"] = str(index)
                if "uuid" in scaled:
                    scaled["uuid"] = f"00000000-0000-4000-8000-{index:012d}"
                if "interface" in scaled:
                    scaled["interface"] = re.sub(r"^vif\d+", f"vif{index}", scaled["interface"])
                yield name, scaled, value
        return
    yield from rows


class SyntheticExporter:
    """Serves the scaled exposition on 127.0.0.1:<free port>/metrics from a thread."""

    def __init__(self, domains: int) -> None:
        self.domains = domains
        comments, self.series = scaled_exposition(domains)
        self._comments = comments
        self._started = time.monotonic()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.address = f"127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def render(self) -> bytes:
        elapsed = time.monotonic() - self._started
        by_family: dict[str, list[str]] = {}
        for series in self.series:
            by_family.setdefault(series.name.removesuffix("_total"), []).append(
                f"{series.name}{series.labels} {series.start + series.rate * elapsed:.6g}"
            )
        out: list[str] = []
        family = ""
        for line in self._comments:
            if line.startswith("@"):
                family = line[1:]
                continue
            out.append(line)
            if line.startswith("# TYPE"):
                out.extend(by_family.pop(family.removesuffix("_total"), []))
        return ("\n".join(out) + "\n").encode()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = exporter.render()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                """Silent: Prometheus scrapes every second."""

        return Handler

    def __enter__(self) -> SyntheticExporter:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
