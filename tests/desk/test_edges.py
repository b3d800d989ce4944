"""The desk at its edges: requests never finished, more tabs than a browser has connections,
streams hoarded by one address, and every answer's security headers and error pages. The real
service as a process on a free loopback port (under a 1,024-descriptor limit where it
matters); tabs in headless Chromium."""

from __future__ import annotations

import asyncio
import gzip
import http.client
import socket
import time

import pytest

from energy_assets.desk.app import SECURITY_HEADERS, STREAMS_PER_CLIENT
from energy_assets.desk.connections import HEAD_TIMEOUT_SECONDS
from tests.desk.conftest import deal, write_deals
from tests.desk.load import Streams, address, events_path, half_sent, open_fds, stalled_client
from tests.trades.conftest import wait_until

# Seconds or more: the desk service as a process, timeouts, Chromium.
pytestmark = pytest.mark.slow


def _request(url: str, method: str, path: str) -> tuple[int, dict[str, str], str]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(method, path)
        answer = conn.getresponse()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read().decode()
    finally:
        conn.close()


def test_every_answer_carries_the_security_headers_and_each_error_says_what_happened(
    desk_dirs, start_desk
):
    write_deals(desk_dirs[0], [deal(1)])
    desk = start_desk()
    answers = {
        ("GET", "/"): (200, None, None),
        ("GET", "/trader/alice"): (200, None, None),
        ("GET", "/static/desk.js"): (200, None, None),
        ("GET", "/health"): (200, None, None),
        ("GET", "/trader/nobody"): (404, "Not Found", "No trader “nobody”"),
        ("GET", "/no/such/page"): (404, "Not Found", "There is no page at /no/such/page."),
        ("GET", "/replay?at=yesterday"): (400, "Bad Request", "must be ISO-8601 with an offset"),
        ("GET", "/events"): (400, "Bad Request", "Name between 1 and 64 pages to follow"),
        ("POST", "/"): (405, "Method Not Allowed", "POST is not answered here"),
    }
    for (method, path), (status, title, message) in answers.items():
        got, headers, body = _request(desk.url, method, path)
        assert got == status, (path, body)
        for name, value in SECURITY_HEADERS.items():
            assert headers.get(name) == value, (path, name)
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert "'unsafe-inline'" not in headers["content-security-policy"]
        if title:
            assert f"<h1>{title}</h1>" in body and message in body, body
            assert "Traceback" not in body
            if status != 404:
                assert "Not Found" not in body


def test_pages_are_gzipped_for_a_browser_that_takes_it_and_the_same_page(desk_dirs, start_desk):
    write_deals(desk_dirs[0], [deal(n, quantity=1.0 + n) for n in range(1, 200)])
    desk = start_desk()
    host, port = desk.url.removeprefix("http://").split(":")
    for path in ("/trader/alice", "/static/desk.js"):
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("GET", path, headers={"Accept-Encoding": "gzip, deflate, br, zstd"})
        answer = conn.getresponse()
        squeezed = answer.read()
        conn.close()
        assert answer.getheader("Content-Encoding") == "gzip", path
        assert gzip.decompress(squeezed).decode() == _request(desk.url, "GET", path)[2]


def test_one_address_holds_at_most_its_share_of_event_streams(desk_dirs, start_desk):
    write_deals(desk_dirs[0], [deal(1)])
    desk = start_desk()
    path = events_path("desk")
    held = [stalled_client(desk.url, path, address(0)) for _ in range(STREAMS_PER_CLIENT)]
    wait_until(lambda: desk.health()["clients"] == STREAMS_PER_CLIENT, message="streams open")
    one_more = stalled_client(desk.url, path, address(0))
    one_more.settimeout(10)
    answer = b""
    while b"</html>" not in answer:
        chunk = one_more.recv(4096)
        assert chunk, answer
        answer += chunk
    answer = answer.decode()
    assert answer.startswith("HTTP/1.1 429 "), answer
    assert "Too Many Requests" in answer and "a browser needs one for all its tabs" in answer
    other = stalled_client(desk.url, path, address(1))  # another address is served
    wait_until(lambda: desk.health()["clients"] == STREAMS_PER_CLIENT + 1, message="other")
    for sock in [*held, one_more, other]:
        sock.close()


