"""Captured deal lines as polars frames, without DuckDB: read from the buffer's segments (or
the journal's copies of them), typed as `raw_trades` types them, and split into the deals the
table takes and the lines no delivery period can be named for. The drain, the live desk, the
desk's book, the replay and the rebuild all read deal lines through these functions."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from energy_assets.markets import DEFAULT_MARKET, MARKETS, Invalid, hour_period
from energy_assets.trades.buffer import SEGMENT_SCHEMA, cut_torn_tail, json_lines


class CorruptSegment(RuntimeError):
    """A sealed segment that cannot be read; nothing of the batch was stored."""


def read_segments(paths: list[Path]) -> pl.DataFrame:
    """Sealed segments -> one frame in capture order, with the segment name per row. A torn
    last line is skipped; any other unreadable content raises CorruptSegment."""
    return read_segment_data([(path.name, path.read_bytes(), str(path)) for path in paths])


def read_segment_data(segments: list[tuple[str, bytes, str]]) -> pl.DataFrame:
    """`read_segments` of segments already in memory: (name, content, where it was read
    from, for the error message), e.g. from the journals' archive."""
    chunks, names, counts = [], [], []
    for name, content, _ in segments:
        data = cut_torn_tail(content)
        chunks.append(data)
        names.append(name)
        counts.append(data.count(b"\n"))
    empty = pl.DataFrame(schema=SEGMENT_SCHEMA | {"segment": pl.String})
    if not any(counts):
        return empty
    try:
        frame = pl.read_ndjson(json_lines(b"".join(chunks)), schema=SEGMENT_SCHEMA)
        if frame.height != sum(counts):
            raise ValueError(f"{frame.height} rows from {sum(counts)} lines")
    except Exception as err:
        where = [where for _, _, where in segments]
        raise CorruptSegment(_which_segment(where, chunks) + f": {err}") from err
    segment = pl.DataFrame({"segment": names, "n": counts}).select(
        pl.col("segment").repeat_by("n").explode()
    )
    return frame.with_columns(segment["segment"])


#: How the listener writes instants (`buffer.utc_instant`): UTC, `+00:00`, optional fraction.
INSTANT_FORMAT = "%Y-%m-%dT%H:%M:%S%.f%:z"


#: Every market's gate-closure lead, for the `after_gate_closure` flag.
_LEADS = {code: market.gate_closure_minutes for code, market in MARKETS.items()}
_PERIOD_SCHEMA = {
    "delivery_day": pl.String,
    "delivery_hour": pl.String,
    "_start": pl.String,
    "_end": pl.String,
    "unbookable": pl.String,
}


def with_periods(batch: pl.DataFrame, default_market: str = DEFAULT_MARKET) -> pl.DataFrame:
    """Lines captured before markets existed carry only `delivery_day` + `delivery_hour`: the
    default market's local hour (contract §5). They get their instants here, or, for an hour
    that does not exist or happens twice, the reason they cannot be booked (`unbookable`)."""
    legacy = batch.filter(pl.col("delivery_start").is_null())
    if not legacy.height:
        return batch.with_columns(pl.lit(None, pl.String).alias("unbookable"))
    rows = []
    for day, label in legacy.select("delivery_day", "delivery_hour").unique().iter_rows():
        period = hour_period(default_market, day, label)
        if isinstance(period, Invalid):
            rows.append((day, label, None, None, period.reason))
        else:
            start, end = period.delivery_start.isoformat(), period.delivery_end.isoformat()
            rows.append((day, label, start, end, None))
    resolved = pl.DataFrame(rows, schema=_PERIOD_SCHEMA, orient="row")
    return (
        batch.join(resolved, on=["delivery_day", "delivery_hour"], how="left", nulls_equal=True)
        .with_columns(
            pl.col("market").fill_null(default_market),
            pl.coalesce("delivery_start", "_start").alias("delivery_start"),
            pl.coalesce("delivery_end", "_end").alias("delivery_end"),
        )
        .drop("_start", "_end")
    )


def typed(batch: pl.DataFrame) -> pl.DataFrame:
    """Segment strings -> the table's types, with the `after_gate_closure` flag and an
    `unbookable` reason (null for every deal the table takes; see `bookable`). Parsed here, not
    by a DuckDB CAST: DuckDB's VARCHAR -> TIMESTAMPTZ cast is much slower than polars on the
    fixed format the listener writes (benchmarks/README.md, "drain")."""
    batch = with_periods(batch)
    lead = pl.col("market").replace_strict(_LEADS, default=None, return_dtype=pl.Int64)
    return batch.with_columns(
        pl.col("delivery_day").str.to_date("%Y-%m-%d"),
        pl.col("execution_time", "received_at", "delivery_start", "delivery_end").str.to_datetime(
            INSTANT_FORMAT, time_zone="UTC"
        ),
    ).with_columns(
        (pl.col("execution_time") >= pl.col("delivery_start") - pl.duration(minutes=lead)).alias(
            "after_gate_closure"
        ),
        pl.when(lead.is_null() & pl.col("unbookable").is_null())
        .then(pl.format("unknown market {}", pl.col("market")))
        .otherwise(pl.col("unbookable"))
        .alias("unbookable"),
    )


def bookable(deals: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Typed deal lines -> (the rows `raw_trades` takes, the lines that cannot be booked)."""
    refused = pl.col("unbookable").is_not_null()
    return deals.filter(~refused), deals.filter(refused)


def _which_segment(paths: list[str], chunks: list[bytes]) -> str:
    for path, data in zip(paths, chunks, strict=True):
        try:
            if data:
                pl.read_ndjson(json_lines(data), schema=SEGMENT_SCHEMA)
        except Exception:
            return f"corrupt capture segment {path}"
    return "corrupt capture segments"
