"""The vendor's price and revision maths, without any server."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from energy_assets.markets import day_periods, hour_period
from energy_assets.playground.pricing import (
    MAX_PUBLICATION_DELAY_S,
    VENDOR_PERIOD_S,
    publication_delay,
    published_price,
    revision_value,
)

DAY = date(2026, 3, 14)


def hour(h: int, day: date = DAY):
    """The DE hour `h` of `day`, Berlin time (08-09 on 14 March is 07:00-08:00 UTC)."""
    return hour_period("DE", day, f"{h:02d}-{h + 1:02d}")


def ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def test_value_is_fixed_by_seed_day_hour_and_revision():
    assert revision_value(1, hour(8), 5) == revision_value(1, hour(8), 5)
    assert revision_value(1, hour(8), 5) != revision_value(2, hour(8), 5)
    others = {revision_value(1, hour(h), 5) for h in range(24)}
    assert len(others) > 20


def test_consecutive_revisions_always_differ():
    for h in range(24):
        values = [revision_value(3, hour(h), k) for k in range(2000, 2300)]
        assert all(a != b for a, b in zip(values, values[1:], strict=False))


def test_a_year_of_prices_is_plausible_and_sometimes_not_positive():
    start = date(2025, 1, 1)
    values = [
        revision_value(0, period, 7)
        for d in range(365)
        for period in day_periods("DE", start + timedelta(days=d), 60)
    ]
    assert 30 < sum(values) / len(values) < 120
    assert min(values) <= 0 < max(values) < 300
    assert all(round(v, 2) == v for v in values)


def test_without_the_grid_a_revision_every_period_published_at_once():
    now = ts("2026-03-13T10:07:31.250+00:00")
    shown = published_price(0, hour(8), now, every=60.0)
    assert shown.last_update == datetime(2026, 3, 13, 10, 7, tzinfo=UTC)
    assert shown.value == revision_value(0, hour(8), shown.revision)
    later = published_price(0, hour(8), now + 60, every=60.0)
    assert later.revision == shown.revision + 1
    assert later.value != shown.value and later.last_update > shown.last_update
    assert not shown.final


def test_after_gate_closure_the_price_is_final():
    gate = hour(8).gate_closure.timestamp()
    before = published_price(0, hour(8), gate - 1, every=600.0)
    for after in (gate, gate + 1, gate + 86_400 * 400):
        shown = published_price(0, hour(8), after, every=600.0)
        assert shown == published_price(0, hour(8), gate + 5, every=600.0)
        assert shown.final
        assert shown.last_update < hour(8).gate_closure
    assert before.revision == shown.revision and not before.final
    # Berlin's 08-09 starts at 07:00 UTC and closes 5 minutes before: the last revision 06:50.
    assert shown.last_update == datetime(2026, 3, 14, 6, 50, tzinfo=UTC)


def test_vendor_grid_publishes_each_revision_zero_to_thirty_seconds_late():
    gate = hour(20).gate_closure.timestamp()
    delays = set()
    for step in range(0, 6 * 3600, 7):
        now = gate - 6 * 3600 + step
        shown = published_price(5, hour(20), now, vendor_grid=True)
        published = shown.last_update.timestamp()
        grid = shown.revision * VENDOR_PERIOD_S
        assert 0 <= published - grid <= MAX_PUBLICATION_DELAY_S
        assert published <= now
        assert shown.revision in (now // VENDOR_PERIOD_S, now // VENDOR_PERIOD_S - 1)
        delays.add(published - grid)
    assert len(delays) > 10  # no pattern: the delay varies from slot to slot


def test_vendor_grid_shows_the_previous_revision_until_the_new_one_is_published():
    grid = ts("2026-03-14T09:10:00+00:00")
    revision = int(grid // VENDOR_PERIOD_S)
    # find an hour whose revision at this grid point is published late
    h = next(h for h in range(12, 24) if publication_delay(0, hour(h), revision) > 1)
    delay = publication_delay(0, hour(h), revision)
    waiting = published_price(0, hour(h), grid + delay - 0.5, vendor_grid=True)
    out = published_price(0, hour(h), grid + delay, vendor_grid=True)
    assert waiting.revision == revision - 1
    assert out.revision == revision
    assert out.last_update == datetime.fromtimestamp(grid + delay, UTC)
    assert publication_delay(0, hour(h), revision) == delay  # deterministic


def test_every_product_has_its_own_price_in_its_markets_unit_until_its_gate_closure():
    quarter = day_periods("DE", DAY, 15)[33]  # 08:15-08:30 Berlin
    half = day_periods("GB", DAY, 30)[17]  # 08:30-09:00 London
    assert revision_value(0, quarter, 9) != revision_value(0, hour(8), 9)
    shown = published_price(0, half, half.delivery_start.timestamp())
    assert shown.final and shown.unit == "gbp/mwh"
    # London closes an hour before delivery: the last revision is the one before 07:30 UTC.
    assert shown.last_update == datetime(2026, 3, 14, 7, 20, tzinfo=UTC)
    assert published_price(0, quarter, 0).unit == "euro/mwh"
