"""Refreshing the exposure tables in DuckDB: which delivery days changed, and only those.

A refresh compares what `energy.raw_trades` and `energy.reference_prices` hold now with what
the previous refresh used, and recomputes only the delivery days that changed:

- trades, fast path: deals with `received_at` after the previous refresh's watermark (DuckDB
  skips the older row groups by their min/max), *checked* against the table's row count.
  `raw_trades` is an insert-only ledger keyed by deal id, so `count now = count then + new
  since the watermark` proves that no deal arrived late with an older `received_at`;
- trades, when that check fails (a late load, a repair) or on the first run: a scan of the
  per-day count and latest `received_at`, compared with `energy.trader_exposure_trade_marks`;
- prices: the price of every delivery hour as the previous refresh used it, kept in
  `energy.trader_exposure_prices`; a day whose price of any hour appeared, vanished or moved
  is affected. A refetch that returns the same value changes nothing.

The affected days' trades are summed per leg in SQL next to the data (`LEGS_SQL`: count,
Σ quantity, Σ quantity·price), so millions of deals never cross into Python; the position
maths is `positions.book_legs` and `positions.mark`. Totals are rebuilt from the exposure
rows (one per trader and period: small). Everything is written in one transaction, so a
reader sees the previous refresh or this one, never half of it.
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
    book_legs,
    daily_totals_plan,
    mark,
    pnl_attribution_plan,
    roll_up_plan,
)
from energy_assets.warehouse import SCHEMA, catalog_prefix, current_catalog, ensure_schema

EXPOSURE = f"{SCHEMA}.trader_exposure"
DAILY = f"{SCHEMA}.trader_exposure_daily"
TOTALS = f"{SCHEMA}.trader_exposure_totals"
HISTORY = f"{SCHEMA}.trader_pnl_history"
TRADE_MARKS = f"{SCHEMA}.trader_exposure_trade_marks"
PRICES_USED = f"{SCHEMA}.trader_exposure_prices"
STATE = f"{SCHEMA}.trader_exposure_state"
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
    state: str
    raw_trades: str
    reference_prices: str
    feed_gaps: str

    @classmethod
    def of(cls, conn: duckdb.DuckDBPyConnection, catalog: str | None = None) -> Tables:
        if catalog is None:
            catalog = current_catalog(conn)
        prefix = catalog_prefix(catalog)
        names = (
            EXPOSURE,
            DAILY,
            TOTALS,
            HISTORY,
            TRADE_MARKS,
            PRICES_USED,
            STATE,
            RAW_TRADES,
            REFERENCE_PRICES,
            FEED_GAPS,
        )
        return cls(catalog, *(prefix + name for name in names))

    def exists(self, conn: duckdb.DuckDBPyConnection, table: str) -> bool:
        name = table.rsplit(".", 1)[1]
        return bool(
            conn.execute(
                f"""SELECT count(*) FROM information_schema.tables
                    WHERE table_catalog = {text_literal(self.catalog)}
                      AND table_schema = {text_literal(SCHEMA)}
                      AND table_name = {text_literal(name)}"""
            ).fetchone()[0]
        )


# Literals rather than `?` parameters: binding Python parameters makes duckdb import pandas
# when it is installed (seconds, in every fresh Dagster run process).
def text_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def day_literals(days: list[date]) -> str:
    return ", ".join(f"DATE '{day.isoformat()}'" for day in days)


def timestamp_literal(value: datetime) -> str:
    return f"TIMESTAMPTZ '{value.isoformat()}'"


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
        delivery_day DATE PRIMARY KEY, trades BIGINT, last_received_at TIMESTAMPTZ)""",
        f"""CREATE TABLE IF NOT EXISTS {t.state} (
        trades_total BIGINT, received_watermark TIMESTAMPTZ, refreshed_at TIMESTAMPTZ)""",
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
#: How many of the largest positions a refresh reports.
LARGEST = 10
_PRICE_SCHEMA = {"delivery_day": pl.Date, "delivery_hour": pl.String, "reference_price": pl.Float64}


