"""Rebuild benchmark: the warehouse made again from the journals.

    .venv/bin/python benchmarks/rebuild.py                      # 5 M deals (~35 days), a year of prices
    .venv/bin/python benchmarks/rebuild.py --deals 52560000     # a year at 100 deals a minute

In a temporary directory, a capture day at a time (the capture files of one day only on disk):
1. capture: `--deals` deals at 100 a minute from 2026-01-01 (1 % received twice), as the
   listener seals them (one segment per minute), and a feed gap a day;
2. drain: the real `drain` of the first `--drain-days` days (default 35, ~5 M deals), a day per
   call, archiving into the deals' journal: the baseline, its rows/s; the other days go
   straight into the journal with the drain's own `archive_capture`;
3. prices: 8,760 hours x 6 revisions (`--price-days`, default a year) appended to the prices'
   journal as the price runs do (one file per run: a day's 24 hours at each revision);
4. rebuild: the warehouse deleted, `energy-assets rebuild` in a subprocess: seconds and peak
   RSS, its deals/s beside the drain's; the archive's size per million deals;
5. replay: `view_at` the end of the drained days, in this process.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from energy_assets.journals.deals import archive_capture  # noqa: E402
from energy_assets.journals.prices import append_answers  # noqa: E402
from energy_assets.journals.replay import view_at  # noqa: E402
from energy_assets.markets import day_periods  # noqa: E402
from energy_assets.prices.period_prices import PeriodPrice  # noqa: E402
from energy_assets.trades.buffer import GAPS, SEGMENTS  # noqa: E402
from energy_assets.trades.drain import drain  # noqa: E402

START = datetime(2026, 1, 1, tzinfo=UTC)
PER_MINUTE = 100
REVISIONS = 6


def line(name: str, value: str, note: str = "") -> None:
    print(f"{name:<52} {value:>18}  {note}", flush=True)


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y%m%dT%H%M%S%fZ")


def _uniform(seed: int, offset: int, n: int) -> pl.Expr:
    """n pseudo-random integers in [0, 2**32), reproducible (polars' hash of a row number)."""
    return ((pl.int_range(n, dtype=pl.UInt64) + offset).hash(seed) // 2**32).cast(pl.Int64)


def day_lines(day: date, deals: int, first: int) -> pl.DataFrame:
    """One capture day as the listener writes it: `deals` deals at 100 a minute from midnight,
    1 % received again a minute later (not past midnight); columns `segment`, `line`."""
    midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
    instant = "%Y-%m-%dT%H:%M:%S%.6f%:z"
    n = pl.int_range(deals, dtype=pl.Int64)
    frame = pl.select(
        id=pl.format("{}-{}", _uniform(1, first, deals), n + first),
        price=((_uniform(2, first, deals) % 35_000 - 5_000) / 100).round(2),
        quantity=((_uniform(3, first, deals) % 249 + 1) / 10).round(1),
        direction=pl.when(_uniform(4, first, deals) % 2 == 0)
        .then(pl.lit("buy"))
        .otherwise(pl.lit("sell")),
        delivery_day=pl.lit(day) + pl.duration(days=_uniform(5, first, deals) % 2),
        hour=_uniform(6, first, deals) % 24,
        trader=_uniform(7, first, deals) % 15 + 1,
        received_at=pl.lit(midnight)
        + pl.duration(minutes=n // PER_MINUTE, microseconds=n % PER_MINUTE * 599_000 + 1),
        lag_ms=_uniform(8, first, deals) % 499 + 1,
        again=_uniform(9, first, deals) % 100 == 0,
    ).with_columns(
        execution_time=pl.col("received_at") - pl.duration(milliseconds=pl.col("lag_ms"))
    )
    repeated = (
        frame.filter("again")
        .with_columns(pl.col("received_at") + pl.duration(minutes=1))
        .filter(pl.col("received_at") < midnight + timedelta(days=1))
    )
    return (
        pl.concat([frame, repeated])
        .sort("received_at")
        .select(
            segment=pl.col("received_at").dt.truncate("1m").dt.strftime("%Y%m%dT%H%M59"),
            line=pl.concat_str(
                pl.lit('{"id":"'),
                "id",
                pl.lit('","price":'),
                "price",
                pl.lit(',"quantity":'),
                "quantity",
                pl.lit(',"direction":"'),
                "direction",
                pl.lit('","delivery_day":"'),
                "delivery_day",
                pl.lit('","delivery_hour":"'),
                pl.col("hour").cast(pl.String).str.zfill(2),
                pl.lit("-"),
                (pl.col("hour") + 1).cast(pl.String).str.zfill(2),
                pl.lit('","trader_id":"flex_trader_'),
                "trader",
                pl.lit('","execution_time":"'),
                pl.col("execution_time").dt.strftime(instant),
                pl.lit('","received_at":"'),
                pl.col("received_at").dt.strftime(instant),
                pl.lit('"}\n'),
            ),
        )
    )


def write_day(
    capture: Path, day: date, deals: int, first: int, counter: list[int]
) -> tuple[list[Path], int]:
    """Seal one capture day: one segment per minute and a 30 s feed gap at noon. Returns the
    files written and the lines in them."""
    lines = day_lines(day, deals, first)
    per_segment = lines.group_by("segment", maintain_order=True).agg(pl.col("line").str.join(""))
    paths = []
    for segment, text in per_segment.iter_rows():
        counter[0] += 1
        path = capture / SEGMENTS / f"{segment}{counter[0] % 1000:03d}000Z-1-{counter[0]:09d}.jsonl"
        path.write_text(text)
        paths.append(path)
    gap_end = datetime(day.year, day.month, day.day, 12, 0, 30, tzinfo=UTC)
    counter[0] += 1
    gap = capture / GAPS / f"{_stamp(gap_end)}-1-{counter[0]:09d}.json"
    gap.write_text(
        f'{{"gap_start":"{(gap_end - timedelta(seconds=30)).isoformat()}",'
        f'"gap_end":"{gap_end.isoformat()}","reason":"benchmark"}}\n'
    )
    return [*paths, gap], lines.height


def journal_prices(archive: Path, days: int, rng: random.Random) -> int:
    """`days` x Berlin's hours (23 to 25 a day) x REVISIONS answers, one journal file per (day, revision) run."""
    answers = 0
    for d in range(days):
        day = (START + timedelta(days=d)).date()
        for revision in range(REVISIONS):
            stored = START + timedelta(days=d - 1, hours=8 + 2 * revision)
            batch = [
                PeriodPrice(
                    period=period,
                    value=round(rng.uniform(20, 200), 2),
                    unit="euro/mwh",
                    last_update=stored - timedelta(minutes=5),
                    fetched_at=stored - timedelta(seconds=1),
                )
                for period in day_periods("DE", day, 60)
            ]
            append_answers(archive, batch, f"run{d:04d}{revision}", now=stored)
            answers += len(batch)
    return answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--deals", type=int, default=5_000_000)
    parser.add_argument(
        "--drain-days", type=int, default=35, help="capture days drained (the baseline)"
    )
    parser.add_argument("--price-days", type=int, default=365)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="rebuild-bench-"))
    capture, db = work / "capture", work / "warehouse.duckdb"
    archive = capture / "archive"
    for folder in (SEGMENTS, GAPS):
        (capture / folder).mkdir(parents=True)
    per_day = PER_MINUTE * 1440
    days = -(-args.deals // per_day)
    drain_days = min(days, args.drain_days)
    print(
        f"{args.deals:,} deals over {days} capture days ({drain_days} drained), "
        f"{args.price_days * 24:,} hours x {REVISIONS} revisions; in {work}; "
        f"load {os.getloadavg()[0]:.1f}",
        flush=True,
    )

    counter, lines, generate_s, drain_s, archive_s, drained = [0], 0, 0.0, 0.0, 0.0, 0
    with duckdb.connect(str(db)) as conn:
        for d in range(days):
            started = time.perf_counter()
            count = min(per_day, args.deals - d * per_day)
            paths, written = write_day(
                capture, (START + timedelta(days=d)).date(), count, d * per_day, counter
            )
            lines += written
            generate_s += time.perf_counter() - started
            started = time.perf_counter()
            if d < drain_days:
                result = drain(conn, capture, retention=timedelta(0))
                drain_s += result.seconds
                drained = result.total_rows
            else:
                # The rest straight into the journal, as the drain archives a committed day.
                archive_capture(paths, archive)
                for path in paths:
                    path.unlink()
                archive_s += time.perf_counter() - started
            if d % 30 == 29:
                print(
                    f"  day {d + 1}: {lines:,} lines, {time.perf_counter() - started:.1f} s",
                    flush=True,
                )
    line(
        "captured lines (deals + 1 % received twice)",
        f"{lines:,}",
        f"written in {generate_s:.0f} s",
    )
    line(
        f"drain of the first {drain_days} days, a day per call, archive included",
        f"{drained / drain_s:,.0f} rows/s",
        f"{drain_s:.1f} s for {drained:,} deals",
    )
    if archive_s:
        line("archive of the other days (the drain's archive_capture)", f"{archive_s:.1f} s")

    started = time.perf_counter()
    answers = journal_prices(archive, args.price_days, random.Random(27))
    line("prices journaled", f"{answers:,} answers", f"{time.perf_counter() - started:.1f} s")

    deal_bytes = sum(p.stat().st_size for p in (archive / "deals").rglob("*") if p.is_file())
    price_bytes = sum(p.stat().st_size for p in (archive / "prices").rglob("*") if p.is_file())
    line(
        "deals' archive per million deals",
        f"{deal_bytes / (args.deals / 1e6) / 1e6:.1f} MB",
        f"{deal_bytes / 1e6:,.0f} MB in {days} day folders",
    )
    line("prices' archive", f"{price_bytes / 1e6:.1f} MB", f"{answers:,} answers")

    db.unlink()
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "energy_assets.cli",
            "rebuild",
            "--warehouse",
            str(db),
            "--archive",
            str(archive),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    rebuild_s = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if done.returncode:
        sys.exit(done.stderr)
    phases = [text for text in done.stdout.splitlines() if text.startswith(("deals:", "prices:"))]
    with duckdb.connect(str(db), read_only=True) as conn:
        rebuilt = conn.execute("SELECT count(*) FROM energy.raw_trades").fetchone()[0]
        revisions = conn.execute(
            "SELECT count(*) FROM energy.reference_price_revisions"
        ).fetchone()[0]
    assert rebuilt == args.deals, (rebuilt, args.deals)
    line("rebuild (subprocess, wall)", f"{rebuild_s:.1f} s", "; ".join(phases))
    line(
        "rebuild deals/s vs the drain's rows/s",
        f"{rebuilt / rebuild_s:,.0f} deals/s",
        f"{(rebuilt / rebuild_s) / (drained / drain_s):.2f}x the drain",
    )
    line("rebuild peak RSS", f"{peak_mb:,.0f} MB")
    line("revisions rebuilt", f"{revisions:,}")
    # Replay reads every deal received by its instant: at the end of the drained days, so that
    # a year's journal is replayed at a bounded size.
    at = START + timedelta(days=drain_days)
    started = time.perf_counter()
    view = view_at(at, archive)
    line(
        f"replay at the end of day {drain_days} (view_at, in process)",
        f"{time.perf_counter() - started:.1f} s",
        f"{view.deals:,} deals, {view.prices.height:,} hours priced",
    )
    if args.keep:
        print(f"kept {work}")
    else:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
