"""`MarketDataClient`: the vendor's Market Data API, within its budget, answers judged.

Each request is one attempt under a **total deadline** (`request_deadline_s`: connection,
headers and the whole body; a vendor trickling one byte every few seconds is cut there, not
only between bytes) and a **body cap** (`max_body_bytes`: a longer body is refused without
being read whole; the body is asked for and read unencoded, `Accept-Encoding: identity`, so
that a few kilobytes of gzip cannot unpack into hundreds of megabytes before the cap is
reached). What is transient is retried through tenacity with bounded, jittered
exponential backoff (5xx, timeouts, refused or dropped connections, 429 after its
`Retry-After`, honoured up to the vendor's own window of an hour); what is not fails its period
at once (any other 4xx, an oversized body, an answer `answer.judge_answer` refuses). Every
attempt, retries included, first takes a slot of the shared `RequestBudget`. Each period is
fetched alone: one bad answer fails its period, never the others. A missing or bad price is an
error, never 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
import time
from collections.abc import Coroutine, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import tenacity
from pydantic import PrivateAttr

from energy_assets.prices.answer import PriceRequest, Refused
from energy_assets.prices.budget import BULK, BudgetLimits, RequestBudget
from energy_assets.settings import DEFAULT_MARKET_DATA_URL

PRICE_PATH = "reference-price"
#: The vendor's own window (its hour budget): no `Retry-After` is honoured for longer.
VENDOR_WINDOW_S = 3600.0


class MarketDataError(Exception):
    """A reference price could not be had. The message names the request."""


class MarketDataRequestRefused(MarketDataError):
    """The vendor answered 4xx: our request is wrong, retrying cannot help."""


class InvalidPriceAnswer(MarketDataError):
    """The vendor answered 200 with something that is not a valid price for the period asked
    (an oversized body included)."""


class MarketDataUnavailable(MarketDataError):
    """Transient failures went on past the last retry."""


class _Transient(Exception):
    """One attempt failed in a way a retry can mend; `retry_after` is the vendor's, capped."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.retry_after = retry_after


@dataclass
class FetchReport:
    """What a batch of fetches did: prices by key, errors by key, and the request counts."""

    prices: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, MarketDataError] = field(default_factory=dict)
    requests: int = 0
    retries: int = 0
    budget_wait_s: float = 0.0


def join_url(base_url: str, path: str) -> str:
    """`http://h:1` + `reference-price` -> `http://h:1/reference-price`; keeps a base path
    such as `/v1` (`https://h/v1/` or `https://h/v1` -> `https://h/v1/reference-price`)."""
    return base_url.rstrip("/") + "/" + path.lstrip("/")


def retry_after_s(header: str | None, cap_s: float = VENDOR_WINDOW_S) -> float | None:
    """Seconds to wait from a `Retry-After` header (seconds or an HTTP date), within
    [0, cap_s]; None when absent or unreadable. Never raises."""
    if not header:
        return None
    try:
        seconds = float(header)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(header).timestamp() - time.time()
        except Exception:  # email.utils raises several types on odd dates
            return None
    if seconds != seconds:  # NaN
        return None
    return min(max(0.0, seconds), cap_s)


