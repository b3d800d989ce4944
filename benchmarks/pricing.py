"""The price planner against a round-robin fetcher, in one simulated trading hour.

Both fetchers run at once on one clock, each against its own playground Market Data API at
the vendor's limits (50 requests in any 60 s, 1,000 in any 3,600 s, 429 past them), with its
own request budget file of the same limits; they see the same book: 15 traders, 100 deals a
minute in `DE` (hours and quarter-hours) and `GB` (half-hours), most of them for delivery in
the next few hours. The book starts with `--warmup-minutes` of deals already made and no
price held: the start-up.

- planner: `energy_assets.prices.plan.plan_fetches` every `--tick` seconds of the clock, on
  the open positions, the traded periods and the revisions held, within the budget left and
  at most a sixth of the hour's budget per 10-minute revision slot (so that every slot of the
  hour has its share);
- round-robin: every open period in turn, paced evenly at the hour's budget (one request
  every 3.6 s), the budget file refusing any excess.

Every 10 s of the clock, for each fetcher: the **exposure-weighted staleness** Σ |open MW| ×
(time since the vendor published a revision newer than the one held; 0 when the newest is
held; since the start when nothing is held) ÷ Σ |open MW|, over the periods before their gate
closure; the revisions behind of every open position within 30 minutes of gate closure; and
the age on screen (now − `last_update` of the price held). The vendor's truth is the
stand-in's own `published_price`.

The clock is accelerated (`--speed`, default 10: an hour in 6 minutes): the playground reads
its prices and counts its rate limits on it, the budget counts and sleeps on it. What does not
scale is the HTTP round trip (~1-3 ms real, so 10-30 ms of the clock at speed 10, more on a
loaded machine), which makes both fetchers a little slower than they would be; the budget's
1 s padding of the vendor's windows is widened to 0.5 s of real time for the same reason.

    .venv/bin/python benchmarks/pricing.py                 # --minutes 60 --speed 10
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from energy_assets.markets import MARKETS, Period, open_periods  # noqa: E402
from energy_assets.playground.pricing import published_price  # noqa: E402
from energy_assets.playground.server import MarketDataOptions, Playground  # noqa: E402
from energy_assets.prices.budget import FRESH, BudgetLimits, RequestBudget  # noqa: E402
from energy_assets.prices.plan import (  # noqa: E402
    BudgetLeft,
    grid_slot,
    period_key,
    plan_fetches,
)

#: A Thursday morning: the start of the simulated hour (the book's warm-up runs before it).
START = datetime(2026, 11, 12, 9, 58, 0, tzinfo=UTC)
SEED = 7
PER_MINUTE, PER_HOUR = 50, 1000
#: Each 10-minute slot may spend a sixth of the hour's budget.
SLOT_SHARE = PER_HOUR // 6


class Clock:
    """`start` + `speed` × real seconds since construction."""

    def __init__(self, start: datetime, speed: float):
        self.start = start.timestamp()
        self.speed = speed
        self.t0 = time.monotonic()

    def now(self) -> float:
        return self.start + (time.monotonic() - self.t0) * self.speed

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds) / self.speed)

    def dt(self) -> datetime:
        return datetime.fromtimestamp(self.now(), UTC)


def tradable(now: datetime) -> list[Period]:
    periods: list[Period] = []
    for code, market in MARKETS.items():
        for minutes in market.products_minutes:
            periods += open_periods(code, now, minutes)
    return periods


@dataclass
class Book:
    """Deals made so far: net MW per (trader, period), the traded periods."""

    net: dict[tuple[str, tuple], float] = field(default_factory=lambda: defaultdict(float))
    traded: set = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, trader: str, period: Period, mw: float) -> None:
        with self.lock:
            key = period_key(period)
            self.net[(trader, key)] += mw
            self.traded.add(key)

    def open_mw(self) -> dict[tuple, float]:
        with self.lock:
            out: dict[tuple, float] = defaultdict(float)
            for (_, key), mw in self.net.items():
                out[key] += abs(mw)
            return {k: v for k, v in out.items() if v > 1e-9}


def deal_stream(
    rng: random.Random, start: float, end: float, per_minute: int, traders: int, near: float
):
    """(time, trader, period, signed MW) at `per_minute` a minute, Poisson; a share `near` of
    the deals for delivery in the next 3 hours (intraday), the rest anywhere still open."""
    t = start
    cache: dict[int, list[Period]] = {}
    while True:
        t += rng.expovariate(per_minute / 60)
        if t >= end:
            return
        minute = int(t // 60)
        if minute not in cache:
            cache.clear()
            cache[minute] = tradable(datetime.fromtimestamp(minute * 60 + 59, UTC))
        periods = cache[minute]
        code = "DE" if rng.random() < 0.7 else "GB"
        mine = [p for p in periods if p.market == code]
        if code == "DE":
            length = 15 if rng.random() < 0.7 else 60
            mine = [p for p in mine if p.minutes == length]
        soon = [p for p in mine if p.delivery_start.timestamp() < t + 3 * 3600]
        period = rng.choice(soon if soon and rng.random() < near else mine)
        mw = round(rng.uniform(0.5, 10.0), 1) * rng.choice((1, -1))
        yield t, f"trader_{rng.randrange(traders) + 1}", period, mw


@dataclass
class Fetcher:
    name: str
    playground: Playground
    budget: RequestBudget
    clock: Clock
    held: dict[tuple, datetime] = field(default_factory=dict)
    requests: int = 0
    rate_limited: int = 0
    first_price_at: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self):
        self.session = requests.Session()
        self.url = self.playground.market_data_url + "/reference-price"

    def fetch(self, period: Period) -> None:
        self.budget.acquire(FRESH)
        params = {
            "market": period.market,
            "delivery_start": period.delivery_start.isoformat(),
            "delivery_end": period.delivery_end.isoformat(),
        }
        answer = self.session.get(self.url, params=params, timeout=10)
        with self.lock:
            self.requests += 1
            if answer.status_code == 429:
                self.rate_limited += 1
                return
            answer.raise_for_status()
            stamp = datetime.fromisoformat(answer.json()["last_update"])
            key = period_key(period)
            if key not in self.held or stamp > self.held[key]:
                self.held[key] = stamp
            if self.first_price_at is None:
                self.first_price_at = self.clock.now()

    def left(self) -> BudgetLeft:
        now = self.clock.now()
        margin = self.budget.limits.margin_s
        minute = len(self.budget.sent_between(now - 60 - margin, now))
        slot = grid_slot(datetime.fromtimestamp(now, UTC)).timestamp()
        hour_times = self.budget.sent_between(now - 3600 - margin, now)
        this_slot = sum(1 for t in hour_times if t >= slot)
        return BudgetLeft(
            minute=PER_MINUTE - minute,
            hour=min(PER_HOUR - len(hour_times), SLOT_SHARE - this_slot),
        )


def plan_now(book: Book, held: dict, now: datetime, budget: BudgetLeft):
    """The planner's fetch list for `now`, as the product's sensor asks for it."""
    with book.lock:
        traded = set(book.traded)
    return plan_fetches(
        tradable(now),
        now=now,
        gate_closure=lambda p: MARKETS[p.market].gate_closure(p.delivery_start),
        open_mw=book.open_mw(),
        traded=traded,
        held=held,
        budget=budget,
    )


def run_planner(fetcher: Fetcher, book: Book, stop: threading.Event, tick: float) -> None:
    with ThreadPoolExecutor(8) as pool:
        while not stop.is_set():
            with fetcher.lock:
                held = dict(fetcher.held)
            plan = plan_now(book, held, fetcher.clock.dt(), fetcher.left())
            list(pool.map(lambda f: fetcher.fetch(f.period), plan))
            if not plan:
                fetcher.clock.sleep(tick)


def run_round_robin(fetcher: Fetcher, stop: threading.Event) -> None:
    interval = 3600 / PER_HOUR
    position = 0
    next_at = fetcher.clock.now()
    while not stop.is_set():
        periods = tradable(fetcher.clock.dt())
        position %= len(periods)
        fetcher.fetch(periods[position])
        position += 1
        next_at += interval
        fetcher.clock.sleep(next_at - fetcher.clock.now())


@dataclass
class ReplayFetcher:
    """`--replay`: the vendor's answer computed in process (`published_price`, no HTTP), the
    budget's windows counted exactly, on a clock that steps a second at a time."""

    name: str
    held: dict[tuple, datetime] = field(default_factory=dict)
    sent: list[float] = field(default_factory=list)
    rate_limited: int = 0
    first_price_at: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def requests(self) -> int:
        return len(self.sent)

    def left(self, now: float) -> BudgetLeft:
        hour = [t for t in self.sent if t > now - 3600]
        slot = now - now % 600
        return BudgetLeft(
            minute=PER_MINUTE - sum(1 for t in hour if t > now - 60),
            hour=min(PER_HOUR - len(hour), SLOT_SHARE - sum(1 for t in hour if t >= slot)),
        )

    def fetch(self, period: Period, now: float) -> None:
        self.sent.append(now)
        stamp = published_price(SEED, period, now, vendor_grid=True).last_update
        key = period_key(period)
        if key not in self.held or stamp > self.held[key]:
            self.held[key] = stamp
        if self.first_price_at is None:
            self.first_price_at = now


