"""A warehouse file holding the upstream tables as the trades and prices domains declare them
(`energy_assets/tables.py`), filled directly by each test."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import pytest
from dagster_duckdb import DuckDBResource

from energy_assets.markets import hour_period
from energy_assets.tables import FEED_GAPS, PRICE_TABLES, RAW_TRADES, SCHEMA, TRADE_TABLES, create


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
        day: date,
        hour: str,
        direction: str,
        quantity: float,
        price: float,
        received_at: datetime | None = None,
    ) -> str:
        deal_id = uuid.uuid4().hex
        received = received_at or datetime.now(UTC)
        period = hour_period("DE", day, hour)
        row = {
            "id": deal_id,
            "price": price,
            "quantity": quantity,
            "direction": direction,
            "delivery_day": day,
            "delivery_hour": hour,
            "trader_id": trader,
            "execution_time": received,
            "market": period.market,
            "delivery_start": period.delivery_start,
            "delivery_end": period.delivery_end,
            "after_gate_closure": received >= period.gate_closure,
            "received_at": received,
            "segment": "s1",
        }
        with self.connect() as conn:
            conn.execute(
                f"INSERT INTO {RAW_TRADES} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                list(row.values()),
            )
        return deal_id

    def price(
        self,
        day: date,
        hour: str,
        value: float,
        last_update: datetime | None = None,
        fetched_at: datetime | None = None,
    ) -> None:
        """Upsert the latest price of an hour, as `reference_prices` keeps one row per hour."""
        now = datetime.now(UTC)
        with self.connect() as conn:
            conn.execute(
                f"DELETE FROM {q('reference_prices')} WHERE delivery_day = ? AND delivery_hour = ?",
                [day, hour],
            )
            conn.execute(
                f"INSERT INTO {q('reference_prices')} VALUES (?, ?, ?, 'euro/mwh', ?, ?)",
                [day, hour, value, last_update or now, fetched_at or now],
            )

    def gap(self, start: datetime, end: datetime, reason: str) -> None:
        with self.connect() as conn:
            conn.execute(
                f"INSERT INTO {FEED_GAPS} VALUES (?, ?, ?, ?, ?)",
                [start, end, reason, (end - start).total_seconds(), f"gap-{uuid.uuid4().hex}.json"],
            )

    def query(self, sql: str, params=None) -> list[tuple]:
        with self.connect() as conn:
            return conn.execute(sql, params or []).fetchall()


@pytest.fixture
def warehouse(tmp_path: Path) -> Warehouse:
    path = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(path)) as conn:
        create(conn, *TRADE_TABLES, *PRICE_TABLES)
    return Warehouse(path)
