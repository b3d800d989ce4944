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
from energy_assets.trades.lines import bookable, read_segment_data, typed


def journal_deals(archive: str | os.PathLike, until: datetime | None = None) -> pl.DataFrame:
    """Every deal line of the deals' journal (typed like `raw_trades`), in capture order; with
    `until`, only the capture days that can hold deals received by then."""
    root = UPath(archive)
    last_day = None if until is None else (until + timedelta(days=1)).date()
    days = [day.segments for day in read_days(root, until=last_day)] or [[]]
    return pl.concat(bookable(typed(read_segment_data(segments)))[0] for segments in days)


def deals_at(deals: pl.DataFrame, at: datetime) -> pl.DataFrame:
    """The deals received at or before `at`, the first receipt of each id."""
    return deals.filter(pl.col("received_at") <= at).unique(
        subset="id", keep="first", maintain_order=True
    )


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
    received = deals_at(deals, at)
    prices = prices_at(answers, at)
    return ReplayView(at, positions(received, prices), prices, received.height)
