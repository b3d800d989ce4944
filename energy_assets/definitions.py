"""The code location: the one place where every domain's assets, checks, sensors,
schedules and the shared resources meet."""

import warnings

import dagster as dg

from energy_assets.exposure import definitions as exposure
from energy_assets.journals import definitions as journals
from energy_assets.journals.resources import archive_resource
from energy_assets.operations.recent_prices import recent_prices_sensor
from energy_assets.operations.retention import run_retention_job, run_retention_schedule
from energy_assets.prices import definitions as prices
from energy_assets.settings import settings
from energy_assets.trades import definitions as trades
from energy_assets.warehouse import dashboard_resource, warehouse_resource

# Dagster 1.13 binds resources to a sensor's job by `SensorDefinition.with_attributes`, which
# passes the sensor's `owners` (an empty list, not None) and so warns that the beta parameter
# is in use, in the code server and in every run's log, for sensors that set no owners (the
# parameter came with dagster-io/dagster#32289; no upstream issue found on 2026-12-05).
warnings.filterwarnings(
    "ignore", message="Parameter `owners` of initializer `SensorDefinition", category=dg.BetaWarning
)

defs = dg.Definitions.merge(
    dg.Definitions(
        resources={
            "warehouse": warehouse_resource(),
            "dashboard": dashboard_resource(),
            "archive": archive_resource(settings()),
        },
        # Every step here is small next to a process start (benchmarks/README.md): runs launched from the UI,
        # by automation or backfills execute their steps in the run's own process.
        executor=dg.in_process_executor,
        jobs=[run_retention_job],
        schedules=[run_retention_schedule],
        sensors=[recent_prices_sensor],
    ),
    trades.defs,
    prices.defs,
    exposure.defs,
    journals.defs,
)