@dataclass
class RefreshResult:
    """What one refresh did, for the run's metadata and the benchmark."""

    days_recomputed: int
    trade_days_changed: int
    price_days_changed: int
    trades_read: int
    detection: str
    largest: pl.DataFrame = field(repr=False)
    totals: pl.DataFrame = field(repr=False)
    daily: pl.DataFrame = field(repr=False)
    history: pl.DataFrame = field(repr=False)
    missing_inputs: list[str]
    seconds: float


def ensure_tables(conn: duckdb.DuckDBPyConnection) -> Tables:
    """Create this domain's tables if needed; return every table name, qualified."""
    return _ensure(conn)[0]


def _ensure(conn: duckdb.DuckDBPyConnection) -> tuple[Tables, set[str]]:
    # duckdb_tables() rather than information_schema: the same answer in half the time, and
    # every refresh asks.
    catalog, names = conn.execute(
        f"""SELECT current_database(), list(table_name) FILTER (
                WHERE database_name = current_database() AND schema_name = {text_literal(SCHEMA)})
            FROM duckdb_tables()"""
    ).fetchone()
    t = Tables.of(conn, catalog)
    present = set(names or [])
    if len(present & _OWN_TABLES) < len(_OWN_TABLES):
        ensure_schema(conn)
        for ddl in _ddl(t):
            conn.execute(ddl)
        present = _present(conn, t)
    return t, present


_OWN_TABLES = {
    name.split(".")[1]
    for name in (EXPOSURE, DAILY, TOTALS, HISTORY, TRADE_MARKS, PRICES_USED, STATE)
}


def _present(conn: duckdb.DuckDBPyConnection, t: Tables) -> set[str]:
    return {
        r[0]
        for r in conn.execute(
            f"""SELECT table_name FROM information_schema.tables
                WHERE table_catalog = {text_literal(t.catalog)}
                  AND table_schema = {text_literal(SCHEMA)}"""
        ).fetchall()
    }


@dataclass
class TradeChanges:
    """Delivery days whose trades changed since the previous refresh, and the new marks."""

    days: list[date]
    marks: list[tuple]  # (delivery_day, trades, last_received_at) of `days` that have trades
    total: int
    watermark: datetime | None
    path: str  # "watermark" (checked by the row count) or "scan"
    booked: set[date] = field(default_factory=set)  # every day with trades, after this refresh


def _trade_changes(
    conn: duckdb.DuckDBPyConnection, t: Tables, have_trades: bool, full: bool
) -> TradeChanges:
    before = {
        r[0]: (r[1], r[2])
        for r in conn.execute(
            f"SELECT delivery_day, trades, last_received_at FROM {t.trade_marks}"
        ).fetchall()
    }

    def changed(days: list[date], marks: list[tuple], total, watermark, path) -> TradeChanges:
        booked = (set(before) - set(days)) | {m[0] for m in marks}
        return TradeChanges(sorted(days), marks, total, watermark, path, booked)

    if not have_trades:
        return changed(list(before), [], 0, None, "scan")
    total, known_total, watermark = conn.execute(
        f"""SELECT (SELECT count(*) FROM {t.raw_trades}), s.trades_total, s.received_watermark
            FROM (SELECT 1) LEFT JOIN {t.state} s ON true"""
    ).fetchone()
    if known_total is not None and not full:
        if watermark is None and total == known_total == 0:
            return changed([], [], 0, None, "watermark")
        if watermark is not None:
            delta = conn.execute(
                f"""SELECT delivery_day, count(*), max(received_at) FROM {t.raw_trades}
                    WHERE received_at > {timestamp_literal(watermark)} GROUP BY delivery_day"""
            ).fetchall()
            if total == known_total + sum(r[1] for r in delta):
                # Proven insert-only since the watermark: each day's mark just grows.
                marks = [
                    (day, before.get(day, (0, None))[0] + count, max_or(before.get(day), last))
                    for day, count, last in delta
                ]
                newest = max([watermark, *(r[2] for r in delta)])
                return changed([r[0] for r in delta], marks, total, newest, "watermark")
    now = conn.execute(
        f"""SELECT delivery_day, count(*), max(received_at) FROM {t.raw_trades}
            GROUP BY delivery_day"""
    ).fetchall()
    current = {r[0]: (r[1], r[2]) for r in now}
    days = [d for d in set(before) | set(current) if full or before.get(d) != current.get(d)]
    watermark = max((r[2] for r in now if r[2] is not None), default=None)
    marks = [r for r in now if r[0] in set(days)]
    return changed(days, marks, total, watermark, "scan")


