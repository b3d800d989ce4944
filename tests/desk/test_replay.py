"""`/replay?at=...`: the desk at a past instant from the journals (in real Chromium), computed
in a child process one at a time, apart from the live desk."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import duckdb
import httpx
import pytest
from starlette.testclient import TestClient

from energy_assets.desk.app import create_app
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


def replay_children(archive: Path) -> list[int]:
    """The replays computing from `archive` now: child processes whose command names it."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"energy_assets.desk.replaying" in command and str(archive).encode() in command:
            found.append(int(proc.name))
    return found


def test_replays_are_computed_one_at_a_time_apart_from_the_live_desk(desk_dirs, start_desk):
    capture, _ = desk_dirs
    archive = capture / "archive"
    # A checksum file no one writes: a replay reading it is held until its browser leaves.
    day = archive / "deals" / "2026-12-01"
    day.mkdir(parents=True)
    (day / "held.tar.zst").write_bytes(b"")
    os.mkfifo(day / "held.tar.zst.json")
    desk = start_desk()
    url = f"{desk.url}/replay?at=2026-12-02T00:00Z"

    async def scenario() -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            held = asyncio.create_task(client.get(url))
            await wait_for(lambda: replay_children(archive))
            # Six tabs' worth more: each told to come back, none waiting on the first.
            started = time.monotonic()
            others = await asyncio.gather(*(client.get(url) for _ in range(6)))
            assert time.monotonic() - started < 10
            for answer in others:
                assert answer.status_code == 503, answer.text
                assert "one at a time" in answer.text
                assert answer.headers["Retry-After"] == "10"
            # The live desk meanwhile: a deal written is on the desk within a second.
            write_deals(capture, [deal(1)])
            await wait_for(lambda: desk.health()["deals"] == 1, seconds=1)
            # The browser leaves: its replay is stopped, and the next one is computed.
            held.cancel()
            await wait_for(lambda: not replay_children(archive), seconds=2)
            assert (await client.get(f"{desk.url}/")).status_code == 200

    asyncio.run(scenario())


async def wait_for(condition, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not within {seconds} s"
        await asyncio.sleep(0.05)


def test_a_replay_past_the_desks_memory_limit_is_stopped_and_the_desk_goes_on(desk_dirs):
    capture, dashboard = desk_dirs
    write_deals(capture, [deal(1)])
    with duckdb.connect(str(capture.parent / "warehouse.duckdb")) as conn:
        drain(conn, capture, retention=timedelta(0))
    # 1 MB: less than any Python process needs, so the replay is always past it.
    app = create_app(capture, dashboard, replay_memory_mb=1)
    with TestClient(app, base_url="http://127.0.0.1") as desk:
        replay = desk.get("/replay")
        assert replay.status_code == 503
        assert "needed more than 1 MB" in replay.text
        assert "ENERGY_DESK_REPLAY_MEMORY_MB" in replay.text
        assert desk.get("/").status_code == 200
    assert not replay_children(capture / "archive")


def test_a_corrupt_journal_answers_500_with_the_file_and_the_desk_goes_on(desk_dirs):
    capture, dashboard = desk_dirs
    write_deals(capture, [deal(1)])
    with duckdb.connect(str(capture.parent / "warehouse.duckdb")) as conn:
        drain(conn, capture, retention=timedelta(0))
    (bundle,) = (capture / "archive" / "deals").glob("*/*.tar.zst")
    bundle.write_bytes(b"flipped by a disk fault")
    with TestClient(create_app(capture, dashboard), base_url="http://127.0.0.1") as desk:
        replay = desk.get("/replay")
        assert replay.status_code == 500
        assert "The journals cannot be replayed" in replay.text
        assert bundle.name in replay.text
        assert desk.get("/").status_code == 200
