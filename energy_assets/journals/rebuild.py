"""`energy-assets rebuild`: the warehouse made again from the journals.

Into a new DuckDB file beside the warehouse, swapped in by an atomic rename only when it is
complete: a failed, refused or killed rebuild leaves the warehouse as it was. While it runs it
holds the warehouse's own DuckDB lock, so it refuses to start while a Dagster step has the file
open, and no step can write to the old file meanwhile (such a write would vanish at the swap).

- `raw_trades`, `feed_gaps`, `capture_segments` from the deals' journal, read with the drain's
  own functions (`read_segment_data`, `typed`, `Gap.parse`); every deal once, first seen wins,
  in capture order, as the drain's batches gave;
- `reference_prices`, `reference_price_revisions` from the prices' journal, through the price
  store's own `store_prices` (`prices.store_batches` says why that gives the same tables).

The exposure tables are not copied: the next `trader_exposure` refresh finds no marks and
computes every delivery day again.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import polars as pl
from upath import UPath

from energy_assets.journals.archive import DEALS, PRICES, day_folders
from energy_assets.journals.deals import read_days
from energy_assets.journals.prices import read_answers, store_batches
from energy_assets.prices.store import store_prices
from energy_assets.storage import fsync_dir
from energy_assets.tables import (
    CAPTURE_SEGMENTS,
    FEED_GAPS,
    RAW_TRADES,
    REFERENCE_PRICE_REVISIONS,
    REFERENCE_PRICES,
    SCHEMA,
    ensure_price_tables,
    ensure_trade_tables,
    exists,
)
from energy_assets.trades.buffer import Gap, cut_torn_tail
from energy_assets.trades.lines import bookable, read_segment_data, typed

STAGING = f"{SCHEMA}.rebuild_staging"
#: DuckDB's memory cap for the rebuild (it spills to disk past it).
REBUILD_MEMORY_LIMIT = "4GB"


class RebuildRefused(RuntimeError):
    """The rebuild did not start (or stopped) and left the warehouse as it was."""


@dataclass
class RebuildResult:
    target: Path
    capture_days: int = 0
    bundles: int = 0
    lines: int = 0
    deals: int = 0
    duplicates_dropped: int = 0
    #: Captured lines that name no delivery period safely (`lines.bookable`), left out.
    unbookable: int = 0
    feed_gaps: int = 0
    answers: int = 0
    prices: int = 0
    revisions: int = 0
    seconds: float = 0.0


def _hold(target: Path) -> duckdb.DuckDBPyConnection | None:
    if not target.exists():
        return None
    try:
        return duckdb.connect(str(target))
    except duckdb.Error as err:
        if "lock" in str(err).lower():
            raise RebuildRefused(
                f"{target} is open in another process (a Dagster run, the daemon's drain or "
                f"the demo): stop the writers and run the rebuild again ({err})"
            ) from None
        raise RebuildRefused(
            f"{target} cannot be opened ({err}): move it aside (keep it, it may be needed) and "
            "run the rebuild again"
        ) from None


def _remove_killed(target: Path) -> None:
    """Files of rebuilds killed before their swap (their process is gone)."""
    for stale in target.parent.glob(f"{target.stem}.rebuild-*.duckdb"):
        pid = stale.name.rsplit("-", 1)[1].split(".")[0]
        try:
            os.kill(int(pid), 0)
        except (ValueError, ProcessLookupError):
            _remove(stale)
        except PermissionError:
            pass


def _remove(path: Path) -> None:
    for stale in (path, path.with_name(path.name + ".wal")):
        stale.unlink(missing_ok=True)


def _count(conn: duckdb.DuckDBPyConnection, table) -> int:
    return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] if exists(conn, table) else 0


def rebuild(
    target: str | os.PathLike,
    archive: str | os.PathLike,
    progress: Callable[[str], None] = print,
    allow_fewer: bool = False,
) -> RebuildResult:
    """Rebuild the warehouse at `target` from the journals in `archive`; returns the figures.
    Raises `ArchiveCorrupt` (naming the file) or `RebuildRefused` (no journal there, the
    warehouse in use, or fewer deals or revisions than the warehouse holds unless
    `allow_fewer`); either way, and if the process is killed, `target` is untouched."""
    started = time.perf_counter()
    target = Path(target)
    root = UPath(archive)
    if not day_folders(root, DEALS) and not day_folders(root, PRICES):
        raise RebuildRefused(
            f"no journal in {archive}: nothing to rebuild from (ENERGY_ARCHIVE_URL?)"
        )
    result = RebuildResult(target)
    guard = _hold(target)
    held = (
        {t.name: _count(guard, t) for t in (RAW_TRADES, REFERENCE_PRICE_REVISIONS)}
        if guard is not None
        else {}
    )
    fresh = target.with_name(f"{target.stem}.rebuild-{os.getpid()}.duckdb")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_killed(target)
        _remove(fresh)
        with duckdb.connect(str(fresh)) as conn:
            # The first-receipt dedupe is a window over every captured line: capped, DuckDB
            # spills beside the new file (benchmarks/README.md, rebuild).
            conn.execute("SET memory_limit = ?", [REBUILD_MEMORY_LIMIT])
            conn.execute("SET temp_directory = ?", [str(fresh) + ".tmp"])
            ensure_trade_tables(conn)
            ensure_price_tables(conn)
            _load_deals(conn, root, result, progress)
            _load_prices(conn, root, result, progress)
            conn.execute("CHECKPOINT")
        rebuilt = {RAW_TRADES.name: result.deals, REFERENCE_PRICE_REVISIONS.name: result.revisions}
        fewer = {name: (held[name], rebuilt[name]) for name in held if rebuilt[name] < held[name]}
        if fewer and not allow_fewer:
            raise RebuildRefused(
                "the journals give fewer rows than the warehouse holds ("
                + ", ".join(f"{name}: {new:,} < {old:,}" for name, (old, new) in fewer.items())
                + "): rows stored before the archive existed, or an archive missing files; "
                "--allow-fewer replaces the warehouse all the same"
            )
        with open(fresh, "rb") as handle:
            os.fsync(handle.fileno())
        if guard is not None:
            guard.close()
            guard = None
        _remove(target.with_name(target.name + ".wal"))
        os.replace(fresh, target)
        fsync_dir(target.parent)
    except BaseException:
        _remove(fresh)
        raise
    finally:
        if guard is not None:
            guard.close()
    result.seconds = time.perf_counter() - started
    progress(
        f"rebuilt {target} in {result.seconds:.1f} s: {result.deals:,} deals "
        f"({result.duplicates_dropped:,} duplicates dropped, {result.unbookable:,} unbookable) "
        f"from {result.lines:,} captured lines "
        f"in {result.bundles:,} bundles over {result.capture_days} days, "
        f"{result.feed_gaps} feed gaps, {result.prices:,} period prices with "
        f"{result.revisions:,} revisions from {result.answers:,} vendor answers"
    )
    return result


def _load_deals(conn, root, result: RebuildResult, progress) -> None:
    started = time.perf_counter()
    columns = RAW_TRADES.column_names
    conn.execute(f"CREATE TABLE {STAGING} AS SELECT *, 0::BIGINT AS seq FROM {RAW_TRADES} LIMIT 0")
    now = datetime.now(UTC)
    for day in read_days(root):
        result.capture_days += 1
        result.bundles += day.bundles
        batch, refused = bookable(typed(read_segment_data(day.segments)))
        batch = batch.select(columns)
        result.unbookable += refused.height
        batch = batch.with_columns(
            (pl.int_range(pl.len(), dtype=pl.Int64) + result.lines).alias("seq")
        )
        result.lines += batch.height + refused.height
        marks = pl.DataFrame(
            [
                (name, "deals", cut_torn_tail(data).count(b"\n"), now)
                for name, data, _ in day.segments
            ]
            + [(name, "gap", 1, now) for name, _ in day.gaps],
            schema=CAPTURE_SEGMENTS.polars_schema(),
            orient="row",
        )
        gaps = pl.DataFrame(
            [
                gap.row(name)
                for name, data in day.gaps
                if isinstance(gap := Gap.parse(data), Gap)  # the drain quarantined the others
            ],
            schema=FEED_GAPS.polars_schema(),
        )
        for table, rows in ((STAGING, batch), (FEED_GAPS, gaps), (CAPTURE_SEGMENTS, marks)):
            conn.from_arrow(rows.to_arrow()).insert_into(str(table))
        result.feed_gaps += gaps.height
        progress(
            f"{day.day}: {batch.height:,} lines, {len(day.gaps)} gaps from {day.bundles} "
            f"bundles ({day.archived_bytes / 1e6:.1f} MB)"
        )
    # The drain's rule over the whole journal at once: the first receipt of an id wins.
    conn.execute(
        f"INSERT INTO {RAW_TRADES} SELECT {', '.join(columns)} FROM {STAGING} "
        "QUALIFY row_number() OVER (PARTITION BY id ORDER BY seq) = 1 ORDER BY seq"
    )
    conn.execute(f"DROP TABLE {STAGING}")
    result.deals = _count(conn, RAW_TRADES)
    result.duplicates_dropped = result.lines - result.unbookable - result.deals
    progress(f"deals: {result.deals:,} in {time.perf_counter() - started:.1f} s")


def _load_prices(conn, root, result: RebuildResult, progress) -> None:
    started = time.perf_counter()
    answers = read_answers(root)
    result.answers = answers.height
    for batch in store_batches(answers):
        store_prices(conn, batch)
    result.prices = _count(conn, REFERENCE_PRICES)
    result.revisions = _count(conn, REFERENCE_PRICE_REVISIONS)
    progress(
        f"prices: {result.answers:,} vendor answers -> {result.prices:,} periods in "
        f"{time.perf_counter() - started:.1f} s"
    )
