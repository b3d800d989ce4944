"""The listener against the project's playground exchange with every misbehaviour switched on:
what reaches DuckDB is exactly the playground's `sent_deals`, field by field."""

import signal

import pytest

from energy_assets.playground.server import ExchangeOptions
from tests.trades.conftest import captured_ids, drain_all, expected, stored_deals, wait_until

# Seconds or more: the listener against the playground, as a process.
pytestmark = pytest.mark.slow


def test_every_fault_of_the_playground_at_once(tmp_path, start_playground, thread_listener):
    pg = start_playground(
        exchange=ExchangeOptions(
            rate=0,
            seed=3,
            duplicate_rate=0.1,
            malformed_rate=0.1,
            close_every=150,
            drop_every=230,
            envelope="mixed",
            max_deals=1500,
        )
    )
    capture = tmp_path / "capture"
    listener = thread_listener(pg.exchange_url, capture, seal_seconds=0.2)
    assert pg.finished.wait(60)
    wait_until(
        lambda: listener.listener.counters.frames >= pg.frames_sent, message="every frame read"
    )
    listener.stop()
    counters = listener.listener.counters
    assert counters.quarantined == pg.malformed_sent
    assert counters.duplicates == pg.duplicates_sent
    assert counters.reconnects == pg.clean_closes + pg.drops

    database = tmp_path / "warehouse.duckdb"
    result = drain_all(capture, database)
    assert stored_deals(database) == expected(pg.sent_deals)
    assert result.duplicates_dropped == pg.duplicates_sent
    assert len(result.gaps) == counters.reconnects


def test_kill_9_while_the_playground_streams(tmp_path, start_playground, listener_process):
    pg = start_playground(exchange=ExchangeOptions(rate=400, seed=4, duplicate_rate=0.05))
    capture = tmp_path / "capture"
    first = listener_process(pg.exchange_url, capture, "--seal-seconds", "0.5")
    pg.wait_for_deals(300, timeout=30)
    pg.pause()  # the stream holds between two frames: sent_deals is what the listener got
    sent = len(pg.sent_deals)
    wait_until(lambda: _captured(capture) >= sent, message="first part captured")
    assert first.terminate(signal.SIGKILL) == -signal.SIGKILL
    # Until the exchange has read the killed listener's EOF it still counts that connection
    # as a client, and a frame written to it then counts as sent though nobody can get it
    # (the contract's gap). Resume once the exchange has let it go.
    wait_until(lambda: pg.connected == 0, message="the exchange to drop the killed listener")
    pg.resume()
    second = listener_process(pg.exchange_url, capture, "--seal-seconds", "0.5")
    pg.wait_for_deals(sent + 300, timeout=30)
    pg.pause()
    wait_until(lambda: _captured(capture) >= len(pg.sent_deals), message="second part")
    assert second.terminate(signal.SIGTERM) == 0
    database = tmp_path / "warehouse.duckdb"
    drain_all(capture, database)
    assert stored_deals(database) == expected(pg.sent_deals)


def _captured(capture) -> int:
    return len(set(captured_ids(capture)))
