"""Start-up through the real `dagster-daemon`: the planner prices the traded open periods of both markets within
60 s, inside the vendor's budget (the playground enforces 50 a minute and 1,000 an hour)."""

from __future__ import annotations

import time

import dagster as dg
import pytest

from energy_assets import published
from energy_assets.markets import Period
from energy_assets.playground.server import MarketDataOptions
from energy_assets.prices.assets import price_asset_key
from energy_assets.prices.partitions import period_partition_key
from energy_assets.prices.plan import period_key
from energy_assets.tables import PRICE_KEY
from energy_assets.trades.buffer import CaptureBuffer
from tests.conftest import stop_process_group
from tests.prices.test_planner import deal, open_for_a_while

# Seconds or more: the real dagster-daemon.
pytestmark = pytest.mark.slow

START_UP_S = 60


def priced(dashboard: str, traded: list[Period]) -> set:
    prices = published.read(dashboard, published.PRICES)
    if prices is None:
        return set()
    return set(prices.select(PRICE_KEY).iter_rows()) & {period_key(p) for p in traded}


def materialised(instance: dg.DagsterInstance, period: Period):
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=price_asset_key(period.market),
            asset_partitions=[period_partition_key(period)],
        ),
        limit=1,
    ).records
    return records[0].asset_materialization if records else None


@pytest.mark.timeout(300)
def test_start_up_prices_the_traded_hours_within_a_minute_without_a_429(
    tmp_path, dagster_home, energy_env, start_playground, monkeypatch, start_daemon
):
    budget = tmp_path / "budget.sqlite"
    playground = start_playground(
        market_data=MarketDataOptions(
            vendor_grid=True, rate_limit_per_minute=50, rate_limit_per_hour=1000
        )
    )
    monkeypatch.setenv("ENERGY_MARKET_DATA_BUDGET", str(budget))
    monkeypatch.setenv("ENERGY_MARKET_DATA_URL", playground.market_data_url)
    # DE hours and quarter-hours, GB half-hours: one budget for all of them.
    traded = (
        open_for_a_while("DE", 60)[1:40:8]
        + open_for_a_while("DE", 15)[4:160:40]
        + open_for_a_while("GB", 30)[2:80:30]
    )
    buffer = CaptureBuffer(energy_env["ENERGY_CAPTURE_DIR"])
    for n, period in enumerate(traded):
        buffer.append_record(deal(n, f"trader_{n % 3}", period, "buy", 1.0 + n))
    buffer.seal()
    started = time.monotonic()
    daemon = start_daemon()
    dashboard = energy_env["ENERGY_DASHBOARD_DIR"]
    while len(priced(dashboard, traded)) < len(traded) and time.monotonic() - started < 180:
        daemon.assert_running()
        time.sleep(0.5)
    took = time.monotonic() - started
    # The batch reports its materialisations right after it has published.
    instance = dg.DagsterInstance.get()
    while time.monotonic() - started < 180 and not all(
        materialised(instance, period) for period in traded
    ):
        time.sleep(0.5)
    stop_process_group(daemon.process)
    print(f"traded open periods priced {took:.1f} s after the daemon started")
    assert len(priced(dashboard, traded)) == len(traded), daemon.tail()
    assert took <= START_UP_S
    assert playground.rate_limited == 0
    for period in traded:
        why = materialised(instance, period).metadata["why"].value
        assert why[str(period)]  # and why it was fetched
