"""Partitions of reference prices and the vendor's time grid, as pure functions.

Each market's `reference_prices/<code>` is partitioned by its local hours with the UTC offset
in the key (`market_price_partitions`, below), each partition holding the periods that start
in it. The UTC hourly keys above it (`reference_price_partitions`, `open_hours`, the
`HH-HH` label mapping) are the first revision's calendar: what `benchmarks/prices.py` measures
the budget policy on, no asset's partitions.
"""

from __future__ import annotations

import os
from datetime import UTC, date, datetime, timedelta

import dagster as dg

from energy_assets.delivery import delivery_start, hour_label, parse_hour_label
from energy_assets.markets import EARLIEST, LATEST, Invalid, Market, Period

# The vendor's grid is declared once, with the planner (which the desk imports without Dagster).
from energy_assets.prices.plan import PUBLICATION_DELAY_S

#: Dagster's default format of hourly partition keys.
KEY_FORMAT = "%Y-%m-%d-%H:%M"
DEFAULT_START = "2023-01-01-00:00"
#: Environment variable that moves the first partition (`YYYY-MM-DD` or `YYYY-MM-DD-HH:MM`).
START_ENV = "ENERGY_PRICES_START"
#: Partitions past the last complete hour. At 00:00 UTC the last complete hour is yesterday
#: 23:00, so 48 more reach the end of tomorrow at every moment of the day.
END_OFFSET = 48

#: Run tags that make one run of a partition range (`dg.RunRequest` takes no range; these are
#: the tags Dagster's own single-run backfills carry: dagster-io/dagster discussion #11653).
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def partition_key_to_delivery(key: str) -> tuple[date, str]:
    """`"2023-02-20-15:00"` -> `(date(2023, 2, 20), "15-16")`. The one mapping key -> hour."""
    try:
        start = datetime.strptime(key, KEY_FORMAT)
    except (TypeError, ValueError) as error:
        raise ValueError(f"not an hourly partition key ({KEY_FORMAT}): {key!r}") from error
    if start.minute:
        raise ValueError(f"hourly partition keys start on the hour, got {key!r}")
    return start.date(), hour_label(start.hour)


def delivery_to_partition_key(day: date, delivery_hour: str) -> str:
    """`(date(2023, 2, 20), "15-16")` -> `"2023-02-20-15:00"`. The inverse of the above."""
    return delivery_start(day, parse_hour_label(delivery_hour)).strftime(KEY_FORMAT)


def start_date_from_env(environ: dict[str, str] | None = None) -> str:
    """The first partition key: `ENERGY_PRICES_START` (a day or an hour key) or 2023-01-01."""
    env = os.environ if environ is None else environ
    text = (env.get(START_ENV) or "").strip()
    if not text:
        return DEFAULT_START
    for fmt in (KEY_FORMAT, "%Y-%m-%d"):
        try:
            return datetime.strptime(text, fmt).strftime(KEY_FORMAT)
        except ValueError:
            continue
    raise ValueError(f"{START_ENV} must be YYYY-MM-DD or YYYY-MM-DD-HH:MM, got {text!r}")


def reference_price_partitions(start: str | None = None) -> dg.HourlyPartitionsDefinition:
    return dg.HourlyPartitionsDefinition(
        start_date=start or start_date_from_env(), end_offset=END_OFFSET
    )


def open_hours(now: datetime) -> list[str]:
    """Partition keys of the tradable hours at `now`: the next full hour to the end of tomorrow.

    An hour whose delivery has started is past gate closure: its price is final.
    """
    now = now.astimezone(UTC)
    first = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    end = datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=2)
    hours = int((end - first) / timedelta(hours=1))
    return [(first + timedelta(hours=n)).strftime(KEY_FORMAT) for n in range(hours)]


def published_by(slot: datetime) -> datetime:
    """When every revision of `slot` is out: the grid time plus the worst publication delay."""
    return slot + timedelta(seconds=PUBLICATION_DELAY_S + 1)


# --- Per-market partitions in local time (contract §5) ------------------------------------
#
# One partition per LOCAL hour of a market, keyed with its UTC offset (`2026-10-25-02:00+0200`
# and `2026-10-25-02:00+0100` are the two 02-03 hours of Berlin's fall-back night), holding
# every period of the market that starts in that hour: DE's hour and its four quarter-hours,
# GB's two half-hours. A DST day shows 23 or 25 partitions in the UI and a backfill of one
# hour is one click. Not one partition per quarter-hour: that is ~35,000 partitions a year
# per market (four times today's 8,760), and the UI's partition bar, the daemon's status
# cache and the automation conditions that read partition subsets all grow with the count,
# for no gain: a partition is a unit of re-materialisation, not of fetching, which the
# planner (plan.py) does per period.

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
        return Invalid(f"{key!r} is outside 2000..2099")
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
