"""The price store keeps every revision and, per period, the latest as the current row."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import duckdb
from hypothesis import given, settings
from hypothesis import strategies as st

from energy_assets.markets import hour_period
from energy_assets.prices.period_prices import PeriodPrice
from energy_assets.prices.store import current_prices, store_prices

PERIODS = [hour_period("DE", "2026-12-05", label) for label in ("10-11", "11-12")]
NOW = datetime(2026, 12, 5, 8, tzinfo=UTC)

revision = st.builds(
    lambda period, minutes_ago, value, fetched_later: PeriodPrice(
        PERIODS[period],
        value,
        "euro/mwh",
        NOW - timedelta(minutes=minutes_ago),
        NOW + timedelta(seconds=fetched_later),
    ),
    st.integers(0, 1),
    st.integers(0, 5).map(lambda n: 10 * n),
    st.integers(-500, 500).map(float),
    st.integers(0, 3600),
)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(revision, min_size=1, max_size=6), min_size=1, max_size=3))
def test_the_current_price_is_the_latest_revision_however_the_answers_are_batched(batches):
    """A run may hold more than one answer of a period, and runs end in any order: the current
    row is the latest revision (`last_update`) we were answered, never an older one."""
    conn = duckdb.connect()
    for batch in batches:
        store_prices(conn, batch)
    answers = [price for batch in batches for price in batch]
    latest = {}
    for period in PERIODS:
        mine = [p for p in answers if p.period == period]
        if mine:
            newest = max(p.last_update for p in mine)
            latest[period.delivery_start] = {
                (p.value, p.last_update) for p in mine if p.last_update == newest
            }
    current = {
        row["delivery_start"]: (row["value"], row["last_update"])
        for row in current_prices(conn).iter_rows(named=True)
    }
    assert current.keys() == latest.keys()
    assert all(current[start] in latest[start] for start in current)
    # The history: each distinct revision once, with the first time it was fetched.
    first = {}
    for p in answers:
        key = (p.period.delivery_start, p.last_update, p.value)
        first[key] = min(first.get(key, p.fetched_at), p.fetched_at)
    history = conn.execute(
        "SELECT delivery_start, last_update, value, fetched_at FROM energy.reference_price_revisions"
    ).fetchall()
    assert {(s, u, v): f for s, u, v, f in history} == first and len(history) == len(first)
