"""Feed gaps are honest: a silent (half-open) exchange is noticed within 15 s and its gap starts
at the last thing heard from it, and a listener that stopped running leaves a gap record."""

import json
import os
import signal
import threading
import time
from datetime import UTC, datetime, timedelta

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from energy_assets.trades.buffer import (
    Gap,
    open_feed_gap,
    read_listener_state,
    resumed_gap,
    silent_heartbeat,
)
from tests.trades.conftest import (
    drain_all,
    expected,
    frames,
    make_deals,
    stored_deals,
    wait_until,
)


@pytest.mark.slow
def test_a_half_open_exchange_is_noticed_within_15_s_and_its_gap_starts_at_the_last_frame(
    tmp_path, exchange, thread_listener
):
    deals = make_deals(10, seed=40)
    # The first connection goes silent without closing: no frame, no answer to pings.
    server = exchange([frames(deals[:5]) + [("mute",)], frames(deals[5:]) + [("hold",)]])
    capture = tmp_path / "capture"
    listener = thread_listener(server.url, capture)
    wait_until(lambda: listener.listener.counters.deals == 10, timeout=30, message="deals")
    listener.stop()

    database = tmp_path / "warehouse.duckdb"
    result = drain_all(capture, database)
    assert stored_deals(database) == expected(deals)
    (gap,) = result.gaps
    assert gap["reason"].startswith("exchange silent for")
    (muted,) = server.muted_at
    # It starts when the exchange was last heard from (its fifth deal, or a pong to a ping sent
    # at most 5 s before it went silent), not when the silence was noticed.
    with duckdb.connect(str(database), read_only=True) as conn:
        (last_frame,) = conn.execute(
            "SELECT max(received_at) FROM energy.raw_trades WHERE id IN ?",
            [[deal.id for deal in deals[:5]]],
        ).fetchone()
    assert last_frame <= gap["gap_start"] < muted + timedelta(seconds=1)
    # Noticed (and reconnected, the gap's end) within 15 s of the silence.
    assert gap["gap_end"] - muted < timedelta(seconds=15)


@pytest.mark.slow
@pytest.mark.parametrize("dropped", [False, True], ids=["still-connected", "dropped-meanwhile"])
def test_a_frozen_listener_leaves_a_gap_covering_the_freeze(
    tmp_path, exchange, listener_process, dropped
):
    deals = make_deals(10, seed=41)
    go = threading.Event()
    if dropped:  # the exchange gives the frozen listener up; it reconnects when it runs again
        scripts = [frames(deals[:5]) + [("wait", go), ("drop",)], frames(deals[5:]) + [("hold",)]]
    else:
        scripts = [frames(deals[:5]) + [("wait", go)] + frames(deals[5:]) + [("hold",)]]
    server = exchange(scripts)
    capture = tmp_path / "capture"
    process = listener_process(server.url, capture, "--seal-seconds", "0.2")
    process.wait_for("deals=5")
    frozen = datetime.now(UTC)
    process.proc.send_signal(signal.SIGSTOP)
    time.sleep(1)
    go.set()
    time.sleep(11)
    thawed = datetime.now(UTC)
    process.proc.send_signal(signal.SIGCONT)
    process.wait_for("deals=10")
    assert process.terminate() == 0

    database = tmp_path / "warehouse.duckdb"
    result = drain_all(capture, database)
    assert stored_deals(database) == expected(deals)
    assert server.connections == (2 if dropped else 1)
    # Whichever the listener noticed first when it ran again, its freeze or the lost
    # connection, one gap covers the whole freeze.
    assert any(gap["gap_start"] <= frozen and gap["gap_end"] >= thawed for gap in result.gaps)
    if not dropped:
        (gap,) = result.gaps
        assert gap["reason"].startswith("listener not running for")


