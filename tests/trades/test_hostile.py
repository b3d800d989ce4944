"""Hostile frames through the real listener: each is quarantined with its reason, the listener
never exits, every good deal lands once, and every drain after them succeeds with its blocking
checks passing (issue 35: one such frame used to make the listener exit and every later drain
fail)."""

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from energy_assets.trades.assets import blocking_check_failures
from energy_assets.trades.buffer import (
    QUARANTINE_DAY_BYTES,
    RAW_KEPT,
    CaptureBuffer,
    read_listener_state,
)
from energy_assets.trades.deal import validate_deal
from energy_assets.trades.listener import RECEIPTS_KEPT
from tests.trades.conftest import (
    ThreadListener,
    drain_all,
    expected,
    frames,
    make_deals,
    stored_deals,
    wait_until,
)
from tests.trades.test_listener import quarantined

GOOD = make_deals(1, seed=35)[0].to_dict()


def hostile(**fields) -> str:
    return json.dumps({"deal_confirmation": {**GOOD, **fields}})


HOSTILE = {
    "401-digit price": hostile(price=int("9" * 401)),
    "5000-digit quantity": '{"deal_confirmation": {"quantity": ' + "9" * 5000 + "}}",
    "1e308 price": hostile(price=1e308),
    "1e308 quantity": hostile(quantity=1e308),
    "NaN price": hostile(price=float("nan")),
    "year-1 execution": hostile(execution_time="0001-01-01T00:30:00+01:00"),
    "year-9999 execution": hostile(execution_time="9999-12-31T23:30:00-01:00"),
    "year-9999 delivery day": hostile(delivery_day="9999-12-31"),
    "year-1999 delivery day": hostile(delivery_day="1999-12-31"),
    "hour with newline": hostile(delivery_hour="07-08\n"),
    "fullwidth hour": hostile(delivery_hour="０７-０８"),
    "Arabic-Indic hour": hostile(delivery_hour="٠٧-٠٨"),
    "lone surrogate trader": hostile(trader_id="trader_\ud800"),
    "deep nesting": "[" * 50_000 + "]" * 50_000,
}


