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

from energy_assets.journals.archive import (
    PRICES,
    archive_root,
    compress,
    day_folders,
    decompress,
    files_of,
    read_checked,
    write_checked,
)
from energy_assets.prices.client import ReferencePrice
from energy_assets.trades.buffer import iso

SUFFIX = ".jsonl.zst"
#: One journal line: the answer's fields, instants in UTC.
ANSWER_SCHEMA = {
    "delivery_day": pl.Date,
    "delivery_hour": pl.String,
    "value": pl.Float64,
    "unit": pl.String,
    "last_update": pl.Datetime("us", "UTC"),
    "fetched_at": pl.Datetime("us", "UTC"),
}
_INSTANT = "%Y-%m-%dT%H:%M:%S%.f%:z"


def answer_line(price: ReferencePrice) -> dict:
    return {
        "delivery_day": price.delivery_day.isoformat(),
        "delivery_hour": price.delivery_hour,
        "value": price.value,
        "unit": price.unit,
        "last_update": iso(price.last_update),
        "fetched_at": iso(price.fetched_at),
    }


def append_answers(
    root: UPath, prices: Sequence[ReferencePrice], run_id: str, now: datetime | None = None
) -> UPath | None:
    """Append one price batch to the journal; returns the file written (None if empty)."""
    root = archive_root(root)
    if not prices:
        return None
    now = now or datetime.now(UTC)
    lines = "".join(json.dumps(answer_line(p), separators=(",", ":")) + "\n" for p in prices)
    name = f"{now:%Y%m%dT%H%M%S%fZ}-{os.getpid()}-{run_id}{SUFFIX}"
    path = root / PRICES / now.date().isoformat() / name
    write_checked(path, compress(lines.encode()), {"answers": len(prices)})
    return path


def journal_files(root: UPath, days: Collection[date] | None = None) -> Iterator[UPath]:
    for day, folder in day_folders(root, PRICES):
        if days is not None and day not in days:
            continue
        for path in files_of(folder):
            if path.name.endswith(SUFFIX):
                yield path


def read_answers(root: UPath, days: Collection[date] | None = None) -> pl.DataFrame:
    """Every answer of the journal in the order it was stored (`journal_order`) with the
    journal file it came from (`batch`: one per store step), every file verified against its
    checksum (`ArchiveCorrupt` names the file). `days`: only the files stored on those days."""
    root = archive_root(root)
    chunks, names, counts = [], [], []
    for path in journal_files(root, days):
        data, _ = read_checked(path)
        text = decompress(data)
        chunks.append(text)
        names.append(path.name)
        counts.append(text.count(b"\n"))
    if not sum(counts):
        return pl.DataFrame(schema=ANSWER_SCHEMA | {"batch": pl.String, "journal_order": pl.Int64})
    strings = {name: pl.String for name in ANSWER_SCHEMA} | {"value": pl.Float64}
    frame = pl.read_ndjson(b"".join(chunks), schema=strings)
    batch = pl.Series("batch", names).repeat_by(pl.Series(counts)).explode()
    return frame.with_columns(
        batch,
        pl.col("delivery_day").str.to_date("%Y-%m-%d"),
        pl.col("last_update").str.to_datetime(_INSTANT, time_zone="UTC"),
        pl.col("fetched_at").str.to_datetime(_INSTANT, time_zone="UTC"),
        pl.int_range(pl.len(), dtype=pl.Int64).alias("journal_order"),
    )


def as_prices(frame: pl.DataFrame) -> list[ReferencePrice]:
    return [
        ReferencePrice(**row) for row in frame.select(list(ANSWER_SCHEMA)).iter_rows(named=True)
    ]


def store_batches(answers: pl.DataFrame) -> Iterator[pl.DataFrame]:
    """The journal as batches `store_prices` can take, replaying it exactly: batch k holds the
    k-th answer of every hour. The store's rules act hour by hour (a revision's first
    `fetched_at` wins; the current row takes a later answer unless it is an older revision),
    so storing each hour's answers in their journal order gives what storing the journal's
    batches in order gave, in as many transactions as an hour has answers."""
    if answers.is_empty():
        return
    ranked = (
        answers.sort("journal_order")
        .with_columns(pl.int_range(pl.len()).over("delivery_day", "delivery_hour").alias("_k"))
        .sort("_k", "journal_order")
    )
    for batch in ranked.partition_by("_k", maintain_order=True):
        yield batch.drop("_k")
