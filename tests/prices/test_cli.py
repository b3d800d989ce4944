"""A partition range through Dagster's own CLI: one run, exactly the expected rows."""

from __future__ import annotations

import os
import subprocess
import time
from datetime import date

import dagster as dg
import duckdb
import pytest

from energy_assets.markets import hour_period
from energy_assets.playground.pricing import published_price
from energy_assets.playground.server import MarketDataOptions
from energy_assets.prices.assets import ASSET_KEY
from tests.conftest import REPO

# Seconds or more: `dagster asset materialize` as a process.
pytestmark = pytest.mark.slow


def test_partition_range_through_the_cli(start_playground, dagster_home, energy_env):
    playground = start_playground(market_data=MarketDataOptions(seed=11))
    env = {
        **os.environ,
        **energy_env,
        "DAGSTER_HOME": str(dagster_home),
        "ENERGY_MARKET_DATA_URL": playground.market_data_url,
    }
    started = time.time()
    result = subprocess.run(
        [
            str(REPO / ".venv/bin/dagster"),
            "asset",
            "materialize",
            "-m",
            "energy_assets.definitions",
            "--select",
            "reference_prices",
            "--partition-range",
            "2023-12-31-22:00...2024-01-01-01:00",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    expected = []
    for day, hour in [
        (date(2023, 12, 31), 22),
        (date(2023, 12, 31), 23),
        (date(2024, 1, 1), 0),
        (date(2024, 1, 1), 1),
    ]:
        # Past hours: the vendor's price is final, so any instant gives the stored revision.
        # The stand-in reads the older form's labels as Berlin's hours.
        period = hour_period("DE", day, f"{hour:02d}-{hour + 1:02d}")
        publication = published_price(11, period, time.time())
        expected.append(
            (
                day,
                f"{hour:02d}-{hour + 1:02d}",
                publication.value,
                "euro/mwh",
                publication.last_update,
            )
        )
    with duckdb.connect(energy_env["ENERGY_DUCKDB_PATH"], read_only=True) as conn:
        stored = conn.execute(
            "SELECT delivery_day, delivery_hour, value, unit, last_update, fetched_at "
            "FROM energy.reference_prices ORDER BY ALL"
        ).fetchall()
        revisions = conn.execute(
            "SELECT count(*) FROM energy.reference_price_revisions"
        ).fetchone()[0]
    assert [row[:5] for row in stored] == expected
    assert all(row[5].timestamp() >= started for row in stored)
    assert revisions == 4
    assert playground.requests_served == 4  # one request per hour, no more

    instance = dg.DagsterInstance.get()
    runs = instance.get_runs()
    assert len(runs) == 1  # the range was one run
    assert instance.get_materialized_partitions(ASSET_KEY) == {
        "2023-12-31-22:00",
        "2023-12-31-23:00",
        "2024-01-01-00:00",
        "2024-01-01-01:00",
    }
