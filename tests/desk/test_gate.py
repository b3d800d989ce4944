"""Gate closure on screen, rendered: the desk's own state (`LiveDesk`) from a real capture
buffer, its clock fixed, and the fragments the service pushes. Every instant below is worked out
by hand from the contract (§5): gate closure is 5 minutes before delivery in DE, 60 in GB."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from energy_assets.desk import gate, render
from energy_assets.desk.live import LiveDesk
from energy_assets.trades.deal import Deal, validate_deal
from tests.desk.conftest import write_deals


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def deal(
    number: int,
    start: str,
    end: str,
    quantity: float = 5.0,
    direction: str = "buy",
    trader: str = "alice",
    market: str = "DE",
    executed: str = "2026-01-01T00:00:00Z",
) -> Deal:
    return validate_deal(
        {
            "id": f"{number:032x}",
            "price": 40.0,
            "quantity": quantity,
            "direction": direction,
            "trader_id": trader,
            "execution_time": executed,
            "market": market,
            "delivery_start": start,
            "delivery_end": end,
        }
    )


class Rows(HTMLParser):
    """Per board (market): its heading text and each step row's data attributes and cells."""

    def __init__(self):
        super().__init__()
        self.boards: dict[str, dict] = {}
        self.market: str | None = None
        self.row: dict | None = None
        self.cell: list[str] | None = None
        self.heading: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "div" and "board" in (attrs.get("class") or "").split():
            self.market = attrs["data-market"]
            self.boards[self.market] = {"heading": "", "rows": []}
        elif tag == "h3" and self.market:
            self.heading = []
        elif tag == "tr" and "data-gate-closure" in attrs:
            self.row = {**attrs, "cells": []}
            self.boards[self.market]["rows"].append(self.row)
        elif tag == "td" and self.row is not None:
            self.cell = []

    def handle_endtag(self, tag):
        if tag == "h3" and self.heading is not None:
            self.boards[self.market]["heading"] = "".join(self.heading).strip()
            self.heading = None
        elif tag == "td" and self.cell is not None:
            self.row["cells"].append("".join(self.cell).strip())
            self.cell = None
        elif tag == "tr":
            self.row = None

    def handle_data(self, data):
        for sink in (self.cell, self.heading):
            if sink is not None:
                sink.append(data)


def boards(html: str) -> dict[str, dict]:
    parser = Rows()
    parser.feed(html)
    return parser.boards


def step(board: dict, start: str) -> dict:
    """The row of the step starting at `start` (UTC), as cells by column name."""
    found = [r for r in board["rows"] if r["data-start"] == at(start).isoformat()]
    assert len(found) == 1, (start, [r["data-start"] for r in board["rows"]])
    row = found[0]
    when, closes, left, mw, state = row["cells"]
    return {**row, "when": when, "closes": closes, "left": left, "mw": mw, "state": state}


def desk_at(tmp_path: Path, now: str, deals: list[Deal]) -> LiveDesk:
    capture = tmp_path / "capture"
    capture.mkdir(exist_ok=True)
    write_deals(capture, deals)
    desk = LiveDesk(capture, tmp_path / "dashboard", clock=lambda: at(now))
    desk.refresh()
    return desk


def trader_html(desk: LiveDesk, trader: str = "alice") -> str:
    return render.TraderPages().fragments(desk.view(), [trader])[trader]


