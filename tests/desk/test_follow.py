"""Following the capture buffer, on files written by the listener's own `CaptureBuffer`."""

from __future__ import annotations

import os

from energy_assets.desk.live import LiveDesk
from energy_assets.trades.buffer import BufferFollower, Gap, archive, sealed_files
from tests.desk.conftest import deal, live_positions, write_deals


def test_every_file_is_read_once_in_seal_order_whatever_moves_meanwhile(tmp_path):
    capture = tmp_path / "capture"
    write_deals(capture, [deal(1), deal(2)])
    write_deals(capture, [deal(3)])
    archive(sealed_files(capture)[0], capture)  # the drain moved both to drained/
    write_deals(capture, [deal(4), deal(2, price=99.0)])  # a resend with other figures
    buffer = write_deals(capture, [deal(5)], seal=False)
    os.write(buffer._fd, b'{"id": "torn')
    follower = BufferFollower(capture)
    ids, prices = [], []
    while True:  # one file a poll
        update = follower.poll(max_bytes=1)
        ids += update.deals["id"].to_list()
        prices += update.deals["price"].to_list()
        if not update.more:
            break
    assert ids == [deal(n).id for n in (1, 2, 3, 4, 2, 5)]
    assert prices[1] == 40.0 and prices[4] == 99.0
    buffer.seal()  # the open segment under a new name: read again, whole
    archive(sealed_files(capture)[0], capture)
    assert follower.poll().deals["id"].to_list() == [deal(5).id]
    assert follower.poll().deals.height == 0


def test_the_first_receipt_of_an_id_wins_as_in_the_drain(tmp_path):
    capture = tmp_path / "capture"
    write_deals(capture, [deal(1, quantity=2.0)])
    write_deals(capture, [deal(1, quantity=5.0), deal(2, quantity=1.0)])
    desk = LiveDesk(capture, tmp_path / "dashboard")
    desk.refresh()
    live = live_positions(desk)
    assert live["trades"].to_list() == [2]
    assert live["bought_mwh"].to_list() == [3.0]


def test_banners_say_when_deals_may_be_missing():
    from datetime import UTC, date, datetime, timedelta

    from energy_assets.desk.live import warnings
    from energy_assets.trades.buffer import open_feed_gap

    now = datetime(2026, 12, 2, 9, tzinfo=UTC)
    days = [date(2026, 12, 1), date(2026, 12, 2), date(2026, 12, 3)]
    fresh = {"heartbeat": now.isoformat(), "connected": True}
    assert warnings(fresh, [], days, now) == []
    silent = {"heartbeat": (now - timedelta(minutes=5)).isoformat(), "connected": True}
    (banner,) = warnings(silent, [], days, now)
    assert banner.open and banner.days == days[1:]  # deals for 12-01 were made before
    # Open since the listener last heard the exchange, as the batch's check says it is.
    quiet = silent | {"heard_at": (now - timedelta(minutes=20)).isoformat()}
    (banner,) = warnings(quiet, [], days, now)
    assert banner.start == now - timedelta(minutes=20)
    assert open_feed_gap(quiet, now) == (quiet["heard_at"], banner.reason)
    opened = fresh | {"gap_since": (now - timedelta(minutes=1)).isoformat(), "gap_reason": "x"}
    assert warnings(opened, [], days, now)[0].reason == "x"
    assert warnings({"heartbeat": "garbage"}, [], days, now)[0].open
    assert warnings(None, [], days, now)[0].open
    # A gap on 2026-11-30 can hide deals for 2026-12-01 (tradable from the day before) only.
    old = Gap(datetime(2026, 11, 30, 10, tzinfo=UTC), datetime(2026, 11, 30, 11, tzinfo=UTC), "")
    (closed,) = warnings(fresh, [old], days, now)
    assert not closed.open and closed.days == [date(2026, 12, 1)]
    ancient = Gap(now - timedelta(days=4), now - timedelta(days=4) + timedelta(hours=1), "")
    assert warnings(fresh, [ancient], days, now) == []
