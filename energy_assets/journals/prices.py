"""The prices' journal: every vendor answer a price run stored, as fetched.

The store step appends its batch to `prices/YYYY-MM-DD/<stamp>-<run id>.jsonl.zst` (the UTC day
and instant of the store) *before* its DuckDB transaction: a crash between the two leaves an
answer in the journal that the warehouse lacks (a rebuild stores it, as a re-run would), never
the reverse. Store steps hold the DuckDB pool one at a time, so file names sort in the order
the batches were stored, which the rebuild replays.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Iterator, Sequence
from datetime import UTC, date, datetime

import polars as pl
from upath import UPath

from energy_assets.journals import archive
from energy_assets.markets import DEFAULT_MARKET, MARKETS
from energy_assets.prices.period_prices import PeriodPrice, price_row
from energy_assets.tables import PRICE_KEY, PRICE_ROW
from energy_assets.trades.buffer import iso
from energy_assets.trades.lines import INSTANT_FORMAT, with_periods

SUFFIX = ".jsonl.zst"
_INSTANTS = [name for name, kind in PRICE_ROW.items() if isinstance(kind, pl.Datetime)]


def answer_line(price: PeriodPrice) -> dict:
    row = price_row(price)
    return {name: iso(row[name]) if name in _INSTANTS else row[name] for name in PRICE_ROW}


def append_answers(
    root: UPath, prices: Sequence[PeriodPrice], run_id: str, now: datetime | None = None
) -> UPath | None:
    """Append one price batch to the journal; returns the file written (None if empty)."""
    root = UPath(root)
    if not prices:
        return None
    now = now or datetime.now(UTC)
    lines = "".join(json.dumps(answer_line(p), separators=(",", ":")) + "\n" for p in prices)
    name = f"{now:%Y%m%dT%H%M%S%fZ}-{os.getpid()}-{run_id}{SUFFIX}"
    path = root / archive.PRICES / now.date().isoformat() / name
    archive.write_checked(path, archive.compress(lines.encode()), {"answers": len(prices)})
    return path


def _lines(text: bytes) -> pl.DataFrame:
    """One journal file's lines as strings of the price row. Lines written before markets
    (`delivery_day`, `delivery_hour`, `unit`) are the default market's hours, read as the drain
    reads such deal lines (`with_periods`): the label the clocks skip names no period, the one
    they repeat is ambiguous, and both are left out, never guessed."""
    strings = {name: pl.String for name in PRICE_ROW} | {"value": pl.Float64}
    if not text.startswith(b'{"delivery_day"'):
        return pl.read_ndjson(text, schema=strings)
    hourly = pl.read_ndjson(
        text, schema={"delivery_day": pl.String, "delivery_hour": pl.String, **strings}
    )
    return (
        with_periods(hourly)
        .filter(pl.col("unbookable").is_null())
        .with_columns(pl.col("currency").fill_null(MARKETS[DEFAULT_MARKET].currency))
        .select(list(strings))
    )


def read_answers(root: UPath, days: Collection[date] | None = None) -> pl.DataFrame:
    """Every answer of the journal in the order it was stored (`journal_order`) with the
    journal file it came from (`batch`: one per store step), every file verified against its
    checksum (`ArchiveCorrupt` names the file). `days`: only the files stored on those days.
    Files written before markets hold the default market's hours by local day and label: read
    as its periods, the DST night's skipped and repeated labels left out."""
    root = UPath(root)
    chunks, names, counts = [], [], []
    paths = [
        path
        for day, folder in archive.day_folders(root, archive.PRICES)
        if days is None or day in days
        for path in archive.files_of(folder)
        if path.name.endswith(SUFFIX)
    ]
    for path in paths:
        data, _ = archive.read_checked(path)
        frame = _lines(archive.decompress(data))
        chunks.append(frame)
        names.append(path.name)
        counts.append(frame.height)
    if not sum(counts):
        return pl.DataFrame(schema=PRICE_ROW | {"batch": pl.String, "journal_order": pl.Int64})
    frame = pl.concat(chunks)
    batch = pl.Series("batch", names).repeat_by(pl.Series(counts)).explode()
    return frame.with_columns(
        batch,
        *(pl.col(name).str.to_datetime(INSTANT_FORMAT, time_zone="UTC") for name in _INSTANTS),
        pl.int_range(pl.len(), dtype=pl.Int64).alias("journal_order"),
    )


def store_batches(answers: pl.DataFrame) -> Iterator[pl.DataFrame]:
    """The journal as batches `store_prices` can take, replaying it exactly: batch k holds the
    k-th answer of every period. The store's rules act period by period (a revision's first
    `fetched_at` wins; the current row takes a later answer unless it is an older revision),
    so storing each period's answers in their journal order gives what storing the journal's
    batches in order gave, in as many transactions as a period has answers."""
    if answers.is_empty():
        return
    ranked = (
        answers.sort("journal_order")
        .with_columns(pl.int_range(pl.len()).over(*PRICE_KEY).alias("_k"))
        .sort("_k", "journal_order")
    )
    for batch in ranked.partition_by("_k", maintain_order=True):
        yield batch.drop("_k")
