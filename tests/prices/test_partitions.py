"""The partition key <-> delivery hour mapping and the vendor's grid, without Dagster runs."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from energy_assets.prices.partitions import (
    delivery_to_partition_key,
    open_hours,
    partition_key_to_delivery,
    published_by,
    reference_price_partitions,
    start_date_from_env,
)
from energy_assets.prices.plan import grid_slot


@pytest.mark.parametrize("hour", range(24))
def test_every_hour_of_a_day_maps_both_ways(hour):
    key = f"2023-02-20-{hour:02d}:00"
    label = f"{hour:02d}-{hour + 1:02d}"
    assert partition_key_to_delivery(key) == (date(2023, 2, 20), label)
    assert delivery_to_partition_key(date(2023, 2, 20), label) == key


@pytest.mark.parametrize(
    ("key", "day", "label"),
    [
        ("2023-02-20-15:00", date(2023, 2, 20), "15-16"),  # the example
        ("2023-01-31-23:00", date(2023, 1, 31), "23-24"),  # month end
        ("2023-02-01-00:00", date(2023, 2, 1), "00-01"),
        ("2023-02-28-23:00", date(2023, 2, 28), "23-24"),
        ("2024-02-29-12:00", date(2024, 2, 29), "12-13"),  # leap day
        ("2023-12-31-23:00", date(2023, 12, 31), "23-24"),  # year end
        ("2024-01-01-00:00", date(2024, 1, 1), "00-01"),
        ("2023-03-26-02:00", date(2023, 3, 26), "02-03"),  # a European DST day: UTC has it
    ],
)
def test_month_and_year_ends(key, day, label):
    assert partition_key_to_delivery(key) == (day, label)
    assert delivery_to_partition_key(day, label) == key


def test_the_mapping_agrees_with_dagsters_partition_keys():
    partitions = reference_price_partitions("2023-12-31-00:00")
    keys = partitions.get_partition_keys_in_range(
        __import__("dagster").PartitionKeyRange("2023-12-31-00:00", "2024-01-01-23:00")
    )
    assert len(keys) == 48
    hours = [partition_key_to_delivery(key) for key in keys]
    assert hours[0] == (date(2023, 12, 31), "00-01") and hours[-1] == (date(2024, 1, 1), "23-24")
    assert len(set(hours)) == 48


@pytest.mark.parametrize("bad", ["2023-02-20", "2023-02-20-15:30", "2023-02-20T15:00", "", None])
def test_bad_keys_are_refused(bad):
    with pytest.raises(ValueError):
        partition_key_to_delivery(bad)


def test_partitions_reach_the_end_of_tomorrow_at_any_time_of_day():
    partitions = reference_price_partitions()
    for now in (
        datetime(2026, 11, 25, 0, 0, 1, tzinfo=UTC),
        datetime(2026, 11, 25, 13, 7, tzinfo=UTC),
        datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC),
    ):
        last = partitions.get_partition_keys(current_time=now)[-1]
        end_of_tomorrow = datetime(now.year, now.month, now.day, 23, tzinfo=UTC) + timedelta(days=1)
        assert datetime.strptime(last, "%Y-%m-%d-%H:%M").replace(tzinfo=UTC) >= end_of_tomorrow
    assert partitions.get_first_partition_key() == "2023-01-01-00:00"


def test_start_is_configurable():
    assert start_date_from_env({}) == "2023-01-01-00:00"
    assert start_date_from_env({"ENERGY_PRICES_START": "2024-06-01"}) == "2024-06-01-00:00"
    assert start_date_from_env({"ENERGY_PRICES_START": "2024-06-01-05:00"}) == "2024-06-01-05:00"
    with pytest.raises(ValueError):
        start_date_from_env({"ENERGY_PRICES_START": "June"})


@pytest.mark.parametrize(
    ("now", "first", "count"),
    [
        (datetime(2023, 2, 20, 0, 0, tzinfo=UTC), "2023-02-20-01:00", 47),
        (datetime(2023, 2, 20, 0, 10, 31, tzinfo=UTC), "2023-02-20-01:00", 47),
        (datetime(2023, 2, 20, 15, 0, tzinfo=UTC), "2023-02-20-16:00", 32),
        (datetime(2023, 2, 20, 23, 50, tzinfo=UTC), "2023-02-21-00:00", 24),
        (datetime(2023, 12, 31, 22, 40, tzinfo=UTC), "2023-12-31-23:00", 25),
    ],
)
def test_open_hours_run_from_the_next_full_hour_to_the_end_of_tomorrow(now, first, count):
    hours = open_hours(now)
    assert hours[0] == first and len(hours) == count
    end = datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1, hours=23)
    assert hours[-1] == end.strftime("%Y-%m-%d-%H:%M")


def test_the_grid_slot_and_its_publication_deadline():
    slot = datetime(2023, 2, 20, 15, 10, tzinfo=UTC)
    assert grid_slot(datetime(2023, 2, 20, 15, 19, 59, tzinfo=UTC)) == slot
    assert published_by(slot) == slot + timedelta(seconds=31)
