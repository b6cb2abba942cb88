"""Reading a Prometheus over HTTP: range queries, cut into chunks.

    client = PrometheusClient("http://127.0.0.1:9090", timeout=60)
    for labels, points in query_range_chunked(client, expr, start, end, step):
        ...

A reader and a parser, apart: `PrometheusClient.query_range` returns the JSON text of one
/api/v1/query_range answer; `parse_matrix` turns such text into series. Chunks keep each answer
under Prometheus's 11 000 points per series (and its query timeout); a series that spans chunks
comes back once, its points in order.
"""

from __future__ import annotations

import json
import logging
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping

log = logging.getLogger(__name__)

# Prometheus refuses a range query of more than 11 000 points per series.
MAX_POINTS = 11_000
DEFAULT_POINTS_PER_CHUNK = 10_000

Labels = tuple[tuple[str, str], ...]
Points = list[tuple[float, float]]


class PrometheusError(RuntimeError):
    """Prometheus could not be asked, or answered with an error."""


class PrometheusClient:
    """The HTTP API v1 of one Prometheus (`url` without a trailing /api)."""

    def __init__(
        self, url: str, *, timeout: float = 120.0, headers: Mapping[str, str] | None = None
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.headers = dict(headers or {})

    def _get(self, path: str, params: Mapping[str, str]) -> str:
        body = urllib.parse.urlencode(params).encode()
        request = urllib.request.Request(
            self.url + path,
            data=body,
            method="POST",
            headers={"Content-Type": "application/x-www-form-urlencoded", **self.headers},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return str(response.read().decode())
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")[:500]
            raise PrometheusError(f"{path}: HTTP {error.code}: {detail}") from None
        except (OSError, TimeoutError) as error:
            raise PrometheusError(f"{self.url}{path}: {error}") from None

    def query_range(self, expr: str, start: float, end: float, step: float) -> str:
        """The JSON text of one range query (POST, so long expressions fit)."""
        params = {
            "query": expr,
            "start": f"{start:.3f}",
            "end": f"{end:.3f}",
            "step": f"{step:.3f}",
        }
        return self._get("/api/v1/query_range", params)

    def query(self, expr: str, at: float | None = None) -> str:
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        return self._get("/api/v1/query", params)


def parse_matrix(text: str) -> list[tuple[Labels, Points]]:
    """A query_range answer -> [(sorted labels, [(time, value)])]; raises on an error answer."""
    try:
        reply = json.loads(text)
    except ValueError as error:
        raise PrometheusError(f"not JSON: {error}: {text[:200]!r}") from None
    if reply.get("status") != "success":
        raise PrometheusError(f"{reply.get('errorType')}: {reply.get('error')}")
    data = reply["data"]
    if data["resultType"] != "matrix":
        raise PrometheusError(f"expected a matrix, got a {data['resultType']}")
    out = []
    for item in data["result"]:
        labels = tuple(sorted((str(k), str(v)) for k, v in item["metric"].items()))
        points = [(float(t), float(v)) for t, v in item["values"]]
        out.append((labels, points))
    return out


def chunks(
    start: float, end: float, step: float, points: int = DEFAULT_POINTS_PER_CHUNK
) -> Iterator[tuple[float, float]]:
    """[start, end] cut into ranges of at most `points` steps; the first starts at `start`
    rounded down to a multiple of `step` (so subqueries at that step see the same instants),
    consecutive ranges do not share an instant."""
    if step <= 0 or end < start:
        raise ValueError("chunks needs step > 0 and end >= start")
    points = max(1, min(points, MAX_POINTS))
    t = math.floor(start / step) * step
    while t <= end:
        last = min(end, t + (points - 1) * step)
        yield t, last
        t = last + step


def query_range_chunked(
    client: PrometheusClient,
    expr: str,
    start: float,
    end: float,
    step: float,
    points: int = DEFAULT_POINTS_PER_CHUNK,
) -> list[tuple[Labels, Points]]:
    """One range query over [start, end], asked chunk by chunk and merged per series."""
    merged: dict[Labels, Points] = {}
    for lo, hi in chunks(start, end, step, points):
        log.debug("query_range %s .. %s step %s: %s", lo, hi, step, expr[:120])
        for labels, pts in parse_matrix(client.query_range(expr, lo, hi, step)):
            merged.setdefault(labels, []).extend(pts)
    return list(merged.items())
