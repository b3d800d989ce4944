"""Refreshing the exposure tables in DuckDB: which delivery days changed, and only those.

A refresh compares what `energy.raw_trades` and `energy.reference_prices` hold now with what
the previous refresh used, and recomputes only the delivery days that changed:

- trades, fast path: deals with `received_at` after the previous refresh's watermark (DuckDB
  skips the older row groups by their min/max), *checked* against the table's row count. Both
  come from `energy.trader_exposure_trade_marks` (per delivery day: the count and latest
  `received_at` last used): their sum and their latest.
  `raw_trades` is an insert-only ledger keyed by deal id, so `count now = count then + new
  since the watermark` proves that no deal arrived late with an older `received_at`;
- trades, when that check fails (a late load, a repair) or on the first run: a scan of the
  per-day count and latest `received_at`, compared with the marks;
- prices: the price of every delivery hour as the previous refresh used it, kept in
  `energy.trader_exposure_prices`; a day whose price of any hour appeared, vanished or moved
  is affected. A refetch that returns the same value changes nothing.

Trades are summed per leg in SQL next to the data (`LEGS_SQL`: count, Σ quantity,
Σ quantity·price), so millions of deals never cross into Python. On the fast path only the new
deals are: they are added to the affected days' exposure rows (`positions.rebook`), and a day
whose prices alone moved is re-marked from its rows, so a refresh reads what arrived since the
last one whatever the day already holds. Otherwise (first run, a late load, a full recompute)
every deal of the affected days is read and booked afresh (`positions.book_legs`). Either way
the prices go on with `positions.mark`. The per-trader totals table is a view
summing the daily totals (one row per trader and day: small). The largest positions come from
`energy.trader_exposure_top`, the LARGEST of each delivery day, rewritten with the day: the
overall LARGEST are among them, so no refresh sorts the whole exposure table. Everything is
written in one transaction, so a reader sees the previous refresh or this one, never half of
it.

A small update costs what its statements cost (a few tenths of a millisecond each, whatever
the rows), so the usual refresh counts them: one finds what changed (`_detect_sql`), one
reads the inputs of the changed days and what it keeps of the others, one script writes; small
frames go into that script as literals rather than through Arrow.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import date, datetime

import duckdb
import polars as pl

from energy_assets.exposure.positions import (
    BOOK_COLUMNS,
    EXPOSURE_COLUMNS,
    EXPOSURE_SCHEMA,
    PERIOD_KEY,
    TOTAL_COLUMNS,
    book_legs,
    daily_totals_plan,
    mark,
    pnl_attribution_plan,
    rebook,
    roll_up_plan,
)
from energy_assets.warehouse import SCHEMA, catalog_prefix, current_catalog, ensure_schema

EXPOSURE = f"{SCHEMA}.trader_exposure"
DAILY = f"{SCHEMA}.trader_exposure_daily"
TOTALS = f"{SCHEMA}.trader_exposure_totals"
HISTORY = f"{SCHEMA}.trader_pnl_history"
TRADE_MARKS = f"{SCHEMA}.trader_exposure_trade_marks"
PRICES_USED = f"{SCHEMA}.trader_exposure_prices"
#: A table of earlier versions (row count and watermark): both are the sums of the marks.
OLD_STATE = f"{SCHEMA}.trader_exposure_state"
TOP = f"{SCHEMA}.trader_exposure_top"
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
    top: str
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
            TOP,
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


#: How many of the largest positions a refresh reports.
LARGEST = 10
#: The order of "largest": |exposure_eur| first, ties by period (`_by_size` in polars).
_BY_SIZE = "abs(exposure_eur) DESC, trader_id, delivery_day, delivery_hour"

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
        # Totals per trader are the roll-up of the daily totals: a view, so no refresh writes
        # them (and they cannot disagree with the daily rows).
        f"CREATE OR REPLACE VIEW {t.totals} AS {_others_sql(t, 'true')} ORDER BY trader_id",
        f"""CREATE TABLE IF NOT EXISTS {t.history} (
        snapshot_at TIMESTAMPTZ, run_id VARCHAR, trader_id VARCHAR, trades BIGINT,
        net_mwh DOUBLE, cash_eur DOUBLE, pnl_eur DOUBLE, exposure_eur DOUBLE,
        gross_exposure_eur DOUBLE, unpriced_periods BIGINT, new_trades BIGINT,
        pnl_change_eur DOUBLE, pnl_change_trades_eur DOUBLE, pnl_change_prices_eur DOUBLE,
        days_recomputed BIGINT)""",
        f"""CREATE TABLE IF NOT EXISTS {t.trade_marks} (
        delivery_day DATE PRIMARY KEY, trades BIGINT, last_received_at TIMESTAMPTZ)""",
        f"""CREATE TABLE IF NOT EXISTS {t.prices_used} (
        delivery_day DATE, delivery_hour VARCHAR, reference_price DOUBLE,
        PRIMARY KEY (delivery_day, delivery_hour))""",
        # Filled from the exposure table when created, so that a database from before this
        # table gets the same rows a refresh would have written.
        f"""CREATE TABLE IF NOT EXISTS {t.top} AS SELECT * FROM {t.exposure}
        WHERE exposure_eur IS NOT NULL
        QUALIFY row_number() OVER (PARTITION BY delivery_day ORDER BY {_BY_SIZE}) <= {LARGEST}""",
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
    trades_read: int  # rows of raw_trades summed: the new deals, or every deal of the days
    detection: str
    largest: pl.DataFrame = field(repr=False)
    totals: pl.DataFrame = field(repr=False)
    daily_recomputed: pl.DataFrame = field(repr=False)  # the recomputed days' daily totals
    history: pl.DataFrame = field(repr=False)
    missing_inputs: list[str]
    seconds: float


def ensure_tables(conn: duckdb.DuckDBPyConnection) -> Tables:
    """Create this domain's tables if needed; return every table name, qualified."""
    return _ensure(conn)[0]


