"""The drain: sealed capture segments -> `energy.raw_trades`, exactly once.

Rows and the record of which segments they came from are written in one DuckDB transaction,
so a crash or a retry at any point either finds a segment fully ingested and marked, or not
at all. Ids are deduplicated within a batch (first seen wins: segments in name order, lines
in file order) and against every row already stored (an anti-join; the `ids_unique` asset
check proves the result). `benchmarks/capture.py` measures why not a PRIMARY KEY. A later
receipt of an id with other terms than the first is quarantined with why, never booked.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl
import tenacity
from upath import UPath

from energy_assets.journals.archive import prune
from energy_assets.journals.deals import archive_capture, archive_quarantine, compact
from energy_assets.storage import transaction
from energy_assets.tables import CAPTURE_SEGMENTS, FEED_GAPS, RAW_TRADES, ensure_trade_tables
from energy_assets.trades.buffer import (
    QUARANTINE,
    Gap,
    apply_retention,
    archive,
    quarantine,
    sealed_files,
)
from energy_assets.trades.deal import OTHER_TERMS, TERMS
from energy_assets.trades.lines import bookable, read_segments, typed

_INSERT_DEALS = f"""
INSERT INTO {RAW_TRADES} ({", ".join(RAW_TRADES.column_names)})
SELECT {", ".join(RAW_TRADES.column_names)} FROM drain_new
"""


#: The batch's ids already stored (the one scan of the table's ids a drain makes): of each
#: receipt compared (`version` null for the batch's first of an id), whether the stored deal
#: books other terms.
_BOOKED = f"""
SELECT id, version, ({", ".join("b." + t for t in TERMS)}) IS DISTINCT FROM
                    ({", ".join("r." + t for t in TERMS)}) AS other