def replay(book: Book, later, start: float, end: float, tick: float, initial):
    """Both fetchers on a simulated clock: a minute of the hour in ~0.15 s of CPU, so that
    an order of the plan can be tried in seconds (the figures track the live run's within a
    few per cent)."""
    planner, robin = ReplayFetcher("planner"), ReplayFetcher("round-robin")
    samples = {"planner": Samples(), "round-robin": Samples()}
    position, robin_at, plan_at, sample_at, fed = 0, start, start, start + 10, 0
    for now in range(int(start), int(end)):
        while fed < len(later) and later[fed][0] <= now:
            _, trader, period, mw = later[fed]
            book.add(trader, period, mw)
            fed += 1
        moment = datetime.fromtimestamp(now, UTC)
        if now >= plan_at:
            plan = plan_now(book, dict(planner.held), moment, planner.left(now))
            for fetch in plan:
                planner.fetch(fetch.period, now)
            plan_at = now + (1 if plan else tick)
        while robin_at <= now:
            periods = tradable(moment)
            position %= len(periods)
            robin.fetch(periods[position], now)
            position += 1
            robin_at += 3600 / PER_HOUR
        if now >= sample_at:
            for fetcher in (planner, robin):
                sample(fetcher, book, now, start, samples[fetcher.name], initial)
            sample_at += 10
    return [planner, robin], samples