class MarketDataClient(dg.ConfigurableResource):
    """The vendor's Market Data API (`ENERGY_MARKET_DATA_URL`), budgeted and judged."""

    base_url: str = DEFAULT_MARKET_DATA_URL
    connect_timeout_s: float = 3.05
    #: Longest wait for any one read (between bytes).
    read_timeout_s: float = 10.0
    #: Longest a whole attempt may take: connection, headers and the whole body.
    request_deadline_s: float = 15.0
    #: A longer body is refused without being read whole (an answer is ~150 bytes).
    max_body_bytes: int = 64 * 1024
    #: Retries after the first attempt of a transient failure (so 1 + max_retries requests).
    max_retries: int = 4
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    #: The longest `Retry-After` honoured (the vendor's own window); never persisted longer.
    retry_after_max_s: float = VENDOR_WINDOW_S
    #: Concurrent fetches of one run.
    max_concurrency: int = 16
    #: False lifts the budget (benchmarks against a playground without a rate limit).
    budget_enabled: bool = True
    budget_path: str = "data/market_data_budget.sqlite"
    requests_per_minute: int = 50
    requests_per_hour: int = 1000
    schedule_reserve: int = 47
    budget_margin_s: float = 1.0

    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _budget: RequestBudget | None = PrivateAttr(default=None)
    _tls: ssl.SSLContext | None = PrivateAttr(default=None)

    @property
    def budget(self) -> RequestBudget | None:
        if not self.budget_enabled:
            return None
        with self._lock:
            if self._budget is None:
                self._budget = RequestBudget(
                    Path(self.budget_path),
                    BudgetLimits(
                        per_minute=self.requests_per_minute,
                        per_hour=self.requests_per_hour,
                        reserve=self.schedule_reserve,
                        margin_s=self.budget_margin_s,
                        pause_max_s=self.retry_after_max_s,
                    ),
                )
            return self._budget

    @property
    def tls(self) -> ssl.SSLContext:
        """One TLS context for every fetch: loading the CA bundle is slow (benchmarks/README.md)."""
        with self._lock:
            if self._tls is None:
                self._tls = httpx.create_ssl_context()
            return self._tls

    @property
    def price_url(self) -> str:
        return join_url(self.base_url, PRICE_PATH)

    def fetch_requests(
        self,
        requests: Sequence[PriceRequest],
        priority: str = BULK,
        max_workers: int | None = None,
        report: FetchReport | None = None,
    ) -> FetchReport:
        """Fetch every request concurrently (at most `max_workers`, default `max_concurrency`),
        each judged alone. Failures are collected per key, never raised."""
        report = report if report is not None else FetchReport()
        if requests:
            workers = max(1, min(max_workers or self.max_concurrency, len(requests)))
            _run_interruptibly(self._fetch_all(list(requests), priority, workers, report))
        return report

    async def _fetch_all(
        self, requests: list[PriceRequest], priority: str, workers: int, report: FetchReport
    ) -> None:
        limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers)
        timeout = httpx.Timeout(
            connect=self.connect_timeout_s,
            read=self.read_timeout_s,
            write=self.read_timeout_s,
            pool=self.request_deadline_s,
        )
        gate = asyncio.Semaphore(workers)
        # The budget is SQLite and sleeps while it waits: its own threads, one per worker.
        # An interrupted fetch (Ctrl-C, a run terminated) ends their waits at once, with no
        # slot taken: the pool's exit would otherwise wait until each had its slot.
        stop = threading.Event()
        with ThreadPoolExecutor(workers, thread_name_prefix="market-data-budget") as threads:
            try:
                async with httpx.AsyncClient(
                    limits=limits,
                    timeout=timeout,
                    verify=self.tls,
                    headers={"Accept": "application/json", "Accept-Encoding": "identity"},
                ) as http:

                    async def one(request: PriceRequest) -> None:
                        async with gate:
                            try:
                                price = await self._fetch_one(
                                    http, threads, stop, request, priority, report
                                )
                            except MarketDataError as error:
                                report.errors[request.key] = error
                            # The last resort: one period fails, not all.
                            except Exception as error:
                                report.errors[request.key] = MarketDataError(
                                    f"{request.key}: unexpected {type(error).__name__}: "
                                    f"{str(error)[:200]}"
                                )
                            else:
                                report.prices[request.key] = price

                    await asyncio.gather(*(one(request) for request in requests))
            finally:
                stop.set()

    def _wait(self, state: tenacity.RetryCallState) -> float:
        """The pause before the next attempt: the vendor's `Retry-After` if it gave one
        (already capped at its window), else full-jitter exponential backoff."""
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, _Transient) and error.retry_after is not None:
            return error.retry_after
        backoff = tenacity.wait_random_exponential(
            multiplier=self.backoff_base_s, max=self.backoff_max_s
        )
        return backoff(state)

    async def _fetch_one(
        self,
        http: httpx.AsyncClient,
        threads: ThreadPoolExecutor,
        stop: threading.Event,
        request: PriceRequest,
        priority: str,
        report: FetchReport,
    ):
        query = "&".join(f"{k}={v}" for k, v in request.params.items())
        name = f"GET {self.price_url}?{query}"
        budget = self.budget
        loop = asyncio.get_running_loop()
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self.max_retries + 1),
            retry=tenacity.retry_if_exception_type(_Transient),
            wait=self._wait,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    if budget is not None:
                        report.budget_wait_s += await loop.run_in_executor(
                            threads, budget.acquire, priority, stop
                        )
                    report.requests += 1
                    report.retries += 1 if attempt.retry_state.attempt_number > 1 else 0
                    outcome = await self._attempt(http, request, name)
                    if isinstance(outcome, _Transient) and outcome.retry_after is not None:
                        if budget is not None:  # tell every process sharing the budget
                            until = time.time() + outcome.retry_after
                            await loop.run_in_executor(threads, budget.pause_until, until)
                    if isinstance(outcome, _Transient):
                        raise outcome
                    if isinstance(outcome, MarketDataError):
                        raise outcome
                    return outcome
        except _Transient as error:
            raise MarketDataUnavailable(
                f"{name}: still failing after {self.max_retries + 1} attempts: {error}"
            ) from None

    async def _attempt(self, http: httpx.AsyncClient, request: PriceRequest, name: str):
        """One request under the total deadline: the price, a MarketDataError for what is not
        transient, or a _Transient for what a retry can mend. Never raises."""
        cap = self.max_body_bytes
        try:
            async with asyncio.timeout(self.request_deadline_s):
                async with http.stream("GET", self.price_url, params=request.params) as response:
                    status = response.status_code
                    if status == 429:
                        return _Transient(
                            "429 Too Many Requests",
                            retry_after_s(
                                response.headers.get("Retry-After"), self.retry_after_max_s
                            ),
                        )
                    if status >= 500:
                        return _Transient(f"HTTP {status}")
                    if status != 200:
                        text = (await _read_capped(response, 1024)) or b""
                        return MarketDataRequestRefused(
                            f"{name}: HTTP {status}: {text[:200].decode(errors='replace')!r}"
                        )
                    encoding = response.headers.get("Content-Encoding", "identity")
                    if encoding.strip().lower() not in ("", "identity"):
                        return InvalidPriceAnswer(
                            f"{name}: body encoded as {encoding[:40]!r} refused unread "
                            "(asked for identity)"
                        )
                    declared = response.headers.get("Content-Length", "")
                    if declared.isascii() and declared.isdigit() and int(declared) > cap:
                        return InvalidPriceAnswer(
                            f"{name}: body of {declared} bytes refused unread (cap {cap})"
                        )
                    body = await _read_capped(response, cap)
                    if body is None:
                        return InvalidPriceAnswer(f"{name}: body longer than {cap} bytes refused")
        except TimeoutError:
            return _Transient(f"no whole answer within the {self.request_deadline_s:g} s deadline")
        except httpx.TimeoutException as error:
            return _Transient(f"timed out ({type(error).__name__})")
        except httpx.TransportError as error:
            return _Transient(f"connection failed ({type(error).__name__}: {error})")
        fetched_at = datetime.now(UTC)
        price = request.accept(body, fetched_at)
        if isinstance(price, Refused):
            return InvalidPriceAnswer(f"{name}: {price.reason}")
        return price


