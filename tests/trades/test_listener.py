"""The listener against a scripted exchange: every good deal captured once, everything else
quarantined with its reason, and every disconnection survived and recorded as a feed gap."""

import json
import os
import signal
import subprocess
import sys
import threading
from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from energy_assets.cli import websocket_url_problem
from energy_assets.trades.buffer import read_listener_state
from energy_assets.trades.deal import Refused, parse_frame
from tests.conftest import REPO
from tests.trades.conftest import (
    FAST_RECONNECTS,
    drain_all,
    expected,
    frames,
    make_deals,
    stored_deals,
    wait_until,
)

GOOD = make_deals(1)[0].to_dict()

# Every malformed kind the contract lists: not JSON, not an object, another message type,
# missing / mistyped / out-of-range fields.
MALFORMED = [
    "not json at all",
    '{"deal_confirmation": {"id": "3624e95119f04b7bb054b2f91a980a83", "price": 2',
    "[1, 2, 3]",
    '"a string"',
    "42",
    "null",
    json.dumps({"heartbeat": {"at": "2026-11-25T10:00:00Z"}}),
    json.dumps({}),
    json.dumps({"deal_confirmation": [GOOD]}),
    json.dumps({"deal_confirmation": GOOD, "trade_confirmation": GOOD}),
    json.dumps({"deal_confirmation": {k: v for k, v in GOOD.items() if k != "price"}}),
    json.dumps({"deal_confirmation": {k: v for k, v in GOOD.items() if k != "id"}}),
    json.dumps({"deal_confirmation": {**GOOD, "price": "abc"}}),
    json.dumps({"deal_confirmation": {**GOOD, "price": "20.5"}}),
    json.dumps({"deal_confirmation": {**GOOD, "price": None}}),
    json.dumps({"deal_confirmation": {**GOOD, "quantity": True}}),
    '{"deal_confirmation": ' + json.dumps(GOOD).replace('"price": ', '"price": NaN, "x": ') + "}",
    json.dumps({"deal_confirmation": {**GOOD, "quantity": 0}}),
    json.dumps({"deal_confirmation": {**GOOD, "quantity": -1.5}}),
    json.dumps({"deal_confirmation": {**GOOD, "direction": "hold"}}),
    json.dumps({"deal_confirmation": {**GOOD, "delivery_hour": "24-25"}}),
    json.dumps({"deal_confirmation": {**GOOD, "delivery_hour": "7-8"}}),
    json.dumps({"deal_confirmation": {**GOOD, "delivery_day": "21.02.2023"}}),
    json.dumps({"deal_confirmation": {**GOOD, "id": "not-hex"}}),
    json.dumps({"deal_confirmation": {**GOOD, "id": 12345}}),
    json.dumps({"deal_confirmation": {**GOOD, "trader_id": ""}}),
    json.dumps({"deal_confirmation": {**GOOD, "execution_time": "2023-02-21T06:13:43"}}),
    json.dumps({"deal_confirmation": {**GOOD, "execution_time": "yesterday"}}),
]


def quarantined(directory):
    lines = []
    for path in sorted((directory / "quarantine").glob("*.jsonl")):
        lines += [json.loads(line) for line in path.read_text().splitlines()]
    return lines


def test_every_malformed_kind_is_refused_by_the_contract():
    for frame in MALFORMED:
        assert isinstance(parse_frame(frame), Refused), f"accepted {frame!r}"


