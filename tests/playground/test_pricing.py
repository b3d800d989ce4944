"""The vendor's price and revision maths, without any server."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from energy_assets.delivery import delivery_start
from energy_assets.playground.pricing import (
    MAX_PUBLICATION_DELAY_S,
    VENDOR_PERIOD_S,
    next_publication,
    publication_delay,
    published_price,
    revision_value,
)

DAY = date(2026, 3, 14)


def ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def test_value_is_fixed_by_seed_day_hour_and_revision():
    assert revision_value(1, DAY, 8, 5) == revision_value(1, DAY, 8, 5)
    assert revision_value(1, DAY, 8, 5) != revision_value(2, DAY, 8, 5)
    others = {revision_value(1, DAY, hour, 5) for hour in range(24)}
    assert len(others) > 20


def test_consecutive_revisions_always_differ():
    for hour in range(24):
        values = [revision_value(3, DAY, hour, k) for k in range(2000, 2300)]
        assert all(a != b for a, b in zip(values, values[1:], strict=False))


def test_a_year_of_prices_is_plausible_and_sometimes_not_positive():
    start = date(2025, 1, 1)
    values = [
        revision_value(0, start + timedelta(days=d), hour, 7)
        for d in range(365)
        for hour in range(24)
    ]
    assert 30 < sum(values) / len(values) < 120
    assert min(values) <= 0 < max(values) < 300
    assert all(round(v, 2) == v for v in values)


def test_without_the_grid_a_revision_every_period_published_at_once():
    now = ts("2026-03-13T10:07:31.250+00:00")
    shown = published_price(0, DAY, 8, now, period=60.0)
    assert shown.last_update == datetime(2026, 3, 13, 10, 7, tzinfo=UTC)
    assert shown.value == revision_value(0, DAY, 8, shown.revision)
    later = published_price(0, DAY, 8, now + 60, period=60.0)
    assert later.revision == shown.revision + 1
    assert later.value != shown.value and later.last_update > shown.last_update
    assert not shown.final


def test_after_gate_closure_the_price_is_final():
    gate = delivery_start(DAY, 8).timestamp()
    before = published_price(0, DAY, 8, gate - 1, period=600.0)
    for after in (gate, gate + 1, gate + 86_400 * 400):
        shown = published_price(0, DAY, 8, after, period=600.0)
        assert shown == published_price(0, DAY, 8, gate + 5, period=600.0)
        assert shown.final
        assert shown.last_update < delivery_start(DAY, 8)
    assert before.revision == shown.revision and not before.final
    assert shown.last_update == datetime(2026, 3, 14, 7, 50, tzinfo=UTC)


def test_vendor_grid_publishes_each_revision_zero_to_thirty_seconds_late():
    gate = delivery_start(DAY, 20).timestamp()
    delays = set()
    for step in range(0, 6 * 3600, 7):
        now = gate - 6 * 3600 + step
        shown = published_price(5, DAY, 20, now, vendor_grid=True)
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
    hour = next(h for h in range(12, 24) if publication_delay(0, DAY, h, revision) > 1)
    delay = publication_delay(0, DAY, hour, revision)
    waiting = published_price(0, DAY, hour, grid + delay - 0.5, vendor_grid=True)
    out = published_price(0, DAY, hour, grid + delay, vendor_grid=True)
    assert waiting.revision == revision - 1
    assert out.revision == revision
    assert out.last_update == datetime.fromtimestamp(grid + delay, UTC)
    assert publication_delay(0, DAY, hour, revision) == delay  # deterministic


def test_next_publication_is_when_the_next_revision_shows():
    now = ts("2026-03-14T09:13:00+00:00")
    for vendor_grid in (False, True):
        shown = published_price(0, DAY, 15, now, vendor_grid=vendor_grid)
        upcoming = next_publication(0, DAY, 15, now, vendor_grid=vendor_grid)
        assert upcoming.timestamp() > now
        then = published_price(0, DAY, 15, upcoming.timestamp(), vendor_grid=vendor_grid)
        assert then.revision == shown.revision + 1 and then.last_update == upcoming
    assert next_publication(0, DAY, 3, now) is None  # 03-04 closed at 03:00
