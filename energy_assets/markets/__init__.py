"""The markets the desk trades and their delivery periods (contract §5).

`MARKETS` comes from one YAML file per market in this directory; `Period` is a delivery
period in UTC instants; the functions resolve what the wire says into periods, or say why not.
"""

from energy_assets.markets.config import DEFAULT_MARKET, MARKETS, Market, MarketConfigError
from energy_assets.markets.periods import (
    EARLIEST,
    LATEST,
    YEARS,
    Invalid,
    KeyGivenTwice,
    Period,
    day_bounds,
    day_periods,
    delivery_of,
    hour_period,
    market_of,
    one_value_per_key,
    open_periods,
    parse_day,
    parse_hour_label,
    parse_instant,
    period_between,
    show,
)

__all__ = [
    "DEFAULT_MARKET",
    "EARLIEST",
    "LATEST",
    "MARKETS",
    "YEARS",
    "Invalid",
    "KeyGivenTwice",
    "Market",
    "MarketConfigError",
    "Period",
    "day_bounds",
    "day_periods",
    "delivery_of",
    "hour_period",
    "market_of",
    "one_value_per_key",
    "open_periods",
    "parse_day",
    "parse_hour_label",
    "parse_instant",
    "period_between",
    "show",
]