def test_a_winter_morning_counts_down_to_each_markets_gate_closure(tmp_path):
    # 09:47 UTC = 10:47 in Berlin (CET), 09:47 in London (GMT).
    desk = desk_at(
        tmp_path,
        "2026-12-04T09:47:00Z",
        [
            # DE 11:00-11:15 CET: gate closure 10:55 CET = 09:55Z, 8 min away, 5 MW open.
            deal(1, "2026-12-04T10:00:00Z", "2026-12-04T10:15:00Z"),
            # DE 12-13 CET bought 10 MW, 12:15-12:30 sold 10 MW: that quarter is flat.
            deal(2, "2026-12-04T11:00:00Z", "2026-12-04T12:00:00Z", quantity=10),
            deal(3, "2026-12-04T11:15:00Z", "2026-12-04T11:30:00Z", 10, "sell"),
            # GB 11:00-11:30 GMT sold 3 MW: gate closure 10:00Z, 13 min away.
            deal(4, "2026-12-04T11:00:00Z", "2026-12-04T11:30:00Z", 3, "sell", market="GB"),
            # GB 11:30-12:00: gate closure 10:30Z, 43 min away.
            deal(5, "2026-12-04T11:30:00Z", "2026-12-04T12:00:00Z", 2, market="GB"),
            # Bob's, never on Alice's board.
            deal(6, "2026-12-04T10:00:00Z", "2026-12-04T10:15:00Z", 7, trader="bob"),
        ],
    )
    shown = boards(trader_html(desk))
    de, gb = shown["DE"], shown["GB"]
    assert de["heading"] == "DE · Europe/Berlin CET"
    assert gb["heading"] == "GB · Europe/London GMT"

    closing = step(de, "2026-12-04T10:00:00Z")
    assert closing["when"] == "11:00–11:15"
    assert closing["data-gate-closure"] == "2026-12-04T09:55:00+00:00"
    assert closing["closes"] == "10:55"
    assert closing["mw"] == "+5.0"  # Alice's 5, not Bob's 7 with it
    assert closing["data-state"] == "closing" and "closing" in closing["class"].split()
    assert closing["state"] == "closing soon: open position"
    # 10:45-11:00 CET closed at 10:40 CET, seven minutes ago.
    closed = step(de, "2026-12-04T09:45:00Z")
    assert (closed["data-gate-closure"], closed["data-state"], closed["left"]) == (
        "2026-12-04T09:40:00+00:00",
        "closed",
        "closed",
    )
    # The hour counts in each of its quarters; the sold quarter nets to flat.
    assert step(de, "2026-12-04T11:00:00Z")["mw"] == "+10.0"
    flat = step(de, "2026-12-04T11:15:00Z")
    assert (flat["mw"], flat["data-state"]) == ("flat", "open")
    assert step(de, "2026-12-04T11:30:00Z")["mw"] == "+10.0"
    # An open step without a position: open, however near its gate closure.
    assert step(de, "2026-12-04T10:15:00Z")["data-state"] == "open"
    # The window: from an hour before now to three hours after, on the quarter-hour grid.
    starts = [r["data-start"] for r in de["rows"]]
    assert starts[0] == "2026-12-04T09:00:00+00:00"
    assert starts[-1] == "2026-12-04T12:45:00+00:00"
    assert len(starts) == 16

    gb_closing = step(gb, "2026-12-04T11:00:00Z")
    assert gb_closing["data-gate-closure"] == "2026-12-04T10:00:00+00:00"
    assert gb_closing["closes"] == "10:00"
    assert (gb_closing["mw"], gb_closing["data-state"]) == ("-3.0", "closing")
    gb_open = step(gb, "2026-12-04T11:30:00Z")
    assert gb_open["data-gate-closure"] == "2026-12-04T10:30:00+00:00"
    assert (gb_open["mw"], gb_open["data-state"]) == ("+2.0", "open")
    # 10:30-11:00 GMT closed at 09:30Z.
    assert step(gb, "2026-12-04T10:30:00Z")["data-state"] == "closed"
    assert [r["data-start"][11:16] for r in gb["rows"]][:2] == ["09:00", "09:30"]

    # Alice trades in EUR and GBP: still one trader, one page, one entry in the picker.
    assert desk.view().traders == ["alice", "bob"]
    assert render.nav_fragment(desk.view().traders).count('value="/trader/alice"') == 1

    # The desk's board nets every trader: 5 + 7 MW in DE 11:00-11:15.
    desk_boards = boards(render.desk_fragment(desk.view()))
    assert step(desk_boards["DE"], "2026-12-04T10:00:00Z")["mw"] == "+12.0 · 2 traders open"


def test_opposite_positions_flat_on_the_desk_still_stand_out_on_its_board(tmp_path):
    # Alice long 5 MW, Bob short 5 MW in DE 11:00-11:15 CET, 8 minutes before its gate closes:
    # the desk is flat there, but each of them must still close their own.
    desk = desk_at(
        tmp_path,
        "2026-12-04T09:47:00Z",
        [
            deal(1, "2026-12-04T10:00:00Z", "2026-12-04T10:15:00Z"),
            deal(2, "2026-12-04T10:00:00Z", "2026-12-04T10:15:00Z", 5, "sell", trader="bob"),
        ],
    )
    row = step(boards(render.desk_fragment(desk.view()))["DE"], "2026-12-04T10:00:00Z")
    assert (row["mw"], row["data-state"], row["data-held"]) == (
        "flat · 2 traders open",
        "closing",
        "1",
    )
    bobs = step(boards(trader_html(desk, "bob"))["DE"], "2026-12-04T10:00:00Z")
    assert (bobs["mw"], bobs["data-state"]) == ("-5.0", "closing")


def test_a_position_beyond_three_hours_is_left_to_the_period_table(tmp_path):
    # Tomorrow 18:00-18:15 CET: no urgency yet; the board stays the next three hours.
    desk = desk_at(
        tmp_path, "2026-12-04T09:47:00Z", [deal(1, "2026-12-05T17:00:00Z", "2026-12-05T17:15:00Z")]
    )
    html = trader_html(desk)
    assert all(r["data-start"] < "2026-12-04T12:47" for r in boards(html)["DE"]["rows"])
    assert 'data-period="2026-12-05 18:00-18:15"' in html


