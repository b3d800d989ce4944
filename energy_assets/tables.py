"""The warehouse's tables, declared once: every domain, benchmark and test fixture creates and
names them from here.

Each table lives in schema `energy` and is named plainly, `energy.<table>`: the warehouse file
(`data/warehouse.duckdb`) is catalog `warehouse`, so the name resolves in any DuckDB client.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import polars as pl

if TYPE_CHECKING:  # the live desk reads these shapes and loads neither
    import dagster as dg
    import duckdb

#: The schema that holds every table of the platform.
SCHEMA = "energy"


#: DuckDB type -> polars type: instants are UTC, as DuckDB hands them to polars once cast.
_POLARS_TYPES: dict[str, pl.DataType] = {
    "VARCHAR": pl.String,
    "DOUBLE": pl.Float64,
    "BIGINT": pl.Int64,
    "INTEGER": pl.Int32,
    "BOOLEAN": pl.Boolean,
    "DATE": pl.Date,
    "TIMESTAMPTZ": pl.Datetime("us", "UTC"),
}


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    description: str
    nullable: bool = False


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...] = ()

    def __str__(self) -> str:
        """`energy.<name>`, the name to use in SQL: `f"SELECT count(*) FROM {RAW_TRADES}"`."""
        return f"{SCHEMA}.{self.name}"

    @property
    def column_names(self) -> list[str]:
        return [column.name for column in self.columns]

    def polars_schema(self) -> dict[str, pl.DataType]:
        """The columns as polars types, for frames and files of this table's shape."""
        return {c.name: _POLARS_TYPES[c.type] for c in self.columns}

    def ddl(self) -> str:
        lines = [f"{c.name} {c.type}{'' if c.nullable else ' NOT NULL'}" for c in self.columns]
        if self.primary_key:
            lines.append(f"PRIMARY KEY ({', '.join(self.primary_key)})")
        return f"CREATE TABLE IF NOT EXISTS {self} (\n    " + ",\n    ".join(lines) + "\n)"

    def definition_metadata(self) -> dict:
        """Dagster's standard keys for the table an asset writes: its name and columns."""
        return {"dagster/table_name": str(self), "dagster/column_schema": self.column_schema()}

    def column_schema(self) -> dg.TableSchema:
        """The columns as Dagster shows them (`dagster/column_schema`)."""
        import dagster as dg

        return dg.TableSchema(
            columns=[
                dg.TableColumn(
                    c.name,
                    c.type.lower(),
                    description=c.description,
                    constraints=dg.TableColumnConstraints(nullable=c.nullable),
                )
                for c in self.columns
            ]
        )


RAW_TRADES = Table(
    "raw_trades",
    (
        Column("id", "VARCHAR", "the exchange's deal id (unique here: first receipt wins)"),
        Column("price", "DOUBLE", "per MWh, in the market's currency"),
        Column("quantity", "DOUBLE", "MW held over the period, strictly positive"),
        Column("direction", "VARCHAR", "`buy` or `sell`"),
        Column("delivery_day", "DATE", "the local delivery day in the market, for display"),
        Column("delivery_hour", "VARCHAR", "the local hour containing the start, `HH-HH`"),
        Column("trader_id", "VARCHAR", "who made the deal"),
        Column("execution_time", "TIMESTAMPTZ", "when the exchange executed it"),
        Column("market", "VARCHAR", "the market code (`energy_assets/markets/`)"),
        Column("delivery_start", "TIMESTAMPTZ", "the delivery period's start"),
        Column("delivery_end", "TIMESTAMPTZ", "the delivery period's end (exclusive)"),
        Column(
            "after_gate_closure",
            "BOOLEAN",
            "executed at or after the period's gate closure by the market's lead: booked, flagged",
        ),
        Column("received_at", "TIMESTAMPTZ", "when the listener received it"),
        Column("segment", "VARCHAR", "the capture segment it was drained from"),
    ),
)
FEED_GAPS = Table(
    "feed_gaps",
    (
        Column("gap_start", "TIMESTAMPTZ", "the listener lost the exchange"),
        Column("gap_end", "TIMESTAMPTZ", "the listener was back"),
        Column("reason", "VARCHAR", "why the connection dropped"),
        Column("seconds", "DOUBLE", "length of the gap", nullable=True),
        Column("source", "VARCHAR", "the capture buffer's gap file"),
    ),
)
CAPTURE_SEGMENTS = Table(
    "capture_segments",
    (
        Column("segment", "VARCHAR", "a capture file already ingested"),
        Column("kind", "VARCHAR", "`deals` or `gap`"),
        Column("lines", "BIGINT", "lines read from it"),
        Column("ingested_at", "TIMESTAMPTZ", "when its drain committed"),
    ),
    primary_key=("segment",),
)