def test_duplicates_malformed_frames_and_both_envelopes(tmp_path, exchange, thread_listener):
    deals = make_deals(60, seed=1)
    script = []
    for index, deal in enumerate(deals):
        envelope = "trade_confirmation" if index % 2 else "deal_confirmation"
        script.append(("send", deal.to_frame(envelope)))
        if index % 3 == 0:  # the same confirmation again, later, under the other envelope
            script.append(("send", deals[index // 2].to_frame("deal_confirmation")))
        if index < len(MALFORMED):
            script.append(("send", MALFORMED[index]))
    script.append(("send", b"\xff\xfe binary, not UTF-8"))
    server = exchange([script])
    capture = tmp_path / "capture"
    listener = thread_listener(server.url, capture)
    wait_until(lambda: listener.listener.counters.frames == len(script), message="all frames")
    listener.stop()

    counters = listener.listener.counters
    assert counters.deals == 60 + 20
    assert counters.duplicates == 20
    assert counters.quarantined == len(MALFORMED) + 1
    bad = quarantined(capture)
    assert [entry["raw"] for entry in bad[:-1]] == MALFORMED
    assert all(entry["reason"] and entry["received_at"] for entry in bad)
    assert "UTF-8" in bad[-1]["reason"]

    database = tmp_path / "warehouse.duckdb"
    result = drain_all(capture, database)
    assert result.rows_added == 60 and result.duplicates_dropped == 20
    assert stored_deals(database) == expected(deals)


def test_clean_close_abrupt_drop_and_refusal_are_survived_and_recorded(
    tmp_path, exchange, thread_listener
):
    deals = make_deals(90, seed=2)
    server = exchange(
        [
            frames(deals[:30]) + [("close", 1001)],
            frames(deals[30:60]) + [("drop",)],
            frames(deals[60:]) + [("hold",)],
        ]
    )
    capture = tmp_path / "capture"
    listener = thread_listener(server.url, capture, seal_seconds=0.2)
    wait_until(lambda: listener.listener.counters.deals == 90, message="all deals")
    assert server.connections == 3
    listener.stop()
    assert listener.listener.counters.reconnects == 2

    database = tmp_path / "warehouse.duckdb"
    result = drain_all(capture, database)
    assert stored_deals(database) == expected(deals)
    reasons = [gap["reason"] for gap in result.gaps]
    assert len(reasons) == 2
    assert "closed cleanly (code 1001" in reasons[0]
    assert "dropped" in reasons[1]
    for gap in result.gaps:
        assert 0 <= gap["seconds"] < 5
    # Stopping opens a gap that the next start closes: recorded in the state until then.
    state = read_listener_state(capture)
    assert state["connected"] is False and state["gap_reason"] == "listener stopped"


def test_refused_connection_is_retried_backing_off_until_a_healthy_connection(
    tmp_path, exchange, thread_listener
):
    from tests.conftest import free_port

    attempts = []  # the reconnect count the wait was asked for, each time

    def wait(state):
        attempts.append(state.attempt_number)
        return FAST_RECONNECTS(state)

    capture = tmp_path / "capture"
    deals = make_deals(5, seed=3)
    server_port = free_port()
    listener = thread_listener(f"ws://127.0.0.1:{server_port}", capture, wait=wait)
    wait_until(lambda: listener.listener.counters.reconnects >= 2, message="retries")
    from tests.trades.conftest import ScriptedExchange

    # The exchange comes back, delivers five deals and drops; the next connection holds.
    server = ScriptedExchange([frames(deals) + [("drop",)], [("hold",)]], port=server_port)
    server.start()
    try:
        wait_until(lambda: server.connections == 2, message="reconnected after the drop")
        wait_until(lambda: listener.listener.connected, message="connected")
        listener.stop()
    finally:
        server.stop()
    # Backing off further at each refusal; from the shortest wait again after the deals.
    assert attempts == [*range(1, len(attempts)), 1] and len(attempts) >= 3
    database = tmp_path / "warehouse.duckdb"
    result = drain_all(capture, database)
    assert stored_deals(database) == expected(deals)
    reasons = [gap["reason"] for gap in result.gaps]
    assert len(reasons) == 2 and "cannot connect" in reasons[0] and "dropped" in reasons[1]


@pytest.mark.slow
def test_sigterm_seals_the_open_segment_and_exits_zero(tmp_path, exchange, listener_process):
    deals = make_deals(25, seed=4)
    server = exchange([frames(deals) + [("hold",)]])
    capture = tmp_path / "capture"
    # Sealing only every hour: what is sealed at exit was sealed by the SIGTERM handler.
    process = listener_process(server.url, capture, "--seal-seconds", "3600")
    process.wait_for("deals=25")
    assert list((capture / "segments").glob("*.open"))
    assert process.terminate(signal.SIGTERM) == 0
    assert not list((capture / "segments").glob("*.open"))
    log = process.log_path.read_text()
    assert "event=status" in log and "duplicates_seen=0" in log and "event=stopped" in log
    database = tmp_path / "warehouse.duckdb"
    drain_all(capture, database)
    assert stored_deals(database) == expected(deals)


@pytest.mark.slow
def test_a_second_listener_on_the_same_buffer_is_refused(tmp_path, exchange, listener_process):
    server = exchange([[("hold",)]])
    capture = tmp_path / "capture"
    first = listener_process(server.url, capture)
    first.wait_for("event=connected")
    second = listener_process(server.url, capture)
    assert second.proc.wait(30) == 2
    assert server.connections == 1
    assert first.terminate(signal.SIGINT) == 0


def test_a_buffer_that_cannot_be_written_stops_the_listener_loudly(
    tmp_path, exchange, listener_process
):
    deals = make_deals(3, seed=5)
    go = threading.Event()
    server = exchange([[("wait", go)] + frames(deals) + [("hold",)]])
    capture = tmp_path / "capture"
    process = listener_process(server.url, capture)
    process.wait_for("event=connected")
    # A real fault: the segment directory is gone and a file sits in its place.
    (capture / "segments").rmdir()
    (capture / "segments").write_text("not a directory")
    go.set()
    assert process.proc.wait(30) == 1
    assert "event=capture_failed" in process.log_path.read_text()


def test_files_are_named_when_sealed_so_names_sort_in_visibility_order(tmp_path):
    from datetime import UTC, datetime

    from energy_assets.trades.buffer import CaptureBuffer, Gap
    from energy_assets.trades.sensors import waiting_after

    buffer = CaptureBuffer(tmp_path, seal_seconds=3600)
    buffer.append(make_deals(1, seed=6)[0], datetime.now(UTC))  # opened first ...
    gap = buffer.record_gap(Gap(datetime.now(UTC), datetime.now(UTC), "connection dropped"))
    sealed = buffer.seal()  # ... sealed after the gap became visible
    assert sealed.name > gap.name
    # So the sensor, its cursor at the gap, still sees the segment waiting.
    assert waiting_after(tmp_path, gap.name)[0] == sealed.name


@given(
    st.one_of(
        st.text(),
        st.builds(
            "{}://{}:{}{}".format,
            st.sampled_from(["ws", "wss", "http", "", "WS"]),
            st.one_of(st.text(max_size=12), st.sampled_from(["[::1]", "[::1", "localhost"])),
            st.one_of(st.integers(-5, 70_000), st.text(max_size=6)),
            st.text(max_size=8),
        ),
    )
)
def test_any_text_is_an_exchange_url_or_a_reason(text):
    problem = websocket_url_problem(text)
    if problem is None:
        parts = urlsplit(text)
        assert parts.scheme in ("ws", "wss") and parts.hostname
        assert parts.port is None or 0 < parts.port <= 65535


@pytest.mark.parametrize(
    ("env", "args", "said"),
    [
        ({"ENERGY_EXCHANGE_URL": "http://exchange.example"}, [], "ENERGY_EXCHANGE_URL: the scheme"),
        ({}, ["--url", "ws://localhost:99999"], "argument --url: not a URL: Port out of range"),
        ({}, ["--url", "ws://[::1"], "argument --url: not a URL"),
        ({}, ["--seal-seconds", "nan"], "argument --seal-seconds: must be >= 0"),
    ],
)
def test_a_listener_given_no_url_to_connect_to_says_why_and_exits_2(tmp_path, env, args, said):
    done = subprocess.run(
        [sys.executable, "-m", "energy_assets.cli", "listen", *args],
        cwd=REPO,
        env={**os.environ, "ENERGY_CAPTURE_DIR": str(tmp_path / "capture"), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert said in done.stderr and "Traceback" not in done.stderr
