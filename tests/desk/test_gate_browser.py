"""Gate closure in Chromium: the desk served over loopback with its clock fixed, the page's
clock fixed too (Playwright's `page.clock`), so every countdown is known to the second."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta

import httpx
import pytest
import uvicorn
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from energy_assets.desk.app import create_app
from tests.conftest import free_port
from tests.desk.conftest import write_deals
from tests.desk.test_gate import at, deal

# Seconds: a service and Chromium.
pytestmark = pytest.mark.slow

START = at("2026-12-04T09:47:00Z")  # 10:47 CET in Berlin, 09:47 GMT in London


class Clock:
    """The desk's clock, moved by the test."""

    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def served(desk_dirs) -> Iterator[tuple[str, Clock]]:
    """The desk app, its clock injected, under uvicorn on a free loopback port."""
    capture, published = desk_dirs
    clock = Clock(START)
    app = create_app(capture, published, poll_seconds=0.05, clock=clock)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the desk did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", clock
    server.should_exit = True
    thread.join(15)


def cells(page, start: str, market: str = "DE") -> dict:
    """The board row of `market`'s step starting at `start` (UTC), as the page shows it now."""
    return page.evaluate(
        """([market, start]) => {
          const row = document.querySelector(
            `.board[data-market="${market}"] tr[data-start="${start}"]`);
          if (!row) return null;
          const text = (c) => row.querySelector(c).textContent.trim();
          return {state: row.dataset.state, cls: row.className, left: text("td.left"),
                  mw: text("td.mw"), text: text("td.state")};
        }""",
        [market, at(start).isoformat()],
    )


def wait_for(page, start: str, market: str = "DE", **expected) -> dict:
    """Wait until the row shows `expected` (the page ticks every second)."""
    deadline = time.monotonic() + 10
    while True:
        shown = cells(page, start, market)
        if shown and all(shown[k] == v for k, v in expected.items()):
            return shown
        assert time.monotonic() < deadline, (start, expected, shown)
        time.sleep(0.1)


def test_the_page_counts_down_to_gate_closure_marks_closed_and_takes_new_deals(
    desk_dirs, served, browser
):
    capture, _ = desk_dirs
    write_deals(
        capture,
        [
            # DE 11:00-11:15 CET: gate closure 09:55Z, 8:00 from START, 5 MW open.
            deal(1, "2026-12-04T10:00:00Z", "2026-12-04T10:15:00Z"),
            # GB 11:30-12:00 GMT: gate closure 10:30Z, 43:00 from START.
            deal(2, "2026-12-04T11:30:00Z", "2026-12-04T12:00:00Z", 2, market="GB"),
        ],
    )
    url, clock = served
    # Without a login the desk knows a trader from their first deal: wait for it to follow
    # the buffer (a 404 page until then, as a person opening the page too early would see).
    deadline = time.monotonic() + 15
    while httpx.get(url + "/trader/alice").status_code != 200:
        assert time.monotonic() < deadline, "the desk never showed alice's deals"
        time.sleep(0.05)
    context = browser.new_context()
    problems: list[str] = []
    context.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    context.on("weberror", lambda e: problems.append(str(e.error)))
    page = context.new_page()
    page.clock.set_fixed_time(START)
    page.goto(url + "/trader/alice")
    page.evaluate("window.marker = 'no reload'")

    # Each market in its own local time, the zone named.
    try:
        page.wait_for_function(
            "() => document.querySelector('.board[data-market=DE] time.clock')"
            "?.textContent === '10:47 CET'"
        )
    except PlaywrightTimeout:
        # What the page showed instead: the board, the connection status, the page's errors.
        shown = page.evaluate(
            "() => [document.querySelector('.connection')?.textContent,"
            " document.querySelector('.board')?.outerHTML?.slice(0, 600),"
            " document.body.innerHTML.length]"
        )
        raise AssertionError(f"no DE clock at 10:47 CET: {shown}, errors {problems}") from None
    assert page.text_content(".board[data-market=GB] time.clock") == "09:47 GMT"
    assert page.text_content(".board[data-market=DE] h3").startswith("DE · Europe/Berlin")

    closing = wait_for(page, "2026-12-04T10:00:00Z", left="8:00")
    assert closing["state"] == "closing" and "closing" in closing["cls"].split()
    assert closing["text"] == "closing soon: open position"
    assert closing["mw"] == "+5.0"
    assert wait_for(page, "2026-12-04T11:30:00Z", "GB", left="43:00")["state"] == "open"
    # A step without a position: open, its countdown running all the same.
    assert wait_for(page, "2026-12-04T10:15:00Z", left="23:00")["state"] == "open"
    # 10:45-11:00 CET closed at 09:40Z.
    assert cells(page, "2026-12-04T09:45:00Z")["left"] == "closed"
    highlighted = page.locator("tr.step.closing")
    assert highlighted.count() == 1
    # It stands out by more than its text: the row's background differs from an open one's.
    backgrounds = page.evaluate(
        """() => ['closing', 'open'].map((s) => getComputedStyle(
             document.querySelector(`tr.step.${s} td.when`)).backgroundColor)"""
    )
    assert backgrounds[0] != backgrounds[1]

    # The page's clock passes 11:00-11:15's gate closure: the page marks it by itself.
    page.clock.set_fixed_time(START + timedelta(minutes=8, seconds=30))
    closed = wait_for(page, "2026-12-04T10:00:00Z", state="closed")
    assert (closed["left"], closed["text"]) == ("closed", "closed")
    assert "closing" not in closed["cls"].split()
    assert wait_for(page, "2026-12-04T10:15:00Z", left="14:30")["state"] == "open"
    assert page.text_content(".board[data-market=DE] time.clock") == "10:55 CET"

    # A deal for 11:15-11:30 arrives: its open MW changes on the open page, and with 14:30
    # left it now stands out.
    clock.now = START + timedelta(minutes=8, seconds=30)
    write_deals(capture, [deal(3, "2026-12-04T10:15:00Z", "2026-12-04T10:30:00Z", 4)])
    now_closing = wait_for(page, "2026-12-04T10:15:00Z", mw="+4.0")
    assert now_closing["state"] == "closing"
    assert now_closing["text"] == "closing soon: open position"
    assert now_closing["left"] == "14:30"
    assert page.evaluate("window.marker") == "no reload"
    page.screenshot(path="test-artifacts/desk-gate.png", full_page=True)
    # The desk's page counts alice once, though her book is in euros and in pounds.
    page.goto(url + "/")
    assert page.text_content('[data-metric="traders"] .v') == "1"
    # Her net position per market: 5 and 4 MW over quarter-hours in DE, 2 MW over a half-hour
    # in GB; never one sum of Berlin's and London's MWh.
    cards = page.locator('[data-metric="net_mwh"]')
    nets = {
        cards.nth(i).get_attribute("data-market"): cards.nth(i).locator(".v").text_content()
        for i in range(cards.count())
    }
    assert nets == {"DE": "+2.2 MWh", "GB": "+1.0 MWh"}, nets
    assert problems == []
    context.close()