#: The price row, declared once: the tables below, the store, the journal of vendor answers,
#: `prices.parquet` and the live desk take its columns from here (`PRICE_ROW`). A period of a
#: market, its local day and label are derived for display (`markets.Period`), never stored.
_PRICE_COLUMNS = (
    Column("market", "VARCHAR", "the market's code (`DE`, `GB`)"),
    Column("delivery_start", "TIMESTAMPTZ", "the delivery period starts (UTC)"),
    Column("delivery_end", "TIMESTAMPTZ", "the delivery period ends (UTC), exclusive"),
    Column("value", "DOUBLE", "the vendor's reference price per MWh, in `currency`"),
    Column("currency", "VARCHAR", "the market's currency (`EUR`, `GBP`)"),
    Column("last_update", "TIMESTAMPTZ", "when the vendor last revised the price"),
    Column(
        "fetched_at",
        "TIMESTAMPTZ",
        "when this platform fetched that revision: first (revisions), last (current price)",
    ),
)
#: The key of a price row: one delivery period of one market.
PRICE_KEY = ("market", "delivery_start", "delivery_end")
REFERENCE_PRICES = Table("reference_prices", _PRICE_COLUMNS, primary_key=PRICE_KEY)
#: A revision is a distinct (period, last_update, value); fetched_at says when we first saw it.
REFERENCE_PRICE_REVISIONS = Table(
    "reference_price_revisions",
    _PRICE_COLUMNS,
    primary_key=(*PRICE_KEY, "last_update", "value"),
)
#: The price row as polars types, for frames, journal lines and `prices.parquet`.
PRICE_ROW = REFERENCE_PRICES.polars_schema()

# The exposure tables. Energy is in MWh (MW over the period × its hours), money in the market's
# currency (the `currency` column beside it: amounts of different currencies are never added).
_TRADER = Column("trader_id", "VARCHAR", "who holds the position")
_PERIOD = (
    _TRADER,
    Column("market", "VARCHAR", "the market's code (`DE`, `GB`)"),
    Column("delivery_start", "TIMESTAMPTZ", "the period starts (UTC)"),
    Column("delivery_end", "TIMESTAMPTZ", "the period ends (UTC), exclusive"),
)
_DELIVERY_DAY = Column("delivery_day", "DATE", "the market's local day of the delivery start")
_CURRENCY = Column("currency", "VARCHAR", "the market's currency: every amount of the row")
TRADER_EXPOSURE = Table(
    "trader_exposure",
    (
        *_PERIOD,
        _DELIVERY_DAY,
        _CURRENCY,
        Column("trades", "BIGINT", "deals in the period"),
        Column("bought_mwh", "DOUBLE", "Σ MW × hours bought (0 when none)"),
        Column("sold_mwh", "DOUBLE", "Σ MW × hours sold (0 when none)"),
        Column("net_mwh", "DOUBLE", "bought − sold: long > 0, short < 0"),
        Column("buy_vwap", "DOUBLE", "average buy price per MWh", nullable=True),
        Column("sell_vwap", "DOUBLE", "average sell price per MWh", nullable=True),
        Column("cash", "DOUBLE", "Σ sold MWh × price − Σ bought MWh × price"),
        Column("reference_price", "DOUBLE", "latest reference price per MWh", nullable=True),
        Column("pnl", "DOUBLE", "cash + net MWh × reference price; cash when flat", nullable=True),
        Column("exposure", "DOUBLE", "net MWh × reference price; 0 when flat", nullable=True),
    ),
)
#: The open position on each market's finest grid: every product covering the step, netted.
TRADER_NET_POSITION = Table(
    "trader_net_position",
    (
        *_PERIOD[:2],
        Column("delivery_start", "TIMESTAMPTZ", "the grid step starts (UTC)"),
        Column("delivery_end", "TIMESTAMPTZ", "the grid step ends (UTC), exclusive"),
        _DELIVERY_DAY,
        Column("net_mw", "DOUBLE", "Σ MW bought − Σ MW sold of every product covering the step"),
    ),
)
_TOTAL_COLUMNS = (
    _CURRENCY,
    Column("periods", "BIGINT", "delivery periods with deals"),
    Column("unpriced_periods", "BIGINT", "of which open without a reference price yet"),
    Column("trades", "BIGINT", "deals"),
    Column("bought_mwh", "DOUBLE", "Σ MWh bought"),
    Column("sold_mwh", "DOUBLE", "Σ MWh sold"),
    Column("net_mwh", "DOUBLE", "bought − sold"),
    Column("cash", "DOUBLE", "Σ sold MWh × price − Σ bought MWh × price"),
    Column("pnl", "DOUBLE", "PnL of the priced and flat periods", nullable=True),
    Column("exposure", "DOUBLE", "exposure of the priced and flat periods", nullable=True),
    Column(
        "gross_exposure", "DOUBLE", "Σ |exposure| of the priced and flat periods", nullable=True
    ),
    Column("unpriced_net_mwh", "DOUBLE", "net MWh of the unpriced periods"),
)
TRADER_EXPOSURE_DAILY = Table(
    "trader_exposure_daily", (_TRADER, _PERIOD[1], _DELIVERY_DAY, *_TOTAL_COLUMNS)
)
#: A view over the daily totals (`exposure/store.py` creates it), so it cannot disagree: one row
#: per trader and currency.
TRADER_EXPOSURE_TOTALS = Table("trader_exposure_totals", (_TRADER, *_TOTAL_COLUMNS))
TRADER_PNL_HISTORY = Table(
    "trader_pnl_history",
    (
        Column("snapshot_at", "TIMESTAMPTZ", "when the refresh ran"),
        Column("run_id", "VARCHAR", "the Dagster run that refreshed"),
        _TRADER,
        _CURRENCY,
        Column("trades", "BIGINT", "deals, all delivery days"),
        Column("net_mwh", "DOUBLE", "net position, all delivery days"),
        Column("cash", "DOUBLE", "cash, all delivery days"),
        Column("pnl", "DOUBLE", "PnL of the priced and flat periods", nullable=True),
        Column("exposure", "DOUBLE", "exposure of the priced and flat periods", nullable=True),
        Column("gross_exposure", "DOUBLE", "Σ |exposure|", nullable=True),
        Column("unpriced_periods", "BIGINT", "open periods without a reference price yet"),
        Column("new_trades", "BIGINT", "deals since the previous refresh"),
        Column("pnl_change", "DOUBLE", "PnL change since the previous refresh"),
        Column("pnl_change_trades", "DOUBLE", "of which the new deals, at today's prices"),
        Column("pnl_change_prices", "DOUBLE", "of which the book held before, revalued"),
        Column("days_recomputed", "BIGINT", "market delivery days this refresh recomputed"),
    ),
)

