"""A refresh storm against the dashboard server: N browsers reloading at once.

Each simulated client opens its own connection at the same moment and, on it (keep-alive),
loads the desk page, polls `version.json` (first plainly, then conditionally with the ETag it
got, expecting 304), and loads one trader page: what a browser does on a reload. Used by
`benchmarks/exposure.py` and the dashboard tests.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass


@dataclass
class StormResult:
    clients: int
    requests: int
    errors: int
    error_samples: list[str]
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float

    def summary(self) -> str:
        return (
            f"{self.clients} clients, {self.requests} requests, {self.errors} errors, "
            f"{self.seconds:.2f}s, p50 {self.p50_ms:.1f} ms, p99 {self.p99_ms:.1f} ms, "
            f"max {self.max_ms:.1f} ms"
        )


async def _request(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    host: str,
    path: str,
    etag: str | None = None,
) -> tuple[int, dict[str, str], bytes]:
    # What a browser sends: it takes gzip, and revalidates with the ETag it holds.
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Accept: */*", "Accept-Encoding: gzip"]
    if etag:
        lines.append(f"If-None-Match: {etag}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split(" ", 2)[1])
    headers = {}
    for line in header_lines:
        if ":" in line:
            key, value = line.split(":", 1)
            headers[key.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = await reader.readexactly(length) if length else b""
    return status, headers, body


async def _client(
    host: str, port: int, trader_page: str | None, start: asyncio.Event, latencies: list[float]
) -> list[str]:
    await start.wait()
    errors: list[str] = []
    t0 = time.perf_counter()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 30)
    except (OSError, TimeoutError) as exc:
        return [f"connect: {exc!r}"]
    plan: list[tuple[str, bool, int]] = [
        ("/", False, 200),
        ("/version.json", False, 200),
        ("/version.json", True, 304),
    ]
    if trader_page:
        plan.append((f"/{trader_page}", False, 200))
    etag = None
    try:
        for path, conditional, expected in plan:
            started = t0 if path == "/" else time.perf_counter()
            status, headers, body = await asyncio.wait_for(
                _request(reader, writer, host, path, etag if conditional else None), 30
            )
            latencies.append(time.perf_counter() - started)
            if path == "/version.json" and not conditional:
                etag = headers.get("etag")
            if status != expected or (expected == 200 and not body):
                errors.append(f"{path}: status {status}")
    except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
        errors.append(f"request: {exc!r}")
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
    return errors


async def _storm(host: str, port: int, clients: int, trader_pages: list[str]) -> StormResult:
    latencies: list[float] = []
    start = asyncio.Event()
    tasks = [
        asyncio.create_task(
            _client(
                host,
                port,
                trader_pages[i % len(trader_pages)] if trader_pages else None,
                start,
                latencies,
            )
        )
        for i in range(clients)
    ]
    await asyncio.sleep(0)
    t0 = time.perf_counter()
    start.set()
    results = await asyncio.gather(*tasks)
    seconds = time.perf_counter() - t0
    errors = [e for r in results for e in r]
    ordered = sorted(latencies) or [0.0]

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(round(p * (len(ordered) - 1))))] * 1000

    return StormResult(
        clients=clients,
        requests=len(latencies),
        errors=len(errors),
        error_samples=errors[:5],
        seconds=seconds,
        p50_ms=pct(0.50),
        p99_ms=pct(0.99),
        max_ms=ordered[-1] * 1000,
    )


def storm(
    host: str, port: int, clients: int = 500, trader_pages: list[str] | None = None
) -> StormResult:
    """Run the storm and return counts and latency percentiles (ms, per request; a client's
    first request includes its connect)."""
    return asyncio.run(_storm(host, port, clients, trader_pages or []))
