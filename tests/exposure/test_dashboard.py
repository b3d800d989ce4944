"""The dashboard as a trader sees it: pages rendered from a real warehouse, served by
`energy-assets dashboard` on a free loopback port, opened in real headless Chromium, and
hammered by 500 clients at once."""

from __future__ import annotations

import gzip
import json
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from energy_assets.exposure import dashboard, store
from energy_assets.exposure.loadtest import storm
from tests.conftest import REPO, free_port
from tests.exposure.browser import Browser, dump_dom
from tests.exposure.conftest import q

DAY = date(2023, 2, 6)
NOW = datetime(2023, 2, 6, 11, 30, tzinfo=UTC)
ARTIFACTS = REPO / "test-artifacts"


def fill(warehouse) -> None:
    # alice 12-13: buys 2 @ 40 (ref 45: +5/MWh, favours us), sells 1 @ 44 (ref 45: -1, against).
    warehouse.trade("alice", DAY, "12-13", "buy", 2.0, 40.0)
    warehouse.trade("alice", DAY, "12-13", "sell", 1.0, 44.0)
    # bob 13-14 sells 3 @ -2 against a reference of -4: +2/MWh in our favour.
    warehouse.trade("bob", DAY, "13-14", "sell", 3.0, -2.0)
    # bob 14-15: no reference price yet.
    warehouse.trade("bob", DAY, "14-15", "buy", 1.0, 10.0)
    warehouse.price(DAY, "12-13", 45.0, last_update=NOW - timedelta(minutes=12), fetched_at=NOW)
    warehouse.price(DAY, "13-14", -4.0, last_update=NOW - timedelta(minutes=3), fetched_at=NOW)
    warehouse.gap(NOW - timedelta(minutes=40), NOW - timedelta(minutes=38), "connection dropped")


def render(
    warehouse, out: Path, at: datetime = NOW
) -> tuple[dashboard.DashboardData, dashboard.WrittenSite]:
    with warehouse.connect() as conn:
        store.refresh(conn, at)
        data = dashboard.load(conn, now=at)
    return data, dashboard.write_site(out, data)


@pytest.fixture
def site(warehouse, tmp_path):
    fill(warehouse)
    out = tmp_path / "dashboard"
    data, written = render(warehouse, out)
    return out, data, written


def wait_for_port(port: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("dashboard server did not start")


@pytest.fixture
def serve():
    """`serve(directory)` runs `energy-assets dashboard` on a free port; returns its URL."""
    started: list[subprocess.Popen] = []

    def start(directory: Path) -> str:
        port = free_port()
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "energy_assets.cli",
                "dashboard",
                "--port",
                str(port),
                "--dir",
                str(directory),
            ],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(process)
        wait_for_port(port, process)
        return f"http://127.0.0.1:{port}/"

    yield start
    for process in started:
        process.terminate()
        process.wait(timeout=10)


