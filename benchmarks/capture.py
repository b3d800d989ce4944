"""Trade capture benchmarks: listener throughput, drain rows/s, arrival -> row latency.

    .venv/bin/python benchmarks/capture.py                      # everything, default sizes
    .venv/bin/python benchmarks/capture.py --only drain --drain-rows 1000000
    .venv/bin/python benchmarks/capture.py --only listener --listener-deals 200000
    .venv/bin/python benchmarks/capture.py --only latency --latency-seconds 120

Every figure is printed beside its baseline measured in the same run:
- listener: deals/s of `energy-assets listen` (a subprocess) against the playground at full
  speed (rate 0), vs the sender's own rate, vs a client inserting each message into DuckDB
  as it arrives; the listener's CPU per deal vs the sender's (what the ratio would be on an
  idle machine, whatever the load); the listener's peak RSS.
- drain: rows/s of the `raw_trades` drain for N captured deals, vs DuckDB's own ceiling
  (`INSERT ... SELECT FROM read_json` into a table without index), vs the same with a
  PRIMARY KEY on id, vs polars parse + insert into a keyed table; and the drain of a second
  batch against a table that already holds N rows (the anti-join's cost). Then the hand-off
  of a typed batch to DuckDB in a fresh process (as every drain run is): the drain's Arrow
  scan of the polars frame vs a Parquet file written for DuckDB to read.
- latency: deal received by the listener -> its row committed in DuckDB through the real
  daemon at the product's batch cadence (playground at 3 deals/s), p50/p95, beside Dagster's
  own floor (sealed file -> the drain step starting) from the same runs.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import polars as pl

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from energy_assets.playground.server import ExchangeOptions, Playground  # noqa: E402
from energy_assets.tables import RAW_TRADES  # noqa: E402
from energy_assets.trades.buffer import SEGMENTS  # noqa: E402
from energy_assets.trades.deal import FIELDS, Refused, parse_frame  # noqa: E402
from energy_assets.trades.drain import drain  # noqa: E402
from energy_assets.trades.lines import read_segments, typed  # noqa: E402

PYTHON = str(REPO / ".venv/bin/python")


def line(name: str, value: str, note: str = "") -> None:
    print(f"{name:<58} {value:>16}  {note}", flush=True)


# -- listener ---------------------------------------------------------------------------------
def _peak_rss_mb(pid: int) -> float:
    for text in Path(f"/proc/{pid}/status").read_text().splitlines():
        if text.startswith("VmHWM:"):
            return int(text.split()[1]) / 1024
    return float("nan")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _received_times(capture: Path) -> list[str]:
    times = []
    for path in sorted((capture / SEGMENTS).glob("*.jsonl")):
        frame = pl.read_ndjson(path, schema={"received_at": pl.String})
        times += frame["received_at"].to_list()
    return times


def bench_listener(deals: int, work: Path) -> float:
    capture = work / "listener-capture"
    with Playground(
        exchange=ExchangeOptions(rate=0, seed=1, max_deals=deals),
        exchange_port=0,
        market_data_port=0,
    ) as pg:
        env = {**os.environ, "ENERGY_CAPTURE_DIR": str(capture)}
        proc = subprocess.Popen(
            [PYTHON, "-m", "energy_assets.cli", "listen", "--url", pg.exchange_url],
            cwd=REPO,
            env=env,
            stderr=subprocess.DEVNULL,
        )
        while pg.connections == 0:
            time.sleep(0.001)
        connected = time.perf_counter()
        listener_cpu, sender_cpu = _cpu_seconds(proc.pid), time.process_time()
        pg.finished.wait(600)
        sender_seconds = time.perf_counter() - connected
        sender_cpu = time.process_time() - sender_cpu
        sent = pg.frames_sent
        time.sleep(2.5)  # the last frames are read and sealed
        listener_cpu = _cpu_seconds(proc.pid) - listener_cpu
        rss = _peak_rss_mb(proc.pid)
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    received = _received_times(capture)
    first = datetime.fromisoformat(received[0])
    last = datetime.fromisoformat(received[-1])
    listener_rate = len(received) / max((last - first).total_seconds(), 1e-9)
    sender_rate = sent / sender_seconds
    line("listener: deals captured", f"{len(received):,}", f"of {sent:,} frames sent")
    line("listener: sender rate (playground, rate 0)", f"{sender_rate:,.0f}/s")
    line(
        "listener: capture rate (first -> last received)",
        f"{listener_rate:,.0f}/s",
        f"ratio to sender {listener_rate / sender_rate:.3f} (goal >= 0.95)",
    )
    # CPU per deal does not depend on how busy the machine is: the ratio under load is bound by
    # a slowed sender, this one says whether the listener keeps up with a sender at full speed.
    line(
        "listener: CPU per deal (sender's: the playground)",
        f"{listener_cpu / sent * 1e6:,.1f} us",
        f"sender {sender_cpu / sent * 1e6:,.1f} us, {sender_cpu / listener_cpu:.2f}x the listener",
    )
    line("listener: peak RSS", f"{rss:,.1f} MB")
    return listener_rate


async def _insert_each(url: str, database: Path, deals: int) -> float:
    from websockets.asyncio.client import connect

    conn = duckdb.connect(str(database))
    # The deal's fields and received_at, typed as energy.raw_trades declares them.
    columns = [c for c in RAW_TRADES.columns if c.name in FIELDS or c.name == "received_at"]
    conn.execute(f"CREATE TABLE t ({', '.join(f'{c.name} {c.type}' for c in columns)})")
    placeholders = ", ".join("?" for _ in columns)
    count, started = 0, None
    async with connect(url, max_queue=None) as ws:
        async for message in ws:
            started = started or time.perf_counter()
            deal = parse_frame(message)
            if isinstance(deal, Refused):
                continue
            conn.execute(
                f"INSERT INTO t VALUES ({placeholders})",
                [*deal.to_dict().values(), datetime.now(UTC)],
            )
            count += 1
            if count == deals:
                break
    seconds = time.perf_counter() - started
    conn.close()
    return count / seconds


def bench_baseline(deals: int, work: Path, listener_rate: float | None) -> None:
    with Playground(
        exchange=ExchangeOptions(rate=0, seed=2, max_deals=deals),
        exchange_port=0,
        market_data_port=0,
    ) as pg:
        rate = asyncio.run(_insert_each(pg.exchange_url, work / "baseline.duckdb", deals))
    note = ""
    if listener_rate:
        note = f"listener / baseline = {listener_rate / rate:.1f}x (goal >= 20x)"
    line("baseline: one DuckDB INSERT per message", f"{rate:,.0f}/s", note)


# -- drain ------------------------------------------------------------------------------------
def write_segments(capture: Path, rows: int, per_segment: int = 10_000, seed: int = 0) -> Path:
    """`rows` captured deals in sealed segments, as the listener writes them."""
    import random

    rng = random.Random(seed)
    segments = capture / SEGMENTS
    segments.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC).isoformat(timespec="microseconds")
    frame = pl.DataFrame(
        {
            "id": [f"{rng.getrandbits(128):032x}" for _ in range(rows)],
            "price": [round(rng.uniform(-50, 300), 2) for _ in range(rows)],
            "quantity": [round(rng.uniform(0.1, 25), 1) for _ in range(rows)],
            "direction": [rng.choice(("buy", "sell")) for _ in range(rows)],
            "delivery_day": ["2026-11-25"] * rows,
            "delivery_hour": [
                f"{h:02d}-{h + 1:02d}" for h in (rng.randrange(24) for _ in range(rows))
            ],
            "trader_id": [f"flex_trader_{rng.randrange(1, 16)}" for _ in range(rows)],
            "execution_time": ["2026-11-25T06:13:43.000000+00:00"] * rows,
            "received_at": [now] * rows,
        }
    )
    stamp = f"{seed:04d}"
    for index, start in enumerate(range(0, rows, per_segment)):
        buffer = io.BytesIO()
        frame.slice(start, per_segment).write_ndjson(buffer)
        (segments / f"20261125T000000{stamp}00Z-1-{index:06d}.jsonl").write_bytes(buffer.getvalue())
    return segments


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def bench_drain(rows: int, work: Path) -> None:
    capture = work / "drain-capture"
    segments = write_segments(capture, rows)
    files = sorted(str(p) for p in segments.glob("*.jsonl"))
    size_mb = sum(os.path.getsize(p) for p in files) / 2**20
    # DuckDB's own reader with its own type detection: the figure to beat.
    select = (
        "SELECT id, price, quantity, direction, delivery_day, delivery_hour, trader_id, "
        "execution_time, received_at, filename FROM read_json(?, filename = true)"
    )
    ddl = (
        "CREATE TABLE t (id VARCHAR {key}, price DOUBLE, quantity DOUBLE, direction VARCHAR, "
        "delivery_day DATE, delivery_hour VARCHAR, trader_id VARCHAR, "
        "execution_time TIMESTAMPTZ, received_at TIMESTAMPTZ, segment VARCHAR)"
    )
    print(f"drain: {rows:,} deals in {len(files)} segments, {size_mb:,.0f} MB", flush=True)

    def ceiling(key: str, name: str) -> float:
        path = work / f"{name}.duckdb"
        with duckdb.connect(str(path)) as conn:
            conn.execute(ddl.format(key=key))
            seconds = _timed(lambda: conn.execute(f"INSERT INTO t {select}", [files]))
        path.unlink()
        return rows / seconds

    with duckdb.connect() as conn:  # first-use costs (JSON extension, polars) out of the race
        conn.execute(f"SELECT count(*) FROM ({select})", [files[:1]]).fetchall()
        read_segments([Path(files[0])])
    plain = ceiling("", "ceiling")
    line("DuckDB read_json -> table without index", f"{plain:,.0f} rows/s", "(the ceiling)")
    keyed = ceiling("PRIMARY KEY", "keyed")
    line("DuckDB read_json -> table with PRIMARY KEY", f"{keyed:,.0f} rows/s")

    path = work / "polars-keyed.duckdb"
    with duckdb.connect(str(path)) as conn:
        conn.execute(ddl.format(key="PRIMARY KEY"))

        def polars_keyed():
            batch = read_segments([Path(p) for p in files])
            conn.register("b", typed(batch.unique(subset="id", keep="first", maintain_order=True)))
            columns = "id, price, quantity, direction, delivery_day, delivery_hour, trader_id, "
            conn.execute(
                f"INSERT INTO t SELECT {columns} execution_time, received_at, segment FROM b"
            )

        rate = rows / _timed(polars_keyed)
    path.unlink()
    line("polars parse -> table with PRIMARY KEY", f"{rate:,.0f} rows/s")

    database = work / "drain.duckdb"
    with duckdb.connect(str(database)) as conn:
        result = drain(conn, capture)
    assert result.rows_added == rows, result
    rate = rows / result.seconds
    line(
        "raw_trades drain (polars, dedupe, anti-join, one txn)",
        f"{rate:,.0f} rows/s",
        f"{rate / plain:.2f} of the ceiling (goal >= 500k rows/s)",
    )
    # A second batch of the same size against a table already holding `rows` rows.
    write_segments(capture, rows, seed=1)
    with duckdb.connect(str(database)) as conn:
        result = drain(conn, capture)
        total = conn.execute(f"SELECT count(*) FROM {RAW_TRADES}").fetchone()[0]
    assert result.rows_added == rows and total == 2 * rows
    line(
        f"raw_trades drain, 2nd batch vs {rows:,} stored rows",
        f"{rows / result.seconds:,.0f} rows/s",
    )
    shutil.rmtree(capture)


# A fresh drain process hands one typed batch to DuckDB, once as the drain does (an Arrow scan
# of the polars frame) and once through a Parquet file; each in its own process, as every run.
_HANDOFF = """
import sys, tempfile, time
from pathlib import Path
import duckdb
sys.path.insert(0, {repo!r})
from energy_assets.tables import RAW_TRADES, ensure_trade_tables
from energy_assets.trades.lines import read_segments, typed
batch = typed(read_segments(sorted(Path({segments!r}).glob("*.jsonl"))))
batch = batch.select(RAW_TRADES.column_names)
conn = duckdb.connect()
ensure_trade_tables(conn)
started = time.perf_counter()
if {mode!r} == "parquet":
    with tempfile.TemporaryDirectory() as scratch:
        path = str(Path(scratch) / "batch.parquet")
        batch.write_parquet(path, compression="uncompressed", statistics=False)
        conn.execute(f"INSERT INTO {{RAW_TRADES}} SELECT * FROM read_parquet(?)", [path])
