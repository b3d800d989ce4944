"""Issue 25 item 8: once the drain and the refresh have caught up, every live cell equals
`trader_exposure`'s. The same deals (with duplicates) and prices (with a revision) go through
the live desk and through the real `raw_trades` (drain), `trader_exposure` and
`exposure_dashboard` assets in a real instance, prices published by the prices store's
`publish_prices` as the `reference_prices` run does; then every column of every trader ×
period is compared."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest

from energy_assets.desk.live import CONFIRMED, LiveDesk
from energy_assets.exposure.assets import exposure_dashboard, trader_exposure
from energy_assets.exposure.positions import EXPOSURE_COLUMNS, EXPOSURE_SCHEMA, PERIOD_KEY
from energy_assets.journals.resources import archive_resource
from energy_assets.markets import hour_period
from energy_assets.prices.period_prices import PeriodPrice
from energy_assets.prices.store import publish_prices, store_prices
from energy_assets.settings import settings
from energy_assets.trades.assets import raw_trades
from energy_assets.trades.resources import capture_resource
from energy_assets.warehouse import dashboard_resource, warehouse_resource
from tests.desk.conftest import live_positions, write_deals
from tests.trades.conftest import make_deals

# Seconds or more: the desk service beside Dagster runs in a real instance.
pytestmark = pytest.mark.slow

DAYS = [date(2026, 11, 25), date(2026, 11, 26)]  # make_deals' delivery days
HOURLY = dg.HourlyPartitionsDefinition(start_date="2026-11-25-00:00")


@dg.asset(key="reference_prices", group_name="prices", partitions_def=HOURLY)
def reference_prices_stand_in() -> None:
    """Stands for the prices domain's asset: the test stores prices with its store directly."""


def _prices(values: dict[tuple[date, str], float], revised: datetime) -> list[PeriodPrice]:
    """Default-market hours by day and label (Berlin's, as the deals name them)."""
    return [
        PeriodPrice(
            hour_period("DE", day, hour),
            value,
            "euro/mwh",
            revised,
            revised + timedelta(seconds=20),
        )
        for (day, hour), value in values.items()
    ]


def _materialize(instance) -> None:
    current = settings()
    result = dg.materialize(
        [raw_trades, trader_exposure, exposure_dashboard, reference_prices_stand_in],
        selection=[raw_trades.key, trader_exposure.key, exposure_dashboard.key],
        instance=instance,
        resources={
            "warehouse": warehouse_resource(),
            "archive": archive_resource(current),
            "capture": capture_resource(current),
            "dashboard": dashboard_resource(),
        },
    )
    assert result.success


def _compare(live: pl.DataFrame, batch: pl.DataFrame) -> None:
    # Instants as the table declares them (DuckDB hands them over in the session's zone).
    live, batch = (
        f.select(EXPOSURE_COLUMNS).cast(EXPOSURE_SCHEMA).sort(PERIOD_KEY) for f in (live, batch)
    )
    assert live.select(PERIOD_KEY).equals(batch.select(PERIOD_KEY))
    for column in EXPOSURE_COLUMNS:
        for mine, theirs in zip(live[column].to_list(), batch[column].to_list(), strict=True):
            if isinstance(theirs, float):
                # DuckDB sums in SQL, the desk in polars: the same figures to float rounding.
                assert mine == pytest.approx(theirs, rel=1e-9, abs=1e-9), column
            else:
                assert mine == theirs, column


def test_every_live_cell_equals_trader_exposure(dagster_home, energy_env, tmp_path):
    capture = Path(energy_env["ENERGY_CAPTURE_DIR"])
    dashboard = Path(energy_env["ENERGY_DASHBOARD_DIR"])
    database = energy_env["ENERGY_DUCKDB_PATH"]
    rng = random.Random(5)
    deals = make_deals(600, seed=25)
    first, second = deals[:400], deals[400:]
    # Duplicates as the exchange resends them: within a segment, and in later segments.
    write_deals(capture, first[:200] + first[:20])
    write_deals(capture, first[200:] + rng.sample(first[:200], 30))
    hours = sorted({(date.fromisoformat(d.delivery_day), d.delivery_hour) for d in deals})
    priced = {slot: round(rng.uniform(-20, 200), 2) for slot in hours[: len(hours) * 3 // 4]}
    revised = datetime(2026, 11, 25, 12, tzinfo=UTC)
    with duckdb.connect(database) as conn:
        store_prices(conn, _prices(priced, revised))
        publish_prices(conn, dashboard)  # as the reference_prices run does

    desk = LiveDesk(capture, dashboard)
    with dg.DagsterInstance.get() as instance:
        _materialize(instance)
        desk.refresh()
        with duckdb.connect(database, read_only=True) as conn:
            batch = conn.execute("SELECT * FROM energy.trader_exposure").pl()
        _compare(live_positions(desk), batch)

        # More deals (and resends of old ones), a price revision and new prices.
        write_deals(capture, second + rng.sample(first, 40))
        moved = dict(rng.sample(sorted(priced.items()), 10))
        moved = {slot: value + 7.5 for slot, value in moved.items()}
        moved |= {slot: 99.0 for slot in hours[len(hours) * 3 // 4 :][:5]}
        with duckdb.connect(database) as conn:
            store_prices(conn, _prices(moved, revised + timedelta(minutes=10)))
            publish_prices(conn, dashboard)
        desk.refresh()
        # Before the batch layer catches up: the new deals show live.
        assert set(desk.view().rows["status"].to_list()) == {"live", CONFIRMED}

        _materialize(instance)
        desk.refresh()
        with duckdb.connect(database, read_only=True) as conn:
            batch = conn.execute("SELECT * FROM energy.trader_exposure").pl()

    assert batch["trades"].sum() == len({d.id for d in deals})
    assert batch["reference_price"].null_count() > 0  # unpriced periods compared too
    _compare(live_positions(desk), batch)
    rows = desk.view().rows
    assert rows["status"].to_list() == [CONFIRMED] * rows.height
    _compare(rows.select(EXPOSURE_COLUMNS), batch)