def _ensure(conn: duckdb.DuckDBPyConnection) -> tuple[Tables, set[str]]:
    # duckdb_tables() rather than information_schema: the same answer in half the time, and
    # every refresh asks.
    ours = f"database_name = current_database() AND schema_name = {text_literal(SCHEMA)}"
    catalog, names, views = conn.execute(
        f"""SELECT current_database(),
                   (SELECT list(table_name) FROM duckdb_tables() WHERE {ours}),
                   (SELECT list(view_name) FROM duckdb_views() WHERE {ours})"""
    ).fetchone()
    t = Tables.of(conn, catalog)
    present = set(names or [])
    stale = _OLD_STATE in present
    if len(present & _OWN_TABLES) < len(_OWN_TABLES) or _TOTALS_VIEW not in (views or []) or stale:
        ensure_schema(conn)
        if _TOTALS_VIEW in present:
            # A database from before the totals became a view.
            conn.execute(f"DROP TABLE {t.totals}")
        if stale:
            conn.execute(f"DROP TABLE {catalog_prefix(t.catalog)}{OLD_STATE}")
        for ddl in _ddl(t):
            conn.execute(ddl)
        present = _present(conn, t)
    return t, present


_OWN_TABLES = {
    name.split(".")[1] for name in (EXPOSURE, DAILY, HISTORY, TRADE_MARKS, PRICES_USED, TOP)
}
_TOTALS_VIEW = TOTALS.split(".")[1]
_OLD_STATE = OLD_STATE.split(".")[1]


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

    def changed(days: list[date], marks: list[tuple], path: str) -> TradeChanges:
        booked = (set(before) - set(days)) | {m[0] for m in marks}
        return TradeChanges(sorted(days), marks, path, booked)

    if not have_trades:
        return changed(list(before), [], "scan")
    # The watermark path is `_detect_fast`'s; a refresh gets here when it did not apply (or a
    # table was missing): the per-day scan decides.
    now = conn.execute(
        f"""SELECT delivery_day, count(*), max(received_at) FROM {t.raw_trades}
            GROUP BY delivery_day"""
    ).fetchall()
    current = {r[0]: (r[1], r[2]) for r in now}
    days = [d for d in set(before) | set(current) if full or before.get(d) != current.get(d)]
    marks = [r for r in now if r[0] in set(days)]
    return changed(days, marks, "scan")


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
    return [r[0] for r in conn.execute(_moved_prices_sql(latest, t)).fetchall()]


