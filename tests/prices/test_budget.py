"""The request budget: shared through its SQLite file by threads and processes alike."""

from __future__ import annotations

import multiprocessing
import sqlite3
import time
from datetime import UTC, datetime

import pytest

from energy_assets.markets import MARKETS, open_periods
from energy_assets.prices.budget import (
    BULK,
    FRESH,
    BudgetLimits,
    RequestBudget,
    _bulk_guarded,
)
from energy_assets.prices.plan import period_key
from energy_assets.prices.refresh import budget_left, next_batch
from energy_assets.trades.book import Book


def max_in_window(times: list[float], span: float) -> int:
    """The most `times` inside any window of `span` seconds (one starting at each time)."""
    return max((sum(1 for t in times if start <= t < start + span) for start in times), default=0)


# Scaled-down windows so that the test waits seconds, not minutes.
LIMITS = BudgetLimits(per_minute=5, per_hour=12, reserve=0, margin_s=0.05, minute_s=1.0, hour_s=4.0)


def _spend(path: str, count: int, barrier) -> None:
    budget = RequestBudget(path, LIMITS)
    barrier.wait()
    for _ in range(count):
        budget.acquire(FRESH)


@pytest.mark.slow
def test_two_processes_never_exceed_the_budget(tmp_path):
    path = str(tmp_path / "budget.sqlite")
    RequestBudget(path, LIMITS)._ensure()
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    workers = [context.Process(target=_spend, args=(path, 9, barrier)) for _ in range(2)]
    started = time.time()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    sent = RequestBudget(path, LIMITS).sent_between(started - 1, time.time() + 1)
    assert len(sent) == 18
    assert max_in_window(sent, 1.0) <= 5
    assert max_in_window(sent, 4.0) <= 12
    # 18 requests at 12 per 4 s: the budget made them wait rather than overspend.
    assert sent[-1] - sent[0] >= 4.0


class FakeClock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.mark.slow
def test_a_backfill_leaves_every_coming_burst_its_room(tmp_path):
    # From 00:02 UTC a greedy backfill, and the schedule's bursts at 00:10:31 ... 00:40:31
    # (47 open hours each: 01:00 today to the end of tomorrow). The six bursts a request can
    # meet in the hour window need 5 * 47 + 46 (the 01:00 slot has 46 open hours) = 281.
    # Bulk takes at most 25 a minute between the bursts: by 00:40 it has its hour share.
    clock = FakeClock(datetime(2026, 11, 25, 0, 2, tzinfo=UTC).timestamp())
    budget = RequestBudget(tmp_path / "b.sqlite", BudgetLimits(), clock=clock, sleep=clock.sleep)
    budget._ensure()
    first_slot = clock.now - clock.now % 600 + 600
    bulk = 0
    for burst_at in (first_slot + 31 + 600 * k for k in range(4)):
        while clock.now < burst_at:
            wait = budget._try_acquire(BULK)
            if wait <= 0:
                bulk += 1
                clock.now += 0.01
            else:
                clock.now = min(clock.now + wait, burst_at)
        began = clock.now
        for _ in range(47):
            budget.acquire(FRESH)
        assert clock.now - began < 1.0  # the schedule never waits for the backfill
    # Bulk was held at what the coming bursts leave of the hour window, not at 50 a minute.
    assert 1000 - 281 - 47 - 5 <= bulk <= 1000 - 281


@pytest.mark.parametrize("into_slot", [200.0, 450.0])
def test_a_planner_batch_between_the_bursts_starts_at_once_after_a_greedy_backfill(
    tmp_path, into_slot
):
    # A start at any moment: the recent-prices backfill and the planner's first batch race for
    # the budget. However much bulk asked for in the minute before, 25 fresh requests go now.
    clock = FakeClock(1_700_000_400.0 + into_slot)
    budget = RequestBudget(tmp_path / "b.sqlite", BudgetLimits(), clock=clock, sleep=clock.sleep)
    budget._ensure()
    sent = []
    started = clock.now
    while clock.now < started + 60:
        if budget._try_acquire(BULK) <= 0:
            sent.append(clock.now)
        clock.now += 0.5
    assert 0 < max_in_window(sent, 60.0) <= 50 - 25
    began = clock.now
    for _ in range(25):
        budget.acquire(FRESH)
    assert clock.now - began < 1.0


@pytest.mark.parametrize("into_slot", [0.0, 45.0, 200.0, 450.0, 575.0])
def test_the_planners_batch_never_waits_whatever_a_backfill_takes_after_it_was_planned(
    tmp_path, into_slot
):
    # The planner sizes its batch a few seconds before the run fetches it; a backfill started
    # meanwhile takes what it may. The batch still goes at once (and so publishes within
    # seconds), around a burst and between them.
    clock = FakeClock(1_700_000_400.0 + into_slot)
    budget = RequestBudget(tmp_path / "b.sqlite", BudgetLimits(), clock=clock, sleep=clock.sleep)
    budget._ensure()
    for _ in range(5):  # the last batch's requests, still in the minute window
        budget.acquire(FRESH)
    planned = budget_left(budget, datetime.fromtimestamp(clock.now, UTC), 50, 1000).minute
    assert planned > 0
    clock.now += 3
    while budget._try_acquire(BULK) <= 0:
        pass
    began = clock.now
    for _ in range(planned):
        budget.acquire(FRESH)
    assert clock.now - began < 1.0


