"""Refreshing the exposure tables in DuckDB: recompute the market delivery days that changed,
only those, in one transaction (docs/exposure.md, "The refresh").

A day changed when `energy.raw_trades` holds another number of its deals than
`energy.trader_exposure_daily` counts, or when one of its periods is marked at another price
than the latest in `energy.reference_prices`: read off the tables, nothing kept beside them.
`raw_trades` is insert-only, so a day's count moves with every change it can have but a
correction in place, which `full_recompute` repairs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

import duckdb
import polars as pl

from energy_assets.exposure.positions import (
    ATTRIBUTION_COLUMNS,
    PERIOD,
    PERIOD_KEY,
    daily_totals,
    market_frame,
    net_positions,
    pnl_attribution,
    positions_of_sides,
)
from energy_assets.storage import transaction
from energy_assets.tables import (
    EXPOSURE_TABLES,
    RAW_TRADES,
    REFERENCE_PRICES,
    SCHEMA,
    TRADER_EXPOSURE,
    TRADER_EXPOSURE_DAILY,
    TRADER_EXPOSURE_TOTALS,
    TRADER_NET_POSITION,
    TRADER_PNL_HISTORY,
    Table,
    create,
    require_current,
)

EXPOSURE = str(TRADER_EXPOSURE)
NET_POSITION = str(TRADER_NET_POSITION)
DAILY = str(TRADER_EXPOSURE_DAILY)
TOTALS = str(TRADER_EXPOSURE_TOTALS)
HISTORY = str(TRADER_PNL_HISTORY)

#: A trader's market day: the grain of the grid's recomputation.
TRADER_DAY = ["trader_id", "market", "delivery_day"]
#: How many of the largest positions a refresh reports, per currency.
LARGEST = 10

_COUNTS = ("periods", "unpriced_periods", "trades")
# Per trader and currency, the roll-up of the daily totals: every column is a sum over periods,
# and a sum of nulls is null (nothing priced yet), as in `positions.trader_totals`.
_SUMS = ", ".join(
    f"sum({c})::BIGINT AS {c}" if c in _COUNTS else f"sum({c}) AS {c}"
    for c in TRADER_EXPOSURE_TOTALS.column_names[2:]
)
_TOTALS_VIEW = (
    f"CREATE VIEW IF NOT EXISTS {TOTALS} AS SELECT trader_id, currency, {_SUMS} "
    f"FROM {DAILY} GROUP BY trader_id, currency"
)

#: Σ per period of each side (deals, Σ MW, Σ MW·p), computed where the trades are;
#: `positions.sides` is the same in polars. Both sides on one row: pivoting them here costs
#: less than handing polars a row per side to group again (benchmarks/README.md).
SIDES_SQL = """
    SELECT trader_id, market, delivery_start, delivery_end, delivery_day, count(*) AS trades,
           sum(CASE WHEN direction = 'buy' THEN quantity ELSE 0 END) AS buy_mw,
           sum(CASE WHEN direction = 'sell' THEN quantity ELSE 0 END) AS sell_mw,
           sum(CASE WHEN direction = 'buy' THEN quantity * price ELSE 0 END) AS buy_price_mw,
           sum(CASE WHEN direction = 'sell' THEN quantity * price ELSE 0 END) AS sell_price_mw
    FROM {trades} WHERE {days}
    GROUP BY trader_id, market, delivery_start, delivery_end, delivery_day
"""
#: The latest price of each period (`reference_prices` keeps one row per period).
PRICES_SQL = """
    SELECT market, delivery_start, delivery_end, value AS reference_price
    FROM {prices} WHERE value IS NOT NULL
