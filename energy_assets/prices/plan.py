"""Which reference prices to fetch next: the vendor's budget spent where the desk's money is.

A pure function of (open periods, open positions, traded periods, held revisions, now,
budget left). The vendor revises every open period on the wall-clock 10-minute grid and
publishes each revision 0-30 s late, up to the period's gate closure; one request is one
period; 50 a minute and 1,000 an hour across every market. Far more periods are open than
that can refresh every 10 minutes, so the plan orders them:

1. periods where a trader holds an open position and gate closure is at most 30 minutes
   away, nearest gate closure first: the last revisions before the position can no longer
   be closed, never more than one behind;
2. the other periods with an open position, by open MW x how far behind our price is x
   urgency (1 + 30 min / time to gate closure): a position is re-fetched more often the
   bigger it is and the nearer its gate closure, and a far one still moves up as its price
   ages, so none is starved;
3. periods with trades but no open position, nearest gate closure first;
4. the rest: never fetched first, then the oldest price, then nearest gate closure.

A period is fetched only when the vendor can have a revision we do not hold (below), never
after its gate closure, and the plan is never longer than the budget left in either window.
A price we hold is refreshed only from 31 s to 5 minutes into a revision slot (`waits`): not
while the vendor may still be publishing the slot's revision, and not so late that the request
would hold back the same slot an hour on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

#: The vendor revises every open period on this wall-clock grid (seconds) ...
REVISION_GRID_S = 600
#: ... and publishes each revision up to this many seconds late.
PUBLICATION_DELAY_S = 30
#: A revision made at grid instant `s` is certainly out at `s + SETTLED_S`.
SETTLED_S = PUBLICATION_DELAY_S + 1
#: A slot's share of the hour (166 requests at 50 a minute) is spent in its first ~4 minutes;
#: a price we hold is refreshed only until this many seconds into the slot (`waits`).
REFRESH_UNTIL_S = 300
#: Positions this close to gate closure are re-fetched at every revision, first.
CLOSING_S = 1800.0
#: Under a minute to gate closure counts as a minute.
MIN_LEAD_S = 60.0
#: How far behind a price never fetched counts: a day, more than any held one can be.
NEVER_FETCHED_BEHIND_S = 86400.0

CLOSING = "closing"
POSITION = "position"
TRADED = "traded"
REST = "rest"

#: (market, delivery_start, delivery_end): one delivery period, whatever object carries it.
PeriodKey = tuple[str, datetime, datetime]


def period_key(period: Any) -> PeriodKey:
    """The key of anything with `market`, `delivery_start` and `delivery_end` (UTC instants)."""
    return (
        period.market,
        period.delivery_start.astimezone(UTC),
        period.delivery_end.astimezone(UTC),
    )


def grid_slot(moment: datetime) -> datetime:
    """The start of the vendor's 10-minute revision slot that contains `moment`."""
    ts = moment.astimezone(UTC).timestamp()
    return datetime.fromtimestamp(ts - ts % REVISION_GRID_S, tz=UTC)


def last_revision_slot(gate_closure: datetime) -> datetime:
    """The grid instant of a period's final revision: the last one strictly before its gate
    closure (after gate closure the price is final)."""
    ts = gate_closure.timestamp()
    return datetime.fromtimestamp((math.ceil(ts / REVISION_GRID_S) - 1) * REVISION_GRID_S, tz=UTC)


def settled_revision_slot(now: datetime, gate_closure: datetime) -> datetime:
    """The grid instant of the newest revision of a period that is certainly published at
    `now`. Between a grid instant and 31 s after it the slot's revision may or may not be
    out yet: a fetch then can return the previous revision and cost a second request, so the
    previous slot counts until the publication delay has passed."""
    settled = grid_slot(now - timedelta(seconds=SETTLED_S))
    return min(settled, last_revision_slot(gate_closure))


def holds_latest(held: datetime | None, now: datetime, gate_closure: datetime) -> bool:
    """Whether the revision we hold (its `last_update`, the vendor's publication instant,
    which lies 0-30 s after the revision's grid instant) is the newest one certainly out."""
    return held is not None and held >= settled_revision_slot(now, gate_closure)


def waits(now: datetime, gate_closure: datetime) -> bool:
    """Whether a period whose price we hold waits rather than be fetched at `now`: such a
    price is refreshed only from 31 s to 5 minutes into a revision slot (`REFRESH_UNTIL_S`),
    unless its gate closes before the next such moment.

    - In the first 31 s the vendor may still be publishing the slot's revision: a fetch then
      most likely brings the previous one, stale within seconds, and spends the request the
      new one needs.
    - Past the first 5 minutes a fetch brings a revision that is stale at the next slot, and
      its request stays in the vendor's sliding hour until the same moment an hour on, where
      it takes the place of a request of that slot's own refresh, which then runs late in
      turn: one late slot would repeat every hour.
    """
    slot = grid_slot(now)
    into = (now - slot).total_seconds()
    if SETTLED_S <= into < REFRESH_UNTIL_S:
        return False
    resume = slot + timedelta(
        seconds=(REVISION_GRID_S if into >= REFRESH_UNTIL_S else 0) + SETTLED_S
    )
    return resume < gate_closure


