"""Each market's reference-price partitions, as pure functions.

One partition per LOCAL hour of a market, keyed with its UTC offset (`2026-10-25-02:00+0200`
and `2026-10-25-02:00+0100` are the two 02-03 hours of Berlin's fall-back night), holding
every period of the market that starts in that hour: DE's hour and its four quarter-hours,
GB's two half-hours. A DST day shows 23 or 25 partitions in the UI and a backfill of one
hour is one click. Not one partition per quarter-hour: that is ~35,000 partitions a year
per market (four times 8,760), and the UI's partition bar, the daemon's status cache and the
automation conditions that read partition subsets all grow with the count, for no gain: a
partition is a unit of re-materialisation, not of fetching, which the planner (plan.py)
does per period.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import dagster as dg

from energy_assets.markets import EARLIEST, LATEST, YEARS, Invalid, Market, Period

DEFAULT_START = "2023-01-01"
#: Environment variable that moves the first partition (`YYYY-MM-DD`; an hour key
#: `YYYY-MM-DD-HH:MM` counts from its day).
START_ENV = "ENERGY_PRICES_START"


def start_date_from_env(environ: dict[str, str] | None = None) -> str:
    """The local day of every market's first partition: `ENERGY_PRICES_START` or 2023-01-01."""
    env = os.environ if environ is None else environ
    text = (env.get(START_ENV) or "").strip() or DEFAULT_START
    for fmt in ("%Y-%m-%d-%H:%M", "%Y-%m-%d"):
        try:
            return datetime.strptime(text, fmt).strftime("%Y-%m-%d")
        except ValueError:
            continue
    raise ValueError(f"{START_ENV} must be YYYY-MM-DD or YYYY-MM-DD-HH:MM, got {text!r}")


#: Dagster's hourly format plus the UTC offset, so that both fall-back hours have a key.
LOCAL_KEY_FORMAT = "%Y-%m-%d-%H:%M%z"
#: Partitions past the last complete local hour. At 00:xx local the last complete hour is
#: yesterday 23:00; the end of tomorrow is 48 hours on, 49 when tomorrow has 25 hours.
LOCAL_END_OFFSET = 49


def market_price_partitions(
    market: Market, start: str | None = None
) -> dg.TimeWindowPartitionsDefinition:
    """Hourly partitions of `market`'s reference prices in its local time, from local
    midnight of `ENERGY_PRICES_START`'s day (or `start`, `YYYY-MM-DD...`)."""
    first = datetime.strptime((start or start_date_from_env())[:10], "%Y-%m-%d")
    return dg.TimeWindowPartitionsDefinition(
        cron_schedule="0 * * * *",
        fmt=LOCAL_KEY_FORMAT,
        start=first.replace(tzinfo=market.tz),
        timezone=market.time_zone,
        end_offset=LOCAL_END_OFFSET,
    )


def period_partition_key(period: Period) -> str:
    """The key of the local hour that contains the period's start."""
    local = period.local_start.replace(minute=0, second=0, microsecond=0)
    return local.strftime(LOCAL_KEY_FORMAT)


def partition_periods(market: Market, key: object) -> list[Period] | Invalid:
    """Every period of `market` that starts in the local hour `key` names, each product's in
    time order, longest product first; or why `key` names no hour of the market."""
    if not isinstance(key, str):
        return Invalid(f"a partition key is a string, got {type(key).__name__}")
    try:
        start = datetime.strptime(key, LOCAL_KEY_FORMAT).astimezone(UTC)
    except (ValueError, OverflowError):
        return Invalid(f"not a partition key ({LOCAL_KEY_FORMAT}): {key[:60]!r}")
    if not EARLIEST <= start < LATEST - timedelta(hours=1):
        return Invalid(f"{key!r} is outside {YEARS}")
    local = start.astimezone(market.tz)
    if local.minute or local.strftime(LOCAL_KEY_FORMAT) != key:
        return Invalid(f"{key!r} is not the start of a local hour in {market.time_zone}")
    return [
        Period(
            market.code, start + timedelta(minutes=m * i), start + timedelta(minutes=m * (i + 1))
        )
        for m in market.products_minutes
        if m <= 60
        for i in range(60 // m)
    ]