def _moved_prices_sql(latest: str, t: Tables) -> str:
    return f"""SELECT DISTINCT coalesce(n.delivery_day, u.delivery_day) AS delivery_day
               FROM ({latest}) n FULL OUTER JOIN {t.prices_used} u
                   USING (delivery_day, delivery_hour)
               WHERE n.reference_price IS DISTINCT FROM u.reference_price"""


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
    if not full:
        # The usual refresh: every table there, a few new deals or prices since the last one.
        # A statement costs more than the rows of such an update: one finds what changed,
        # one reads what the refresh needs (`_read_inputs`), one script writes.
        try:
            t = Tables.of(conn)
            detected = _detect_fast(conn, t)
            if detected is not None:
                return _update(conn, t, detected, snapshot_at, run_id, started)
        except duckdb.CatalogException:
            # A table is missing (a new database, one from before a table of ours, no
            # upstream yet); nothing was written. The checked path creates ours.
            pass
    t, present = _ensure(conn)
    have_trades = RAW_TRADES.split(".")[1] in present
    have_prices = REFERENCE_PRICES.split(".")[1] in present
    detected = Detected(
        _trade_changes(conn, t, have_trades, full),
        _changed_price_days(conn, t, have_prices),
        have_trades,
        have_prices,
    )
    return _update(conn, t, detected, snapshot_at, run_id, started, full)


@dataclass
class Detected:
    """What changed since the previous refresh, and which upstream tables exist."""

    changes: TradeChanges
    price_days: list[date]
    have_trades: bool = True
    have_prices: bool = True
    # On the watermark path, the deals since the previous refresh are all there is to add:
    # (watermark, newest received_at, how many). The recomputed days are rebooked from their
    # exposure rows with these deals' legs.
    new_deals: tuple[datetime, datetime, int] | None = None

    @property
    def missing(self) -> list[str]:
        inputs = ((RAW_TRADES, self.have_trades), (REFERENCE_PRICES, self.have_prices))
        return [name for name, ok in inputs if not ok]


def _detect_sql(t: Tables) -> str:
    """`_trade_changes` and `_changed_price_days` of the watermark path, as rows of one query:
    `state` (the row counts and the watermark), `delta` (per day, the deals since the
    watermark and the day's previous mark), `moved` (the days with a price that appeared,
    vanished or moved, and whether they had trades)."""
    return f"""
        SELECT 'state' AS part, (SELECT count(*) FROM {t.raw_trades}) AS trades_now,
               sum(trades)::BIGINT AS trades_before, max(last_received_at) AS received
        FROM {t.trade_marks}
        UNION ALL BY NAME
        SELECT 'delta' AS part, d.delivery_day, d.trades_now, m.trades AS trades_before,
               d.received, m.last_received_at AS received_before
        FROM (SELECT delivery_day, count(*) AS trades_now, max(received_at) AS received
              FROM {t.raw_trades}
              WHERE received_at > (SELECT max(last_received_at) FROM {t.trade_marks})
              GROUP BY delivery_day) d
            LEFT JOIN {t.trade_marks} m USING (delivery_day)
        UNION ALL BY NAME
        SELECT 'moved' AS part, p.delivery_day, m.delivery_day IS NOT NULL AS booked
        FROM ({_moved_prices_sql(_latest_prices(t), t)}) p
            LEFT JOIN {t.trade_marks} m USING (delivery_day)"""


