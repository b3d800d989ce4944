"""How the desk writes a figure: as it rounds. A flat position is 0.0, never "-0.0"; an edge or
a PnL that rounds to zero is "0.00", neither green nor red (float sums of 0.1 + 0.2 MWh leave
a residue of 1e-17 that is no position)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

from energy_assets import published
from energy_assets.desk import render
from energy_assets.desk.live import LiveDesk
from tests.desk.conftest import deal, hour_prices, write_deals


class Row(HTMLParser):
    """The cells (class, text) of the row whose `data-period` is `period`."""

    def __init__(self, period: str):
        super().__init__()
        self.period, self.inside, self.cells = period, False, []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr":
            self.inside = attrs.get("data-period") == self.period
        elif tag == "td" and self.inside:
            self.cells.append([attrs.get("class") or "", ""])

    def handle_data(self, data):
        if self.inside and self.cells:
            self.cells[-1][1] += data


def cells(html: str, period: str) -> dict[str, tuple[str, str]]:
    parser = Row(period)
    parser.feed(html)
    names = "delivery source bought buy_avg sold sell_avg net ref age buys sells pnl last"
    return dict(zip(names.split(), ((c, t.strip()) for c, t in parser.cells), strict=True))


def test_a_position_bought_and_sold_back_in_pieces_is_flat_and_its_zero_figures_uncoloured(
    tmp_path,
):
    capture, dashboard = tmp_path / "capture", tmp_path / "dashboard"
    # Bought 0.3 MWh, sold 0.1 and 0.2 back, all at 40; the reference is 40.
    write_deals(
        capture,
        [
            deal(1, quantity=0.3),
            deal(2, direction="sell", quantity=0.1),
            deal(3, direction="sell", quantity=0.2),
        ],
    )
    now = datetime.now(UTC)
    day = datetime(2026, 12, 2).date()
    prices = hour_prices([(day, "12-13", 40.0, now - timedelta(minutes=5), now)])
    published.write(prices, dashboard, published.PRICES)
    desk = LiveDesk(capture, dashboard)
    desk.refresh()
    row = cells(render.TraderPages().fragments(desk.view(), ["alice"])["alice"], "2026-12-02 12-13")
    assert row["net"] == ("net", "0.0")
    assert row["buys"] == ("", "0.00") and row["sells"] == ("", "0.00")
    assert row["pnl"][0].split() == ["pnl"] and row["pnl"][1] == "0.00"
