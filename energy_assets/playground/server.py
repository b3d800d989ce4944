"""The playground: both stand-in services in one process, for the demo, tests and benchmarks.

API CONTRACT (other modules and tests code against this; implementation pending).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ExchangeOptions:
    rate: float = 3.0  # deals per second; 0 = as fast as possible
    traders: int = 5
    seed: int = 0
    duplicate_rate: float = 0.0  # share of deals sent a second time
    malformed_rate: float = 0.0  # share of frames that are malformed (every kind of the contract)
    close_every: int = 0  # clean close after every N frames (0 = never)
    drop_every: int = 0  # abrupt drop (no close frame) after every N frames (0 = never)
    envelope: str = "deal_confirmation"  # "deal_confirmation", "trade_confirmation" or "mixed"
    max_deals: int | None = None  # stop after this many distinct good deals


@dataclass
class MarketDataOptions:
    seed: int = 0
    revise_every: float = 600.0  # seconds between revisions of every open hour
    vendor_grid: bool = False  # revise on the wall-clock 10-minute grid, published 0-30 s late
    error_rate: float = 0.0  # share of answers that are 5xx
    latency: float = 0.0  # seconds added to every answer
    rate_limit_per_minute: int | None = None  # 429 past N requests in any 60 s
    rate_limit_per_hour: int | None = None  # 429 past M requests in any 3,600 s


class Playground:
    """Both stand-ins, served from a background thread: `with Playground(...) as pg:`."""

    def __init__(
        self,
        exchange: ExchangeOptions | None = None,
        market_data: MarketDataOptions | None = None,
        host: str = "127.0.0.1",
        exchange_port: int = 5050,
        market_data_port: int = 5060,
    ):
        raise NotImplementedError

    exchange_url: str  # ws://host:port
    market_data_url: str  # http://host:port
    sent_deals: list  # every distinct good Deal sent to a client, in order

    def start(self) -> Playground: ...
    def stop(self) -> None: ...
    def __enter__(self) -> Playground: ...
    def __exit__(self, *exc) -> None: ...