def test_the_fall_back_night_shows_both_two_oclock_quarter_hours_with_their_offsets(tmp_path):
    # 2026-10-25 00:50 UTC = 02:50 CEST, ten minutes before Berlin's clocks go back.
    desk = desk_at(
        tmp_path,
        "2026-10-25T00:50:00Z",
        [
            # The second 02:00-02:15 (CET, 01:00Z): gate closure 00:55Z, five minutes away.
            deal(1, "2026-10-25T01:00:00Z", "2026-10-25T01:15:00Z"),
            # GB's second 01:00-01:30 (GMT, 01:00Z): gate closure 00:00Z, closed.
            deal(2, "2026-10-25T01:00:00Z", "2026-10-25T01:30:00Z", market="GB"),
        ],
    )
    shown = boards(trader_html(desk))
    de, gb = shown["DE"], shown["GB"]
    assert de["heading"] == "DE · Europe/Berlin CEST"
    first, second = step(de, "2026-10-25T00:00:00Z"), step(de, "2026-10-25T01:00:00Z")
    assert first["when"] == "02:00–02:15 +02:00"
    assert second["when"] == "02:00–02:15 +01:00"
    assert (first["data-gate-closure"], first["data-state"]) == (
        "2026-10-24T23:55:00+00:00",
        "closed",
    )
    assert (second["data-gate-closure"], second["data-state"], second["mw"]) == (
        "2026-10-25T00:55:00+00:00",
        "closing",
        "+5.0",
    )
    # Its gate closes at 02:55 CEST, itself a wall time the night has twice.
    assert second["closes"] == "02:55 +02:00"
    # After the repeated hour, an ordinary quarter-hour: no offset needed.
    assert step(de, "2026-10-25T02:00:00Z")["when"] == "03:00–03:15"
    # Eight quarter-hours start at 02:xx local that night, and the board has them all.
    twos = [r for r in de["rows"] if r["cells"][0].startswith("02:")]
    assert len(twos) == 8

    assert gb["heading"] == "GB · Europe/London BST"
    london = step(gb, "2026-10-25T01:00:00Z")
    assert (london["when"], london["data-gate-closure"], london["data-state"]) == (
        "01:00–01:30 +00:00",
        "2026-10-25T00:00:00+00:00",
        "closed",
    )
    assert step(gb, "2026-10-25T00:00:00Z")["when"] == "01:00–01:30 +01:00"


def test_the_spring_forward_night_has_no_two_oclock_in_berlin_nor_one_oclock_in_london(tmp_path):
    # 2026-03-29 00:30 UTC = 01:30 CET = 00:30 GMT.
    desk = desk_at(
        tmp_path,
        "2026-03-29T00:30:00Z",
        # 03:00-03:15 CEST (01:00Z), the quarter after 01:45 CET: gate closure 00:55Z.
        [deal(1, "2026-03-29T01:00:00Z", "2026-03-29T01:15:00Z")],
    )
    shown = boards(trader_html(desk))
    de, gb = shown["DE"], shown["GB"]
    labels = [r["cells"][0] for r in de["rows"]]
    assert not any(label.startswith("02:") for label in labels)
    assert step(de, "2026-03-29T00:45:00Z")["when"] == "01:45–03:00"
    after = step(de, "2026-03-29T01:00:00Z")
    assert (after["when"], after["data-gate-closure"], after["data-state"]) == (
        "03:00–03:15",
        "2026-03-29T00:55:00+00:00",
        "open",  # 25 minutes left
    )
    assert de["heading"] == "DE · Europe/Berlin CET"
    london = [r["cells"][0] for r in gb["rows"]]
    assert not any(label.startswith("01:") for label in london)
    assert step(gb, "2026-03-29T01:00:00Z")["when"] == "02:00–02:30"


