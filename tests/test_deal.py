"""The contract's deal confirmation: what passes, and why everything else is refused.

`parse_frame` is total: for any frame it returns a Deal or a Refused reason, never raises, and
every deal it accepts passes the blocking checks on `raw_trades` once stored by the real drain.
"""

import itertools
import json
import tempfile
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from energy_assets.markets import EARLIEST, LATEST, MARKETS
from energy_assets.trades.assets import blocking_check_failures
from energy_assets.trades.buffer import CaptureBuffer, deal_record
from energy_assets.trades.deal import ENVELOPES, FIELDS, Deal, Refused, parse_frame
from energy_assets.trades.drain import drain

GOOD = {
    "id": "3624e95119f04b7bb054b2f91a980a83",
    "price": 20.64,
    "quantity": 1.2,
    "direction": "sell",
    "delivery_day": "2023-02-21",
    "delivery_hour": "15-16",
    "trader_id": "flex_trader_4",
    "execution_time": "2023-02-21T06:13:43+00:00",
}
#: The parser's clock in the property tests: execution times up to a day after it pass.
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def frame(**fields) -> str:
    return json.dumps({"deal_confirmation": {**GOOD, **fields}})


def reason(text: str | bytes) -> str:
    result = parse_frame(text, NOW)
    assert isinstance(result, Refused), f"accepted {text!r}"
    assert result.reason
    return result.reason


@pytest.mark.parametrize("envelope", ENVELOPES)
def test_both_envelopes_parse_to_the_same_deal(envelope):
    deal = parse_frame(json.dumps({envelope: GOOD}))
    # Without `market` and instants: the default market's (Berlin's) hour, 15:00-16:00 CET.
    assert deal == Deal(
        **GOOD,
        market="DE",
        delivery_start="2023-02-21T14:00:00+00:00",
        delivery_end="2023-02-21T15:00:00+00:00",
    )
    assert parse_frame(deal.to_frame(envelope)) == deal


def test_a_hex_id_in_upper_or_mixed_case_is_the_same_deal_as_in_lower_case():
    lower = parse_frame(frame())
    assert parse_frame(frame(id=GOOD["id"].upper())) == lower
    assert parse_frame(frame(id="3624E95119f04B7bb054b2f91A980a83")) == lower
    assert parse_frame(frame(id="3624G95119f04b7bb054b2f91a980a83")).reason.startswith("id must")


def test_an_execution_time_to_the_nanosecond_is_stored_to_the_microsecond(tmp_path):
    """Java's `Instant` and Go's RFC3339Nano write up to 9 digits of the second."""
    deal = parse_frame(frame(execution_time="2023-02-21T07:13:43.123456789+01:00"), NOW)
    buffer = CaptureBuffer(tmp_path / "capture")
    buffer.append(deal, NOW)
    buffer.close()
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as conn:
        drain(conn, tmp_path / "capture")
        stored = conn.execute("SELECT execution_time FROM energy.raw_trades").fetchone()[0]
    assert stored == datetime(2023, 2, 21, 6, 13, 43, 123456, tzinfo=UTC)
    # The offset without its colon, as Java's SimpleDateFormat writes it: the same instant.
    basic = parse_frame(frame(execution_time="2023-02-21T07:13:43.123456789+0100"), NOW)
    assert basic.delivery_start == deal.delivery_start
    assert deal_record(basic, NOW)["execution_time"] == "2023-02-21T06:13:43.123456+00:00"
    # `t` and `z` in lower case, which RFC 3339 (§5.6) reads ISO-8601 as allowing.
    lower = parse_frame(frame(execution_time="2023-02-21t07:13:43.123456789+0100"), NOW)
    assert deal_record(lower, NOW) == deal_record(basic, NOW)
    zulu = parse_frame(frame(execution_time="2023-02-21t06:13:43.123456z"), NOW)
    assert deal_record(zulu, NOW) == deal_record(basic, NOW)
    comma = parse_frame(frame(execution_time="2023-02-21T06:13:43,123456Z"), NOW)
    assert deal_record(comma, NOW) == deal_record(basic, NOW)
    # An offset in whole hours, as SimpleDateFormat's `X` writes it.
    hours = parse_frame(frame(execution_time="2023-02-21T07:13:43.123456+01"), NOW)
    assert deal_record(hours, NOW) == deal_record(basic, NOW)
    period = {"delivery_start": "2023-02-21T14:00:00Z", "delivery_end": "2023-02-21T15:00:00Z"}
    lowered = {name: value.lower() for name, value in period.items()}
    assert parse_frame(frame(**lowered)) == parse_frame(frame(**period)) == parse_frame(frame())
    ten_digits = parse_frame(frame(execution_time="2023-02-21T06:13:43.1234567890Z"), NOW)
    assert ten_digits.reason.startswith("execution_time: instant must be ISO-8601")


