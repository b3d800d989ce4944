"""Rebuild benchmark: the warehouse made again from the journals.

    .venv/bin/python benchmarks/rebuild.py                      # 5 M deals (~35 days), a year of prices
    .venv/bin/python benchmarks/rebuild.py --deals 52560000     # a year at 100 deals a minute

In a temporary directory:
1. capture: `--deals` deals at 100 a minute from 2026-01-01 (1 % received twice), as the
   listener seals them (one segment per minute), and a feed gap a day;
2. drain: the real `drain` one capture day at a time (each call archives its day into the
   deals' journal): the baseline, its rows/s on the same data;
3. prices: 8,760 hours x 6 revisions (`--price-days`, default a year) appended to the prices'
   journal as the price runs do (one file per run: a day's 24 hours at each revision);
4. rebuild: the warehouse deleted, `energy-assets rebuild` in a subprocess: seconds and peak
   RSS, its deals/s beside the drain's; the archive's size per million deals;
5. replay: `view_at` the last instant (every deal, every price), in this process.
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

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from energy_assets.journals.prices import append_answers  # noqa: E402
from energy_assets.journals.replay import view_at  # noqa: E402
from energy_assets.prices.client import ReferencePrice  # noqa: E402
from energy_assets.trades.buffer import GAPS, SEGMENTS  # noqa: E402
from energy_assets.trades.drain import drain  # noqa: E402

START = datetime(2026, 1, 1, tzinfo=UTC)
PER_MINUTE = 100
REVISIONS = 6


def line(name: str, value: str, note: str = "") -> None:
    print(f"{name:<52} {value:>18}  {note}", flush=True)


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y%m%dT%H%M%S%fZ")


def write_day(capture: Path, day: date, deals: int, rng: random.Random, counter: list[int]) -> int:
    """One capture day: `deals` deals in one segment per minute, 1 % received again a
    minute later; one 30 s feed gap. Returns the lines written."""
    midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
    minutes = -(-deals // PER_MINUTE)
    lines_written = 0
    again: list[str] = []
    for minute in range(minutes):
        base = midnight + timedelta(minutes=minute)
        count = min(PER_MINUTE, deals - minute * PER_MINUTE)
        lines = again
        again = []
        for n in range(count):
            received = base + timedelta(microseconds=n * 599_000 + 1)
            hour = rng.randrange(24)
            delivery = day + timedelta(days=rng.randrange(2))
            executed = received - timedelta(milliseconds=rng.randrange(1, 500))
            text = (
                f'{{"id":"{rng.getrandbits(128):032x}","price":{rng.uniform(-50, 300):.2f},'
                f'"quantity":{rng.randrange(1, 250) / 10},'
                f'"direction":"{"buy" if rng.random() < 0.5 else "sell"}",'
                f'"delivery_day":"{delivery.isoformat()}","delivery_hour":"{hour:02d}-{hour + 1:02d}",'
                f'"trader_id":"flex_trader_{rng.randrange(1, 16)}",'
                f'"execution_time":"{executed.isoformat(timespec="microseconds")}",'
                f'"received_at":"{received.isoformat(timespec="microseconds")}"}}\n'
            )
            lines.append(text)
            if rng.random() < 0.01:
                # Received again a minute later: the drain and the rebuild keep the first.
                again.append(
                    text.replace(
                        received.isoformat(timespec="microseconds"),
                        (received + timedelta(minutes=1)).isoformat(timespec="microseconds"),
                    )
                )
        counter[0] += 1
        sealed = base + timedelta(seconds=59, microseconds=counter[0] % 1000)
        name = f"{_stamp(sealed)}-1-{counter[0]:09d}.jsonl"
        (capture / SEGMENTS / name).write_text("".join(lines))
        lines_written += len(lines)
    gap_end = midnight + timedelta(hours=12, seconds=30)
    counter[0] += 1
    (capture / GAPS / f"{_stamp(gap_end)}-1-{counter[0]:09d}.json").write_text(
        f'{{"gap_start":"{(gap_end - timedelta(seconds=30)).isoformat()}",'
        f'"gap_end":"{gap_end.isoformat()}","reason":"benchmark"}}\n'
    )
    return lines_written


def journal_prices(archive: Path, days: int, rng: random.Random) -> int:
    """`days` x 24 hours x REVISIONS answers, one journal file per (day, revision) run."""
    answers = 0
    for d in range(days):
        day = (START + timedelta(days=d)).date()
        for revision in range(REVISIONS):
            stored = START + timedelta(days=d - 1, hours=8 + 2 * revision)
            batch = [
                ReferencePrice(
                    delivery_day=day,
                    delivery_hour=f"{hour:02d}-{hour + 1:02d}",
                    value=round(rng.uniform(20, 200), 2),
                    unit="euro/mwh",
                    last_update=stored - timedelta(minutes=5),
                    fetched_at=stored - timedelta(seconds=1),
                )
                for hour in range(24)
            ]
            append_answers(archive, batch, f"run{d:04d}{revision}", now=stored)
            answers += len(batch)
    return answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--deals", type=int, default=5_000_000)
    parser.add_argument("--price-days", type=int, default=365)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="rebuild-bench-"))
    capture, db = work / "capture", work / "warehouse.duckdb"
    archive = capture / "archive"
    for folder in (SEGMENTS, GAPS):
        (capture / folder).mkdir(parents=True)
    rng = random.Random(27)
    per_day = PER_MINUTE * 1440
    days = -(-args.deals // per_day)
    print(
        f"{args.deals:,} deals over {days} capture days, {args.price_days * 24:,} hours x "
        f"{REVISIONS} revisions; in {work}; load {os.getloadavg()[0]:.1f}",
        flush=True,
    )

    counter, lines, generate_s, drain_s, rows = [0], 0, 0.0, 0.0, 0
    with duckdb.connect(str(db)) as conn:
        for d in range(days):
            started = time.perf_counter()
            lines += write_day(
                capture,
                (START + timedelta(days=d)).date(),
                min(per_day, args.deals - d * per_day),
                rng,
                counter,
            )
            generate_s += time.perf_counter() - started
            result = drain(conn, capture, retention=timedelta(0))
            drain_s += result.seconds
            rows = result.total_rows
    line("captured lines (deals + 1 % received twice)", f"{lines:,}")
    line(
        "drain, one capture day per call, archive included",
        f"{rows / drain_s:,.0f} rows/s",
        f"{drain_s:.1f} s for {rows:,} deals ({generate_s:.0f} s to write the capture files)",
    )

    started = time.perf_counter()
    answers = journal_prices(archive, args.price_days, rng)
    line("prices journaled", f"{answers:,} answers", f"{time.perf_counter() - started:.1f} s")

    deal_bytes = sum(p.stat().st_size for p in (archive / "deals").rglob("*") if p.is_file())
    price_bytes = sum(p.stat().st_size for p in (archive / "prices").rglob("*") if p.is_file())
    line(
        "deals' archive per million deals",
        f"{deal_bytes / (rows / 1e6) / 1e6:.1f} MB",
        f"{deal_bytes / 1e6:.0f} MB in {days} day bundles",
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
    assert rebuilt == rows, (rebuilt, rows)
    line("rebuild (subprocess, wall)", f"{rebuild_s:.1f} s", "; ".join(phases))
    line(
        "rebuild deals/s vs the drain's rows/s",
        f"{rows / rebuild_s:,.0f} deals/s",
        f"{(rows / rebuild_s) / (rows / drain_s):.2f}x the drain",
    )
    line("rebuild peak RSS", f"{peak_mb:,.0f} MB")
    line("revisions rebuilt", f"{revisions:,}")
    started = time.perf_counter()
    last = START + timedelta(days=days)
    view = view_at(last, archive)
    replay_s = time.perf_counter() - started
    assert view.deals == rows, (view.deals, rows)
    line(
        "replay at the last instant (view_at, in process)",
        f"{replay_s:.1f} s",
        f"{view.deals:,} deals, {view.prices.height:,} hours priced",
    )
    if args.deals < 52_560_000:
        year = 52_560_000 / rows
        line(
            "a year (52.56 M deals), extrapolated linearly",
            f"~{rebuild_s * year / 60:.0f} min",
            f"drain ~{drain_s * year / 60:.0f} min; archive ~{deal_bytes * year / 1e9:.1f} GB",
        )
    if args.keep:
        print(f"kept {work}")
    else:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
