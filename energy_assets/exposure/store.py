"""Refreshing the exposure tables in DuckDB: recompute the delivery days that changed, only those.

What changed is read off the tables themselves, nothing is kept beside them. A delivery day
is recomputed when

- `energy.raw_trades` holds a different number of its deals than `energy.trader_exposure`
  counts (new deals, a deal loaded late for an old day, a day whose deals are gone), or
- one of its periods is marked at a price other than the latest in `energy.reference_prices`
  (a revision, an hour's first price, a price withdrawn). A refetch of the same value
  changes nothing, and a price for an hour nobody traded recomputes nothing.

Those days are recomputed from every one of their deals: DuckDB sums each leg next to the data
(`LEGS_SQL`), polars does the rest (`positions.positions_of_legs`). Their exposure rows and
daily totals are replaced, and one row per trader appended to `energy.trader_pnl_history` with
the PnL change split by `positions.pnl_attribution`, in one transaction: a reader sees the
previous refresh or this one, never half of it. The per-trader totals are a view over the
daily totals, and the largest positions a query.

`raw_trades` is an insert-only ledger keyed by deal id, so a day's count moves with every
change it can have. A correction in place (same count) is the one thing the counts cannot
see: `full_recompute` repairs it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime

import duckdb
import polars as pl

from energy_assets.exposure.positions import daily_totals, pnl_attribution, positions_of_legs
from energy_assets.tables import (
    EXPOSURE_TABLES,
    RAW_TRADES,
    REFERENCE_PRICES,
    SCHEMA,
    TRADER_EXPOSURE,
    TRADER_EXPOSURE_DAILY,
    TRADER_EXPOSURE_TOTALS,
    TRADER_PNL_HISTORY,
    create,
)

EXPOSURE = str(TRADER_EXPOSURE)
DAILY = str(TRADER_EXPOSURE_DAILY)
TOTALS = str(TRADER_EXPOSURE_TOTALS)
HISTORY = str(TRADER_PNL_HISTORY)

#: How many of the largest positions a refresh reports.
LARGEST = 10

_COUNTS = ("periods", "unpriced_periods", "trades")
# Per trader, the roll-up of the daily totals: every column is a sum over periods, and a sum of
# nulls is null (nothing priced yet), as in `positions.trader_totals`.
_SUMS = ", ".join(
    f"sum({c})::BIGINT AS {c}" if c in _COUNTS else f"sum({c}) AS {c}"
    for c in TRADER_EXPOSURE_TOTALS.column_names[1:]
)
_TOTALS_VIEW = f"CREATE VIEW IF NOT EXISTS {TOTALS} AS SELECT trader_id, {_SUMS} FROM {DAILY} GROUP BY trader_id"
HISTORY_COLUMNS = TRADER_PNL_HISTORY.column_names

#: Σ per leg (period and direction), computed where the trades are; `positions.legs` is the
#: same in polars.
LEGS_SQL = """
    SELECT trader_id, delivery_day, delivery_hour, direction, count(*) AS trades,
           sum(quantity) AS mwh, sum(quantity * price) AS eur
    FROM {trades} WHERE {days}
    GROUP BY trader_id, delivery_day, delivery_hour, direction
"""
#: The latest price of each hour (`reference_prices` keeps one row per hour).
PRICES_SQL = """
    SELECT delivery_day, delivery_hour, value AS reference_price
    FROM {prices} WHERE value IS NOT NULL AND {days}
"""
#: The days whose deals or prices differ from what `trader_exposure` holds.
CHANGED_DAYS_SQL = """
    WITH counted AS (SELECT delivery_day, sum(trades) AS trades FROM {exposure}
                     GROUP BY delivery_day),
         dealt AS (SELECT delivery_day, count(*) AS trades FROM {trades} GROUP BY delivery_day)
    SELECT delivery_day FROM counted FULL JOIN dealt USING (delivery_day)
    WHERE counted.trades IS DISTINCT FROM dealt.trades
    UNION
    SELECT e.delivery_day FROM {exposure} e LEFT JOIN ({prices}) p USING (delivery_day, delivery_hour)
    WHERE e.reference_price IS DISTINCT FROM p.reference_price
    ORDER BY delivery_day
"""
ALL_DAYS_SQL = """
    SELECT delivery_day FROM {exposure} UNION SELECT delivery_day FROM {trades}
    ORDER BY delivery_day
"""
#: The largest positions, ties by period.
LARGEST_SQL = f"""
    SELECT * FROM {EXPOSURE} WHERE exposure_eur IS NOT NULL
    ORDER BY abs(exposure_eur) DESC, trader_id, delivery_day, delivery_hour LIMIT ?
"""
#: Stand-ins for an upstream table that does not exist yet: counted as empty.
_NO_TRADES = """(SELECT NULL::VARCHAR AS trader_id, NULL::DATE AS delivery_day,
    NULL::VARCHAR AS delivery_hour, NULL::VARCHAR AS direction, NULL::DOUBLE AS quantity,
    NULL::DOUBLE AS price WHERE false)"""
_NO_PRICES = """(SELECT NULL::DATE AS delivery_day, NULL::VARCHAR AS delivery_hour,
    NULL::DOUBLE AS value WHERE false)"""
_THE_DAYS = "delivery_day IN (SELECT unnest(?::DATE[]))"


@dataclass
class RefreshResult:
    """What one refresh did, for the run's metadata and the benchmark."""

    days_recomputed: int
    largest: pl.DataFrame = field(repr=False)
    totals: pl.DataFrame = field(repr=False)
    history: pl.DataFrame = field(repr=False)
    missing_inputs: list[str]
    seconds: float


