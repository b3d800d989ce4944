"""What `exposure_dashboard` publishes for the live desk: the confirmed positions and the PnL
history, read from DuckDB once per run and written as the files of `energy_assets.published`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

from energy_assets import published
from energy_assets.exposure import store
from energy_assets.exposure.positions import PERIOD_KEY

#: A day of refreshes at the default cadence: what the desk's chart spans, and a file whose
#: write stays well under a second however old the table.
DEFAULT_HISTORY_SNAPSHOTS = 2880


@dataclass(frozen=True)
class Published:
    confirmed_rows: int
    history_rows: int
    history_snapshots: int
    bytes: int


def publish(
    conn: duckdb.DuckDBPyConnection,
    directory: str | Path,
    history_snapshots: int = DEFAULT_HISTORY_SNAPSHOTS,
) -> Published:
    """Write every row of `trader_exposure` to `confirmed.parquet` and the rows of
    `trader_pnl_history` of its latest `history_snapshots` refreshes to `pnl_history.parquet`
    (oldest first) into `directory`, each atomically."""
    store.ensure_tables(conn)
    confirmed = conn.execute(
        f"SELECT * FROM {store.EXPOSURE} ORDER BY {', '.join(PERIOD_KEY)}"
    ).pl()
    history = conn.execute(
        f"""SELECT * FROM {store.HISTORY} WHERE snapshot_at >= (
                SELECT coalesce(min(snapshot_at), '-infinity'::TIMESTAMPTZ) FROM (
                    SELECT DISTINCT snapshot_at FROM {store.HISTORY}
                    ORDER BY snapshot_at DESC LIMIT ?))
            ORDER BY snapshot_at, trader_id, currency""",
        [history_snapshots],
    ).pl()
    paths = [
        published.write(confirmed, directory, published.CONFIRMED),
        published.write(history, directory, published.PNL_HISTORY),
    ]
    return Published(
        confirmed_rows=confirmed.height,
        history_rows=history.height,
        history_snapshots=history["snapshot_at"].n_unique(),
        bytes=sum(path.stat().st_size for path in paths),
    )
