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
from itertools import groupby

import dagster as dg

from energy_assets.prices.assets import REFERENCE_PRICES_ASSETS
from energy_assets.settings import settings

#: Dagster's tags of a partition-range run, as its own backfills set them.
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
DONE = (dg.AssetPartitionStatus.MATERIALIZED, dg.AssetPartitionStatus.IN_PROGRESS)


def recent_partition_keys(partitions_def, now: datetime, days: int) -> list[str]:
    """Keys of `partitions_def` from midnight UTC `days` days before `now`'s day to the hour
    under way at `now` (its delivery has started: past gate closure, its price final), in
    time order. Later hours are open: the price planner fetches them by value."""
    now = now.astimezone(UTC)
    since = datetime(now.year, now.month, now.day, tzinfo=UTC) - timedelta(days=days)
    key = partitions_def.get_partition_key_for_timestamp
    first, last = key(max(since, partitions_def.start).timestamp()), key(now.timestamp())
    return partitions_def.get_partition_keys_in_range(dg.PartitionKeyRange(first, last))


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
        status = context.instance.get_status_by_partition(asset.key, wanted, partitions_def) or {}
        # One run per range of consecutive keys neither stored nor on their way.
        for done, keys in groupby(wanted, lambda key, status=status: status.get(key) in DONE):
            if not done:
                keys = list(keys)
                tags = {RANGE_START: keys[0], RANGE_END: keys[-1]}
                requests.append(dg.RunRequest(asset_selection=[asset.key], tags=tags))
    if not requests:
        return dg.SkipReason(f"the {wanted_count} recent partitions are stored or on their way")
    return requests
