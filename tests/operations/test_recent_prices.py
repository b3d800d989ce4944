"""`recent_prices_sensor`: which recent reference-price partitions it asks for, and how."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import pytest

from energy_assets.operations.recent_prices import (
    RANGE_END,
    RANGE_START,
    recent_partition_keys,
    recent_prices_sensor,
)
from energy_assets.prices.assets import reference_prices


def test_recent_partition_window_runs_from_days_ago_to_the_hour_under_way():
    hourly = dg.HourlyPartitionsDefinition(start_date="2023-01-01-00:00", end_offset=48)
    now = datetime(2024, 2, 28, 13, 30, tzinfo=UTC)
    keys = recent_partition_keys(hourly, now, days=2)
    assert keys[0] == "2024-02-26-00:00" and keys[-1] == "2024-02-28-13:00"
    assert len(keys) == 2 * 24 + 14  # the open hours after it are the price planner's
    assert recent_partition_keys(hourly, now, days=0)[0] == "2024-02-28-00:00"
    # A window reaching before the first partition starts at the first partition.
    young = dg.HourlyPartitionsDefinition(start_date="2024-02-28-10:00", end_offset=48)
    assert recent_partition_keys(young, now, days=3)[0] == "2024-02-28-10:00"


@pytest.mark.slow
def test_the_sensor_asks_once_per_range_of_partitions_never_stored(dagster_home, monkeypatch):
    monkeypatch.setenv("ENERGY_PRICES_BACKFILL_DAYS", "1")
    partitions_def = reference_prices.partitions_def
    wanted = recent_partition_keys(partitions_def, datetime.now(UTC), 1)
    stored = wanted[5:10]
    with dg.DagsterInstance.get() as instance:
        for key in stored:
            instance.report_runless_asset_event(
                dg.AssetMaterialization(reference_prices.key, partition=key)
            )
        requests = recent_prices_sensor(dg.build_sensor_context(instance=instance))
        ranges = [(r.tags[RANGE_START], r.tags[RANGE_END]) for r in requests]
        assert ranges == [(wanted[0], wanted[4]), (wanted[10], wanted[-1])]
        assert all(r.asset_selection == [reference_prices.key] for r in requests)

        for key in wanted:
            instance.report_runless_asset_event(
                dg.AssetMaterialization(reference_prices.key, partition=key)
            )
        skipped = recent_prices_sensor(dg.build_sensor_context(instance=instance))
        assert isinstance(skipped, dg.SkipReason)

    monkeypatch.setenv("ENERGY_PRICES_BACKFILL_DAYS", "-1")
    assert isinstance(recent_prices_sensor(dg.build_sensor_context()), dg.SkipReason)