def test_a_byte_order_mark_before_the_json_is_ignored():
    assert parse_frame("\ufeff" + frame()) == parse_frame(frame())
    assert parse_frame(("\ufeff" + frame()).encode()) == parse_frame(frame())
    assert parse_frame("\ufeff\ufeff" + frame()).reason.startswith("frame is not JSON")


def test_an_optional_field_sent_as_null_is_left_out():
    """Serialisers such as Jackson write an optional field they do not fill as null."""
    nulls = {"market": None, "delivery_start": None, "delivery_end": None}
    assert parse_frame(frame(**nulls)) == parse_frame(frame())
    assert parse_frame(frame(delivery_hour=None)).reason == "missing field(s): delivery_hour"


def test_limits_zero_and_negative_prices_and_z_suffix_are_valid():
    deal = parse_frame(
        json.dumps(
            {"trade_confirmation": {**GOOD, "price": -3, "execution_time": "2023-02-21T06:13:43Z"}}
        )
    )
    assert deal.price == -3.0
    assert parse_frame(frame(price=0)).price == 0.0
    assert str(parse_frame(frame(price=-0.0)).price) == "0.0"
    assert parse_frame(frame(price=-9999, quantity=10_000)).price == -9999.0
    assert parse_frame(frame(price=9999.0, quantity=0.1)).quantity == 0.1
    # An instant with another offset, as late as the clock allows (a day of skew).
    late = parse_frame(frame(execution_time="2026-11-27T12:59:59.5+01:00"), NOW)
    assert isinstance(late, Deal)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "JSON object"),
        ('"text"', "JSON object"),
        (b"\xff\xfe", "not UTF-8"),
        ("[" * 100_000 + "]" * 100_000, "nests JSON too deeply"),
        (json.dumps({"heartbeat": {}}), "not a deal confirmation"),
        (json.dumps({"deal_confirmation": [1]}), "JSON object"),
        (json.dumps({"deal_confirmation": GOOD, "trade_confirmation": GOOD}), "both envelopes"),
        (
            json.dumps({"deal_confirmation": {k: v for k, v in GOOD.items() if k != "price"}}),
            "missing field",
        ),
        (frame(price="abc"), "price must be a number"),
        (frame(price="20.64"), "price must be a number"),
        (frame(quantity=True), "quantity must be a number"),
        (frame(quantity=0), "quantity must be > 0"),
        (frame(quantity=-1.5), "quantity must be within"),
        (frame(direction="hold"), "direction"),
        (frame(direction=["buy"]), "direction"),
        (frame(id="xyz"), "id must be"),
        (frame(id=GOOD["id"] + "\n"), "id must be"),
        (frame(id="Ａ" + GOOD["id"][1:]), "id must be"),
        (frame(id=42), "id must be a string"),
        (frame(delivery_day="2023-02-30"), "day"),
        (frame(delivery_day="21.02.2023"), "day"),
        (frame(delivery_hour="24-25"), "delivery hour"),
        (frame(delivery_hour="15-17"), "delivery hour"),
        (frame(delivery_hour=15), "delivery hour"),
        (frame(trader_id=""), "trader_id"),
        (frame(trader_id="  "), "trader_id"),
        (frame(execution_time="yesterday"), "ISO-8601"),
        (frame(execution_time="2023-02-21T06:13:43"), "ISO-8601"),
        (frame(execution_time="2023-02-21 06:13:43+00:00"), "ISO-8601"),
        ('{"deal_confirmation": {"price": NaN}}', "missing field"),
        # The hostile frames: each raised or was stored before.
        (frame(price=int("9" * 401)), "price must be within"),
        ('{"deal_confirmation": {"price": ' + "9" * 5000 + "}}", "not JSON"),
        (frame(price=1e308), "price must be within"),
        (frame(quantity=1e308), "quantity must be within"),
        (frame(price=float("nan")), "price must be finite"),
        (frame(quantity=float("inf")), "quantity must be finite"),
        (frame(price=-float("inf")), "price must be finite"),
        (frame(execution_time="0001-01-01T00:30:00+01:00"), "is outside 2000..8999"),
        (frame(execution_time="9999-12-31T23:30:00-01:00"), "is outside 2000..8999"),
        (frame(execution_time="1999-12-31T23:59:59Z"), "is outside 2000..8999"),
        (frame(execution_time="2026-11-27T12:00:01Z"), "is after 2026-11-27T12:00:00+00:00"),
        (frame(execution_time="2023-02-21T06:13:43+24:00"), "not a valid date and time"),
        (frame(delivery_day="0001-01-01"), "delivery_day must be in the years 2000..8999"),
        (frame(delivery_day="9999-12-31"), "delivery_day must be in the years 2000..8999"),
        (frame(delivery_day="1999-12-31"), "delivery_day must be in the years 2000..8999"),
        (frame(delivery_day="9000-01-01"), "delivery_day must be in the years 2000..8999"),
        (frame(delivery_hour="07-08\n"), "delivery hour"),
        (frame(delivery_hour="０７-０８"), "delivery hour"),
        (frame(delivery_hour="٠٧-٠٨"), "delivery hour"),
        (frame(delivery_day="２０２３-02-21"), "delivery day"),
        (frame(delivery_day="2023-02-21\n"), "delivery day"),
        (frame(execution_time="２023-02-21T06:13:43Z"), "ISO-8601"),
        (frame(execution_time="2023-02-21T06:13:43Z\n"), "ISO-8601"),
        (frame(trader_id="trader_\ud800"), "trader_id"),
        (frame(trader_id="trader\x00"), "trader_id"),
        (frame(trader_id="trader\n"), "trader_id"),
        (frame(trader_id="x" * 65), "trader_id"),
        (frame(trader_id="ｔrader"), "trader_id"),
        # Parsers disagree on which of two values counts: Python's keeps the last.
        (frame().replace('"quantity": 1.2', '"quantity": 1.2, "quantity": 1000'), "ambiguous"),
        (
            frame().replace(
                '{"deal_confirmation"', '{"deal_confirmation": {}, "deal_confirmation"'
            ),
            "key 'deal_confirmation' given twice with different values",
        ),
    ],
)
def test_malformed_and_hostile_frames_are_refused_with_a_reason(text, why):
    assert why in reason(text)


