"""`reference_prices_schedule`: every open hour's latest revision, soon after it is published.

The vendor revises every open hour on the wall-clock 10-minute grid and publishes each
revision 0–30 s late. The schedule ticks one minute BEFORE each grid instant
(`9-59/10 * * * *`, UTC) and asks for ONE run of the open hours at that instant (next full
hour to the end of tomorrow: 24 to 47 partitions) as a single-run partition range. The run
starts and plans while the slot's revisions come out, then fetches at slot + 31 s, when all
of them are out, with `fresh` priority. It runs in one process (in-process executor) so that
no step-process start-up sits between the publication and DuckDB. An hour whose delivery has
started is past gate closure: it is never in the range, so its price is never fetched again.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import dagster as dg

from energy_assets.prices.assets import ASSET_KEY, NOT_BEFORE_TAG, PRIORITY_TAG
from energy_assets.prices.budget import FRESH
from energy_assets.prices.partitions import (
    RANGE_END_TAG,
    RANGE_START_TAG,
    grid_slot,
    open_hours,
    published_by,
)

#: One minute before each grid instant: the run is up and planned when the revisions come out.
CRON = "9-59/10 * * * *"
LEAD = timedelta(minutes=1)

#: The schedule's target: `reference_prices` (and its checks) run in one process.
reference_prices_refresh = dg.define_asset_job(
    "reference_prices_refresh",
    selection=dg.AssetSelection.assets(ASSET_KEY),
    executor_def=dg.in_process_executor,
    description="Re-fetch of the open hours after a revision slot, run by reference_prices_schedule.",
)


def open_hours_request(scheduled_at: datetime) -> dg.RunRequest:
    """The run of the grid slot starting at or just after `scheduled_at` (the tick is one
    minute early): the hours open at that instant, as one partition range."""
    slot = grid_slot(scheduled_at + LEAD)
    hours = open_hours(slot)
    return dg.RunRequest(
        run_key=f"reference-prices-{slot.isoformat()}",
        tags={
            RANGE_START_TAG: hours[0],
            RANGE_END_TAG: hours[-1],
            PRIORITY_TAG: FRESH,
            NOT_BEFORE_TAG: published_by(slot).isoformat(),
        },
    )


@dg.schedule(
    name="reference_prices_schedule",
    cron_schedule=CRON,
    execution_timezone="UTC",
    target=reference_prices_refresh,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Re-fetches the open hours' reference prices after each 10-minute revision.",
)
def reference_prices_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    return open_hours_request(context.scheduled_execution_time)
