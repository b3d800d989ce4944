"""`/replay?at=...`: the desk at a past instant from the journals, in real Chromium."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from urllib.parse import quote

import duckdb
import pytest

from energy_assets.journals.prices import append_answers
from energy_assets.markets import hour_period
from energy_assets.prices.period_prices import PeriodPrice
from energy_assets.trades.drain import drain
from tests.desk.conftest import deal, write_deals


def price(value: float, last_update: datetime, fetched_at: datetime) -> PeriodPrice:
    period = hour_period("DE", date(2026, 12, 2), "12-13")
    return PeriodPrice(period, value, "euro/mwh", last_update, fetched_at)


@pytest.mark.slow
def test_the_replay_page_shows_the_price_known_at_that_instant(
    desk_dirs, start_desk, browser, tmp_path
):
    capture, _ = desk_dirs
    # alice buys 2 @ 40 for 2026-12-02 12-13; drained (and so archived) at once.
    write_deals(capture, [deal(1), deal(2, trader="bob", direction="sell", price=50.0)])
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as conn:
        drain(conn, capture, retention=timedelta(0))
    t0 = datetime.now(UTC)
    first = price(45.0, t0, t0 + timedelta(seconds=1))
    second = price(52.0, t0 + timedelta(seconds=2), t0 + timedelta(seconds=3))
    append_answers(capture / "archive", [first], "run-1", now=first.fetched_at)
    append_answers(capture / "archive", [second], "run-2", now=second.fetched_at)

    desk = start_desk()
    page = browser.new_page()
    between = (t0 + timedelta(seconds=2)).isoformat()
    page.goto(f"{desk.url}/replay?at={quote(between)}")
    assert (
        "2 deals received and 1 delivery periods priced" in page.locator("#replayed").inner_text()
    )
    row = page.locator('tr[data-period="2026-12-02 12-13"]')
    assert row.locator("td.ref").inner_text() == "45.00"
    alice = page.locator('tr[data-trader="alice"]')
    assert "10.00" in alice.inner_text()  # -80 cash + 2 MWh x 45

    page.locator('input[name="at"]').fill((t0 + timedelta(seconds=4)).isoformat())
    page.locator('button[type="submit"]').click()
    page.wait_for_url("**/replay?at=*")
    assert page.locator('tr[data-period="2026-12-02 12-13"] td.ref').inner_text() == "52.00"

    before = (t0 - timedelta(hours=1)).isoformat()
    page.goto(f"{desk.url}/replay?at={quote(before)}")
    assert "0 deals received" in page.locator("#replayed").inner_text()
    bad = page.goto(f"{desk.url}/replay?at=yesterday")
    assert bad.status == 400
