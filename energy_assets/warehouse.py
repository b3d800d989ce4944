"""The DuckDB warehouse: how it is opened, and who may write it.

DuckDB allows one writing process per file. Every asset and check that opens the
warehouse declares `pool=DUCKDB_POOL`; `dagster.yaml` gives that pool a limit of 1, so
Dagster queues them and runs one at a time across runs and processes. (Two steps claiming
the free slot in the same few milliseconds can both get it on Dagster's SQLite storage; the
second then waits on DuckDB's own file lock, which `DuckDBResource.get_connection` and
`connect` below retry with backoff.) The listener and the dashboard server never open the
file. Its tables are declared in `energy_assets/tables.py`. What the batch layer publishes
for the live desk goes to the `dashboard` resource's directory.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb
import tenacity
from dagster_duckdb import DuckDBResource

from energy_assets.settings import DEFAULT_DASHBOARD_DIR, DEFAULT_DUCKDB_PATH, from_env
from energy_assets.tables import SCHEMA, ensure_schema

__all__ = [
    "DUCKDB_POOL",
    "SCHEMA",
    "DashboardResource",
    "WarehouseResource",
    "connect",
    "ensure_schema",
    "dashboard_resource",
    "warehouse_resource",
]

#: Dagster concurrency pool of every step that opens the DuckDB file (limit 1 in dagster.yaml).
DUCKDB_POOL = "duckdb"
#: How long `connect` waits out another process's lock on the file, at most (seconds).
LOCK_WAIT_SECONDS = 60.0


class WarehouseResource(DuckDBResource):
    """The `warehouse` resource: the DuckDB file at `ENERGY_DUCKDB_PATH`, its directory
    created when a run first opens it (never when the definitions load)."""

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        if self.database != ":memory:":
            Path(self.database).parent.mkdir(parents=True, exist_ok=True)


def warehouse_resource() -> WarehouseResource:
    return WarehouseResource(database=from_env("ENERGY_DUCKDB_PATH", DEFAULT_DUCKDB_PATH))


class DashboardResource(dg.ConfigurableResource):
    """The `dashboard` resource: the directory where runs publish the live desk's files
    (`ENERGY_DASHBOARD_DIR`, `energy_assets/published.py`)."""

    directory: str


def dashboard_resource() -> DashboardResource:
    return DashboardResource(directory=from_env("ENERGY_DASHBOARD_DIR", DEFAULT_DASHBOARD_DIR))


@tenacity.retry(
    retry=tenacity.retry_if_exception_type(duckdb.IOException),  # the file's lock is held
    stop=tenacity.stop_after_delay(LOCK_WAIT_SECONDS),
    wait=tenacity.wait_exponential(multiplier=0.05, max=2.0),
    reraise=True,
)
def _open(path: str | Path, read_only: bool) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(path), read_only=read_only)


@contextmanager
def connect(path: str | Path, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the warehouse outside Dagster (tests, benchmarks, CLI), waiting out a held lock."""
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = _open(path, read_only)
    try:
        yield conn
    finally:
        conn.close()
