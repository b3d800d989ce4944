"""The stand-in Market Data API: `GET /reference-price` and `/v1/reference-price`.

Both forms of contract §5: `market` + `delivery_start` + `delivery_end` (any market's period)
and `delivery_day` + `delivery_hour` (the default market's local hour, the original form); each
period revised until its gate closure (`pricing.py`).

A thread per connection (`ThreadingHTTPServer`, HTTP/1.1 keep-alive), so added latency
delays each answer without serialising the others. Every request, whatever its outcome,
is counted in the rate-limit windows, as the vendor does.
"""

from __future__ import annotations

import json
import math
import random
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from energy_assets.logs import EventLogger
from energy_assets.markets import DEFAULT_MARKET, Invalid, Period, delivery_of, hour_period
from energy_assets.playground.pricing import published_price

PATHS = ("/reference-price", "/v1/reference-price")
SERVER_ERRORS = (500, 502, 503, 504)
IDLE_CONNECTION_TIMEOUT_S = 120


class BadRequest(ValueError):
    pass


_NEWER = ("market", "delivery_start", "delivery_end")
_OLDER = ("delivery_day", "delivery_hour")


def parse_query(query: str) -> tuple[Period, bool]:
    """The query string -> (the period asked for, whether in the newer form), or BadRequest
    saying what is wrong. The newer form names `market`, `delivery_start`, `delivery_end`; the
    older `delivery_day` + `delivery_hour`, the default market's local hour (contract §5)."""
    params = parse_qs(query, keep_blank_values=True)
    newer = any(name in params for name in _NEWER)
    if newer and any(name in params for name in _OLDER):
        raise BadRequest("give market, delivery_start, delivery_end or delivery_day, delivery_hour")
    values = {}
    for name in _NEWER if newer else _OLDER:
        given = params.get(name)
        if not given:
            raise BadRequest(f"missing query parameter {name!r}")
        if len(given) > 1:
            raise BadRequest(f"query parameter {name!r} given {len(given)} times")
        values[name] = given[0]
    if newer:
        period = delivery_of(values)
    else:
        period = hour_period(DEFAULT_MARKET, values["delivery_day"], values["delivery_hour"])
    if isinstance(period, Invalid):
        raise BadRequest(period.reason)
    return period, newer


@dataclass
class MarketDataStats:
    requests: int = 0  # every request received
    ok: int = 0  # 200
    client_errors: int = 0  # 400, 404, 405
    server_errors: int = 0  # injected 5xx
    rate_limited: int = 0  # 429


class SlidingWindowLimiter:
    """Refuses past `limit` requests within any `window` seconds; every request counts,
    refused ones included (the vendor's rule)."""

    def __init__(self, limit: int, window: float):
        self.limit = limit
        self.window = window
        self.times: deque[float] = deque()

    def admit(self, now: float) -> float | None:
        """Record a request at `now`; None if allowed, else seconds until one would be."""
        while self.times and self.times[0] <= now - self.window:
            self.times.popleft()
        allowed = len(self.times) < self.limit
        self.times.append(now)
        if allowed:
            return None
        # The next request is allowed once all but limit-1 of those in the window have aged out.
        blocking = self.times[len(self.times) - self.limit]
        return blocking + self.window - now


def check_options(options) -> None:
    """ValueError for options the API cannot honour."""
    if not (options.vendor_grid or options.revise_every > 0):
        raise ValueError(f"revise_every must be > 0 seconds, got {options.revise_every!r}")
    if not 0.0 <= options.error_rate <= 1.0:
        raise ValueError(f"error_rate must be within 0..1, got {options.error_rate!r}")
    if options.latency < 0:
        raise ValueError(f"latency must be >= 0, got {options.latency!r}")
    for limit in (options.rate_limit_per_minute, options.rate_limit_per_hour):
        if limit is not None and limit < 1:
            raise ValueError(f"rate limits must be >= 1 request, got {limit!r}")


class MarketDataServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(self, options, host: str, port: int, log: EventLogger):
        self.options = options
        self.log = log
        self.stats = MarketDataStats()
        self.clock = options.clock or time.time
        self._lock = threading.Lock()
        self._errors = random.Random(f"errors:{options.seed}")
        self._limiters = [
            SlidingWindowLimiter(limit, window)
            for limit, window in (
                (options.rate_limit_per_minute, 60.0),
                (options.rate_limit_per_hour, 3600.0),
            )
            if limit
        ]
        self._open: set[socket.socket] = set()
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), ReferencePriceHandler)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def carry_over(self, previous: MarketDataServer) -> None:
        """Continue the counters, error draws and rate-limit windows of a stopped server."""
        self.stats = previous.stats
        self._errors = previous._errors
        self._limiters = previous._limiters

    def process_request(self, request, client_address):
        with self._lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self._lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """End kept-alive connections too, so a stopped API really refuses."""
        with self._lock:
            sockets = list(self._open)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def admit(self) -> tuple[int | None, float]:
        """Count a request; (status to answer instead, Retry-After) or (None, 0)."""
        with self._lock:
            self.stats.requests += 1
            # The injected clock when there is one: an accelerated benchmark hour is limited
            # per minute and hour of its own clock, as the vendor would limit a real one.
            now = self.clock() if self.options.clock else time.monotonic()
            waits = [wait for limiter in self._limiters if (wait := limiter.admit(now))]
            if waits:
                self.stats.rate_limited += 1
                return 429, max(waits)
            if self.options.error_rate and self._errors.random() < self.options.error_rate:
                self.stats.server_errors += 1
                return self._errors.choice(SERVER_ERRORS), 0.0
            return None, 0.0

    def count(self, status: int) -> None:
        with self._lock:
            if status == 200:
                self.stats.ok += 1
            else:
                self.stats.client_errors += 1

    def reference_price(self, period: Period, newer: bool) -> dict:
        options = self.options
        publication = published_price(
            options.seed, period, self.clock(), options.revise_every, options.vendor_grid
        )
        if newer:
            bounds = (period.delivery_start, period.delivery_end)
            start, end = (bound.isoformat().replace("+00:00", "Z") for bound in bounds)
            answer = {"market": period.market, "delivery_start": start, "delivery_end": end}
        else:
            answer = {"delivery_day": period.local_day.isoformat(), "delivery_hour": period.label}
        return answer | {
            "value": publication.value,
            "unit": publication.unit,
            "last_update": publication.last_update.isoformat(),
        }


class ReferencePriceHandler(BaseHTTPRequestHandler):
    server: MarketDataServer
    protocol_version = "HTTP/1.1"
    server_version = "energy-assets-playground"
    sys_version = ""
    # Headers and body leave in separate writes; without this, Nagle and delayed ACKs
    # would add ~40 ms to every keep-alive answer.
    disable_nagle_algorithm = True
    timeout = IDLE_CONNECTION_TIMEOUT_S

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass

    def do_GET(self):
        server = self.server
        head = self.command == "HEAD"
        read = self.command in ("GET", "HEAD")
        if not read:
            # Its body is never read: don't let it be taken for the next request.
            self.close_connection = True
        refusal, retry_after = server.admit()
        if server.options.latency:
            time.sleep(server.options.latency)
        if refusal == 429:
            self._send(
                429,
                {"error_message": "rate limit exceeded"},
                extra={"Retry-After": str(max(1, math.ceil(retry_after)))},
                head=head,
            )
            return
        if refusal:
            self._send(refusal, {"error_message": HTTPStatus(refusal).phrase}, head=head)
            return
        url = urlsplit(self.path)
        if url.path not in PATHS:
            server.count(404)
            self._send(404, {"error_message": f"no such path {url.path!r}"}, head=head)
            return
        if not read:
            server.count(405)
            self._send(405, {"error_message": "only GET is supported"}, {"Allow": "GET"}, head)
            return
        try:
            period, newer = parse_query(url.query)
        except BadRequest as err:
            server.count(400)
            self._send(400, {"error_message": str(err)}, head=head)
            return
        server.count(200)
        self._send(200, server.reference_price(period, newer), head=head)

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def _send(self, status: int, payload: dict, extra: dict | None = None, head=False) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)
