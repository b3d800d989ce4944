"""The two price tables in DuckDB and the one transaction that writes a batch into them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import polars as pl

from energy_assets import published
from energy_assets.prices.answer import CLOCK_SKEW
from energy_assets.prices.period_prices import PeriodPrice, price_row
from energy_assets.storage import transaction
from energy_assets.tables import (
    PRICE_KEY,
    PRICE_ROW,
    REFERENCE_PRICE_REVISIONS,
    REFERENCE_PRICES,
    ensure_price_tables,
)


@dataclass(frozen=True)
class StoreResult:
    rows: int
    new_revisions: int


def prices_frame(prices: Sequence[PeriodPrice]) -> pl.DataFrame:
    return pl.DataFrame([price_row(p) for p in prices], schema=PRICE_ROW, orient="row")


def store_prices(
    conn: duckdb.DuckDBPyConnection, prices: Sequence[PeriodPrice] | pl.DataFrame
) -> StoreResult:
    """Write a batch in ONE transaction: every distinct revision into the history (with the
    first time it was fetched, whatever order the batches come in), and the current row of each
    period replaced by the batch's latest revision of it, unless the stored row is a newer
    revision (a slow backfill finishing after the planner must not put an old price back). A
    stored row whose `last_update` lies after its own `fetched_at` by more than the clock skew
    was never a plausible revision (stored before the client refused such answers): it blocks
    nothing."""
    ensure_price_tables(conn)
    if len(prices) == 0:
        return StoreResult(rows=0, new_revisions=0)
    current, revisions = REFERENCE_PRICES, REFERENCE_PRICE_REVISIONS
    skew_s = int(CLOCK_SKEW.total_seconds())
    batch = prices if isinstance(prices, pl.DataFrame) else prices_frame(prices)
    batch = batch.select(list(PRICE_ROW)).cast(PRICE_ROW)
    conn.register("price_batch", batch.to_arrow())
    try:
        with transaction(conn):
            before = conn.execute(f"SELECT count(*) FROM {revisions}").fetchone()[0]
            conn.execute(
                f"""
                INSERT INTO {revisions} AS rev SELECT * FROM price_batch
                QUALIFY row_number() OVER (
                    PARTITION BY {", ".join(revisions.primary_key)} ORDER BY fetched_at
                ) = 1
                ON CONFLICT DO UPDATE SET fetched_at = least(rev.fetched_at, excluded.fetched_at)
                """
            )
            after = conn.execute(f"SELECT count(*) FROM {revisions}").fetchone()[0]
            conn.execute(
                f"""
                INSERT INTO {current} AS cur SELECT * FROM price_batch
                QUALIFY row_number() OVER (
                    PARTITION BY {", ".join(PRICE_KEY)} ORDER BY last_update DESC, fetched_at DESC
                ) = 1
                ON CONFLICT ({", ".join(PRICE_KEY)}) DO UPDATE SET
                    value = excluded.value,
                    currency = excluded.currency,
                    last_update = excluded.last_update,
                    fetched_at = excluded.fetched_at
                WHERE excluded.last_update >= cur.last_update
                   OR cur.last_update > cur.fetched_at + INTERVAL {skew_s} SECOND
                """
            )
    finally:
        conn.unregister("price_batch")
    return StoreResult(rows=batch.height, new_revisions=after - before)


def current_prices(conn: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """The current row of every delivery period, as `PRICE_ROW`."""
    ensure_price_tables(conn)
    columns = ", ".join(PRICE_ROW)
    frame = conn.execute(
        f"SELECT {columns} FROM {REFERENCE_PRICES} ORDER BY {', '.join(PRICE_KEY)}"
    ).pl()
    return frame.cast(PRICE_ROW)  # DuckDB's TIMESTAMPTZ reads in the session zone


def publish_prices(conn: duckdb.DuckDBPyConnection, directory) -> int:
    """Write `prices.parquet` (every period's current price) into `directory`, atomically."""
    frame = current_prices(conn)
    published.write(frame, directory, published.PRICES)
    return frame.height
