"""`kill -9` of the real listener process mid-stream, then a restart: nothing received is lost,
the torn last line is cut, and the time the listener was dead is a recorded feed gap."""

import json
import signal
from datetime import UTC, datetime

import pytest

from energy_assets.trades.buffer import CaptureBuffer, cut_torn_tail
from tests.trades.conftest import (
    captured_ids,
    drain_all,
    expected,
    frames,
    make_deals,
    stored_deals,
    wait_until,
)


@pytest.mark.slow
def test_kill_9_mid_stream_then_restart(tmp_path, exchange, listener_process):
    deals = make_deals(700, seed=5)
    # Connection 1 streams 400 deals (some twice) and stays open; the listener dies under it.
    # Connection 2 (after the restart) streams the rest.
    first = frames(deals[:400]) + frames(deals[:50:5], "trade_confirmation")
    server = exchange([first + [("hold",)], frames(deals[400:]) + [("hold",)]])
    capture = tmp_path / "capture"
    # Sealed every 64 frames (and not by age): the kill lands with sealed segments and the
    # last 26 frames in the open one.
    listener = listener_process(server.url, capture, "--seal-seconds", "600", "--seal-frames", "64")
    wait_until(lambda: len(captured_ids(capture)) == len(first), message="first stream")
    sealed_before = {p.name: p.read_bytes() for p in (capture / "segments").glob("*.jsonl")}
    open_segments = list((capture / "segments").glob("*.open"))
    assert open_segments, "the kill must land while a segment is open"
    assert listener.terminate(signal.SIGKILL) == -signal.SIGKILL

    left_open = open_segments[0].read_bytes()
    # A write torn by the kill: half a line at the end of the open segment.
    with open(open_segments[0], "ab") as handle:
        handle.write(deals[0].to_frame().encode()[:40])

    restarted = listener_process(server.url, capture, "--seal-seconds", "0.3")
    restarted.wait_for("event=recovered_open_segments")
    wait_until(lambda: len(captured_ids(capture)) == len(first) + 300, message="second stream")
    assert restarted.terminate(signal.SIGTERM) == 0

    # Nothing that was sealed before the kill changed; the recovered segment is whole lines.
    for name, content in sealed_before.items():
        assert (capture / "segments" / name).read_bytes() == content
    assert not open_segments[0].exists()
    recovered = [p for p in (capture / "segments").glob("*.jsonl") if p.read_bytes() == left_open]
    assert len(recovered) == 1, "the open segment is sealed whole, without the torn line"
    assert left_open == cut_torn_tail(left_open)
    assert all(json.loads(line) for line in left_open.splitlines())

    database = tmp_path / "warehouse.duckdb"
    result = drain_all(capture, database)
    assert stored_deals(database) == expected(deals)
    assert result.duplicates_dropped == 10
    assert [gap["reason"] for gap in result.gaps] == ["listener stopped abruptly"]


def test_recover_seals_open_segments_left_behind(tmp_path):
    deals = make_deals(3, seed=6)
    buffer = CaptureBuffer(tmp_path, seal_seconds=3600)
    buffer.acquire()
    for deal in deals:
        buffer.append(deal, datetime.now(UTC))
    buffer.release()  # as a killed process would: the segment stays open
    (open_path,) = (tmp_path / "segments").glob("*.open")
    with open(open_path, "ab") as handle:
        handle.write(b'{"id": "torn')
    again = CaptureBuffer(tmp_path)
    again.acquire()
    (sealed,) = again.recover()
    assert [json.loads(line)["id"] for line in sealed.read_text().splitlines()] == [
        deal.id for deal in deals
    ]
    assert not list((tmp_path / "segments").glob("*.open"))
