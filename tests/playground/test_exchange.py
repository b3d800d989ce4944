"""The stand-in exchange over a real websocket on loopback."""

from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import UTC, datetime

import pytest
import requests
from websockets.asyncio.client import connect

from energy_assets.playground.feed import MALFORMED_KINDS
from energy_assets.playground.server import ExchangeOptions
from energy_assets.trades.deal import FIELDS, Refused, parse_frame

from .conftest import read_connections, read_frames

START = datetime(2026, 3, 14, 9, 0, tzinfo=UTC)


def parse_all(frames):
    deals, invalid = [], []
    for text in frames:
        result = parse_frame(text)
        if isinstance(result, Refused):
            invalid.append(result.reason)
        else:
            deals.append(result)
    return deals, invalid


def test_default_feed_is_clean_and_matches_the_contract(start_playground):
    pg = start_playground(exchange=ExchangeOptions(rate=0, seed=3, max_deals=300))
    reading = read_frames(pg.exchange_url, done=pg.finished)
    assert pg.finished.is_set()
    assert len(reading.frames) == 300 and reading.closed is None  # no fault by default
    for text in reading.frames:
        message = json.loads(text)
        assert list(message) == ["deal_confirmation"]
        body = message["deal_confirmation"]
        assert list(body) == list(FIELDS)
        assert re.fullmatch(r"[0-9a-f]{32}", body["id"])
        assert isinstance(body["price"], float) and isinstance(body["quantity"], float)
        assert body["quantity"] > 0 and body["direction"] in ("buy", "sell")
        assert re.fullmatch(r"flex_trader_[1-5]", body["trader_id"])
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", body["delivery_day"])
        assert re.fullmatch(r"\d{2}-\d{2}", body["delivery_hour"])
        executed = datetime.fromisoformat(body["execution_time"])
        assert executed.utcoffset() is not None and body["execution_time"].endswith("+00:00")
        assert abs((datetime.now(UTC) - executed).total_seconds()) < 60
    deals, invalid = parse_all(reading.frames)
    assert invalid == []
    assert deals == pg.sent_deals
    assert pg.frames_sent == 300 and pg.duplicates_sent == 0 and pg.malformed_sent == 0
    assert min(deal.price for deal in deals) <= 0  # zero and negative prices do occur


def test_rate_paces_the_frames(start_playground):
    pg = start_playground(exchange=ExchangeOptions(rate=20, seed=1))
    started = time.monotonic()
    reading = read_frames(pg.exchange_url, count=21)
    elapsed = time.monotonic() - started
    assert len(reading.frames) == 21
    assert 0.9 <= elapsed < 4.0  # 20 intervals at 20/s: one second, never faster


def test_same_seed_gives_the_same_stream(start_playground):
    options = dict(rate=0, seed=42, start_time=START, max_deals=150)
    first = start_playground(exchange=ExchangeOptions(**options))
    second = start_playground(exchange=ExchangeOptions(**options))
    other = start_playground(exchange=ExchangeOptions(**{**options, "seed": 43}))
    frames = [
        read_frames(pg.exchange_url, done=pg.finished).frames for pg in (first, second, other)
    ]
    assert len(frames[0]) == 150
    assert frames[0] == frames[1]
    assert first.sent_deals == second.sent_deals
    assert not set(frames[0]) & set(frames[2])
    # On the wall clock only the times, and so the tradable period and its price level,
    # follow the clock.
    live = start_playground(exchange=ExchangeOptions(rate=0, seed=42, max_deals=150))
    read_frames(live.exchange_url, done=live.finished)
    assert [(d.id, d.quantity, d.direction, d.trader_id) for d in live.sent_deals] == [
        (d.id, d.quantity, d.direction, d.trader_id) for d in first.sent_deals
    ]


def test_one_stream_continues_across_connections(start_playground):
    """Each connection gets the frames that follow, as one listener reconnecting would."""
    options = dict(rate=0, seed=8, start_time=START, max_deals=40)
    split = start_playground(exchange=ExchangeOptions(**options, close_every=10))
    whole = start_playground(exchange=ExchangeOptions(**options))
    readings = read_connections(split.exchange_url, 4, done=split.finished)
    assert [len(r.frames) for r in readings] == [10, 10, 10, 10]
    joined = [text for reading in readings for text in reading.frames]
    assert joined == read_frames(whole.exchange_url, done=whole.finished).frames
    assert parse_all(joined)[0] == split.sent_deals
    assert split.connections == 4


def test_every_client_connected_gets_every_frame(start_playground):
    pg = start_playground(exchange=ExchangeOptions(rate=100, seed=2))

    async def two_clients():
        # max_queue=None: b's unread frames must not stall its closing handshake
        async with (
            connect(pg.exchange_url, max_queue=None) as a,
            connect(pg.exchange_url, max_queue=None) as b,
        ):
            first = [await a.recv() for _ in range(150)]
            second = [await b.recv() for _ in range(50)]
            return first, second

    first, second = asyncio.run(two_clients())
    # b joined a few frames after a, then saw the very same stream
    joined = first.index(second[0])
    assert first[joined : joined + 50] == second


def test_duplicates_repeat_an_id(start_playground):
    pg = start_playground(
        exchange=ExchangeOptions(rate=0, seed=5, duplicate_rate=0.3, max_deals=300)
    )
    reading = read_frames(pg.exchange_url, done=pg.finished)
    deals, invalid = parse_all(reading.frames)
    ids = [deal.id for deal in deals]
    repeats = len(ids) - len(set(ids))
    assert invalid == [] and 50 < repeats < 150
    assert repeats == pg.duplicates_sent
    first_seen = list({deal.id: deal for deal in deals}.values())
    assert first_seen == pg.sent_deals
    for deal in deals:  # a duplicate carries the very same deal
        assert deal == next(d for d in pg.sent_deals if d.id == deal.id)


