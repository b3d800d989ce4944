"""The exposure refresh (`store.refresh`) on a DuckDB warehouse of N trades, against baselines
measured in the same run.

    uv run --isolated --group benchmark benchmarks/exposure.py         # 1 M trades
    uv run --isolated --group benchmark benchmarks/exposure.py --sizes 10000000 --cache /tmp/exposure-bench

(`--isolated`: pandas goes into a throw-away environment, never into the project's `.venv`.)

The deals are of both markets and every product: half DE quarter-hours, 30 % DE hours, 20 % GB
half-hours, on each market's local day; ~96 % of the periods priced (`reference_prices` per
period). Per size, each part in a process of its own (so each peak RSS is its own):

- full refresh (`full=True`: every market day, DuckDB -> polars -> DuckDB, the exposure and
  the net positions on the grid) against the pandas baseline: read the trades and prices into
  pandas, group, merge, spread each period over its grid, write both back;
- one delivery day updated (1,000 new deals of every product for the latest day), one
  quarter-hour's price revised, nothing changed, against the full refresh.

Each refresh runs on a connection of its own, as a Dagster run has it (opening and closing
the file not counted), and again on one long connection; every figure is the median of
`--repeats` refreshes in a row, in wall-clock seconds and in the process's CPU seconds (all
its threads: what the refresh costs, whatever else the shared machine runs). At the end the
incremental tables are checked against a full recompute, and the exposure and grid rows to the
last bit.

Guards: the full refresh at 10 M trades >= 10x faster than the pandas baseline, within 2 GB;
a one-day update per run <= 0.2 s, a tenth of the 2-4 s Dagster takes to start the run that
holds it, so a trader never waits on it. Its ratio to the full refresh is printed beside it: the
update counts every deal's local date to find what changed, so it grows with the history as
the full refresh does (benchmarks/README.md says where its time goes).
"""

from __future__ import annotations

