"""Refreshing the exposure tables in DuckDB: which delivery days changed, and only those.

A refresh compares what `energy.raw_trades` and `energy.reference_prices` hold now with what
the previous refresh used, per delivery day:

- trades: a fingerprint per delivery day (count, Σ quantity, Σ price, latest `received_at`)
  kept in `energy.trader_exposure_trade_marks`. `raw_trades` is an insert-only ledger keyed
  by deal id, so any new deal changes its day's count, whatever its `received_at` (a deal
  received before the last refresh but loaded after it is still seen; a `received_at`
  watermark would miss it);
- prices: the price of every delivery hour as the previous refresh used it, kept in
  `energy.trader_exposure_prices`; a day whose price of any hour appeared, vanished or moved
  is affected. A refetch that returns the same value changes nothing.

Only the affected days' trades are read and re-aggregated; the totals are rebuilt from
`energy.trader_exposure` (one row per trader and period: small). Everything is written in one
transaction, so a reader sees the previous refresh or this one, never half of it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date, datetime

import duckdb
import polars as pl

from energy_assets.exposure.positions import (
    EXPOSURE_COLUMNS,
    EXPOSURE_SCHEMA,
    PERIOD_KEY,
    TOTAL_COLUMNS,
    book,
    daily_totals,
    mark,
    pnl_attribution,
    trader_totals,
)
from energy_assets.warehouse import SCHEMA, ensure_schema

EXPOSURE = f"{SCHEMA}.trader_exposure"
DAILY = f"{SCHEMA}.trader_exposure_daily"
TOTALS = f"{SCHEMA}.trader_exposure_totals"
HISTORY = f"{SCHEMA}.trader_pnl_history"
TRADE_MARKS = f"{SCHEMA}.trader_exposure_trade_marks"
PRICES_USED = f"{SCHEMA}.trader_exposure_prices"
RAW_TRADES = f"{SCHEMA}.raw_trades"
REFERENCE_PRICES = f"{SCHEMA}.reference_prices"
FEED_GAPS = f"{SCHEMA}.feed_gaps"


@dataclass(frozen=True)
class Tables:
    """Every table this domain touches, qualified with the database's catalog: a file named
    `energy.duckdb` is a catalog called `energy`, which makes a bare `energy.<table>`
    ambiguous to DuckDB ("Ambiguous reference to catalog or schema")."""

    catalog: str
    exposure: str
    daily: str
    totals: str
    history: str
    trade_marks: str
    prices_used: str
    raw_trades: str
    reference_prices: str
    feed_gaps: str

    @classmethod
    def of(cls, conn: duckdb.DuckDBPyConnection) -> Tables:
        catalog = conn.execute("SELECT current_database()").fetchone()[0]
        prefix = '"' + catalog.replace('"', '""') + '".'
        names = (
            EXPOSURE,
            DAILY,
            TOTALS,
            HISTORY,
            TRADE_MARKS,
            PRICES_USED,
            RAW_TRADES,
            REFERENCE_PRICES,
            FEED_GAPS,
        )
        return cls(catalog, *(prefix + name for name in names))

    def exists(self, conn: duckdb.DuckDBPyConnection, table: str) -> bool:
        name = table.rsplit(".", 1)[1]
        return bool(
            conn.execute(
                """SELECT count(*) FROM information_schema.tables
                   WHERE table_catalog = ? AND table_schema = ? AND table_name = ?""",
                [self.catalog, SCHEMA, name],
            ).fetchone()[0]
        )


_TOTALS_DDL = """
    periods BIGINT, unpriced_periods BIGINT, trades BIGINT, bought_mwh DOUBLE, sold_mwh DOUBLE,
    net_mwh DOUBLE, cash_eur DOUBLE, pnl_eur DOUBLE, exposure_eur DOUBLE,
    gross_exposure_eur DOUBLE, unpriced_net_mwh DOUBLE
