"""A warehouse file holding the upstream tables as the trades and prices domains declare them
(`energy_assets/tables.py`), filled directly by each test."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest
from dagster_duckdb import DuckDBResource

from energy_assets.markets import MARKETS
from energy_assets.tables import (
    FEED_GAPS,
    PRICE_TABLES,
    SCHEMA,
    TRADE_TABLES,
    create,
)
from tests.exposure.periods import ZONES, local_day, period


def q(table: str) -> str:
    """`raw_trades` -> `energy.raw_trades`."""
    return f"{SCHEMA}.{table}"


@dataclass
class Warehouse:
    """The DuckDB file of one test, with writers for the upstream tables."""

    path: Path

    def resource(self) -> DuckDBResource:
        return DuckDBResource(database=str(self.path))

    def connect(self) -> duckdb.DuckDBPyConnection:
        return duckdb.connect(str(self.path))

    def trade(
        self,
        trader: str,
        market: str,
        start: str | datetime,
        minutes: int,
        direction: str,
        quantity: float,
        price: float,
        received_at: datetime | None = None,
    ) -> str:
        """A deal of `quantity` MW over `[start, start + minutes)` (UTC), booked as the drain
        books it: its market's local delivery day beside the instants."""
        deal_id = uuid.uuid4().hex
        received = received_at or datetime.now(UTC)
        begin, end = period(market, start, minutes)
        hour = begin.astimezone(ZONES[market]).hour
        row = {
            "id": deal_id,
            "price": price,
            "quantity": quantity,
            "direction": direction,
            "delivery_day": local_day(market, begin),
            "delivery_hour": f"{hour:02d}-{hour + 1:02d}",
            "trader_id": trader,
            "execution_time": received,
            "market": market,
            "delivery_start": begin,
            "delivery_end": end,
            "after_gate_closure": False,
            "received_at": received,
            "segment": "s1",
        }
        with self.connect() as conn:
            _insert(conn, "raw_trades", row)
        return deal_id

    def price(
        self,
        market: str,
        start: str | datetime,
        minutes: int,
        value: float,
        last_update: datetime | None = None,
        fetched_at: datetime | None = None,
    ) -> None:
        """Upsert the latest price of a period, as `reference_prices` keeps one row per period."""
        now = datetime.now(UTC)
        begin, end = period(market, start, minutes)
        with self.connect() as conn:
            conn.execute(
                f"DELETE FROM {q('reference_prices')} WHERE market = ? AND delivery_start = ? "
                "AND delivery_end = ?",
                [market, begin, end],
            )
            row = {
                "market": market,
                "delivery_start": begin,
                "delivery_end": end,
                "value": value,
                "currency": MARKETS[market].currency,
                "last_update": last_update or now,
                "fetched_at": fetched_at or now,
            }
            _insert(conn, "reference_prices", row)

    def gap(self, start: datetime, end: datetime, reason: str) -> None:
        with self.connect() as conn:
            conn.execute(
                f"INSERT INTO {FEED_GAPS} VALUES (?, ?, ?, ?, ?)",
                [start, end, reason, (end - start).total_seconds(), f"gap-{uuid.uuid4().hex}.json"],
            )

    def query(self, sql: str, params=None) -> list[tuple]:
        with self.connect() as conn:
            return conn.execute(sql, params or []).fetchall()


def _insert(conn: duckdb.DuckDBPyConnection, table: str, row: dict) -> None:
    names = ", ".join(row)
    marks = ", ".join("?" for _ in row)
    conn.execute(f"INSERT INTO {q(table)} ({names}) VALUES ({marks})", list(row.values()))


@pytest.fixture
def warehouse(tmp_path: Path) -> Warehouse:
    path = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(path)) as conn:
        create(conn, *TRADE_TABLES, *PRICE_TABLES)
    return Warehouse(path)