def test_eight_tabs_of_one_browser_share_one_stream_and_all_show_a_new_deal(
    desk_dirs, start_desk, browser
):
    capture, _ = desk_dirs
    write_deals(capture, [deal(1, "alice"), deal(2, "bob")])
    desk = start_desk()
    context = browser.new_context()
    problems: list[str] = []
    # A Content-Security-Policy violation is a console error ("Refused to ...").
    context.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    tabs = []
    for n in range(8):
        tab = context.new_page()
        tab.on("pageerror", lambda err: problems.append(str(err)))
        tab.goto(desk.url + ["/", "/trader/alice", "/trader/bob", "/trader/alice"][n % 4])
        tab.evaluate("window.marker = 'no reload'")
        tabs.append(tab)
    for tab in tabs:
        tab.wait_for_function(
            "() => document.getElementById('connection').textContent === 'live'",
            timeout=15_000,
        )
    wait_until(lambda: desk.health()["clients"] == 1, message="one stream for eight tabs")
    write_deals(
        capture,
        [
            deal(3, "alice", delivery_hour="15-16", quantity=3.0),
            deal(4, "bob", delivery_hour="15-16", quantity=3.0),
        ],
    )
    for tab in tabs:
        tab.wait_for_selector('tr[data-period="2026-12-02 15-16"]', timeout=15_000)
        assert tab.evaluate("window.marker") == "no reload"
    assert desk.health()["clients"] == 1
    assert problems == []
    context.close()


def test_without_sharedworker_a_tab_holds_its_own_stream_and_stays_live(
    desk_dirs, start_desk, browser
):
    capture, _ = desk_dirs
    write_deals(capture, [deal(1)])
    desk = start_desk()
    context = browser.new_context()
    context.add_init_script("delete window.SharedWorker")  # as Chrome on Android
    tabs = [context.new_page() for _ in range(2)]
    for tab in tabs:
        tab.goto(desk.url + "/trader/alice")
        tab.wait_for_function(
            "() => document.getElementById('connection').textContent === 'live'",
            timeout=15_000,
        )
    wait_until(lambda: desk.health()["clients"] == 2, message="a stream per tab")
    write_deals(capture, [deal(2, delivery_hour="15-16")])
    for tab in tabs:
        tab.wait_for_selector('tr[data-period="2026-12-02 15-16"]', timeout=15_000)
    context.close()


def test_a_request_head_must_arrive_in_time_however_it_trickles(desk_dirs, start_desk):
    desk = start_desk()
    host, port = desk.url.removeprefix("http://").split(":")
    silent = socket.create_connection((host, int(port)))
    trickle = socket.create_connection((host, int(port)))
    began = time.monotonic()
    closed: dict[str, float] = {}
    request = b"GET / HTTP/1.1\r\nHost: desk\r\nX-Slow: " + b"a" * 100
    for n in range(int(HEAD_TIMEOUT_SECONDS * 2) + 10):
        for name, sock in [("silent", silent), ("trickle", trickle)]:
            if name in closed:
                continue
            try:
                if name == "trickle":
                    sock.send(request[n : n + 1])  # one byte every half second
                sock.settimeout(0.25)
                if sock.recv(1) == b"":
                    closed[name] = time.monotonic() - began
            except TimeoutError:
                pass
            except OSError:
                closed[name] = time.monotonic() - began
        if len(closed) == 2:
            break
    assert set(closed) == {"silent", "trickle"}, closed
    for name, seconds in closed.items():
        assert HEAD_TIMEOUT_SECONDS - 1 <= seconds <= HEAD_TIMEOUT_SECONDS + 3, (name, seconds)
    silent.close()
    trickle.close()


def test_1100_half_sent_requests_at_1024_descriptors_leave_pages_streams_and_the_follower_up(
    desk_dirs, start_desk
):
    capture, _ = desk_dirs
    write_deals(capture, [deal(1)])
    desk = start_desk(fd_limit=1024)
    baseline = open_fds(desk.proc.pid)
    attack = half_sent(desk.url, 1100)
    try:
        assert open_fds(desk.proc.pid) < 1024
        status, _, body = _request(desk.url, "GET", "/trader/alice")
        assert status == 200 and 'data-trades="1"' in body

        async def a_deal_pushed_on_a_stream() -> list[str]:
            async with Streams(desk.url, [events_path("trader/alice")], 1) as streams:
                await streams.wait_connected(timeout=20)
                deadline = time.monotonic() + 20
                while not streams.stats.arrivals[0]:
                    assert time.monotonic() < deadline, "no first event"
                    await asyncio.sleep(0.05)
                first = streams.stats.last_ids[0]
                write_deals(capture, [deal(2)])  # read by the follower, pushed on the stream
                while streams.stats.last_ids[0] == first:
                    assert time.monotonic() < deadline, "the new deal was never pushed"
                    await asyncio.sleep(0.05)
                return streams.stats.errors

        assert asyncio.run(a_deal_pushed_on_a_stream()) == []
        assert desk.health()["deals"] == 2
        # Each half-sent request is closed once its head is overdue: the descriptors return.
        wait_until(
            lambda: open_fds(desk.proc.pid) <= baseline + 5,
            timeout=HEAD_TIMEOUT_SECONDS + 10,
            message="half-sent requests closed",
        )
    finally:
        for sock in attack:
            sock.close()
    log = desk.log_path.read_text()
    assert "Too many open files" not in log and "Traceback" not in log, log[-3000:]