"""
#: The market days whose deals or prices differ from what the exposure tables hold. The deals
#: are counted per local date first (one DATE column of every deal, no string to read); only
#: the dates whose count moved are counted per market, and a filter on one date skips the rest
#: of the ledger. A date moves whenever one of its market days does: counts only grow in an
#: insert-only ledger, and a day whose deals are gone lowers its date's.
CHANGED_DAYS_SQL = """
    WITH counted AS (SELECT market, delivery_day, sum(trades) AS trades FROM {daily}
                     GROUP BY market, delivery_day),
         moved AS (SELECT delivery_day FROM
                       (SELECT delivery_day, sum(trades) AS trades FROM counted
                        GROUP BY delivery_day) c
                   FULL JOIN (SELECT delivery_day, count(*) AS trades FROM {trades}
                              GROUP BY delivery_day) d USING (delivery_day)
                   WHERE c.trades IS DISTINCT FROM d.trades),
         dealt AS (SELECT market, delivery_day, count(*) AS trades FROM {trades}
                   WHERE delivery_day IN (SELECT delivery_day FROM moved)
                   GROUP BY market, delivery_day)
    SELECT market, delivery_day
    FROM (SELECT * FROM counted WHERE delivery_day IN (SELECT delivery_day FROM moved)) counted
    FULL JOIN dealt USING (market, delivery_day)
    WHERE counted.trades IS DISTINCT FROM dealt.trades
    UNION
    SELECT e.market, e.delivery_day FROM {exposure} e
    LEFT JOIN ({prices}) p USING (market, delivery_start, delivery_end)
    WHERE e.reference_price IS DISTINCT FROM p.reference_price
    ORDER BY market, delivery_day
"""
#: The largest positions of one currency, ties by period (a top-N: no sort of the table).
LARGEST_SQL = f"""
    (SELECT * FROM {EXPOSURE} WHERE exposure IS NOT NULL AND currency = ?
     ORDER BY abs(exposure) DESC, trader_id, market, delivery_start, delivery_end LIMIT ?)"""
#: The market days to recompute, registered as a frame for one refresh.
_THE_DAYS = "(market, delivery_day) IN (SELECT market, delivery_day FROM exposure_days)"


@dataclass
class RefreshResult:
    """What one refresh did, for the run's metadata and the benchmark."""

    days_recomputed: int
    largest: pl.DataFrame = field(repr=False)
    totals: pl.DataFrame = field(repr=False)
    history: pl.DataFrame = field(repr=False)
    missing_inputs: list[str]
    seconds: float


@contextmanager
def _registered(conn: duckdb.DuckDBPyConnection, name: str, frame: pl.DataFrame) -> Iterator[None]:
    """`frame` readable as `name` in the block's SQL."""
    conn.register(name, frame)
    try:
        yield
    finally:
        conn.unregister(name)


def _empty(table: Table) -> str:
    """A stand-in for an upstream table that does not exist yet: counted as empty."""
    nulls = ", ".join(f"NULL::{c.type} AS {c.name}" for c in table.columns)
    return f"(SELECT {nulls} WHERE false)"


def ensure_tables(conn: duckdb.DuckDBPyConnection) -> None:
    """Create this domain's tables and view if needed."""
    create(conn, *EXPOSURE_TABLES)
    conn.execute(_TOTALS_VIEW)


_SHAPES = (*EXPOSURE_TABLES, TRADER_EXPOSURE_TOTALS)
#: `trader_pnl_history` columns of the hourly, euro-only warehouse, and their names now.
_RENAMED = {
    f"{c}_eur": c
    for c in TRADER_PNL_HISTORY.column_names
    if c in ("cash", "pnl", "exposure", "gross_exposure") or c.startswith("pnl_change")
}


def _migrate(conn: duckdb.DuckDBPyConnection, present: dict[str, set[str]]) -> None:
    """Bring this domain's tables to their declared shape: a derived table of another shape
    (a warehouse from before markets) is dropped, and this refresh recomputes it whole; the PnL
    history, which no refresh can remake, keeps its rows, its amounts in EUR."""
    with transaction(conn):
        for table in (TRADER_EXPOSURE_TOTALS, *EXPOSURE_TABLES):
            have = present.get(table.name)
            if have is None or have == set(table.column_names):
                continue
            if table is TRADER_PNL_HISTORY:
                for old, new in _RENAMED.items():
                    if old in have:
                        conn.execute(f"ALTER TABLE {table} RENAME COLUMN {old} TO {new}")
                if "currency" not in have:
                    conn.execute(f"ALTER TABLE {table} ADD COLUMN currency VARCHAR DEFAULT 'EUR'")
            else:
                kind = "VIEW" if table is TRADER_EXPOSURE_TOTALS else "TABLE"
                conn.execute(f"DROP {kind} {table}")
        ensure_tables(conn)


