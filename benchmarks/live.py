"""Live desk benchmarks (issue 25), each beside a baseline measured in the same run.

    .venv/bin/python benchmarks/live.py --only rebuild              # 432 k deals over 72 h
    .venv/bin/python benchmarks/live.py --only latency --seconds 90 # send -> DOM, live vs batch
    .venv/bin/python benchmarks/live.py --only latency --login      # the same, logged in
    .venv/bin/python benchmarks/live.py --only load                 # 500 SSE + 500 page loads
    .venv/bin/python benchmarks/live.py --only abuse                # 1,100 slow, 300 stalled
    .venv/bin/python benchmarks/live.py --only replay --archive DIR # 6 replays at once
    .venv/bin/python benchmarks/live.py --only history              # a year confirmed
    .venv/bin/python benchmarks/live.py --only dense                # full pages in Chromium

1. rebuild: the buffer of 72 h at 100 deals/min (432,000 deals), one sealed file per second
   as the listener writes them (259,200 files, most in drained/): `energy-assets dashboard`
   from start to serving. Baseline: `positions()` over the same deals already in memory.
   Then the daily renewal of that state (`--renew-after` s after serving instead of 24 h): a
   deal a second from the buffer to a `live` event around it, beside the same before it.
2. latency: the playground (2 deals/s) -> the real listener -> the buffer; the service and a
   real Chromium on the desk page record when each trader's deal count changes in the DOM
   (a MutationObserver). Beside it, in the same run, the batch path: the real dagster-daemon
   with the demo's code location (drain sensor, automation sensor, trader_exposure,
   exposure_dashboard) -> the deal counted in what exposure_dashboard publishes
   (`confirmed.parquet` when it writes one, else its static `index.html`). Then 30 reloads
   of the page: navigation start -> DOMContentLoaded. `--login`: the desk with its login
   against a real OpenID Connect provider on loopback, Chromium logged in as the head, beside
   a second desk without login on the same buffer in the same browser (reloads alternated).
3. load: 500 SSE clients on the desk and trader pages, then 500 simultaneous page loads,
   while a writer appends deals to the buffer as the listener does at 100 deals/min and at
   100 deals/s; errors, p99, the service's CPU and RSS.
4. abuse: the desk under a 1,024-descriptor limit (a common service default) with the same
   day of history and 100 deals/min written; 30 s of page loads (10 every half second) alone,
   then again while 1,100 slow clients hold half-sent requests (a header line a second, never the end;
   each reconnects when the desk closes it) and 300 event streams never read (8 per client
   address, a tiny receive window). Page p99 and errors beside the same loads alone; a reading
   stream's pushes and the buffer follower's deals meanwhile; the desk's descriptors at most.
5. replay: the desk on an empty buffer and the journals' archive `--archive` (one made by
   `benchmarks/rebuild.py --deals 1000000 --price-days 10 --keep`: a week of deals); a deal
   a second for 12 s, each from the buffer to a `live` event on a reading stream, while
   `--replays` browsers ask `/replay` at once; the same deals alone before, the baseline. The
   desk's resident memory before and at most.
6. history: `confirmed.parquet` and `prices.parquet` of `--history-days` (every DE hour and
   quarter-hour and GB half-hour held by each of 15 traders: a year is 924,840 rows) and 2,000
   deals in the buffer; in process, the service's work for one new deal (`refresh`,
   `compute` and `install`: the view, every fragment, the changed events deflated), best and
   worst of 5. Baseline: the same with 7 days confirmed.
7. dense: pages as full as a busy desk's: 7 days confirmed as in 6 and 2,000 deals in the
   buffer; the service and Chromium on a trader's page, then the desk's; a deal a second for
   12 s, each from the buffer to the page's `#live` replaced (a MutationObserver), and the
   share of those 12 s the page's main thread was busy (Chromium's `TaskDuration`), with its
   longest task. Baseline: the same with nothing confirmed (the buffer's deals alone: pages of
   a few dozen rows).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from math import nan
from pathlib import Path

import polars as pl
from websockets.sync.client import connect

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from energy_assets import published  # noqa: E402
from energy_assets.exposure.positions import positions  # noqa: E402
from energy_assets.playground.server import ExchangeOptions, Playground  # noqa: E402
from energy_assets.trades.buffer import CaptureBuffer, deal_record, iso  # noqa: E402
from energy_assets.trades.deal import Deal, parse_frame, validate_deal  # noqa: E402
from energy_assets.trades.lines import read_segments, typed  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from tests.desk.load import (  # noqa: E402
    Streams,
    address,
    cpu_seconds,
    events_path,
    open_fds,
    rss_mb,
    stalled_client,
    storm,
)

PYTHON = str(REPO / ".venv/bin/python")
CHROMIUM = "/usr/bin/chromium"
TRADERS = 15


def line(name: str, value: str, note: str = "") -> None:
    print(f"{name:<62} {value:>18}  {note}", flush=True)


def q(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def random_deal(rng: random.Random, n: int, executed: datetime) -> Deal:
    day = executed.date() + timedelta(days=rng.randrange(2))
    hour = rng.randrange(24)
    return validate_deal(
        dict(
            id=f"{rng.getrandbits(128):032x}",
            price=round(rng.uniform(-50, 300), 2),
            quantity=round(rng.uniform(0.1, 25), 1),
            direction=rng.choice(["buy", "sell"]),
            delivery_day=str(day),
            delivery_hour=f"{hour:02d}-{hour + 1:02d}",
            trader_id=f"trader_{n % TRADERS}",
            execution_time=iso(executed),
        )
    )


class Desk:
    def __init__(
        self,
        capture: Path,
        dashboard: Path,
        log: Path,
        fd_limit: int | None = None,
        env: dict[str, str] | None = None,
    ):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "ENERGY_CAPTURE_DIR": str(capture),
            "ENERGY_DASHBOARD_DIR": str(dashboard),
            **(env or {}),
        }
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "energy_assets.cli", "dashboard", "--port", str(self.port)],
            cwd=REPO,
            env=env,
            stdout=open(log, "ab"),
            stderr=subprocess.STDOUT,
            preexec_fn=(
                (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, fd_limit)))
                if fd_limit
                else None
            ),
        )

    def health(self) -> dict:
        import urllib.request

        with urllib.request.urlopen(self.url + "/health", timeout=30) as answer:
            return json.loads(answer.read())

    def wait(self, timeout: float = 600) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit("the desk exited")
            try:
                self.health()
                return time.perf_counter() - self.started
            except OSError:
                time.sleep(0.05)
        raise SystemExit("the desk did not start")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)


# -- rebuild --------------------------------------------------------------------------------
def bench_rebuild(work: Path, hours: float, per_minute: float, renew_after: float) -> None:
    capture = work / "capture"
    drained, segments = capture / "drained", capture / "segments"
    drained.mkdir(parents=True)
    segments.mkdir()
    rng = random.Random(25)
    start = datetime.now(UTC) - timedelta(hours=hours)
    seconds = int(hours * 3600)
    rate = per_minute / 60
    made, files, carry = 0, 0, 0.0
    began = time.perf_counter()
    for second in range(seconds):
        carry += rate
        count = int(carry)
        carry -= count
        if not count:
            continue
        moment = start + timedelta(seconds=second)
        lines = []
        for _ in range(count):
            deal = random_deal(rng, made, moment)
            lines.append(json.dumps(deal_record(deal, moment), separators=(",", ":")))
            made += 1
        stamp = moment.strftime("%Y%m%dT%H%M%S%fZ")
        # The last 30 s wait in segments/, the rest were drained.
        folder = segments if second > seconds - 30 else drained
        (folder / f"{stamp}-1-{files:09d}.jsonl").write_text("\n".join(lines) + "\n")
        files += 1
    line(
        "rebuild: buffer written",
        f"{made:,} deals",
        f"{files:,} files in {time.perf_counter() - began:.0f} s",
    )

    desk = Desk(capture, work / "dashboard", work / "desk.log")
    serving = desk.wait()
    health = desk.health()
    rss = rss_mb(desk.proc.pid)
    desk.stop()
    assert health["deals"] == made, health

    began = time.perf_counter()
    frame = typed(read_segments(sorted(drained.iterdir()) + sorted(segments.iterdir())))
    read = time.perf_counter() - began
    began = time.perf_counter()
    positions(
        frame,
        pl.DataFrame(
            schema={
                "market": pl.String,
                "delivery_start": pl.Datetime("us", "UTC"),
                "delivery_end": pl.Datetime("us", "UTC"),
                "reference_price": pl.Float64,
            }
        ),
    )
    maths = time.perf_counter() - began
    line(
        "rebuild: start -> serving (process start included)",
        f"{serving:.1f} s",
        f"load {os.getloadavg()[0]:.1f}",
    )
    line("rebuild: the service's own rebuild", f"{health['rebuild_seconds']:.1f} s")
    line("rebuild: RSS after the rebuild", f"{rss:.0f} MB")
    line("baseline: the drain's read_segments of the same files", f"{read:.1f} s")
    line("baseline: positions() of the deals in memory", f"{maths:.2f} s")

    # The daily renewal (ENERGY_DESK_RENEW_HOURS), here `renew_after` s after the desk serves:
    # a deal a second from the buffer to a `live` event, before it and while it is made.
    renew = {"ENERGY_DESK_RENEW_HOURS": str(renew_after / 3600)}
    desk = Desk(capture, work / "dashboard", work / "desk.log", env=renew)
    desk.wait()
    ahead = max(1, int(renew_after * 0.75))
    before = pushes(desk, capture, ahead, made)
    rss_before = rss_mb(desk.proc.pid)
    during = pushes(desk, capture, 2 * ahead, made + ahead)
    renewals = [
        json_line
        for json_line in (work / "desk.log").read_text().splitlines()
        if "event=renewed" in json_line
    ]
    rss = rss_mb(desk.proc.pid)
    health = desk.health()
    desk.stop()
    line(
        f"renewal: deal -> live event, {ahead} s before it, p50 / max",
        f"{q(before, 0.5) * 1000:.0f} / {max(before) * 1000:.0f} ms",
    )
    line(
        f"renewal: the same over the {2 * ahead} s around it, p50 / max",
        f"{q(during, 0.5) * 1000:.0f} / {max(during) * 1000:.0f} ms",
        renewals[0].split("event=renewed ")[-1] if renewals else "no renewal logged",
    )
    line(
        "renewal: RSS before / after",
        f"{rss_before:.0f} / {rss:.0f} MB",
        f"deals {health['deals']:,}",
    )


# -- latency --------------------------------------------------------------------------------
_OBSERVER = """() => {
  window.benchLog = [];
  const record = () => {
    const counts = {};
    // A row per trader and currency: a trader's deals are the sum of their rows.
    document.querySelectorAll('tr[data-trader]').forEach(r => {
      const t = r.dataset.trader;
      counts[t] = (counts[t] || 0) + Number(r.children[1].textContent);
    });
    window.benchLog.push([Date.now() / 1000, counts]);
  };
  record();
  new MutationObserver(record).observe(document.getElementById('live'), {childList: true, subtree: true});
}"""


def first_seen(log: list, sent: list[Deal]) -> list[float | None]:
    """Per deal (sent order): when its trader's count first reached its rank."""
    seen: dict[str, int] = {}
    result = []
    for deal in sent:
        seen[deal.trader_id] = seen.get(deal.trader_id, 0) + 1
        rank = seen[deal.trader_id]
        when = next((t for t, counts in log if counts.get(deal.trader_id, 0) >= rank), None)
        result.append(when)
    return result


