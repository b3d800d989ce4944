"""Push: a deal the playground sends shows on its trader's page without a reload; a restart of
the service is survived without one; slow, stalled and many clients."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import zlib
from collections import Counter

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from energy_assets.desk.app import SEND_TIMEOUT_SECONDS
from energy_assets.desk.connections import STALL_TIMEOUT_SECONDS
from energy_assets.desk.render import period_label
from energy_assets.playground.server import ExchangeOptions
from tests.desk.conftest import deal, write_deals
from tests.desk.load import (
    Streams,
    address,
    events_path,
    open_fds,
    rss_mb,
    stalled_client,
    storm,
)
from tests.trades.conftest import wait_until

# Seconds or more: the desk service, the listener and Chromium.
pytestmark = pytest.mark.slow


def _period_count(page, period: str) -> str | None:
    return page.evaluate(
        '(p) => { const r = document.querySelector(`tr[data-period="${p}"]`);'
        " return r ? r.dataset.trades : null; }",
        period,
    )


def test_a_deal_from_the_playground_appears_on_its_traders_page_without_a_reload(
    desk_dirs, start_desk, start_playground, listener_process, browser
):
    capture, _ = desk_dirs
    pg = start_playground(exchange=ExchangeOptions(rate=4, seed=11, traders=2))
    listener_process(pg.exchange_url, capture, "--seal-seconds", "0.5")
    first = pg.wait_for_deals(1, timeout=30)[0]
    desk = start_desk()
    wait_until(lambda: desk.health()["deals"] >= 1, message="the first deal on the desk")
    page = browser.new_page()
    page.goto(f"{desk.url}/trader/{first.trader_id}")
    page.evaluate("window.marker = 'no reload'")
    pg.pause()  # sent_deals is now what the listener got
    count = len(pg.sent_deals)
    pg.resume()
    wait_until(
        lambda: any(d.trader_id == first.trader_id for d in pg.sent_deals[count:]),
        message="another deal for the trader",
    )
    pg.pause()
    mine = [d for d in pg.sent_deals if d.trader_id == first.trader_id]
    latest = mine[-1]

    def shown(d) -> str:  # the row's data-period: local day and label of the deal's period
        p = d.period
        return f"{d.delivery_day} {period_label(p.market, p.delivery_start, p.delivery_end)}"

    period = shown(latest)
    expected = Counter(shown(d) for d in mine)[period]
    page.wait_for_function(
        '([p, n]) => { const r = document.querySelector(`tr[data-period="${p}"]`);'
        " return r && r.dataset.trades === String(n); }",
        arg=[period, expected],
        timeout=10_000,
    )
    assert page.evaluate("window.marker") == "no reload"
    assert page.evaluate("window.deskUpdates") >= 1


def test_pages_resume_after_the_service_restarts(desk_dirs, start_desk, browser):
    capture, _ = desk_dirs
    write_deals(capture, [deal(1)])
    desk = start_desk()
    page = browser.new_page()
    page.goto(desk.url + "/trader/alice")
    page.evaluate("window.marker = 'no reload'")
    assert _period_count(page, "2026-12-02 12-13") == "1"
    desk.stop()
    write_deals(capture, [deal(2)])  # while the service is down
    page.wait_for_function(
        "() => document.getElementById('connection').textContent.startsWith('reconnecting')",
        timeout=10_000,
    )
    desk.start()
    page.wait_for_function(
        """() => document.querySelector('tr[data-period="2026-12-02 12-13"]')
                 ?.dataset.trades === "2" """,
        timeout=15_000,
    )
    write_deals(capture, [deal(3)])  # and pushed on the new stream
    page.wait_for_function(
        """() => document.querySelector('tr[data-period="2026-12-02 12-13"]')
                 ?.dataset.trades === "3" """,
        timeout=10_000,
    )
    assert page.evaluate("window.marker") == "no reload"


#: The page's `#live` as a reload shows it: ages, countdowns and clocks tick in the browser.
_AS_SERVED = """() => {
  const live = document.getElementById('live').cloneNode(true);
  live.querySelectorAll('[data-ts], tr[data-gate-closure] td.left, tr[data-gate-closure] td.state,'
    + ' time.clock').forEach((e) => { e.textContent = ''; e.classList.remove('stale'); });
  live.querySelectorAll('tr[data-gate-closure]').forEach((r) => {
    r.removeAttribute('data-state'); r.classList.remove('open', 'closing', 'closed');
  });
  return live.innerHTML;
}"""


def test_a_pushed_page_is_the_page_a_reload_shows_and_keeps_a_selection_elsewhere(
    desk_dirs, start_desk, browser
):
    """A push changes only the rows that differ (desk.js): the page after it is the page a
    reload shows, and text a trader selected in another row stays selected."""
    capture, _ = desk_dirs
    # London's last half-hour of 12-02 starts after Berlin's first hour of 12-03 (in UTC):
    # the page heads 12-03, then 12-02, then 12-03 again.
    gb = {"market": "GB", "delivery_hour": "23-24", "delivery_start": "2026-12-02T23:30:00Z"}
    gb["delivery_end"] = "2026-12-03T00:00:00Z"
    berlin_03 = {"delivery_day": "2026-12-03"}
    write_deals(
        capture,
        [
            deal(1, delivery_hour="08-09"),
            deal(2, delivery_hour="14-15"),
            deal(9, **berlin_03, delivery_hour="00-01"),
            deal(10, **gb),
            deal(11, **berlin_03, delivery_hour="01-02"),
        ],
    )
    desk = start_desk()
    page = browser.new_page()
    page.goto(desk.url + "/trader/alice")
    page.evaluate("window.marker = 'no reload'")
    page.evaluate(
        """() => { const cell = document.querySelector('tr[data-period="2026-12-02 14-15"] td');
                   window.getSelection().selectAllChildren(cell); }"""
    )
    selected = page.evaluate("window.getSelection().toString()")
    steps = [
        [deal(3, delivery_hour="08-09")],  # a row changes
        [deal(4, delivery_hour="11-12"), deal(5, "bob")],  # a row between two; another book
        [
            deal(6, delivery_day="2026-12-04", delivery_hour="01-02"),  # a day after
            deal(7, delivery_day="2026-12-01", delivery_hour="23-24"),  # a day before
            deal(8, delivery_hour="08-09", direction="sell", quantity=4.0),  # a row goes flat
            deal(12, **gb),  # a row between a day's two headings changes
        ],
    ]
    held = 5
    for deals in steps:
        write_deals(capture, deals)
        held += len(deals)
        wait_until(lambda n=held: desk.health()["deals"] == n, message="the step's deals")
        for _ in range(3):  # a gate closing between the reload and the push changes both again
            reloaded = browser.new_page()
            reloaded.goto(page.url)
            expected = reloaded.evaluate(_AS_SERVED)
            reloaded.close()
            with contextlib.suppress(PlaywrightTimeout):  # the push may follow the reload
                page.wait_for_function(
                    f"(e) => ({_AS_SERVED})() === e", arg=expected, timeout=5_000
                )
            if page.evaluate(_AS_SERVED) == expected:
                break
        assert page.evaluate(_AS_SERVED) == expected
    assert page.evaluate("window.getSelection().toString()") == selected
    assert page.evaluate("window.marker") == "no reload"


def _fill_week(capture, trader: str = "alice") -> int:
    """One deal in each hour of seven delivery days: a trader page of 168 rows (~100 KB)."""
    deals = [
        deal(
            10_000 + day * 24 + hour,
            trader,
            delivery_day=f"2026-12-{day + 1:02d}",
            delivery_hour=f"{hour:02d}-{hour + 1:02d}",
        )
        for day in range(7)
        for hour in range(24)
    ]
    write_deals(capture, deals)
    return len(deals)


def test_a_stalled_client_neither_slows_a_reader_nor_holds_memory_or_its_socket(
    desk_dirs, start_desk
):
    capture, _ = desk_dirs
    _fill_week(capture)
    desk = start_desk()
    fds_before = open_fds(desk.proc.pid)
    stalled = [stalled_client(desk.url, events_path("trader/alice"), address(n)) for n in range(20)]
    wait_until(lambda: desk.health()["clients"] == 20, message="stalled clients connected")
    rss_before = rss_mb(desk.proc.pid)

    async def read_while_writing():
        async with Streams(desk.url, [events_path("trader/alice")], 1) as streams:
            await streams.wait_connected()
            delays = []
            for n in range(60):
                write_deals(capture, [deal(n + 1, quantity=1.0 + n)])
                sent = time.monotonic()
                seen = len(streams.stats.arrivals[0])
                while len(streams.stats.arrivals[0]) == seen:
                    assert time.monotonic() - sent < 5, "the reader waited on the stalled ones"
                    await asyncio.sleep(0.01)
                delays.append(streams.stats.arrivals[0][-1][0] - sent)
            return delays, streams.stats.errors

    delays, errors = asyncio.run(read_while_writing())
    assert errors == []
    assert sorted(delays)[len(delays) // 2] < 1.0, delays
    # 60 changes of ~100 KB each to 20 clients would be ~120 MB held for them without bound:
    # the desk lets every stalled stream go, dropped when its queue is full or ended by the
    # send timeout (which counts from its first blocked write: under load it comes first).
    wait_until(
        lambda: desk.health()["clients"] == 0,
        timeout=SEND_TIMEOUT_SECONDS + 5,
        message="the stalled streams let go",
    )
    assert rss_mb(desk.proc.pid) - rss_before < 40
    # A dropped client's socket is closed by the desk, though it never reads what is left.
    wait_until(
        lambda: open_fds(desk.proc.pid) <= fds_before + 2,
        timeout=STALL_TIMEOUT_SECONDS + 10,
        message="the stalled clients' sockets closed",
    )
    for sock in stalled:
        sock.close()


def settled(last_ids: list[str], before: list[str], pages: int) -> bool:
    """Every stream has an event newer than `before`'s, the same one as its page's others
    (stream `i` follows page `i % pages`)."""
    moved = all(now != then for now, then in zip(last_ids, before, strict=True))
    return moved and all(len(set(last_ids[p::pages])) == 1 for p in range(pages))


def test_200_streams_and_a_storm_of_200_page_loads(desk_dirs, start_desk):
    """The benchmark runs 500 and 500 (benchmarks/live.py); fewer here for the shared box."""
    capture, _ = desk_dirs
    traders = [f"trader_{n}" for n in range(5)]
    write_deals(capture, [deal(n + 1, traders[n % 5]) for n in range(50)])
    desk = start_desk()
    paths = [events_path("desk")] + [events_path(f"trader/{t}") for t in traders]

    async def run():
        async with Streams(desk.url, paths, 200) as streams:
            await streams.wait_connected()
            while not all(streams.stats.last_ids):  # each has the page's current state
                await asyncio.sleep(0.05)
            before = list(streams.stats.last_ids)
            pages = ["/"] + [f"/trader/{t}" for t in traders]
            result = await storm(desk.url, pages, 200)
            write_deals(capture, [deal(1000 + n, traders[n]) for n in range(5)])
            # Each page moves on, and every stream of one page ends on the same, newest event
            # for it (the desk may follow the five deals in one change or in several).
            deadline = time.monotonic() + 30
            while not settled(streams.stats.last_ids, before, len(paths)):
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            return result, streams.stats, before

    result, stats, before = asyncio.run(run())
    print(f"\nstorm with 200 streams open: {result.summary()}")
    assert result.errors == [] and len(result.latencies_ms) == 200
    assert stats.errors == [] and stats.connected == 200
    assert settled(stats.last_ids, before, len(paths)), stats.last_ids
    assert desk.health()["dropped_clients"] == 0


def _stream_bytes(url: str, accept_encoding: str | None, seconds: float) -> tuple[str, bytes]:
    """The headers and the body bytes of `url`'s event stream read for `seconds`."""
    host, port = url.removeprefix("http://").split(":")
    extra = f"Accept-Encoding: {accept_encoding}\r\n" if accept_encoding else ""
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            f"GET {events_path('desk', 'trader/alice')} HTTP/1.1\r\nHost: {host}\r\n"
            f"Accept: text/event-stream\r\n{extra}\r\n".encode()
        )
        sock.settimeout(0.2)
        data, deadline = b"", time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                data += sock.recv(1 << 16)
            except TimeoutError:
                continue
    head, _, body = data.partition(b"\r\n\r\n")
    # Chunked: keep the chunks' data, drop their sizes.
    chunks, rest = [], body
    while rest:
        size, _, rest = rest.partition(b"\r\n")
        length = int(size, 16)
        chunks.append(rest[:length])
        rest = rest[length + 2 :]
    return head.decode("latin-1").lower(), b"".join(chunks)


def test_a_browser_that_takes_deflate_gets_the_same_events_deflated(desk_dirs, start_desk):
    capture, _ = desk_dirs
    write_deals(capture, [deal(n, trader="alice", quantity=1.0 + n) for n in range(200)])
    desk = start_desk()
    plain_head, plain = _stream_bytes(desk.url, None, 1.5)
    head, body = _stream_bytes(desk.url, "gzip, deflate, br, zstd", 1.5)
    assert "content-encoding" not in plain_head
    assert "content-encoding: deflate" in head and "vary: accept-encoding" in head
    events = zlib.decompressobj().decompress(body)
    # The same events in the same order (each stream's id prefix is the desk's run).
    assert events == plain and b"event: live" in events
    assert len(body) < len(plain) / 5