def _detect_fast(conn: duckdb.DuckDBPyConnection, t: Tables) -> Detected | None:
    """What changed, in one statement (`_detect_sql`); None when the watermark path does not
    apply (first refresh, a late load: the scan of `_trade_changes` decides).

    Raises `duckdb.CatalogException` when a table is missing."""
    cursor = conn.execute(_detect_sql(t))
    names = [d[0] for d in cursor.description]
    rows: dict[str, list[dict]] = {"state": [], "delta": [], "moved": []}
    for row in cursor.fetchall():
        named = dict(zip(names, row, strict=True))
        rows[named["part"]].append(named)
    (state,), delta, moved = rows["state"], rows["delta"], rows["moved"]
    total, known_total, watermark = state["trades_now"], state["trades_before"], state["received"]
    if known_total is None or total != known_total + sum(r["trades_now"] for r in delta):
        return None
    # Proven insert-only since the watermark: each day's mark just grows.
    marks = [
        (
            r["delivery_day"],
            (r["trades_before"] or 0) + r["trades_now"],
            max(filter(None, (r["received_before"], r["received"]))),
        )
        for r in delta
    ]
    changes = TradeChanges(sorted(m[0] for m in marks), marks, "watermark")
    # Of the days whose prices moved, those with trades after this refresh (marked before,
    # or new): the only ones `_update` asks about.
    changes.booked = {r["delivery_day"] for r in moved if r["booked"]} | set(changes.days)
    return Detected(
        changes,
        [r["delivery_day"] for r in moved],
        new_deals=(watermark, max([watermark, *(m[2] for m in marks)]), total - known_total),
    )


#: How a refresh collects its plans. Their inputs are frames already read (no scan to push
#: a filter or a projection into), of a few hundred rows in a small update, where polars'
#: fixed cost per query is what counts: the in-memory engine (polars 2's default, streaming,
#: pays 2-3x more of it), and no optimisation passes (~0.6 ms a small refresh; a full
#: recompute runs as fast without them).
_PLAN = {"engine": "in-memory", "optimizations": pl.QueryOptFlags.none()}


def _update(
    conn: duckdb.DuckDBPyConnection,
    t: Tables,
    detected: Detected,
    snapshot_at: datetime,
    run_id: str,
    started: float,
    full: bool = False,
) -> RefreshResult:
    changes, price_days = detected.changes, detected.price_days
    # A price move on a day nobody traded changes no position.
    days = sorted(set(changes.days) | (set(price_days) & changes.booked))

    new_deals = detected.new_deals
    parts = _read_inputs(conn, t, days, detected.have_trades, detected.have_prices, new_deals)
    prices_now = parts["now"]
    # The book of the recomputed days: on the watermark path, their rows as the previous
    # refresh left them with the new deals added (the day's earlier deals are not read
    # again); otherwise all their deals, booked afresh.
    booked = book_legs(parts["legs"]) if new_deals is None else rebook(parts["old"], parts["legs"])
    # Two plans, collected as `_PLAN` says. The exposure rows first: everything else derives
    # from them, and reads them cheaper as a frame than as a shared subplan.
    new = mark(booked, prices_now).sort(PERIOD_KEY).cast(EXPOSURE_SCHEMA).collect(**_PLAN)
    new_plan = new.lazy()
    daily_new_plan = daily_totals_plan(new_plan)
    # Totals: the other days' daily totals, already summed per trader next to the data
    # (`_read_inputs`), rolled up with the recomputed days'. Every total is a sum, so this is
    # the roll-up of every day's daily totals.
    totals_plan = roll_up_plan(
        pl.concat(
            [parts["others"], daily_new_plan.select("trader_id", *TOTAL_COLUMNS)],
            how="vertical_relaxed",
        )
    )
    history_plan = _history_plan(
        totals_plan,
        pnl_attribution_plan(parts["old"], new_plan, parts["used"], prices_now),
        snapshot_at,
        run_id,
        len(days),
    )
    # The LARGEST of each recomputed day, kept in `trader_exposure_top`: the overall LARGEST
    # are among them and those of the other days, without a look at the whole table. Rows
    # in period order, so an ordinal rank breaks ties of size by period, as `_BY_SIZE` does.
    top_new_plan = new_plan.filter(
        pl.col("exposure_eur").is_not_null()
        & (
            pl.col("exposure_eur").abs().rank("ordinal", descending=True).over("delivery_day")
            <= LARGEST
        )
    )
    # A full recompute rebuilds the table: nothing kept in it counts.
    top_others = pl.LazyFrame(schema=EXPOSURE_SCHEMA) if full else parts["top"]
    largest_plan = _by_size(pl.concat([top_new_plan, top_others])).head(LARGEST)
    daily_new, totals, history, top_new, largest = pl.collect_all(
        [daily_new_plan, totals_plan, history_plan, top_new_plan, largest_plan], **_PLAN
    )

    # One script in one transaction: fewer round trips, and all or nothing.
    script = []
    if full:
        script.append(f"DELETE FROM {t.top}")
    if days:
        script.append(f"DELETE FROM {t.exposure} WHERE delivery_day IN ({day_literals(days)})")
        script.append(f"DELETE FROM {t.daily} WHERE delivery_day IN ({day_literals(days)})")
        if not full:
            script.append(f"DELETE FROM {t.top} WHERE delivery_day IN ({day_literals(days)})")
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
    if price_days:
        script.append(
            f"DELETE FROM {t.prices_used} WHERE delivery_day IN ({day_literals(price_days)})"
        )
        if detected.have_prices:
            script.append(
                f"""INSERT INTO {t.prices_used}
                    {_latest_prices(t, _days_filter(price_days))}"""
            )
    frames = {
        t.exposure: (new, EXPOSURE_COLUMNS),
        t.daily: (daily_new, ["trader_id", "delivery_day", *TOTAL_COLUMNS]),
        t.history: (history, HISTORY_COLUMNS),
        t.top: (top_new, EXPOSURE_COLUMNS),
    }
    registered = []
    for i, (table, (frame, columns)) in enumerate(frames.items()):
        if not frame.height:
            continue
        values = _values(frame, columns) if frame.height <= _LITERAL_ROWS else None
        if values is not None:
            script.append(f"INSERT INTO {table} ({', '.join(columns)}) {values}")
        else:
            name = f"exposure_frame_{i}"
            conn.register(name, frame.to_arrow())
            registered.append(name)
            script.append(
                f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(columns)} FROM {name}"
            )
    try:
        # The transaction's ends in the script too: two round trips fewer.
        conn.execute(";\n".join(["BEGIN TRANSACTION", *script, "COMMIT"]))
    except BaseException:
        try:
            conn.execute("ROLLBACK")
        except duckdb.TransactionException:
            pass  # a COMMIT that failed has rolled back already
        raise
    finally:
        for name in registered:
            conn.unregister(name)

    return RefreshResult(
        days_recomputed=len(days),
        trade_days_changed=len(changes.days),
        price_days_changed=len(price_days),
        trades_read=int(new["trades"].sum() or 0) if new_deals is None else new_deals[2],
        detection=changes.path,
        largest=largest,
        totals=totals,
        daily_recomputed=daily_new,
        history=history,
        missing_inputs=detected.missing,
        seconds=time.perf_counter() - started,
    )


