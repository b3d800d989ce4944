"""A scripted Market Data API on loopback, for the faults the playground does not produce
(invalid JSON, missing keys, a wrong echo, exact sequences of 5xx/429/slow answers)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.conftest import free_port


@dataclass
class Answer:
    status: int = 200
    body: bytes | str | dict | None = None  # None: a valid price for the period asked
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    #: Seconds between bytes: the whole answer (status line, headers, body) one byte at a time.
    trickle: float = 0.0
    #: With `trickle`: the status line and headers at once, only the body trickled.
    trickle_body_only: bool = False
    #: A body of this many bytes instead (written in 64 KiB pieces, never held whole).
    size: int | None = None
    #: With `size`: declare it in Content-Length (else the body ends with the connection).
    declare_length: bool = True


def period_value(start: str, end: str) -> float:
    """A value that tells the period: UTC hour + minute / 100 + length in minutes / 10,000
    (`2023-03-01T02:15Z`..`02:30Z` -> 2.1515)."""
    first, last = (datetime.fromisoformat(t.replace("Z", "+00:00")) for t in (start, end))
    minutes = int((last - first).total_seconds() // 60)
    return round(first.hour + first.minute / 100 + minutes / 10000, 4)


def valid_period_price(
    params: dict, value: float | None = None, last_update: str | None = None
) -> dict:
    """The newer form's answer: the period asked echoed, in its market's unit."""
    market = params.get("market", "")
    start, end = params.get("delivery_start", ""), params.get("delivery_end", "")
    return {
        "market": market,
        "delivery_start": start,
        "delivery_end": end,
        "last_update": last_update or "2023-02-21T07:10:20+00:00",
        "unit": "gbp/mwh" if market == "GB" else "euro/mwh",
        "value": value if value is not None else period_value(start, end),
    }


class ScriptedMarketData:
    """Serves `GET <prefix>/reference-price` in the newer request form. Each request takes the
    next scripted Answer of its (market, delivery_start, delivery_end) as sent, if any, else of
    the shared script, else a valid price. `default(params)` answers
    what nothing scripted. Every request is logged."""

    def __init__(self, prefix: str = ""):
        self.prefix = prefix.rstrip("/")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}{self.prefix}"
        self.script: list[Answer] = []
        self.by_period: dict[tuple[str, str, str], list[Answer]] = {}
        self.default: Callable[[dict], Answer] | None = None
        self.requests: list[tuple[float, str, dict]] = []
        #: Bytes written of each hostile (trickled or sized) answer, once it ended.
        self.sent: list[int] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                parts = urlsplit(self.path)
                params = {k: v[0] for k, v in parse_qs(parts.query).items()}
                answer = server._next(parts.path, params)
                if answer.delay:
                    time.sleep(answer.delay)
                if answer.trickle or answer.size is not None:
                    self._send_hostile(answer, params)
                    return
                body = answer.body
                if body is None:
                    body = valid_period_price(params)
                if isinstance(body, dict | list):
                    body = json.dumps(body)
                data = body.encode() if isinstance(body, str) else body
                try:
                    self.send_response(answer.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in answer.headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _send_hostile(self, answer, params):
                body = b" " * (answer.size or 0)
                if answer.size is None:
                    body = json.dumps(valid_period_price(params)).encode()
                length = len(body)
                head = f"HTTP/1.1 {answer.status} OK\r\nContent-Type: application/json\r\n"
                if answer.declare_length:
                    head += f"Content-Length: {length}\r\n"
                else:
                    head += "Connection: close\r\n"
                    self.close_connection = True
                sent = 0
                try:
                    if answer.trickle:
                        slow = (head + "\r\n").encode() + body
                        if answer.trickle_body_only:
                            self.wfile.write(slow[: -len(body)])
                            slow = body
                        for byte in slow:
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                            sent += 1
                            time.sleep(answer.trickle)
                    else:
                        self.wfile.write((head + "\r\n").encode())
                        piece = b" " * 65536
                        while sent < length:
                            self.wfile.write(piece[: length - sent])
                            sent += min(len(piece), length - sent)
                except OSError:
                    self.close_connection = True
                finally:
                    with server._lock:
                        server.sent.append(sent)

        class Server(ThreadingHTTPServer):
            # socketserver's backlog of 5 drops the SYNs of a client opening 8 connections at
            # once (each retried after a second); a real vendor's backlog is far larger.
            request_queue_size = 128

        self.httpd = Server(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def _next(self, path: str, params: dict) -> Answer:
        with self._lock:
            self.requests.append((time.time(), path, params))
            if path != f"{self.prefix}/reference-price":
                return Answer(status=404, body={"error_message": "not found"})
            newer = ("market", "delivery_start", "delivery_end")
            if not all(name in params for name in newer):
                return Answer(status=400, body={"error_message": "missing parameter"})
            queue = self.by_period.get(tuple(params[name] for name in newer))
            if queue:
                return queue.pop(0)
            if self.script:
                return self.script.pop(0)
        if self.default is not None:
            return self.default(params)
        return Answer()

    def start(self) -> ScriptedMarketData:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def scripted_market_data() -> Iterator[Callable[..., ScriptedMarketData]]:
    """`scripted_market_data(prefix="/v1")` starts a scripted vendor on a free loopback port."""
    started: list[ScriptedMarketData] = []

    def start(prefix: str = "") -> ScriptedMarketData:
        server = ScriptedMarketData(prefix).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def refused_url() -> str:
    """A loopback URL where nothing listens: every connection is refused."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture(autouse=True)
def dashboard_dir(tmp_path, monkeypatch) -> Path:
    """Where a price run publishes `prices.parquet`: the test's own folder, never `data/`."""
    path = tmp_path / "dashboard"
    monkeypatch.setenv("ENERGY_DASHBOARD_DIR", str(path))
    return path
