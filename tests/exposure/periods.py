"""Deals and prices of real market periods for the exposure tests, built from local wall-clock
times the way a trader names them, with nothing from the code under test."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import polars as pl

ZONES = {"DE": ZoneInfo("Europe/Berlin"), "GB": ZoneInfo("Europe/London")}
CURRENCIES = {"DE": "EUR", "GB": "GBP"}
GRID = {"DE": 15, "GB": 30}
PRODUCTS = {"DE": (60, 15), "GB": (30,)}
#: The maths' view of the markets (`positions.MARKET_SCHEMA`), written out by hand.
MARKETS = pl.DataFrame(
    {"market": ["DE", "GB"], "currency": ["EUR", "GBP"], "grid_minutes": [15, 30]}
)

UTC_TIME = pl.Datetime("us", "UTC")
TRADE_SCHEMA = {
    "trader_id": pl.String,
    "market": pl.String,
    "delivery_start": UTC_TIME,
    "delivery_end": UTC_TIME,
    "delivery_day": pl.Date,
    "direction": pl.String,
    "quantity": pl.Float64,
    "price": pl.Float64,
}
PRICE_SCHEMA = {
    "market": pl.String,
    "delivery_start": UTC_TIME,
    "delivery_end": UTC_TIME,
    "reference_price": pl.Float64,
}


def utc(text: str) -> datetime:
    """`"2026-10-25T00:00Z"` -> an aware UTC datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def local_day(market: str, start: datetime) -> date:
    return start.astimezone(ZONES[market]).date()


def period(market: str, start: str | datetime, minutes: int) -> tuple[datetime, datetime]:
    begin = utc(start) if isinstance(start, str) else start
    return begin, begin + timedelta(minutes=minutes)


def deal(
    trader: str,
    market: str,
    start: str | datetime,
    minutes: int,
    direction: str,
    quantity: float,
    price: float,
) -> tuple:
    begin, end = period(market, start, minutes)
    return (trader, market, begin, end, local_day(market, begin), direction, quantity, price)


def trades_frame(deals: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(deals, schema=TRADE_SCHEMA, orient="row")


def price(market: str, start: str | datetime, minutes: int, value: float) -> tuple:
    return (market, *period(market, start, minutes), value)


def prices_frame(prices: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(prices, schema=PRICE_SCHEMA, orient="row")
