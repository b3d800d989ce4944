"""Feed gaps are honest: a silent (half-open) exchange is noticed within 15 s and its gap starts
at the last thing heard from it, and a listener that stopped running leaves a gap record."""

import signal
import threading
import time
from datetime import UTC, datetime, timedelta

import duckdb
import pytest

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