"""


def _ddl(t: Tables) -> list[str]:
    return [
        f"""CREATE TABLE IF NOT EXISTS {t.exposure} (
        trader_id VARCHAR, delivery_day DATE, delivery_hour VARCHAR, trades BIGINT,
        bought_mwh DOUBLE, sold_mwh DOUBLE, net_mwh DOUBLE, buy_vwap DOUBLE, sell_vwap DOUBLE,
        cash_eur DOUBLE, reference_price DOUBLE, pnl_eur DOUBLE, exposure_eur DOUBLE)""",
        f"CREATE TABLE IF NOT EXISTS {t.daily} (trader_id VARCHAR, delivery_day DATE, {_TOTALS_DDL})",
        f"CREATE TABLE IF NOT EXISTS {t.totals} (trader_id VARCHAR, {_TOTALS_DDL})",
        f"""CREATE TABLE IF NOT EXISTS {t.history} (
        snapshot_at TIMESTAMPTZ, run_id VARCHAR, trader_id VARCHAR, trades BIGINT,
        net_mwh DOUBLE, cash_eur DOUBLE, pnl_eur DOUBLE, exposure_eur DOUBLE,
        gross_exposure_eur DOUBLE, unpriced_periods BIGINT, new_trades BIGINT,
        pnl_change_eur DOUBLE, pnl_change_trades_eur DOUBLE, pnl_change_prices_eur DOUBLE,
        days_recomputed BIGINT)""",
        f"""CREATE TABLE IF NOT EXISTS {t.trade_marks} (
        delivery_day DATE PRIMARY KEY, trades BIGINT, quantity DOUBLE, price DOUBLE,
        last_received_at TIMESTAMPTZ)""",
        f"""CREATE TABLE IF NOT EXISTS {t.prices_used} (
        delivery_day DATE, delivery_hour VARCHAR, reference_price DOUBLE,
        PRIMARY KEY (delivery_day, delivery_hour))""",
    ]


HISTORY_COLUMNS = [
    "snapshot_at",
    "run_id",
    "trader_id",
    "trades",
    "net_mwh",
    "cash_eur",
    "pnl_eur",
    "exposure_eur",
    "gross_exposure_eur",
    "unpriced_periods",
    "new_trades",
    "pnl_change_eur",
    "pnl_change_trades_eur",
    "pnl_change_prices_eur",
    "days_recomputed",
]
_PRICE_SCHEMA = {"delivery_day": pl.Date, "delivery_hour": pl.String, "reference_price": pl.Float64}


@dataclass
class RefreshResult:
    """What one refresh did, for the run's metadata and the benchmark."""

    days_recomputed: int
    trade_days_changed: int
    price_days_changed: int
    trades_read: int
    exposure: pl.DataFrame = field(repr=False)
    totals: pl.DataFrame = field(repr=False)
    daily: pl.DataFrame = field(repr=False)
    history: pl.DataFrame = field(repr=False)
    missing_inputs: list[str]
    seconds: float


def ensure_tables(conn: duckdb.DuckDBPyConnection) -> Tables:
    """Create this domain's tables if needed; return every table name, qualified."""
    ensure_schema(conn)
    t = Tables.of(conn)
    for ddl in _ddl(t):
        conn.execute(ddl)
    return t


def _changed_trade_days(
    conn: duckdb.DuckDBPyConnection, t: Tables, have_trades: bool
) -> list[date]:
    source = (
        f"""SELECT delivery_day, count(*) AS trades, sum(quantity) AS quantity,
                   sum(price) AS price, max(received_at) AS last_received_at
            FROM {t.raw_trades} GROUP BY delivery_day"""
        if have_trades
        else f"SELECT * FROM {t.trade_marks} WHERE false"
    )
    conn.execute(f"CREATE OR REPLACE TEMP TABLE exposure_trade_marks_now AS {source}")
    rows = conn.execute(
        f"""SELECT coalesce(n.delivery_day, o.delivery_day) FROM exposure_trade_marks_now n
            FULL OUTER JOIN {t.trade_marks} o USING (delivery_day)
            WHERE n.trades IS DISTINCT FROM o.trades
               OR n.quantity IS DISTINCT FROM o.quantity
               OR n.price IS DISTINCT FROM o.price
               OR n.last_received_at IS DISTINCT FROM o.last_received_at"""
    ).fetchall()
    return [r[0] for r in rows]


