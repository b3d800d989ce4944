"""Each reference price's age against the vendor's grid, in Chromium: a price older than its
period's latest revision slot is marked stale, and a final price never is."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from energy_assets import published
from energy_assets.markets import hour_period
from energy_assets.prices.plan import grid_slot, stale_after
from tests.desk.conftest import deal, hour_prices, write_deals

# Seconds: a real desk process and Chromium.
pytestmark = pytest.mark.slow


def test_a_price_older_than_the_latest_revision_is_marked_stale(desk_dirs, start_desk, browser):
    capture, published_dir = desk_dirs
    now = datetime.now(UTC)
    tomorrow = (now + timedelta(days=1)).date()
    past = (now - timedelta(days=2)).date()
    write_deals(
        capture,
        [
            deal(1, delivery_day=tomorrow.isoformat(), delivery_hour="10-11"),
            deal(2, delivery_day=tomorrow.isoformat(), delivery_hour="11-12"),
            deal(3, delivery_day=past.isoformat(), delivery_hour="10-11"),
        ],
    )
    # 10-11: revised 12 minutes ago, a newer revision is out. 11-12: the slot's own revision,
    # not stale until the next one. The past hour closed at 09:55, its last revision made at
    # 09:50: final, however old.
    current = grid_slot(now) + timedelta(seconds=5)
    if now < current:  # within the first seconds of a slot: the previous slot's revision
        current -= timedelta(minutes=10)
    past_final = datetime.combine(past, datetime.min.time(), UTC).replace(
        hour=9, minute=50, second=10
    )
    prices = hour_prices(
        [
            (tomorrow, "10-11", 45.0, now - timedelta(minutes=12), now),
            (tomorrow, "11-12", 46.0, current, now),
            (past, "10-11", 47.0, past_final, now),
        ]
    )
    published.write(prices, published_dir, published.PRICES)
    desk = start_desk()
    page = browser.new_page()
    page.goto(desk.url + "/trader/alice")
    page.wait_for_function("() => document.querySelectorAll('td.ref').length === 3", timeout=10_000)

    def age(day, hour):
        return page.locator(f'tr[data-period="{day} {hour}"] .age').first  # the price's

    page.wait_for_function("() => document.querySelector('.age.stale')", timeout=5_000)
    assert "stale" in age(tomorrow, "10-11").get_attribute("class")
    assert age(tomorrow, "10-11").inner_text().endswith("· stale")
    fresh = age(tomorrow, "11-12")
    stale_at = stale_after(current, hour_period("DE", tomorrow, "11-12").gate_closure)
    assert fresh.get_attribute("data-stale-after") == stale_at.isoformat()
    if datetime.now(UTC) < stale_at - timedelta(seconds=2):
        assert "stale" not in fresh.get_attribute("class")
    final = age(past, "10-11")
    assert final.get_attribute("data-stale-after") is None
    assert "stale" not in final.get_attribute("class")