def max_or(mark: tuple | None, last: datetime) -> datetime:
    return last if mark is None or mark[1] is None else max(mark[1], last)


def _days_filter(days: list[date]) -> str:
    # The BETWEEN lets DuckDB skip row groups by their min/max before the exact IN filter.
    return (
        f"delivery_day BETWEEN {day_literals([min(days)])} AND {day_literals([max(days)])} "
        f"AND delivery_day IN ({day_literals(days)})"
    )


def _latest_prices(t: Tables, where: str = "true") -> str:
    # One row per hour: the contract, and the primary key of the prices domain's table.
    return f"""SELECT delivery_day, delivery_hour, value AS reference_price
               FROM {t.reference_prices} WHERE value IS NOT NULL AND ({where})"""


def _changed_price_days(
    conn: duckdb.DuckDBPyConnection, t: Tables, have_prices: bool
) -> list[date]:
    """Days with an hour whose price appeared, vanished or moved since the last refresh."""
    latest = _latest_prices(t) if have_prices else f"SELECT * FROM {t.prices_used} WHERE false"
    return [
        r[0]
        for r in conn.execute(
            f"""SELECT DISTINCT coalesce(n.delivery_day, u.delivery_day)
                FROM ({latest}) n FULL OUTER JOIN {t.prices_used} u
                    USING (delivery_day, delivery_hour)
                WHERE n.reference_price IS DISTINCT FROM u.reference_price"""
        ).fetchall()
    ]


def _prices_now(
    conn: duckdb.DuckDBPyConnection, t: Tables, days: list[date], have_prices: bool
) -> pl.LazyFrame:
    """The latest price of every hour of `days`."""
    if not days or not have_prices:
        return pl.LazyFrame(schema=_PRICE_SCHEMA)
    rows = conn.execute(_latest_prices(t, _days_filter(days)))
    return rows.pl().lazy().cast(_PRICE_SCHEMA)


def _prices_used(conn: duckdb.DuckDBPyConnection, t: Tables, days: list[date]) -> pl.LazyFrame:
    """The price of every hour of `days` as the previous refresh used it."""
    if not days:
        return pl.LazyFrame(schema=_PRICE_SCHEMA)
    rows = conn.execute(f"SELECT * FROM {t.prices_used} WHERE {_days_filter(days)}")
    return rows.pl().lazy().cast(_PRICE_SCHEMA)


#: Σ per leg (period and direction), computed where the trades are; `positions.legs` is the
#: same in polars, and the tests hold the two equal.
LEGS_SQL = """
    SELECT trader_id, delivery_day, delivery_hour, direction, count(*) AS trades,
           sum(quantity) AS mwh, sum(quantity * price) AS eur
    FROM {raw_trades} WHERE {where}
    GROUP BY trader_id, delivery_day, delivery_hour, direction
"""
_LEGS_SCHEMA = {
    "trader_id": pl.String,
    "delivery_day": pl.Date,
    "delivery_hour": pl.String,
    "direction": pl.String,
    "trades": pl.Int64,
    "mwh": pl.Float64,
    "eur": pl.Float64,
}


