"""The drain: exactly once across failures, retries and concurrent drains."""

import json
import os
import threading
from datetime import UTC, datetime, timedelta

import duckdb
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from energy_assets.tables import RAW_TRADES
from energy_assets.trades.buffer import CaptureBuffer, Gap, apply_retention, sealed_files
from energy_assets.trades.deal import Refused, parse_frame
from energy_assets.trades.drain import drain
from energy_assets.trades.lines import CorruptSegment, read_segments
from tests.trades.conftest import drain_all, expected, make_deals, pending, stored_deals
from tests.trades.test_listener import quarantined


def fill(directory, deals, per_segment=50):
    buffer = CaptureBuffer(directory, seal_seconds=3600, seal_frames=per_segment)
    for deal in deals:
        buffer.append(deal, datetime.now(UTC))
    buffer.seal()
    return sorted((directory / "segments").glob("*.jsonl"))


def table_count(database, table="raw_trades"):
    with duckdb.connect(str(database), read_only=True) as conn:
        return conn.execute(f"SELECT count(*) FROM energy.{table}").fetchone()[0]


def test_first_seen_wins_within_and_across_batches(tmp_path):
    deals = make_deals(200, seed=7)
    capture, database = tmp_path / "capture", tmp_path / "warehouse.duckdb"
    fill(capture, deals[:120] + deals[:30])
    first = drain_all(capture, database)
    assert (first.rows_added, first.duplicates_dropped) == (120, 30)
    # A later batch repeats old ids with other values: the first receipt stays, and each
    # repeat with other terms is quarantined with why (as is one within the batch), so the
    # book is never changed without a word.
    changed = [deal.__class__(**{**deal.to_dict(), "price": 999.0}) for deal in deals[100:120]]
    other_trader = deals[150].__class__(**{**deals[150].to_dict(), "trader_id": "someone"})
    fill(capture, changed + deals[120:] + [deals[150], other_trader])
    second = drain_all(capture, database)
    assert (second.rows_added, second.duplicates_dropped, second.total_rows) == (80, 1, 200)
    assert second.other_terms == 21
    assert stored_deals(database) == expected(deals)
    assert pending(capture) == 0 and len(list((capture / "drained").iterdir())) == 6
    refused = quarantined(capture)
    assert sorted((json.loads(r["raw"])["id"], r["reason"]) for r in refused) == sorted(
        (deal.id, f"deal {deal.id} confirmed again with other terms than its first receipt")
        for deal in [*deals[100:120], deals[150]]
    )


#: Receipts of a few ids, each confirmed with its own terms or with others (a price, a
#: quantity), or with its instant spelt `Z` (the same terms).
_IDS = make_deals(4, seed=3)


def _receipt(index: int, variant: int):
    deal = _IDS[index].to_dict()
    if variant == 1:
        deal["price"] += 1.0
    elif variant == 2:
        deal["quantity"] += 0.5
    elif variant == 3:
        deal["execution_time"] = deal["execution_time"].replace("+00:00", "Z")
    return _IDS[index].__class__(**deal)


def _terms(deal) -> tuple:
    return (deal.id, deal.price, deal.quantity)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@example(  # a stored deal, then a batch with other terms and a repeat of the stored ones
    receipts=[(0, 1, False, True), (0, 0, False, False), (0, 1, False, False)]
)
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 3), st.booleans(), st.booleans()),
        min_size=1,
        max_size=12,
    )
)
def test_any_receipts_drained_in_any_batches_book_the_first_and_quarantine_other_terms(
    tmp_path_factory, receipts
):
    """Whatever reaches the buffer (the listener forgets ids past 100,000 and on a restart),
    sealed and drained at any points: each id is stored once with its first receipt's terms, and
    each other version of its terms is quarantined; a repeat of the first never is."""
    directory = tmp_path_factory.mktemp("drain")
    capture, database = directory / "capture", directory / "warehouse.duckdb"
    buffer = CaptureBuffer(capture, seal_seconds=3600, seal_frames=10**6)
    sent = []
    for index, variant, seal, drain_now in receipts:
        sent.append(_receipt(index, variant))
        buffer.append(sent[-1], datetime.now(UTC))
        if seal or drain_now:
            buffer.seal()
        if drain_now:
            drain_all(capture, database)
    buffer.seal()
    drain_all(capture, database)
    assert stored_deals(database) == expected(sent)
    first = {}
    for deal in sent:
        first.setdefault(deal.id, _terms(deal))
    others = {_terms(deal) for deal in sent} - set(first.values())
    refused = [json.loads(line["raw"]) for line in quarantined(capture)]
    assert {(r["id"], r["price"], r["quantity"]) for r in refused} == others


