"""`reference_prices` in a real Dagster instance against a scripted vendor on loopback."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from dagster_duckdb import DuckDBResource

from energy_assets import published
from energy_assets.journals.resources import ArchiveResource
from energy_assets.prices.assets import ASSET_KEY, PARTITIONS, reference_prices
from energy_assets.prices.checks import reference_price_checks
from energy_assets.prices.client import MarketDataClient, ReferencePrice
from energy_assets.prices.partitions import RANGE_END_TAG, RANGE_START_TAG
from energy_assets.prices.store import store_prices
from tests.prices.conftest import Answer, valid_price

# Seconds or more: Dagster runs in a real instance.
pytestmark = pytest.mark.slow


def archive(db: str) -> ArchiveResource:
    return ArchiveResource(url=str(Path(db).parent / "archive"), retention_days=2557)


def resources(vendor_url: str, db: str, **client) -> dict:
    return {
        "warehouse": DuckDBResource(database=db),
        "archive": archive(db),
        "market_data": MarketDataClient(
            base_url=vendor_url, budget_enabled=False, backoff_base_s=0.01, max_retries=1, **client
        ),
    }


def run_range(
    vendor_url, db, start, end, assets=(reference_prices,), raise_on_error=True, **client
):
    return dg.materialize(
        list(assets),
        instance=dg.DagsterInstance.get(),
        resources=resources(vendor_url, db, **client),
        tags={RANGE_START_TAG: start, RANGE_END_TAG: end},
        raise_on_error=raise_on_error,
    )


def rows(db: str, name: str = "reference_prices"):
    with duckdb.connect(db, read_only=True) as conn:
        return conn.execute(
            "SELECT delivery_day, delivery_hour, value, unit, last_update "
            f"FROM energy.{name} ORDER BY ALL"
        ).fetchall()


def test_a_range_is_one_run_with_one_row_per_hour(scripted_market_data, dagster_home, tmp_path):
    vendor = scripted_market_data("/v1")
    db = str(tmp_path / "warehouse.duckdb")
    result = run_range(
        vendor.url,
        db,
        "2023-12-31-22:00",
        "2024-01-01-01:00",
        assets=(reference_prices, reference_price_checks),
    )
    assert result.success
    stored = rows(db)
    assert [(d, h) for d, h, *_ in stored] == [
        (date(2023, 12, 31), "22-23"),
        (date(2023, 12, 31), "23-24"),
        (date(2024, 1, 1), "00-01"),
        (date(2024, 1, 1), "01-02"),
    ]
    assert [v for _, _, v, *_ in stored] == [22.31, 23.31, 0.01, 1.01]
    assert len(vendor.requests) == 4
    instance = dg.DagsterInstance.get()
    assert instance.get_materialized_partitions(ASSET_KEY) == {
        "2023-12-31-22:00",
        "2023-12-31-23:00",
        "2024-01-01-00:00",
        "2024-01-01-01:00",
    }
    materialization = instance.get_latest_materialization_event(ASSET_KEY).asset_materialization
    assert materialization.metadata["partitions_fetched"].value == 4
    assert materialization.metadata["min_value"].value == 0.01
    assert materialization.metadata["max_value"].value == 23.31
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {
        "values_finite": True,
        "values_plausible": True,
        "one_unit": True,
        "covers_traded_hours": True,
    }


def test_a_newer_revision_updates_the_row_and_keeps_history(
    scripted_market_data, dagster_home, tmp_path
):
    vendor = scripted_market_data()
    db = str(tmp_path / "warehouse.duckdb")
    vendor.default = lambda day, hour: Answer(
        body=valid_price(day, hour, 10.0, "2023-02-21T07:00:00+00:00")
    )
    assert run_range(vendor.url, db, "2023-02-21-08:00", "2023-02-21-09:00").success
    # The same revision again: nothing new in the history.
    assert run_range(vendor.url, db, "2023-02-21-08:00", "2023-02-21-09:00").success
    vendor.default = lambda day, hour: Answer(
        body=valid_price(day, hour, 12.5, "2023-02-21T07:10:20+00:00")
    )
    result = run_range(vendor.url, db, "2023-02-21-09:00", "2023-02-21-09:00")
    assert result.success
    first = datetime(2023, 2, 21, 7, tzinfo=UTC)
    second = datetime(2023, 2, 21, 7, 10, 20, tzinfo=UTC)
    assert rows(db) == [
        (date(2023, 2, 21), "08-09", 10.0, "euro/mwh", first),
        (date(2023, 2, 21), "09-10", 12.5, "euro/mwh", second),
    ]
    assert rows(db, "reference_price_revisions") == [
        (date(2023, 2, 21), "08-09", 10.0, "euro/mwh", first),
        (date(2023, 2, 21), "09-10", 10.0, "euro/mwh", first),
        (date(2023, 2, 21), "09-10", 12.5, "euro/mwh", second),
    ]
    materialization = dg.DagsterInstance.get().get_latest_materialization_event(ASSET_KEY)
    assert materialization.asset_materialization.metadata["revisions_seen"].value == 1


def test_each_run_publishes_every_hours_current_price_for_the_desk(
    scripted_market_data, dagster_home, tmp_path, dashboard_dir
):
    vendor = scripted_market_data()
    db = str(tmp_path / "warehouse.duckdb")
    assert published.read(dashboard_dir, published.PRICES) is None
    vendor.default = lambda day, hour: Answer(
        body=valid_price(day, hour, 10.0, "2023-02-21T07:00:00+00:00")
    )
    assert run_range(vendor.url, db, "2023-02-21-08:00", "2023-02-21-09:00").success
    first = published.read(dashboard_dir, published.PRICES)
    assert first.schema == published.PRICE_SCHEMA
    assert first.select("delivery_hour", "reference_price").rows() == [
        ("08-09", 10.0),
        ("09-10", 10.0),
    ]

    # A revision of one hour: the next run's snapshot holds it beside the hour it did not
    # fetch, with the vendor's last_update and when we fetched it.
    vendor.default = lambda day, hour: Answer(
        body=valid_price(day, hour, 12.5, "2023-02-21T07:10:20+00:00")
    )
    before = datetime.now(UTC)
    assert run_range(vendor.url, db, "2023-02-21-09:00", "2023-02-21-09:00").success
    snapshot = published.read(dashboard_dir, published.PRICES)
    assert snapshot.select("delivery_day", "delivery_hour", "reference_price", "unit").rows() == [
        (date(2023, 2, 21), "08-09", 10.0, "euro/mwh"),
        (date(2023, 2, 21), "09-10", 12.5, "euro/mwh"),
    ]
    revised = snapshot.row(1, named=True)
    assert revised["last_update"] == datetime(2023, 2, 21, 7, 10, 20, tzinfo=UTC)
    assert revised["fetched_at"] >= before
    # Exactly what DuckDB holds, and nothing half-written beside it.
    assert [tuple(r[:4]) for r in rows(db)] == snapshot.select(
        "delivery_day", "delivery_hour", "reference_price", "unit"
    ).rows()
    assert sorted(p.name for p in dashboard_dir.iterdir()) == [published.PRICES]
    materialization = dg.DagsterInstance.get().get_latest_materialization_event(ASSET_KEY)
    assert materialization.asset_materialization.metadata["hours_published"].value == 2


def test_partial_failure_names_the_failed_hours_and_keeps_the_good_ones(
    scripted_market_data, dagster_home, tmp_path
):
    vendor = scripted_market_data()
    db = str(tmp_path / "warehouse.duckdb")
    vendor.by_hour[("2023-03-01", "02-03")] = [
        Answer(status=503)
    ] * 2  # max_retries=1: fails for good
    vendor.by_hour[("2023-03-01", "04-05")] = [Answer(body="{broken")]
    result = run_range(vendor.url, db, "2023-03-01-00:00", "2023-03-01-05:00", raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.step_failure_data.error.message
    assert "2 of 6" in message
    assert "2023-03-01-02:00" in message and "2023-03-01-04:00" in message
    assert [(h) for _, h, *_ in rows(db)] == ["00-01", "01-02", "03-04", "05-06"]
    instance = dg.DagsterInstance.get()
    assert instance.get_materialized_partitions(ASSET_KEY) == {
        "2023-03-01-00:00",
        "2023-03-01-01:00",
        "2023-03-01-03:00",
        "2023-03-01-05:00",
    }
    keys = [f"2023-03-01-0{hour}:00" for hour in range(6)]
    status = instance.get_status_by_partition(ASSET_KEY, keys, PARTITIONS)
    failed = {key for key, state in status.items() if state == dg.AssetPartitionStatus.FAILED}
    assert failed == {"2023-03-01-02:00", "2023-03-01-04:00"}
    # Re-running just the failed hours fills them in.
    assert run_range(vendor.url, db, "2023-03-01-02:00", "2023-03-01-02:00").success
    assert run_range(vendor.url, db, "2023-03-01-04:00", "2023-03-01-04:00").success
    assert len(rows(db)) == 6


def test_a_fresh_run_waits_for_publication_and_spends_fresh_budget(
    scripted_market_data, dagster_home, tmp_path
):
    import sqlite3
    import time

    from energy_assets.prices.partitions import open_hours

    vendor = scripted_market_data()
    db = str(tmp_path / "warehouse.duckdb")
    budget = tmp_path / "budget.sqlite"
    hours = open_hours(datetime.now(UTC))
    not_before = time.time() + 1.5
    tags = {
        RANGE_START_TAG: hours[0],
        RANGE_END_TAG: hours[-1],
        "energy/price_priority": "fresh",
        "energy/fetch_not_before": datetime.fromtimestamp(not_before, UTC).isoformat(),
    }
    result = dg.materialize(
        [reference_prices],
        instance=dg.DagsterInstance.get(),
        resources={
            "warehouse": DuckDBResource(database=db),
            "archive": archive(db),
            "market_data": MarketDataClient(base_url=vendor.url, budget_path=str(budget)),
        },
        tags=tags,
    )
    assert result.success
    assert min(ts for ts, *_ in vendor.requests) >= not_before
    hours = len(rows(db))
    assert 24 <= hours <= 47 and hours == len(vendor.requests)
    with sqlite3.connect(budget) as conn:
        assert conn.execute("SELECT priority, count(*) FROM requests GROUP BY 1").fetchall() == [
            ("fresh", hours)
        ]


def test_materialisations_are_recorded_outside_the_duckdb_pool(
    scripted_market_data, dagster_home, tmp_path
):
    # Dagster writes one event per partition (a minute for a year); the trade drains wait for
    # the `duckdb` pool, so the step that holds it must be done by then.
    vendor = scripted_market_data("/v1")
    db = str(tmp_path / "warehouse.duckdb")
    result = run_range(vendor.url, db, "2023-03-01-00:00", "2023-03-01-05:00")
    assert result.success
    steps = {
        event.step_key
        for event in result.all_events
        if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION
    }
    assert steps == {"reference_prices.report_reference_prices"}
    pools = {op.name: op.pool for op in reference_prices.node_def.node_defs}
    assert pools == {
        "plan_price_fetch": "duckdb",
        "fetch_reference_prices": None,
        "store_reference_prices": "duckdb",
        "report_reference_prices": None,
    }
    assert len(rows(db)) == 6


def test_hostile_answers_fail_their_hour_only_and_the_good_hours_are_stored(
    scripted_market_data, dagster_home, tmp_path
):
    vendor = scripted_market_data()
    db = str(tmp_path / "warehouse.duckdb")
    good = valid_price("2023-03-01", "00-01")
    hostile = {
        "01-02": json.dumps(good | {"delivery_hour": "01-02"}).replace(
            str(good["value"]), "9" * 401
        ),
        "02-03": valid_price("2023-03-01", "02-03", last_update="0001-01-01T00:30:00+01:00"),
        "03-04": valid_price("2023-03-01", "03-04", last_update="9999-12-31T23:30:00-01:00"),
        "04-05": valid_price("2023-03-01", "04-05", last_update="2099-01-01T00:00:00Z"),
        "05-06": valid_price("2023-03-01", "05-06", value=1e308),
        "06-07": valid_price("2023-03-01", "06-07") | {"unit": "USD/MWh"},
    }
    for hour, body in hostile.items():
        vendor.by_hour[("2023-03-01", hour)] = [Answer(body=body)]
    # A known other unit is converted, not refused.
    vendor.by_hour[("2023-03-01", "07-08")] = [
        Answer(body=valid_price("2023-03-01", "07-08", value=0.05) | {"unit": "EUR/kWh"})
    ]
    # And a vendor trickling one byte every 0.2 s, twice (max_retries=1): cut at the deadline.
    vendor.by_hour[("2023-03-01", "08-09")] = [Answer(trickle=0.2)] * 2
    result = run_range(
        vendor.url,
        db,
        "2023-03-01-00:00",
        "2023-03-01-09:00",
        raise_on_error=False,
        request_deadline_s=1.0,
    )
    assert not result.success
    stored = {hour: (value, unit) for _, hour, value, unit, _ in rows(db)}
    assert stored == {
        "00-01": (0.01, "euro/mwh"),
        "07-08": (50.0, "euro/mwh"),
        "09-10": (9.01, "euro/mwh"),
    }
    instance = dg.DagsterInstance.get()
    keys = [f"2023-03-01-0{hour}:00" for hour in range(10)]
    status = instance.get_status_by_partition(ASSET_KEY, keys, PARTITIONS)
    failed = {key for key, state in status.items() if state == dg.AssetPartitionStatus.FAILED}
    assert failed == {f"2023-03-01-0{hour}:00" for hour in (1, 2, 3, 4, 5, 6, 8)}
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    reasons = failure.step_failure_data.user_failure_data.metadata["failure_reasons"].value
    assert "not finite" in reasons["2023-03-01-01:00"]
    assert "last_update" in reasons["2023-03-01-02:00"]
    assert "last_update" in reasons["2023-03-01-03:00"]
    assert "in the future" in reasons["2023-03-01-04:00"]
    assert "outside the market's limits" in reasons["2023-03-01-05:00"]
    assert "USD/MWh" in reasons["2023-03-01-06:00"]
    assert "deadline" in reasons["2023-03-01-08:00"]
    # The next run of those hours, the vendor sane again, stores them.
    assert run_range(vendor.url, db, "2023-03-01-01:00", "2023-03-01-08:00").success
    assert len(rows(db)) == 10


def test_a_future_dated_row_stored_earlier_does_not_freeze_its_hour(
    scripted_market_data, dagster_home, tmp_path
):
    # A row stored before answers were judged: last_update 2099, an hour ago.
    db = str(tmp_path / "warehouse.duckdb")
    frozen = ReferencePrice(
        delivery_day=date(2023, 3, 1),
        delivery_hour="10-11",
        value=1e308,
        unit="euro/mwh",
        last_update=datetime(2099, 1, 1, tzinfo=UTC),
        fetched_at=datetime.now(UTC) - timedelta(hours=1),
    )
    with duckdb.connect(db) as conn:
        store_prices(conn, [frozen])
    vendor = scripted_market_data()
    vendor.default = lambda day, hour: Answer(
        body=valid_price(day, hour, 42.0, "2023-03-01T09:50:00Z")
    )
    # The check names the implausible row while it is there.
    result = run_range(
        vendor.url,
        db,
        "2023-03-01-11:00",
        "2023-03-01-11:00",
        assets=(reference_prices, reference_price_checks),
    )
    plausible = next(
        e for e in result.get_asset_check_evaluations() if e.check_name == "values_plausible"
    )
    assert not plausible.passed
    assert plausible.metadata["implausible_rows"].value == 1
    assert "2023-03-01 10-11" in plausible.metadata["first_implausible"].value[0]
    assert run_range(vendor.url, db, "2023-03-01-10:00", "2023-03-01-10:00").success
    ((*_, value, unit, last_update), _) = rows(db)
    assert (value, unit, last_update) == (42.0, "euro/mwh", datetime(2023, 3, 1, 9, 50, tzinfo=UTC))