def ensure_tables(conn: duckdb.DuckDBPyConnection) -> None:
    """Create this domain's tables and view if needed."""
    create(conn, *EXPOSURE_TABLES)
    conn.execute(_TOTALS_VIEW)


_OURS = {t.name for t in (*EXPOSURE_TABLES, TRADER_EXPOSURE_TOTALS)}


def _present(conn: duckdb.DuckDBPyConnection) -> set[str]:
    """The names of the tables and views in the warehouse's schema."""
    rows = conn.execute(
        """SELECT table_name FROM duckdb_tables()
           WHERE database_name = current_database() AND schema_name = ?
           UNION ALL
           SELECT view_name FROM duckdb_views()
           WHERE database_name = current_database() AND schema_name = ?""",
        [SCHEMA, SCHEMA],
    ).fetchall()
    return {r[0] for r in rows}


def refresh(
    conn: duckdb.DuckDBPyConnection,
    snapshot_at: datetime,
    run_id: str = "",
    full: bool = False,
) -> RefreshResult:
    """Bring the exposure tables up to date with `raw_trades` and `reference_prices`, and
    append one row per trader to `energy.trader_pnl_history`.

    `full=True` recomputes every delivery day: the repair after a correction in place.
    """
    started = time.perf_counter()
    present = _present(conn)
    if not _OURS <= present:
        ensure_tables(conn)
    missing = [str(t) for t in (RAW_TRADES, REFERENCE_PRICES) if t.name not in present]
    trades = str(RAW_TRADES) if RAW_TRADES.name in present else _NO_TRADES
    prices = str(REFERENCE_PRICES) if REFERENCE_PRICES.name in present else _NO_PRICES
    latest = PRICES_SQL.format(prices=prices, days="true")

    conn.begin()
    try:
        sql = (ALL_DAYS_SQL if full else CHANGED_DAYS_SQL).format(
            exposure=EXPOSURE, trades=trades, prices=latest
        )
        days = [r[0] for r in conn.execute(sql).fetchall()]
        attribution = None
        if days:
            # A full refresh reads every deal: no filter rather than a list of every day.
            where, params = ("true", []) if full else (_THE_DAYS, [days])
            attribution = _replace_days(conn, where, params, trades, prices)
        totals = conn.execute(f"SELECT * FROM {TOTALS} ORDER BY trader_id").pl()
        history = _history(totals, attribution, snapshot_at, run_id, len(days))
        _insert(conn, HISTORY, history)
        largest = conn.execute(LARGEST_SQL, [LARGEST]).pl()
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return RefreshResult(
        days_recomputed=len(days),
        largest=largest,
        totals=totals,
        history=history,
        missing_inputs=missing,
        seconds=time.perf_counter() - started,
    )


def _replace_days(
    conn: duckdb.DuckDBPyConnection, where: str, params: list, trades: str, prices: str
) -> pl.DataFrame:
    """Recompute the days matching `where` from their deals and the latest prices, replace
    their exposure rows and daily totals, and return each trader's PnL change
    (`pnl_attribution`)."""
    before = conn.execute(f"SELECT * FROM {EXPOSURE} WHERE {where}", params).pl()
    legs = conn.execute(LEGS_SQL.format(trades=trades, days=where), params).pl()
    prices_now = conn.execute(PRICES_SQL.format(prices=prices, days=where), params).pl()

    exposure = positions_of_legs(legs, prices_now)
    # The prices the replaced rows were marked with: one per period, whatever the trader.
    prices_before = before.select("delivery_day", "delivery_hour", "reference_price").unique()

    conn.execute(f"DELETE FROM {EXPOSURE} WHERE {where}", params)
    conn.execute(f"DELETE FROM {DAILY} WHERE {where}", params)
    _insert(conn, EXPOSURE, exposure)
    _insert(conn, DAILY, daily_totals(exposure))
    return pnl_attribution(before, exposure, prices_before, prices_now)


def _insert(conn: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame) -> None:
    if frame.height:
        conn.register("exposure_frame", frame)
        try:
            conn.execute(f"INSERT INTO {table} BY NAME SELECT * FROM exposure_frame")
        finally:
            conn.unregister("exposure_frame")


def _history(
    totals: pl.DataFrame,
    attribution: pl.DataFrame | None,
    snapshot_at: datetime,
    run_id: str,
    days_recomputed: int,
) -> pl.DataFrame:
    """One row per trader: the totals after this refresh and what moved their PnL."""
    changes = ["new_trades", "pnl_change_eur", "pnl_change_trades_eur", "pnl_change_prices_eur"]
    if attribution is None:  # nothing changed
        attribution = pl.DataFrame(
            schema={"trader_id": pl.String, "new_trades": pl.Int64}
            | {c: pl.Float64 for c in changes[1:]}
        )
    # A trader whose every position vanished still gets a row: their change is real.
    return (
        totals.lazy()
        .join(attribution.lazy(), on="trader_id", how="full", coalesce=True)
        .with_columns(
            pl.col(changes).fill_null(0),
            pl.col("trades", "unpriced_periods").fill_null(0),
            pl.col("net_mwh", "cash_eur").fill_null(0.0),
            pl.lit(snapshot_at).cast(pl.Datetime("us", "UTC")).alias("snapshot_at"),
            pl.lit(run_id).alias("run_id"),
            pl.lit(days_recomputed, dtype=pl.Int64).alias("days_recomputed"),
        )
        .select(HISTORY_COLUMNS)
        .sort("trader_id")
        .collect()
    )
