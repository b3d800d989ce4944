"""`raw_trades_sensor`: starts a drain whenever sealed segments wait in the capture buffer.

Cursor: the name of the newest sealed file (segment or gap) for which a drain run has been
requested. Names start with their UTC creation stamp, so every file whose name sorts at or
below the cursor was already waiting when a drain was requested. A tick costs two directory
listings; it never opens DuckDB.
"""

import dagster as dg
from dagster._core.storage.dagster_run import NOT_FINISHED_STATUSES, RunsFilter

from energy_assets.journals.checks import journal_matches_warehouse
from energy_assets.trades.assets import raw_trades
from energy_assets.trades.buffer import newest_sealed_name
from energy_assets.trades.resources import CaptureBufferResource

RAW_TRADES_KEY = dg.AssetKey("raw_trades")

# In-process: the drain is one short step, and a subprocess per step would add seconds of
# Python start-up to every deal's way into DuckDB.
# The journals' daily integrity check reads a day of checksum files: not with every drain.
raw_trades_drain_job = dg.define_asset_job(
    "raw_trades_drain",
    selection=dg.AssetSelection.assets(raw_trades)
    - dg.AssetSelection.checks(journal_matches_warehouse),
    executor_def=dg.in_process_executor,
    description="Drain the capture buffer into energy.raw_trades.",
)


def drain_in_flight(instance: dg.DagsterInstance) -> str | None:
    """The id of a queued or running run that materialises raw_trades, from any source."""
    # NOT_FINISHED, not IN_PROGRESS: the latter leaves out QUEUED and NOT_STARTED runs, and a
    # drain waiting in the queue must hold the next one back too.
    for run in instance.get_runs(RunsFilter(statuses=NOT_FINISHED_STATUSES), limit=50):
        if run.job_name == raw_trades_drain_job.name or RAW_TRADES_KEY in (
            run.asset_selection or ()
        ):
            return run.run_id
    return None


@dg.sensor(
    name="raw_trades_sensor",
    job=raw_trades_drain_job,
    minimum_interval_seconds=2,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests a raw_trades drain when new sealed capture segments wait; "
    "never while another raw_trades run is queued or running.",
)
def raw_trades_sensor(context: dg.SensorEvaluationContext, capture: CaptureBufferResource):
    newest = newest_sealed_name(capture.path)
    if newest is None or (context.cursor and newest <= context.cursor):
        return dg.SkipReason("no new sealed segments")
    running = drain_in_flight(context.instance)
    if running:
        # The cursor stays put, so the segments are requested again once that run ends.
        return dg.SkipReason(f"drain run {running} still queued or running")
    context.update_cursor(newest)
    return dg.RunRequest(run_key=newest, tags={"energy/newest_segment": newest})