@dataclass
class Samples:
    staleness: list[float] = field(default_factory=list)
    age: list[float] = field(default_factory=list)
    closing_behind: list[int] = field(default_factory=list)
    all_traded_at: float | None = None


def sample(fetcher: Fetcher, book: Book, now: float, start: float, out: Samples, initial):
    with fetcher.lock:
        held = dict(fetcher.held)
    moment = datetime.fromtimestamp(now, UTC)
    weight = stale = aged = 0.0
    for key, mw in book.open_mw().items():
        period = Period(*key)
        if period.gate_closure <= moment:
            continue
        truth = published_price(SEED, period, now, vendor_grid=True)
        have = held.get(key)
        if have is None:
            behind, staleness, age = 99, now - start, now - start
        else:
            have_rev = int(have.timestamp() // 600)
            behind = truth.revision - have_rev
            if behind <= 0:
                staleness = 0.0
            else:
                newer = published_price(SEED, period, (have_rev + 1) * 600 + 31, vendor_grid=True)
                staleness = now - newer.last_update.timestamp()
            age = now - have.timestamp()
        weight += mw
        stale += mw * staleness
        aged += mw * age
        if (period.gate_closure - moment).total_seconds() <= 1800:
            out.closing_behind.append(behind)
    if weight:
        out.staleness.append(stale / weight)
        out.age.append(aged / weight)
    if out.all_traded_at is None and all(
        k in held for k in initial if Period(*k).gate_closure > moment
    ):
        out.all_traded_at = now


def live(book, later, start, end, speed, tick, initial):
    """Both fetchers over HTTP against their own playgrounds, on the accelerated clock."""
    workdir = Path(tempfile.mkdtemp(prefix="pricing-bench-"))
    clock = Clock(START, speed)
    # The budget pads its windows by 1 s for the moment between recording a request and the
    # vendor seeing it; on an accelerated clock that moment is `speed` times longer.
    limits = BudgetLimits(
        per_minute=PER_MINUTE, per_hour=PER_HOUR, reserve=0, margin_s=max(1.0, 0.5 * speed)
    )
    options = MarketDataOptions(
        seed=SEED,
        vendor_grid=True,
        rate_limit_per_minute=PER_MINUTE,
        rate_limit_per_hour=PER_HOUR,
        clock=clock.now,
    )
    fetchers = []
    for name in ("planner", "round-robin"):
        pg = Playground(market_data=options, exchange_port=0, market_data_port=0).start()
        budget = RequestBudget(
            workdir / f"{name}.sqlite", limits, clock=clock.now, sleep=clock.sleep
        )
        fetchers.append(Fetcher(name, pg, budget, clock))
    planner, robin = fetchers
    stop = threading.Event()
    threads = [
        threading.Thread(target=run_planner, args=(planner, book, stop, tick), daemon=True),
        threading.Thread(target=run_round_robin, args=(robin, stop), daemon=True),
    ]
    for thread in threads:
        thread.start()
    samples = {f.name: Samples() for f in fetchers}
    next_sample = start + 10
    fed = 0
    while (now := clock.now()) < end:
        while fed < len(later) and later[fed][0] <= now:
            _, trader, period, mw = later[fed]
            book.add(trader, period, mw)
            fed += 1
        if now >= next_sample:
            for fetcher in fetchers:
                sample(fetcher, book, now, start, samples[fetcher.name], initial)
            next_sample += 10
        time.sleep(0.02)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)

    for fetcher in fetchers:
        fetcher.playground.stop()
    return fetchers, samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--speed", type=float, default=10)
    parser.add_argument("--traders", type=int, default=15)
    parser.add_argument("--deals-per-minute", type=int, default=100)
    parser.add_argument("--warmup-minutes", type=float, default=60)
    parser.add_argument(
        "--near-share", type=float, default=0.8, help="share of deals within the next 3 h"
    )
    parser.add_argument("--tick", type=float, default=2.0, help="planner's idle step (s)")
    parser.add_argument(
        "--replay",
        action="store_true",
        help="no HTTP: the vendor's answers computed in process, a second at a time (seconds, "
        "not minutes, for trying an order of the plan)",
    )
    args = parser.parse_args()

    rng = random.Random(SEED)
    start = START.timestamp()
    end = start + args.minutes * 60
    deals = list(
        deal_stream(
            rng,
            start - args.warmup_minutes * 60,
            end,
            args.deals_per_minute,
            args.traders,
            args.near_share,
        )
    )
    book = Book()
    warm = [d for d in deals if d[0] < start]
    for _, trader, period, mw in warm:
        book.add(trader, period, mw)
    initial = {period_key(p) for _, _, p, _ in warm if p.gate_closure > START}
    book_at_start = book.open_mw()
    later = [d for d in deals if d[0] >= start]

    if args.replay:
        fetchers, samples = replay(book, later, start, end, args.tick, initial)
    else:
        fetchers, samples = live(book, later, start, end, args.speed, args.tick, initial)
    load = os.getloadavg()[0]
    # Where the money is at the start: the share of |open MW| near delivery decides how much
    # any order can gain over round-robin (benchmarks/README.md, "Prices by value").
    at_start = {k: v for k, v in book_at_start.items() if Period(*k).gate_closure > START}
    total_mw = sum(at_start.values())
    near_mw = sum(v for k, v in at_start.items() if k[1] < START + timedelta(hours=3))
    near_n = sum(1 for k in at_start if k[1] < START + timedelta(hours=3))
    print(
        f"{len(at_start)} open periods hold a position at the start; the {near_n} within 3 h "
        f"of delivery hold {near_mw / total_mw:.0%} of the |open MW|"
    )
    print(
        f"simulated {args.minutes:g} min "
        f"{'replayed' if args.replay else f'at {args.speed:g}x'}, {len(later)} deals, "
        f"{args.near_share:.0%} within 3 h of delivery "
        f"(+{len(warm)} before the start, {len(initial)} traded open periods at the start), "
        f"{len(tradable(START))} open periods at the start, load {load:.1f}"
    )
    result = {}
    for fetcher in fetchers:
        s = samples[fetcher.name]
        mean = sum(s.staleness) / len(s.staleness)
        age = sum(s.age) / len(s.age)
        second_half = s.staleness[len(s.staleness) // 2 :]
        settled = sum(second_half) / len(second_half)
        worst = max(s.closing_behind, default=0)
        over = sum(1 for b in s.closing_behind if b > 1)
        first = (fetcher.first_price_at - start) if fetcher.first_price_at else None
        all_traded = (s.all_traded_at - start) if s.all_traded_at else None
        result[fetcher.name] = (mean, settled)
        print(
            f"{fetcher.name:12s} staleness {mean:6.1f} s (second half of the run {settled:6.1f} s), "
            f"age on screen {age:6.1f} s, requests {fetcher.requests}, "
            f"429 {fetcher.rate_limited}, "
            f"closing positions >1 revision behind {over} of {len(s.closing_behind)} samples "
            f"(worst {worst}), first price {first if first is None else round(first, 1)} s, "
            f"all traded periods {all_traded if all_traded is None else round(all_traded, 1)} s"
        )
    ratio = result["round-robin"][0] / max(result["planner"][0], 1e-9)
    ratio_settled = result["round-robin"][1] / max(result["planner"][1], 1e-9)
    print(
        f"round-robin / planner staleness: {ratio:.1f}x (second half of the run {ratio_settled:.1f}x)"
    )
    # Per half-hour: the start-up (and its echo an hour on, when its requests leave the
    # vendor's hour) apart from the steady state.
    planner, robin = samples["planner"].staleness, samples["round-robin"].staleness
    for i in range(0, len(planner), 180):
        mine, theirs = planner[i : i + 180], robin[i : i + 180]
        print(
            f"  minutes {i // 6:3d}-{(i + len(mine)) // 6:3d}: planner {sum(mine) / len(mine):6.1f} s, "
            f"round-robin {sum(theirs) / len(theirs):6.1f} s, {sum(theirs) / max(sum(mine), 1e-9):.1f}x"
        )


if __name__ == "__main__":
    main()
