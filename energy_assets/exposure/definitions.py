"""Everything this domain contributes to the code location."""

import dagster as dg

from energy_assets.exposure.assets import (
    exposure_automation_sensor,
    exposure_dashboard,
    trader_exposure,
)

defs = dg.Definitions(
    assets=[trader_exposure, exposure_dashboard],
    sensors=[exposure_automation_sensor],
)
