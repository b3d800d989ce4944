"""Markets as configuration: one YAML file per market beside this module, read once.

A market is data (code, time zone, currency and unit, products, finest grid, gate-closure
lead, optional vendor URL), so a third market is a third file, not new code. The files are
plain package data rather than Dagster Components: the listener, the live desk and the
playground need the markets without loading any Dagster definitions, and a market defines no
asset of its own (the prices domain builds its partitions from `MARKETS`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

#: The market of every frame and request without a `market` field (contract §5).
DEFAULT_MARKET = "DE"

_CODE = re.compile(r"[A-Z]{2,8}", re.ASCII)
_KEYS = {
    "code",
    "time_zone",
    "currency",
    "unit",
    "products_minutes",
    "grid_minutes",
    "gate_closure_minutes",
    "market_data_url",
}


class MarketConfigError(ValueError):
    """A market file that does not describe a market: the platform must not start with it."""


@dataclass(frozen=True)
class Market:
    """One market, as its YAML file declares it."""

    code: str
    time_zone: str
    currency: str
    unit: str
    #: Product lengths the market trades, in minutes, longest first (DE: 60 and 15).
    products_minutes: tuple[int, ...]
    #: The finest grid, in minutes: every product is a whole number of its steps.
    grid_minutes: int
    #: Trading for a period closes this many minutes before its delivery starts.
    gate_closure_minutes: int
    #: This market's vendor base URL, when not the one `ENERGY_MARKET_DATA_URL`.
    market_data_url: str | None = None

    @cached_property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    def gate_closure(self, delivery_start: datetime) -> datetime:
        """When trading for a period starting at `delivery_start` closes."""
        return delivery_start - timedelta(minutes=self.gate_closure_minutes)


def parse_market(document: Any, source: str = "market file") -> Market:
    """A market file's YAML content -> Market; MarketConfigError says what is wrong."""

    def fail(problem: str) -> MarketConfigError:
        return MarketConfigError(f"{source}: {problem}")

    if not isinstance(document, dict):
        raise fail("must be a mapping of keys to values")
    unknown = set(document) - _KEYS
    if unknown:
        raise fail(f"unknown key(s) {sorted(map(str, unknown))}")
    missing = _KEYS - {"market_data_url"} - set(document)
    if missing:
        raise fail(f"missing key(s) {sorted(missing)}")

    code = document["code"]
    if not isinstance(code, str) or not _CODE.fullmatch(code):
        raise fail(f"code must be 2-8 capital ASCII letters, got {code!r}")
    time_zone = document["time_zone"]
    try:
        ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise fail(f"time_zone must be an IANA zone name, got {time_zone!r}") from None
    for key in ("currency", "unit"):
        if not isinstance(document[key], str) or not document[key]:
            raise fail(f"{key} must be a non-empty string")

    def minutes(value: Any, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 1440:
            raise fail(f"{key} must be whole minutes in 1..1440, got {value!r}")
        return value

    grid = minutes(document["grid_minutes"], "grid_minutes")
    products = document["products_minutes"]
    if not isinstance(products, list) or not products:
        raise fail("products_minutes must be a non-empty list")
    products = tuple(sorted({minutes(p, "products_minutes") for p in products}, reverse=True))
    if any(p % grid for p in products) or grid not in products:
        raise fail(
            f"products {products} must be multiples of the grid {grid}, the grid one of them"
        )
    if 60 % grid and grid % 60:
        raise fail(f"grid_minutes {grid} must divide an hour or be whole hours")
    lead = document["gate_closure_minutes"]
    if isinstance(lead, bool) or not isinstance(lead, int) or not 0 <= lead <= 7 * 1440:
        raise fail(f"gate_closure_minutes must be whole minutes in 0..10080, got {lead!r}")
    url = document.get("market_data_url")
    if url is not None and (not isinstance(url, str) or not re.match(r"https?://", url)):
        raise fail(f"market_data_url must be an http(s) URL, got {url!r}")
    return Market(
        code=code,
        time_zone=time_zone,
        currency=document["currency"],
        unit=document["unit"],
        products_minutes=products,
        grid_minutes=grid,
        gate_closure_minutes=lead,
        market_data_url=url,
    )


def load_markets(directory: Traversable | None = None) -> dict[str, Market]:
    """Every `*.yaml` in `directory` (default: beside this module), by code."""
    directory = resources.files(__package__) if directory is None else directory
    markets: dict[str, Market] = {}
    for entry in sorted(directory.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".yaml"):
            continue
        market = parse_market(yaml.safe_load(entry.read_text(encoding="utf-8")), entry.name)
        if entry.name != f"{market.code}.yaml":
            raise MarketConfigError(f"{entry.name}: declares market {market.code!r}")
        markets[market.code] = market
    if DEFAULT_MARKET not in markets:
        raise MarketConfigError(f"the default market {DEFAULT_MARKET} has no file")
    return markets


#: Every market the platform knows, by code (`MARKETS["DE"]`).
MARKETS: dict[str, Market] = load_markets()
