"""The live book read straight from a capture buffer the listener's writer made."""

from __future__ import annotations

import gzip
import json
import os
from datetime import UTC, datetime, timedelta

from hypothesis import example, given, settings
from hypothesis import strategies as st

from energy_assets.trades.book import read_book
from energy_assets.trades.buffer import CaptureBuffer, archive

NOW = datetime(2026, 10, 24, 9, 0, tzinfo=UTC)
H10 = ("DE", datetime(2026, 10, 24, 10, 0, tzinfo=UTC), datetime(2026, 10, 24, 11, 0, tzinfo=UTC))
Q10 = ("DE", H10[1], H10[1] + timedelta(minutes=15))
GB = ("GB", H10[1], H10[1] + timedelta(minutes=30))


def record(n: int, trader: str, direction: str, mw: float, period=None, legacy=None) -> dict:
    line = {
        "id": f"{n:032x}",
        "price": 50.0,
        "quantity": mw,
        "direction": direction,
        "trader_id": trader,
        "execution_time": "2026-10-24T08:59:00+00:00",
        "received_at": "2026-10-24T08:59:00.100000+00:00",
    }
    if legacy:
        line["delivery_day"], line["delivery_hour"] = legacy
    if period:
        market, start, end = period
        line |= {
            "market": market,
            "delivery_start": start.isoformat(),
            "delivery_end": end.isoformat(),
            "delivery_day": "2026-10-24",
            "delivery_hour": "12-13",
        }
    return line


def test_open_mw_nets_per_trader_and_adds_up_across_traders(tmp_path):
    buffer = CaptureBuffer(tmp_path)
    lines = [
        record(1, "ann", "buy", 5.0, H10),
        record(2, "ann", "sell", 2.0, H10),  # ann: +3
        record(3, "bob", "sell", 4.0, H10),  # bob: -4 -> |3| + |-4| = 7
        record(4, "ann", "buy", 1.0, Q10),
        record(5, "ann", "sell", 1.0, Q10),  # closed: traded, not open
        record(6, "cy", "buy", 2.5, GB),
        record(2, "ann", "sell", 2.0, H10),  # the same deal twice
    ]
    for line in lines[:4]:
        buffer.append_record(line)
    sealed = buffer.seal()
    archive([sealed], tmp_path)  # drained segments are kept: still part of the book
    for line in lines[4:]:
        buffer.append_record(line)
    book = read_book(tmp_path, NOW)
    assert book.open_mw == {H10: 7.0, GB: 2.5}
    assert book.traded == {H10, Q10, GB}
    assert book.deals == 6


def test_the_contracts_first_form_is_the_default_markets_local_hour(tmp_path):
    buffer = CaptureBuffer(tmp_path)
    # Berlin's 12-13 on 24 October (CEST) is 10:00-11:00 UTC; the repeated 02-03 of the next
    # night names no period and is left to the drain's quarantine.
    buffer.append_record(record(1, "ann", "buy", 2.0, legacy=("2026-10-24", "12-13")))
    buffer.append_record(record(2, "ann", "buy", 5.0, legacy=("2026-10-25", "02-03")))
    buffer.seal()
    assert read_book(tmp_path, NOW).open_mw == {H10: 2.0}


def test_a_torn_last_line_and_garbage_are_skipped(tmp_path):
    buffer = CaptureBuffer(tmp_path)
    buffer.append_record(record(1, "ann", "buy", 2.0, H10))
    buffer.append_record({"id": "x", "quantity": "lots", "direction": "up"})
    with open(next((tmp_path / "segments").iterdir()), "ab") as segment:
        segment.write(b'{"id":"00000000000000000000000000000002","quantity":9')
    assert read_book(tmp_path, NOW).open_mw == {H10: 2.0}


def test_files_older_than_the_lookback_are_not_read(tmp_path):
    buffer = CaptureBuffer(tmp_path)
    buffer.append_record(record(1, "ann", "buy", 2.0, H10))
    sealed = buffer.seal()
    old = (NOW - timedelta(hours=60)).timestamp()
    os.utime(sealed, (old, old))
    assert read_book(tmp_path, NOW).open_mw == {}


def test_an_empty_or_missing_buffer_is_an_empty_book(tmp_path):
    assert read_book(tmp_path / "nowhere", NOW).open_mw == {}
    CaptureBuffer(tmp_path)
    assert read_book(tmp_path, NOW).deals == 0


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(max_size=80), max_size=8))
@example([b"x\x01", b"\x00\x05"])  # zlib's magic: polars read it as compressed, and raised
def test_any_bytes_in_a_segment_give_a_book(tmp_path_factory, blobs):
    directory = tmp_path_factory.mktemp("buffer")
    CaptureBuffer(directory)
    (directory / "segments" / "x.jsonl").write_bytes(b"\n".join(blobs) + b"\n")
    assert read_book(directory, NOW).deals >= 0


def test_a_compressed_segment_is_not_read_as_deals(tmp_path):
    CaptureBuffer(tmp_path)
    line = json.dumps(record(1, "ann", "buy", 5.0, H10)).encode() + b"\n"
    (tmp_path / "segments" / "x.jsonl").write_bytes(gzip.compress(line))
    assert read_book(tmp_path, NOW).deals == 0