@pytest.mark.slow
def test_hostile_frames_are_quarantined_and_the_listener_keeps_capturing(
    tmp_path, exchange, listener_process
):
    deals = make_deals(3 * len(HOSTILE), seed=36)
    # A deal for a day in 2999 is not hostile: confirmed, it is booked (contract §5), and
    # the no_far_deliveries check flags it.
    far = deals[0].to_dict(legacy=True) | {"id": "f" * 32, "delivery_day": "2999-01-01"}
    deals.append(validate_deal(far))
    # Two connections, each carrying every hostile frame between good deals: the listener
    # used to exit on the first one of each.
    scripts = []
    for part in (deals[: len(deals) // 2], deals[len(deals) // 2 :]):
        script = []
        for index, deal in enumerate(part):
            script.append(("send", deal.to_frame()))
            if index < len(HOSTILE):
                script.append(("send", list(HOSTILE.values())[index]))
        scripts.append(script + [("close", 1001)])
    scripts.append([("hold",)])
    server = exchange(scripts)
    capture = tmp_path / "capture"
    process = listener_process(server.url, capture, "--seal-seconds", "0.2")
    process.wait_for(f"quarantined={2 * len(HOSTILE)}")
    wait_until(lambda: server.connections == 3, message="the third connection")
    assert process.proc.poll() is None, "the listener exited"
    # The desk is told how many deal confirmations were refused: those with a deal envelope,
    # not the frames that are not JSON.
    confirmations = 2 * (len(HOSTILE) - 2)
    wait_until(
        lambda: (
            (read_listener_state(capture) or {}).get("refused", {}).get("count") == confirmations
        ),
        message="the refused confirmations in the listener's state",
    )

    bad = quarantined(capture)
    # Each frame kept whole up to RAW_KEPT characters, a longer one its start and its length.
    assert [entry["raw"] for entry in bad] == [
        text[:RAW_KEPT] for text in 2 * list(HOSTILE.values())
    ]
    assert [entry.get("raw_length") for entry in bad] == [
        len(text) if len(text) > RAW_KEPT else None for text in 2 * list(HOSTILE.values())
    ]
    for entry in bad:
        assert entry["reason"] and "processing failed" not in entry["reason"]

    # A drain while the listener runs, and one after it stopped: both succeed, every good
    # deal is stored once, and no blocking check fails.
    database = tmp_path / "warehouse.duckdb"
    drain_all(capture, database)
    assert process.terminate() == 0
    drain_all(capture, database)
    assert stored_deals(database) == expected(deals)
    with duckdb.connect(str(database), read_only=True) as conn:
        assert not any(blocking_check_failures(conn).values())


@pytest.mark.slow
def test_a_flood_of_refused_frames_fills_neither_the_disk_nor_stops_the_feed(
    tmp_path, exchange, listener_process
):
    """20,000 frames of 20 KB that are not JSON (400 MB, as fast as the exchange can send):
    the day's quarantine keeps what fits in QUARANTINE_DAY_BYTES, counts the rest, and the
    deal sent after them is captured and stored."""
    junk = "{" * 20_000
    (deal,) = make_deals(1, seed=38)
    server = exchange([[("send", junk)] * 20_000 + [("send", deal.to_frame()), ("hold",)]])
    capture = tmp_path / "capture"
    process = listener_process(server.url, capture, "--seal-seconds", "0.2")
    process.wait_for("quarantined=20000", timeout=60)
    process.wait_for("deals=1")
    assert process.proc.poll() is None, "the listener exited"
    assert "event=quarantine_full" in process.log_path.read_text()

    kept = sum(path.stat().st_size for path in (capture / "quarantine").glob("*.jsonl"))
    assert QUARANTINE_DAY_BYTES <= kept < QUARANTINE_DAY_BYTES + 2 * RAW_KEPT
    first = quarantined(capture)[0]
    assert first["raw"] == junk[:RAW_KEPT] and first["raw_length"] == len(junk)
    assert process.terminate() == 0
    database = tmp_path / "warehouse.duckdb"
    drain_all(capture, database)
    assert stored_deals(database) == expected([deal])


def test_refused_confirmations_are_counted_for_the_day_across_a_restart(
    tmp_path, exchange, thread_listener
):
    """A restart the same day goes on counting from what the last run wrote; yesterday's
    count is not carried."""
    capture = tmp_path / "capture"

    def refuse_one_after(carried: dict) -> dict:
        CaptureBuffer(capture).write_state({"heartbeat": carried["last_at"], "refused": carried})
        server = exchange([[("send", hostile(quantity=0)), ("hold",)]])
        running = thread_listener(server.url, capture)
        wait_until(lambda: running.listener.counters.quarantined == 1, message="the refusal")
        running.stop()
        server.stop()
        return read_listener_state(capture)["refused"]

    now = datetime.now(UTC)
    for day, before, after in ((now, 5, 6), (now - timedelta(days=1), 5, 1)):
        carried = {"day": f"{day:%Y-%m-%d}", "count": before, "last_at": day.isoformat()}
        state = refuse_one_after(carried)
        assert (state["count"], state["last_reason"]) == (after, "quantity must be > 0, got 0")


@pytest.mark.slow
def test_an_exchange_repeating_one_deal_writes_it_three_times_and_counts_the_rest(
    tmp_path, exchange, listener_process
):
    """One confirmation 20,000 times, as fast as the exchange can send: the buffer keeps the
    deal and two repeats as evidence, counts the others, and the drain stores the deal once
    and the deal sent after them too. Every repeat was written before: 14 MB a second."""
    repeated, after = make_deals(2, seed=39)
    frames_sent = [("send", repeated.to_frame())] * 20_000 + [("send", after.to_frame())]
    server = exchange([frames_sent + [("hold",)]])
    capture = tmp_path / "capture"
    process = listener_process(server.url, capture, "--seal-seconds", "0.2")
    process.wait_for("deals=4 duplicates_seen=19999 duplicates_not_kept=19997", timeout=60)
    assert process.terminate() == 0
    lines = [
        json.loads(line)["id"]
        for path in (capture / "segments").glob("*.jsonl")
        for line in path.read_text().splitlines()
    ]
    assert sorted(lines) == sorted([repeated.id] * RECEIPTS_KEPT + [after.id])
    database = tmp_path / "warehouse.duckdb"
    drain_all(capture, database)
    assert stored_deals(database) == expected([repeated, after])


def test_a_deal_confirmed_again_with_other_terms_is_refused_and_the_first_stays_booked(
    tmp_path, exchange, thread_listener
):
    """The same id with another price, quantity or trader: a confirmation whose terms the book
    cannot hold beside the first's. It is quarantined with why and counted for the desk's
    banner; an exact repeat, even with its instant spelt `+00:00` for `Z`, is a repeat."""
    first, other = make_deals(2, seed=41)
    fields = first.to_dict()
    spelt = fields["execution_time"].replace("Z", "+00:00")
    assert spelt != fields["execution_time"]
    changed = [{"price": first.price + 1}, {"quantity": first.quantity * 2}, {"trader_id": "x"}]
    script = [("send", first.to_frame())]
    script += [("send", json.dumps({"deal_confirmation": {**fields, **c}})) for c in changed]
    script += [("send", json.dumps({"trade_confirmation": {**fields, "execution_time": spelt}}))]
    script += [("send", other.to_frame()), ("hold",)]
    server = exchange([script])
    capture = tmp_path / "capture"
    listener = thread_listener(server.url, capture)
    wait_until(lambda: listener.listener.counters.frames == len(script) - 1, message="frames")
    listener.stop()

    assert (listener.listener.counters.deals, listener.listener.counters.duplicates) == (3, 1)
    reasons = [entry["reason"] for entry in quarantined(capture)]
    assert (
        reasons == [f"deal {first.id} confirmed again with other terms than its first receipt"] * 3
    )
    assert read_listener_state(capture)["refused"]["count"] == 3
    database = tmp_path / "warehouse.duckdb"
    drain_all(capture, database)
    assert stored_deals(database) == expected([first, other])


@pytest.mark.slow
def test_a_text_frame_that_is_not_utf8_is_quarantined_and_the_connection_kept(
    tmp_path, exchange, listener_process
):
    """RFC 6455 has a peer fail the connection on a text frame that is not UTF-8 (code 1007);
    the exchange replays nothing, so the deals behind it on that connection were lost. The
    listener takes the frame as bytes and quarantines it like any other bad frame."""
    deals = make_deals(2, seed=40)
    bad = b'{"deal_confirmation": "\xff\xfe"}'
    server = exchange(
        [
            [
                ("send", deals[0].to_frame()),
                ("text_bytes", bad),
                ("send", deals[1].to_frame()),
                ("hold",),
            ]
        ]
    )
    capture = tmp_path / "capture"
    process = listener_process(server.url, capture, "--seal-seconds", "0.2")
    process.wait_for("deals=2")
    assert server.connections == 1
    (entry,) = quarantined(capture)
    assert entry["reason"] == "frame is not UTF-8 text"
    assert entry["raw"] == bad.decode(errors="backslashreplace")
    assert process.terminate() == 0
    database = tmp_path / "warehouse.duckdb"
    drain_all(capture, database)
    assert stored_deals(database) == expected(deals)


@pytest.mark.slow
def test_an_exchange_pinging_without_reading_is_left_before_it_takes_the_memory(
    tmp_path, exchange, listener_process
):
    """Every ping is answered at once by the websocket library, unthrottled: an exchange that
    pings as fast as it can and reads nothing grew the listener by ~27 MB a second. The
    listener gives such a connection up with a feed gap and captures on the next one."""
    (deal,) = make_deals(1, seed=39)
    server = exchange([[("ping_flood",)], [("send", deal.to_frame()), ("hold",)]])
    capture = tmp_path / "capture"
    process = listener_process(server.url, capture, "--seal-seconds", "0.2")
    process.wait_for("deals=1")
    log = process.log_path.read_text()
    assert 'reason="exchange not reading' in log
    status = Path(f"/proc/{process.proc.pid}/status").read_text()
    peak_kb = int(re.search(r"VmHWM:\s+([0-9]+) kB", status).group(1))
    assert peak_kb < 200_000, f"peak RSS {peak_kb} kB"
    assert process.terminate() == 0
    database = tmp_path / "warehouse.duckdb"
    drain_all(capture, database)
    assert stored_deals(database) == expected([deal])


def test_a_frame_failing_for_an_unforeseen_reason_is_quarantined(tmp_path, exchange):
    """The last-resort guard: a fault no check foresaw (here the buffer raising on one deal)
    quarantines that frame with the error, and the deals behind it are still captured."""
    deals = make_deals(10, seed=37)
    server = exchange([frames(deals) + [("hold",)]])
    capture = tmp_path / "capture"
    listener = ThreadListener(server.url, capture)
    append = listener.buffer.append

    def append_failing_on_one(deal, received_at):
        if deal.id == deals[4].id:
            raise RuntimeError("an unforeseen fault")
        append(deal, received_at)

    listener.buffer.append = append_failing_on_one
    listener.start()
    try:
        wait_until(lambda: listener.listener.counters.frames == 10, message="all frames")
    finally:
        listener.stop()

    (entry,) = quarantined(capture)
    assert entry["reason"] == "processing failed: RuntimeError: 'an unforeseen fault'"
    assert json.loads(entry["raw"])["deal_confirmation"]["id"] == deals[4].id
    database = tmp_path / "warehouse.duckdb"
    drain_all(capture, database)
    assert stored_deals(database) == expected(deals[:4] + deals[5:])