FROM drain_batch AS b JOIN {RAW_TRADES} AS r USING (id)
"""


@dataclass
class DrainResult:
    segments: list[str] = field(default_factory=list)
    gaps: list[dict] = field(default_factory=list)
    rows_added: int = 0
    duplicates_dropped: int = 0
    #: Captured lines that name no period safely (quarantined; `lines.with_periods`).
    unbookable: int = 0
    #: Receipts of a booked id with other terms (quarantined; the first stays booked).
    other_terms: int = 0
    total_rows: int = 0
    newest_execution_time: datetime | None = None
    bundles: list = field(default_factory=list)
    deleted_by_retention: int = 0
    seconds: float = 0.0


# Frames go to DuckDB as Arrow scans of the polars frames, not through a Parquet file in a
# scratch directory (benchmarks/README.md, capture).


# Another drain (in this process; other processes wait on the file lock and the pool) committed
# the same tables or segments first, or archived a segment listed here before it was read: list
# again, skip its share.
@tenacity.retry(
    retry=tenacity.retry_if_exception_type(
        (duckdb.TransactionException, duckdb.ConstraintException, FileNotFoundError)
    ),
    stop=tenacity.stop_after_attempt(5),
    wait=tenacity.wait_incrementing(start=0.05, increment=0.05),
    reraise=True,
)
def _drain_once(
    conn: duckdb.DuckDBPyConnection,
    directory: Path,
    result: DrainResult,
    before_commit: Callable[[], None] | None,
) -> list[Path]:
    ensure_trade_tables(conn)
    segment_paths, gap_paths = sealed_files(directory)
    if not segment_paths and not gap_paths:
        return []
    listed = pl.DataFrame({"segment": [p.name for p in segment_paths + gap_paths]})
    conn.register("drain_listed", listed)
    try:
        done = {
            row[0]
            for row in conn.execute(
                f"SELECT segment FROM {CAPTURE_SEGMENTS} SEMI JOIN drain_listed USING (segment)"
            ).fetchall()
        }
    finally:
        conn.unregister("drain_listed")
    stale = [p for p in segment_paths + gap_paths if p.name in done]
    segment_paths = [p for p in segment_paths if p.name not in done]
    gap_paths = [p for p in gap_paths if p.name not in done]
    if not segment_paths and not gap_paths:
        return stale

    batch = read_segments(segment_paths)
    gaps, unreadable = [], []
    for path in gap_paths:
        content = path.read_bytes()
        gap = Gap.parse(content)
        if isinstance(gap, Gap):
            gaps.append(gap.row(path.name))
        else:  # kept as evidence in the quarantine; the batch goes on
            unreadable.append((content, f"gap file {path.name}: {gap}"))
    lines = batch.group_by("segment").len() if batch.height else None
    per_segment = dict(lines.iter_rows()) if lines is not None else {}
    first_seen, refused = bookable(
        typed(batch.unique(subset="id", keep="first", maintain_order=True))
    )
    # Each id's versions after its first, in capture order: the listener refuses them while it
    # remembers the id; past that (a restart) they reach the buffer.
    repeated = batch.filter(pl.col("id").is_duplicated())
    versions = repeated.unique(subset=["id", *TERMS], keep="first", maintain_order=True)
    later = (
        versions.filter(~pl.col("id").is_first_distinct()).drop("segment").with_row_index("version")
    )
    # A stored id's first receipt is the stored deal: every receipt is compared with it.
    compared = pl.concat(
        [
            first_seen.select("id", *TERMS).with_columns(version=pl.lit(None, pl.UInt32)),
            typed(later).select("id", *TERMS, "version"),
        ]
    )
    marks = [(p.name, "deals", per_segment.get(p.name, 0)) for p in segment_paths]
    marks += [(p.name, "gap", 1) for p in gap_paths]

    conn.register("drain_batch", compared)
    try:
        with transaction(conn):
            before = conn.execute(f"SELECT count(*) FROM {RAW_TRADES}").fetchone()[0]
            booked = conn.execute(_BOOKED).pl()
            conn.register("drain_new", first_seen.join(booked, on="id", how="anti"))
            conn.execute(_INSERT_DEALS)
            after = conn.execute(f"SELECT count(*) FROM {RAW_TRADES}").fetchone()[0]
            now = datetime.now(UTC)
            for table, rows in (
                (FEED_GAPS, gaps),
                (CAPTURE_SEGMENTS, [(*mark, now) for mark in marks]),
            ):
                frame = pl.DataFrame(rows, schema=table.polars_schema(), orient="row")
                conn.from_arrow(frame.to_arrow()).insert_into(str(table))
            if before_commit is not None:
                before_commit()
    finally:
        conn.unregister("drain_batch")
        conn.unregister("drain_new")

    # What it cannot book is quarantined with why.
    rows = refused.drop("after_gate_closure", "unbookable").to_dicts()
    kept = [
        (json.dumps(row, default=str), reason)
        for row, reason in zip(rows, refused["unbookable"], strict=True)
    ]
    first_other = booked.filter(pl.col("other") & pl.col("version").is_null())
    booked_other = first_seen.join(first_other, on="id", how="semi")
    # A later receipt of a stored id with the stored deal's terms is a repeat.
    repeats = booked.filter(~pl.col("other") & pl.col("version").is_not_null())
    later = later.join(repeats, on="version", how="anti").drop("version")
    other = [*later.to_dicts(), *booked_other.drop("after_gate_closure", "unbookable").to_dicts()]
    kept += [(json.dumps(row, default=str), f"deal {row['id']} {OTHER_TERMS}") for row in other]
    if kept or unreadable:
        (directory / QUARANTINE).mkdir(exist_ok=True)
        quarantine(directory, [*kept, *unreadable], now)
    result.segments = [p.name for p in segment_paths]
    result.unbookable = refused.height
    result.other_terms = len(other)
    result.gaps = gaps
    result.rows_added = after - before
    result.duplicates_dropped = batch.height - result.rows_added - refused.height - len(other)
    result.total_rows = after
    return stale + segment_paths + gap_paths


def drain(
    conn: duckdb.DuckDBPyConnection,
    directory: str | Path,
    retention: timedelta | None = None,
    before_commit: Callable[[], None] | None = None,
    archive_url: str | None = None,
    archive_retention_days: int | None = None,
) -> DrainResult:
    """Ingest every sealed segment and gap not yet in DuckDB; archive what is in (into the
    deals' journal at `archive_url`, default `<directory>/archive`, then to `drained/`), then
    apply the retentions. `before_commit` runs inside the transaction (tests inject faults
    there)."""
    started = time.perf_counter()
    directory = Path(directory)
    result = DrainResult()
    ingested = _drain_once(conn, directory, result, before_commit)
    if not result.segments:
        result.total_rows = conn.execute(f"SELECT count(*) FROM {RAW_TRADES}").fetchone()[0]
    newest_us = conn.execute(f"SELECT epoch_us(max(execution_time)) FROM {RAW_TRADES}").fetchone()[
        0
    ]
    if newest_us is not None:
        result.newest_execution_time = datetime.fromtimestamp(newest_us / 1e6, UTC)
    # Only after the commit: a crash before these lines leaves marked files in place, and the
    # next drain archives them without reading them again.
    journal = UPath(archive_url or directory / "archive")
    result.bundles = archive_capture(ingested, journal)
    if result.bundles:
        compact(journal, datetime.now(UTC).date() - timedelta(days=1))
    archive(ingested, directory)
    # Before the retention, which deletes quarantine files too.
    archive_quarantine(directory, journal)
    if retention is not None:
        result.deleted_by_retention = apply_retention(directory, retention)
    if archive_retention_days is not None:
        prune(journal, archive_retention_days, datetime.now(UTC).date())
    result.seconds = time.perf_counter() - started
    return result
