"""The vendor's request budget, shared by every thread, run and process on this machine.

The vendor counts every request over sliding windows (any 60 s, any 3,600 s). Each request
is recorded in a small SQLite file (by default next to the DuckDB file) *before* it is sent,
inside a `BEGIN IMMEDIATE` transaction, so that two processes can never both take the last
slot. A caller that finds no room waits until the oldest request in the full window ages out:
the budget waits, it never overspends.

Two priorities share it:

- `fresh` (the planner's re-fetch of open periods) may use the whole budget;
- `bulk` (backfills) leaves room for the planner's bursts: a bulk request is sent only if
  every burst of the coming hour (each the number of periods open at its slot, every
  market's, at most
  `reserve`) still fits the vendor's hour window with it, and around each 10-minute slot,
  when a burst is due, bulk leaves `reserve` requests of the minute window free too, and
  half of it at any other moment (the planner's batch on a start); and while the planner has
  open positions' prices to fetch, it holds bulk off altogether (`hold_bulk`). So a backfill
  never starves the planner, and takes the rest.

A 429 from the vendor pauses every user of the file until its `Retry-After` has passed, an
hour (the vendor's own window) at most.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from energy_assets.markets import MARKETS, Invalid, open_periods
from energy_assets.prices.plan import PUBLICATION_DELAY_S, REVISION_GRID_S
from energy_assets.storage import transaction

FRESH = "fresh"
BULK = "bulk"

MINUTE_S = 60.0
HOUR_S = 3600.0
#: How long after a slot's publication deadline the planner's burst is expected to last.
BURST_LENGTH_S = 60.0


@dataclass(frozen=True)
class BudgetLimits:
    per_minute: int = 50
    per_hour: int = 1000
    #: Requests kept free for the planner's burst after each slot.
    reserve: int = 47
    #: Seconds added to each window: a request is recorded a moment before the vendor sees it.
    margin_s: float = 1.0
    #: The vendor's windows (shorter only in tests).
    minute_s: float = MINUTE_S
    hour_s: float = HOUR_S
    #: How long the request log is kept (an audit of what the vendor saw from us).
    keep_s: float = 86400.0
    #: The longest pause a 429 can impose (the vendor's own window): a `Retry-After` of a day
    #: is honoured for an hour, and a longer pause already in the file counts as an hour.
    pause_max_s: float = HOUR_S


def _bulk_guarded(now: float, margin_s: float) -> bool:
    """Whether a bulk request sent at `now` would still count when the planner's burst runs.

    The burst starts when a slot's revisions are all published (slot + 30 s) and lasts up to
    BURST_LENGTH_S; a request counts for the vendor's minute window for 60 s after it is sent.
    """
    into_slot = now % REVISION_GRID_S
    burst_start = PUBLICATION_DELAY_S
    burst_end = PUBLICATION_DELAY_S + BURST_LENGTH_S
    guard_start = burst_start - MINUTE_S - margin_s
    # guard_start is negative: the guard begins in the previous slot.
    return into_slot >= REVISION_GRID_S + guard_start or into_slot <= burst_end


class BudgetCancelled(Exception):
    """`acquire` gave up waiting: its caller is stopping (Ctrl-C, a run terminated)."""


class RequestBudget:
    """A sliding-window request budget persisted in SQLite at `path`."""

    def __init__(
        self,
        path: str | Path,
        limits: BudgetLimits | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.path = Path(path)
        self.limits = limits or BudgetLimits()
        self._clock = clock
        self._sleep = sleep
        self._ready = False
        self._ready_lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        conn.execute("PRAGMA busy_timeout = 60000")
        # WAL with NORMAL sync: a commit is durable against a process crash, which is what
        # sharing needs; a power cut may forget the last requests, which the margin covers.
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    def _ensure(self) -> None:
        with self._ready_lock:
            if self._ready:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with closing(self._connect()) as conn:
                conn.execute("PRAGMA journal_mode = WAL")
                with transaction(conn, "BEGIN IMMEDIATE"):
                    conn.execute(
                        "CREATE TABLE IF NOT EXISTS requests (ts REAL NOT NULL, priority TEXT)"
                    )
                    conn.execute("CREATE INDEX IF NOT EXISTS requests_ts ON requests (ts)")
                    conn.execute(
                        "CREATE TABLE IF NOT EXISTS pause (id INTEGER PRIMARY KEY CHECK (id = 1), until REAL)"
                    )
                    conn.execute(
                        "CREATE TABLE IF NOT EXISTS bulk_hold "
                        "(id INTEGER PRIMARY KEY CHECK (id = 1), until REAL)"
                    )
            self._ready = True

    def acquire(self, priority: str = BULK, cancel: threading.Event | None = None) -> float:
        """Take one request slot, waiting as long as needed. Returns the seconds waited.
        Once `cancel` is set (its caller is stopping) it stops waiting at once and raises
        `BudgetCancelled` without taking a slot."""
        self._ensure()
        waited = 0.0
        while True:
            if cancel is not None and cancel.is_set():
                raise BudgetCancelled("the caller stopped waiting for the budget")
            wait = self._try_acquire(priority)
            if wait <= 0:
                return waited
            # Small jitter so that threads and processes waiting on the same slot do not
            # all wake and contend for the write lock at once.
            pause = min(wait, 5.0) + random.uniform(0.0, 0.05)
            if cancel is None:
                self._sleep(pause)
            else:
                cancel.wait(pause)
            waited += pause

    def _try_acquire(self, priority: str) -> float:
        """Record a request and return 0, or return how long to wait before trying again."""
        limits = self.limits
        with closing(self._connect()) as conn, transaction(conn, "BEGIN IMMEDIATE"):
            now = self._clock()
            minute_from = now - limits.minute_s - limits.margin_s
            hour_from = now - limits.hour_s - limits.margin_s
            conn.execute("DELETE FROM requests WHERE ts <= ?", (now - limits.keep_s,))
            row = conn.execute("SELECT until FROM pause WHERE id = 1").fetchone()
            if row and row[0] and row[0] > now + limits.pause_max_s:
                # Stored past the vendor's window (by an older version): cut back to it.
                conn.execute("UPDATE pause SET until = ?", (now + limits.pause_max_s,))
                return limits.pause_max_s
            if row and row[0] and row[0] > now:
                return row[0] - now

            per_minute = limits.per_minute if priority == FRESH else self.bulk_per_minute(now)
            per_hour = limits.per_hour
            waits = []
            if priority != FRESH:
                waits.append(self._held_by_planner(conn, now))
            if priority != FRESH and limits.reserve > 0:
                waits.append(self._hold_for_bursts(conn, now))
            waits = [wait for wait in waits if wait > 0]
            for since, limit, span in (
                (minute_from, per_minute, limits.minute_s),
                (hour_from, per_hour, limits.hour_s),
            ):
                used = conn.execute(
                    "SELECT count(*) FROM requests WHERE ts > ?", (since,)
                ).fetchone()[0]
                if used < limit:
                    continue
                if limit <= 0:
                    # Bulk is held off the minute window around the burst: retry soon.
                    waits.append(1.0)
                    continue
                # The request that must age out before `used` drops below `limit`.
                oldest = conn.execute(
                    "SELECT ts FROM requests WHERE ts > ? ORDER BY ts LIMIT 1 OFFSET ?",
                    (since, used - limit),
                ).fetchone()[0]
                waits.append(oldest + span + limits.margin_s - now + 0.001)
            if waits:
                return max(waits)
            conn.execute("INSERT INTO requests (ts, priority) VALUES (?, ?)", (now, priority))
            return 0.0

    def bulk_per_minute(self, now: float) -> int:
        """How many requests of the minute window bulk may fill at `now` (it counts them all,
        fresh ones too). Around a burst it leaves `reserve` free; between the bursts half, so
        that a planner batch that comes then (a start, a restart) begins at once instead of
        waiting for a backfill's minute to age out. Bulk's hour share is capped by the bursts'
        room anyway (~12 a minute on average): no backfill is slower over an hour."""
        limits = self.limits
        if limits.reserve <= 0:
            return limits.per_minute
        if _bulk_guarded(now, limits.margin_s):
            return max(0, limits.per_minute - limits.reserve)
        return limits.per_minute // 2

    def bulk_held_for(self, now: float) -> float:
        """How long from `now` bulk may send nothing at all: the planner holds it off
        (`hold_bulk`), or the coming bursts need what is left of the hour window; 0 when it
        may send."""
        self._ensure()
        with closing(self._connect()) as conn:
            bursts = self._hold_for_bursts(conn, now) if self.limits.reserve > 0 else 0.0
            return max(bursts, self._held_by_planner(conn, now))

    def hold_bulk(self, until: float) -> None:
        """Keep bulk out until `until` (epoch seconds): the planner has open positions' prices
        to fetch, which come before any backfill. Renewed by each planner tick that still has
        some, so it lapses by itself within a tick or two of the last one."""
        self._ensure()
        with closing(self._connect()) as conn, transaction(conn, "BEGIN IMMEDIATE"):
            conn.execute(
                "INSERT INTO bulk_hold (id, until) VALUES (1, ?) "
                "ON CONFLICT (id) DO UPDATE SET until = excluded.until",
                (until,),
            )

    @staticmethod
    def _held_by_planner(conn: sqlite3.Connection, now: float) -> float:
        row = conn.execute("SELECT until FROM bulk_hold WHERE id = 1").fetchone()
        return max(0.0, row[0] - now) if row and row[0] else 0.0

    def _hold_for_bursts(self, conn: sqlite3.Connection, now: float) -> float:
        """0 if a bulk request now leaves every coming planner burst its room in the hour
        window, else how long to wait (until the next burst is over, when this changes).

        A request sent now counts in the vendor's hour window at each burst of the next hour;
        the k-th coming burst needs room for itself and the k-1 bursts before it.
        """
        limits = self.limits
        slot = now - now % REVISION_GRID_S
        burst_end = slot + PUBLICATION_DELAY_S + BURST_LENGTH_S
        if now > burst_end:
            burst_end += REVISION_GRID_S
        first = burst_end
        needed = 0
        while burst_end < now + limits.hour_s + limits.margin_s:
            needed += min(
                limits.reserve, burst_size(burst_end - PUBLICATION_DELAY_S - BURST_LENGTH_S)
            )
            used = conn.execute(
                "SELECT count(*) FROM requests WHERE ts > ?",
                (burst_end - limits.hour_s - limits.margin_s,),
            ).fetchone()[0]
            if used + needed >= limits.per_hour:
                return first - now + 0.001
            burst_end += REVISION_GRID_S
        return 0.0

    def pause_until(self, until: float) -> None:
        """Hold every user of the budget until `until` (epoch seconds): the vendor said 429.
        Never later than `pause_max_s` from now, and a pause already stored past that is cut
        back to it, so no `Retry-After` outlives the vendor's window."""
        self._ensure()
        with closing(self._connect()) as conn, transaction(conn, "BEGIN IMMEDIATE"):
            latest = self._clock() + self.limits.pause_max_s
            conn.execute(
                "INSERT INTO pause (id, until) VALUES (1, ?) "
                "ON CONFLICT (id) DO UPDATE SET until = min(max(until, excluded.until), ?)",
                (min(until, latest), latest),
            )

    def paused_until(self) -> float | None:
        """The stored end of the vendor's pause (epoch seconds), if any."""
        self._ensure()
        with closing(self._connect()) as conn:
            row = conn.execute("SELECT until FROM pause WHERE id = 1").fetchone()
        return row[0] if row else None

    def sent_between(self, start: float, end: float, priority: str | None = None) -> list[float]:
        """Recorded request times in [start, end]: what the vendor has seen from us (of one
        priority if given)."""
        self._ensure()
        with closing(self._connect()) as conn:
            rows = conn.execute(
                "SELECT ts FROM requests WHERE ts >= ? AND ts <= ? "
                "AND (? IS NULL OR priority = ?) ORDER BY ts",
                (start, end, priority, priority),
            ).fetchall()
        return [row[0] for row in rows]


def burst_size(slot: float) -> int:
    """Requests of the planner's burst at grid instant `slot`: the periods open then, every
    product of every market (one account for all of them)."""
    now = datetime.fromtimestamp(slot, UTC)
    count = 0
    for market in MARKETS.values():
        for minutes in market.products_minutes:
            found = open_periods(market, now, minutes)
            count += 0 if isinstance(found, Invalid) else len(found)
    return count
