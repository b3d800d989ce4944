"""Files the desk reads but cannot use: a published file it cannot read (a disk fault, a hand)
and an archive it cannot open. The desk starts and serves its live book; it keeps the last
publication it read and shows the next good one; `/replay` says why it cannot replay. The
app in process, following the buffer and the published files as the service does."""

from __future__ import annotations

import re
import time
from datetime import UTC, date, datetime, timedelta

from starlette.testclient import TestClient

from energy_assets import published
from energy_assets.desk.app import create_app
from energy_assets.trades.buffer import apply_retention, archive, sealed_files
from tests.desk.conftest import deal, hour_prices, write_deals
from tests.trades.conftest import wait_until

TORN = b"PAR1 cut off by a disk fault"
ROW = re.compile(r'<tr[^>]*data-period="2026-12-02 12-13".*?</tr>', re.S)


def reference_cell(page: str) -> str | None:
    """The reference price shown in alice's 12-13 row, if any."""
    row = ROW.search(page)
    cell = row and re.search(r'<td class="ref"[^>]*>([^<]*)<', row.group(0))
    return cell.group(1) if cell else None


def prices_at(value: float):
    now = datetime.now(UTC)
    return hour_prices([(date(2026, 12, 2), "12-13", value, now, now)])


def test_an_unreadable_published_file_neither_stops_the_desk_nor_blanks_its_prices(
    desk_dirs, capfd
):
    capture, dashboard = desk_dirs
    write_deals(capture, [deal(1)])
    dashboard.mkdir()
    for name in published.SHAPES:
        (dashboard / name).write_bytes(TORN)
    app = create_app(capture, dashboard, poll_seconds=0.05)
    with TestClient(app, base_url="http://127.0.0.1") as desk:
        # It starts, and shows the live book without prices.
        page = desk.get("/trader/alice")
        assert page.status_code == 200 and ROW.search(page.text)
        assert reference_cell(page.text) in (None, "", "–")

        published.write(prices_at(45.0), dashboard, published.PRICES)
        wait_until(lambda: reference_cell(desk.get("/trader/alice").text) == "45.00")

        # Torn again: the last prices read stay on screen, and the next good ones show.
        capfd.readouterr()
        (dashboard / published.PRICES).write_bytes(TORN)
        said = []
        wait_until(lambda: said.append(capfd.readouterr().err) or "unreadable" in "".join(said))
        assert "event=published_file_unreadable" in "".join(said)
        assert reference_cell(desk.get("/trader/alice").text) == "45.00"
        published.write(prices_at(47.5), dashboard, published.PRICES)
        wait_until(lambda: reference_cell(desk.get("/trader/alice").text) == "47.50")
        assert desk.get("/health").status_code == 200


def test_an_archive_that_cannot_be_opened_answers_503_on_replay_and_the_desk_goes_on(desk_dirs):
    capture, dashboard = desk_dirs
    write_deals(capture, [deal(1)])
    app = create_app(capture, dashboard, archive="s3://bucket/energy")  # s3fs not installed
    with TestClient(app, base_url="http://127.0.0.1") as desk:
        replay = desk.get("/replay")
        assert replay.status_code == 503
        assert "cannot open the archive s3://bucket/energy" in replay.text
        assert desk.get("/trader/alice").status_code == 200


def test_the_desk_renews_its_state_from_the_buffer_and_keeps_no_deal_the_buffer_let_go(desk_dirs):
    """Daily, the service makes its state again from the buffer in the background, as a restart
    would: deals the retention deleted (older than 72 h) are no longer held, so its memory does
    not grow with its uptime, and pages go on showing what arrives."""
    capture, dashboard = desk_dirs
    write_deals(capture, [deal(1), deal(2)])
    app = create_app(capture, dashboard, poll_seconds=0.05)
    with TestClient(app, base_url="http://127.0.0.1") as desk:
        assert desk.get("/health").json()["deals"] == 2
        archive(sealed_files(capture)[0], capture)  # drained, then deleted by the retention
        apply_retention(capture, timedelta(0), now=time.time() + 1)
        write_deals(capture, [deal(3, trader="bob")])
        wait_until(lambda: desk.get("/health").json()["deals"] == 3)
        changes = desk.get("/health").json()["changes"]

        app.state.service.renew_seconds = 0.0  # a day has passed
        wait_until(lambda: desk.get("/health").json()["deals"] == 1)
        assert desk.get("/health").json()["changes"] > changes  # event ids go on
        write_deals(capture, [deal(4, trader="bob")])
        wait_until(lambda: desk.get("/health").json()["deals"] == 2)
        assert 'data-trades="2"' in desk.get("/trader/bob").text
