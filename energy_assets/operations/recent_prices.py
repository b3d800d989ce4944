"""`recent_prices_sensor`: the recent reference prices never stored, asked for with no click.

The price planner (`reference_prices_planner`) keeps the *open* hours fresh, by value, and
never fetches an hour past gate closure, so a fresh demo (or one back from a night off) would
show trades without prices for the hours already delivered. At the daemon's start, and hourly
after, this sensor looks at every `reference_prices` partition from
`ENERGY_PRICES_BACKFILL_DAYS` (default 2) days before today to the hour under way and asks for
those neither stored nor on their way: one run per contiguous range (the asset's single-run
backfill policy fetches a range in one run).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg

from energy_assets.prices.assets import reference_prices
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
    (its delivery has started: past gate closure, its price final)."""
    keys = partitions_def.get_partition_keys(current_time=now)
    if not keys:
        return []
    # Later hours are open: the price planner fetches them by value, fresh priority; a bulk
    # request of them would spend the budget on periods nobody holds. Hourly keys sort as
    # their times.
    last = min(keys[-1], partitions_def.get_partition_key_for_timestamp(now.timestamp()))
    wanted = window_start(now, days)
    first = (
        keys[0]
        if wanted <= partitions_def.start
        else partitions_def.get_partition_key_for_timestamp(wanted.timestamp())
    )
    return [key for key in keys if first <= key <= last]


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
    asset_selection=[reference_prices.key],
    minimum_interval_seconds=3600,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="At the daemon's start and hourly: one run per range of recent "
    "reference_prices partitions never stored (ENERGY_PRICES_BACKFILL_DAYS before today to the "
    "hour under way).",
)
def recent_prices_sensor(context: dg.SensorEvaluationContext):
    days = settings().prices_backfill_days
    if days < 0:
        return dg.SkipReason("ENERGY_PRICES_BACKFILL_DAYS is negative: nothing asked for")
    partitions_def = reference_prices.partitions_def
    wanted = recent_partition_keys(partitions_def, datetime.now(UTC), days)
    status = context.instance.get_status_by_partition(reference_prices.key, wanted, partitions_def)
    missing = {key for key in wanted if (status or {}).get(key) not in DONE}
    if not missing:
        return dg.SkipReason(f"the {len(wanted)} recent partitions are stored or on their way")
    return [
        dg.RunRequest(asset_selection=[reference_prices.key], tags={RANGE_START: a, RANGE_END: b})
        for a, b in ranges(wanted, missing)
    ]
