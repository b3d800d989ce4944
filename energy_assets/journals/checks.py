"""`journal_matches_warehouse`: the warehouse's counts against the journals', per day.

A warning, never blocking: a mismatch means the warehouse holds what the journals cannot give
back (a file committed but not archived) or the reverse, and the rebuild would differ. Run
daily by `journal_integrity_schedule` for yesterday (complete) and today, not with each drain:
it reads every checksum file of those days (a drain writes one bundle, every few seconds).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import dagster as dg
import polars as pl
from dagster_duckdb import DuckDBResource

from energy_assets.journals.deals import archived_lines
from energy_assets.journals.prices import read_answers
from energy_assets.journals.resources import ArchiveResource
from energy_assets.tables import (
    CAPTURE_SEGMENTS,
    PRICE_KEY,
    RAW_TRADES,
    REFERENCE_PRICE_REVISIONS,
    exists,
)
from energy_assets.warehouse import DUCKDB_POOL

#: The days compared: yesterday and today (UTC).
DAYS_COMPARED = 2
_REVISION = [*PRICE_KEY, "last_update", "value", "fetched_at"]


def _stamp(day: date) -> str:
    return f"{day:%Y%m%d}"


def _warehouse_files(conn, first: date, end: date) -> dict[date, dict[str, int]]:
    rows = conn.execute(
        f"SELECT segment, lines FROM {CAPTURE_SEGMENTS} WHERE segment >= ? AND segment < ?",
        [_stamp(first), _stamp(end)],
    ).fetchall()
    result: dict[date, dict[str, int]] = {}
    for name, lines in rows:
        result.setdefault(datetime.strptime(name[:8], "%Y%m%d").date(), {})[name] = lines
    return result


def _deals_per_day(conn, first: date, end: date) -> dict[date, int]:
    rows = conn.execute(
        f"SELECT left(segment, 8), count(*) FROM {RAW_TRADES} "
        "WHERE segment >= ? AND segment < ? GROUP BY 1",
        [_stamp(first), _stamp(end)],
    ).fetchall()
    return {datetime.strptime(stamp, "%Y%m%d").date(): count for stamp, count in rows}


def _revisions_missing(conn, archive: ArchiveResource, day: date) -> tuple[int, int]:
    """(revisions first fetched on `day` in the warehouse, how many of them the journal lacks)."""
    if not exists(conn, REFERENCE_PRICE_REVISIONS):
        return 0, 0
    start = datetime.combine(day, time(), UTC)
    stored = pl.from_arrow(
        conn.execute(
            f"SELECT {', '.join(_REVISION)} FROM {REFERENCE_PRICE_REVISIONS} "
            "WHERE fetched_at >= ? AND fetched_at < ?",
            [start, start + timedelta(days=1)],
        ).fetch_arrow_table()
    )
    if stored.is_empty():
        return 0, 0
    # An answer fetched before midnight may have been stored (and journaled) just after it.
    journal = read_answers(archive.root, days={day, day + timedelta(days=1)}).select(_REVISION)
    missing = stored.cast(journal.schema).join(journal, on=_REVISION, how="anti")
    return stored.height, missing.height


@dg.asset_check(
    asset="raw_trades",
    name="journal_matches_warehouse",
    blocking=False,
    pool=DUCKDB_POOL,
    description="Per day (yesterday and today, UTC): every capture file raw_trades ingested is "
    "in the deals' journal with the same line count and none is missing from the warehouse; "
    "every price revision the warehouse first fetched that day is in the prices' journal. "
    "Warns: `energy-assets rebuild` would not give back the same warehouse.",
)
def journal_matches_warehouse(
    warehouse: DuckDBResource, archive: ArchiveResource
) -> dg.AssetCheckResult:
    today = datetime.now(UTC).date()
    days = [today - timedelta(days=n) for n in reversed(range(DAYS_COMPARED))]
    journal = archived_lines(archive.root, days)
    lines = [
        "| day | journal files | warehouse files | journal lines | warehouse lines | "
        "raw_trades rows | only in journal | only in warehouse | revisions missing |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    problems = []
    with warehouse.get_connection() as conn:
        if not exists(conn, CAPTURE_SEGMENTS):
            return dg.AssetCheckResult(passed=True, metadata={"note": "no deal drained yet"})
        stored = _warehouse_files(conn, days[0], today + timedelta(days=1))
        deals = _deals_per_day(conn, days[0], today + timedelta(days=1))
        for day in days:
            mine, theirs = journal.get(day, {}), stored.get(day, {})
            only_journal = sorted(set(mine) - set(theirs))
            only_warehouse = sorted(set(theirs) - set(mine))
            differ = sorted(n for n in set(mine) & set(theirs) if mine[n] != theirs[n])
            revisions, missing = _revisions_missing(conn, archive, day)
            if only_journal or only_warehouse or differ or missing:
                problems.append(
                    f"{day}: only in journal {only_journal[:5]}, only in warehouse "
                    f"{only_warehouse[:5]}, line counts differ {differ[:5]}, "
                    f"{missing} of {revisions} revisions not journaled"
                )
            lines.append(
                f"| {day} | {len(mine)} | {len(theirs)} | {sum(mine.values())} | "
                f"{sum(theirs.values())} | {deals.get(day, 0)} | {len(only_journal)} | "
                f"{len(only_warehouse)} | {missing} of {revisions} |"
            )
    return dg.AssetCheckResult(
        passed=not problems,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "days": dg.MetadataValue.md("\n".join(lines)),
            "problems": dg.MetadataValue.md("\n".join(problems) or "none"),
        },
    )


journal_integrity_job = dg.define_asset_job(
    "journal_integrity",
    selection=dg.AssetSelection.checks(journal_matches_warehouse),
    description="Compare the warehouse's counts with the journals' for yesterday and today.",
)

journal_integrity_schedule = dg.ScheduleDefinition(
    name="journal_integrity_schedule",
    job=journal_integrity_job,
    cron_schedule="30 0 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily at 00:30 UTC, once yesterday's capture files are all archived.",
)