def get(url: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def cell(page: str, period: str, side: str) -> str:
    row = re.search(rf'<tr data-period="{period}">(.*?)</tr>', page).group(1)
    return re.search(rf'<td class="([a-z]*)" data-edge="{side}"[^>]*>([^<]*)</td>', row).groups()


def test_pages_show_how_we_are_doing_in_colour(site):
    out, _, _ = site
    alice = (out / "trader-alice.html").read_text()
    assert cell(alice, "2023-02-06 12-13", "buys") == ("fav", "+5.00")
    assert cell(alice, "2023-02-06 12-13", "sells") == ("unf", "-1.00")
    bob = (out / "trader-bob.html").read_text()
    assert cell(bob, "2023-02-06 13-14", "sells") == ("fav", "+2.00")
    # No price yet: no verdict, and no PnL rather than a zero.
    unpriced = re.search(r'<tr data-period="2023-02-06 14-15">(.*?)</tr>', bob).group(1)
    assert 'data-edge="buys"' not in unpriced
    assert unpriced.count('class="na"') >= 4
    assert "0.00</td></tr>" not in unpriced


def test_pages_are_self_contained(site):
    out, _, written = site
    for name in written.pages:
        page = (out / name).read_text()
        assert "://" not in page, name
        assert "<script src" not in page and '<link rel="stylesheet"' not in page
        assert "<svg" in page  # the PnL chart, drawn inline


def test_feed_gap_banner_names_the_days_at_risk(site, warehouse, tmp_path):
    out, data, _ = site
    assert [g["days"] for g in data.gaps] == [[DAY]]
    assert "positions for 2023-02-06 may be incomplete" in (out / "index.html").read_text()
    with warehouse.connect() as conn:
        conn.execute(f"DROP TABLE {q('feed_gaps')}")
    _, _ = render(warehouse, tmp_path / "again")
    assert 'id="feed-gap-banner"' not in (tmp_path / "again" / "index.html").read_text()


def test_site_is_written_atomically_with_its_version_last(site, warehouse):
    out, _, written = site
    version = json.loads((out / "version.json").read_text())["version"]
    assert version == written.version
    assert sorted(p.name for p in out.iterdir()) == sorted([*written.pages, "version.json"])
    for name in written.pages:
        assert f'data-version="{version}"' in (out / name).read_text()
    warehouse.trade("carol", DAY, "12-13", "buy", 1.0, 41.0)
    _, again = render(warehouse, out, at=NOW + timedelta(minutes=5))
    assert again.version != version
    assert (out / "trader-carol.html").exists()
    assert not list(out.glob(".*.tmp"))


def test_server_revalidates_with_304_and_serves_nothing_but_pages(site, serve, warehouse):
    out, _, _ = site
    (out / "secret.duckdb").write_bytes(b"not for browsers")
    url = serve(out)
    status, headers, body = get(url)
    assert status == 200 and b"alice" in body
    assert headers["Cache-Control"] == "no-cache"
    status, headers, zipped = get(url, {"Accept-Encoding": "gzip, deflate"})
    assert headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(zipped) == body == (out / "index.html").read_bytes()
    status, headers, body = get(url + "version.json")
    etag = headers["ETag"]
    assert get(url + "version.json", {"If-None-Match": etag})[0] == 304
    for path in ("secret.duckdb", "..%2Fenergy.duckdb", "../energy.duckdb", ".version.json.1.tmp"):
        assert get(url + path)[0] == 404, path
    warehouse.trade("carol", DAY, "12-13", "buy", 1.0, 41.0)
    render(warehouse, out, at=NOW + timedelta(minutes=5))
    status, headers, body = get(url + "version.json", {"If-None-Match": etag})
    assert status == 200 and headers["ETag"] != etag


def raw(url: str, request: bytes) -> bytes:
    host, port = url.split("//")[1].rstrip("/").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_server_speaks_only_get_and_head(site, serve):
    out, _, _ = site
    url = serve(out)
    head = raw(url, b"HEAD /version.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and head.endswith(b"\r\n\r\n")
    post = raw(url, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
    assert post.startswith(b"HTTP/1.1 405")
    assert raw(url, b"NONSENSE\r\n\r\n").startswith(b"HTTP/1.1 400")
    huge = b"GET / HTTP/1.1\r\nX: " + b"a" * 40_000 + b"\r\n\r\n"
    assert raw(url, huge).startswith(b"HTTP/1.1 431")
    # Two requests on one keep-alive connection, then close.
    both = raw(
        url,
        b"GET /version.json HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /version.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    assert both.count(b"HTTP/1.1 200 OK") == 2


def test_server_before_the_first_render_shows_a_waiting_page(tmp_path, serve):
    url = serve(tmp_path / "empty")
    status, _, body = get(url)
    assert status == 200 and b"No dashboard yet" in body
    assert get(url + "version.json")[0] == 404


def test_refresh_storm_of_500_clients(site, serve):
    out, _, written = site
    url = serve(out)
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    result = storm("127.0.0.1", port, clients=500, trader_pages=written.pages[1:])
    print(f"\ndashboard storm: {result.summary()}")
    assert result.errors == 0, result.error_samples
    assert result.requests == 500 * 4


def test_dashboard_in_headless_chromium(site, serve, warehouse, tmp_path):
    out, data, _ = site
    url = serve(out)
    browser = Browser(tmp_path / "chromium-profile")
    try:
        # The detector itself works: a page that logs an error is caught.
        browser.open("data:text/html,<script>console.error('detector-check')</script>")
        assert any("detector-check" in e for e in browser.errors)
        browser.errors.clear()

        browser.open(url)
        traders = browser.evaluate(
            "[...document.querySelectorAll('tr[data-trader]')].map(r => r.dataset.trader)"
        )
        assert traders == ["alice", "bob"]
        desk_pnl = browser.evaluate(
            "document.querySelector('[data-metric=pnl_eur] .v').textContent"
        )
        total = sum(v for v in data.totals["pnl_eur"].to_list() if v is not None)
        assert desk_pnl == f"{total:,.0f} €"
        assert browser.evaluate("!!document.getElementById('feed-gap-banner')")
        # Picking a trader opens their page.
        browser.navigate_by_script(
            "const s = document.getElementById('pick'); s.value = 'trader-bob.html';"
            "s.dispatchEvent(new Event('change'))"
        )
        browser.wait_for(
            "location.pathname === '/trader-bob.html' && document.readyState === 'complete'"
        )
        assert browser.evaluate("document.querySelectorAll('tr[data-period]').length") == 2
        # The reference price's age ticks in the browser (its revision was in 2023).
        age = browser.evaluate("document.querySelector('[data-ts]').textContent")
        assert age.endswith(" d")
        browser.screenshot(ARTIFACTS / "dashboard.png")

        # A new version lands: the open page reloads itself.
        old_version = browser.evaluate("document.documentElement.dataset.version")
        warehouse.trade("bob", DAY, "13-14", "buy", 1.0, -3.0)
        _, written = render(warehouse, out, at=NOW + timedelta(minutes=5))
        # Polled every 4-6 s; the wait allows for a loaded machine.
        assert (
            browser.wait_for(
                f"document.readyState === 'complete' && "
                f"document.documentElement.dataset.version !== '{old_version}' && "
                "document.documentElement.dataset.version",
                timeout=30,
            )
            == written.version
        )
        browser.pump(0.5)
        assert browser.errors == []
    finally:
        browser.close()
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000


def test_dump_dom_shows_traders_and_totals(site, serve, tmp_path):
    out, data, _ = site
    url = serve(out)
    dom = dump_dom(url + "trader-alice.html", tmp_path / "profile")
    alice = data.totals.filter(data.totals["trader_id"] == "alice").row(0, named=True)
    assert '<option value="trader-bob.html">bob</option>' in dom
    assert f"{alice['pnl_eur']:,.0f} €" in dom
    assert "2023-02-06 12-13" in dom
