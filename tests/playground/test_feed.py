"""The exchange's frame stream, without a socket: good deals, duplicates, malformed frames."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from energy_assets.markets import MARKETS, open_periods
from energy_assets.playground.feed import (
    MALFORMED_KINDS,
    DealGenerator,
    FrameStream,
    malformed_frame,
    malformed_variants,
)
from energy_assets.trades.deal import FIELDS, LEGACY_FIELDS, REQUIRED, Deal, Refused, parse_frame

T0 = datetime(2026, 3, 14, 22, 30, 5, tzinfo=UTC)


def clock(n: int) -> datetime:
    return T0 + timedelta(seconds=n)


def test_generated_deals_are_valid_and_realistic():
    generator = DealGenerator(seed=11, traders=15)
    deals = [generator.next_deal(clock(n)) for n in range(3000)]
    for n, deal in enumerate(deals):
        assert parse_frame(deal.to_frame()) == deal
        executed = datetime.fromisoformat(deal.execution_time)
        assert executed == clock(n) and deal.execution_time.endswith("+00:00")
        # tradable: from the next period before gate closure to the end of the next local day
        assert deal.period in open_periods(deal.market, executed, deal.period.minutes)
    assert len({deal.id for deal in deals}) == len(deals)
    assert {deal.trader_id for deal in deals} == {f"flex_trader_{n}" for n in range(1, 16)}
    assert {deal.direction for deal in deals} == {"buy", "sell"}
    assert min(deal.quantity for deal in deals) > 0
    prices = [deal.price for deal in deals]
    assert 0.0 in prices and min(prices) < 0
    assert 20 < sorted(prices)[len(prices) // 2] < 150
    # 23:30 in Berlin, 22:30 in London (whose last half-hour closed at 22:30): the next local
    # day opens at midnight, the 16th in Berlin during the run, not yet in London.
    assert {(d.market, d.delivery_day) for d in deals} == {
        ("DE", "2026-03-14"),
        ("DE", "2026-03-15"),
        ("DE", "2026-03-16"),
        ("GB", "2026-03-15"),
    }
    products = {(deal.market, deal.period.minutes) for deal in deals}
    assert products == {(code, m) for code in MARKETS for m in MARKETS[code].products_minutes}


def test_legacy_frames_are_berlins_hours_by_label_alone_across_the_fall_back_night():
    stream = FrameStream(seed=5, legacy=True)
    night = datetime(2026, 10, 24, 21, 0, tzinfo=UTC)
    for n in range(2000):
        frame = stream.next_frame(night + timedelta(seconds=15 * n))
        body = json.loads(frame.text)["deal_confirmation"]
        assert list(body) == list(LEGACY_FIELDS)
        deal = parse_frame(frame.text)  # never the 02-03 that happens twice
        assert (deal.market, deal.period.minutes) == ("DE", 60)
        assert deal == frame.deal


@pytest.mark.parametrize("kind", MALFORMED_KINDS)
def test_every_malformed_variant_fails_the_contract(kind):
    generator = DealGenerator(seed=2, traders=5)
    for base in [generator.next_deal(clock(n)) for n in range(3)]:
        texts = set()
        for variant in range(malformed_variants(kind)):
            text = malformed_frame(kind, variant, base)
            assert isinstance(parse_frame(text), Refused)
            texts.add(text)
        assert len(texts) == malformed_variants(kind)  # no variant is another's copy


def test_malformed_kinds_are_what_they_say():
    base = DealGenerator(seed=2, traders=5).next_deal(T0)

    def parsed(text):
        try:
            return json.loads(text)
        except ValueError:
            return None

    for variant in range(malformed_variants("not_json")):
        text = malformed_frame("not_json", variant, base)
        with pytest.raises(ValueError):
            json.loads(text)
    for variant in range(malformed_variants("not_object")):
        assert not isinstance(parsed(malformed_frame("not_object", variant, base)), dict)
    missing = [
        set(FIELDS) - set(parsed(malformed_frame("missing_field", v, base))["deal_confirmation"])
        for v in range(malformed_variants("missing_field"))
    ]
    delivery = {"delivery_day", "delivery_hour", "delivery_start", "delivery_end"}
    assert missing == [{name} for name in REQUIRED] + [{"delivery_end"}, delivery]
    mistyped = [
        parsed(malformed_frame("mistyped_field", v, base))["deal_confirmation"]
        for v in range(malformed_variants("mistyped_field"))
    ]
    assert {"price": "abc"}.items() <= mistyped[0].items()


def test_same_seed_and_clock_give_the_same_frames():
    def frames(seed):
        stream = FrameStream(seed, 5, "mixed", duplicate_rate=0.2, malformed_rate=0.2)
        return [stream.next_frame(clock(n)).text for n in range(500)]

    assert frames(4) == frames(4)
    assert frames(4) != frames(5)


def test_faults_do_not_change_the_good_deals():
    clean = FrameStream(seed=9)
    faulty = FrameStream(seed=9, duplicate_rate=0.3, malformed_rate=0.3)
    clean_deals = [clean.next_frame(T0).deal for _ in range(200)]
    faulty_frames = [faulty.next_frame(T0) for _ in range(600)]
    first_seen = []
    for frame in faulty_frames:
        if frame.kind == "deal":
            first_seen.append(frame.deal)
    assert first_seen[:200] == clean_deals


def test_duplicates_repeat_the_original_frame_soon_after():
    stream = FrameStream(seed=1, duplicate_rate=0.5)
    frames = [stream.next_frame(T0) for _ in range(400)]
    positions = {}
    duplicates = 0
    for n, frame in enumerate(frames):
        if frame.kind == "duplicate":
            duplicates += 1
            original = positions[frame.deal.id]
            assert frames[original].text == frame.text
            assert 0 < n - original <= 10
        else:
            positions[frame.deal.id] = n
    assert 100 < duplicates < 200


def test_envelopes():
    for envelope, names in (
        ("deal_confirmation", {"deal_confirmation"}),
        ("trade_confirmation", {"trade_confirmation"}),
        ("mixed", {"deal_confirmation", "trade_confirmation"}),
    ):
        stream = FrameStream(seed=3, envelope=envelope)
        messages = [json.loads(stream.next_frame(T0).text) for _ in range(100)]
        assert {name for message in messages for name in message} == names
        times = {body["execution_time"][-1] for m in messages for body in m.values()}
        # Only the newer spec's envelope writes UTC as Z, and it does so now and then.
        assert ("Z" in times) == (envelope != "deal_confirmation")
        assert all(isinstance(parse_frame(json.dumps(m)), Deal) for m in messages)


def test_malformed_rate_one_sends_nothing_but_malformed_frames():
    stream = FrameStream(seed=1, malformed_rate=1.0)
    assert {stream.next_frame(T0).kind for _ in range(100)} == {"malformed"}


def test_invalid_options_are_refused():
    for options in (
        {"envelope": "trade"},
        {"duplicate_rate": 1.5},
        {"malformed_rate": -0.1},
        {"malformed_rate": 1.01},
        {"traders": 0},
    ):
        with pytest.raises(ValueError):
            FrameStream(**options)