def behind_s(held: datetime | None, now: datetime, gate_closure: datetime) -> float:
    """How long the vendor has had a revision newer than ours (by its grid instant), as far
    as the grid tells; 0 when we hold the newest one certainly out."""
    if held is None:
        return NEVER_FETCHED_BEHIND_S
    if holds_latest(held, now, gate_closure):
        return 0.0
    newer = grid_slot(held) + timedelta(seconds=REVISION_GRID_S)
    return max(0.0, (now - newer).total_seconds())


def stale_after(last_update: datetime, gate_closure: datetime) -> datetime | None:
    """When the price revised at `last_update` goes stale: the next revision is certainly
    published (its grid instant + 31 s); None if that revision is never made (the period's
    gate closes first: the price is final)."""
    following = grid_slot(last_update) + timedelta(seconds=REVISION_GRID_S)
    if following > last_revision_slot(gate_closure):
        return None
    return following + timedelta(seconds=SETTLED_S)


@dataclass(frozen=True)
class BudgetLeft:
    """Requests the vendor still allows now: in the sliding minute and hour windows."""

    minute: int
    hour: int

    @property
    def now(self) -> int:
        return max(0, min(self.minute, self.hour))


@dataclass(frozen=True)
class PlannedFetch:
    """One request of the plan, and why it is there (a run's metadata shows the reasons)."""

    period: Any
    tier: str
    open_mw: float
    gate_closure: datetime
    held: datetime | None

    def reason(self, now: datetime) -> str:
        lead = (self.gate_closure - now).total_seconds() / 60
        held = "never fetched" if self.held is None else f"held {self.held:%H:%M:%S}Z"
        what = f"{self.open_mw:g} MW open" if self.tier in (CLOSING, POSITION) else self.tier
        return f"{what}, gate closure in {lead:.0f} min, {held}"


def plan_fetches(
    open_periods: Iterable[Any],
    *,
    now: datetime,
    gate_closure: Callable[[Any], datetime],
    open_mw: Mapping[PeriodKey, float],
    traded: Collection[PeriodKey],
    held: Mapping[PeriodKey, datetime],
    budget: BudgetLeft,
) -> list[PlannedFetch]:
    """The fetch list for `now`, most valuable first, at most `budget.now` long.

    `open_mw`: |open MW| per period (summed over traders); `traded`: periods with any deal;
    `held`: the `last_update` of the revision we hold per period; `gate_closure(period)`: when
    trading for it closes. Periods past gate closure, and periods whose newest published
    revision we hold, are left out; a period listed twice is planned once.
    """
    limit = budget.now
    if limit <= 0:
        return []
    candidates: dict[PeriodKey, PlannedFetch] = {}
    for period in open_periods:
        key = period_key(period)
        closes = gate_closure(period)
        if key in candidates or closes <= now:
            continue
        have = held.get(key)
        if holds_latest(have, now, closes) or (have is not None and waits(now, closes)):
            continue
        mw = abs(open_mw.get(key, 0.0))
        mw = mw if math.isfinite(mw) else 0.0
        if mw > 0:
            tier = CLOSING if (closes - now).total_seconds() <= CLOSING_S else POSITION
        else:
            tier = TRADED if key in traded else REST
        candidates[key] = PlannedFetch(period, tier, mw, closes, have)

    def lead_s(fetch: PlannedFetch) -> float:
        return (fetch.gate_closure - now).total_seconds()

    def order(fetch: PlannedFetch) -> tuple:
        closes = (lead_s(fetch), period_key(fetch.period))
        if fetch.tier == CLOSING:
            return (0, 0.0, *closes)
        if fetch.tier == POSITION:
            urgency = 1 + CLOSING_S / max(lead_s(fetch), MIN_LEAD_S)
            value = fetch.open_mw * behind_s(fetch.held, now, fetch.gate_closure) * urgency
            return (1, -value, *closes)
        if fetch.tier == TRADED:
            return (2, 0.0, *closes)
        age = math.inf if fetch.held is None else (now - fetch.held).total_seconds()
        return (3, -age, *closes)

    return sorted(candidates.values(), key=order)[:limit]


#: A batch the minute window alone cuts below this, half the vendor's minute, waits for the
#: window to free (the sensor looks again within 15 s), unless a period in it is about to
#: close: each batch is a run. Requests sent in two clumps free in two: below a smaller bound
#: the split repeated every minute (the demo's catch-up went 16 then 34, two runs a minute).
MIN_BATCH = 25


def worth_a_run(plan: list[PlannedFetch], budget: BudgetLeft) -> bool:
    """Whether to fetch `plan` now: yes, unless only the minute window made it small and none
    of its periods is closing (`CLOSING`): a few seconds later the window holds a bigger batch
    and one run fetches what would have been two."""
    cut_by_minute = len(plan) == budget.minute < min(MIN_BATCH, budget.hour)
    return bool(plan) and (not cut_by_minute or any(f.tier == CLOSING for f in plan))
