"""Everything this domain contributes to the code location."""

import dagster as dg

from energy_assets.journals.checks import (
    journal_integrity_job,
    journal_integrity_schedule,
    journal_matches_warehouse,
)

defs = dg.Definitions(
    asset_checks=[journal_matches_warehouse],
    jobs=[journal_integrity_job],
    schedules=[journal_integrity_schedule],
)