def by_instants(**fields) -> str:
    """A frame of the newer form without labels: its period named by instants alone."""
    labelled = ("delivery_day", "delivery_hour")
    deal = {k: v for k, v in GOOD.items() if k not in labelled}
    return json.dumps({"deal_confirmation": deal | fields})


def test_a_far_delivery_is_booked_and_a_sentinel_or_pre_2000_one_quarantined():
    """A confirmed deal is never refused for how far ahead it delivers (contract §5); only the
    years no exchange can have meant are bad input: before 2000, from 9000 on."""
    far = parse_frame(frame(delivery_day="2999-01-01"), NOW)
    assert (far.delivery_start, far.delivery_end) == (
        "2999-01-01T14:00:00+00:00",
        "2999-01-01T15:00:00+00:00",
    )
    gb = parse_frame(
        by_instants(
            market="GB", delivery_start="2150-06-01T10:00Z", delivery_end="2150-06-01T10:30Z"
        ),
        NOW,
    )
    assert (gb.delivery_day, gb.delivery_hour) == ("2150-06-01", "11-12")  # London's summer
    last = parse_frame(frame(delivery_day="8999-12-31", delivery_hour="23-24"), NOW)
    assert last.delivery_end == "8999-12-31T23:00:00+00:00"
    assert "in the years 2000..8999" in reason(frame(delivery_day="9999-12-31"))
    assert "in the years 2000..8999" in reason(frame(delivery_day="1999-12-31"))
    # Inside the years by one of day and instants, outside by the other: Berlin's first hour
    # of 2000 starts in 1999 (UTC), the last UTC quarter-hours of 8999 are 9000 in Berlin.
    first = frame(delivery_day="2000-01-01", delivery_hour="00-01")
    assert "outside the years 2000..8999" in reason(first)
    after = by_instants(delivery_start="8999-12-31T23:30:00Z", delivery_end="8999-12-31T23:45Z")
    assert "outside the years 2000..8999" in reason(after)
    assert "outside 2000..8999" in reason(
        by_instants(delivery_start="9999-12-31T23:00Z", delivery_end="9999-12-31T23:15Z")
    )
    assert "outside 2000..8999" in reason(
        by_instants(delivery_start="1999-12-31T22:00Z", delivery_end="1999-12-31T23:00Z")
    )


