"""A warehouse file holding the upstream tables exactly as the trades and prices domains write
them (columns from the common contract), filled directly by each test."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import pytest
from dagster_duckdb import DuckDBResource

#: The file is named like the real one, `energy.duckdb`: its catalog is then also called
#: `energy`, and a bare `energy.<table>` is ambiguous to DuckDB. Tests qualify fully.
CATALOG = "energy"


def q(table: str) -> str:
    """`raw_trades` -> `"energy".energy.raw_trades`."""
    return f'"{CATALOG}".energy.{table}'


UPSTREAM_DDL = [
    "CREATE SCHEMA IF NOT EXISTS energy",
    f"""CREATE TABLE IF NOT EXISTS {q("raw_trades")} (
        id VARCHAR PRIMARY KEY, price DOUBLE, quantity DOUBLE, direction VARCHAR,
        delivery_day DATE, delivery_hour VARCHAR, trader_id VARCHAR,
        execution_time TIMESTAMPTZ, received_at TIMESTAMPTZ, segment VARCHAR)""",
    f"""CREATE TABLE IF NOT EXISTS {q("reference_prices")} (
        delivery_day DATE, delivery_hour VARCHAR, value DOUBLE, unit VARCHAR,
        last_update TIMESTAMPTZ, fetched_at TIMESTAMPTZ)""",
    f"""CREATE TABLE IF NOT EXISTS {q("feed_gaps")} (
        gap_start TIMESTAMPTZ, gap_end TIMESTAMPTZ, reason VARCHAR)""",
]


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
        with self.connect() as conn:
            conn.execute(
                f"INSERT INTO {q('raw_trades')} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [deal_id, price, quantity, direction, day, hour, trader, received, received, "s1"],
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

    def gap(self, start: datetime, end: datetime | None, reason: str) -> None:
        with self.connect() as conn:
            conn.execute(f"INSERT INTO {q('feed_gaps')} VALUES (?, ?, ?)", [start, end, reason])

    def query(self, sql: str, params=None) -> list[tuple]:
        with self.connect() as conn:
            return conn.execute(sql, params or []).fetchall()


@pytest.fixture
def warehouse(tmp_path: Path) -> Warehouse:
    path = tmp_path / "energy.duckdb"
    with duckdb.connect(str(path)) as conn:
        for ddl in UPSTREAM_DDL:
            conn.execute(ddl)
    return Warehouse(path)