def read_legs(conn: duckdb.DuckDBPyConnection, t: Tables, days: list[date]) -> pl.DataFrame:
    """The legs of the given delivery days, summed in DuckDB."""
    if not days:
        return pl.DataFrame(schema=_LEGS_SCHEMA)
    sql = LEGS_SQL.format(raw_trades=t.raw_trades, where=_days_filter(days))
    return conn.execute(sql).pl().cast(_LEGS_SCHEMA)


def refresh(
    conn: duckdb.DuckDBPyConnection,
    snapshot_at: datetime,
    run_id: str = "",
    full: bool = False,
) -> RefreshResult:
    """Bring the exposure tables up to date with `raw_trades` and `reference_prices`.

    `full=True` recomputes every delivery day (the benchmark's baseline, and the repair
    after anything but inserts touched `raw_trades`).
    Appends one row per trader to `energy.trader_pnl_history`.
    """
    started = time.perf_counter()
    t, present = _ensure(conn)
    have_trades = RAW_TRADES.split(".")[1] in present
    have_prices = REFERENCE_PRICES.split(".")[1] in present
    missing = [
        name for name, ok in ((RAW_TRADES, have_trades), (REFERENCE_PRICES, have_prices)) if not ok
    ]

    changes = _trade_changes(conn, t, have_trades, full)
    price_days = _changed_price_days(conn, t, have_prices)

    # A price move on a day nobody traded changes no position.
    days = sorted(set(changes.days) | (set(price_days) & changes.booked))

    prices_now = _prices_now(conn, t, days, have_prices)
    prices_used = _prices_used(conn, t, days)
    old = _read_exposure(conn, t, days)
    legs_frame = read_legs(conn, t, days) if have_trades else pl.DataFrame(schema=_LEGS_SCHEMA)
    daily_before = conn.execute(f"SELECT * FROM {t.daily}").pl()
    # One plan, collected at once on the in-memory engine: the frames of a small update are a
    # few hundred rows, where polars' fixed cost per query is what counts, and polars 2's
    # default (streaming) engine pays 2-3x more of it (13.5 vs 5.8 ms for these five frames).
    new_plan = mark(book_legs(legs_frame), prices_now).sort(PERIOD_KEY).cast(EXPOSURE_SCHEMA)
    daily_new_plan = daily_totals_plan(new_plan)
    daily_plan = (
        pl.concat(
            [daily_before.lazy().filter(~_is_in(days)), daily_new_plan], how="vertical_relaxed"
        )
        .sort("trader_id", "delivery_day")
        .select("trader_id", "delivery_day", *TOTAL_COLUMNS)
    )
    totals_plan = roll_up_plan(daily_plan)
    history_plan = _history_plan(
        totals_plan,
        pnl_attribution_plan(old, new_plan, prices_used, prices_now),
        snapshot_at,
        run_id,
        len(days),
    )
    new, daily_new, daily, totals, history = pl.collect_all(
        [new_plan, daily_new_plan, daily_plan, totals_plan, history_plan], engine="in-memory"
    )

    # One script in one transaction: fewer round trips, and all or nothing.
    script = []
    if days:
        script.append(f"DELETE FROM {t.exposure} WHERE delivery_day IN ({day_literals(days)})")
        script.append(f"DELETE FROM {t.daily} WHERE delivery_day IN ({day_literals(days)})")
    if changes.days:
        # Only days whose trades changed get new marks; a price-only day keeps its own.
        script.append(
            f"DELETE FROM {t.trade_marks} WHERE delivery_day IN ({day_literals(changes.days)})"
        )
    if changes.marks:
        values = ", ".join(
            f"({day_literals([day])}, {count}, {timestamp_literal(last)})"
            for day, count, last in changes.marks
        )
        script.append(f"INSERT INTO {t.trade_marks} VALUES {values}")
    watermark = timestamp_literal(changes.watermark) if changes.watermark else "NULL"
    script.append(f"DELETE FROM {t.state}")
    script.append(
        f"INSERT INTO {t.state} VALUES "
        f"({changes.total}, {watermark}, {timestamp_literal(snapshot_at)})"
    )
    if price_days:
        script.append(
            f"DELETE FROM {t.prices_used} WHERE delivery_day IN ({day_literals(price_days)})"
        )
        if have_prices:
            script.append(
                f"""INSERT INTO {t.prices_used}
                    {_latest_prices(t, _days_filter(price_days))}"""
            )
    script.append(f"DELETE FROM {t.totals}")
    frames = {
        t.exposure: (new, EXPOSURE_COLUMNS),
        t.daily: (daily_new, ["trader_id", "delivery_day", *TOTAL_COLUMNS]),
        t.totals: (totals, ["trader_id", *TOTAL_COLUMNS]),
        t.history: (history, HISTORY_COLUMNS),
    }
    registered = []
    for i, (table, (frame, columns)) in enumerate(frames.items()):
        if frame.height:
            name = f"exposure_frame_{i}"
            conn.register(name, frame.select(columns).to_arrow())
            registered.append(name)
            script.append(f"INSERT INTO {table} SELECT {', '.join(columns)} FROM {name}")
    try:
        conn.execute("BEGIN TRANSACTION")
        try:
            conn.execute(";\n".join(script))
            largest = _largest(conn, t)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        for name in registered:
            conn.unregister(name)

    return RefreshResult(
        days_recomputed=len(days),
        trade_days_changed=len(changes.days),
        price_days_changed=len(price_days),
        trades_read=int(legs_frame["trades"].sum() or 0),
        detection=changes.path,
        largest=largest,
        totals=totals,
        daily=daily,
        history=history,
        missing_inputs=missing,
        seconds=time.perf_counter() - started,
    )


