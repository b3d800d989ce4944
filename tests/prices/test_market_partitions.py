"""Reference-price partitions per market in local time: the keys Dagster shows on DST days."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from energy_assets.markets import MARKETS, Invalid, Period, open_periods
from energy_assets.prices.partitions import (
    market_price_partitions,
    partition_periods,
    period_partition_key,
    start_date_from_env,
)
from energy_assets.prices.plan import grid_slot

LATER = datetime(2027, 1, 1, tzinfo=UTC)


def keys_of_day(code: str, day: str) -> list[str]:
    keys = market_price_partitions(MARKETS[code], "2026-01-01").get_partition_keys(LATER)
    return [key for key in keys if key.startswith(day)]


@pytest.mark.parametrize(
    ("code", "day", "count", "first", "last"),
    [
        ("DE", "2026-03-29", 23, "2026-03-29-00:00+0100", "2026-03-29-23:00+0200"),
        ("DE", "2026-10-25", 25, "2026-10-25-00:00+0200", "2026-10-25-23:00+0100"),
        ("GB", "2026-03-29", 23, "2026-03-29-00:00+0000", "2026-03-29-23:00+0100"),
        ("GB", "2026-10-25", 25, "2026-10-25-00:00+0100", "2026-10-25-23:00+0000"),
        ("DE", "2026-06-15", 24, "2026-06-15-00:00+0200", "2026-06-15-23:00+0200"),
    ],
)
def test_dst_days_have_23_and_25_partitions(code, day, count, first, last):
    keys = keys_of_day(code, day)
    assert (len(keys), keys[0], keys[-1]) == (count, first, last)
    assert len(set(keys)) == count


def test_the_skipped_and_the_repeated_hours():
    spring_de = keys_of_day("DE", "2026-03-29")
    assert spring_de[1:3] == ["2026-03-29-01:00+0100", "2026-03-29-03:00+0200"]
    autumn_de = keys_of_day("DE", "2026-10-25")
    assert autumn_de[2:4] == ["2026-10-25-02:00+0200", "2026-10-25-02:00+0100"]
    spring_gb = keys_of_day("GB", "2026-03-29")
    assert spring_gb[:2] == ["2026-03-29-00:00+0000", "2026-03-29-02:00+0100"]
    autumn_gb = keys_of_day("GB", "2026-10-25")
    assert autumn_gb[1:3] == ["2026-10-25-01:00+0100", "2026-10-25-01:00+0000"]


def test_the_two_berlin_02_03_hours_hold_their_own_periods():
    first = partition_periods(MARKETS["DE"], "2026-10-25-02:00+0200")
    second = partition_periods(MARKETS["DE"], "2026-10-25-02:00+0100")
    utc = datetime(2026, 10, 25, 0, 0, tzinfo=UTC)
    assert first[0] == Period("DE", utc, utc + timedelta(hours=1))  # the hour, 00:00-01:00 UTC
    assert [p.delivery_start for p in first[1:]] == [
        utc + timedelta(minutes=15 * i) for i in range(4)
    ]
    assert second[0] == Period("DE", utc + timedelta(hours=1), utc + timedelta(hours=2))
    assert len(first) == len(second) == 5


def test_gb_hours_hold_two_half_hours():
    periods = partition_periods(MARKETS["GB"], "2026-10-25-01:00+0000")
    utc = datetime(2026, 10, 25, 1, 0, tzinfo=UTC)
    assert periods == [
        Period("GB", utc, utc + timedelta(minutes=30)),
        Period("GB", utc + timedelta(minutes=30), utc + timedelta(hours=1)),
    ]


@pytest.mark.parametrize(
    "key",
    [
        "2026-03-29-02:00+0100",  # Berlin skips 02:00-03:00
        "2026-10-25-02:00+0000",  # an offset Berlin never has
        "2026-10-25-02:15+0100",  # not an hour
        "2026-10-25-02:00",  # no offset
        "",
        "٢٠٢٦-10-25-02:00+0100",
        "9999-12-31-23:00+0100",
    ],
)
def test_keys_that_name_no_local_hour_are_refused(key):
    assert isinstance(partition_periods(MARKETS["DE"], key), Invalid)


@given(st.one_of(st.text(max_size=40), st.integers(), st.none()))
def test_any_key_gives_periods_or_a_reason(key):
    assert isinstance(partition_periods(MARKETS["DE"], key), list | Invalid)


@pytest.mark.parametrize("code", ["DE", "GB"])
def test_every_open_period_has_an_existing_partition_at_every_hour_around_dst(code):
    market = MARKETS[code]
    partitions = market_price_partitions(market, "2026-10-01")
    now = datetime(2026, 10, 23, 22, 30, tzinfo=UTC)
    while now < datetime(2026, 10, 27, tzinfo=UTC):
        keys = set(partitions.get_partition_keys(now))
        for period in open_periods(market, now):
            key = period_partition_key(period)
            assert key in keys, (now, period)
            assert period in partition_periods(market, key)
        now += timedelta(hours=1)


def test_a_dst_day_backfills_as_one_range():
    partitions = market_price_partitions(MARKETS["DE"], "2026-10-01")
    keys = partitions.get_partition_keys_in_range(
        dg.PartitionKeyRange("2026-10-25-00:00+0200", "2026-10-25-23:00+0100")
    )
    assert len(keys) == 25


def test_the_first_partition_is_local_midnight_of_the_configured_day():
    assert start_date_from_env({}) == "2023-01-01"
    assert start_date_from_env({"ENERGY_PRICES_START": "2024-06-01"}) == "2024-06-01"
    assert start_date_from_env({"ENERGY_PRICES_START": "2024-06-01-05:00"}) == "2024-06-01"
    with pytest.raises(ValueError):
        start_date_from_env({"ENERGY_PRICES_START": "June"})
    first = market_price_partitions(MARKETS["GB"], "2024-06-01").get_first_partition_key()
    assert first == "2024-06-01-00:00+0100"


def test_the_vendors_revision_grid_is_ten_minutes():
    slot = datetime(2023, 2, 20, 15, 10, tzinfo=UTC)
    assert grid_slot(datetime(2023, 2, 20, 15, 19, 59, tzinfo=UTC)) == slot
    assert grid_slot(slot) == slot
