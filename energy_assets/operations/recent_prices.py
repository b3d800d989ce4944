"""`recent_prices_sensor`: the recent reference prices never stored, asked for with no click.

The price planner (`reference_prices_planner`) keeps the *open* hours fresh, by value, and
never fetches an hour past gate closure, so a fresh demo (or one back from a night off) would
show trades without prices for the hours already delivered. At the daemon's start, and hourly
after, this sensor looks at every partition of each market's `reference_prices/<code>` from
`ENERGY_PRICES_BACKFILL_DAYS` (default 2) days before today to the hour under way and asks for
those neither stored nor on their way: one run per contiguous range (the asset's single-run
backfill policy fetches a range in one run).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg

from energy_assets.prices.assets import REFERENCE_PRICES_ASSETS
from energy_assets.settings import settings

#: Dagster's tags of a partition-range run, as its own backfills set them.
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
DONE = (dg.AssetPartitionStatus.MATERIALIZED, dg.AssetPartitionStatus.IN_PROGRESS)


def window_start(now: datetime, days: int) -> datetime:
    """Midnight UTC `days` days before `now`'s day (0 = today)."""
    now = now.astimezone(UTC)
    return datetime(now.year, now.month, now.day, tzinfo=UTC) - timedelta(days=days)


def recent_partition_keys(partitions_def, now: datetime, days: int) -> list[str]:
    """Keys of `partitions_def` from `window_start(now, days)` to the hour under way at `now`
    (its delivery has started: past gate closure, its price final), in time order."""
    keys = partitions_def.get_partition_keys(current_time=now)
    if not keys:
        return []
    # Later hours are open: the price planner fetches them by value, fresh priority; a bulk
    # request of them would spend the budget on periods nobody holds. Keys with a UTC offset
    # do not sort as their times (Berlin's `02:00+0200` comes before `02:00+0100`): by index.
    index = {key: n for n, key in enumerate(keys)}
    under_way = partitions_def.get_partition_key_for_timestamp(now.timestamp())
    last = index.get(under_way, len(keys) - 1)
    wanted = window_start(now, days)
    first = (
        0
        if wanted <= partitions_def.start
        else index.get(partitions_def.get_partition_key_for_timestamp(wanted.timestamp()), 0)
    )
    return keys[first : last + 1]


def ranges(wanted: list[str], missing: set[str]) -> list[tuple[str, str]]:
    """The runs of consecutive keys of `wanted` that are in `missing`, as (first, last)."""
    found: list[tuple[str, str]] = []
    for index, key in enumerate(wanted):
        if key not in missing:
            continue
        if index and wanted[index - 1] in missing:
            found[-1] = (found[-1][0], key)
        else:
            found.append((key, key))
    return found


@dg.sensor(
    name="recent_prices_sensor",
    asset_selection=[asset.key for asset in REFERENCE_PRICES_ASSETS],
    minimum_interval_seconds=3600,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="At the daemon's start and hourly: one run per market and range of recent "
    "reference_prices partitions never stored (ENERGY_PRICES_BACKFILL_DAYS before today to the "
    "hour under way).",
)
def recent_prices_sensor(context: dg.SensorEvaluationContext):
    days = settings().prices_backfill_days
    if days < 0:
        return dg.SkipReason("ENERGY_PRICES_BACKFILL_DAYS is negative: nothing asked for")
    requests, wanted_count = [], 0
    for asset in REFERENCE_PRICES_ASSETS:
        partitions_def = asset.partitions_def
        wanted = recent_partition_keys(partitions_def, datetime.now(UTC), days)
        wanted_count += len(wanted)
        status = context.instance.get_status_by_partition(asset.key, wanted, partitions_def)
        missing = {key for key in wanted if (status or {}).get(key) not in DONE}
        requests += [
            dg.RunRequest(asset_selection=[asset.key], tags={RANGE_START: a, RANGE_END: b})
            for a, b in ranges(wanted, missing)
        ]
    if not requests:
        return dg.SkipReason(f"the {wanted_count} recent partitions are stored or on their way")
    return requests