def test_a_deal_executed_after_gate_closure_is_booked_and_flagged(tmp_path):
    desk = desk_at(
        tmp_path,
        "2026-12-04T09:47:00Z",
        [
            # DE 10:30-10:45 CET (09:30Z) closed at 09:25Z; executed at 09:26Z.
            deal(
                1, "2026-12-04T09:30:00Z", "2026-12-04T09:45:00Z", executed="2026-12-04T09:26:00Z"
            ),
            deal(
                2, "2026-12-04T09:30:00Z", "2026-12-04T09:45:00Z", executed="2026-12-04T09:20:00Z"
            ),
            # The hour 10-11 CET, executed after its own gate closure (08:55Z).
            deal(
                3, "2026-12-04T09:00:00Z", "2026-12-04T10:00:00Z", executed="2026-12-04T09:00:00Z"
            ),
        ],
    )
    html = trader_html(desk)
    de = boards(html)["DE"]
    # Booked: both deals count in the open MW; one of them flagged.
    late = step(de, "2026-12-04T09:30:00Z")
    assert late["mw"] == "+15.0"
    assert "⚑ 2 after gate closure" in late["when"]  # the quarter's own and the hour's
    assert "⚑ 1 after gate closure" in step(de, "2026-12-04T09:00:00Z")["when"]
    # The period table flags the product, beside its trade count.
    assert 'data-period="2026-12-04 10:30-10:45"' in html
    row = html[html.index('data-period="2026-12-04 10:30-10:45"') :]
    row = row[: row.index("</tr>")]
    assert 'data-trades="2"' in row and "⚑ 1 after gate closure" in row
    # The desk's page flags it too.
    assert "⚑ 1 after gate closure" in render.desk_fragment(desk.view())


@pytest.mark.parametrize(
    ("now", "state"),
    [
        ("2026-12-04T09:39:59Z", "open"),  # 15 min 1 s left
        ("2026-12-04T09:40:01Z", "closing"),  # 14 min 59 s
        ("2026-12-04T09:54:59Z", "closing"),
        ("2026-12-04T09:55:00Z", "closed"),  # gate closure itself
    ],
)
def test_the_highlight_starts_under_fifteen_minutes_and_ends_at_gate_closure(tmp_path, now, state):
    desk = desk_at(tmp_path, now, [deal(1, "2026-12-04T10:00:00Z", "2026-12-04T10:15:00Z")])
    assert step(boards(trader_html(desk))["DE"], "2026-12-04T10:00:00Z")["data-state"] == state


def test_a_trader_page_is_rendered_again_when_a_gate_closes_not_every_second(tmp_path):
    now = [at("2026-12-04T09:47:00Z")]
    capture = tmp_path / "capture"
    capture.mkdir()
    write_deals(capture, [deal(1, "2026-12-04T10:00:00Z", "2026-12-04T10:15:00Z")])
    desk = LiveDesk(capture, tmp_path / "dashboard", clock=lambda: now[0])
    desk.refresh()
    pages = render.TraderPages()
    first = pages.fragments(desk.view(), ["alice"])["alice"]
    now[0] = at("2026-12-04T09:47:05Z")
    assert (
        pages.fragments(desk.view(), ["alice"])["alice"] == first
    )  # the page counts down by itself
    now[0] = at("2026-12-04T09:55:00Z")
    after = pages.fragments(desk.view(), ["alice"])["alice"]
    assert step(boards(after)["DE"], "2026-12-04T10:00:00Z")["data-state"] == "closed"


@given(
    now=st.datetimes(
        min_value=datetime(1999, 1, 1), max_value=datetime(9001, 1, 1), timezones=st.just(UTC)
    ),
    positions=st.lists(
        st.tuples(
            st.sampled_from(["alice", "bob"]),
            st.sampled_from(["DE", "GB", "XX"]),
            st.integers(min_value=-200, max_value=200),  # steps from now
            st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
            st.integers(min_value=0, max_value=3),
        ),
        max_size=20,
    ),
)
@settings(max_examples=150, deadline=None)
def test_any_book_at_any_instant_gives_boards_that_keep_the_rules(now, positions):
    rows = []
    for trader, market, offset, mw, late in positions:
        grid = 15 if market == "DE" else 30
        base = now.replace(minute=now.minute - now.minute % grid, second=0, microsecond=0)
        start = base + timedelta(minutes=grid * offset)
        rows.append((trader, market, start, start + timedelta(minutes=grid), mw, late))
    schema = {
        "trader_id": pl.String,
        "market": pl.String,
        "delivery_start": pl.Datetime("us", "UTC"),
        "delivery_end": pl.Datetime("us", "UTC"),
        "net_mw": pl.Float64,
        "late_deals": pl.Int64,
    }
    frame = pl.DataFrame(rows, schema=schema, orient="row")
    boards = gate.Boards(frame.drop("late_deals"), frame.drop("net_mw"), now)
    for who in ("alice", "bob", None, "nobody"):
        for board in boards.of(who):
            starts = [s.period.delivery_start for s in board.steps]
            assert starts == sorted(set(starts))
            for s in board.steps:
                assert s.state == gate.state_at(s.gate_closure, s.has_position, now)
                assert now - gate.BEFORE <= s.period.delivery_start < now + gate.AHEAD
            # Rendering never fails either.
            assert render.board_cells(board)["market"] == board.market.code