def test_a_failure_between_insert_and_mark_stores_nothing_then_retry_is_exact(tmp_path):
    deals = make_deals(300, seed=8)
    capture, database = tmp_path / "capture", tmp_path / "warehouse.duckdb"
    fill(capture, deals)

    def crash():
        raise RuntimeError("injected: process dies after the insert, before the commit")

    with duckdb.connect(str(database)) as conn, pytest.raises(RuntimeError, match="injected"):
        drain(conn, capture, before_commit=crash)
    assert table_count(database) == 0 and table_count(database, "capture_segments") == 0
    assert pending(capture) == 6
    drain_all(capture, database)
    assert stored_deals(database) == expected(deals)


def test_a_corrupt_segment_fails_the_whole_drain_then_retry_after_repair(tmp_path):
    deals = make_deals(250, seed=9)
    capture, database = tmp_path / "capture", tmp_path / "warehouse.duckdb"
    segments = fill(capture, deals)
    good = segments[2].read_bytes()
    # A real fault on disk: the middle segment's bytes are garbage in the middle.
    segments[2].write_bytes(good[:100] + b"\x00garbage{{\n" + good[100:])
    with pytest.raises(CorruptSegment, match=segments[2].name):
        drain_all(capture, database)
    assert table_count(database) == 0
    segments[2].write_bytes(good)
    drain_all(capture, database)
    assert stored_deals(database) == expected(deals)


def test_readers_skip_a_torn_last_line(tmp_path):
    deals = make_deals(4, seed=10)
    (segment,) = fill(tmp_path, deals)
    with open(segment, "ab") as handle:
        handle.write(b'{"id":"abc","price":1.')
    assert read_segments([segment])["id"].to_list() == [deal.id for deal in deals]


