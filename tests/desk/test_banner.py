"""The banner over a feed that drops every connection for an hour (the original exchange does,
every night): the latest gaps each on a line, the rest summed up on one."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from energy_assets.desk import render
from energy_assets.desk.live import LiveDesk
from energy_assets.trades.buffer import CaptureBuffer, Gap
from tests.desk.conftest import deal, write_deals, write_listener_state


def test_hundreds_of_gaps_are_the_latest_five_and_one_line_for_the_rest(tmp_path):
    capture = tmp_path / "capture"
    write_deals(capture, [deal(1)])
    write_listener_state(capture)
    now = datetime.now(UTC)
    buffer = CaptureBuffer(capture)
    # An hour of drops: a gap of 2 s every 12 s, ending 10 minutes ago.
    first = now - timedelta(minutes=70)
    for n in range(300):
        start = first + timedelta(seconds=12 * n)
        buffer.record_gap(Gap(start, start + timedelta(seconds=2), "connection dropped"))
    # And one from four days ago: past the buffer's retention, no longer shown.
    old = now - timedelta(days=4)
    buffer.record_gap(Gap(old, old + timedelta(seconds=5), "connection dropped"))
    desk = LiveDesk(capture, tmp_path / "dashboard")
    desk.refresh()

    banner = render.desk_fragment(desk.view())
    lines = re.findall(r'data-gap="closed">\s*(.*?)</li>', banner, re.S)
    assert len(lines) == 6
    latest = first + timedelta(seconds=12 * 299)
    assert lines[0].startswith(f"Trade feed gap from {latest:%Y-%m-%d %H:%M:%S} UTC to ")
    assert lines[5].startswith(
        f"295 more trade feed gaps from {first:%Y-%m-%d %H:%M:%S} UTC to "
        f"{first + timedelta(seconds=12 * 294 + 2):%Y-%m-%d %H:%M:%S} UTC, 590 s without the "
        "feed in all: deals made then may be missing"
    )
