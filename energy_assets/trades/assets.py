"""`raw_trades`: every deal confirmation the listener captured, once, in DuckDB."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

from energy_assets.journals.resources import ArchiveResource
from energy_assets.markets import LATEST, MARKETS, YEARS
from energy_assets.tables import FEED_GAPS, RAW_TRADES, table_value
from energy_assets.trades.buffer import (
    QUARANTINE,
    open_feed_gap,
    read_listener_state,
    refused_today,
)
from energy_assets.trades.deal import (
    CLOCK_SKEW,
    EARLIEST,
    LATEST_DELIVERY_DAY,
    PRICE_LIMIT,
    QUANTITY_LIMIT,
)
from energy_assets.trades.drain import DrainResult, drain
from energy_assets.trades.resources import CaptureBufferResource
from energy_assets.warehouse import DUCKDB_POOL

#: Gaps newer than this make the `no_recent_feed_gaps` check warn.
RECENT_GAP_WINDOW = timedelta(hours=24)
#: A delivery starting more than this after its execution makes `no_far_deliveries` warn: the
#: exchange opens periods up to the end of the next day (contract §2), so a week leaves room
#: for long weekends' auctions and still catches a mistyped year.
FAR_DELIVERY = timedelta(days=7)
#: How many of the far deliveries the check's metadata lists.
FAR_DELIVERIES_SHOWN = 20
VALID_HOURS = [f"{hour:02d}-{hour + 1:02d}" for hour in range(24)]
#: The products every market trades, as a DuckDB predicate on a row of raw_trades.
_PRODUCTS = " OR ".join(
    f"(market = '{code}' AND epoch(delivery_end) - epoch(delivery_start) IN "
    f"({', '.join(str(minutes * 60) for minutes in market.products_minutes)}))"
    for code, market in MARKETS.items()
)

# Blocking: a duplicated or malformed row would silently distort every position built on it,
# so downstream assets wait until the table is sound. The listener's parser refuses every row
# these would reject (tests/test_deal.py proves it), so a failure means corruption, not input.
# Feed gaps only warn: the rows stored are right, the desk just has to know some may be missing.
CHECKS = {
    "ids_unique": ("Every deal id appears once in raw_trades.", True),
    "no_nulls": ("No column of raw_trades is null.", True),
    "quantity_in_limits": (
        f"Every deal's quantity is > 0 and at most {QUANTITY_LIMIT:,} MW.",
        True,
    ),
    "price_in_limits": (
        f"Every price is finite and within ±{PRICE_LIMIT:,} per MWh (SIDC's harmonised limits).",
        True,
    ),
    "valid_delivery_period": (
        "Every deal's market is known, its delivery period (delivery_end − delivery_start) is "
        "one of that market's products and its delivery_hour label is one of 00-01 … 23-24.",
        True,
    ),
    "plausible_dates": (
        f"Every delivery period and its delivery_day are in the years {YEARS} (before, no "
        "exchange; after, the sentinels such as 9999-12-31), every execution_time after "
        f"{EARLIEST:%Y-%m-%d} and at most {CLOCK_SKEW.days} day after its receipt.",
        True,
    ),
    "no_far_deliveries": (
        f"No deal delivers more than {FAR_DELIVERY.days} days after its execution. Such deals "
        "are facts (a year 2999 is more likely a typo than a product, but was confirmed), "
        "booked and listed here for someone to look at; warns, does not block.",
        False,
    ),
    "no_deals_after_gate_closure": (
        "No deal was executed at or after its period's gate closure (the market's lead before "
        "delivery_start). Such deals are facts, booked and flagged (`after_gate_closure`); "
        "warns, does not block.",
        False,
    ),
    "no_recent_feed_gaps": (
        "No stretch without an exchange connection in the last 24 h (deals in a gap may be "
        "missing: the exchange replays nothing), and the listener reporting now. Warns, does "
        "not block.",
        False,
    ),
    "no_refused_confirmations": (
        "No deal confirmation refused by the listener today (UTC): a frame with a deal "
        "envelope that failed validation is a deal the exchange confirmed and this table "
        "lacks; the quarantine keeps it with its reason. Warns, does not block.",
        False,
    ),
}
#: The row-level blocking checks: the rows each one rejects, as a DuckDB predicate.
BAD_ROWS = {
    "quantity_in_limits": f"NOT (quantity > 0 AND quantity <= {QUANTITY_LIMIT})",
    # NaN is above every number in DuckDB, so BETWEEN rejects it as it rejects infinities.
    "price_in_limits": f"NOT (price BETWEEN -{PRICE_LIMIT} AND {PRICE_LIMIT})",
    "valid_delivery_period": "delivery_hour NOT IN ("
    + ", ".join(f"'{label}'" for label in VALID_HOURS)
    + f") OR NOT ({_PRODUCTS})",
    "plausible_dates": f"""NOT (
        delivery_day BETWEEN DATE '{EARLIEST:%Y-%m-%d}' AND DATE '{LATEST_DELIVERY_DAY}'
        AND delivery_start >= TIMESTAMPTZ '{EARLIEST.isoformat()}'
        AND delivery_end <= TIMESTAMPTZ '{LATEST.isoformat()}'
        AND execution_time >= TIMESTAMPTZ '{EARLIEST.isoformat()}'
        AND execution_time <= received_at + INTERVAL {CLOCK_SKEW.days} DAY)""",
}
CHECK_SPECS = [
    dg.AssetCheckSpec(name, asset="raw_trades", description=text, blocking=blocking)
    for name, (text, blocking) in CHECKS.items()
]


#: The exchange, outside this platform: lineage starts here.
EXCHANGE_FEED = dg.AssetSpec(
    "exchange_feed",
    group_name="trades",
    kinds={"websocket"},
    description="The exchange's websocket feed of deal confirmations (`ENERGY_EXCHANGE_URL`), "
    "held by `energy-assets listen`: one connection, no replay of what was sent while it was "
    "down.",
)

#: The intraday market trades around the clock and the desk's 15 traders deal every few
#: seconds; drains run every 60 s while deals wait. Five minutes without one warns, a quarter
#: of an hour (a whole intraday product) fails.
TRADES_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(minutes=15), warn_window=timedelta(minutes=5)
)


@dg.asset(
    group_name="trades",
    kinds={"duckdb", "polars"},
    pool=DUCKDB_POOL,
    check_specs=CHECK_SPECS,
    deps=[EXCHANGE_FEED],
    freshness_policy=TRADES_FRESHNESS,
    metadata=RAW_TRADES.definition_metadata(),
)
def raw_trades(
    context: dg.AssetExecutionContext,
    warehouse: DuckDBResource,
    capture: CaptureBufferResource,
    archive: ArchiveResource,
):
    """Every deal confirmation received from the exchange, exactly once (first receipt wins),
    with when the listener received it and the capture segment it came from. Each run drains
    the capture buffer's sealed segments and stores feed gaps in `energy.feed_gaps`; what it
    stored is archived in the deals' journal (`ENERGY_ARCHIVE_URL`), from which
    `energy-assets rebuild` can make the table again. Fresh while a drain ran in the last 5
    minutes, failing after 15: deals arrive every few seconds around the clock, so a quarter
    of an hour without one means the feed or the drain is down."""
    with warehouse.get_connection() as conn:
        result = drain(
            conn,
            capture.path,
            retention=capture.retention,
            archive_url=archive.url,
            archive_retention_days=archive.retention_days,
        )
        checks = list(_check_results(conn, capture))
    context.log.info(
        f"drained {len(result.segments)} segment(s): {result.rows_added} new row(s), "
        f"{result.duplicates_dropped} duplicate(s) dropped, {len(result.gaps)} feed gap(s)"
    )
    # On the materialisation only: a MaterializeResult's metadata is written on the step's
    # output event as well, twice the bytes in the event log (benchmarks/README.md, demo).
    context.add_asset_metadata(_metadata(result, capture))
    return dg.MaterializeResult(check_results=checks)


def _metadata(result: DrainResult, capture: CaptureBufferResource) -> dict:
    newest = result.newest_execution_time
    quarantined = sum(map(_lines, (capture.path / QUARANTINE).glob("*.jsonl")))
    return {
        "dagster/row_count": dg.MetadataValue.int(result.total_rows),
        "rows_added": dg.MetadataValue.int(result.rows_added),
        "total_rows": dg.MetadataValue.int(result.total_rows),
        "duplicates_dropped": dg.MetadataValue.int(result.duplicates_dropped),
        "unbookable_quarantined": dg.MetadataValue.int(result.unbookable),
        "other_terms_quarantined": dg.MetadataValue.int(result.other_terms),
        "segments_drained": dg.MetadataValue.int(len(result.segments)),
        "feed_gaps_recorded": dg.MetadataValue.int(len(result.gaps)),
        "newest_execution_time": dg.MetadataValue.text(newest.isoformat() if newest else "none"),
        "quarantined_frames_kept": dg.MetadataValue.int(quarantined),
        "files_deleted_by_retention": dg.MetadataValue.int(result.deleted_by_retention),
        "journal_bundles_written": dg.MetadataValue.int(len(result.bundles)),
        "drain_seconds": dg.MetadataValue.float(round(result.seconds, 3)),
    }


def _lines(path: Path) -> int:
    """Newlines in the file, read a MiB at a time."""
    try:
        with open(path, "rb") as handle:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
    except FileNotFoundError:
        return 0


def _count(conn, sql: str, params: list | None = None) -> int:
    return conn.execute(sql, params).fetchone()[0]


def blocking_check_failures(conn) -> dict[str, int]:
    """Rows of `raw_trades` each blocking check rejects (0 everywhere when it passes)."""
    duplicated = _count(conn, f"SELECT count(*) - count(DISTINCT id) FROM {RAW_TRADES}")
    columns = [row[0] for row in conn.execute(f"DESCRIBE {RAW_TRADES}").fetchall()]
    nulls = " OR ".join(f"{column} IS NULL" for column in columns)
    rules = {"no_nulls": nulls, **BAD_ROWS}
    counts = conn.execute(
        "SELECT "
        + ", ".join(f"count(*) FILTER (WHERE {rule})" for rule in rules.values())
        + f" FROM {RAW_TRADES}"
    ).fetchone()
    return {"ids_unique": duplicated} | dict(zip(rules, counts, strict=True))


def _check_results(conn, capture: CaptureBufferResource):
    for name, rows in blocking_check_failures(conn).items():
        yield dg.AssetCheckResult(check_name=name, passed=rows == 0, metadata={"rows": rows})
    late = _count(conn, f"SELECT count(*) FROM {RAW_TRADES} WHERE after_gate_closure")
    yield dg.AssetCheckResult(
        check_name="no_deals_after_gate_closure",
        passed=late == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"deals_after_gate_closure": late},
    )
    yield _far_delivery_check(conn)
    yield _feed_gap_check(conn, capture)
    yield _refused_check(capture)


def _far_delivery_check(conn) -> dg.AssetCheckResult:
    far = f"delivery_start > execution_time + INTERVAL {FAR_DELIVERY.days} DAY"
    count = _count(conn, f"SELECT count(*) FROM {RAW_TRADES} WHERE {far}")
    rows = conn.execute(
        "SELECT id, trader_id, market, "
        "strftime(delivery_start AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%MZ'), "
        "strftime(execution_time AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%SZ'), "
        "CAST((epoch(delivery_start) - epoch(execution_time)) // 86400 AS BIGINT) "
        f"FROM {RAW_TRADES} WHERE {far} ORDER BY delivery_start DESC, id LIMIT ?",
        [FAR_DELIVERIES_SHOWN],
    ).fetchall()
    columns = ("id", "trader_id", "market", "delivery_start_utc", "execution_time_utc", "days")
    return dg.AssetCheckResult(
        check_name="no_far_deliveries",
        passed=count == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"far_deliveries": count}
        | _listed(
            "deals",
            [dict(zip(columns, row, strict=True)) for row in rows],
            dict.fromkeys(columns[:-1], "string") | {"days": "int"},
        ),
    )


def _listed(name: str, rows: list[dict], kinds: dict[str, str]) -> dict:
    """A check's offending rows as a table, left out when there are none: an empty table is
    its schema alone, stored twice on every drain (the event and the check's row)."""
    return {name: table_value(rows, kinds)} if rows else {}


def _instant(epoch_us: int) -> datetime:
    return datetime.fromtimestamp(epoch_us / 1e6, UTC)


def _refused_check(capture: CaptureBufferResource) -> dg.AssetCheckResult:
    refused = refused_today(read_listener_state(capture.path), datetime.now(UTC))
    count = refused.get("count", 0)
    last = {key: str(refused.get(key, "")) for key in ("last_at", "last_reason")}
    return dg.AssetCheckResult(
        check_name="no_refused_confirmations",
        passed=count == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"refused_today": count} | (last if count else {}),
    )


