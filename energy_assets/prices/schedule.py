"""`reference_prices_schedule`: every open hour's latest revision, soon after it is published.

The vendor revises every open hour on the wall-clock 10-minute grid and publishes each
revision 0–30 s late. The schedule ticks on the grid (`*/10 * * * *`, UTC) and asks for ONE
run covering the open hours (next full hour to the end of tomorrow: 24 to 47 partitions) as a
single-run partition range; the run waits until slot + 31 s, when every revision of the slot
is out, then fetches with `fresh` priority. An hour whose delivery has started is past gate
closure: it is never in the range, so its price is never fetched again.
"""

from __future__ import annotations

import dagster as dg
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from energy_assets.prices.assets import ASSET_KEY, NOT_BEFORE_TAG, PRIORITY_TAG
from energy_assets.prices.budget import FRESH
from energy_assets.prices.partitions import grid_slot, open_hours, published_by

CRON = "*/10 * * * *"


def open_hours_request(scheduled_at) -> dg.RunRequest:
    """The run of one grid slot: the open hours at `scheduled_at`, as one partition range."""
    slot = grid_slot(scheduled_at)
    hours = open_hours(slot)
    return dg.RunRequest(
        run_key=f"reference-prices-{slot.isoformat()}",
        asset_selection=[ASSET_KEY],
        tags={
            ASSET_PARTITION_RANGE_START_TAG: hours[0],
            ASSET_PARTITION_RANGE_END_TAG: hours[-1],
            PRIORITY_TAG: FRESH,
            NOT_BEFORE_TAG: published_by(slot).isoformat(),
        },
    )


@dg.schedule(
    name="reference_prices_schedule",
    cron_schedule=CRON,
    execution_timezone="UTC",
    target=dg.AssetSelection.assets(ASSET_KEY),
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Re-fetches the open hours' reference prices after each 10-minute revision.",
)
def reference_prices_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    return open_hours_request(context.scheduled_execution_time)