async def _read_capped(response: httpx.Response, cap: int) -> bytes | None:
    """The body as sent, or None once it passes `cap` bytes (the rest is never read)."""
    chunks, size = [], 0
    async for chunk in response.aiter_raw():
        size += len(chunk)
        if size > cap:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _run_interruptibly(fetch: Coroutine[Any, Any, None]) -> None:
    """Run `fetch` on an event loop in a thread of its own while this thread waits.

    An interrupt (Ctrl-C, a run terminated: Dagster raises it in the main thread wherever that
    thread is) then lands in this wait and cancels the fetch at its next `await`. Raised inside
    the loop itself, it could land in httpx's or asyncio's bookkeeping (a connection's lock
    held, a socket half-closed) and the loop's clean-up then waited forever, and the code
    server (and the demo's Ctrl-C) waited on that run worker. Works from async code too (a
    loop already running in this thread)."""
    started: Future[asyncio.Task] = Future()
    interrupted = threading.Event()

    async def main() -> None:
        task = asyncio.ensure_future(fetch)
        started.set_result(task)
        if interrupted.is_set():  # the interrupt came while this loop was starting
            task.cancel()
        await task

    with ThreadPoolExecutor(1, thread_name_prefix="market-data") as thread:
        try:
            # Inside the `try`: an interrupt between the submit and the wait would otherwise
            # leave the pool's exit waiting on a fetch nobody cancels (minutes at the budget).
            running = thread.submit(asyncio.run, main())
            # Waits of 0.2 s, not one: a signal that arrives as this thread starts to wait on
            # a lock does not wake it, and its handler (the interrupt) ran only once the
            # whole fetch had ended (docs/prices.md).
            while not wait_for([running], timeout=0.2).done:
                pass
            running.result()
        except BaseException:
            # Each side sets its flag, then reads the other's: the task is cancelled once the
            # loop has it, whichever comes first.
            interrupted.set()
            if started.done():
                task = started.result()
                with contextlib.suppress(RuntimeError):  # the loop has already finished
                    task.get_loop().call_soon_threadsafe(task.cancel)
            raise  # leaving the pool waits for the cancelled fetch to unwind