_INDEX_ROW = re.compile(r'<tr data-trader="([^"]+)"><td><a [^>]*>[^<]*</a></td><td>(\d+)</td>')


def batch_counts(dashboard: Path) -> dict[str, int] | None:
    """Per trader deals in what exposure_dashboard last published."""
    confirmed = published.read(dashboard, published.CONFIRMED)
    if confirmed is not None:
        totals = confirmed.group_by("trader_id").agg(pl.col("trades").sum())
        return dict(totals.iter_rows())
    try:
        text = (dashboard / "index.html").read_text()
    except FileNotFoundError:
        return None
    return {trader: int(n) for trader, n in _INDEX_ROW.findall(text)}


_LOADED = "performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd / 1000"


def bench_latency(work: Path, seconds: float, rate: float, login: bool = False) -> None:
    from playwright.sync_api import sync_playwright

    from tests.desk.conftest import OidcProvider

    home = work / "dagster_home"
    home.mkdir(parents=True)
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    capture, dashboard = work / "capture", work / "dashboard"
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "ENERGY_CAPTURE_DIR": str(capture),
        "ENERGY_DUCKDB_PATH": str(work / "warehouse.duckdb"),
        "ENERGY_DASHBOARD_DIR": str(dashboard),
    }
    (work / "workspace.yaml").write_text(
        "load_from:\n  - python_module:\n      module_name: energy_assets.definitions\n"
        f"      working_directory: {REPO}\n"
    )
    batch_log: list[tuple[float, dict]] = []
    stop = threading.Event()

    # When each deal reached a client of the exchange: the listener's moment, measured beside it.
    # Not `execution_time`: the stand-in writes it in whole seconds, which added 0-1 s to every
    # figure (a constant per run, by where in its second the feed started).
    arrived: dict[str, float] = {}

    def watch_feed(url: str) -> None:
        with connect(url) as feed:
            for frame in feed:
                deal = parse_frame(frame)
                if isinstance(deal, Deal):
                    arrived.setdefault(deal.id, time.time())

    def watch_batch() -> None:
        while not stop.is_set():
            counts = batch_counts(dashboard)
            if counts and (not batch_log or batch_log[-1][1] != counts):
                batch_log.append((time.time(), counts))
            time.sleep(0.1)

    with Playground(
        exchange=ExchangeOptions(rate=rate, seed=7, traders=5), exchange_port=0, market_data_port=0
    ) as pg:
        env["ENERGY_MARKET_DATA_URL"] = pg.market_data_url
        pg.pause()
        daemon = subprocess.Popen(
            [str(REPO / ".venv/bin/dagster-daemon"), "run", "-w", str(work / "workspace.yaml")],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        listener = subprocess.Popen(
            [PYTHON, "-m", "energy_assets.cli", "listen", "--url", pg.exchange_url],
            cwd=REPO,
            env=env,
            stderr=subprocess.DEVNULL,
        )
        threading.Thread(target=watch_feed, args=(pg.exchange_url,), daemon=True).start()
        os.environ.update({k: env[k] for k in ("ENERGY_CAPTURE_DIR", "ENERGY_DASHBOARD_DIR")})
        desks = {"no login": Desk(capture, dashboard, work / "desk.log")}
        provider = OidcProvider(work / "oidc.log") if login else None
        if provider:
            users = work / "users.toml"
            users.write_text('[users."head@desk.example"]\nrole = "head"\n')
            os.environ.update(provider.desk_env(users))
            desks["logged in"] = Desk(capture, dashboard, work / "desk-login.log")
        for desk in desks.values():
            desk.wait()
        time.sleep(15)  # the daemon's code server is up before the first deal
        watcher = threading.Thread(target=watch_batch, daemon=True)
        watcher.start()
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
            )
            pages = {name: browser.new_page() for name in desks}
            for name, page in pages.items():
                page.goto(desks[name].url + "/")
                if name == "logged in":  # at the provider's form
                    page.fill("input[name=sub]", "head@desk.example")
                    started = time.perf_counter()
                    with page.expect_navigation(url=desks[name].url + "/"):
                        page.click("button:has-text('Authorize')")
                    page.wait_for_load_state("domcontentloaded")
                    login_seconds = time.perf_counter() - started
                page.evaluate(_OBSERVER)
            pg.resume()
            time.sleep(seconds)
            pg.pause()
            sent = list(pg.sent_deals)
            time.sleep(5)
            live_logs = {name: page.evaluate("window.benchLog") for name, page in pages.items()}
            loads: dict[str, list[float]] = {name: [] for name in pages}
            for _ in range(30):
                for name, page in pages.items():
                    page.reload(wait_until="domcontentloaded")
                    loads[name].append(page.evaluate(_LOADED))
            browser.close()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            last = batch_log[-1][1] if batch_log else {}
            if sum(last.values()) >= len(sent):
                break
            time.sleep(1)
        stop.set()
        listener.send_signal(signal.SIGTERM)
        listener.wait(30)
        for desk in desks.values():
            desk.stop()
        os.killpg(daemon.pid, signal.SIGTERM)
        daemon.wait(60)
        if provider:
            provider.stop()

    def latencies(log) -> tuple[list[float], int]:
        seen = first_seen(log, sent)
        values = [
            when - arrived[d.id] for d, when in zip(sent, seen, strict=True) if when is not None
        ]
        return values, len(sent) - len(values)

    batch, batch_missing = latencies(batch_log)
    source = (
        "confirmed.parquet"
        if published.read(dashboard, published.CONFIRMED) is not None
        else "static index.html"
    )
    line(
        "latency: deals sent",
        f"{len(sent):,}",
        f"over {seconds:.0f} s at {rate:g}/s, load {os.getloadavg()[0]:.1f}",
    )
    if provider:
        line("login: provider's form sent -> desk page loaded", f"{login_seconds:.3f} s")
    for name in desks:
        live, live_missing = latencies(live_logs[name])
        line(
            f"live ({name}): exchange send -> browser DOM, p50", f"{statistics.median(live):.3f} s"
        )
        line(
            f"live ({name}): exchange send -> browser DOM, p95",
            f"{q(live, 0.95):.3f} s",
            f"(goal <= 1 s); max {max(live):.3f} s, {live_missing} never seen",
        )
        line(
            f"page load ({name}): navigation -> DOMContentLoaded, p50 / p95",
            f"{statistics.median(loads[name]) * 1000:.0f} / {q(loads[name], 0.95) * 1000:.0f} ms",
            "30 reloads of the desk page",
        )
    if batch:
        line(f"batch: send -> counted in {source}, p50", f"{statistics.median(batch):.1f} s")
        line(
            f"batch: send -> counted in {source}, p95",
            f"{q(batch, 0.95):.1f} s",
            f"{batch_missing} not within 120 s",
        )
    else:
        line("batch: nothing published within the run", "-", source)