import argparse
import json
import os
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


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def days_for(n: int, per_day: int) -> int:
    return max(1, n // per_day)


#: The products the benchmark trades: (market, zone, minutes, share of deals in tenths).
PRODUCTS = (
    ("DE", "Europe/Berlin", 15, 5),
    ("DE", "Europe/Berlin", 60, 3),
    ("GB", "Europe/London", 30, 2),
)


def _product_sql(i: str) -> str:
    """SQL for the product of deal `i`: market, zone, minutes (half of the deals quarter-hours)."""
    cases, upto = [], 0
    for market, zone, minutes, tenths in PRODUCTS:
        upto += tenths
        cases.append((f"{i} % 10 < {upto}", market, zone, minutes))
    pick = lambda k: "CASE " + " ".join(f"WHEN {c[0]} THEN '{c[k]}'" for c in cases) + " END"  # noqa: E731
    minutes = "CASE " + " ".join(f"WHEN {c[0]} THEN {c[3]}" for c in cases) + " END"
    return f"{pick(1)} AS market, {pick(2)} AS zone, {minutes} AS minutes"


def _deals_sql(n_sql: str, day_sql: str, price_sql: str, qty_sql: str, id_sql: str) -> str:
    """`SELECT` of deals in `raw_trades`' columns from `range(...) r(i)`: a product per deal,
    its period on that market's local day (`day_sql`), instants in UTC."""
    return f"""
        WITH d AS (SELECT i, {day_sql} AS day, {_product_sql("i")}, (hash(i) % 1440)::INTEGER AS m
                   FROM {n_sql} r(i)),
             p AS (SELECT *, timezone(zone, day + to_minutes((m // minutes) * minutes)) AS s
                   FROM d)
        SELECT {id_sql} AS id, {price_sql} AS price, {qty_sql} AS quantity,
               CASE WHEN hash(i * 7) % 2 = 0 THEN 'buy' ELSE 'sell' END AS direction,
               day AS delivery_day, '00-01' AS delivery_hour,
               'flex_trader_' || (1 + i % {TRADERS}) AS trader_id, now() AS execution_time,
               market, s AS delivery_start, s + to_minutes(minutes) AS delivery_end,
               false AS after_gate_closure, now() AS received_at, 'bench' AS segment
        FROM p"""


def _insert_deals(conn, select: str, params: list | None = None) -> None:
    columns = [r[0] for r in conn.execute("DESCRIBE energy.raw_trades").fetchall()]
    conn.execute(
        f"INSERT INTO energy.raw_trades ({', '.join(columns)}) "
        f"SELECT {', '.join(columns)} FROM ({select})",
        params or [],
    )


def build_warehouse(path: Path, n: int, per_day: int) -> None:
    """raw_trades in delivery-day order (as they accumulate): DE quarter-hours (half the
    deals) and hours, GB half-hours; a price for ~96 % of every market's periods; no exposure
    yet. The values are generated in SQL from the script's own constants."""
    import duckdb

    from energy_assets.markets import MARKETS
    from energy_assets.tables import RAW_TRADES, REFERENCE_PRICES, create

    days = days_for(n, per_day)
    with duckdb.connect(str(path)) as conn:
        conn.execute("SET enable_progress_bar = false")
        conn.execute("SELECT setseed(0.7)")
        create(conn, RAW_TRADES)
        for column in ("market VARCHAR", "delivery_start TIMESTAMPTZ", "delivery_end TIMESTAMPTZ"):
            conn.execute(f"ALTER TABLE energy.raw_trades ADD COLUMN IF NOT EXISTS {column}")
        conn.execute(
            "ALTER TABLE energy.raw_trades ADD COLUMN IF NOT EXISTS after_gate_closure BOOLEAN"
        )
        create(conn, REFERENCE_PRICES)
        _insert_deals(
            conn,
            _deals_sql(
                f"range({n})",
                f"DATE '{START}' + (i * {days} // {n})::INTEGER",
                "round(random() * 210 - 30, 2)",
                "round(random() * 9.9 + 0.1, 1)",
                "md5(i::VARCHAR)",
            ),
        )
        for market, zone, minutes, _ in PRODUCTS:
            conn.execute(
                f"""INSERT INTO energy.reference_prices
                    (market, delivery_start, delivery_end, value, currency, last_update, fetched_at)
                SELECT '{market}', s, s + to_minutes({minutes}), round(random() * 170 - 10, 2),
                       '{MARKETS[market].currency}', now(), now()
                FROM (SELECT DISTINCT timezone('{zone}', DATE '{START}' + d::INTEGER
                                               + to_minutes(k * {minutes})) AS s
                      FROM range({days}) a(d), range(1440 // {minutes}) b(k))
                WHERE random() > 0.04"""
            )


def add_deals(conn, tag: str, day: date) -> None:
    """1,000 new deals for `day` of every product, as a drain inserts them."""
    _insert_deals(
        conn,
        _deals_sql("range(1000)", "?::DATE", "50 + i % 7", "1.0", "md5(? || i::VARCHAR)"),
        [day, tag],
    )


def revise_price(conn, day: date, k: int) -> None:
    """A revision of one quarter-hour of `day` in Berlin."""
    conn.execute(
        """UPDATE energy.reference_prices SET value = value + 1.5, last_update = now()
           WHERE market = 'DE' AND delivery_end - delivery_start = INTERVAL 15 MINUTE
             AND delivery_start = timezone('Europe/Berlin', ?::DATE + to_minutes(?))""",
        [day, 600 + 15 * (k % 24)],
    )


def child_refresh(n: int, per_day: int, path: str, repeats: int) -> dict:
    import duckdb
    from polars.testing import assert_frame_equal

    from energy_assets.exposure import store

    last_day = START + timedelta(days=days_for(n, per_day) - 1)
    clock = iter(datetime(2024, 1, 1, tzinfo=UTC) + timedelta(minutes=i) for i in range(10_000))
    out: dict = {}

    def connection():
        conn = duckdb.connect(path)
        conn.execute("SET enable_progress_bar = false")
        return conn

    def refresh(conn, kind: str, full: bool) -> None:
        cpu = time.process_time()
        out.setdefault(kind, []).append(store.refresh(conn, next(clock), full=full).seconds)
        out.setdefault(f"{kind}_cpu", []).append(time.process_time() - cpu)

    def one_day(conn, k):
        add_deals(conn, f"{time.time_ns()}-{k}-", last_day)

    def revision(conn, k):
        revise_price(conn, last_day - timedelta(days=1), k)

    # Each kind of refresh in turn, `repeats` times over, so that the shared machine's load
    # weighs on all of them alike.
    kinds = (("one_day", one_day, False), ("revision", revision, False))
    kinds += (("unchanged", None, False), ("full", None, True))
    with connection() as conn:
        out["first_seconds"] = store.refresh(conn, next(clock)).seconds
        # On one long connection: DuckDB's buffer pool warm.
        for k in range(repeats):
            for kind, prepare, full in kinds:
                if prepare:
                    prepare(conn, k)
                refresh(conn, f"{kind}_one_connection", full)
    # A connection per refresh, as a Dagster run has it; the change comes before, from another
    # run (the drain, the price store).
    for k in range(repeats):
        for kind, prepare, full in kinds:
            if prepare:
                with connection() as conn:
                    prepare(conn, k)
            with connection() as conn:
                refresh(conn, kind, full)
    out["peak_rss_mb"] = peak_rss_mb()
    with connection() as conn:
        one_day(conn, repeats)
        revision(conn, repeats)
        store.refresh(conn, next(clock))
        tables = [
            f"{t} ORDER BY ALL"
            for t in (store.EXPOSURE, store.NET_POSITION, store.DAILY, store.TOTALS)
        ]
        incremental = [conn.execute(f"SELECT * FROM {t}").pl() for t in tables]
        store.refresh(conn, next(clock), full=True)
        full = [conn.execute(f"SELECT * FROM {t}").pl() for t in tables]
        out["exposure_rows"] = full[0].height
    # The exposure and grid rows to the last bit too (the totals add periods up in no fixed
    # order: equal within rounding).
    for key, exact, upto in (("incremental_equals_full", False, 4), ("to_the_last_bit", True, 2)):
        try:
            for a, b in zip(incremental[:upto], full[:upto], strict=True):
                assert_frame_equal(a, b, check_exact=exact)
            out[key] = True
        except AssertionError:
            out[key] = False
    return {k: median(v) if isinstance(v, list) else v for k, v in out.items()}


def pandas_positions(df, prices, markets):
    """The straightforward pandas version of `positions()` and `net_positions()`: same
    columns, same nulls."""
    import numpy as np
    import pandas as pd

    key = ["trader_id", "market", "delivery_start", "delivery_end", "delivery_day"]
    hours = (df["delivery_end"] - df["delivery_start"]).dt.total_seconds() / 3600
    buy = df["direction"] == "buy"
    mwh = df["quantity"] * hours
    df = df.assign(buy_q=np.where(buy, mwh, 0.0), sell_q=np.where(buy, 0.0, mwh))
    df = df.assign(buy_money=df["buy_q"] * df["price"], sell_money=df["sell_q"] * df["price"])
    g = (
        df.groupby(key, sort=True)
        .agg(
            trades=("price", "size"),
            bought_mwh=("buy_q", "sum"),
            sold_mwh=("sell_q", "sum"),
            buy_money=("buy_money", "sum"),
            sell_money=("sell_money", "sum"),
        )
        .reset_index()
    )
    g["net_mwh"] = g["bought_mwh"] - g["sold_mwh"]
    g["buy_vwap"] = (g["buy_money"] / g["bought_mwh"]).where(g["bought_mwh"] > 0)
    g["sell_vwap"] = (g["sell_money"] / g["sold_mwh"]).where(g["sold_mwh"] > 0)
    g["cash"] = g["sell_money"] - g["buy_money"]
    g = g.merge(markets, on="market", how="left")
    g = g.merge(prices, on=["market", "delivery_start", "delivery_end"], how="left")
    g["pnl"] = g["cash"] + g["net_mwh"] * g["reference_price"]
    g["exposure"] = g["net_mwh"] * g["reference_price"]
    exposure = g.drop(columns=["buy_money", "sell_money", "grid_minutes"])
    # Each period over its market's grid: one row per step, netted per trader and step.
    steps = (
        (g["delivery_end"] - g["delivery_start"]).dt.total_seconds() // 60 // g["grid_minutes"]
    ).astype(int)
    spread = g.loc[
        g.index.repeat(steps), key[:2] + ["delivery_start", "delivery_day", "grid_minutes"]
    ]
    spread["net_mw"] = np.repeat(
        (g["net_mwh"] * 60 / (steps * g["grid_minutes"])).to_numpy(), steps
    )
    k = spread.groupby(level=0).cumcount()
    grid = pd.to_timedelta(spread["grid_minutes"], unit="m")
    spread["delivery_start"] = spread["delivery_start"] + grid * k
    spread["delivery_end"] = spread["delivery_start"] + grid
    net = spread.groupby(key, sort=True)["net_mw"].sum().reset_index()
    return exposure, net


def child_pandas(path: str) -> dict:
    """The pandas baseline of a full refresh: read into pandas, group, merge, write back."""
    import duckdb
    import pandas as pd

    from energy_assets.exposure.positions import market_frame

    with duckdb.connect(path) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        started, cpu = time.perf_counter(), time.process_time()
        df = conn.execute(
            """SELECT trader_id, market, delivery_start, delivery_end, delivery_day, direction,
                      price, quantity
               FROM energy.raw_trades"""
        ).df()
        prices = conn.execute(
            """SELECT market, delivery_start, delivery_end, value AS reference_price
               FROM energy.reference_prices"""
        ).df()
        markets = pd.DataFrame(market_frame().to_dict(as_series=False))
        exposure, net = pandas_positions(df, prices, markets)
        for name, frame in (("pandas_exposure", exposure), ("pandas_net_position", net)):
            conn.register("result_frame", frame)
            conn.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM result_frame")
            conn.unregister("result_frame")
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"seconds": seconds, "cpu": cpu, "peak_rss_mb": peak_rss_mb(), "rows": len(exposure)}


