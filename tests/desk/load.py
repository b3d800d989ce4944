"""Clients for the live desk's load tests and benchmarks: many SSE streams, a storm of page
loads, a client that never reads and requests never finished. httpx for HTTP; raw sockets for
the clients that stall (any library would read or finish for them).

Many clients come from many loopback addresses (`address(i)`: Linux answers all of
127.0.0.0/8), as they would from many machines: the desk caps event streams per address."""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass, field
from urllib.parse import quote

import httpx

from energy_assets.desk.app import STREAMS_PER_CLIENT


def address(index: int) -> str:
    """The `index`-th client address: 127.1.x.y, never the desk's own 127.0.0.1."""
    return f"127.1.{index // 250}.{1 + index % 250}"


def events_path(*topics: str) -> str:
    """The event stream following these pages (`desk`, `trader/<id>`)."""
    return "/events?" + "&".join("topic=" + quote(t, safe="") for t in topics)


@dataclass
class StreamStats:
    """What the SSE clients saw: per client the last event id and when each event arrived."""

    connected: int = 0
    errors: list[str] = field(default_factory=list)
    last_ids: list[str] = field(default_factory=list)
    arrivals: list[list[tuple[float, str]]] = field(default_factory=list)


async def _stream(client: httpx.AsyncClient, url: str, index: int, stats: StreamStats, stop):
    try:
        async with client.stream("GET", url, timeout=httpx.Timeout(30, read=None)) as answer:
            if answer.status_code != 200:
                stats.errors.append(f"HTTP {answer.status_code}")
                return
            stats.connected += 1
            event_id = ""
            async for line in answer.aiter_lines():
                if line.startswith("id:"):
                    event_id = line[3:].strip()
                elif line == "" and event_id:
                    stats.last_ids[index] = event_id
                    stats.arrivals[index].append((time.monotonic(), event_id))
                    event_id = ""
                if stop.is_set():
                    return
    except (httpx.HTTPError, OSError) as err:
        if not stop.is_set():
            stats.errors.append(repr(err))


class Streams:
    """`n` SSE clients on `paths` (round robin), reading until `close()`, from as many
    addresses as the desk's per-address cap asks (`per_address` streams each)."""

    def __init__(self, base: str, paths: list[str], n: int, per_address: int = STREAMS_PER_CLIENT):
        self.base, self.paths, self.n, self.per_address = base, paths, n, per_address
        self.stats = StreamStats(last_ids=[""] * n, arrivals=[[] for _ in range(n)])

    async def __aenter__(self) -> Streams:
        self._stop = asyncio.Event()
        self._clients = [
            httpx.AsyncClient(
                base_url=self.base,
                limits=httpx.Limits(max_connections=None),
                transport=httpx.AsyncHTTPTransport(local_address=address(a)),
            )
            for a in range(-(-self.n // self.per_address))
        ]
        self._tasks = [
            asyncio.create_task(
                _stream(
                    self._clients[i // self.per_address],
                    self.paths[i % len(self.paths)],
                    i,
                    self.stats,
                    self._stop,
                )
            )
            for i in range(self.n)
        ]
        return self

    async def wait_connected(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.stats.connected + len(self.stats.errors) < self.n:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.stats.connected}/{self.n} streams connected")
            await asyncio.sleep(0.05)

    async def __aexit__(self, *exc) -> None:
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for client in self._clients:
            await client.aclose()


@dataclass
class StormResult:
    latencies_ms: list[float]
    errors: list[str]

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0

    def summary(self) -> str:
        return (
            f"{len(self.latencies_ms)} loads, {len(self.errors)} errors, "
            f"p50 {self.percentile(0.5):.0f} ms, p99 {self.percentile(0.99):.0f} ms, "
            f"max {max(self.latencies_ms, default=0):.0f} ms"
        )


async def storm(base: str, paths: list[str], n: int) -> StormResult:
    """`n` page loads at once, each on a connection of its own, as n browsers reloading.

    Each is a bare `GET` with `Connection: close` read to the end: httpx spends ~7 ms of
    client CPU a request, which on this 2-core box measured the client, not the service
    (a 500-load storm took 3.3 s with httpx for pages the service answers in 0.4 ms)."""
    host, port = base.removeprefix("http://").split(":")
    latencies: list[float] = []
    errors: list[str] = []
    start = asyncio.Event()

    async def load(path: str) -> None:
        await start.wait()
        began = time.perf_counter()
        try:
            reader, writer = await asyncio.open_connection(host, int(port))
            request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
            writer.write(request.encode())
            answer = await reader.read(-1)
            writer.close()
            if not answer.startswith(b"HTTP/1.1 200 ") or b"</html>" not in answer[-16:]:
                errors.append(answer[:40].decode(errors="replace"))
            else:
                latencies.append((time.perf_counter() - began) * 1000)
        except OSError as err:
            errors.append(repr(err))

    tasks = [asyncio.create_task(load(paths[i % len(paths)])) for i in range(n)]
    await asyncio.sleep(0)
    start.set()
    await asyncio.gather(*tasks)
    return StormResult(latencies, errors)


def stalled_client(base: str, path: str, source: str = "127.0.0.1") -> socket.socket:
    """Opens an SSE stream from `source` and never reads it (a tiny receive window, as a
    frozen tab)."""
    host, port = base.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.bind((source, 0))
    sock.connect((host, int(port)))
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    return sock


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    import os

    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def half_sent(base: str, n: int) -> list[socket.socket]:
    """`n` requests whose head is never finished (a slow-headers attack): each connection
    sends the request line and one header, then nothing. Sockets the desk refused or closed
    at once are kept too (their count is what the caller opened)."""
    host, port = base.removeprefix("http://").split(":")
    opened = []
    for i in range(n):
        sock = socket.socket()
        sock.setblocking(True)
        sock.settimeout(5)
        sock.bind((address(i % 1000), 0))
        try:
            sock.connect((host, int(port)))
            sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nX-Slow: ".encode())
        except OSError:
            pass
        opened.append(sock)
    return opened


def open_fds(pid: int) -> int:
    import os

    return len(os.listdir(f"/proc/{pid}/fd"))
