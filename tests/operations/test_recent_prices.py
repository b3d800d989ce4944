"""`recent_prices_sensor`: which recent reference-price partitions it asks for, and how."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import pytest

from energy_assets.markets import MARKETS
from energy_assets.operations.recent_prices import (
    RANGE_END,
    RANGE_START,
    recent_partition_keys,
    recent_prices_sensor,
)
from energy_assets.prices.assets import REFERENCE_PRICES_ASSETS
from energy_assets.prices.partitions import market_price_partitions


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


def test_the_window_over_a_fall_back_night_is_in_time_order_not_key_order():
    # Berlin's `02:00+0200` sorts after `02:00+0100` as text but comes first in time.
    partitions = market_price_partitions(MARKETS["DE"], "2026-10-01")
    now = datetime(2026, 10, 25, 23, 30, tzinfo=UTC)  # 00:30 on the 26th in Berlin
    keys = recent_partition_keys(partitions, now, days=0)
    # From midnight UTC (02:00 in Berlin, summer time) to the hour under way.
    assert keys[:3] == ["2026-10-25-02:00+0200", "2026-10-25-02:00+0100", "2026-10-25-03:00+0100"]
    assert keys[-1] == "2026-10-26-00:00+0100"
    assert len(keys) == 24


@pytest.mark.slow
def test_the_sensor_asks_once_per_market_and_range_of_partitions_never_stored(
    dagster_home, monkeypatch
):
    monkeypatch.setenv("ENERGY_PRICES_BACKFILL_DAYS", "1")
    de, gb = REFERENCE_PRICES_ASSETS
    wanted = {
        a.key: recent_partition_keys(a.partitions_def, datetime.now(UTC), 1) for a in (de, gb)
    }
    with dg.DagsterInstance.get() as instance:
        for key in wanted[de.key][5:10]:
            instance.report_runless_asset_event(dg.AssetMaterialization(de.key, partition=key))
        for key in wanted[gb.key]:
            instance.report_runless_asset_event(dg.AssetMaterialization(gb.key, partition=key))
        requests = recent_prices_sensor(dg.build_sensor_context(instance=instance))
        ranges = [(r.tags[RANGE_START], r.tags[RANGE_END]) for r in requests]
        keys = wanted[de.key]
        assert ranges == [(keys[0], keys[4]), (keys[10], keys[-1])]
        assert all(r.asset_selection == [de.key] for r in requests)

        for key in keys:
            instance.report_runless_asset_event(dg.AssetMaterialization(de.key, partition=key))
        skipped = recent_prices_sensor(dg.build_sensor_context(instance=instance))
        assert isinstance(skipped, dg.SkipReason)

    monkeypatch.setenv("ENERGY_PRICES_BACKFILL_DAYS", "-1")
    assert isinstance(recent_prices_sensor(dg.build_sensor_context()), dg.SkipReason)
