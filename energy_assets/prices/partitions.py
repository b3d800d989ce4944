"""Hourly partitions of `reference_prices` and the vendor's time grid, as pure functions.

Time zone: UTC. A delivery day is a UTC calendar day with 24 labelled hours, `00-01` …
`23-24` (the same convention as the trade feed, see `energy_assets.delivery`). Partition key
`2023-02-20-15:00` (Dagster's default hourly format) is delivery day 2023-02-20, hour `15-16`.
Daylight-saving days of a local market would have 23 or 25 hours; UTC keeps every day at 24,
which is what the contract's labels can express.
"""

from __future__ import annotations

import os
from datetime import UTC, date, datetime, timedelta

import dagster as dg

from energy_assets.delivery import delivery_start, hour_label, parse_hour_label

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

#: The vendor revises every open hour on this wall-clock grid (seconds) ...
REVISION_GRID_S = 600
#: ... and publishes each revision up to this many seconds late.
PUBLICATION_DELAY_S = 30


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


def partition_key_start(key: str) -> datetime:
    """When the hour of `key` starts (UTC): its gate closure in this project."""
    return datetime.strptime(key, KEY_FORMAT).replace(tzinfo=UTC)


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


def grid_slot(moment: datetime) -> datetime:
    """The start of the vendor's 10-minute revision slot that contains `moment`."""
    ts = moment.astimezone(UTC).timestamp()
    return datetime.fromtimestamp(ts - ts % REVISION_GRID_S, tz=UTC)


def published_by(slot: datetime) -> datetime:
    """When every revision of `slot` is out: the grid time plus the worst publication delay."""
    return slot + timedelta(seconds=PUBLICATION_DELAY_S + 1)