def _feed_gap_check(conn, capture: CaptureBufferResource) -> dg.AssetCheckResult:
    since = datetime.now(UTC) - RECENT_GAP_WINDOW
    rows = conn.execute(
        f"SELECT epoch_us(gap_start), epoch_us(gap_end), reason FROM {FEED_GAPS} "
        "WHERE gap_end >= ? ORDER BY gap_start DESC",
        [since],
    ).fetchall()
    gaps = [(_instant(start), _instant(end), reason) for start, end, reason in rows]
    state = read_listener_state(capture.path) or {}
    open_gap = open_feed_gap(state, datetime.now(UTC))
    open_since = open_gap[0] if open_gap else None
    shown = (
        [{"start_utc": open_gap[0], "end_utc": "still open", "reason": open_gap[1]}]
        if open_gap
        else []
    )
    shown += [
        {
            "start_utc": start.isoformat(),
            "end_utc": end.isoformat(),
            "seconds": round((end - start).total_seconds(), 1),
            "reason": reason,
        }
        for start, end, reason in gaps[:20]
    ]
    missing_seconds = sum((end - start).total_seconds() for start, end, _ in gaps)
    return dg.AssetCheckResult(
        check_name="no_recent_feed_gaps",
        passed=not gaps and not open_since,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "gaps_last_24h": len(gaps),
            "seconds_without_feed_last_24h": round(missing_seconds, 1),
            "listener_connected": bool(state.get("connected")) and open_gap is None,
            "open_gap_since": open_since or "none",
        }
        | _listed(
            "gaps",
            shown,
            {"start_utc": "string", "end_utc": "string", "seconds": "float", "reason": "string"},
        ),
    )
