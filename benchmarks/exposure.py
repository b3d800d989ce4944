"""Benchmarks of the exposure domain, each against a baseline measured in the same run.

    .venv/bin/python benchmarks/exposure.py                       # 1 M trades
    .venv/bin/python benchmarks/exposure.py --sizes 1000000 10000000

1. maths: `positions()` (polars) over N in-memory trades vs a straightforward pandas
   group-by computing the same columns. Seconds and peak RSS, each in its own process.
2. asset: `store.refresh` on a DuckDB file of N trades (DuckDB -> polars -> DuckDB):
   full recompute vs the update of one delivery day (1,000 new deals), a price revision, and
   a refresh that finds nothing changed, all on one connection (DuckDB's buffer pool warm);
   then the full recompute and the one-day update again *per run*, each refresh on a
   connection of its own as a Dagster run has it (buffer pool cold, opening and closing timed
   apart); plus the pandas baseline of the same full recompute.
   Each refresh figure is the median of 11 runs in a row, in each of several processes
   (`--processes`, default 3) on copies of one warehouse: on this shared machine the same
   code's medians differ more from one process to the next than within one. The headline is
   the median over the processes, with each process's figure beside it; a ratio is the
   ratio of two headlines, with the ratio within each process beside it.
The live desk's figures (page loads, SSE clients, send -> screen) are in benchmarks/live.py.

Goals (issue 5): 10 M trades in <= 5 s within 2 GB; one delivery day's update >= 20x faster
than a full recompute.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from statistics import median

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TRADERS = 15
START = date(2023, 1, 1)
REPEATS = 11


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def days_for(n: int, per_day: int) -> int:
    return max(1, n // per_day)


# --- data --------------------------------------------------------------------------------


def frames(n: int, per_day: int, seed: int = 7):
    """N trades (polars) and one reference price per delivery hour, ~4% of hours unpriced."""
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(seed)
    days = days_for(n, per_day)
    epoch = (START - date(1970, 1, 1)).days
    names = pl.Series([f"flex_trader_{i + 1}" for i in range(TRADERS)])
    hours = pl.Series([f"{h:02d}-{h + 1:02d}" for h in range(24)])
    trades = pl.DataFrame(
        {
            "trader_id": names.gather(rng.integers(0, TRADERS, n)),
            # Sorted by day, as trades accumulate day after day.
            "delivery_day": pl.Series(np.sort(rng.integers(0, days, n)) + epoch).cast(pl.Date),
            "delivery_hour": hours.gather(rng.integers(0, 24, n)),
            "direction": pl.Series(["buy", "sell"]).gather(rng.integers(0, 2, n)),
            "price": np.round(rng.uniform(-30, 180, n), 2),
            "quantity": np.round(rng.uniform(0.1, 10, n), 1),
        }
    )
    slots = pl.DataFrame(
        {
            "delivery_day": pl.Series(np.repeat(np.arange(days), 24) + epoch).cast(pl.Date),
            "delivery_hour": pl.Series(np.tile(np.array(hours.to_list()), days)),
            "reference_price": np.round(rng.uniform(-10, 160, days * 24), 2),
        }
    )
    prices = slots.filter(pl.Series(rng.uniform(0, 1, days * 24) > 0.04))
    return trades, prices


def pandas_positions(df, prices):
    """The straightforward pandas version of `positions()`: same columns, same nulls."""
    import numpy as np

    key = ["trader_id", "delivery_day", "delivery_hour"]
    buy = df["direction"] == "buy"
    df = df.assign(
        buy_q=np.where(buy, df["quantity"], 0.0),
        sell_q=np.where(buy, 0.0, df["quantity"]),
    )
    df = df.assign(buy_eur=df["buy_q"] * df["price"], sell_eur=df["sell_q"] * df["price"])
    g = (
        df.groupby(key, sort=True)
        .agg(
            trades=("price", "size"),
            bought_mwh=("buy_q", "sum"),
            sold_mwh=("sell_q", "sum"),
            buy_eur=("buy_eur", "sum"),
            sell_eur=("sell_eur", "sum"),
        )
        .reset_index()
    )
    g["net_mwh"] = g["bought_mwh"] - g["sold_mwh"]
    g["buy_vwap"] = (g["buy_eur"] / g["bought_mwh"]).where(g["bought_mwh"] > 0)
    g["sell_vwap"] = (g["sell_eur"] / g["sold_mwh"]).where(g["sold_mwh"] > 0)
    g["cash_eur"] = g["sell_eur"] - g["buy_eur"]
    g = g.merge(prices, on=["delivery_day", "delivery_hour"], how="left")
    g["pnl_eur"] = g["cash_eur"] + g["net_mwh"] * g["reference_price"]
    g["exposure_eur"] = g["net_mwh"] * g["reference_price"]
    return g.drop(columns=["buy_eur", "sell_eur"])


# --- children (one measurement per process, so peak RSS is its own) -----------------------


def child_maths(engine: str, n: int, per_day: int) -> dict:
    trades, prices = frames(n, per_day)
    if engine == "pandas":
        df, p = trades.to_pandas(), prices.to_pandas()
        del trades, prices
        started = time.perf_counter()
        result = pandas_positions(df, p)
        seconds = time.perf_counter() - started
        pnl = float(result["pnl_eur"].sum())
        rows = len(result)
    else:
        from energy_assets.exposure.positions import positions

        started = time.perf_counter()
        result = positions(trades, prices)
        seconds = time.perf_counter() - started
        pnl = float(result["pnl_eur"].sum())
        rows = result.height
    return {"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "rows": rows, "pnl": round(pnl, 2)}


def build_warehouse(path: Path, n: int, per_day: int) -> None:
    """raw_trades in delivery-day order (as they accumulate), prices, no exposure yet."""
    import duckdb

    days = days_for(n, per_day)
    with duckdb.connect(str(path)) as conn:
        conn.execute("SET enable_progress_bar = false")
        conn.execute("SELECT setseed(0.7)")
        conn.execute("CREATE SCHEMA energy")
        conn.execute(
            f"""CREATE TABLE "energy".energy.raw_trades AS
            SELECT md5(i::VARCHAR) AS id,
                   round(random() * 210 - 30, 2) AS price,
                   round(random() * 9.9 + 0.1, 1) AS quantity,
                   CASE WHEN random() < 0.5 THEN 'buy' ELSE 'sell' END AS direction,
                   DATE '{START}' + (i * {days} // {n})::INTEGER AS delivery_day,
                   lpad(h::VARCHAR, 2, '0') || '-' || lpad((h + 1)::VARCHAR, 2, '0') AS delivery_hour,
                   'flex_trader_' || (1 + i % {TRADERS}) AS trader_id,
                   TIMESTAMPTZ '{START}' + to_seconds(i * 86400.0 * {days} / {n}) AS execution_time,
                   TIMESTAMPTZ '{START}' + to_seconds(i * 86400.0 * {days} / {n} + 1) AS received_at,
                   'bench' AS segment
            FROM (SELECT i, (hash(i) % 24)::INTEGER AS h FROM range({n}) r(i))"""
        )
        conn.execute(
            f"""CREATE TABLE "energy".energy.reference_prices AS
            SELECT DATE '{START}' + d::INTEGER AS delivery_day,
                   lpad(h::VARCHAR, 2, '0') || '-' || lpad((h + 1)::VARCHAR, 2, '0') AS delivery_hour,
                   round(random() * 170 - 10, 2) AS value, 'euro/mwh' AS unit,
                   now() AS last_update, now() AS fetched_at
            FROM range({days}) a(d), range(24) b(h) WHERE random() > 0.04"""
        )


def pristine(workdir: str) -> Path:
    """The warehouse every asset process starts from a copy of (the file's name is the
    catalog's: `energy`)."""
    return Path(workdir) / "pristine" / "warehouse.duckdb"


def child_build(n: int, per_day: int, workdir: str) -> dict:
    path = pristine(workdir)
    path.parent.mkdir()
    started = time.perf_counter()
    build_warehouse(path, n, per_day)
    return {"build_seconds": time.perf_counter() - started, "days": days_for(n, per_day)}


def child_asset(n: int, per_day: int, workdir: str, index: int) -> dict:
    import duckdb
    import polars as pl
    from polars.testing import assert_frame_equal

    from energy_assets.exposure import store

    # A copy per process, left for the caller's temporary directory to remove.
    path = Path(workdir) / f"process-{index}" / "warehouse.duckdb"
    path.parent.mkdir()
    shutil.copyfile(pristine(workdir), path)
    rss_before = peak_rss_mb()
    days = days_for(n, per_day)
    last_day = START + timedelta(days=days - 1)
    out = {}
    with duckdb.connect(str(path)) as conn:
        conn.execute("SET enable_progress_bar = false")
        clock = iter(datetime(2024, 1, 1, tzinfo=UTC) + timedelta(minutes=i) for i in range(1000))
        first = store.refresh(conn, next(clock))
        out["first_refresh_seconds"] = first.seconds
        # Each kind of refresh in a row, as the usual ones follow each other on a desk; medians
        # over repeats, the machine being shared.
        runs: dict[str, list] = {}
        runs["full"] = [store.refresh(conn, next(clock), full=True) for _ in range(REPEATS)]
        runs["unchanged"] = [store.refresh(conn, next(clock)) for _ in range(REPEATS)]
        runs["one_day"] = []
        for k in range(REPEATS):
            add_deals(conn, f"new{k}", last_day)
            runs["one_day"].append(store.refresh(conn, next(clock)))
        runs["revision"] = []
        for k in range(REPEATS):
            conn.execute(
                f"""UPDATE "energy".energy.reference_prices SET value = value + 1.5, last_update = now()
                    WHERE delivery_day = DATE '{last_day - timedelta(days=1)}'
                      AND delivery_hour = '{k % 12 + 10:02d}-{k % 12 + 11:02d}'"""
            )
            runs["revision"].append(store.refresh(conn, next(clock)))
        out["peak_rss_mb_full"] = peak_rss_mb()
        out["rss_before_refresh_mb"] = rss_before
        for kind, results in runs.items():
            record(out, kind, [r.seconds for r in results])
        out["full_trades_read"] = runs["full"][0].trades_read
        out["one_day_days_recomputed"] = runs["one_day"][-1].days_recomputed
        out["one_day_trades_read"] = runs["one_day"][-1].trades_read
        out["one_day_detection"] = runs["one_day"][-1].detection
        out["revision_days_recomputed"] = runs["revision"][-1].days_recomputed
        table = 'SELECT * FROM "energy".energy.trader_exposure ORDER BY 1, 2, 3'
        incremental = conn.execute(table).pl()
        store.refresh(conn, next(clock), full=True)
        full = conn.execute(table).pl()
        try:
            assert_frame_equal(incremental, full, check_exact=False)
            out["incremental_equals_full"] = True
        except AssertionError:
            out["incremental_equals_full"] = False
        # How far the updates' roundings took the incremental table from a full recompute
        # (whose own sums are in no fixed order either: DuckDB adds in parallel).
        floats = [c for c, dtype in full.schema.items() if dtype == pl.Float64]
        out["incremental_max_difference"] = max(
            ((incremental[c] - full[c]).abs().max() or 0.0) for c in floats
        )
    # As a Dagster run has it: each refresh on a connection of its own, so a database just
    # opened, none of its blocks in DuckDB's buffer pool yet (the OS's page cache is warm: the
    # previous run wrote the file); the new deals come from a run before it (the drain).
    # Opening and closing (a checkpoint) are timed apart: `refresh` does neither.
    per_run: dict[str, list] = {"full_per_run": [], "one_day_per_run": []}
    for kind in per_run:
        for k in range(REPEATS):
            if kind == "one_day_per_run":
                with duckdb.connect(str(path)) as conn:
                    add_deals(conn, f"run{k}", last_day)
            opened = time.perf_counter()
            conn = duckdb.connect(str(path))
            conn.execute("SET enable_progress_bar = false")
            opened = time.perf_counter() - opened
            result = store.refresh(conn, next(clock), full=kind == "full_per_run")
            closed = time.perf_counter()
            conn.close()
            per_run[kind].append((result.seconds, opened, time.perf_counter() - closed))
    for kind, results in per_run.items():
        record(out, kind, [r[0] for r in results])
        out[f"{kind}_open_close"] = (median(r[1] for r in results), median(r[2] for r in results))
    return out


def record(out: dict, kind: str, seconds: list[float]) -> None:
    """The median of a `kind` of refresh and its fastest and slowest run, into `out`."""
    out[f"{kind}_seconds"] = median(seconds)
    out[f"{kind}_range"] = (min(seconds), max(seconds))


def add_deals(conn, tag: str, day: date) -> None:
    """1,000 new deals for `day`, as a drain would insert them."""
    conn.execute(
        f"""INSERT INTO "energy".energy.raw_trades
        SELECT md5('{tag}-' || i::VARCHAR), 50 + i % 7, 1.0,
               CASE WHEN i % 2 = 0 THEN 'buy' ELSE 'sell' END, DATE '{day}',
               lpad((i % 24)::VARCHAR, 2, '0') || '-' || lpad((i % 24 + 1)::VARCHAR, 2, '0'),
               'flex_trader_' || (1 + i % {TRADERS}), now(), now(), 'bench-new'
        FROM range(1000) r(i)"""
    )


def child_asset_pandas(n: int, per_day: int, workdir: str) -> dict:
    """The pandas baseline of a full recompute: read raw_trades into pandas, group, merge."""
    import duckdb

    with duckdb.connect(str(pristine(workdir))) as conn:
        started = time.perf_counter()
        df = conn.execute(
            'SELECT trader_id, delivery_day, delivery_hour, direction, price, quantity FROM "energy".energy.raw_trades'
        ).df()
        prices = conn.execute(
            'SELECT delivery_day, delivery_hour, value AS reference_price FROM "energy".energy.reference_prices'
        ).df()
        result = pandas_positions(df, prices)
        conn.register("result_frame", result)
        conn.execute("CREATE OR REPLACE TABLE pandas_exposure AS SELECT * FROM result_frame")
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "rows": len(result)}


def child(argv: list[str]) -> None:
    kind = argv[0]
    if kind == "maths":
        out = child_maths(argv[1], int(argv[2]), int(argv[3]))
    elif kind == "build":
        out = child_build(int(argv[1]), int(argv[2]), argv[3])
    elif kind == "asset":
        out = child_asset(int(argv[1]), int(argv[2]), argv[3], int(argv[4]))
    elif kind == "asset-pandas":
        out = child_asset_pandas(int(argv[1]), int(argv[2]), argv[3])
    else:
        raise SystemExit(f"unknown child {kind}")
    print(json.dumps(out))


def run_child(*args) -> dict:
    result = subprocess.run(
        [sys.executable, __file__, "_child", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    if result.returncode != 0:
        raise SystemExit(result.stderr)
    return json.loads(result.stdout.strip().splitlines()[-1])


def across(processes: list[dict], kind: str) -> float:
    """The median over the processes of each one's median `kind` refresh."""
    return median(p[f"{kind}_seconds"] for p in processes)


def each(processes: list[dict], kind: str, digits: int) -> str:
    """Each process's median `kind` refresh, and its fastest and slowest run."""
    return "; ".join(
        f"{p[f'{kind}_seconds']:.{digits}f} [{p[f'{kind}_range'][0]:.{digits}f}, "
        f"{p[f'{kind}_range'][1]:.{digits}f}]"
        for p in processes
    )


def speedup(processes: list[dict], kind: str, full: str = "full") -> str:
    """How much faster than the `full` recompute a `kind` refresh is: the ratio of the two
    headline medians (what a reader can check from the printed figures), and the ratio within
    each process (both measured in it) for the spread."""
    ratios = [p[f"{full}_seconds"] / p[f"{kind}_seconds"] for p in processes]
    return (
        f"{across(processes, full) / across(processes, kind):.1f}x faster than full "
        f"(within each process {', '.join(f'{r:.1f}' for r in ratios)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000])
    parser.add_argument(
        "--trades-per-day",
        type=int,
        default=50_000,
        help="trades per delivery day in the generated history (default 50,000)",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=3,
        help="asset processes per size, each on its own copy of the warehouse (default 3)",
    )
    args = parser.parse_args()
    if args.processes < 1:
        parser.error("--processes must be at least 1")

    print(
        f"# exposure benchmarks, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {TRADERS} traders, "
        f"{args.trades_per_day:,} trades per delivery day"
    )
    for n in args.sizes:
        print(f"\n## {n:,} trades ({days_for(n, args.trades_per_day)} delivery days)")
        polars_m = run_child("maths", "polars", n, args.trades_per_day)
        pandas_m = run_child("maths", "pandas", n, args.trades_per_day)
        same = polars_m["rows"] == pandas_m["rows"] and abs(
            polars_m["pnl"] - pandas_m["pnl"]
        ) < 1e-3 * max(1, abs(pandas_m["pnl"]))
        print(
            f"maths   polars positions(): {polars_m['seconds']:.2f} s, peak RSS {polars_m['peak_rss_mb']:.0f} MB"
        )
        print(
            f"maths   pandas baseline   : {pandas_m['seconds']:.2f} s, peak RSS {pandas_m['peak_rss_mb']:.0f} MB"
        )
        print(
            f"maths   ratio pandas/polars: {pandas_m['seconds'] / polars_m['seconds']:.1f}x faster, "
            f"same rows and PnL: {same}"
        )
        with tempfile.TemporaryDirectory(prefix="exposure-bench-") as workdir:
            built = run_child("build", n, args.trades_per_day, workdir)
            runs = [
                run_child("asset", n, args.trades_per_day, workdir, i)
                for i in range(args.processes)
            ]
            base = run_child("asset-pandas", n, args.trades_per_day, workdir)
        full = across(runs, "full")
        last = runs[-1]
        print(f"asset   (warehouse built in {built['build_seconds']:.1f} s, {built['days']} days)")
        print(
            f"asset   (refresh figures: {args.processes} processes on copies of it, each the median of "
            f"{REPEATS} runs in a row [fastest, slowest]; the headline is the median over the processes)"
        )
        print(
            f"asset   full recompute (DuckDB -> polars -> DuckDB): {full:.3f} s "
            f"({each(runs, 'full', 3)}), peak RSS {max(r['peak_rss_mb_full'] for r in runs):.0f} MB "
            f"(process before refresh: {max(r['rss_before_refresh_mb'] for r in runs):.0f} MB)"
        )
        print(
            f"asset   pandas baseline full recompute            : {base['seconds']:.2f} s, "
            f"peak RSS {base['peak_rss_mb']:.0f} MB -> ratio {base['seconds'] / full:.1f}x"
        )
        print(
            f"asset   first refresh (empty tables)              : "
            f"{median(r['first_refresh_seconds'] for r in runs):.2f} s"
        )
        print(
            f"asset   one delivery day updated (+1,000 deals)   : {across(runs, 'one_day'):.4f} s "
            f"({each(runs, 'one_day', 4)}) ({last['one_day_days_recomputed']} day, "
            f"{last['one_day_trades_read']:,} trades read) -> {speedup(runs, 'one_day')}; goal >= 20x"
        )
        print(
            f"asset   one price revised                         : {across(runs, 'revision'):.4f} s "
            f"({each(runs, 'revision', 4)}) ({last['revision_days_recomputed']} day) -> "
            f"{speedup(runs, 'revision')}"
        )
        print(
            f"asset   nothing changed                           : {across(runs, 'unchanged'):.4f} s "
            f"({each(runs, 'unchanged', 4)})"
        )
        opens = {
            kind: tuple(median(r[f"{kind}_open_close"][i] for r in runs) * 1000 for i in (0, 1))
            for kind in ("full_per_run", "one_day_per_run")
        }
        print(
            "asset   (per run, as a Dagster run has it: a connection of its own each refresh, "
            "DuckDB's buffer pool cold; opening and closing apart, medians)"
        )
        print(
            f"asset   per run: full recompute                   : {across(runs, 'full_per_run'):.3f} s "
            f"({each(runs, 'full_per_run', 3)}); open {opens['full_per_run'][0]:.0f} ms, "
            f"close {opens['full_per_run'][1]:.0f} ms"
        )
        print(
            f"asset   per run: one delivery day updated         : "
            f"{across(runs, 'one_day_per_run'):.4f} s ({each(runs, 'one_day_per_run', 4)}); "
            f"open {opens['one_day_per_run'][0]:.0f} ms, close {opens['one_day_per_run'][1]:.0f} ms "
            f"-> {speedup(runs, 'one_day_per_run', 'full_per_run')}"
        )
        print(
            f"asset   incremental result == full recompute      : "
            f"{all(r['incremental_equals_full'] for r in runs)} (largest difference "
            f"{max(r['incremental_max_difference'] for r in runs):.1e} EUR, MWh or EUR/MWh)"
        )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        child(sys.argv[2:])
    else:
        main()
