"""The planner's sensor and its batch job in a real Dagster instance, against the playground's
Market Data API at the vendor's limits and a real capture buffer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from dagster_duckdb import DuckDBResource

from energy_assets import published
from energy_assets.journals.resources import ArchiveResource
from energy_assets.markets import Period, open_periods
from energy_assets.playground.server import MarketDataOptions
from energy_assets.prices.assets import price_asset_key
from energy_assets.prices.budget import RequestBudget
from energy_assets.prices.client import MarketDataClient
from energy_assets.prices.partitions import period_partition_key
from energy_assets.prices.plan import BudgetLeft, period_key
from energy_assets.prices.refresh import (
    budget_left,
    held_revisions,
    plan_batch,
    reference_prices_planned,
    reference_prices_planner,
)
from energy_assets.settings import Settings
from energy_assets.trades.book import read_book
from energy_assets.trades.buffer import CaptureBuffer
from energy_assets.trades.resources import capture_resource
from energy_assets.warehouse import dashboard_resource

# Seconds: Dagster runs in a real instance.
pytestmark = pytest.mark.slow


def open_for_a_while(market: str = "DE", minutes: int = 60) -> list[Period]:
    """`market`'s periods of `minutes` open now and for at least the test's ten minutes (near
    the market's midnight the next day's periods open: those are not open yet)."""
    now = datetime.now(UTC)
    later = set(open_periods(market, now + timedelta(minutes=10), minutes))
    return [period for period in open_periods(market, now, minutes) if period in later]


def deal(n: int, trader: str, period: Period, direction: str, mw: float) -> dict:
    """A newer confirmation (contract §5): the period's market and instants, and its labels."""
    return {
        "id": f"{n:032x}",
        "price": 50.0,
        "quantity": mw,
        "direction": direction,
        "delivery_day": period.local_day.isoformat(),
        "delivery_hour": period.label,
        "market": period.market,
        "delivery_start": period.delivery_start.isoformat(),
        "delivery_end": period.delivery_end.isoformat(),
        "trader_id": trader,
        "execution_time": datetime.now(UTC).isoformat(),
        "received_at": datetime.now(UTC).isoformat(),
    }


def planned(batch: dict) -> list[tuple]:
    return [
        period_key(Period(m, datetime.fromisoformat(a), datetime.fromisoformat(b)))
        for m, a, b in zip(batch["markets"], batch["starts"], batch["ends"], strict=True)
    ]


