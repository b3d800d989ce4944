"""Partition ranges through Dagster's own CLI: one run each, exactly the expected rows."""

from __future__ import annotations

import os
import subprocess
import time
from datetime import UTC, datetime, timedelta

import dagster as dg
import duckdb
import pytest

from energy_assets.markets import Period
from energy_assets.playground.pricing import published_price
from energy_assets.playground.server import MarketDataOptions
from energy_assets.prices.assets import price_asset_key
from tests.conftest import REPO

# Seconds or more: `dagster asset materialize` as a process.
pytestmark = pytest.mark.slow


def materialize(env: dict, asset: str, partition_range: str) -> None:
    result = subprocess.run(
        [
            str(REPO / ".venv/bin/dagster"),
            "asset",
            "materialize",
            "-m",
            "energy_assets.definitions",
            "--select",
            asset,
            "--partition-range",
            partition_range,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_partition_ranges_through_the_cli_store_quarter_hours_and_half_hours(
    start_playground, dagster_home, energy_env
):
    # The real vendor stand-in answers the newer form: Berlin's two 02-03 hours of its
    # fall-back night (the hour and four quarter-hours each), London's two 01-02 hours.
    playground = start_playground(market_data=MarketDataOptions(seed=11))
    env = {
        **os.environ,
        **energy_env,
        "DAGSTER_HOME": str(dagster_home),
        "ENERGY_MARKET_DATA_URL": playground.market_data_url,
    }
    started = time.time()
    materialize(env, "reference_prices/DE", "2026-10-25-02:00+0200...2026-10-25-02:00+0100")
    materialize(env, "reference_prices/GB", "2026-10-25-01:00+0100...2026-10-25-01:00+0000")

    midnight = datetime(2026, 10, 25, tzinfo=UTC)
    periods = [
        Period(market, midnight + timedelta(minutes=start), midnight + timedelta(minutes=end))
        for market, start, end in [
            ("DE", 0, 60),
            ("DE", 60, 120),
            *(("DE", q, q + 15) for q in range(0, 120, 15)),
            *(("GB", h, h + 30) for h in range(0, 120, 30)),
        ]
    ]
    expected = []
    for period in periods:
        # Past periods: the vendor's price is final, so any instant gives the stored revision.
        publication = published_price(11, period, time.time())
        expected.append(
            (
                period.market,
                period.delivery_start,
                period.delivery_end,
                publication.value,
                {"DE": "EUR", "GB": "GBP"}[period.market],
                publication.last_update,
            )
        )
    with duckdb.connect(energy_env["ENERGY_DUCKDB_PATH"], read_only=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        stored = conn.execute(
            "SELECT market, delivery_start, delivery_end, value, currency, last_update, "
            "fetched_at FROM energy.reference_prices ORDER BY ALL"
        ).fetchall()
        revisions = conn.execute(
            "SELECT count(*) FROM energy.reference_price_revisions"
        ).fetchone()[0]
    assert [row[:6] for row in stored] == sorted(expected)
    assert all(row[6].timestamp() >= started for row in stored)
    assert revisions == 14
    assert playground.requests_served == 14  # one request per period, no more

    instance = dg.DagsterInstance.get()
    assert len(instance.get_runs()) == 2  # each range was one run
    assert instance.get_materialized_partitions(price_asset_key("DE")) == {
        "2026-10-25-02:00+0200",
        "2026-10-25-02:00+0100",
    }
    assert instance.get_materialized_partitions(price_asset_key("GB")) == {
        "2026-10-25-01:00+0100",
        "2026-10-25-01:00+0000",
    }