# -- load -----------------------------------------------------------------------------------
class Writer(threading.Thread):
    """Appends deals to the buffer at `rate` a second, sealing every second: the listener's
    pattern, with its own CaptureBuffer code."""

    def __init__(self, capture: Path, rate: float):
        super().__init__(daemon=True)
        self.buffer = CaptureBuffer(capture)
        self.rate = rate
        self.stopped = threading.Event()
        self.written = 0

    def run(self) -> None:
        rng = random.Random(3)
        step = 1.0 / self.rate
        next_at = time.monotonic()
        while not self.stopped.is_set():
            now = datetime.now(UTC)
            self.buffer.append(random_deal(rng, self.written, now), now)
            self.written += 1
            self.buffer.seal_if_due()
            next_at += step
            time.sleep(max(0.0, next_at - time.monotonic()))
        self.buffer.seal()


async def measure_load(desk, paths, pages, clients, loads, window):
    """The streams open for `window` seconds, then the storm: results and the desk's CPU, RSS."""
    async with Streams(desk.url, paths, clients) as streams:
        await streams.wait_connected(120)
        cpu0, t0 = cpu_seconds(desk.proc.pid), time.monotonic()
        await asyncio.sleep(window)
        steady_cpu = (cpu_seconds(desk.proc.pid) - cpu0) / (time.monotonic() - t0)
        rss = rss_mb(desk.proc.pid)
        singles = [await storm(desk.url, pages, 1) for _ in range(20)]
        single = sorted(r.latencies_ms[0] for r in singles if r.latencies_ms)[len(singles) // 2]
        cpu0, t0 = cpu_seconds(desk.proc.pid), time.monotonic()
        result = await storm(desk.url, pages, loads)
        storm_cpu = (cpu_seconds(desk.proc.pid) - cpu0) / (time.monotonic() - t0)
        rss_storm = rss_mb(desk.proc.pid)
        return result, streams.stats, steady_cpu, storm_cpu, rss, rss_storm, single


def write_history(capture: Path) -> None:
    """A day of history at 100 deals/min: pages of realistic size (15 traders, 2 days)."""
    rng = random.Random(1)
    history = CaptureBuffer(capture, seal_frames=5000)
    start = datetime.now(UTC) - timedelta(hours=24)
    for n in range(144_000):
        moment = start + timedelta(seconds=n * 0.6)
        history.append(random_deal(rng, n, moment), moment)
    history.seal()


def bench_load(work: Path, clients: int, loads: int, rates: list[float], window: float) -> None:
    for rate in rates:
        run = work / f"load-{rate:g}"
        capture = run / "capture"
        capture.mkdir(parents=True)
        write_history(capture)
        desk = Desk(capture, run / "dashboard", run / "desk.log")
        desk.wait()
        writer = Writer(capture, rate)
        writer.start()
        traders = [f"trader_{n}" for n in range(TRADERS)]
        paths = [events_path("desk")] + [events_path(f"trader/{t}") for t in traders]
        pages = ["/"] + [f"/trader/{t}" for t in traders]

        result, stats, steady_cpu, storm_cpu, rss, rss_storm, single = asyncio.run(
            measure_load(desk, paths, pages, clients, loads, window)
        )
        writer.stopped.set()
        writer.join()
        health = desk.health()
        desk.stop()
        events = sum(len(a) for a in stats.arrivals)
        label = f"{rate * 60:g} deals/min" if rate < 10 else f"{rate:g} deals/s"
        print(f"load at {label} ({health['deals']:,} deals held, load {os.getloadavg()[0]:.1f}):")
        line(
            f"  {clients} SSE clients: connected / errors / dropped",
            f"{stats.connected} / {len(stats.errors)} / {health['dropped_clients']}",
            f"{events:,} events received",
        )
        line(f"  {loads} simultaneous page loads", f"{len(result.errors)} errors", result.summary())
        line("  baseline: one page load alone (median of 20)", f"{single:.1f} ms")
        line(
            "  service CPU with the streams open / during the storm",
            f"{steady_cpu * 100:.0f} % / {storm_cpu * 100:.0f} %",
            "of one core",
        )
        line(
            "  service RSS with the streams open / after the storm",
            f"{rss:.0f} / {rss_storm:.0f} MB",
        )


# -- abuse ----------------------------------------------------------------------------------
FD_LIMIT = 1024


class Abuse:
    """`slow` clients holding half-sent requests (reconnecting when closed) and `stalled`
    event streams never read, until `stop()`."""

    def __init__(self, base: str, slow: int, stalled: int):
        self.host, port = base.removeprefix("http://").split(":")
        self.port = int(port)
        self.base, self.slow, self.stalled = base, slow, stalled
        self.connects = 0
        self.closed_by_desk = 0

    async def _slow(self, index: int) -> None:
        while not self.stop_event.is_set():
            writer = None
            try:
                _, writer = await asyncio.open_connection(
                    self.host, self.port, local_addr=(address(index % 1000), 0)
                )
                self.connects += 1
                writer.write(f"GET / HTTP/1.1\r\nHost: {self.host}\r\n".encode())
                while not self.stop_event.is_set():
                    await asyncio.sleep(1)
                    writer.write(b"X-Slow: 1\r\n")  # a header a second, never the blank line
                    await writer.drain()
            except OSError:
                self.closed_by_desk += 1
            finally:
                if writer is not None:
                    writer.close()
            await asyncio.sleep(0.2)

    async def start(self) -> None:
        self.stop_event = asyncio.Event()
        path = events_path("desk")
        # 8 per address (the desk's cap), from addresses the slow clients do not use.
        self.sockets = [
            stalled_client(self.base, path, address(1000 + n // 8)) for n in range(self.stalled)
        ]
        self.tasks = [asyncio.create_task(self._slow(n)) for n in range(self.slow)]
        await asyncio.sleep(3)  # every slow client connected at least once

    async def stop(self) -> None:
        self.stop_event.set()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for sock in self.sockets:
            sock.close()


async def page_loads(base: str, pages: list[str], seconds: float, at_once: int = 10):
    """Page loads for `seconds`, `at_once` at a time every half second: every latency and
    error."""
    latencies, errors = [], []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        began = time.monotonic()
        result = await storm(base, pages, at_once)
        latencies += result.latencies_ms
        errors += result.errors
        await asyncio.sleep(max(0.0, began + 0.5 - time.monotonic()))
    return latencies, errors


async def measure_abuse(desk: Desk, pages: list[str], slow: int, stalled: int, window: float):
    cpu0, t0 = cpu_seconds(desk.proc.pid), time.monotonic()
    alone = await page_loads(desk.url, pages, window)
    cpu_alone = (cpu_seconds(desk.proc.pid) - cpu0) / (time.monotonic() - t0)
    fds = [open_fds(desk.proc.pid)]
    async with Streams(desk.url, [events_path("desk")], 1) as reader:
        await reader.wait_connected(60)
        abuse = Abuse(desk.url, slow, stalled)
        await abuse.start()
        deals_before = desk.health()["deals"]
        pushed_before = len(reader.stats.arrivals[0])
        began = time.monotonic()
        sampler_stop = asyncio.Event()

        async def sample() -> None:
            while not sampler_stop.is_set():
                fds.append(open_fds(desk.proc.pid))
                await asyncio.sleep(0.5)

        sampler = asyncio.create_task(sample())
        cpu0, client0 = cpu_seconds(desk.proc.pid), cpu_seconds(os.getpid())
        abused = await page_loads(desk.url, pages, window)
        health = await asyncio.to_thread(desk.health)
        seconds = time.monotonic() - began
        cpu_abused = (cpu_seconds(desk.proc.pid) - cpu0) / seconds
        cpu_client = (cpu_seconds(os.getpid()) - client0) / seconds
        pushed = len(reader.stats.arrivals[0]) - pushed_before
        sampler_stop.set()
        await sampler
        await abuse.stop()
        cpu = (cpu_alone, cpu_abused, cpu_client)
        return alone, abused, health, deals_before, pushed, seconds, max(fds), abuse, reader, cpu


def bench_abuse(work: Path, slow: int, stalled: int, window: float) -> None:
    capture = work / "capture"
    capture.mkdir(parents=True)
    write_history(capture)
    desk = Desk(capture, work / "dashboard", work / "desk.log", fd_limit=FD_LIMIT)
    desk.wait()
    writer = Writer(capture, 100 / 60)
    writer.start()
    pages = ["/"] + [f"/trader/trader_{n}" for n in range(TRADERS)]
    alone, abused, health, deals_before, pushed, seconds, max_fds, abuse, reader, cpu = asyncio.run(
        measure_abuse(desk, pages, slow, stalled, window)
    )
    writer.stopped.set()
    writer.join()
    rss = rss_mb(desk.proc.pid)
    alive = desk.proc.poll() is None
    desk.stop()
    log = (work / "desk.log").read_text()
    print(
        f"abuse at a {FD_LIMIT}-descriptor limit ({health['deals']:,} deals held, "
        f"load {os.getloadavg()[0]:.1f}):"
    )
    for name, (latencies, errors) in [("alone", alone), ("under abuse", abused)]:
        line(
            f"  {len(latencies) + len(errors)} page loads, 10 every 0.5 s, {name}: p50 / p99 / max",
            f"{q(latencies or [nan], 0.5):.0f} / {q(latencies or [nan], 0.99):.0f} / "
            f"{max(latencies, default=nan):.0f} ms",
            f"{len(errors)} errors" + (f" (first: {errors[0]!r})" if errors else ""),
        )
    line(
        f"  {slow} slow clients: connections made / closed by the desk",
        f"{abuse.connects:,} / {abuse.closed_by_desk:,}",
        f"over {seconds:.0f} s",
    )
    line(
        f"  {stalled} streams never read: still held / dropped at the end",
        f"{health['clients'] - 1} / {health['dropped_clients']}",
        "(the reader is one of the clients)",
    )
    line(
        "  meanwhile: deals followed / pushes to a reading stream",
        f"+{health['deals'] - deals_before} / {pushed}",
        f"reader errors {len(reader.stats.errors)}",
    )
    line(
        "  the desk's CPU alone / under abuse; the clients' (one process)",
        f"{cpu[0] * 100:.0f} % / {cpu[1] * 100:.0f} %; {cpu[2] * 100:.0f} %",
        "of one core",
    )
    line("  the desk's descriptors at most", f"{max_fds}", f"of {FD_LIMIT}; RSS {rss:.0f} MB")
    line(
        "  the desk alive / 'Too many open files' in its log",
        f"{alive} / {'Too many open files' in log}",
    )


def pushes(desk: Desk, capture: Path, deals: int, first: int) -> list[float]:
    """Seconds from each deal written (one a second) to the desk's next `live` event."""
    import httpx

    events: list[float] = []

    def read() -> None:
        with contextlib.suppress(httpx.HTTPError):  # the desk stopped at the end
            with httpx.stream("GET", f"{desk.url}/events?topic=desk", timeout=None) as answer:
                for text in answer.iter_lines():
                    if text.startswith("event: live"):
                        events.append(time.perf_counter())

    threading.Thread(target=read, daemon=True).start()
    time.sleep(1)
    rng, buffer, seconds = random.Random(first), CaptureBuffer(capture), []
    for n in range(first, first + deals):
        before, written = len(events), time.perf_counter()
        buffer.append(random_deal(rng, n, datetime.now(UTC)), datetime.now(UTC))
        buffer.seal()
        while len(events) == before and time.perf_counter() - written < 60:
            time.sleep(0.005)
        seconds.append(events[-1] - written if len(events) > before else nan)
        time.sleep(max(0.0, 1 - (time.perf_counter() - written)))
    return seconds


def bench_replay(work: Path, archive: str, replays: int) -> None:
    import httpx

    capture = work / "capture"
    capture.mkdir(parents=True)
    desk = Desk(capture, work / "dashboard", work / "desk.log", env={"ENERGY_ARCHIVE_URL": archive})
    desk.wait()
    rss_before = rss_mb(desk.proc.pid)
    alone = pushes(desk, capture, 12, 0)
    answers: list[tuple[int, float]] = []

    def replay() -> None:
        started = time.perf_counter()
        answer = httpx.get(f"{desk.url}/replay", timeout=600)
        answers.append((answer.status_code, time.perf_counter() - started))

    askers = [threading.Thread(target=replay) for _ in range(replays)]
    for asker in askers:
        asker.start()
    during = pushes(desk, capture, 12, 1000)
    for asker in askers:
        asker.join()
    with open(f"/proc/{desk.proc.pid}/status") as status:
        peak = next(int(x.split()[1]) / 1024 for x in status if x.startswith("VmHWM:"))
    desk.stop()
    print(f"replay of {archive} (load {os.getloadavg()[0]:.1f}):")
    for name, seconds in [
        ("alone (baseline)", alone),
        (f"while {replays} replays are asked", during),
    ]:
        line(
            f"  12 pushes, a deal a second, {name}: p50 / max",
            f"{statistics.median(seconds):.2f} / {max(seconds):.2f} s",
        )
    for status in sorted({code for code, _ in answers}):
        took = [s for code, s in answers if code == status]
        line(
            f"  replays answered {status}", f"{len(took)}", f"in {min(took):.1f}-{max(took):.1f} s"
        )
    line("  the desk's resident memory before / at most", f"{rss_before:.0f} / {peak:.0f} MB")


def publish_history(dashboard: Path, days: int, now: datetime) -> int:
    """Every period of `days` up to tomorrow, held by each of TRADERS traders, as
    `exposure_dashboard` and the price runs publish them; the confirmed rows."""
    from energy_assets.tables import REFERENCE_PRICES, TRADER_EXPOSURE

    start = datetime.combine(now.date(), datetime.min.time(), UTC) - timedelta(days=days)
    periods = pl.DataFrame(
        [
            (market, begin, begin + timedelta(minutes=minutes), begin.date())
            for day in range(days + 2)
            for market, minutes in (("DE", 60), ("DE", 15), ("GB", 30))
            for k in range(24 * 60 // minutes)
            for begin in [start + timedelta(days=day, minutes=minutes * k)]
        ],
        schema=["market", "delivery_start", "delivery_end", "delivery_day"],
        orient="row",
    )
    traders = pl.DataFrame({"trader_id": [f"trader_{n}" for n in range(TRADERS)]})
    figures = {"trades": 4, "bought_mwh": 10.0, "sold_mwh": 5.0, "net_mwh": 5.0}
    confirmed = traders.join(periods, how="cross").with_columns(
        pl.lit("EUR").alias("currency"),
        *(pl.lit(value).alias(name) for name, value in figures.items()),
        pl.lit(50.0).alias("buy_vwap"),
        pl.lit(52.0).alias("sell_vwap"),
        pl.lit(-240.0).alias("cash"),
        pl.lit(51.0).alias("reference_price"),
        pl.lit(15.0).alias("pnl"),
        pl.lit(255.0).alias("exposure"),
    )
    prices = periods.with_columns(
        pl.lit(51.0).alias("value"),
        pl.lit("euro/mwh").alias("unit"),
        pl.lit(now).alias("last_update"),
        pl.lit(now).alias("fetched_at"),
    )
    for frame, table, name in [
        (confirmed, TRADER_EXPOSURE, published.CONFIRMED),
        (prices, REFERENCE_PRICES, published.PRICES),
    ]:
        missing = [pl.lit(None).alias(c) for c in table.column_names if c not in frame.columns]
        published.write(frame.with_columns(missing), dashboard, name)
    return confirmed.height


def change_seconds(work: Path, days: int) -> tuple[int, list[float]]:
    """The service's refresh and compute for each of 5 new deals, `days` confirmed."""
    from energy_assets.desk.app import DeskService
    from energy_assets.desk.live import LiveDesk
    from energy_assets.desk.replaying import Replays

    capture, dashboard = work / f"capture-{days}", work / f"dashboard-{days}"
    (capture / "segments").mkdir(parents=True)
    now = datetime.now(UTC)
    rows = publish_history(dashboard, days, now)
    rng, buffer = random.Random(days), CaptureBuffer(capture)
    for n in range(2000):
        buffer.append(random_deal(rng, n, now), now)
    buffer.seal()
    service = DeskService(LiveDesk(capture, dashboard), 0.1, Replays("", 4096), False, 8, 100)
    service.desk.refresh()
    service.install(*service.compute())  # the templates compiled, every page made once
    seconds = []
    for n in range(5):
        buffer.append(random_deal(rng, 10_000 + n, datetime.now(UTC)), datetime.now(UTC))
        buffer.seal()
        started = time.perf_counter()
        service.desk.refresh()
        service.install(*service.compute())
        seconds.append(time.perf_counter() - started)
    return rows, seconds


def bench_history(work: Path, days: int) -> None:
    print(f"a new deal with history confirmed (load {os.getloadavg()[0]:.1f}):")
    for span in (7, days):
        rows, seconds = change_seconds(work, span)
        line(
            f"  {span} days confirmed ({rows:,} rows): refresh + compute, best / worst of 5"
            + (" (baseline)" if span == 7 else ""),
            f"{min(seconds):.2f} / {max(seconds):.2f} s",
        )


_MARKS = """() => {
  window.marks = [];
  new MutationObserver(() => window.marks.push(Date.now() / 1000))
    .observe(document.getElementById('live'), {childList: true, subtree: true});
}"""


def page_pushes(page, capture: Path, trader: int, first: int) -> list[float]:
    """Seconds from each of 12 deals of `trader` written to the page's `#live` replaced."""
    rng, buffer, seconds = random.Random(first), CaptureBuffer(capture), []
    page.evaluate(_MARKS)
    time.sleep(2)
    for n in range(12):
        before = page.evaluate("window.marks.length")
        deal = random_deal(rng, trader + TRADERS * (first + n), datetime.now(UTC))
        written = time.time()
        buffer.append(deal, datetime.now(UTC))
        buffer.seal()
        while page.evaluate("window.marks.length") == before and time.time() - written < 10:
            time.sleep(0.01)
        marks = page.evaluate("window.marks")
        seconds.append(marks[-1] - written if len(marks) > before else nan)
        time.sleep(max(0.0, 1 - (time.time() - written)))
    return seconds


_LONG_TASKS = """window.longTasks = [];
new PerformanceObserver((list) => list.getEntries().forEach((e) => window.longTasks.push(e.duration)))
  .observe({type: "longtask"});"""


def _main_thread_seconds(cdp) -> float:
    metrics = cdp.send("Performance.getMetrics")["metrics"]
    return next(m["value"] for m in metrics if m["name"] == "TaskDuration")


def bench_dense(work: Path) -> None:
    from playwright.sync_api import sync_playwright

    print(f"pushes to full pages in Chromium (load {os.getloadavg()[0]:.1f}):")
    for days in (0, 7):
        capture, dashboard = work / f"capture-{days}", work / f"dashboard-{days}"
        (capture / "segments").mkdir(parents=True)
        now = datetime.now(UTC)
        if days:
            publish_history(dashboard, days, now)
        rng, buffer = random.Random(days), CaptureBuffer(capture)
        for n in range(2000):
            buffer.append(random_deal(rng, n, now), now)
        buffer.seal()
        desk = Desk(capture, dashboard, work / f"desk-{days}.log")
        desk.wait()
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
            )
            for path, first in [("/trader/trader_3", 1000), ("/", 2000)]:
                page = browser.new_page()
                page.goto(desk.url + path, wait_until="domcontentloaded")
                rows = page.evaluate("document.querySelectorAll('tr').length")
                cdp = page.context.new_cdp_session(page)
                cdp.send("Performance.enable")
                page.evaluate(_LONG_TASKS)
                busy, started = _main_thread_seconds(cdp), time.time()
                seconds = page_pushes(page, capture, 3, first)
                busy = (_main_thread_seconds(cdp) - busy) / (time.time() - started)
                longest = page.evaluate("Math.max(0, ...window.longTasks)")
                line(
                    f"  {path}, {days} days confirmed ({rows:,} table rows): p50 / max"
                    + (" (baseline)" if not days else ""),
                    f"{statistics.median(seconds):.2f} / {max(seconds):.2f} s; main thread "
                    f"{busy:.0%} busy, longest task {longest:.0f} ms",
                )
                page.close()
            browser.close()
        desk.stop()


# -- traders ----------------------------------------------------------------------------------
def _traders_deal(rng: random.Random, n: int, now: datetime, traders: int) -> Deal:
    fields = random_deal(rng, n, now).to_dict(legacy=True)
    return validate_deal({**fields, "trader_id": f"t{n % traders}"})


def bench_traders(work: Path, counts: list[int], deals: int) -> None:
    """What one more deal costs the desk (buffer read, view, every page's fragment) with many
    traders, beside today's 15; the deals spread over the traders and the next two days."""
    from energy_assets.desk.app import DeskService
    from energy_assets.desk.live import LiveDesk
    from energy_assets.desk.replaying import Replays

    for traders in [15, *counts]:
        capture = work / f"traders-{traders}"
        buffer = CaptureBuffer(capture)
        rng = random.Random(traders)
        now = datetime.now(UTC)

        for n in range(max(deals, traders)):
            buffer.append(_traders_deal(rng, n, now, traders), now)
        buffer.seal()
        desk = LiveDesk(capture, work / "dashboard")
        service = DeskService(desk, 0.1, Replays("", 512), False, 8, 500)
        desk.refresh()
        service.install(*service.compute())
        buffer.append(_traders_deal(rng, 0, now, traders), now)
        buffer.seal()
        started = time.perf_counter()
        desk.refresh()
        service.install(*service.compute())
        seconds = time.perf_counter() - started
        line(f"traders: one more deal with {traders:,} traders", f"{seconds:.2f} s", "(15: today)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--only",
        choices=["rebuild", "latency", "load", "abuse", "replay", "history", "dense", "traders"],
        action="append",
    )
    parser.add_argument("--hours", type=float, default=72)
    parser.add_argument("--per-minute", type=float, default=100)
    parser.add_argument("--renew-after", type=float, default=20, help="rebuild: renewal, s")
    parser.add_argument("--seconds", type=float, default=90, help="latency: seconds of deals")
    parser.add_argument("--rate", type=float, default=2, help="latency: deals per second")
    parser.add_argument("--login", action="store_true", help="latency: the desk with its login")
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--loads", type=int, default=500)
    parser.add_argument("--rates", type=float, nargs="+", default=[100 / 60, 100])
    parser.add_argument("--window", type=float, default=30, help="load: seconds measured")
    parser.add_argument("--slow", type=int, default=1100, help="abuse: slow clients")
    parser.add_argument("--stalled", type=int, default=300, help="abuse: streams never read")
    parser.add_argument(
        "--abuse-seconds", type=float, default=30, help="abuse: seconds of page loads, each way"
    )
    parser.add_argument("--archive", help="replay: a journals' archive (see above)")
    parser.add_argument("--replays", type=int, default=6, help="replay: asked at once")
    parser.add_argument("--history-days", type=int, default=365, help="history: days confirmed")
    parser.add_argument("--traders", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--trader-deals", type=int, default=5000, help="traders: deals")
    args = parser.parse_args()
    only = set(args.only or ["rebuild", "latency", "load", "abuse"])
    if "replay" in only and not args.archive:
        parser.error("--only replay needs --archive (benchmarks/rebuild.py --keep makes one)")
    print(f"# live desk benchmarks, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC", flush=True)
    with tempfile.TemporaryDirectory(prefix="live-bench-") as tmp:
        work = Path(tmp)
        if "rebuild" in only:
            bench_rebuild(work / "rebuild", args.hours, args.per_minute, args.renew_after)
        if "latency" in only:
            bench_latency(work / "latency", args.seconds, args.rate, args.login)
        if "load" in only:
            bench_load(work / "load", args.clients, args.loads, args.rates, args.window)
        if "abuse" in only:
            bench_abuse(work / "abuse", args.slow, args.stalled, args.abuse_seconds)
        if "replay" in only:
            bench_replay(work / "replay", args.archive, args.replays)
        if "traders" in only:
            bench_traders(work, args.traders, args.trader_deals)
        if "history" in only:
            bench_history(work / "history", args.history_days)
        if "dense" in only:
            bench_dense(work / "dense")


if __name__ == "__main__":
    main()
