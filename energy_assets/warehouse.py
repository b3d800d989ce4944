"""The DuckDB warehouse: where it lives, how it is opened, and who may write it.

DuckDB allows one writing process per file. Every asset and check that opens the
warehouse declares `pool=DUCKDB_POOL`; `dagster.yaml` gives that pool a limit of 1, so
Dagster queues them and runs one at a time across runs and processes. (Two steps claiming
the free slot in the same few milliseconds can both get it on Dagster's SQLite storage; the
second then waits on DuckDB's own file lock, which `DuckDBResource.get_connection` and
`connect` below retry with backoff.) The listener and the dashboard server never open the
file.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
from dagster._utils.backoff import backoff
from dagster_duckdb import DuckDBResource

from energy_assets.settings import Settings

#: Dagster concurrency pool of every step that opens the DuckDB file (limit 1 in dagster.yaml).
DUCKDB_POOL = "duckdb"
#: The schema that holds every table of the platform.
SCHEMA = "energy"


def warehouse_resource(settings: Settings) -> DuckDBResource:
    """The `warehouse` resource: a DuckDB file at `ENERGY_DUCKDB_PATH`."""
    path = Path(settings.duckdb_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return DuckDBResource(database=str(path))


@contextmanager
def connect(path: str | Path, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the warehouse outside Dagster (tests, benchmarks, CLI), waiting out a held lock."""
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = backoff(
        fn=duckdb.connect,
        retry_on=(duckdb.IOException,),
        kwargs={"database": str(path), "read_only": read_only},
        max_retries=10,
    )
    try:
        yield conn
    finally:
        conn.close()


def current_catalog(conn: duckdb.DuckDBPyConnection) -> str:
    """The catalog DuckDB named after the open file. A file named `energy.duckdb` is a
    catalog called `energy`, like the schema, which makes a bare `energy.<table>` ambiguous
    to DuckDB ("Ambiguous reference to catalog or schema"): every table name is qualified."""
    return conn.execute("SELECT current_database()").fetchone()[0]


def catalog_prefix(catalog: str) -> str:
    """`"<catalog>".`, to put before `energy.<table>`."""
    return '"' + catalog.replace('"', '""') + '".'


def qualified(conn: duckdb.DuckDBPyConnection, table: str) -> str:
    """`"<catalog>".energy.<table>` for the open file (see `current_catalog`)."""
    return f"{catalog_prefix(current_catalog(conn))}{SCHEMA}.{table}"


def ensure_schema(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