else:
    conn.register("batch", batch)
    conn.execute(f"INSERT INTO {{RAW_TRADES}} SELECT * FROM batch")
print(time.perf_counter() - started)
"""


def bench_handoff(rows: int, work: Path, repeats: int = 5) -> None:
    capture = work / "handoff-capture"
    segments = write_segments(capture, rows, per_segment=rows)
    seconds = {}
    for mode in ("parquet", "arrow"):
        code = _HANDOFF.format(repo=str(REPO), segments=str(segments), mode=mode)
        runs = [
            float(subprocess.run([PYTHON, "-c", code], check=True, capture_output=True).stdout)
            for _ in range(repeats)
        ]
        seconds[mode] = statistics.median(runs)
    line(
        f"drain hand-off of {rows:,} deals, fresh process: Arrow scan",
        f"{seconds['arrow'] * 1000:,.0f} ms",
        f"via a Parquet file {seconds['parquet'] * 1000:,.0f} ms (median of {repeats})",
    )
    shutil.rmtree(capture)


# -- latency ----------------------------------------------------------------------------------
def bench_latency(seconds: float, work: Path) -> None:
    import dagster as dg

    work = work / "latency"
    home = work / "dagster_home"
    home.mkdir(parents=True)
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    workspace = REPO / "workspace.yaml"
    capture, database = work / "capture", work / "warehouse.duckdb"
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "ENERGY_CAPTURE_DIR": str(capture),
        "ENERGY_DUCKDB_PATH": str(database),
        "ENERGY_DASHBOARD_DIR": str(work / "dashboard"),
    }
    with Playground(
        exchange=ExchangeOptions(rate=3, seed=3), exchange_port=0, market_data_port=0
    ) as pg:
        env["ENERGY_MARKET_DATA_URL"] = pg.market_data_url
        daemon = subprocess.Popen(
            [str(REPO / ".venv/bin/dagster-daemon"), "run", "-w", str(workspace)],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        time.sleep(15)  # the daemon's code server is up before the first deal
        listener = subprocess.Popen(
            [PYTHON, "-m", "energy_assets.cli", "listen", "--url", pg.exchange_url],
            cwd=REPO,
            env=env,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(seconds)
        listener.send_signal(signal.SIGTERM)
        listener.wait(30)
        time.sleep(20)  # the last segments drain
        os.killpg(daemon.pid, signal.SIGTERM)
        daemon.wait(60)

    with duckdb.connect(str(database), read_only=True) as conn:
        latencies = [
            row[0]
            for row in conn.execute(
                "SELECT epoch(s.ingested_at) - epoch(r.received_at) FROM energy.raw_trades r "
                "JOIN energy.capture_segments s USING (segment)"
            ).fetchall()
        ]
    os.environ["DAGSTER_HOME"] = str(home)
    instance = dg.DagsterInstance.get()
    floors, to_request, to_start = [], [], []
    for record in instance.get_run_records(dg.RunsFilter(job_name="drain_and_refresh")):
        newest = record.dagster_run.tags.get("energy/newest_segment")
        path = capture / "drained" / newest if newest else None
        if not path or not path.exists():
            continue
        starts = instance.get_records_for_run(
            record.dagster_run.run_id, of_type=dg.DagsterEventType.STEP_START
        ).records
        if starts:
            sealed = path.stat().st_mtime
            step = starts[0].event_log_entry.timestamp
            created = record.create_timestamp.timestamp()
            floors.append(step - sealed)
            to_request.append(created - sealed)
            to_start.append(step - created)
    q = statistics.quantiles
    print(f"latency, the demo's code location (load {os.getloadavg()[0]:.1f}):")
    line("latency: deals measured", f"{len(latencies):,}", f"over {seconds:.0f} s at 3 deals/s")
    line("latency: arrival -> row committed, p50", f"{statistics.median(latencies):.2f} s")
    line(
        "latency: arrival -> row committed, p95",
        f"{q(latencies, n=20)[-1]:.2f} s",
    )
    if floors:
        line(
            "Dagster floor: sealed file -> drain step start, p50",
            f"{statistics.median(floors):.2f} s",
            f"p95 {q(floors, n=20)[-1]:.2f} s over {len(floors)} runs",
        )
        line(
            "  of which sealed -> run requested (sensor), p50",
            f"{statistics.median(to_request):.2f} s",
        )
        line(
            "  of which run requested -> step start (queue, launch), p50",
            f"{statistics.median(to_start):.2f} s",
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["listener", "drain", "latency"], action="append")
    parser.add_argument("--listener-deals", type=int, default=100_000)
    parser.add_argument("--baseline-deals", type=int, default=5_000)
    parser.add_argument("--drain-rows", type=int, default=200_000)
    parser.add_argument("--handoff-repeats", type=int, default=5, help="fresh processes a figure")
    parser.add_argument("--latency-seconds", type=float, default=60)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    only = set(args.only or ["listener", "drain", "latency"])
    work = Path(tempfile.mkdtemp(prefix="bench-capture-"))
    print(f"machine: {os.cpu_count()} cores; load {os.getloadavg()[0]:.1f}; work dir {work}")
    try:
        if "listener" in only:
            rate = bench_listener(args.listener_deals, work)
            bench_baseline(args.baseline_deals, work, rate)
        if "drain" in only:
            bench_drain(args.drain_rows, work)
            for rows in (300, 20_000):
                bench_handoff(rows, work, args.handoff_repeats)
        if "latency" in only:
            bench_latency(args.latency_seconds, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
