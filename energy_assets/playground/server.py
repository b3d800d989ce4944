"""The playground: both stand-in services in one process, for the demo, tests and benchmarks.

    with Playground(exchange=ExchangeOptions(seed=7, rate=0), exchange_port=0,
                    market_data_port=0) as pg:
        ...connect to pg.exchange_url, GET pg.market_data_url + "/reference-price?..."
        pg.wait_for_deals(100)
        assert captured == pg.sent_deals

The exchange runs on an asyncio loop in a background thread, the Market Data API on a
threaded HTTP server beside it. Port 0 picks a free port; the URLs say which.
See docs/playground.md for the stream's semantics and every switch.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime

from energy_assets.logs import EventLogger, event_logger
from energy_assets.playground.exchange import ExchangeServer
from energy_assets.playground.feed import DEFAULT_PRODUCTS
from energy_assets.playground.market_data import MarketDataServer, MarketDataStats, check_options
from energy_assets.settings import DEFAULT_EXCHANGE_PORT, DEFAULT_MARKET_DATA_PORT
from energy_assets.trades.deal import Deal


@dataclass
class ExchangeOptions:
    rate: float = 3.0  # frames per second; 0 = as fast as possible
    traders: int = 5
    seed: int = 0
    duplicate_rate: float = 0.0  # share of deals sent a second time
    malformed_rate: float = 0.0  # share of frames that are malformed (every kind of the contract)
    close_every: int = 0  # clean close after every N frames (0 = never)
    drop_every: int = 0  # abrupt drop (no close frame) after every N frames (0 = never)
    envelope: str = "deal_confirmation"  # "deal_confirmation", "trade_confirmation" or "mixed"
    max_deals: int | None = None  # stop after this many distinct good deals
    # Execution times from a simulated clock starting here (one step of 1/rate per frame),
    # which makes every field of the stream reproducible; None = the wall clock.
    start_time: datetime | None = None
    # (market, minutes) products the deals are drawn from (contract §5); `legacy`: frames of
    # the contract's first revision only (the default market's hours, no market or instants).
    products: tuple[tuple[str, int], ...] = DEFAULT_PRODUCTS
    legacy: bool = False


@dataclass
class MarketDataOptions:
    seed: int = 0
    revise_every: float = 600.0  # seconds between revisions of every open hour
    vendor_grid: bool = False  # revise on the wall-clock 10-minute grid, published 0-30 s late
    error_rate: float = 0.0  # share of answers that are 5xx
    latency: float = 0.0  # seconds added to every answer
    rate_limit_per_minute: int | None = None  # 429 past N requests in any 60 s
    rate_limit_per_hour: int | None = None  # 429 past M requests in any 3,600 s
    clock: Callable[[], float] | None = None  # Unix time the prices are read at; None = now


#: Read through the playground from its exchange (`ExchangeServer`): every distinct good deal
#: written to at least one client, in order (`sent_deals`), frame counts, connections accepted
#: so far and connected now, `finished` (set once `max_deals` distinct deals were sent), and
#: `pause()` (stop the feed between two frames, connections open) and `resume()`.
EXCHANGE_FIGURES = frozenset(
    (
        "sent_deals", "frames_sent", "duplicates_sent", "malformed_sent", "malformed_by_kind",
        "connections", "connected", "clean_closes", "drops", "finished", "pause", "resume",
    )
)  # fmt: skip
MARKET_DATA_FIGURES = frozenset(field.name for field in fields(MarketDataStats))


def _quiet_logger() -> EventLogger:
    log = event_logger("playground")
    log.level = logging.WARNING
    return log


def _connect_host(host: str) -> str:
    """The address a client on this machine dials for a server bound to `host`."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


