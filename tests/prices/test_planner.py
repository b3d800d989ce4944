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
from energy_assets.playground.server import MarketDataOptions
from energy_assets.prices.assets import ASSET_KEY
from energy_assets.prices.budget import RequestBudget
from energy_assets.prices.client import MarketDataClient
from energy_assets.prices.partitions import open_hours
from energy_assets.prices.plan import BudgetLeft
from energy_assets.prices.refresh import (
    budget_left,
    held_revisions,
    key_period,
    period_key_of,
    plan_batch,
    reference_prices_planned,
    reference_prices_planner,
)
from energy_assets.trades.book import read_book
from energy_assets.trades.buffer import CaptureBuffer

# Seconds: Dagster runs in a real instance.
pytestmark = pytest.mark.slow


def open_keys() -> list[str]:
    """Partition keys of hours open for at least the test's minutes: their day and label are
    Berlin's, so the first UTC-keyed hours may already be closed."""
    soon = datetime.now(UTC) + timedelta(minutes=10)
    periods = [(key, key_period(key)) for key in open_hours(soon)]
    return [key for key, period in periods if period and period.gate_closure > soon]


def deal(n: int, trader: str, key: str, direction: str, mw: float) -> dict:
    day, hour = key[:10], int(key[11:13])
    return {
        "id": f"{n:032x}",
        "price": 50.0,
        "quantity": mw,
        "direction": direction,
        "delivery_day": day,
        "delivery_hour": f"{hour:02d}-{hour + 1:02d}",
        "trader_id": trader,
        "execution_time": datetime.now(UTC).isoformat(),
        "received_at": datetime.now(UTC).isoformat(),
    }


def test_a_batch_prices_positions_first_and_explains_itself(
    dagster_home, energy_env, start_playground, tmp_path, monkeypatch
):
    monkeypatch.setenv("ENERGY_MARKET_DATA_BUDGET", str(tmp_path / "budget.sqlite"))
    playground = start_playground(
        market_data=MarketDataOptions(
            vendor_grid=True, rate_limit_per_minute=50, rate_limit_per_hour=1000
        )
    )
    hours = open_keys()
    near, far, flat = hours[1], hours[-1], hours[5]
    buffer = CaptureBuffer(energy_env["ENERGY_CAPTURE_DIR"])
    for line in [
        deal(1, "ann", far, "buy", 40.0),  # big, a day away
        deal(2, "bob", near, "sell", 3.0),  # small, an hour or two away
        deal(3, "ann", flat, "buy", 2.0),
        deal(4, "ann", flat, "sell", 2.0),  # traded, no open position
    ]:
        buffer.append_record(line)
    buffer.seal()
    client = MarketDataClient(
        base_url=playground.market_data_url, budget_path=str(tmp_path / "budget.sqlite")
    )
    instance = dg.DagsterInstance.get()

    with dg.build_sensor_context(instance=instance, resources={"market_data": client}) as context:
        request = reference_prices_planner(context)
    planned_at = datetime.now(UTC)
    assert isinstance(request, dg.RunRequest)
    batch = request.run_config["ops"]["fetch_planned_prices"]["config"]
    # The positions first (40 MW a day away, 3 MW in two hours: both beyond the half-hour
    # before gate closure, where the nearest would come first), then the traded hour.
    assert batch["keys"][:3] == [far, near, flat]
    assert batch["reasons"][1].startswith("3 MW open, gate closure in")
    assert batch["reasons"][2].startswith("traded, gate closure in")
    assert len(batch["keys"]) == len(set(batch["keys"])) <= 50

    result = reference_prices_planned.execute_in_process(
        run_config=request.run_config,
        instance=instance,
        tags=request.tags,
        resources={
            "warehouse": DuckDBResource(database=energy_env["ENERGY_DUCKDB_PATH"]),
            "archive": ArchiveResource(url=str(tmp_path / "archive"), retention_days=7),
            "market_data": client,
        },
    )
    assert result.success
    # Stored, published for the desk and materialised partition by partition, with the reason.
    prices = published.read(energy_env["ENERGY_DASHBOARD_DIR"], published.PRICES)
    assert prices.height == len(batch["keys"])
    with duckdb.connect(energy_env["ENERGY_DUCKDB_PATH"], read_only=True) as conn:
        stored = conn.execute("SELECT count(*) FROM energy.reference_prices").fetchone()[0]
    assert stored == len(batch["keys"])
    near_event = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=ASSET_KEY, asset_partitions=[near]), limit=1
    ).records[0]
    why = near_event.asset_materialization.metadata["why"].value
    assert why.startswith("3 MW open")
    output = result.get_step_success_events()[-1]
    assert output.step_key == "report_planned_prices"
    assert playground.rate_limited == 0

    # What is held now is not planned again before the next revision is out.
    held = held_revisions(prices)
    book = read_book(energy_env["ENERGY_CAPTURE_DIR"], planned_at)
    again = plan_batch(planned_at, book, held, BudgetLeft(minute=50, hour=1000))
    assert not {period_key_of(f.period) for f in again} & set(batch["keys"])
    now = datetime.now(UTC)
    budget = budget_left(RequestBudget(Path(tmp_path / "budget.sqlite")), now, 50, 1000)
    assert budget.minute == 50 - len(batch["keys"])
