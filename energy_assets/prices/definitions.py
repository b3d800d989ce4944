"""Everything this domain contributes to the code location."""

import dagster as dg

from energy_assets.prices.assets import MARKET_DATA_API, REFERENCE_PRICES_ASSETS
from energy_assets.prices.checks import REFERENCE_PRICE_CHECKS
from energy_assets.prices.client import MarketDataClient
from energy_assets.prices.refresh import reference_prices_planned, reference_prices_planner
from energy_assets.settings import (
    DEFAULT_MARKET_DATA_CONCURRENCY,
    DEFAULT_MARKET_DATA_URL,
    Settings,
    from_env,
    settings,
)


def market_data_resource(settings: Settings) -> MarketDataClient:
    """The `market_data` resource: the vendor at `ENERGY_MARKET_DATA_URL`,
    `ENERGY_MARKET_DATA_CONCURRENCY` fetches at a time in one run, and the request budget in
    the SQLite file `ENERGY_MARKET_DATA_BUDGET` names (default: beside the warehouse; `off`
    lifts it, for benchmarks only)."""
    return MarketDataClient(
        base_url=from_env("ENERGY_MARKET_DATA_URL", DEFAULT_MARKET_DATA_URL),
        max_concurrency=from_env("ENERGY_MARKET_DATA_CONCURRENCY", DEFAULT_MARKET_DATA_CONCURRENCY),
        budget_enabled=settings.market_data_budget_enabled,
        budget_path=settings.market_data_budget_path,
    )


defs = dg.Definitions(
    assets=[MARKET_DATA_API, *REFERENCE_PRICES_ASSETS],
    asset_checks=REFERENCE_PRICE_CHECKS,
    jobs=[reference_prices_planned],
    sensors=[reference_prices_planner],
    resources={"market_data": market_data_resource(settings())},
)
