"""The live desk as a trader sees it: the real service on a free loopback port, the capture
buffer written by the listener's own code, pages opened in headless Chromium."""

from __future__ import annotations

import http.client
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from energy_assets import published
from energy_assets.tables import TRADER_EXPOSURE
from energy_assets.trades.buffer import deal_record
from tests.conftest import REPO
from tests.desk.conftest import deal, hour_prices, write_deals, write_listener_state

ARTIFACTS = REPO / "test-artifacts"

# Seconds or more: the desk service as a process, and Chromium.
pytestmark = pytest.mark.slow


def _get(url: str, path: str) -> tuple[int, bytes]:
    """GET a path exactly as written (no client-side normalisation of `..` or `%2e`)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", path)
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


def test_positions_show_live_with_no_duckdb_and_no_published_files(desk_dirs, start_desk, browser):
    capture, published_dir = desk_dirs
    write_listener_state(capture)
    # alice 12-13: buys 2 @ 40 and sells 1 @ 44 -> net +1, cash -36, no price yet.
    write_deals(capture, [deal(1), deal(2, direction="sell", quantity=1.0, price=44.0)])
    desk = start_desk()
    page = browser.new_page()
    page.goto(desk.url + "/trader/alice")
    row = page.locator('tr[data-period="2026-12-02 12-13"]')
    assert row.get_attribute("data-trades") == "2"
    assert row.get_attribute("data-status") == "live"
    assert row.locator("td.net").inner_text() == "+1.0"
    assert "none yet" in row.inner_text()
    assert page.locator('[data-freshness="prices"]').inner_text() == "none yet"
    assert not (capture.parent / "never-created.duckdb").exists()
    assert not published_dir.exists()
    # Nor is DuckDB's engine even loaded in the service.
    assert "duckdb" not in (Path("/proc") / str(desk.proc.pid) / "maps").read_text()


def test_unknown_trader_gets_a_404_page(desk_dirs, start_desk):
    write_deals(desk_dirs[0], [deal(1)])
    desk = start_desk()
    status, body = _get(desk.url, "/trader/nobody")
    assert status == 404
    assert "No trader “nobody”".encode() in body and b"Traceback" not in body
    assert _get(desk.url, "/events?topic=trader%2Fnobody")[0] == 404
    assert _get(desk.url, "/no/such/page")[0] == 404


def test_hostile_paths_never_leave_the_static_folder(desk_dirs, start_desk):
    desk = start_desk()
    status, body = _get(desk.url, "/static/desk.css")
    assert status == 200 and b"--fav" in body
    for path in [
        "/static/../app.py",
        "/static/../../settings.py",
        "/static/%2e%2e/app.py",
        "/static/%2E%2E/%2E%2E/settings.py",
        "/static/..%2fapp.py",
        "/static/%2e%2e%2fapp.py",
        "/static/%2fetc%2fpasswd",
        "/static//etc/passwd",
        "//etc/passwd",
        "/static/....//app.py",
        "/static/%252e%252e/app.py",
        "/static/..\\app.py",
    ]:
        status, body = _get(desk.url, path)
        assert status in (400, 404), (path, status)
        assert b"def create_app" not in body and b"root:" not in body, path


def test_torn_last_line_is_skipped_then_shown_once_whole(desk_dirs, start_desk, browser):
    capture, _ = desk_dirs
    buffer = write_deals(capture, [deal(1)], seal=False)
    whole = deal(2, quantity=3.0)
    line = json.dumps(deal_record(whole, datetime.now(UTC)), separators=(",", ":")) + "\n"
    os.write(buffer._fd, line[:70].encode())  # the listener killed mid-line
    desk = start_desk()
    page = browser.new_page()
    page.goto(desk.url + "/trader/alice")
    row = page.locator('tr[data-period="2026-12-02 12-13"]')
    assert row.get_attribute("data-trades") == "1"
    os.write(buffer._fd, line[70:].encode())  # the rest of the line lands
    page.wait_for_function(
        """() => document.querySelector('tr[data-period="2026-12-02 12-13"]')
                 ?.dataset.trades === "2" """,
        timeout=10_000,
    )
    buffer.seal()  # sealed under a new name: the same lines, counted once
    page.wait_for_timeout(500)
    assert row.get_attribute("data-trades") == "2"
    assert desk.health()["deals"] == 2


def test_prices_confirmed_rows_gaps_and_colours(desk_dirs, start_desk, browser):
    capture, published_dir = desk_dirs
    now = datetime.now(UTC)
    write_listener_state(
        capture, gap_since=(now - timedelta(minutes=2)).isoformat(), gap_reason="connection lost"
    )
    write_deals(
        capture,
        [
            deal(1),  # alice buys 2 @ 40 in 12-13
            deal(2, direction="sell", quantity=1.0, price=44.0),  # sells 1 @ 44
            deal(3, delivery_hour="13-14", direction="sell", quantity=3.0, price=-2.0),
        ],
    )
    desk = start_desk()
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(desk.url + "/trader/alice")
    page.evaluate("window.marker = 'kept'")
    banner = page.locator("#feed-gap-banner")
    assert "open since" in banner.inner_text() and "connection lost" in banner.inner_text()

    # The batch layer publishes prices (12-13 at 45, 13-14 at -4) and confirms 12-13 only.
    day = datetime(2026, 12, 2).date()
    prices = hour_prices(
        [
            (day, "12-13", 45.0, now - timedelta(minutes=12), now - timedelta(minutes=1)),
            (day, "13-14", -4.0, now - timedelta(minutes=12), now - timedelta(minutes=1)),
        ]
    )
    published.write(prices, published_dir, published.PRICES)
    row = page.locator('tr[data-period="2026-12-02 12-13"]')
    page.wait_for_function(
        """() => document.querySelector('tr[data-period="2026-12-02 12-13"] td.ref')""",
        timeout=5_000,
    )
    assert row.locator("td.ref").inner_text() == "45.00"
    # buys: 45 - 40 = +5 favours us; sells: 44 - 45 = -1 against us.
    assert row.locator('[data-edge="buys"]').get_attribute("class") == "fav"
    assert row.locator('[data-edge="sells"]').get_attribute("class") == "unf"
    # cash = 44 - 80 = -36; net +1 at 45 -> PnL +9.
    assert row.locator("td.pnl").inner_text() == "9.00"
    short = page.locator('tr[data-period="2026-12-02 13-14"]')
    assert short.locator('[data-edge="sells"]').get_attribute("class") == "fav"  # -2 vs -4

    # Berlin in winter is UTC+1: 12-13 on 2 December is 11:00-12:00 UTC.
    start, end = datetime(2026, 12, 2, 11, tzinfo=UTC), datetime(2026, 12, 2, 12, tzinfo=UTC)
    old_start, old_end = (
        datetime(2026, 11, 20, 7, tzinfo=UTC),
        datetime(2026, 11, 20, 8, tzinfo=UTC),
    )
    # TRADER_EXPOSURE's columns: trader, market, start, end, day, currency, trades, bought,
    # sold, net, buy and sell VWAP, cash, reference price, PnL, exposure.
    rows = [
        ("alice", "DE", start, end, start.date(), "EUR", 2, 2.0, 1.0, 1.0, 40.0, 44.0, -36.0)
        + (45.0, 9.0, 45.0),
        # An older day whose deals left the buffer: only the confirmed book has it.
        ("alice", "DE", old_start, old_end, old_start.date(), "EUR", 5, 10.0, 0.0, 10.0, 50.0)
        + (None, -500.0, None, None, None),
    ]
    confirmed = pl.DataFrame(rows, schema=TRADER_EXPOSURE.polars_schema(), orient="row")
    published.write(confirmed, published_dir, published.CONFIRMED)
    page.wait_for_function(
        """() => document.querySelector('tr[data-period="2026-12-02 12-13"]')
                 ?.dataset.status === "confirmed" """,
        timeout=5_000,
    )
    assert short.get_attribute("data-status") == "live"
    older = page.locator('tr[data-period="2026-11-20 08-09"]')
    assert older.get_attribute("data-status") == "confirmed"
    assert older.get_attribute("data-trades") == "5"

    # The gap closes: the banner says when it was, and which days it may touch.
    write_listener_state(capture)
    gap = capture / "gaps" / "20261201T000000000000Z-1-000000001.json"
    record = {
        "gap_start": (now - timedelta(minutes=2)).isoformat(),
        "gap_end": now.isoformat(),
        "reason": "connection lost",
    }
    gap.write_text(json.dumps(record))
    page.wait_for_function(
        "() => document.querySelector('[data-gap=\"closed\"]') && "
        "!document.querySelector('[data-gap=\"open\"]')",
        timeout=5_000,
    )
    # Deal confirmations the listener refused today: deals the book lacks, said on the page
    # (the reason stays in the quarantine: it may name another trader's deal).
    last = now - timedelta(minutes=1)
    refused = {"day": f"{now:%Y-%m-%d}", "count": 2, "last_at": last.isoformat()}
    write_listener_state(capture, refused=refused | {"last_reason": "quantity must be > 0"})
    page.wait_for_selector('[data-refused="2"]', timeout=5_000)
    line = page.locator('[data-refused="2"]').inner_text()
    assert "2 deal confirmations from the exchange refused today" in line
    assert "what they confirmed is not in these positions" in line and "quantity" not in line
    # PnL over time comes from what exposure_dashboard publishes.
    history = pl.DataFrame(
        {
            "snapshot_at": [now - timedelta(minutes=m) for m in (20, 10)],
            "run_id": ["r1", "r2"],
            "trader_id": ["alice", "alice"],
            "currency": ["EUR", "EUR"],
            "trades": [2, 2],
            "net_mwh": [1.0, 1.0],
            "cash": [-36.0, -36.0],
            "pnl": [5.0, 15.0],
            "exposure": [41.0, 51.0],
            "gross_exposure": [41.0, 51.0],
            "unpriced_periods": [0, 0],
            "new_trades": [2, 0],
            "pnl_change": [5.0, 10.0],
            "pnl_change_trades": [5.0, 4.0],
            "pnl_change_prices": [0.0, 6.0],
            "days_recomputed": [1, 1],
        }
    )
    published.write(history, published_dir, published.PNL_HISTORY)
    page.wait_for_selector("svg polyline.series-pnl", timeout=5_000)
    assert "15 EUR" in page.locator("svg").text_content()

    assert page.evaluate("window.marker") == "kept"
    assert page.evaluate("window.deskUpdates") >= 4
    assert errors == []
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "desk-trader.png", full_page=True)
    page.goto(desk.url + "/")
    assert page.locator('tr[data-trader="alice"]').count() == 1
    page.screenshot(path=ARTIFACTS / "desk.png", full_page=True)


def test_far_away_deals_never_push_real_positions_off_the_pages(desk_dirs, start_desk, browser):
    capture, _ = desk_dirs
    today = datetime.now(UTC).date()
    real = {  # delivered, being delivered, open
        "alice": [today - timedelta(days=1), today, today + timedelta(days=1)],
        "bob": [today - timedelta(days=3)],
    }
    # Seven far-away delivery days, alice's too: confirmed deals, booked (issue 35).
    far = [f"2999-01-0{n}" for n in range(1, 8)]
    deals = [
        deal(10 * n + k, trader, delivery_day=day.isoformat())
        for n, (trader, days) in enumerate(real.items())
        for k, day in enumerate(days)
    ]
    deals += [deal(100 + n, "alice", delivery_day=day) for n, day in enumerate(far)]
    deals += [deal(200 + n, "zed", delivery_day=day) for n, day in enumerate(far)]
    write_deals(capture, deals)
    desk = start_desk()
    page = browser.new_page()

    def shown(path: str) -> set[str]:
        page.goto(desk.url + path)
        rows = page.locator("tr[data-period]").all()
        return {r.get_attribute("data-period").split()[0] for r in rows}

    alice = shown("/trader/alice")
    assert {d.isoformat() for d in real["alice"]} <= alice
    assert len(alice & set(far)) == 7 - 2  # today and tomorrow come first among the open days
    assert shown("/trader/bob") == {d.isoformat() for d in real["bob"]}
    assert shown("/trader/zed") == set(far)
    on_desk = shown("/")
    assert {d.isoformat() for days in real.values() for d in days} <= on_desk
