"""The desk's live book straight from the capture buffer: open MW per delivery period.

What the price planner needs to spend the vendor's budget where the money is: every deal the
listener has written (sealed segments, those already drained — kept for the retention — and
the open segment up to its last whole line), deduplicated by id, netted per trader and period.
From the buffer rather than `raw_trades`: a deal just made is in the buffer within a second,
in DuckDB only after the next drain, and the planner runs in the daemon, which never opens the
warehouse. Only files written in the last `lookback` are read: a deal for a period still open
is made at most two days before its delivery.

Netted per product period, not per grid step (`exposure.positions.net_positions`, the gate
board's open MW): a price marks exactly its own period (contract §5), so what fetching it is
worth is the MW of that product held open; an hourly buy against four quarter-hour sells is
flat in every quarter-hour yet marked with five prices.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from energy_assets.trades.buffer import SEGMENT_SCHEMA, deal_files, json_lines, whole_lines
from energy_assets.trades.lines import with_periods

#: Deals older than this cannot be for a period still open (to the end of the next day).
LOOKBACK = timedelta(hours=50)

#: The fields of a segment line the book needs (not the price, not the times), as the drain
#: reads them.
_COLUMNS = {
    name: kind
    for name, kind in SEGMENT_SCHEMA.items()
    if name not in ("price", "execution_time", "received_at")
}


@dataclass(frozen=True)
class Book:
    """Open MW (Σ over traders of |net MW|) per period with an open position, and every
    period with a deal; periods are `(market, delivery_start, delivery_end)` in UTC."""

    open_mw: dict[tuple[str, datetime, datetime], float] = field(default_factory=dict)
    traded: frozenset[tuple[str, datetime, datetime]] = frozenset()
    deals: int = 0


def read_book(
    capture_dir: str | Path, now: datetime | None = None, default_market: str = "DE"
) -> Book:
    """The book the buffer holds at `now`. A line without `delivery_start` (the contract's
    first revision, as the original exchange sends it) is the default market's local hour
    named by `delivery_day` and `delivery_hour` (`lines.with_periods`). Lines that do not parse
    are skipped: the drain quarantines them."""
    now = now or datetime.now(UTC)
    since = (now - LOOKBACK).timestamp()
    data = b"".join(whole_lines(path) for path in deal_files(capture_dir, since))
    if not data.strip():
        return Book()
    try:
        frame = pl.read_ndjson(json_lines(data), schema=_COLUMNS, ignore_errors=True)
    except (pl.exceptions.PolarsError, OSError):
        return Book()
    instant = pl.Datetime("us", "UTC")
    # Lines of the contract's first revision get their instants as the drain gives them.
    frame = (
        with_periods(frame.unique("id", keep="first"), default_market)
        .filter(pl.col("unbookable").is_null())
        .with_columns(
            pl.col("delivery_start").str.to_datetime(strict=False, time_zone="UTC").alias("start"),
            pl.col("delivery_end").str.to_datetime(strict=False, time_zone="UTC").alias("end"),
            pl.when(pl.col("direction") == "buy")
            .then(pl.col("quantity"))
            .when(pl.col("direction") == "sell")
            .then(-pl.col("quantity"))
            .alias("mw"),
        )
        .drop_nulls(["trader_id", "start", "end", "mw"])
        .with_columns(pl.col("start").cast(instant), pl.col("end").cast(instant))
    )
    per_trader = frame.group_by("trader_id", "market", "start", "end").agg(pl.col("mw").sum())
    per_period = per_trader.group_by("market", "start", "end").agg(
        pl.col("mw").abs().sum().alias("open_mw")
    )
    traded = frozenset(per_period.select("market", "start", "end").iter_rows())
    open_mw = {
        (market, start, end): mw for market, start, end, mw in per_period.iter_rows() if mw > 1e-9
    }
    return Book(open_mw=open_mw, traded=traded, deals=frame.height)
