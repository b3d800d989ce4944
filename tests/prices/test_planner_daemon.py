"""Start-up through the real `dagster-daemon`: the planner prices the traded open hours within
60 s, inside the vendor's budget (the playground enforces 50 a minute and 1,000 an hour)."""

from __future__ import annotations

import time

import dagster as dg
import pytest

from energy_assets import published
from energy_assets.playground.server import MarketDataOptions
from energy_assets.prices.assets import ASSET_KEY
from energy_assets.trades.buffer import CaptureBuffer
from tests.conftest import stop_process_group
from tests.prices.test_planner import deal, open_keys

# Seconds or more: the real dagster-daemon.
pytestmark = pytest.mark.slow

START_UP_S = 60


def priced(dashboard: str, keys: list[str]) -> set[str]:
    prices = published.read(dashboard, published.PRICES)
    if prices is None:
        return set()
    held = {
        f"{day:%Y-%m-%d}-{hour[:2]}:00"
        for day, hour in prices.select("delivery_day", "delivery_hour").iter_rows()
    }
    return held & set(keys)


def materialised(instance: dg.DagsterInstance, key: str):
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=ASSET_KEY, asset_partitions=[key]), limit=1
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
    hours = open_keys()
    traded = hours[1:40:5]
    buffer = CaptureBuffer(energy_env["ENERGY_CAPTURE_DIR"])
    for n, key in enumerate(traded):
        buffer.append_record(deal(n, f"trader_{n % 3}", key, "buy", 1.0 + n))
    buffer.seal()
    started = time.monotonic()
    daemon = start_daemon()
    dashboard = energy_env["ENERGY_DASHBOARD_DIR"]
    while priced(dashboard, traded) != set(traded) and time.monotonic() - started < 180:
        daemon.assert_running()
        time.sleep(0.5)
    took = time.monotonic() - started
    # The batch reports its materialisations right after it has published.
    instance = dg.DagsterInstance.get()
    while time.monotonic() - started < 180 and not all(
        materialised(instance, key) for key in traded
    ):
        time.sleep(0.5)
    stop_process_group(daemon.process)
    print(f"traded open hours priced {took:.1f} s after the daemon started")
    assert priced(dashboard, traded) == set(traded), daemon.tail()
    assert took <= START_UP_S
    assert playground.rate_limited == 0
    for key in traded:
        assert materialised(instance, key).metadata["why"].value  # and why it was fetched
