"""raw_trades_sensor against a real buffer and a real instance."""

import os
from datetime import UTC, datetime

import dagster as dg
from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus

from energy_assets.settings import Settings
from energy_assets.trades.buffer import CaptureBuffer, Gap
from energy_assets.trades.resources import capture_resource
from energy_assets.trades.sensors import raw_trades_drain_job, raw_trades_sensor
from energy_assets.trades.settings import capture_settings
from tests.trades.conftest import make_deals


def tick(cursor=None):
    context = dg.build_sensor_context(
        instance=dg.DagsterInstance.get(),
        cursor=cursor,
        resources={"capture": capture_resource(Settings.from_env(), capture_settings())},
    )
    result = raw_trades_sensor(context)
    return result, context.cursor


def test_requests_one_drain_per_new_sealed_segment_and_never_stacks(dagster_home, energy_env):
    result, cursor = tick()
    assert isinstance(result, dg.SkipReason) and cursor is None

    buffer = CaptureBuffer(os.environ["ENERGY_CAPTURE_DIR"], seal_seconds=3600)
    deals = make_deals(3, seed=30)
    buffer.append(deals[0], datetime.now(UTC))
    result, cursor = tick()
    assert isinstance(result, dg.SkipReason), "an open segment is not drainable yet"

    sealed = buffer.seal()
    result, cursor = tick()
    assert isinstance(result, dg.RunRequest)
    assert result.run_key == sealed.name and cursor == sealed.name

    result, same = tick(cursor)
    assert isinstance(result, dg.SkipReason) and same == cursor

    # A drain is running: new segments wait, the cursor stays, and the next tick asks.
    instance = dg.DagsterInstance.get()
    waiting = DagsterRun(job_name=raw_trades_drain_job.name, status=DagsterRunStatus.NOT_STARTED)
    running = DagsterRun(job_name=raw_trades_drain_job.name, status=DagsterRunStatus.STARTED)
    instance.add_run(waiting)
    buffer.append(deals[1], datetime.now(UTC))
    newer = buffer.seal()
    result, after = tick(cursor)
    assert isinstance(result, dg.SkipReason) and waiting.run_id in result.skip_message
    assert after == cursor
    instance.report_run_failed(waiting)
    instance.add_run(running)
    result, after = tick(cursor)
    assert isinstance(result, dg.SkipReason) and running.run_id in result.skip_message
    instance.report_run_failed(running)
    result, after = tick(cursor)
    assert isinstance(result, dg.RunRequest) and after == newer.name

    # A feed gap is drainable work too.
    gap = buffer.record_gap(Gap(datetime.now(UTC), datetime.now(UTC), "connection dropped"))
    result, last = tick(after)
    assert isinstance(result, dg.RunRequest) and last == gap.name


def test_a_ui_or_cli_run_of_raw_trades_also_counts_as_in_flight(dagster_home, energy_env):
    buffer = CaptureBuffer(os.environ["ENERGY_CAPTURE_DIR"])
    buffer.append(make_deals(1, seed=31)[0], datetime.now(UTC))
    buffer.seal()
    instance = dg.DagsterInstance.get()
    instance.add_run(
        DagsterRun(
            job_name="__ASSET_JOB",
            status=DagsterRunStatus.STARTED,
            asset_selection=frozenset({dg.AssetKey("raw_trades")}),
        )
    )
    result, cursor = tick()
    assert isinstance(result, dg.SkipReason) and cursor is None
