"""Everything this domain contributes to the code location."""

import dagster as dg

from energy_assets.settings import settings
from energy_assets.trades.assets import EXCHANGE_FEED, raw_trades
from energy_assets.trades.resources import capture_resource
from energy_assets.trades.sensors import drain_and_refresh_job, raw_trades_sensor

defs = dg.Definitions(
    assets=[EXCHANGE_FEED, raw_trades],
    jobs=[drain_and_refresh_job],
    sensors=[raw_trades_sensor],
    resources={"capture": capture_resource(settings())},
)