TRADE_TABLES = (RAW_TRADES, FEED_GAPS, CAPTURE_SEGMENTS)


def table_value(rows: list[dict], columns: dict[str, str]) -> dg.TableMetadataValue:
    """A small table for a run's metadata: `rows` of `columns` (name -> Dagster column type),
    shown by the UI as a table."""
    import dagster as dg

    schema = dg.TableSchema(columns=[dg.TableColumn(name, kind) for name, kind in columns.items()])
    records = [dg.TableRecord({name: row.get(name) for name in columns}) for row in rows]
    return dg.MetadataValue.table(records=records, schema=schema)


PRICE_TABLES = (REFERENCE_PRICES, REFERENCE_PRICE_REVISIONS)
#: The exposure domain's tables; `TRADER_EXPOSURE_TOTALS` is a view beside them.
EXPOSURE_TABLES = (
    TRADER_EXPOSURE,
    TRADER_NET_POSITION,
    TRADER_EXPOSURE_DAILY,
    TRADER_PNL_HISTORY,
)


def ensure_schema(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")


def create(conn: duckdb.DuckDBPyConnection, *tables: Table) -> None:
    """Create the schema and each of `tables` that does not exist yet."""
    ensure_schema(conn)
    for table in tables:
        conn.execute(table.ddl())


def ensure_trade_tables(conn: duckdb.DuckDBPyConnection) -> None:
    create(conn, *TRADE_TABLES)
    require_current(conn, RAW_TRADES)


def ensure_price_tables(conn: duckdb.DuckDBPyConnection) -> None:
    create(conn, *PRICE_TABLES)
    for table in PRICE_TABLES:
        require_current(conn, table)


class OutdatedTable(RuntimeError):
    """A table made by an older version, without columns this one declares."""


def require_current(
    conn: duckdb.DuckDBPyConnection, table: Table, have: set[str] | None = None
) -> None:
    """Raise OutdatedTable when `table` exists without every declared column: the warehouse of
    an older version comes to this schema by `energy-assets rebuild`, not by a writer guessing.
    `have`: the table's columns when the caller has read them already."""
    if have is None:
        have = {
            row[0]
            for row in conn.execute(
                "SELECT column_name FROM duckdb_columns() WHERE database_name = current_database() "
                "AND schema_name = ? AND table_name = ?",
                [SCHEMA, table.name],
            ).fetchall()
        }
    missing = [name for name in table.column_names if name not in have]
    if have and missing:
        raise OutdatedTable(
            f"{table} was made by an older version (no {', '.join(missing)}): "
            "run `energy-assets rebuild` to make the warehouse again from the journals"
        )


def exists(conn: duckdb.DuckDBPyConnection, table: Table) -> bool:
    return bool(
        conn.execute(
            "SELECT count(*) FROM duckdb_tables() "
            "WHERE database_name = current_database() AND schema_name = ? AND table_name = ?",
            [SCHEMA, table.name],
        ).fetchone()[0]
    )
