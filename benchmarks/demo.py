"""`make demo` at the batch cadence: Dagster runs an hour, instance MB an hour, deal -> DuckDB.

Starts the real `energy-assets demo` (playground, listener, `dagster dev`, the live desk) on
its fixed ports in a fresh data directory and measures from `--warmup` seconds after the
start (default 90, as issue 39 measures it) for `--minutes` (default 4):

- runs an hour: runs created in the window, per job, scaled to an hour;
- Dagster instance MB an hour: growth of `DAGSTER_HOME` on disk over the window;
- deal -> DuckDB: listener `received_at` -> the drain's commit (`capture_segments.ingested_at`)
  for the deals received in the window, p50 / p95.

`--baseline` adds the same demo with `ENERGY_DRAIN_INTERVAL_SECONDS=0`: a drain as soon as a
sealed segment waits, i.e. no cadence. It binds the demo's fixed ports, so run it alone:
`flock /tmp/demo.lock .venv/bin/python benchmarks/demo.py`.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Measured:
    label: str
    minutes: float
    runs: Counter
    instance_bytes: Counter
    latencies: list[float]

    @property
    def runs_per_hour(self) -> float:
        return sum(self.runs.values()) * 60 / self.minutes

    @property
    def mb_per_hour(self) -> float:
        return sum(self.instance_bytes.values()) / 1e6 * 60 / self.minutes

    def percentile(self, q: float) -> float | None:
        if len(self.latencies) < 2:
            return None
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[int(q) - 1]


def disk_bytes(path: Path) -> Counter:
    """Bytes on disk under `path`, per top-level entry (`schedules`, `history`, `storage` …)."""
    sizes: Counter = Counter()
    for root, _, files in os.walk(path):
        top = Path(root).relative_to(path).parts[:1] or ("(files)",)
        for name in files:
            try:
                sizes[top[0] if top != ("(files)",) else name] += (
                    os.lstat(os.path.join(root, name)).st_blocks * 512
                )
            except FileNotFoundError:
                pass
    return sizes


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise SystemExit(f"the demo exited ({proc.returncode}) before {what}")
        time.sleep(1)
    raise SystemExit(f"timed out waiting for {what}")


def run_demo(label: str, minutes: float, warmup: float, extra_env: dict[str, str]) -> Measured:
    import dagster as dg
    import duckdb

    work = Path(tempfile.mkdtemp(prefix=f"demo-bench-{label.split()[0]}-"))
    home = work / "dagster_home"
    env = {
        **os.environ,
        "ENERGY_CAPTURE_DIR": str(work / "capture"),
        "ENERGY_DUCKDB_PATH": str(work / "warehouse.duckdb"),
        "ENERGY_DASHBOARD_DIR": str(work / "dashboard"),
        "DAGSTER_HOME": str(home),
        **extra_env,
    }
    out = open(work / "demo.out", "wb")
    proc = subprocess.Popen(
        [str(REPO / ".venv/bin/energy-assets"), "demo", "--log-dir", str(work / "logs")],
        cwd=REPO,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    began = time.monotonic()
    try:
        import requests

        def ui_up() -> bool:
            try:
                return requests.get("http://127.0.0.1:3000/server_info", timeout=2).ok
            except requests.RequestException:
                return False

        wait_for(ui_up, 300, "the Dagster UI", proc)
        print(f"[{label}] UI up after {time.monotonic() - began:.0f} s in {work}", flush=True)
        time.sleep(max(0.0, warmup - (time.monotonic() - began)))
        start, size0 = datetime.now(UTC), disk_bytes(home)
        print(f"[{label}] measuring {minutes:g} min from {start:%H:%M:%S}", flush=True)
        time.sleep(minutes * 60)
        end, size1 = datetime.now(UTC), disk_bytes(home)
        os.environ["DAGSTER_HOME"] = str(home)
        with dg.DagsterInstance.from_config(str(home)) as instance:
            records = instance.get_run_records(dg.RunsFilter(created_after=start))
            runs = Counter(r.dagster_run.job_name for r in records if r.create_timestamp <= end)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        out.close()
    with duckdb.connect(env["ENERGY_DUCKDB_PATH"], read_only=True) as conn:
        latencies = [
            row[0]
            for row in conn.execute(
                "SELECT epoch(s.ingested_at) - epoch(r.received_at) FROM energy.raw_trades r "
                "JOIN energy.capture_segments s USING (segment) "
                "WHERE r.received_at >= ? AND r.received_at < ?",
                [start, end],
            ).fetchall()
        ]
    grown = Counter({k: size1[k] - size0.get(k, 0) for k in size1})
    return Measured(label, (end - start).total_seconds() / 60, runs, grown, latencies)


def report(results: list[Measured]) -> None:
    print()
    print(
        "| demo | runs / h | by job (in the window) | instance MB / h | deal -> DuckDB p50 / p95 |"
    )
    print("| --- | ---: | --- | ---: | ---: |")
    for m in results:
        jobs = ", ".join(f"{job} {count}" for job, count in m.runs.most_common())
        p50, p95 = m.percentile(50), m.percentile(95)
        latency = "–" if p95 is None else f"{p50:.1f} s / {p95:.1f} s ({len(m.latencies)} deals)"
        print(f"| {m.label} | {m.runs_per_hour:.0f} | {jobs} | {m.mb_per_hour:.1f} | {latency} |")
        growth = ", ".join(
            f"{name} {size / 1e6 * 60 / m.minutes:.1f}"
            for name, size in m.instance_bytes.most_common()
        )
        print(f"  instance growth by entry, MB/h: {growth}")
    if len(results) == 2:
        new, base = results
        print(
            f"\nruns: {new.runs_per_hour:.0f}/h vs {base.runs_per_hour:.0f}/h without cadence "
            f"({base.runs_per_hour / max(new.runs_per_hour, 1e-9):.1f}x fewer); instance "
            f"{new.mb_per_hour:.1f} vs {base.mb_per_hour:.1f} MB/h"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=4.0, help="window (default 4)")
    parser.add_argument(
        "--warmup", type=float, default=90.0, help="seconds after the start (default 90)"
    )
    parser.add_argument("--baseline", action="store_true", help="add the no-cadence demo")
    args = parser.parse_args(argv)
    results = [run_demo("default cadence", args.minutes, args.warmup, {})]
    if args.baseline:
        results.append(
            run_demo(
                "no cadence (ENERGY_DRAIN_INTERVAL_SECONDS=0)",
                args.minutes,
                args.warmup,
                {"ENERGY_DRAIN_INTERVAL_SECONDS": "0"},
            )
        )
    report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