class Playground:
    """Both stand-ins, served from a background thread: `with Playground(...) as pg:`.

    `stop()` then `start()` again simulates an outage: while stopped, both ports refuse
    connections; restarted, they listen on the same ports and the exchange's stream, the
    counters and the rate-limit windows carry on where they were.
    """

    def __init__(
        self,
        exchange: ExchangeOptions | None = None,
        market_data: MarketDataOptions | None = None,
        host: str = "127.0.0.1",
        exchange_port: int = DEFAULT_EXCHANGE_PORT,
        market_data_port: int = DEFAULT_MARKET_DATA_PORT,
        log: EventLogger | None = None,
    ):
        self.exchange_options = exchange or ExchangeOptions()
        self.market_data_options = market_data or MarketDataOptions()
        self.host = host
        self.log = log or _quiet_logger()
        check_options(self.market_data_options)
        self._exchange = ExchangeServer(self.exchange_options, host, exchange_port, self.log)
        self._market_data: MarketDataServer | None = None
        self._market_data_port = market_data_port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads: list[threading.Thread] = []
        self._started = False

    # -- where it listens ---------------------------------------------------------------
    @property
    def exchange_port(self) -> int:
        return self._exchange.port

    @property
    def market_data_port(self) -> int:
        return self._market_data.port if self._market_data else self._market_data_port

    @property
    def exchange_url(self) -> str:
        return f"ws://{_connect_host(self.host)}:{self.exchange_port}"

    @property
    def market_data_url(self) -> str:
        return f"http://{_connect_host(self.host)}:{self.market_data_port}"

    # -- what the exchange sent and the Market Data API answered -------------------------
    def __getattr__(self, name: str):
        """The exchange's figures and controls (`EXCHANGE_FIGURES`) and the Market Data API's
        counters (`MarketDataStats`), read through the playground: `pg.sent_deals`."""
        if name in EXCHANGE_FIGURES:
            return getattr(self._exchange, name)
        if name in MARKET_DATA_FIGURES:
            return getattr(self.market_data_stats, name)
        raise AttributeError(f"'Playground' object has no attribute {name!r}")

    def wait_for_deals(self, count: int, timeout: float = 10.0) -> list[Deal]:
        """Block until `count` distinct good deals have been sent; the first `count` of them."""
        changed = self._exchange.changed
        with changed:
            if not changed.wait_for(lambda: len(self.sent_deals) >= count, timeout):
                raise TimeoutError(
                    f"{len(self.sent_deals)} of {count} deals sent within {timeout} s"
                )
            return list(self.sent_deals[:count])

    @property
    def market_data_stats(self) -> MarketDataStats:
        """Requests received, 200s, 4xx, injected 5xx and 429s so far (live object)."""
        return self._market_data.stats if self._market_data else MarketDataStats()

    @property
    def requests_served(self) -> int:
        return self.market_data_stats.requests

    # -- life cycle ---------------------------------------------------------------------
    def start(self) -> Playground:
        if self._started:
            return self
        previous = self._market_data
        self._market_data = MarketDataServer(
            self.market_data_options, self.host, self._market_data_port, self.log
        )
        if previous is not None:
            # Started again after stop(): same port, same counters and rate-limit windows.
            self._market_data.carry_over(previous)
        self._market_data_port = self._market_data.port
        http_thread = threading.Thread(
            target=self._market_data.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="playground-market-data",
            daemon=True,
        )
        http_thread.start()
        self._threads.append(http_thread)

        ready = threading.Event()
        failure: list[BaseException] = []
        loop_thread = threading.Thread(
            target=self._run_loop, args=(ready, failure), name="playground-exchange", daemon=True
        )
        loop_thread.start()
        self._threads.append(loop_thread)
        ready.wait()
        if failure:
            self._stop_market_data()
            raise failure[0]
        self._started = True
        self.log.info(
            "playground_started", exchange=self.exchange_url, market_data=self.market_data_url
        )
        return self

    def _run_loop(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._exchange.start())
        except BaseException as err:  # noqa: BLE001 - handed to the starting thread
            failure.append(err)
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._exchange.stop())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def _stop_market_data(self) -> None:
        if self._market_data is not None:
            self._market_data.shutdown()
            self._market_data.close_connections()
            self._market_data.server_close()

    def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._stop_market_data()
        deadline = time.monotonic() + 10
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads.clear()
        self.log.info("playground_stopped")

    def __enter__(self) -> Playground:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
