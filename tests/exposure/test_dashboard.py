"""The static pages `exposure_dashboard` renders from a real warehouse. The live desk that
`energy-assets dashboard` serves is tested in tests/desk/."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from energy_assets.exposure import dashboard, store
from tests.conftest import REPO
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