def _read_prices(conn: duckdb.DuckDBPyConnection, t: Tables, have_prices: bool) -> pl.DataFrame:
    if not have_prices:
        return pl.DataFrame(schema=_PRICE_SCHEMA)
    # One row per hour is the contract; if a writer ever leaves two, the latest revision wins.
    return conn.execute(
        f"""SELECT delivery_day, delivery_hour, value AS reference_price
            FROM {t.reference_prices} WHERE value IS NOT NULL
            QUALIFY row_number() OVER (
                PARTITION BY delivery_day, delivery_hour
                ORDER BY last_update DESC NULLS LAST, fetched_at DESC NULLS LAST) = 1"""
    ).pl()


def _changed_price_days(prices_now: pl.DataFrame, prices_used: pl.DataFrame) -> list[date]:
    key = ["delivery_day", "delivery_hour"]
    joined = prices_now.join(prices_used, on=key, how="full", coalesce=True, suffix="_used")
    moved = joined.filter(pl.col("reference_price").ne_missing(pl.col("reference_price_used")))
    return moved.get_column("delivery_day").unique().to_list()


def _read_trades(
    conn: duckdb.DuckDBPyConnection, t: Tables, days: list[date] | None
) -> pl.DataFrame:
    columns = "trader_id, delivery_day, delivery_hour, direction, price, quantity"
    if days is None:
        return conn.execute(f"SELECT {columns} FROM {t.raw_trades}").pl()
    if not days:
        return pl.DataFrame(schema={"delivery_day": pl.Date})
    # The BETWEEN lets DuckDB skip row groups by their min/max before the exact IN filter.
    placeholders = ", ".join("?" for _ in days)
    return conn.execute(
        f"""SELECT {columns} FROM {t.raw_trades}
            WHERE delivery_day BETWEEN ? AND ? AND delivery_day IN ({placeholders})""",
        [min(days), max(days), *days],
    ).pl()


def _in_days(frame: pl.DataFrame, days: list[date] | None) -> pl.DataFrame:
    if days is None:
        return frame
    return frame.filter(pl.col("delivery_day").is_in(pl.Series(days, dtype=pl.Date)))