def test_two_drains_at_once_end_exact(tmp_path):
    deals = make_deals(3000, seed=11)
    capture, database = tmp_path / "capture", tmp_path / "warehouse.duckdb"
    fill(capture, deals + deals[::7], per_segment=100)
    drain_all(capture, tmp_path / "warm.duckdb")  # imports and first-call costs out of the race
    fill(capture, deals + deals[::7], per_segment=100)
    barrier, results, errors = threading.Barrier(2), [], []

    def run():
        try:
            with duckdb.connect(str(database)) as conn:
                barrier.wait()
                results.append(drain(conn, capture))
        except Exception as err:
            errors.append(err)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert sum(result.rows_added for result in results) == len(deals)
    assert stored_deals(database) == expected(deals)
    with duckdb.connect(str(database), read_only=True) as conn:
        marked = conn.execute(
            "SELECT count(*), count(DISTINCT segment) FROM energy.capture_segments"
        )
        assert marked.fetchone() == (len(deals + deals[::7]) // 100 + 1,) * 2


def test_retention_deletes_only_old_drained_files(tmp_path):
    deals = make_deals(100, seed=12)
    capture, database = tmp_path / "capture", tmp_path / "warehouse.duckdb"
    fill(capture, deals)
    drain_all(capture, database)
    drained = sorted((capture / "drained").iterdir())
    old = (datetime.now(UTC) - timedelta(hours=5)).timestamp()
    os.utime(drained[0], (old, old))
    fill(capture, make_deals(10, seed=13))  # waiting, not drained: never deleted
    assert apply_retention(capture, timedelta(hours=4)) == 1
    assert sorted((capture / "drained").iterdir()) == drained[1:]
    assert len(sealed_files(capture)[0]) == 1
    assert stored_deals(database) == expected(deals)


def test_every_iso_shape_the_listener_accepts_is_stored_as_the_same_instant(tmp_path):
    """Each shape `parse_frame` reads, written by hand beside the UTC instant it names."""
    at = datetime(2023, 2, 21, 6, 13, 43, tzinfo=UTC)
    shapes = {
        "2023-02-21T06:13:43+00:00": at,
        "2023-02-21T06:13:43Z": at,
        "2023-02-21T06:13:43.5Z": at + timedelta(milliseconds=500),
        "2023-02-21T06:13:43.123456+00:00": at + timedelta(microseconds=123456),
        "2023-02-21T08:13:43+02:00": at,
        "2023-02-21t06:13:43,5z": at + timedelta(milliseconds=500),
        "2023-02-21T07:13:43+01": at,
        "2023-02-21T01:13:43.250-0500": at + timedelta(milliseconds=250),
        "2023-02-21T01:13:43.250-05:00": at + timedelta(milliseconds=250),
    }
    deals = [
        deal.__class__(**{**deal.to_dict(), "execution_time": shape})
        for deal, shape in zip(make_deals(len(shapes), seed=14), shapes, strict=True)
    ]
    assert all(not isinstance(parse_frame(deal.to_frame()), Refused) for deal in deals)
    capture, database = tmp_path / "capture", tmp_path / "warehouse.duckdb"
    fill(capture, deals)
    drain_all(capture, database)
    with duckdb.connect(str(database), read_only=True) as conn:
        stored = dict(conn.execute(f"SELECT id, execution_time FROM {RAW_TRADES}").fetchall())
    assert {deal.id: stored[deal.id] for deal in deals} == {
        deal.id: shapes[deal.execution_time] for deal in deals
    }


def test_a_gap_reason_is_stored_exactly_whatever_it_holds(tmp_path):
    capture, database = tmp_path / "capture", tmp_path / "warehouse.duckdb"
    buffer = CaptureBuffer(capture)
    start = datetime(2026, 11, 25, 6, 0, tzinfo=UTC)
    reason = "peer's reset'); DROP TABLE energy.raw_trades; --"
    buffer.record_gap(Gap(start, start + timedelta(seconds=12.5), reason))
    drain_all(capture, database)
    with duckdb.connect(str(database), read_only=True) as conn:
        rows = conn.execute("SELECT reason, seconds FROM energy.feed_gaps").fetchall()
        assert conn.execute("SELECT count(*) FROM energy.raw_trades").fetchone() == (0,)
    assert rows == [(reason, 12.5)]


def test_an_unreadable_gap_file_is_quarantined_and_the_deals_beside_it_are_stored(tmp_path):
    """A gap file a disk corrupted holds no deal: the drain keeps its bytes in the quarantine
    with why, stores the deals beside it, and the next drain is not blocked by it."""
    deals = make_deals(120, seed=12)
    capture, database = tmp_path / "capture", tmp_path / "warehouse.duckdb"
    fill(capture, deals[:60])
    buffer = CaptureBuffer(capture)
    start = datetime(2026, 11, 25, 6, 0, tzinfo=UTC)
    torn = buffer.record_gap(Gap(start, start + timedelta(seconds=30), "reset"))
    torn.write_bytes(torn.read_bytes()[:20])
    first = drain_all(capture, database)
    assert first.rows_added == 60 and first.gaps == []
    (line,) = [
        json.loads(line)
        for path in (capture / "quarantine").glob("*.jsonl")
        for line in path.read_text().splitlines()
    ]
    assert torn.name in line["reason"] and line["raw"] == '{"gap_start": "2026-'
    fill(capture, deals[60:])
    assert drain_all(capture, database).rows_added == 60
    assert stored_deals(database) == expected(deals) and pending(capture) == 0
    assert table_count(database, "feed_gaps") == 0