def test_malformed_frames_cover_every_kind_and_fail_the_contract(start_playground):
    pg = start_playground(
        exchange=ExchangeOptions(rate=0, seed=6, malformed_rate=0.5, max_deals=200)
    )
    reading = read_frames(pg.exchange_url, done=pg.finished)
    deals, invalid = parse_all(reading.frames)
    assert deals == pg.sent_deals and len(deals) == 200
    assert len(invalid) == pg.malformed_sent and len(invalid) > 120
    assert set(pg.malformed_by_kind) == set(MALFORMED_KINDS)
    reasons = " | ".join(invalid)
    for words in (
        "not JSON",
        "frame must be a JSON object",
        "not a deal confirmation",
        "missing field",
        "must be a number, got str 'abc'",
        "quantity must be > 0",
        "delivery hour must be one of",
        "delivery day",
        "direction must be",
        "id must be 32 ASCII hex",
        "execution_time: instant must be ISO-8601 with an offset",
    ):
        assert words in reasons, words


def test_clean_close_every_n_frames(start_playground):
    pg = start_playground(exchange=ExchangeOptions(rate=0, seed=1, close_every=7))
    for reading in read_connections(pg.exchange_url, 2):
        assert len(reading.frames) == 7
        assert reading.closed is not None and reading.closed.rcvd is not None
        assert reading.closed.rcvd.code == 1000
    assert pg.clean_closes >= 2


def test_abrupt_drop_every_n_frames(start_playground):
    pg = start_playground(exchange=ExchangeOptions(rate=0, seed=1, drop_every=9))
    readings = read_connections(pg.exchange_url, 2)
    for reading in readings:
        assert len(reading.frames) == 9  # every frame written before the drop arrives
        assert reading.closed is not None
        assert reading.closed.rcvd is None  # no close frame: the TCP connection just ended
    assert parse_all(readings[0].frames + readings[1].frames)[0] == pg.sent_deals[:18]
    assert pg.drops >= 2


def test_trade_confirmation_envelope(start_playground):
    pg = start_playground(
        exchange=ExchangeOptions(rate=0, seed=4, envelope="trade_confirmation", max_deals=60)
    )
    frames = read_frames(pg.exchange_url, done=pg.finished).frames
    messages = [json.loads(text) for text in frames]
    assert all(list(message) == ["trade_confirmation"] for message in messages)
    times = [m["trade_confirmation"]["execution_time"] for m in messages]
    assert any(t.endswith("Z") for t in times) and any(t.endswith("+00:00") for t in times)
    assert parse_all(frames)[0] == pg.sent_deals


def test_mixed_envelopes(start_playground):
    pg = start_playground(exchange=ExchangeOptions(rate=0, seed=4, envelope="mixed", max_deals=60))
    frames = read_frames(pg.exchange_url, done=pg.finished).frames
    names = {name for text in frames for name in json.loads(text)}
    assert names == {"deal_confirmation", "trade_confirmation"}
    assert parse_all(frames)[0] == pg.sent_deals


def test_nothing_is_sent_while_nobody_listens(start_playground):
    pg = start_playground(exchange=ExchangeOptions(rate=50, seed=1))
    time.sleep(0.5)
    assert pg.frames_sent == 0 and pg.sent_deals == []
    read_frames(pg.exchange_url, count=5)
    assert len(pg.sent_deals) >= 5


def test_stop_then_start_is_an_outage_on_the_same_ports(start_playground):
    pg = start_playground(
        exchange=ExchangeOptions(rate=0, seed=12, start_time=START, close_every=5)
    )
    urls = pg.exchange_url, pg.market_data_url
    before = read_frames(pg.exchange_url).frames
    pg.stop()
    with pytest.raises(OSError):
        read_frames(pg.exchange_url)
    with pytest.raises(requests.ConnectionError):
        requests.get(pg.market_data_url + "/reference-price", timeout=2)
    pg.start()
    assert (pg.exchange_url, pg.market_data_url) == urls
    after = read_frames(pg.exchange_url).frames
    whole = start_playground(
        exchange=ExchangeOptions(rate=0, seed=12, start_time=START, max_deals=10)
    )
    assert before + after == read_frames(whole.exchange_url, done=whole.finished).frames
    assert requests.get(pg.market_data_url + "/", timeout=2).status_code == 404
    assert pg.requests_served == 1 and pg.connections == 2


def test_pause_holds_the_stream_between_two_frames(start_playground):
    """What a test needs to compare a listener's capture with sent_deals at any moment."""
    pg = start_playground(exchange=ExchangeOptions(rate=200, seed=3, start_time=START))

    async def listen():
        async with connect(pg.exchange_url) as connection:
            frames = [await connection.recv() for _ in range(20)]
            await asyncio.to_thread(pg.pause)
            sent_while_listening = list(pg.sent_deals)
            while True:  # everything sent before pause() returned, then silence
                try:
                    frames.append(await asyncio.wait_for(connection.recv(), 0.5))
                except TimeoutError:
                    break
            assert [parse_frame(text) for text in frames] == sent_while_listening
            assert pg.sent_deals == sent_while_listening
            pg.resume()
            frames += [await connection.recv() for _ in range(5)]
            return frames

    frames = asyncio.run(listen())
    whole = start_playground(
        exchange=ExchangeOptions(rate=0, seed=3, start_time=START, max_deals=len(frames))
    )
    expected = read_frames(whole.exchange_url, done=whole.finished).frames
    assert [parse_frame(t).id for t in frames] == [parse_frame(t).id for t in expected]