def _by_size(frame: pl.LazyFrame) -> pl.LazyFrame:
    """`frame` in the order of `_BY_SIZE`."""
    return frame.sort(
        pl.col("exposure_eur").abs(),
        "trader_id",
        "delivery_day",
        "delivery_hour",
        descending=[True, False, False, False],
    )


_COUNTS = ("periods", "unpriced_periods", "trades")
_TOTALS_SCHEMA = {
    "trader_id": pl.String,
    **{c: pl.Int64 for c in _COUNTS},
    **{c: pl.Float64 for c in TOTAL_COLUMNS[len(_COUNTS) :]},
}


def _others_sql(t: Tables, where: str) -> str:
    """The daily totals of the days matching `where`, summed per trader: `roll_up` in SQL
    (a sum of nulls is null, as there), for the days a refresh leaves as they were."""
    sums = [
        f"sum({c})::BIGINT AS {c}" if c in _COUNTS else f"sum({c}) AS {c}" for c in TOTAL_COLUMNS
    ]
    return f"SELECT trader_id, {', '.join(sums)} FROM {t.daily} WHERE {where} GROUP BY trader_id"


#: The book of an exposure row: what a refresh keeps of the recomputed days' rows.
_OLD_SCHEMA = {c: EXPOSURE_SCHEMA[c] for c in BOOK_COLUMNS}


def _part(split: dict, name: str, schema: dict) -> pl.LazyFrame:
    if (name,) not in split:
        return pl.LazyFrame(schema=schema)
    frame = split[(name,)]
    # A cast is one more step of every plan that reads the part; most need none. (`.schema`
    # builds a new Schema at each call: once.)
    have = frame.schema
    lazy = frame.lazy().select(list(schema))
    return lazy if all(have[c] == dtype for c, dtype in schema.items()) else lazy.cast(schema)


