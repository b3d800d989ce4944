"""What `exposure_dashboard` publishes for the live desk: the confirmed positions and the PnL
history, read from DuckDB once per run and written as the files of `energy_assets.published`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

from energy_assets import published
from energy_assets.exposure import store
from energy_assets.exposure.positions import EXPOSURE_COLUMNS, PERIOD_KEY

#: A day of refreshes at the default 30 s cadence (x traders rows): the file stays ~1 MB and
#: a write well under a second however old the table, and the desk's chart spans a day.
DEFAULT_HISTORY_SNAPSHOTS = 2880


@dataclass(frozen=True)
class Published:
    confirmed_rows: int
    history_rows: int
    history_snapshots: int
    bytes: int


def load_confirmed(conn: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Every row of `trader_exposure`, in its columns' order."""
    store.ensure_tables(conn)
    return conn.execute(
        f"SELECT {', '.join(EXPOSURE_COLUMNS)} FROM {store.EXPOSURE} "
        f"ORDER BY {', '.join(PERIOD_KEY)}"
    ).pl()


def load_pnl_history(conn: duckdb.DuckDBPyConnection, snapshots: int) -> pl.DataFrame:
    """The rows of `trader_pnl_history` of its latest `snapshots` refreshes, oldest first."""
    store.ensure_tables(conn)
    return conn.execute(
        f"""SELECT * FROM {store.HISTORY} WHERE snapshot_at >= (
                SELECT coalesce(min(snapshot_at), '-infinity'::TIMESTAMPTZ) FROM (
                    SELECT DISTINCT snapshot_at FROM {store.HISTORY}
                    ORDER BY snapshot_at DESC LIMIT ?))
            ORDER BY snapshot_at, trader_id, currency""",
        [snapshots],
    ).pl()


def publish(
    conn: duckdb.DuckDBPyConnection,
    directory: str | Path,
    history_snapshots: int = DEFAULT_HISTORY_SNAPSHOTS,
) -> Published:
    """Write `confirmed.parquet` and `pnl_history.parquet` into `directory`, each atomically."""
    confirmed = load_confirmed(conn)
    history = load_pnl_history(conn, history_snapshots)
    paths = [
        published.write(confirmed, directory, published.CONFIRMED),
        published.write(history, directory, published.PNL_HISTORY),
    ]
    return Published(
        confirmed_rows=confirmed.height,
        history_rows=history.height,
        history_snapshots=history["snapshot_at"].n_unique() if history.height else 0,
        bytes=sum(path.stat().st_size for path in paths),
    )