def test_bulk_is_held_off_the_minute_window_around_the_burst():
    slot = 1_700_000_400.0  # a multiple of 600: a grid slot
    assert slot % 600 == 0
    assert not _bulk_guarded(slot - 40, 1.0)
    assert _bulk_guarded(slot - 31, 1.0)  # would still count at slot + 30
    assert _bulk_guarded(slot + 45, 1.0)  # the burst itself
    assert not _bulk_guarded(slot + 91, 1.0)


@pytest.mark.parametrize("how", ["a 429 now", "a pause stored before the cap"])
def test_a_retry_after_of_a_day_holds_the_budget_for_an_hour_at_most(tmp_path, how):
    # Retry-After: 100000 (27.8 h) used to be stored as is: no request for any hour for a day.
    path = tmp_path / "budget.sqlite"
    clock = [1_800_000_000.0]
    slept = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    budget = RequestBudget(path, BudgetLimits(reserve=0), clock=lambda: clock[0], sleep=sleep)
    if how == "a 429 now":
        budget.pause_until(clock[0] + 100_000)
        assert budget.paused_until() == clock[0] + 3600
    else:
        budget._ensure()
        with sqlite3.connect(path) as conn:
            conn.execute("INSERT INTO pause (id, until) VALUES (1, ?)", (clock[0] + 100_000,))
    started = clock[0]
    budget.acquire(FRESH)
    assert 3600 - 1 <= clock[0] - started <= 3600 + 1
    # A later 429 does not extend a stored pause past the window either.
    budget.pause_until(clock[0] + 10)
    assert budget.paused_until() <= clock[0] + 3600


def test_while_the_backfill_is_held_off_a_planner_batch_has_the_whole_minute(tmp_path):
    # 900 of the hour's 1,000 sent in the last 20 minutes: the coming bursts need the rest, so
    # a backfill may send nothing until the next burst is over. The planner's batch is sized to
    # the whole minute, not the half a backfill could otherwise still take, and goes at once.
    clock = FakeClock(1_700_000_400.0 + 300)  # checked mid-slot, minutes before a burst
    budget = RequestBudget(tmp_path / "b.sqlite", BudgetLimits(), clock=clock, sleep=clock.sleep)
    budget._ensure()
    for _ in range(900):
        budget.acquire(FRESH)
        clock.now += 1.25
    clock.now += 62  # the minute window empty again, the hour's not
    assert budget.bulk_held_for(clock.now) > 60
    planned = budget_left(budget, datetime.fromtimestamp(clock.now, UTC), 50, 1000).minute
    assert planned == 50
    clock.now += 3
    assert budget._try_acquire(BULK) > 0  # the backfill, meanwhile, gets nothing
    began = clock.now
    for _ in range(planned):
        budget.acquire(FRESH)
    assert clock.now - began < 1.0


def test_a_backfill_does_not_spend_the_planners_share_of_the_slot(tmp_path):
    # At a start the recent-prices backfill runs beside the planner's catch-up: in the demo it
    # took ~100 requests of the slot, and the planner, counting them as its own, stopped with
    # half the periods of open positions unpriced until the next slot.
    slot = 1_700_000_400.0
    clock = FakeClock(slot + 100)  # between bursts: bulk may take half the minute
    budget = RequestBudget(tmp_path / "b.sqlite", BudgetLimits(), clock=clock, sleep=clock.sleep)
    budget._ensure()
    for _ in range(60):
        budget.acquire(FRESH)
        clock.now += 1.0
    for _ in range(60):
        budget.acquire(BULK)
    clock.now += 62  # the minute window empty again
    assert clock.now < slot + 500  # still the same slot, before the next burst's guard
    assert len(budget.sent_between(slot, clock.now, BULK)) == 60
    left = budget_left(budget, datetime.fromtimestamp(clock.now, UTC), 50, 1000)
    assert left.hour == 1000 // 6 - 60
    assert left.minute > 0


def _book_with_positions(now: datetime, count: int) -> Book:
    periods = open_periods(MARKETS["DE"], now, 15)[:count]
    return Book(open_mw={period_key(p): 1.0 for p in periods}, traded=frozenset())


@pytest.mark.parametrize("positions", [0, 120])
def test_open_positions_to_price_hold_the_backfill_off_and_take_the_whole_minute(
    tmp_path, positions
):
    # A start: the recent-prices backfill took its half of the minute before the planner's
    # first tick. With positions to price, the planner holds bulk off: its next batch has the
    # whole minute, and the backfill sends nothing until the positions are priced. With none,
    # the backfill keeps its share.
    clock = FakeClock(1_700_000_400.0 + 200)  # between bursts
    budget = RequestBudget(tmp_path / "b.sqlite", BudgetLimits(), clock=clock, sleep=clock.sleep)
    budget._ensure()
    now = lambda: datetime.fromtimestamp(clock.now, UTC)  # noqa: E731
    book = _book_with_positions(now(), positions)
    for _ in range(25):
        budget.acquire(BULK)
    first, _ = next_batch(now(), book, {}, budget, 50, 1000)
    assert len(first) == 25  # what the backfill left of the minute
    clock.now += 61  # the backfill's requests out of the minute window
    held = budget._try_acquire(BULK) > 0
    assert held == bool(positions)
    second, _ = next_batch(now(), book, {}, budget, 50, 1000)
    assert len(second) == (50 if positions else 25)
    if positions:
        clock.now += 120  # no planner tick since: the hold lapses
        assert budget._try_acquire(BULK) <= 0
