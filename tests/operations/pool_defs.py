"""A code location for tests/operations/test_pool_slots.py: one asset that holds the `duckdb`
pool slot until its process is killed, and one that needs the slot."""

import os
import time
from pathlib import Path

import dagster as dg

from energy_assets.warehouse import DUCKDB_POOL


@dg.asset(pool=DUCKDB_POOL)
def holds_the_slot() -> None:
    """Writes its process id to $POOL_TEST_PID_FILE, then waits to be killed (first attempt
    only: a retry of the killed run returns at once)."""
    pid_file = Path(os.environ["POOL_TEST_PID_FILE"])
    first_attempt = not pid_file.exists()
    pid_file.write_text(str(os.getpid()))
    while first_attempt:
        time.sleep(1)


@dg.asset(pool=DUCKDB_POOL)
def needs_the_slot() -> int:
    return 1


defs = dg.Definitions(
    assets=[holds_the_slot, needs_the_slot],
    jobs=[
        dg.define_asset_job("hold", selection=[holds_the_slot]),
        dg.define_asset_job("need", selection=[needs_the_slot]),
    ],
    # The run worker is the process that runs the step: killing it kills the run.
    executor=dg.in_process_executor,
)
