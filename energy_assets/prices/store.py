"""The two price tables in DuckDB and the one transaction that writes a batch into them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import polars as pl

from energy_assets import published
from energy_assets.prices.answer import CLOCK_SKEW
from energy_assets.prices.client import ReferencePrice
from energy_assets.tables import REFERENCE_PRICE_REVISIONS, REFERENCE_PRICES, ensure_price_tables


@dataclass(frozen=True)
class StoreResult:
    rows: int
    new_revisions: int


def prices_frame(prices: Sequence[ReferencePrice]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "delivery_day": [p.delivery_day for p in prices],
            "delivery_hour": [p.delivery_hour for p in prices],
            "value": [p.value for p in prices],
            "unit": [p.unit for p in prices],
            "last_update": [p.last_update for p in prices],
            "fetched_at": [p.fetched_at for p in prices],
        },
        schema={
            "delivery_day": pl.Date,
            "delivery_hour": pl.String,
            "value": pl.Float64,
            "unit": pl.String,
            "last_update": pl.Datetime("us", "UTC"),
            "fetched_at": pl.Datetime("us", "UTC"),
        },
    )


def store_prices(conn: duckdb.DuckDBPyConnection, prices: Sequence[ReferencePrice]) -> StoreResult:
    """Write a batch in ONE transaction: every distinct revision into the history, and the
    current row of each hour replaced, unless the stored row is a newer revision (a slow
    backfill finishing after the schedule must not put an old price back). A stored row whose
    `last_update` lies after its own `fetched_at` by more than the clock skew was never a
    plausible revision (stored before the client refused such answers): it blocks nothing."""
    ensure_price_tables(conn)
    if not prices:
        return StoreResult(rows=0, new_revisions=0)
    current, revisions = REFERENCE_PRICES, REFERENCE_PRICE_REVISIONS
    skew_s = int(CLOCK_SKEW.total_seconds())
    batch = prices_frame(prices)
    conn.register("price_batch", batch.to_arrow())
    try:
        conn.execute("BEGIN TRANSACTION")
        try:
            before = conn.execute(f"SELECT count(*) FROM {revisions}").fetchone()[0]
            conn.execute(
                f"INSERT INTO {revisions} SELECT * FROM price_batch ON CONFLICT DO NOTHING"
            )
            after = conn.execute(f"SELECT count(*) FROM {revisions}").fetchone()[0]
            conn.execute(
                f"""
                INSERT INTO {current} AS cur SELECT * FROM price_batch
                ON CONFLICT (delivery_day, delivery_hour) DO UPDATE SET
                    value = excluded.value,
                    unit = excluded.unit,
                    last_update = excluded.last_update,
                    fetched_at = excluded.fetched_at
                WHERE excluded.last_update >= cur.last_update
                   OR cur.last_update > cur.fetched_at + INTERVAL {skew_s} SECOND
                """
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        conn.unregister("price_batch")
    return StoreResult(rows=batch.height, new_revisions=after - before)


def current_prices(conn: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """The current row of every delivery hour, as `published.PRICE_SCHEMA`."""
    ensure_price_tables(conn)
    frame = conn.execute(
        "SELECT delivery_day, delivery_hour, value AS reference_price, unit, last_update, "
        f"fetched_at FROM {REFERENCE_PRICES} ORDER BY delivery_day, delivery_hour"
    ).pl()
    return frame.cast(published.PRICE_SCHEMA)  # DuckDB's TIMESTAMPTZ reads in the session zone


def publish_prices(conn: duckdb.DuckDBPyConnection, directory) -> int:
    """Write `prices.parquet` (every hour's current price) into `directory`, atomically."""
    frame = current_prices(conn)
    published.write(frame, directory, published.PRICES)
    return frame.height