def test_a_batch_prices_positions_first_and_explains_itself(
    dagster_home, energy_env, start_playground, tmp_path, monkeypatch
):
    monkeypatch.setenv("ENERGY_MARKET_DATA_BUDGET", str(tmp_path / "budget.sqlite"))
    playground = start_playground(
        market_data=MarketDataOptions(
            vendor_grid=True, rate_limit_per_minute=50, rate_limit_per_hour=1000
        )
    )
    hours = open_for_a_while("DE", 60)
    near, far, flat = hours[1], hours[-1], hours[5]
    # A GB half-hour and a DE quarter-hour with positions too: one plan, one budget.
    half = open_for_a_while("GB", 30)[-2]
    quarter = open_for_a_while("DE", 15)[-3]
    buffer = CaptureBuffer(energy_env["ENERGY_CAPTURE_DIR"])
    for line in [
        deal(1, "ann", far, "buy", 40.0),  # big, a day away
        deal(2, "bob", near, "sell", 3.0),  # small, an hour or two away
        deal(3, "ann", flat, "buy", 2.0),
        deal(4, "ann", flat, "sell", 2.0),  # traded, no open position
        deal(5, "cy", half, "buy", 10.0),
        deal(6, "cy", quarter, "sell", 20.0),
    ]:
        buffer.append_record(line)
    buffer.seal()
    client = MarketDataClient(
        base_url=playground.market_data_url, budget_path=str(tmp_path / "budget.sqlite")
    )
    instance = dg.DagsterInstance.get()

    resources = {
        "market_data": client,
        "capture": capture_resource(Settings.from_env()),
        "dashboard": dashboard_resource(),
    }
    with dg.build_sensor_context(instance=instance, resources=resources) as context:
        request = reference_prices_planner(context)
    planned_at = datetime.now(UTC)
    assert isinstance(request, dg.RunRequest)
    batch = request.run_config["ops"]["fetch_planned_prices"]["config"]
    # The positions first, by open MW x how far behind x urgency (40 MW a day away, 20 and 10
    # MW late tomorrow, 3 MW in two hours: all beyond the half-hour before gate closure, where
    # the nearest would come first), then the traded hour.
    keys = planned(batch)
    assert set(keys[:4]) == {period_key(p) for p in (far, near, half, quarter)}
    assert keys[4] == period_key(flat)
    assert batch["reasons"][keys.index(period_key(near))].startswith("3 MW open, gate closure in")
    assert batch["reasons"][4].startswith("traded, gate closure in")
    assert len(keys) == len(set(keys)) <= 50

    result = reference_prices_planned.execute_in_process(
        run_config=request.run_config,
        instance=instance,
        tags=request.tags,
        resources={
            "warehouse": DuckDBResource(database=energy_env["ENERGY_DUCKDB_PATH"]),
            "archive": ArchiveResource(url=str(tmp_path / "archive"), retention_days=7),
            "market_data": client,
            "dashboard": dashboard_resource(),
        },
    )
    assert result.success
    # Stored, published for the desk and materialised partition by partition, with the reason.
    prices = published.read(energy_env["ENERGY_DASHBOARD_DIR"], published.PRICES)
    assert prices.height == len(keys)
    with duckdb.connect(energy_env["ENERGY_DUCKDB_PATH"], read_only=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        stored = conn.execute(
            "SELECT market, delivery_start, delivery_end, currency FROM energy.reference_prices"
        ).fetchall()
    assert sorted(row[:3] for row in stored) == sorted(keys)
    assert {(row[0], row[3]) for row in stored} == {("DE", "EUR"), ("GB", "GBP")}
    # Each market's local-hour partitions it touched are materialised, naming their periods
    # and why each was fetched.
    for period in (near, half, quarter):
        event = instance.fetch_materializations(
            dg.AssetRecordsFilter(
                asset_key=price_asset_key(period.market),
                asset_partitions=[period_partition_key(period)],
            ),
            limit=1,
        ).records[0]
        assert str(period) in event.asset_materialization.metadata["why"].value
    output = result.get_step_success_events()[-1]
    assert output.step_key == "report_planned_prices"
    assert playground.rate_limited == 0

    # What is held now is not planned again before the next revision is out.
    held = held_revisions(prices)
    book = read_book(energy_env["ENERGY_CAPTURE_DIR"], planned_at)
    again = plan_batch(planned_at, book, held, BudgetLeft(minute=50, hour=1000))
    assert not {period_key(f.period) for f in again} & set(keys)
    now = datetime.now(UTC)
    requests = RequestBudget(Path(tmp_path / "budget.sqlite"))
    budget = budget_left(requests, now, 50, 1000)
    # What is left of the minute, less what a backfill may still take of it.
    bulk_may_add = max(0, requests.bulk_per_minute(now.timestamp()) - len(keys))
    assert budget.minute == 50 - len(keys) - bulk_may_add


def test_an_unreadable_prices_file_is_no_price_held_so_the_sensor_plans_a_fetch(
    dagster_home, energy_env, tmp_path, monkeypatch
):
    # A prices.parquet that is not Parquet (a disk fault): the sensor used to fail on every
    # tick, so no run ever republished the file.
    monkeypatch.setenv("ENERGY_MARKET_DATA_BUDGET", str(tmp_path / "budget.sqlite"))
    dashboard = Path(energy_env["ENERGY_DASHBOARD_DIR"])
    dashboard.mkdir(parents=True, exist_ok=True)
    (dashboard / published.PRICES).write_bytes(b"PAR1 cut off by a disk fault")
    period = open_for_a_while("DE", 60)[2]
    buffer = CaptureBuffer(energy_env["ENERGY_CAPTURE_DIR"])
    buffer.append_record(deal(1, "ann", period, "buy", 5.0))
    buffer.seal()
    resources = {
        "market_data": MarketDataClient(budget_path=str(tmp_path / "budget.sqlite")),
        "capture": capture_resource(Settings.from_env()),
        "dashboard": dashboard_resource(),
    }
    with dg.build_sensor_context(instance=dg.DagsterInstance.get(), resources=resources) as context:
        request = reference_prices_planner(context)
    assert isinstance(request, dg.RunRequest)
    batch = request.run_config["ops"]["fetch_planned_prices"]["config"]
    # The position first, as never fetched; the other open periods fill the batch.
    assert planned(batch)[0] == period_key(period)
    assert batch["reasons"][0].startswith("5 MW open") and "never fetched" in batch["reasons"][0]
