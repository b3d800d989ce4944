"""raw_trades_sensor against a real buffer and a real instance: the batch cadence."""

import os
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from energy_assets.settings import Settings
from energy_assets.trades.buffer import CaptureBuffer, Gap
from energy_assets.trades.resources import CaptureBufferResource, capture_resource
from energy_assets.trades.sensors import drain_and_refresh_job, raw_trades_sensor
from tests.trades.conftest import make_deals

# Seconds or more: sensor ticks against a real instance.
pytestmark = pytest.mark.slow


def tick(cursor=None, **cadence):
    """One evaluation; `cadence`: drain_interval_seconds / drain_early_bytes for the resource."""
    capture = capture_resource(Settings.from_env())
    context = dg.build_sensor_context(
        instance=dg.DagsterInstance.get(),
        cursor=cursor,
        resources={"capture": CaptureBufferResource(**{**capture.model_dump(), **cadence})},
    )
    result = raw_trades_sensor(context)
    return result, context.cursor


def add_run(status: dg.DagsterRunStatus, **fields) -> dg.DagsterRun:
    run = dg.DagsterRun(job_name=drain_and_refresh_job.name, status=status, **fields)
    return dg.DagsterInstance.get().add_run(run)


def test_first_segment_drains_at_once_then_at_most_once_per_interval(dagster_home, energy_env):
    result, cursor = tick()
    assert isinstance(result, dg.SkipReason) and cursor is None

    buffer = CaptureBuffer(os.environ["ENERGY_CAPTURE_DIR"], seal_seconds=3600)
    deals = make_deals(3, seed=30)
    buffer.append(deals[0], datetime.now(UTC))
    result, cursor = tick()
    assert isinstance(result, dg.SkipReason), "an open segment is not drainable yet"

    sealed = buffer.seal()
    result, cursor = tick()
    assert isinstance(result, dg.RunRequest), "no drain ran yet: the first one starts at once"
    assert result.run_key == sealed.name and cursor == sealed.name
    add_run(dg.DagsterRunStatus.SUCCESS)

    result, same = tick(cursor)
    assert isinstance(result, dg.SkipReason) and same == cursor

    # New deals a moment after that run: they wait for the interval, the cursor stays ...
    buffer.append(deals[1], datetime.now(UTC))
    newer = buffer.seal()
    result, after = tick(cursor, drain_interval_seconds=3600)
    assert isinstance(result, dg.SkipReason) and "next drain in" in result.skip_message
    assert after == cursor
    # ... unless they are many: then they drain at once ...
    size = newer.stat().st_size
    result, after = tick(cursor, drain_interval_seconds=3600, drain_early_bytes=size)
    assert isinstance(result, dg.RunRequest) and after == newer.name
    # ... and once the interval is over, a few drain too.
    result, after = tick(cursor, drain_interval_seconds=0)
    assert isinstance(result, dg.RunRequest) and after == newer.name

    # A feed gap is drainable work too.
    gap = buffer.record_gap(Gap(datetime.now(UTC), datetime.now(UTC), "connection dropped"))
    result, last = tick(after, drain_interval_seconds=0)
    assert isinstance(result, dg.RunRequest) and last == gap.name


def test_never_two_drains_at_once(dagster_home, energy_env):
    buffer = CaptureBuffer(os.environ["ENERGY_CAPTURE_DIR"])
    buffer.append(make_deals(1, seed=32)[0], datetime.now(UTC))
    buffer.seal()
    instance = dg.DagsterInstance.get()
    for status in (dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTED):
        run = add_run(status)
        # Even when many deals wait: the queued or running drain takes them.
        result, cursor = tick(drain_interval_seconds=0, drain_early_bytes=0)
        assert isinstance(result, dg.SkipReason) and run.run_id in result.skip_message
        assert cursor is None, "the cursor stays, so the next tick asks again"
        instance.report_run_failed(run)
    result, cursor = tick(drain_interval_seconds=0)
    assert isinstance(result, dg.RunRequest)


def test_a_ui_or_cli_run_of_raw_trades_also_counts_as_in_flight(dagster_home, energy_env):
    buffer = CaptureBuffer(os.environ["ENERGY_CAPTURE_DIR"])
    buffer.append(make_deals(1, seed=31)[0], datetime.now(UTC))
    buffer.seal()
    dg.DagsterInstance.get().add_run(
        dg.DagsterRun(
            job_name="__ASSET_JOB",
            status=dg.DagsterRunStatus.STARTED,
            asset_selection=frozenset({dg.AssetKey("raw_trades")}),
        )
    )
    result, cursor = tick()
    assert isinstance(result, dg.SkipReason) and cursor is None


def test_a_listener_that_stops_reporting_gets_one_run(dagster_home, energy_env):
    """Nothing to drain, but the listener's heartbeat is stale (killed, frozen): one run, keyed
    by that heartbeat so the daemon starts it once, makes the feed gap check show the gap."""
    buffer = CaptureBuffer(os.environ["ENERGY_CAPTURE_DIR"])
    fresh = datetime.now(UTC).isoformat()
    buffer.write_state({"heartbeat": fresh, "heard_at": fresh, "connected": True})
    result, _ = tick()
    assert isinstance(result, dg.SkipReason)

    stale = (datetime.now(UTC) - timedelta(seconds=31)).isoformat()
    buffer.write_state({"heartbeat": stale, "heard_at": stale, "connected": True})
    result, cursor = tick()
    assert isinstance(result, dg.RunRequest) and result.run_key == f"listener-silent-{stale}"
    assert cursor is None
    run = add_run(dg.DagsterRunStatus.STARTED)
    result, _ = tick()
    assert isinstance(result, dg.SkipReason), "not while a drain runs"
    dg.DagsterInstance.get().report_run_failed(run)
