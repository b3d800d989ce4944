"""The run watcher against a real instance: one line per run event, with the run id, what
triggered it, and for a failure the error."""

from __future__ import annotations

import io
import threading
import time

import dagster as dg
import pytest
from dagster import DagsterInstance

from energy_assets.logs import EventLogger
from energy_assets.operations.runs import RunWatcher, run_partitions, run_trigger

# Seconds or more: Dagster runs in a real instance.
pytestmark = pytest.mark.slow

hourly = dg.HourlyPartitionsDefinition(start_date="2024-01-01-00:00")


@dg.asset(partitions_def=hourly)
def hourly_thing() -> int:
    return 1


release = threading.Event()


@dg.asset
def slow_thing() -> int:
    assert release.wait(30)
    return 1


@dg.asset
def broken_thing() -> int:
    raise ValueError("vendor answered 400 for 2024-01-01 07-08")


def test_each_run_gets_its_lines_once_with_its_id_and_trigger(dagster_home):
    out = io.StringIO()
    with DagsterInstance.get() as instance:
        watcher = RunWatcher(instance, log=EventLogger("runs", out))
        ok = dg.materialize(
            [hourly_thing],
            instance=instance,
            partition_key="2024-01-01-07:00",
            tags={"dagster/sensor_name": "raw_trades_sensor"},
        )
        failed = dg.materialize(
            [broken_thing],
            instance=instance,
            raise_on_error=False,
            tags={"dagster/backfill": "abcdefgh"},
        )
        assert watcher.poll() == 2  # both seen once they had ended: their last state only
        assert watcher.poll() == 0  # nothing new: nothing written twice

        # A run seen while it runs gets a line when it starts and one when it ends.
        runner = threading.Thread(
            target=dg.materialize, args=([slow_thing],), kwargs={"instance": instance}
        )
        runner.start()
        deadline = time.monotonic() + 30
        while "event=run_started" not in out.getvalue() and time.monotonic() < deadline:
            watcher.poll()
            time.sleep(0.1)
        release.set()
        runner.join(30)
        watcher.poll()

    lines = out.getvalue().splitlines()
    succeeded = next(line for line in lines if "event=run_succeeded" in line and ok.run_id in line)
    assert "trigger=sensor:raw_trades_sensor" in succeeded and "duration_s=" in succeeded
    assert "materialized=hourly_thing" in succeeded and "partitions=2024-01-01-07:00" in succeeded
    slow = [line.split()[3] for line in lines if "job=__ephemeral_asset_job__" in line][2:]
    assert slow == ["event=run_started", "event=run_succeeded"], (runner.is_alive(), lines)
    failure = next(line for line in lines if "event=run_failed" in line)
    assert failure.split()[1] == "level=error"
    assert f"run_id={failed.run_id}" in failure and "trigger=backfill:abcdefgh" in failure
    assert "vendor answered 400 for 2024-01-01 07-08" in failure
    assert "materialized=-" in failure and "assets=" not in failure


def test_triggers_and_partitions_come_from_dagsters_tags():
    assert run_trigger({"dagster/schedule_name": "reference_prices_schedule"}) == (
        "schedule:reference_prices_schedule"
    )
    assert (
        run_trigger(
            {
                "dagster/sensor_name": "exposure_automation_sensor",
                "dagster/from_automation_condition": "true",
            }
        )
        == "automation:exposure_automation_sensor"
    )
    assert run_trigger({}) == "manual"
    assert (
        run_partitions(
            {
                "dagster/asset_partition_range_start": "2024-01-01-00:00",
                "dagster/asset_partition_range_end": "2024-01-01-23:00",
            }
        )
        == "2024-01-01-00:00...2024-01-01-23:00"
    )
