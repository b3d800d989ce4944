"""Replay: the desk's view at a past instant, from the journals alone.

What the desk knew at instant `at`: the deals the listener had received by then
(`received_at <= at`, the first receipt of each id) and, for each delivery hour, the price the
warehouse held after the answers fetched by then (`fetched_at <= at`: the latest revision, a
later answer of the same revision winning, as `store_prices` keeps it). The positions are the
one maths implementation, `energy_assets.exposure.positions`.

`pnl_history` computes the same at many instants, by default after each price batch that
brought a new revision: the per-trader PnL the desk saw then, reproducible from the journals.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl

from energy_assets.exposure.positions import book, legs, mark, positions, rebook, trader_totals
from energy_assets.journals.archive import archive_root
from energy_assets.journals.deals import read_days
from energy_assets.journals.prices import read_answers
from energy_assets.trades.drain import bookable, read_segment_data, typed


def journal_deals(archive: str | os.PathLike, until: datetime | None = None) -> pl.DataFrame:
    """Every deal line of the deals' journal (typed like `raw_trades`), in capture order; with
    `until`, only the capture days that can hold deals received by then."""
    root = archive_root(archive)
    last_day = None if until is None else (until + timedelta(days=1)).date()
    frames = [
        bookable(typed(read_segment_data(day.segments)))[0]
        for day in read_days(root, until=last_day)
    ]
    if not frames:
        return bookable(typed(read_segment_data([])))[0]
    return pl.concat(frames)


def deals_at(deals: pl.DataFrame, at: datetime) -> pl.DataFrame:
    """The deals received at or before `at`, the first receipt of each id."""
    return deals.filter(pl.col("received_at") <= at).unique(
        subset="id", keep="first", maintain_order=True
    )


def prices_at(answers: pl.DataFrame, at: datetime) -> pl.DataFrame:
    """Per delivery hour, the price held after the answers fetched at or before `at`:
    `delivery_day`, `delivery_hour`, `reference_price`, `last_update`, `fetched_at`."""
    hour = ["delivery_day", "delivery_hour"]
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
        answers = read_answers(archive_root(archive))
    received = deals_at(deals, at)
    prices = prices_at(answers, at)
    return ReplayView(at, positions(received, prices), prices, received.height)


def revision_instants(answers: pl.DataFrame) -> list[datetime]:
    """After each price batch that brought a revision not seen before: its last `fetched_at`."""
    first = answers.sort("journal_order").unique(
        subset=["delivery_day", "delivery_hour", "last_update", "value", "unit"],
        keep="first",
        maintain_order=True,
    )
    latest = answers.group_by("batch").agg(pl.col("fetched_at").max())
    batches = first.select("batch").unique()
    return sorted(latest.join(batches, on="batch")["fetched_at"].to_list())


def pnl_history(
    archive: str | os.PathLike, instants: Iterable[datetime] | None = None
) -> pl.DataFrame:
    """Per trader, the totals (`trader_totals` columns) the desk saw at each instant in
    `instants` (default `revision_instants`), one row per (`at`, `trader_id`).

    Each instant adds the deals received since the previous one to the book (`rebook`) and
    marks it with the prices of that instant: the deals are read once, whatever the number of
    instants (a mark costs one pass over the book's periods and the journal's answers)."""
    answers = read_answers(archive_root(archive))
    moments = sorted(revision_instants(answers) if instants is None else instants)
    # The first receipt of each id, by receipt: the deals of `deals_at` at every instant.
    deals = (
        journal_deals(archive)
        .unique(subset="id", keep="first", maintain_order=True)
        .sort("received_at", maintain_order=True)
    )
    received = deals["received_at"]
    frames, held, booked = [], 0, None
    for at in moments:
        upto = received.search_sorted(at, side="right")
        if upto > held:
            new = deals.slice(held, upto - held)
            booked = (book(new) if booked is None else rebook(booked, legs(new))).collect()
            held = upto
        if booked is None:
            continue
        prices = prices_at(answers, at)
        totals = trader_totals(mark(booked, prices))
        frames.append(totals.select(pl.lit(at).alias("at"), pl.all()))
    if not frames:
        return pl.DataFrame()
    return pl.concat(frames)