_INSTANTS = st.one_of(
    st.text(max_size=40),
    st.datetimes(timezones=st.timezones()).map(datetime.isoformat),
    st.sampled_from(["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "9999-12-31T23:59"]),
)
_STATES = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "heartbeat": st.one_of(_INSTANTS, st.integers(), st.none()),
            "heard_at": st.one_of(_INSTANTS, st.integers(), st.lists(st.integers())),
            "gap_since": st.one_of(_INSTANTS, st.none()),
            "gap_reason": st.text(max_size=10),
            "connected": st.booleans(),
        },
    ),
    st.recursive(st.none() | st.integers() | st.text(max_size=5), st.lists, max_leaves=5),
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(state=_STATES)
def test_any_listener_state_file_gives_a_gap_or_none_never_an_exception(tmp_path, state):
    """The sensor and the feed gap check read listener.json on every tick: whatever it holds
    (a disk can corrupt it; instants at years 1 and 9999 overflow arithmetic), they get the
    open gap or None, never a traceback."""
    (tmp_path / "listener.json").write_text(json.dumps(state))
    read = read_listener_state(tmp_path)
    assert read is None or isinstance(read, dict)
    now = datetime.now(UTC)
    heartbeat = silent_heartbeat(read, now)
    assert heartbeat is None or heartbeat == read["heartbeat"]
    gap = open_feed_gap(read, now)
    assert gap is None or (len(gap) == 2 and isinstance(gap[1], str))


_GAP_FILES = st.one_of(
    st.binary(max_size=200),
    st.fixed_dictionaries(
        {}, optional={"gap_start": _INSTANTS, "gap_end": _INSTANTS, "reason": st.text(max_size=5)}
    ).map(lambda record: json.dumps(record).encode()),
    st.recursive(st.none() | st.integers() | st.text(max_size=5), st.lists, max_leaves=5).map(
        lambda value: json.dumps(value).encode()
    ),
)


@settings(max_examples=300, deadline=None)
@given(content=_GAP_FILES)
def test_any_gap_file_gives_a_gap_or_a_reason_never_an_exception(content):
    """The drain, the desk and the rebuild read sealed gap files: whatever one holds (a disk
    can corrupt it), they get a gap of aware instants in order, or why it is not one."""
    gap = Gap.parse(content)
    if isinstance(gap, Gap):
        assert gap.start.utcoffset() is not None and gap.end.utcoffset() is not None
        assert gap.start <= gap.end
    else:
        assert isinstance(gap, str) and gap


@settings(max_examples=300, deadline=None)
@given(state=_STATES, minutes_ago=st.integers(min_value=0, max_value=10**6))
def test_a_starting_listener_inherits_a_plausible_gap_from_any_state_file(state, minutes_ago):
    written = datetime(2026, 12, 4, 9, 0, tzinfo=UTC) - timedelta(minutes=minutes_ago)
    since, reason = resumed_gap(state if isinstance(state, dict) else None, written)
    assert since.utcoffset() == timedelta(0)
    assert datetime(2000, 1, 1, tzinfo=UTC) <= since <= written + timedelta(minutes=1)
    assert isinstance(reason, str) and 0 < len(reason) <= 200


@pytest.mark.parametrize(
    "text",
    [
        b"\x00\xff not json",
        b'{"heartbeat": "9999-12-31T23:59:59-14:00", "heard_at": [1]}',
        b'{"gap_since": "0001-01-01T00:00:00+14:00", "gap_reason": 7}',
    ],
    ids=["not-json", "year-9999-heartbeat", "year-1-gap"],
)
def test_a_listener_starts_on_a_corrupt_state_file_and_records_a_gap_since_it_was_written(
    tmp_path, exchange, thread_listener, text
):
    """A disk or a crash can leave listener.json unreadable: the listener still starts and
    captures, and the gap it inherits starts when the file was last written."""
    capture = tmp_path / "capture"
    capture.mkdir()
    (capture / "listener.json").write_bytes(text)
    written = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    os.utime(capture / "listener.json", (written.timestamp(), written.timestamp()))
    deals = make_deals(5, seed=42)
    server = exchange([frames(deals) + [("hold",)]])
    listener = thread_listener(server.url, capture)
    wait_until(lambda: listener.listener.counters.deals == 5, timeout=30, message="deals")
    listener.stop()

    database = tmp_path / "warehouse.duckdb"
    result = drain_all(capture, database)
    assert stored_deals(database) == expected(deals)
    gap = next(g for g in result.gaps if g["gap_start"] <= written + timedelta(seconds=1))
    assert gap["gap_start"] == written and gap["gap_end"] > written
