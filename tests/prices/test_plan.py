"""The price planner: which periods the vendor's budget is spent on, at one instant."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from energy_assets.prices.plan import (
    CLOSING,
    POSITION,
    REST,
    TRADED,
    BudgetLeft,
    holds_latest,
    last_revision_slot,
    period_key,
    plan_fetches,
    settled_revision_slot,
    stale_after,
    waits,
    worth_a_run,
)

LEAD = {"DE": timedelta(minutes=5), "GB": timedelta(minutes=60)}
NOW = datetime(2026, 10, 25, 9, 3, 0, tzinfo=UTC)
PLENTY = BudgetLeft(minute=50, hour=1000)


@dataclass(frozen=True)
class Period:
    market: str
    delivery_start: datetime
    delivery_end: datetime


def gate_closure(period: Period) -> datetime:
    return period.delivery_start - LEAD[period.market]


def quarter(start: datetime, market: str = "DE") -> Period:
    return Period(market, start, start + timedelta(minutes=15))


def at(hh: int, mm: int = 0, ss: int = 0) -> datetime:
    return NOW.replace(hour=hh, minute=mm, second=ss)


def plan(periods, now=NOW, open_mw=None, traded=(), held=None, budget=PLENTY):
    return plan_fetches(
        periods,
        now=now,
        gate_closure=gate_closure,
        open_mw={period_key(p): mw for p, mw in (open_mw or {}).items()},
        traded={period_key(p) for p in traded},
        held={period_key(p): stamp for p, stamp in (held or {}).items()},
        budget=budget,
    )


def test_a_small_position_near_gate_closure_beats_a_big_one_hours_away():
    near, far = quarter(at(9, 15)), quarter(at(13, 0))  # closes in 7 min / 3 h 52 min
    fetches = plan([far, near], open_mw={near: 2.0, far: 50.0})
    assert [f.period for f in fetches] == [near, far]
    assert fetches[0].reason(NOW) == "2 MW open, gate closure in 7 min, never fetched"


def test_beyond_half_an_hour_nearer_and_bigger_positions_and_older_prices_go_first():
    in_1h, in_4h = quarter(at(10, 5)), quarter(at(13, 5))  # close in 57 min / 3 h 57 min
    stale = {in_1h: at(8, 50, 5), in_4h: at(8, 50, 5)}  # both one revision behind
    fetches = plan([in_4h, in_1h], open_mw={in_1h: 10.0, in_4h: 12.0}, held=stale)
    assert [f.period for f in fetches] == [in_1h, in_4h]
    # Three revisions behind, the far one's price is worth refreshing first.
    staler = {in_1h: at(8, 50, 5), in_4h: at(8, 30, 5)}
    fetches = plan([in_4h, in_1h], open_mw={in_1h: 10.0, in_4h: 12.0}, held=staler)
    assert [f.period for f in fetches] == [in_4h, in_1h]
    # A bigger position, the same lead and age: first.
    other = quarter(at(10, 20))
    fetches = plan([in_1h, other], open_mw={in_1h: 1.0, other: 30.0}, held=stale)
    assert fetches[0].period == other


def test_positions_then_traded_periods_then_the_rest():
    position, traded, rest = quarter(at(20)), quarter(at(9, 30)), quarter(at(9, 15))
    closing = quarter(at(9, 20))  # gate closure in 12 min
    fetches = plan(
        [rest, traded, position, closing],
        open_mw={position: 0.1, closing: 0.1},
        traded=[traded, position],
    )
    assert [(f.period, f.tier) for f in fetches] == [
        (closing, CLOSING),
        (position, POSITION),
        (traded, TRADED),
        (rest, REST),
    ]


def test_the_rest_goes_oldest_price_first():
    fresh, old, never = quarter(at(10)), quarter(at(11)), quarter(at(12))
    held = {fresh: at(8, 50), old: at(7, 0)}
    assert [f.period for f in plan([fresh, old, never], held=held)] == [never, old, fresh]


def test_closed_periods_are_never_fetched():
    # DE closes 5 minutes before delivery: 09:05 closed at 09:00; GB closes an hour before.
    closed_de, closed_gb = quarter(at(9, 5)), Period("GB", at(10), at(10, 30))
    open_de = quarter(at(9, 15))
    fetches = plan([closed_de, closed_gb, open_de], open_mw={closed_de: 9.0, closed_gb: 9.0})
    assert [f.period for f in fetches] == [open_de]


def test_a_held_revision_is_not_fetched_again():
    p = quarter(at(12))
    # At 09:03 the 09:00 revision is out (published 09:00:00-09:00:30): held -> skipped.
    assert plan([p], held={p: at(9, 0).replace(second=17)}, open_mw={p: 5.0}) == []
    # Holding 08:50's: the 09:00 revision is newer and out -> fetched.
    assert len(plan([p], held={p: at(8, 50).replace(second=3)}, open_mw={p: 5.0})) == 1


def test_within_the_publication_delay_the_previous_revision_counts_as_latest():
    p = quarter(at(12))
    just_after_slot = at(9, 0).replace(second=20)  # 09:00's revision may not be out yet
    held_previous = {p: at(8, 50).replace(second=29)}
    assert plan([p], now=just_after_slot, held=held_previous, open_mw={p: 5.0}) == []
    settled = at(9, 0).replace(second=31)
    assert len(plan([p], now=settled, held=held_previous, open_mw={p: 5.0})) == 1


def test_a_held_price_is_refreshed_from_31_s_to_5_minutes_into_a_slot():
    p = quarter(at(12))
    two_behind = {p: at(8, 40, 12)}  # 08:50's revision was missed too
    publishing = at(9, 0, 10)  # 09:00's revision may not be out yet
    # A fetch now would most likely bring 08:50's, stale within seconds: it waits for 09:00's.
    assert plan([p], now=publishing, held=two_behind, open_mw={p: 5.0}) == []
    assert len(plan([p], now=at(9, 0, 31), held=two_behind, open_mw={p: 5.0})) == 1
    assert len(plan([p], now=at(9, 4, 59), held=two_behind, open_mw={p: 5.0})) == 1
    # Late in the slot it waits for the next one, whose share the request would take an hour on.
    assert plan([p], now=at(9, 5, 0), held=two_behind, open_mw={p: 5.0}) == []
    assert plan([p], now=at(9, 9, 59), held=two_behind, open_mw={p: 5.0}) == []
    # A period never priced is fetched at once: any price beats none on the desk.
    assert len(plan([p], now=publishing, open_mw={p: 5.0})) == 1
    assert len(plan([p], now=at(9, 7), open_mw={p: 5.0})) == 1
    # So is one whose gate closes before the next moment it could be refreshed.
    closes_at_20s = quarter(at(9, 5, 20))  # gate closure 09:00:20
    assert waits(publishing, at(9, 0, 32)) and not waits(publishing, gate_closure(closes_at_20s))
    held = {closes_at_20s: at(8, 40, 12)}
    assert len(plan([closes_at_20s], now=publishing, held=held, open_mw={closes_at_20s: 5.0})) == 1
    closes_at_0931 = quarter(at(9, 15))  # gate closure 09:10, before 09:10:31
    held = {closes_at_0931: at(8, 50, 12)}
    late = at(9, 7)
    assert len(plan([closes_at_0931], now=late, held=held, open_mw={closes_at_0931: 5.0})) == 1


def test_no_revision_after_the_final_one_is_waited_for():
    p = quarter(at(9, 15))  # closes 09:10; its last revision is made at 09:00
    assert last_revision_slot(gate_closure(p)) == at(9, 0)
    now = at(9, 7)
    assert settled_revision_slot(now, gate_closure(p)) == at(9, 0)
    assert holds_latest(at(9, 0).replace(second=30), now, gate_closure(p))
    # A gate closure on the grid: the revision at that instant is never made.
    q = quarter(at(9, 20))  # closes 09:15 -> last revision 09:10
    assert last_revision_slot(gate_closure(q)) == at(9, 10)
    r = quarter(at(9, 25))  # closes 09:20 -> last revision 09:10, not 09:20
    assert last_revision_slot(gate_closure(r)) == at(9, 10)
    # What the desk marks: stale once the next revision is certainly out, never when final.
    assert stale_after(at(9, 0, 12), gate_closure(r)) == at(9, 10, 31)
    assert stale_after(at(9, 10, 12), gate_closure(r)) is None


def test_the_budget_is_never_exceeded():
    periods = [quarter(at(10) + timedelta(minutes=15 * n)) for n in range(40)]
    assert len(plan(periods, budget=BudgetLeft(minute=7, hour=1000))) == 7
    assert len(plan(periods, budget=BudgetLeft(minute=50, hour=3))) == 3
    assert plan(periods, budget=BudgetLeft(minute=0, hour=1000)) == []
    assert plan(periods, budget=BudgetLeft(minute=-4, hour=-1)) == []


def test_a_period_listed_twice_is_planned_once():
    p = quarter(at(12))
    assert len(plan([p, p, Period("DE", p.delivery_start, p.delivery_end)])) == 1


# --- properties over random books --------------------------------------------------------

_STARTS = st.integers(min_value=-8, max_value=200).map(
    lambda n: NOW.replace(minute=0) + timedelta(minutes=15 * n)
)
_PERIODS = st.builds(
    lambda market, start, length: Period(market, start, start + timedelta(minutes=length)),
    st.sampled_from(["DE", "GB"]),
    _STARTS,
    st.sampled_from([15, 30, 60]),
)
_NOWS = st.integers(min_value=0, max_value=3 * 3600).map(lambda s: NOW + timedelta(seconds=s))
_MW = st.floats(allow_nan=True, allow_infinity=True, width=32)


@settings(max_examples=300, deadline=None)
@given(
    periods=st.lists(_PERIODS, max_size=60),
    now=_NOWS,
    data=st.data(),
    minute=st.integers(-5, 60),
    hour=st.integers(-5, 1100),
)
def test_never_over_budget_never_closed_never_held(periods, now, data, minute, hour):
    open_mw = {p: data.draw(_MW) for p in periods if data.draw(st.booleans())}
    traded = [p for p in periods if data.draw(st.booleans())]
    held = {
        p: now - timedelta(seconds=data.draw(st.integers(0, 7200)))
        for p in periods
        if data.draw(st.booleans())
    }
    fetches = plan(periods, now, open_mw, traded, held, BudgetLeft(minute, hour))
    assert len(fetches) <= max(0, min(minute, hour))
    keys = [period_key(f.period) for f in fetches]
    assert len(keys) == len(set(keys))
    for fetch in fetches:
        assert gate_closure(fetch.period) > now
        assert not holds_latest(held.get(fetch.period), now, gate_closure(fetch.period))
        if fetch.period in held:
            assert not waits(now, gate_closure(fetch.period))
    # What is left out for want of budget is never worth more than what is in.
    tiers = [{CLOSING: 0, POSITION: 1, TRADED: 2, REST: 3}[f.tier] for f in fetches]
    assert tiers == sorted(tiers)


def test_a_batch_the_minute_window_cut_small_waits_unless_a_period_is_closing():
    far = [quarter(at(12, 15 * k)) for k in range(4)]  # positions hours from gate closure
    near = quarter(at(9, 15))  # closes in 7 min
    squeezed = BudgetLeft(minute=4, hour=100)
    # Four positions hours away: a few seconds later the window holds a bigger batch.
    assert not worth_a_run(plan(far, open_mw=dict.fromkeys(far, 5.0), budget=squeezed), squeezed)
    # Nor a third of the minute, freed first of two clumps: the rest frees seconds later.
    third = BudgetLeft(minute=16, hour=100)
    many = [quarter(at(12) + timedelta(minutes=15 * k)) for k in range(40)]
    assert not worth_a_run(plan(many, open_mw=dict.fromkeys(many, 5.0), budget=third), third)
    # One about to close goes now, however small the batch.
    wanted = [near, *far]
    assert worth_a_run(plan(wanted, open_mw=dict.fromkeys(wanted, 5.0), budget=squeezed), squeezed)
    # Small because little is wanted, or because the slot's share is nearly spent: it goes.
    assert worth_a_run(plan(far[:2], open_mw=dict.fromkeys(far, 5.0)), PLENTY)
    slot_spent = BudgetLeft(minute=4, hour=4)
    assert worth_a_run(plan(far, open_mw=dict.fromkeys(far, 5.0), budget=slot_spent), slot_spent)
    assert not worth_a_run([], PLENTY)