def test_refused_frames_with_huge_fields_are_not_held_in_memory():
    """The parser remembers the periods it resolved; a hostile feed's long fields must not be
    kept with them (40 frames of 256 KiB would hold 10 MiB)."""
    tracemalloc.start()
    try:
        for n in range(40):
            assert "delivery day" in reason(frame(delivery_day=f"{n}" + "9" * 2**18))
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < 2**20


# -- properties ---------------------------------------------------------------------------

#: Any character, lone surrogates and controls included (Hypothesis leaves surrogates out of
#: text by default).
ANY_CHAR = st.characters(codec=None, exclude_categories=())
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**300, max_value=10**420)
    | st.floats()
    | st.text(ANY_CHAR, max_size=20),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(ANY_CHAR, max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(value=json_values, envelope=st.sampled_from(ENVELOPES), field=st.sampled_from(FIELDS))
def test_any_json_value_gives_a_deal_or_a_reason(value, envelope, field):
    for message in (value, {envelope: value}, {envelope: {**GOOD, field: value}}):
        for ensure_ascii in (True, False):
            result = parse_frame(json.dumps(message, ensure_ascii=ensure_ascii), NOW)
            assert isinstance(result, Deal) or (isinstance(result, Refused) and result.reason)


@settings(max_examples=200, deadline=None)
@given(text=st.text(ANY_CHAR, max_size=200) | st.binary(max_size=200))
def test_any_text_gives_a_deal_or_a_reason(text):
    result = parse_frame(text, NOW)
    assert isinstance(result, Deal | Refused)


_UNICODE_DIGITS = ["０１２３４５６７８９", "٠١٢٣٤٥٦٧٨٩", "۰۱۲۳۴۵۶۷۸۹", "०१२३४५६७८९", "𝟎𝟏𝟐𝟑𝟒𝟓𝟔𝟕𝟖𝟗"]


@st.composite
def look_alikes(draw, good: str) -> str:
    """`good` with some ASCII digits replaced by another script's, or a trailing newline or
    space, or cut short."""
    digits = draw(st.sampled_from(_UNICODE_DIGITS))
    chars = [
        digits[int(c)] if c.isdigit() and c.isascii() and draw(st.booleans()) else c for c in good
    ]
    text = "".join(chars)
    tail = draw(st.sampled_from(["", "\n", " ", "\r\n", "\x00", "\u200b"]))
    cut = draw(st.integers(0, len(text)))
    return draw(st.sampled_from([text + tail, text[:cut], " " + text]))


def hostile(good):
    sentinels = st.sampled_from(
        [
            "0001-01-01",
            "9999-12-31",
            "0001-01-01T00:30:00+01:00",
            "9999-12-31T23:30:00-01:00",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999+00:00",
            "1970-01-01T00:00:00Z",
            "2999-01-01",
            "2999-01-01T00:00:00Z",
            "1999-12-31T23:30:00-01:00",
            "1999-12-31T23:00:00Z",
            "2099-12-31",
            "2000-01-01",
            "2000-01-01T00:00:00Z",
            "8999-12-31",
            "8999-12-31T23:00:00Z",
            "8999-12-31T23:45:00+00:00",
            "9000-01-01",
            "9000-01-01T00:00:00Z",
            "9000-01-01T00:30:00+01:00",
        ]
    )
    numbers = (
        st.integers()
        | st.integers(min_value=10**300, max_value=10**420).map(lambda n: n * -1 if n % 2 else n)
        | st.floats()
        | st.sampled_from([1e308, -1e308, 9999, -9999, 9999.0000001, 10_000, 10_000.000001, 5e-324])
    )
    other = st.none() | st.booleans() | st.lists(st.integers(), max_size=2) | st.just({})
    texts = st.text(ANY_CHAR, max_size=40)
    strategies = [sentinels, numbers, other, texts]
    if isinstance(good, str):
        strategies.append(look_alikes(good))
    return st.one_of(strategies)


@st.composite
def edge_delivery(draw) -> dict:
    """The delivery fields of a period of any market and product within 8 periods of the
    years' bounds (2000-01-01, 9000-01-01 UTC), by instants, labels or both."""
    code = draw(st.sampled_from(sorted(MARKETS)))
    minutes = draw(st.sampled_from(MARKETS[code].products_minutes))
    bound = draw(st.sampled_from([EARLIEST, LATEST]))
    start = bound + timedelta(minutes=minutes * draw(st.integers(-8, 7)))
    local = start.astimezone(MARKETS[code].tz)
    labels = {
        "delivery_day": local.date().isoformat(),
        "delivery_hour": f"{local.hour:02d}-{local.hour + 1:02d}",
    }
    instants = {
        "delivery_start": start.isoformat(),
        "delivery_end": (start + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z"),
    }
    form = draw(st.sampled_from(["labels", "instants", "both"]))
    return (
        {"market": code}
        | (instants if form != "labels" else {})
        | (labels if form != "instants" else {})
    )


@st.composite
def mutated_frames(draw) -> str:
    deal = dict(GOOD)
    # A recent execution and delivery, so good values survive beside the mutated ones.
    deal["execution_time"] = "2026-11-26T06:13:43.123+01:00"
    deal["delivery_day"] = "2026-11-27"
    deal["id"] = f"{draw(st.integers(0, 2**128 - 1)):032x}"
    delivery = draw(st.sampled_from(["labels", "instants", "edge"]))
    if delivery == "instants":  # the newer form (contract §5): Berlin's 15-16 by its instants
        deal["market"] = draw(st.sampled_from(["DE", "GB"]))
        deal["delivery_start"] = "2026-11-27T14:00:00Z"
        deal["delivery_end"] = draw(st.sampled_from(["2026-11-27T15:00:00Z", "2026-11-27T14:30Z"]))
    elif delivery == "edge":  # a period next to the first or the last year a deal may be in
        del deal["delivery_day"], deal["delivery_hour"]
        deal |= draw(edge_delivery())
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=3, unique=True)):
        if draw(st.sampled_from(["mutate"] * 9 + ["delete"])) == "delete":
            deal.pop(name, None)
        else:
            deal[name] = draw(hostile(deal.get(name)))
    envelope = draw(st.sampled_from(ENVELOPES))
    return json.dumps({envelope: deal}, ensure_ascii=draw(st.booleans()))


_examples = itertools.count()


@pytest.fixture(scope="module")
def scratch() -> Path:
    with tempfile.TemporaryDirectory() as directory:
        yield Path(directory)


@pytest.fixture(scope="module")
def warehouse(scratch):
    """One connection for every example: opening and closing the file cost a third of each."""
    with duckdb.connect(str(scratch / "warehouse.duckdb")) as conn:
        yield conn


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(mutated_frames(), min_size=1, max_size=15))
def test_mutated_good_frames_give_a_deal_or_a_reason_and_deals_pass_the_checks(
    scratch, warehouse, texts
):
    """What the parser accepts, the real drain stores and every blocking check passes: the
    checks on `raw_trades` guard against corruption, never against input."""
    capture = scratch / f"capture-{next(_examples)}"
    buffer = CaptureBuffer(capture)
    for text in texts:
        result = parse_frame(text, NOW)
        assert isinstance(result, Deal) or (isinstance(result, Refused) and result.reason)
        if isinstance(result, Deal):
            buffer.append(result, NOW)
    buffer.close()
    drain(warehouse, capture)
    failures = blocking_check_failures(warehouse)
    assert not any(failures.values()), failures
