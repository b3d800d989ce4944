"""Replay: the desk's view at a past instant, from the journals alone.

What the desk knew at instant `at`: the deals the listener had received by then
(`received_at <= at`, the first receipt of each id) and, for each delivery period, the price the
warehouse held after the answers fetched by then (`fetched_at <= at`: the latest revision, a
later answer of the same revision winning, as `store_prices` keeps it). The positions are the
one maths implementation, `energy_assets.exposure.positions`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl
from upath import UPath

from energy_assets.exposure.positions import positions, trader_totals
from energy_assets.journals.deals import read_days
from energy_assets.journals.prices import read_answers
from energy_assets.tables import PRICE_KEY
from energy_assets.trades.deal import DIRECTIONS
from energy_assets.trades.lines import bookable, read_segment_data, typed

#: What a replay keeps of each deal line, in the smallest types that hold it.
_KEPT = {
    "id": pl.col("id"),
    "received_at": pl.col("received_at"),
    "trader_id": pl.col("trader_id").cast(pl.Categorical),
    "market": pl.col("market").cast(pl.Categorical),
    "delivery_start": pl.col("delivery_start"),
    "delivery_end": pl.col("delivery_end"),
    "delivery_day": pl.col("delivery_day"),
    "direction": pl.col("direction").cast(pl.Enum(DIRECTIONS)),
    "price": pl.col("price"),
    "quantity": pl.col("quantity"),
}


def journal_deals(archive: str | os.PathLike, until: datetime | None = None) -> pl.DataFrame:
    """The deals of the deals' journal (what `positions` needs of each, and `id` and
    `received_at`), in capture order; with `until`, those received by then. Read a capture
    day at a time, so that only one day's lines are ever in memory whole."""
    root = UPath(archive)
    last_day = None if until is None else (until + timedelta(days=1)).date()
    received = pl.lit(True) if until is None else pl.col("received_at") <= until
    days = (day.segments for day in read_days(root, until=last_day))
    frames = [_kept(segments).filter(received) for segments in days] or [_kept([])]
    return pl.concat(frames, rechunk=False)


def _kept(segments: list[tuple[str, bytes, str]]) -> pl.DataFrame:
    return bookable(typed(read_segment_data(segments)))[0].select(**_KEPT)


def deals_at(deals: pl.DataFrame | pl.LazyFrame, at: datetime) -> pl.LazyFrame:
    """The deals received at or before `at`, the first receipt of each id."""
    # Lazy, and `is_first_distinct` rather than `unique(keep="first")`: the positions are
    # summed from the deals as they are filtered, never copied into a table of their own.
    return deals.lazy().filter(pl.col("received_at") <= at).filter(pl.col("id").is_first_distinct())


def prices_at(answers: pl.DataFrame, at: datetime) -> pl.DataFrame:
    """Per delivery period, the price held after the answers fetched at or before `at`:
    `market`, `delivery_start`, `delivery_end`, `reference_price`, `last_update`, `fetched_at`."""
    hour = list(PRICE_KEY)
    return (
        answers.filter(pl.col("fetched_at") <= at)
        .filter(pl.col("last_update") == pl.col("last_update").max().over(hour))
        .sort("journal_order")
        .group_by(hour)
        .last()
        .select(*hour, pl.col("value").alias("reference_price"), "last_update", "fetched_at")
        .sort(hour)
    )


@dataclass(frozen=True)
class ReplayView:
    """The desk at one instant: its positions (`EXPOSURE_COLUMNS` rows) and the prices used."""

    at: datetime
    positions: pl.DataFrame
    prices: pl.DataFrame
    deals: int

    def totals(self) -> pl.DataFrame:
        return trader_totals(self.positions)

    def of_trader(self, trader_id: str) -> pl.DataFrame:
        return self.positions.filter(pl.col("trader_id") == trader_id)


def view_at(
    at: datetime,
    archive: str | os.PathLike | None = None,
    deals: pl.DataFrame | None = None,
    answers: pl.DataFrame | None = None,
) -> ReplayView:
    """The desk's view at `at` from the journals in `archive` (or from frames already read
    with `journal_deals` and `read_answers`, to replay many instants)."""
    if deals is None:
        deals = journal_deals(archive, until=at)
    if answers is None:
        answers = read_answers(UPath(archive))
    prices = prices_at(answers, at)
    held = positions(deals_at(deals, at), prices)
    return ReplayView(at, held, prices, int(held["trades"].sum()))
