"""Everything this domain contributes to the code location."""

import os
from pathlib import Path

import dagster as dg

from energy_assets.prices.assets import reference_prices
from energy_assets.prices.checks import reference_price_checks
from energy_assets.prices.client import MarketDataClient
from energy_assets.prices.schedule import reference_prices_refresh, reference_prices_schedule
from energy_assets.settings import settings


def market_data_resource(environ: dict[str, str] | None = None) -> MarketDataClient:
    """The `market_data` resource: the vendor at `ENERGY_MARKET_DATA_URL`, its request budget
    in a SQLite file beside the DuckDB file (`ENERGY_MARKET_DATA_BUDGET` overrides the path;
    `ENERGY_MARKET_DATA_BUDGET=off` lifts it, for benchmarks only), and
    `ENERGY_MARKET_DATA_CONCURRENCY` fetches at a time in one run (default 16)."""
    env = os.environ if environ is None else environ
    current = settings()
    budget = env.get("ENERGY_MARKET_DATA_BUDGET", "").strip()
    return MarketDataClient(
        base_url=current.market_data_url,
        max_concurrency=int(env.get("ENERGY_MARKET_DATA_CONCURRENCY") or 16),
        budget_enabled=budget.lower() != "off",
        budget_path=budget
        if budget and budget.lower() != "off"
        else str(Path(current.duckdb_path).parent / "market_data_budget.sqlite"),
    )


defs = dg.Definitions(
    assets=[reference_prices],
    asset_checks=[reference_price_checks],
    jobs=[reference_prices_refresh],
    schedules=[reference_prices_schedule],
    resources={"market_data": market_data_resource()},
)