def child_build(n: int, per_day: int, path: str) -> dict:
    build_warehouse(Path(path), n, per_day)
    return {}


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


def child(argv: list[str]) -> None:
    kind, *rest = argv
    if kind == "build":
        out = child_build(int(rest[0]), int(rest[1]), rest[2])
    elif kind == "refresh":
        out = child_refresh(int(rest[0]), int(rest[1]), rest[2], int(rest[3]))
    elif kind == "pandas":
        out = child_pandas(rest[0])
    else:
        raise SystemExit(f"unknown child {kind}")
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--trades-per-day", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=7, help="refreshes per figure (median)")
    parser.add_argument(
        "--cache",
        type=Path,
        help="keep each size's generated warehouse here and start from a copy of it next time",
    )
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    print(
        f"# exposure refresh, {TRADERS} traders, {args.trades_per_day:,} trades per delivery "
        f"day, medians of {args.repeats} refreshes; load average {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} cores"
    )
    for n in args.sizes:
        days = days_for(n, args.trades_per_day)
        with tempfile.TemporaryDirectory(prefix="exposure-bench-") as workdir:
            path = Path(workdir) / "warehouse.duckdb"
            cached = args.cache and args.cache / f"warehouse-{n}-{args.trades_per_day}.duckdb"
            if cached and cached.exists():
                shutil.copyfile(cached, path)
            else:
                run_child("build", n, args.trades_per_day, path)
                if cached:
                    cached.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(path, cached)
            base = run_child("pandas", path)
            r = run_child("refresh", n, args.trades_per_day, path, args.repeats)
        print(f"\n## {n:,} trades, {days} delivery days")
        print(
            f"full refresh            {r['full']:.3f} s (CPU {r['full_cpu']:.3f} s), peak RSS "
            f"{r['peak_rss_mb']:.0f} MB ({r['exposure_rows']:,} exposure rows)"
        )
        print(
            f"pandas baseline         {base['seconds']:.3f} s (CPU {base['cpu']:.3f} s), peak RSS "
            f"{base['peak_rss_mb']:.0f} MB  -> full refresh {base['seconds'] / r['full']:.1f}x "
            f"faster (guard >= 10x, <= 2 GB); CPU {base['cpu'] / r['full_cpu']:.1f}x"
        )
        for kind, label in (
            ("one_day", "one day (+1,000 deals)"),
            ("revision", "one price revised"),
            ("unchanged", "nothing changed"),
        ):
            print(
                f"{label:24s}{r[kind]:.4f} s"
                + (" (guard <= 0.2 s)" if kind == "one_day" else "")
                + f"  -> {r['full'] / r[kind]:.1f}x faster than full; CPU {r[f'{kind}_cpu']:.4f} s -> {r['full_cpu'] / r[f'{kind}_cpu']:.1f}x"
            )
        print(
            f"one connection          full {r['full_one_connection']:.3f} s, one day "
            f"{r['one_day_one_connection']:.4f} s ({r['full_one_connection'] / r['one_day_one_connection']:.1f}x), "
            f"revision {r['revision_one_connection']:.4f} s, nothing {r['unchanged_one_connection']:.4f} s"
        )
        print(f"first refresh           {r['first_seconds']:.3f} s (empty exposure tables)")
        print(
            f"incremental == full     {r['incremental_equals_full']} "
            f"(exposure and grid rows to the last bit: {r['to_the_last_bit']})"
        )
        print(f"load average after      {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        child(sys.argv[2:])
    else:
        main()
