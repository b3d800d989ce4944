"""`raw_trades_sensor`: the batch cadence. Every few seconds it looks at the capture buffer and
starts one `drain_and_refresh` run (drain -> `trader_exposure` -> `exposure_dashboard`) when
sealed files wait and the last such run was requested at least `ENERGY_DRAIN_INTERVAL_SECONDS`
ago (default 60 s), or at once when the waiting segments hold `ENERGY_DRAIN_EARLY_BYTES`
(default 1 MiB, ~4,000 deals); never while another run that drains is queued or running. Also
one run when the listener's heartbeat goes stale, so the feed gap check shows it.

Cursor: the name of the newest sealed file (segment or gap) for which a run has been
requested. Names start with their UTC creation stamp, so every file whose name sorts at or
below the cursor was already waiting when a run was requested. A tick costs two directory
listings, a stat per waiting file and two run-storage queries; it never opens DuckDB.
"""

import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from energy_assets.journals.checks import journal_matches_warehouse
from energy_assets.trades.buffer import read_listener_state, sealed_files, silent_heartbeat
from energy_assets.trades.resources import CaptureBufferResource

RAW_TRADES_KEY = dg.AssetKey("raw_trades")
FINISHED = (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)
# Queued and not-started runs too: a drain waiting in the queue must hold the next one back.
NOT_FINISHED = [status for status in dg.DagsterRunStatus if status not in FINISHED]
#: How often the sensor looks; the cadence itself is the resource's `drain_interval_seconds`.
TICK_SECONDS = 5

# One run for the whole chain: the exposure refresh and the published files follow the drain
# in the same process, instead of a second run after the automation sensor's next tick.
# In-process: each step is small next to a process start (benchmarks/README.md, capture).
# The journals' daily integrity check reads a day of checksum files: not with every drain.
drain_and_refresh_job = dg.define_asset_job(
    "drain_and_refresh",
    selection=dg.AssetSelection.assets("raw_trades", "trader_exposure", "exposure_dashboard")
    - dg.AssetSelection.checks(journal_matches_warehouse),
    executor_def=dg.in_process_executor,
    description="Drain the capture buffer into energy.raw_trades, refresh trader_exposure "
    "and publish it for the desk, in one run.",
)


def drain_in_flight(instance: dg.DagsterInstance) -> str | None:
    """The id of a queued or running run that materialises raw_trades, from any source."""
    for record in instance.get_run_records(dg.RunsFilter(statuses=NOT_FINISHED), limit=50):
        run = record.dagster_run
        if run.job_name == drain_and_refresh_job.name or RAW_TRADES_KEY in (
            run.asset_selection or ()
        ):
            return run.run_id
    return None


def last_requested_at(instance: dg.DagsterInstance) -> float | None:
    """When the latest `drain_and_refresh` run was created (epoch seconds), if ever."""
    records = instance.get_run_records(dg.RunsFilter(job_name=drain_and_refresh_job.name), limit=1)
    return records[0].create_timestamp.timestamp() if records else None


def waiting_after(directory: Path, cursor: str | None) -> tuple[str | None, int]:
    """(newest sealed name above `cursor`, bytes of the sealed segments above it)."""
    segments, gaps = sealed_files(directory)
    newer = [path for path in segments + gaps if cursor is None or path.name > cursor]
    if not newer:
        return None, 0
    size = 0
    for path in newer:
        try:
            size += path.stat().st_size
        except FileNotFoundError:  # drained between the listing and the stat
            pass
    return max(path.name for path in newer), size


@dg.sensor(
    name="raw_trades_sensor",
    job=drain_and_refresh_job,
    minimum_interval_seconds=TICK_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests a drain_and_refresh run when sealed capture segments wait: at most "
    "every ENERGY_DRAIN_INTERVAL_SECONDS (60 s), at once when they hold "
    "ENERGY_DRAIN_EARLY_BYTES (1 MiB); never while another raw_trades run is queued or running. "
    "One run when the listener stops reporting, so the feed gap check shows it.",
)
def raw_trades_sensor(context: dg.SensorEvaluationContext, capture: CaptureBufferResource):
    newest, waiting_bytes = waiting_after(capture.path, context.cursor)
    if newest is None:
        silent = silent_heartbeat(read_listener_state(capture.path), datetime.now(UTC))
        if silent is None or drain_in_flight(context.instance):
            return dg.SkipReason("no new sealed segments")
        # A listener that stopped reporting writes nothing: one run per silence (the run key
        # is its last heartbeat) so the feed gap check shows the gap now, not at the next deal.
        return dg.RunRequest(
            run_key=f"listener-silent-{silent}", tags={"energy/listener_silent_since": silent}
        )
    running = drain_in_flight(context.instance)
    if running:
        # The cursor stays put, so the segments are requested again once that run ends.
        return dg.SkipReason(f"drain run {running} still queued or running")
    last = last_requested_at(context.instance)
    due_in = 0.0 if last is None else last + capture.drain_interval_seconds - time.time()
    if due_in > 0 and waiting_bytes < capture.drain_early_bytes:
        return dg.SkipReason(f"{waiting_bytes} bytes wait; next drain in {due_in:.0f} s")
    context.update_cursor(newest)
    return dg.RunRequest(
        run_key=newest,
        tags={"energy/newest_segment": newest, "energy/waiting_bytes": str(waiting_bytes)},
    )