def refresh(
    conn: duckdb.DuckDBPyConnection,
    snapshot_at: datetime,
    run_id: str = "",
    full: bool = False,
) -> RefreshResult:
    """Bring the exposure tables up to date with `raw_trades` and `reference_prices`.

    `full=True` recomputes every delivery day (the benchmark's baseline, and a repair).
    Appends one row per trader to `energy.trader_pnl_history`.
    """
    started = time.perf_counter()
    t = ensure_tables(conn)
    have_trades = t.exists(conn, t.raw_trades)
    have_prices = t.exists(conn, t.reference_prices)
    missing = [
        name for name, ok in ((RAW_TRADES, have_trades), (REFERENCE_PRICES, have_prices)) if not ok
    ]

    trade_days = _changed_trade_days(conn, t, have_trades)
    prices_now = _read_prices(conn, t, have_prices)
    prices_used = conn.execute(f"SELECT * FROM {t.prices_used}").pl().cast(_PRICE_SCHEMA)
    price_days = _changed_price_days(prices_now, prices_used)

    if full:
        days = None
    else:
        booked = {
            r[0]
            for r in conn.execute(
                f"SELECT delivery_day FROM exposure_trade_marks_now "
                f"UNION SELECT delivery_day FROM {t.trade_marks}"
            ).fetchall()
        }
        # A price move on a day nobody traded changes no position.
        days = sorted(set(trade_days) | (set(price_days) & booked))

    old = _in_days(conn.execute(f"SELECT * FROM {t.exposure}").pl(), days) if days != [] else None
    if old is None:
        old = pl.DataFrame(schema=EXPOSURE_SCHEMA)
    old = old.cast(EXPOSURE_SCHEMA)
    trades = _read_trades(conn, t, days) if have_trades else pl.DataFrame()
    if trades.height:
        new = mark(book(trades), _in_days(prices_now, days)).collect().cast(EXPOSURE_SCHEMA)
    else:
        new = pl.DataFrame(schema=EXPOSURE_SCHEMA)
    attribution = pnl_attribution(old, new, _in_days(prices_used, days), _in_days(prices_now, days))

    conn.execute("BEGIN TRANSACTION")
    try:
        if days is None:
            conn.execute(f"DELETE FROM {t.exposure}")
        elif days:
            conn.execute(
                f"DELETE FROM {t.exposure} WHERE delivery_day IN ({', '.join('?' for _ in days)})",
                days,
            )
        if new.height:
            conn.register("exposure_new", new.to_arrow())
            conn.execute(
                f"INSERT INTO {t.exposure} SELECT {', '.join(EXPOSURE_COLUMNS)} FROM exposure_new"
            )
            conn.unregister("exposure_new")
        conn.execute(f"DELETE FROM {t.trade_marks}")
        conn.execute(f"INSERT INTO {t.trade_marks} SELECT * FROM exposure_trade_marks_now")
        conn.execute(f"DELETE FROM {t.prices_used}")
        if prices_now.height:
            conn.register("exposure_prices_now", prices_now.to_arrow())
            conn.execute(
                f"INSERT INTO {t.prices_used} SELECT delivery_day, delivery_hour, reference_price "
                "FROM exposure_prices_now"
            )
            conn.unregister("exposure_prices_now")

        exposure = (
            conn.execute(f"SELECT * FROM {t.exposure} ORDER BY {', '.join(PERIOD_KEY)}")
            .pl()
            .cast(EXPOSURE_SCHEMA)
        )
        totals = trader_totals(exposure)
        daily = daily_totals(exposure)
        _replace(conn, t.totals, totals, ["trader_id", *TOTAL_COLUMNS])
        _replace(conn, t.daily, daily, ["trader_id", "delivery_day", *TOTAL_COLUMNS])

        history = _history_rows(totals, attribution, snapshot_at, run_id, days, exposure)
        if history.height:
            conn.register("exposure_history", history.to_arrow())
            conn.execute(
                f"INSERT INTO {t.history} SELECT {', '.join(HISTORY_COLUMNS)} FROM exposure_history"
            )
            conn.unregister("exposure_history")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise

    recomputed = exposure.get_column("delivery_day").n_unique() if days is None else len(days)
    return RefreshResult(
        days_recomputed=recomputed,
        trade_days_changed=len(trade_days),
        price_days_changed=len(price_days),
        trades_read=trades.height,
        exposure=exposure,
        totals=totals,
        daily=daily,
        history=history,
        missing_inputs=missing,
        seconds=time.perf_counter() - started,
    )


def _replace(
    conn: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame, columns: list[str]
) -> None:
    conn.execute(f"DELETE FROM {table}")
    if frame.height:
        conn.register("exposure_frame", frame.to_arrow())
        conn.execute(f"INSERT INTO {table} SELECT {', '.join(columns)} FROM exposure_frame")
        conn.unregister("exposure_frame")


def _history_rows(
    totals: pl.DataFrame,
    attribution: pl.DataFrame,
    snapshot_at: datetime,
    run_id: str,
    days: list[date] | None,
    exposure: pl.DataFrame,
) -> pl.DataFrame:
    recomputed = exposure.get_column("delivery_day").n_unique() if days is None else len(days)
    change_columns = [
        "new_trades",
        "pnl_change_eur",
        "pnl_change_trades_eur",
        "pnl_change_prices_eur",
    ]
    # Traders whose every position vanished still get a row: their change is real.
    return (
        totals.join(attribution, on="trader_id", how="full", coalesce=True)
        .with_columns(
            pl.col(change_columns).fill_null(0),
            pl.col("trades", "unpriced_periods").fill_null(0),
            pl.col("net_mwh", "cash_eur").fill_null(0.0),
            pl.lit(snapshot_at).cast(pl.Datetime("us", "UTC")).alias("snapshot_at"),
            pl.lit(run_id).alias("run_id"),
            pl.lit(recomputed, dtype=pl.Int64).alias("days_recomputed"),
        )
        .select(HISTORY_COLUMNS)
        .sort("trader_id")
    )
