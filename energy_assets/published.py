"""What the batch layer publishes for the live desk service: files beside the dashboard.

The live desk (`energy-assets dashboard`) never opens DuckDB and never calls the vendor. It
computes live positions from the capture buffer itself, and reads everything else from these
files in `ENERGY_DASHBOARD_DIR` (default `data/dashboard/`):

| file | written by | holds |
| --- | --- | --- |
| `prices.parquet` | the `reference_prices` run that stored them | the current reference price of every delivery period of every market (`tables.REFERENCE_PRICES`) |
| `confirmed.parquet` | `exposure_dashboard` | `trader_exposure` as of its last refresh (`tables.TRADER_EXPOSURE`) |
| `pnl_history.parquet` | `exposure_dashboard` | `trader_pnl_history`: one row per trader, currency and refresh (`tables.TRADER_PNL_HISTORY`) |

A file that mirrors a table has that table's columns and types, declared once in
`energy_assets/tables.py` (`SHAPES`): `write` publishes them, `read` hands them back so.

Each file is written under a temporary name and renamed over the old one, and `read` opens it
once, so a reader sees the whole new file or the whole previous one, never half of either. A
reader notices a new file by its modification time (`changed_at`).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import polars as pl

from energy_assets.logs import event_logger
from energy_assets.storage import write_atomically
from energy_assets.tables import REFERENCE_PRICES, TRADER_EXPOSURE, TRADER_PNL_HISTORY, Table

log = event_logger("published")

PRICES = "prices.parquet"
CONFIRMED = "confirmed.parquet"
PNL_HISTORY = "pnl_history.parquet"

#: The files that mirror a table, and the table.
SHAPES: dict[str, Table] = {
    PRICES: REFERENCE_PRICES,
    CONFIRMED: TRADER_EXPOSURE,
    PNL_HISTORY: TRADER_PNL_HISTORY,
}


def _shaped(frame: pl.DataFrame, name: str) -> pl.DataFrame:
    table = SHAPES.get(name)
    return frame if table is None else frame.select(table.column_names).cast(table.polars_schema())


def write(frame: pl.DataFrame, directory: str | Path, name: str) -> Path:
    """Publish `frame` as `directory/name`, atomically (temporary file, fsync, rename); a file
    of `SHAPES` in its table's columns and types."""
    frame = _shaped(frame, name)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    write_atomically(path, frame.write_parquet)
    return path


def read(directory: str | Path, name: str) -> pl.DataFrame | None:
    """The published frame, or None while nothing has been published yet, or while the file is
    of another shape than its table's (written by an older version: the next publication
    replaces it), or is no Parquet file at all (a disk fault, a hand; logged). Total: never an
    exception. The file is opened once and read whole: polars opens a path more than once
    (footer, then pages), and a publication replacing the file in between mixed two of them."""
    path = Path(directory) / name
    try:
        return _shaped(pl.read_parquet(io.BytesIO(path.read_bytes())), name)
    except FileNotFoundError:
        return None
    except (pl.exceptions.ColumnNotFoundError, pl.exceptions.InvalidOperationError):
        return None  # another shape
    except (OSError, pl.exceptions.PolarsError) as err:
        log.warning("published_file_unreadable", file=str(path), error=repr(err)[:200])
        return None


def changed_at(directory: str | Path, name: str) -> int | None:
    """The published file's modification time in ns (None when absent): cheap to poll."""
    try:
        return os.stat(Path(directory) / name).st_mtime_ns
    except FileNotFoundError:
        return None