def _present(conn: duckdb.DuckDBPyConnection) -> dict[str, set[str]]:
    """The tables and views a refresh reads or writes that are in the warehouse's schema, each
    with its column names (cheaper than `duckdb_columns()`, which describes every view of the
    system catalogue too)."""
    names = [t.name for t in (RAW_TRADES, REFERENCE_PRICES, *_SHAPES)]
    present = conn.execute(
        """SELECT table_name FROM duckdb_tables()
           WHERE database_name = current_database() AND schema_name = $schema
             AND list_contains($names, table_name)
           UNION ALL
           SELECT view_name FROM duckdb_views()
           WHERE database_name = current_database() AND schema_name = $schema
             AND list_contains($names, view_name)""",
        {"schema": SCHEMA, "names": names},
    ).fetchall()
    return {
        name: {d[0] for d in conn.execute(f'SELECT * FROM {SCHEMA}."{name}" LIMIT 0').description}
        for (name,) in present
    }


def refresh(
    conn: duckdb.DuckDBPyConnection,
    snapshot_at: datetime,
    run_id: str = "",
    full: bool = False,
    markets: pl.DataFrame | None = None,
) -> RefreshResult:
    """Bring the exposure tables up to date with `raw_trades` and `reference_prices`, and
    append one row per trader and currency to `energy.trader_pnl_history`.

    `full=True` recomputes every market day: the repair after a correction in place, or after
    a market's grid changed (its whole grid is then made again).
    `markets` (`positions.market_frame`) defaults to every configured market.
    """
    started = time.perf_counter()
    present = _present(conn)
    # A grid table made in this refresh is filled whole, not only where periods moved.
    grid_made = present.get(TRADER_NET_POSITION.name) != set(TRADER_NET_POSITION.column_names)
    if any(present.get(t.name) != set(t.column_names) for t in _SHAPES):
        _migrate(conn, present)
        present = _present(conn)
    missing = [str(t) for t in (RAW_TRADES, REFERENCE_PRICES) if t.name not in present]
    trades = str(RAW_TRADES) if RAW_TRADES.name in present else _empty(RAW_TRADES)
    prices = str(REFERENCE_PRICES) if REFERENCE_PRICES.name in present else _empty(REFERENCE_PRICES)
    if REFERENCE_PRICES.name in present:
        require_current(conn, REFERENCE_PRICES, present[REFERENCE_PRICES.name])
    latest = PRICES_SQL.format(prices=prices)

    with transaction(conn):
        attribution, recomputed = None, 0
        if full:
            # Every deal is read: no filter, and the days are those held before or now.
            whole_grid = grid_made or _grid_moved(conn, markets)
            attribution, recomputed = _replace_days(
                conn, "true", trades, latest, markets, whole_grid
            )
        else:
            sql = CHANGED_DAYS_SQL.format(
                exposure=EXPOSURE, daily=DAILY, trades=trades, prices=latest
            )
            days = conn.execute(sql).pl()
            if days.height:
                with _registered(conn, "exposure_days", days):
                    attribution, _ = _replace_days(
                        conn, _THE_DAYS, trades, latest, markets, grid_made
                    )
            recomputed = days.height
        totals = conn.execute(f"SELECT * FROM {TOTALS} ORDER BY trader_id, currency").pl()
        history = _history(totals, attribution, snapshot_at, run_id, recomputed)
        _insert(conn, HISTORY, history)
        largest = _largest(conn, totals["currency"].unique().sort().to_list())
    return RefreshResult(
        days_recomputed=recomputed,
        largest=largest,
        totals=totals,
        history=history,
        missing_inputs=missing,
        seconds=time.perf_counter() - started,
    )


def _largest(conn: duckdb.DuckDBPyConnection, currencies: list[str]) -> pl.DataFrame:
    if not currencies:
        return conn.execute(f"SELECT * FROM {EXPOSURE} LIMIT 0").pl()
    sql = " UNION ALL ".join([LARGEST_SQL] * len(currencies))
    return conn.execute(sql, [v for c in currencies for v in (c, LARGEST)]).pl()