def _read_inputs(
    conn: duckdb.DuckDBPyConnection,
    t: Tables,
    days: list[date],
    have_trades: bool,
    have_prices: bool,
    new_deals: tuple[datetime, datetime, int] | None = None,
) -> dict[str, pl.LazyFrame]:
    """What a refresh reads, in one statement. Of the days it does not recompute, as the
    previous refresh left them: their daily totals summed per trader (`others`) and their
    LARGEST periods (`top`), a few rows either. Of the recomputed `days`: the legs
    (`LEGS_SQL`) of all their deals, or of the `new_deals` only (received after the previous
    watermark, up to the newest detected), their exposure rows before this refresh (`old`:
    the book those new deals add to, and for the PnL attribution), and the latest price of
    every hour (`now`) with the one the previous refresh used (`used`)."""
    where = _days_filter(days) if days else "false"
    kept = f"delivery_day NOT IN ({day_literals(days)})" if days else "true"
    deals = where
    if new_deals is not None:
        after, newest, count = new_deals
        # The row groups received before are skipped by their min/max.
        deals = (
            f"received_at > {timestamp_literal(after)} AND received_at <= {timestamp_literal(newest)}"
            if count
            else "false"
        )
    parts = {
        "others": (_TOTALS_SCHEMA, _others_sql(t, kept)),
        "top": (
            EXPOSURE_SCHEMA,
            f"""SELECT * FROM {t.top} WHERE exposure_eur IS NOT NULL AND {kept}
                ORDER BY {_BY_SIZE} LIMIT {LARGEST}""",
        ),
        "legs": (
            _LEGS_SCHEMA,
            LEGS_SQL.format(raw_trades=t.raw_trades, where=deals) if have_trades else None,
        ),
        "old": (_OLD_SCHEMA, f"SELECT {', '.join(_OLD_SCHEMA)} FROM {t.exposure} WHERE {where}"),
        "now": (_PRICE_SCHEMA, _latest_prices(t, where) if have_prices else None),
        "used": (_PRICE_SCHEMA, f"SELECT * FROM {t.prices_used} WHERE {where}"),
    }
    selects = [
        f"(SELECT '{name}' AS part, * FROM ({sql}))"
        for name, (_, sql) in parts.items()
        if sql is not None
    ]
    rows = conn.execute("\nUNION ALL BY NAME\n".join(selects)).pl()
    split = rows.partition_by("part", as_dict=True)
    return {name: _part(split, name, schema) for name, (schema, _) in parts.items()}


#: Up to this many rows, a frame is written as literals in the script: handing a frame over
#: as Arrow costs about a millisecond whatever its size (register, scan, unregister), a
#: dozen rows of literals a fraction of that.
_LITERAL_ROWS = 32


def _values(frame: pl.DataFrame, columns: list[str]) -> str | None:
    """`VALUES (...), ...` of `frame`'s `columns`, every value exactly as it is; None when a
    column's type has no literal here."""
    schema = frame.schema
    formats = [_LITERALS.get(type(schema[c])) for c in columns]
    if None in formats:
        return None
    cells = [
        ["NULL" if v is None else f(v) for v in frame.get_column(c).to_list()]
        for f, c in zip(formats, columns, strict=True)
    ]
    return "VALUES " + ", ".join(f"({', '.join(row)})" for row in zip(*cells, strict=True))


def _float_literal(value: float) -> str:
    # The repr of a float reads back as the same double. With an exponent DuckDB reads it as
    # a DOUBLE straight away (a plain 1.5 is a DECIMAL, rounded once more on its way to
    # DOUBLE), and a cast per value would cost twice the whole statement.
    text = repr(value)
    if not math.isfinite(value):
        return f"'{text}'::DOUBLE"
    return text if "e" in text else text + "e0"


_LITERALS = {
    pl.String: text_literal,
    pl.Date: lambda v: f"DATE '{v.isoformat()}'",
    pl.Datetime: timestamp_literal,
    pl.Int64: str,
    pl.Float64: _float_literal,
}


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