def _largest(conn: duckdb.DuckDBPyConnection, t: Tables) -> pl.DataFrame:
    """The LARGEST periods by |exposure_eur| (ties by period).

    In two steps: the LARGEST-th |exposure| alone is a cheap top-N over one column, and the
    rows at or above it are few; a single ORDER BY over every column of every period cost
    twice as much (4.5 ms of a 37 ms refresh at 10 M trades)."""
    threshold = conn.execute(
        f"""SELECT abs(exposure_eur) AS size FROM {t.exposure} WHERE exposure_eur IS NOT NULL
            ORDER BY size DESC LIMIT 1 OFFSET {LARGEST - 1}"""
    ).fetchone()
    # The text form of a float round-trips exactly (repr), NaN and infinities included.
    at_least = f"abs(exposure_eur) >= '{threshold[0]!r}'::DOUBLE" if threshold else "true"
    return conn.execute(
        f"""SELECT * FROM {t.exposure} WHERE exposure_eur IS NOT NULL AND {at_least}
            ORDER BY abs(exposure_eur) DESC, trader_id, delivery_day, delivery_hour
            LIMIT {LARGEST}"""
    ).pl()


def _read_exposure(conn: duckdb.DuckDBPyConnection, t: Tables, days: list[date]) -> pl.LazyFrame:
    if not days:
        return pl.LazyFrame(schema=EXPOSURE_SCHEMA)
    rows = conn.execute(f"SELECT * FROM {t.exposure} WHERE {_days_filter(days)}").pl()
    return rows.lazy().cast(EXPOSURE_SCHEMA)


def _is_in(days: list[date]) -> pl.Expr:
    return pl.col("delivery_day").is_in(pl.Series(days, dtype=pl.Date).implode())


def _history_plan(
    totals: pl.LazyFrame,
    attribution: pl.LazyFrame,
    snapshot_at: datetime,
    run_id: str,
    days_recomputed: int,
) -> pl.LazyFrame:
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
            pl.lit(days_recomputed, dtype=pl.Int64).alias("days_recomputed"),
        )
        .select(HISTORY_COLUMNS)
        .sort("trader_id")
    )