def _replace_days(
    conn: duckdb.DuckDBPyConnection,
    where: str,
    trades: str,
    latest: str,
    markets: pl.DataFrame | None,
    whole_grid: bool,
) -> tuple[pl.DataFrame, int]:
    """Recompute the market days matching `where` from their deals and the latest prices,
    replace their exposure rows, net positions and daily totals, and return each trader's PnL
    change per currency (`pnl_attribution`) and how many market days were held before or
    now. A trader's grid on a market day follows from that day's periods alone: it is made
    again only where one of them came out different, unless `whole_grid`."""
    before = conn.execute(f"SELECT * FROM {EXPOSURE} WHERE {where}").pl()
    sides = _in_order(conn, SIDES_SQL.format(trades=trades, days=where))
    # The latest prices of the periods held before or now, nothing else.
    periods = pl.concat([before.select(PERIOD), sides.select(PERIOD)], how="vertical_relaxed")
    with _registered(conn, "exposure_periods", periods.unique()):
        prices_now = conn.execute(
            f"SELECT p.* FROM ({latest}) p SEMI JOIN exposure_periods USING ({', '.join(PERIOD)})"
        ).pl()
    exposure = positions_of_sides(sides, prices_now, markets, sort=False)
    # The prices the replaced rows were marked with: one per period, whatever the trader.
    prices_before = before.select(*PERIOD, "reference_price").unique()

    stale, fresh = _replace(conn, EXPOSURE, where, exposure, before)
    if whole_grid:
        _replace(conn, NET_POSITION, where, net_positions(exposure, markets, sort=False))
    else:
        moved = pl.concat([stale.select(TRADER_DAY), fresh.select(TRADER_DAY)]).unique()
        if moved.height:
            with _registered(conn, "exposure_moved", moved):
                _replace(
                    conn,
                    NET_POSITION,
                    f"{where} AND ({', '.join(TRADER_DAY)}) IN "
                    f"(SELECT {', '.join(TRADER_DAY)} FROM exposure_moved)",
                    net_positions(exposure.join(moved, on=TRADER_DAY, how="semi"), markets, False),
                )
    conn.execute(f"DELETE FROM {DAILY} WHERE {where}")
    _insert(conn, DAILY, daily_totals(exposure))
    day = ["market", "delivery_day"]
    days = pl.concat([before.select(day), exposure.select(day)]).unique().height
    # A row unchanged, its price with it, moved no PnL: the attribution needs the others only.
    return pnl_attribution(stale, fresh, prices_before, prices_now), days


def _grid_moved(conn: duckdb.DuckDBPyConnection, markets: pl.DataFrame | None) -> bool:
    """Whether a stored grid step is not of its market's grid now (the grid changed, or the
    market is configured or no longer): a full refresh then makes the grid again whole."""
    grids = dict(
        (market_frame() if markets is None else markets)
        .select("market", "grid_minutes")
        .iter_rows()
    )
    steps = conn.execute(
        f"""SELECT DISTINCT market,
                  (epoch_us(delivery_end) - epoch_us(delivery_start)) // 60000000
           FROM {NET_POSITION}"""
    ).fetchall()
    return any(grids.get(market) != minutes for market, minutes in steps)


def _in_order(conn: duckdb.DuckDBPyConnection, sql: str) -> pl.DataFrame:
    """`sql` run on one thread. Each period's deals are then added up in the ledger's order,
    whether a full refresh reads every day or an update one: the sums come out the same to the
    last bit, so a period recomputed unchanged is found unchanged and left in place (summed by
    two threads, partial sums met in another order each time). DuckDB's `threads` belongs to
    the database, so it is set back after."""
    threads = conn.execute("SELECT current_setting('threads')").fetchone()[0]
    conn.execute("SET threads = 1")
    try:
        return conn.execute(sql).pl()
    finally:
        conn.execute(f"SET threads = {int(threads)}")


