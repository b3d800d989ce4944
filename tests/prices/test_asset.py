"""`reference_prices/<market>` in a real Dagster instance against a scripted vendor on loopback:
every period of a market's local hour, by its instants, in the market's currency."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from dagster_duckdb import DuckDBResource

from energy_assets import published
from energy_assets.journals.resources import ArchiveResource
from energy_assets.markets import MARKETS, Period
from energy_assets.operations.recent_prices import RANGE_END, RANGE_START
from energy_assets.prices.assets import PRIORITY_TAG, REFERENCE_PRICES_ASSETS, price_asset_key
from energy_assets.prices.checks import REFERENCE_PRICE_CHECKS
from energy_assets.prices.client import MarketDataClient
from energy_assets.prices.period_prices import PeriodPrice
from energy_assets.prices.store import store_prices
from energy_assets.tables import PRICE_ROW
from energy_assets.warehouse import dashboard_resource
from tests.prices.conftest import Answer, valid_period_price

# Seconds or more: Dagster runs in a real instance.
pytestmark = pytest.mark.slow

DE_PRICES, GB_PRICES = REFERENCE_PRICES_ASSETS
DE_KEY, GB_KEY = price_asset_key("DE"), price_asset_key("GB")
DE_CHECKS, GB_CHECKS = REFERENCE_PRICE_CHECKS
Z = UTC


def archive(db: str) -> ArchiveResource:
    return ArchiveResource(url=str(Path(db).parent / "archive"), retention_days=2557)


def resources(vendor_url: str, db: str, **client) -> dict:
    return {
        "warehouse": DuckDBResource(database=db),
        "archive": archive(db),
        "dashboard": dashboard_resource(),
        "market_data": MarketDataClient(
            base_url=vendor_url, budget_enabled=False, backoff_base_s=0.01, max_retries=1, **client
        ),
    }


def run_range(vendor_url, db, start, end, assets=(DE_PRICES,), raise_on_error=True, **client):
    return dg.materialize(
        list(assets),
        instance=dg.DagsterInstance.get(),
        resources=resources(vendor_url, db, **client),
        tags={RANGE_START: start, RANGE_END: end},
        raise_on_error=raise_on_error,
    )


def rows(db: str, name: str = "reference_prices"):
    with duckdb.connect(db, read_only=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        return conn.execute(
            "SELECT market, delivery_start, delivery_end, value, currency, last_update "
            f"FROM energy.{name} ORDER BY ALL"
        ).fetchall()


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(Z)


def period_rows(market: str, hour: str, minutes: list[int]) -> list[tuple]:
    """The rows the scripted vendor's default answers give for `market`'s periods starting in
    the UTC hour `hour` (`2026-10-25T00:00Z`), one product length per entry of `minutes`."""
    start = at(hour)
    found = []
    for length in minutes:
        for n in range(60 // length):
            first = start + timedelta(minutes=length * n)
            found.append(
                (
                    market,
                    first,
                    first + timedelta(minutes=length),
                    round(first.hour + first.minute / 100 + length / 10000, 4),
                    MARKETS[market].currency,
                    at("2023-02-21T07:10:20+00:00"),
                )
            )
    return found


def test_a_range_is_one_run_with_one_row_per_period(scripted_market_data, dagster_home, tmp_path):
    vendor = scripted_market_data("/v1")
    db = str(tmp_path / "warehouse.duckdb")
    # Berlin's 23:00 and 00:00 around new year: 22:00-24:00 UTC, each hour and its quarters.
    result = run_range(
        vendor.url,
        db,
        "2023-12-31-23:00+0100",
        "2024-01-01-00:00+0100",
        assets=(DE_PRICES, DE_CHECKS),
    )
    assert result.success
    assert rows(db) == sorted(
        period_rows("DE", "2023-12-31T22:00Z", [60, 15])
        + period_rows("DE", "2023-12-31T23:00Z", [60, 15])
    )
    assert len(vendor.requests) == 10
    assert {params["market"] for _, _, params in vendor.requests} == {"DE"}
    instance = dg.DagsterInstance.get()
    assert instance.get_materialized_partitions(DE_KEY) == {
        "2023-12-31-23:00+0100",
        "2024-01-01-00:00+0100",
    }
    materialization = instance.get_latest_materialization_event(DE_KEY).asset_materialization
    assert materialization.metadata["periods_fetched"].value == 10
    assert materialization.metadata["min_value"].value == 22.0015
    assert materialization.metadata["max_value"].value == 23.4515
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {
        "values_finite": True,
        "values_plausible": True,
        "one_currency": True,
        "covers_traded_periods": True,
    }


@pytest.mark.parametrize(
    ("assets", "first", "last", "expected"),
    [
        # Berlin's spring-forward night: 01:00+0100 is followed by 03:00+0200, both UTC hours
        # 00:00 and 01:00 priced, no 02-03 asked.
        (
            "DE",
            "2026-03-29-01:00+0100",
            "2026-03-29-03:00+0200",
            period_rows("DE", "2026-03-29T00:00Z", [60, 15])
            + period_rows("DE", "2026-03-29T01:00Z", [60, 15]),
        ),
        # Berlin's fall-back night: its two 02-03 hours are 00:00 and 01:00 UTC.
        (
            "DE",
            "2026-10-25-02:00+0200",
            "2026-10-25-02:00+0100",
            period_rows("DE", "2026-10-25T00:00Z", [60, 15])
            + period_rows("DE", "2026-10-25T01:00Z", [60, 15]),
        ),
        # London's spring-forward: 00:00+0000 then 02:00+0100 (no 01-02), four half-hours.
        (
            "GB",
            "2026-03-29-00:00+0000",
            "2026-03-29-02:00+0100",
            period_rows("GB", "2026-03-29T00:00Z", [30])
            + period_rows("GB", "2026-03-29T01:00Z", [30]),
        ),
        # London's fall-back: its two 01-02 hours are 00:00 and 01:00 UTC.
        (
            "GB",
            "2026-10-25-01:00+0100",
            "2026-10-25-01:00+0000",
            period_rows("GB", "2026-10-25T00:00Z", [30])
            + period_rows("GB", "2026-10-25T01:00Z", [30]),
        ),
    ],
)
def test_both_dst_nights_in_both_markets(
    assets, first, last, expected, scripted_market_data, dagster_home, tmp_path
):
    vendor = scripted_market_data()
    db = str(tmp_path / "warehouse.duckdb")
    asset = {"DE": DE_PRICES, "GB": GB_PRICES}[assets]
    assert run_range(vendor.url, db, first, last, assets=(asset,)).success
    assert rows(db) == sorted(expected)
    assert dg.DagsterInstance.get().get_materialized_partitions(asset.key) == {first, last}
    # Each period asked once, by its own instants.
    asked = sorted(
        (p["market"], at(p["delivery_start"]), at(p["delivery_end"])) for _, _, p in vendor.requests
    )
    assert asked == sorted(r[:3] for r in expected)


def test_a_newer_revision_updates_the_row_and_keeps_history(
    scripted_market_data, dagster_home, tmp_path
):
    vendor = scripted_market_data()
    db = str(tmp_path / "warehouse.duckdb")
    vendor.default = lambda params: Answer(
        body=valid_period_price(params, 10.0, "2023-02-21T07:00:00+00:00")
    )
    assert run_range(
        vendor.url, db, "2023-02-21-08:00+0000", "2023-02-21-08:00+0000", (GB_PRICES,)
    ).success
    # The same revision again: nothing new in the history.
    assert run_range(
        vendor.url, db, "2023-02-21-08:00+0000", "2023-02-21-08:00+0000", (GB_PRICES,)
    ).success
    vendor.default = lambda params: Answer(
        body=valid_period_price(params, 12.5, "2023-02-21T07:10:20+00:00")
    )
    vendor.by_period[("GB", "2023-02-21T08:00:00Z", "2023-02-21T08:30:00Z")] = [
        Answer(
            body=valid_period_price(
                {
                    "market": "GB",
                    "delivery_start": "2023-02-21T08:00:00Z",
                    "delivery_end": "2023-02-21T08:30:00Z",
                },
                10.0,
                "2023-02-21T07:00:00+00:00",
            )
        )
    ]
    result = run_range(
        vendor.url, db, "2023-02-21-08:00+0000", "2023-02-21-08:00+0000", (GB_PRICES,)
    )
    assert result.success
    first = at("2023-02-21T07:00:00+00:00")
    second = at("2023-02-21T07:10:20+00:00")
    h8, h830, h9 = (at(f"2023-02-21T{t}Z") for t in ("08:00", "08:30", "09:00"))
    assert rows(db) == [
        ("GB", h8, h830, 10.0, "GBP", first),
        ("GB", h830, h9, 12.5, "GBP", second),
    ]
    assert rows(db, "reference_price_revisions") == [
        ("GB", h8, h830, 10.0, "GBP", first),
        ("GB", h830, h9, 10.0, "GBP", first),
        ("GB", h830, h9, 12.5, "GBP", second),
    ]
    materialization = dg.DagsterInstance.get().get_latest_materialization_event(GB_KEY)
    assert materialization.asset_materialization.metadata["revisions_seen"].value == 1


def test_each_run_publishes_every_periods_current_price_for_the_desk(
    scripted_market_data, dagster_home, tmp_path, dashboard_dir
):
    vendor = scripted_market_data()
    db = str(tmp_path / "warehouse.duckdb")
    assert published.read(dashboard_dir, published.PRICES) is None
    vendor.default = lambda params: Answer(
        body=valid_period_price(params, 10.0, "2023-02-21T07:00:00+00:00")
    )
    assert run_range(vendor.url, db, "2023-02-21-09:00+0100", "2023-02-21-09:00+0100").success
    first = published.read(dashboard_dir, published.PRICES)
    assert first.schema == PRICE_ROW
    assert first.select("market", "delivery_start", "delivery_end", "value").rows() == [
        (market, start, end, 10.0) for market, start, end, *_ in rows(db)
    ]

    # A revision, and the other market: the next run's snapshot holds every period of both,
    # with the vendor's last_update and when we fetched it, each in its currency.
    vendor.default = lambda params: Answer(
        body=valid_period_price(params, 12.5, "2023-02-21T07:10:20+00:00")
    )
    before = datetime.now(UTC)
    assert run_range(
        vendor.url, db, "2023-02-21-08:00+0000", "2023-02-21-08:00+0000", (GB_PRICES,)
    ).success
    snapshot = published.read(dashboard_dir, published.PRICES)
    assert (
        snapshot.select("market", "value", "currency").rows()
        == [("DE", 10.0, "EUR")] * 5 + [("GB", 12.5, "GBP")] * 2
    )
    revised = snapshot.row(5, named=True)
    assert revised["last_update"] == datetime(2023, 2, 21, 7, 10, 20, tzinfo=UTC)
    assert revised["fetched_at"] >= before
    # Exactly what DuckDB holds, and nothing half-written beside it.
    assert [tuple(r[:5]) for r in rows(db)] == snapshot.select(
        "market", "delivery_start", "delivery_end", "value", "currency"
    ).rows()
    assert sorted(p.name for p in dashboard_dir.iterdir()) == [published.PRICES]
    materialization = dg.DagsterInstance.get().get_latest_materialization_event(GB_KEY)
    assert materialization.asset_materialization.metadata["periods_published"].value == 7


def _quarter(hour: int, n: int) -> tuple[str, str, str]:
    start = datetime(2023, 3, 1, hour, 15 * n, tzinfo=UTC)
    end = start + timedelta(minutes=15)
    return ("DE", f"{start:%Y-%m-%dT%H:%M:%S}Z", f"{end:%Y-%m-%dT%H:%M:%S}Z")


def test_partial_failure_names_the_failed_hours_and_keeps_the_good_ones(
    scripted_market_data, dagster_home, tmp_path
):
    vendor = scripted_market_data()
    db = str(tmp_path / "warehouse.duckdb")
    # One quarter-hour of 02:00 UTC (03:00 Berlin) and one of 04:00 UTC fail.
    vendor.by_period[_quarter(2, 1)] = [Answer(status=503)] * 2  # max_retries=1: for good
    vendor.by_period[_quarter(4, 3)] = [Answer(body="{broken")]
    result = run_range(
        vendor.url, db, "2023-03-01-01:00+0100", "2023-03-01-06:00+0100", raise_on_error=False
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.step_failure_data.error.message
    assert "2 of 30 periods in 2 reference-price partitions" in message
    assert "2023-03-01-03:00+0100" in message and "2023-03-01-05:00+0100" in message
    assert len(rows(db)) == 28
    instance = dg.DagsterInstance.get()
    keys = [f"2023-03-01-0{hour}:00+0100" for hour in range(1, 7)]
    assert instance.get_materialized_partitions(DE_KEY) == set(keys) - {keys[2], keys[4]}
    status = instance.get_status_by_partition(DE_KEY, keys, DE_PRICES.partitions_def)
    failed = {key for key, state in status.items() if state == dg.AssetPartitionStatus.FAILED}
    assert failed == {"2023-03-01-03:00+0100", "2023-03-01-05:00+0100"}
    # Re-running just the failed hours fills them in.
    assert run_range(vendor.url, db, keys[2], keys[2]).success
    assert run_range(vendor.url, db, keys[4], keys[4]).success
    assert len(rows(db)) == 30


def test_a_fresh_run_spends_fresh_budget(scripted_market_data, dagster_home, tmp_path):
    import sqlite3

    vendor = scripted_market_data()
    db = str(tmp_path / "warehouse.duckdb")
    budget = tmp_path / "budget.sqlite"
    now = datetime.now(UTC)
    keys = GB_PRICES.partitions_def.get_partition_keys(current_time=now)[-3:]
    tags = {RANGE_START: keys[0], RANGE_END: keys[-1], PRIORITY_TAG: "fresh"}
    result = dg.materialize(
        [GB_PRICES],
        instance=dg.DagsterInstance.get(),
        resources={
            "warehouse": DuckDBResource(database=db),
            "archive": archive(db),
            "market_data": MarketDataClient(base_url=vendor.url, budget_path=str(budget)),
            "dashboard": dashboard_resource(),
        },
        tags=tags,
    )
    assert result.success
    assert len(rows(db)) == 6 == len(vendor.requests)
    with sqlite3.connect(budget) as conn:
        assert conn.execute("SELECT priority, count(*) FROM requests GROUP BY 1").fetchall() == [
            ("fresh", 6)
        ]


def test_materialisations_are_recorded_outside_the_duckdb_pool(
    scripted_market_data, dagster_home, tmp_path
):
    # Dagster writes one event per partition (a minute for a year); the trade drains wait for
    # the `duckdb` pool, so the step that holds it must be done by then.
    vendor = scripted_market_data("/v1")
    db = str(tmp_path / "warehouse.duckdb")
    result = run_range(vendor.url, db, "2023-03-01-00:00+0100", "2023-03-01-05:00+0100")
    assert result.success
    steps = {
        event.step_key
        for event in result.all_events
        if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION
    }
    assert steps == {"reference_prices__DE.report_reference_prices"}
    pools = {op.name: op.pool for op in DE_PRICES.node_def.node_defs}
    assert pools == {
        "plan_price_fetch": "duckdb",
        "fetch_reference_prices": None,
        "store_reference_prices": "duckdb",
        "report_reference_prices": None,
    }
    assert len(rows(db)) == 30


def test_hostile_answers_fail_their_period_only_and_the_good_ones_are_stored(
    scripted_market_data, dagster_home, tmp_path
):
    vendor = scripted_market_data()
    db = str(tmp_path / "warehouse.duckdb")

    def half(hour: int) -> tuple[str, str, str]:
        start = datetime(2023, 3, 1, hour, tzinfo=UTC)
        return (
            "GB",
            f"{start:%Y-%m-%dT%H:%M:%S}Z",
            f"{start + timedelta(minutes=30):%Y-%m-%dT%H:%M:%S}Z",
        )

    def body(hour: int, **fields) -> dict:
        market, start, end = half(hour)
        params = {"market": market, "delivery_start": start, "delivery_end": end}
        return valid_period_price(params) | fields

    hostile = {
        1: json.dumps(body(1)).replace(str(body(1)["value"]), "9" * 401),
        2: body(2, last_update="0001-01-01T00:30:00+01:00"),
        3: body(3, last_update="9999-12-31T23:30:00-01:00"),
        4: body(4, last_update="2099-01-01T00:00:00Z"),
        5: body(5, value=1e308),
        6: body(6, unit="USD/MWh"),
    }
    for hour, answer in hostile.items():
        vendor.by_period[half(hour)] = [Answer(body=answer)]
    # And a vendor trickling one byte every 0.2 s, twice (max_retries=1): cut at the deadline.
    vendor.by_period[half(8)] = [Answer(trickle=0.2)] * 2
    result = run_range(
        vendor.url,
        db,
        "2023-03-01-00:00+0000",
        "2023-03-01-09:00+0000",
        assets=(GB_PRICES,),
        raise_on_error=False,
        request_deadline_s=1.0,
    )
    assert not result.success
    assert len(rows(db)) == 20 - 7
    instance = dg.DagsterInstance.get()
    keys = [f"2023-03-01-0{hour}:00+0000" for hour in range(10)]
    status = instance.get_status_by_partition(GB_KEY, keys, GB_PRICES.partitions_def)
    failed = {key for key, state in status.items() if state == dg.AssetPartitionStatus.FAILED}
    assert failed == {f"2023-03-01-0{hour}:00+0000" for hour in (1, 2, 3, 4, 5, 6, 8)}
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    reasons = failure.step_failure_data.user_failure_data.metadata["failure_reasons"].value

    def reason(hour: int) -> str:
        return reasons[str(Period("GB", at(half(hour)[1]), at(half(hour)[2])))]

    assert "not finite" in reason(1)
    assert "last_update" in reason(2)
    assert "last_update" in reason(3)
    assert "in the future" in reason(4)
    assert "outside the market's limits" in reason(5)
    assert "USD/MWh" in reason(6)
    assert "deadline" in reason(8)
    # The next run of those hours, the vendor sane again, stores them.
    assert run_range(
        vendor.url, db, "2023-03-01-01:00+0000", "2023-03-01-08:00+0000", assets=(GB_PRICES,)
    ).success
    assert len(rows(db)) == 20


def test_a_future_dated_row_stored_earlier_does_not_freeze_its_period(
    scripted_market_data, dagster_home, tmp_path
):
    # A row stored before answers were judged: last_update 2099, an hour ago.
    db = str(tmp_path / "warehouse.duckdb")
    start = datetime(2023, 3, 1, 10, tzinfo=UTC)
    frozen = PeriodPrice(
        period=Period("DE", start, start + timedelta(hours=1)),
        value=1e308,
        unit="euro/mwh",
        last_update=datetime(2099, 1, 1, tzinfo=UTC),
        fetched_at=datetime.now(UTC) - timedelta(hours=1),
    )
    with duckdb.connect(db) as conn:
        store_prices(conn, [frozen])
    vendor = scripted_market_data()
    vendor.default = lambda params: Answer(
        body=valid_period_price(params, 42.0, "2023-03-01T09:50:00Z")
    )
    # The check names the implausible row while it is there.
    result = run_range(
        vendor.url,
        db,
        "2023-03-01-12:00+0100",
        "2023-03-01-12:00+0100",
        assets=(DE_PRICES, DE_CHECKS),
    )
    plausible = next(
        e for e in result.get_asset_check_evaluations() if e.check_name == "values_plausible"
    )
    assert not plausible.passed
    assert plausible.metadata["implausible_rows"].value == 1
    assert "2023-03-01T10:00:00+00:00" in plausible.metadata["first_implausible"].value[0]
    assert run_range(vendor.url, db, "2023-03-01-11:00+0100", "2023-03-01-11:00+0100").success
    hour = next(r for r in rows(db) if r[1] == start and r[2] == start + timedelta(hours=1))
    assert hour[3:] == (42.0, "EUR", datetime(2023, 3, 1, 9, 50, tzinfo=UTC))