def _replace(
    conn: duckdb.DuckDBPyConnection,
    table: str,
    where: str,
    after: pl.DataFrame,
    before: pl.DataFrame | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Turn the rows `before` of `table` (one per period or grid step, of the days matching
    `where`; read when not given) into `after`: delete the rows that are no longer so, insert the new ones, and
    return both (stale, fresh). A row recomputed to the same values is not written again:
    writing was most of a full refresh, where nearly every row comes out as it was. A row
    counts as the same when both of its 64-bit hashes of every column (two seeds) are among
    the other side's: a false match needs two independent 64-bit collisions, and a lookup in
    a set of hashes is cheaper than a join on sixteen columns."""
    if before is None:
        before = conn.execute(f"SELECT * FROM {table} WHERE {where}").pl()
    before = before.cast(after.schema)
    hashes = {
        name: [frame.hash_rows(seed=seed) for seed in (0, 1)]
        for name, frame in (("before", before), ("after", after))
    }

    def kept(name: str, other: str) -> pl.Series:
        mine, theirs = hashes[name], hashes[other]
        return mine[0].is_in(theirs[0].implode()) & mine[1].is_in(theirs[1].implode())

    stale = before.filter(~kept("before", "after"))
    fresh = after.filter(~kept("after", "before"))
    if stale.height:
        with _registered(conn, "exposure_stale", stale.select(PERIOD_KEY)):
            conn.execute(
                f"DELETE FROM {table} WHERE {where} AND ({', '.join(PERIOD_KEY)}) IN "
                f"(SELECT {', '.join(PERIOD_KEY)} FROM exposure_stale)"
            )
    _insert(conn, table, fresh)
    return stale, fresh


def _insert(conn: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame) -> None:
    """Append `frame` to `table`, a day's rows together: DuckDB skips the blocks whose range
    of days a refresh's filter on its days misses, so reading or deleting one day's rows
    does not decompress the whole table."""
    if "delivery_day" in frame.columns:
        frame = frame.sort("delivery_day")
    if frame.height:
        with _registered(conn, "exposure_frame", frame):
            conn.execute(f"INSERT INTO {table} BY NAME SELECT * FROM exposure_frame")


def _history(
    totals: pl.DataFrame,
    attribution: pl.DataFrame | None,
    snapshot_at: datetime,
    run_id: str,
    days_recomputed: int,
) -> pl.DataFrame:
    """One row per trader and currency: the totals after this refresh and what moved their
    PnL."""
    key = ["trader_id", "currency"]
    changes = ATTRIBUTION_COLUMNS[2:]
    if attribution is None:  # nothing changed
        attribution = pl.DataFrame(
            schema={c: TRADER_PNL_HISTORY.polars_schema()[c] for c in ATTRIBUTION_COLUMNS}
        )
    # A trader whose every position vanished still gets a row: their change is real.
    return (
        totals.lazy()
        .join(attribution.lazy(), on=key, how="full", coalesce=True, nulls_equal=True)
        .with_columns(
            pl.col(changes).fill_null(0),
            pl.col("trades", "unpriced_periods").fill_null(0),
            pl.col("net_mwh", "cash").fill_null(0.0),
            pl.lit(snapshot_at).cast(pl.Datetime("us", "UTC")).alias("snapshot_at"),
            pl.lit(run_id).alias("run_id"),
            pl.lit(days_recomputed, dtype=pl.Int64).alias("days_recomputed"),
        )
        .select(TRADER_PNL_HISTORY.column_names)
        .sort(key, nulls_last=True)
        .collect()
    )


def published_frames(
    conn: duckdb.DuckDBPyConnection, snapshots: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """What `exposure_dashboard` publishes: every row of `trader_exposure`, and the rows of
    `trader_pnl_history` of its latest `snapshots` refreshes, oldest first."""
    ensure_tables(conn)
    confirmed = conn.execute(f"SELECT * FROM {EXPOSURE} ORDER BY {', '.join(PERIOD_KEY)}").pl()
    history = conn.execute(
        f"""SELECT * FROM {HISTORY} WHERE snapshot_at >= (
                SELECT coalesce(min(snapshot_at), '-infinity'::TIMESTAMPTZ) FROM (
                    SELECT DISTINCT snapshot_at FROM {HISTORY}
                    ORDER BY snapshot_at DESC LIMIT ?))
            ORDER BY snapshot_at, trader_id, currency""",
        [snapshots],
    ).pl()
    return confirmed, history
