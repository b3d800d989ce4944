"""Deals in real markets (contract §5): what is booked, at which instants, and what is
quarantined with its reason; then the same through the drain into `energy.raw_trades`."""

import json
from datetime import UTC, datetime, timedelta

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from energy_assets.markets import MARKETS, day_periods
from energy_assets.trades.buffer import CaptureBuffer, deal_record
from energy_assets.trades.deal import InvalidFrame, Refused, parse_frame, validate_deal
from tests.trades.conftest import drain_all

BASE = {
    "id": "3624e95119f04b7bb054b2f91a980a83",
    "price": 20.64,
    "quantity": 1.2,
    "direction": "sell",
    "trader_id": "flex_trader_4",
    "execution_time": "2026-10-24T06:13:43Z",
}


def frame(**fields) -> str:
    return json.dumps({"trade_confirmation": BASE | fields})


def refused(**fields) -> str:
    result = parse_frame(frame(**fields))
    assert isinstance(result, Refused)
    return result.reason


# -- The "Bad input": each quarantined with its reason -------------------------------


def test_the_spring_forward_hour_does_not_exist_in_de():
    reason = refused(delivery_day="2026-03-29", delivery_hour="02-03")
    assert "2026-03-29 02-03 in DE (Europe/Berlin) does not exist" in reason


def test_the_repeated_fall_back_hour_without_delivery_start_is_not_guessed():
    reason = refused(delivery_day="2026-10-25", delivery_hour="02-03")
    assert "happens twice" in reason and "delivery_start" in reason


def test_a_label_and_instants_that_disagree():
    reason = refused(
        market="DE",
        delivery_day="2026-10-25",
        delivery_hour="03-04",
        delivery_start="2026-10-25T00:00:00Z",
        delivery_end="2026-10-25T01:00:00Z",
    )
    assert "name different periods" in reason


def test_a_20_minute_product_and_a_product_of_another_market():
    assert "20-minute period is not a product of DE" in refused(
        market="DE", delivery_start="2026-10-25T10:00:00Z", delivery_end="2026-10-25T10:20:00Z"
    )
    assert "60-minute period is not a product of GB" in refused(
        market="GB", delivery_start="2026-10-25T10:00:00Z", delivery_end="2026-10-25T11:00:00Z"
    )
    assert "GB trades no hours" in refused(
        market="GB", delivery_day="2026-10-26", delivery_hour="10-11"
    )


def test_an_unknown_market_and_off_grid_or_sentinel_instants():
    assert "unknown market 'FR'" in refused(
        market="FR", delivery_start="2026-10-25T10:00:00Z", delivery_end="2026-10-25T11:00:00Z"
    )
    assert "unknown market 'de'" in refused(market="de", delivery_day="2026-10-26")
    assert "grid" in refused(
        market="DE", delivery_start="2026-10-25T10:05:00Z", delivery_end="2026-10-25T10:20:00Z"
    )
    assert "outside 2000..8999" in refused(
        delivery_start="9999-12-31T23:00:00Z", delivery_end="9999-12-31T23:15:00Z"
    )
    assert "missing field(s): delivery_end" in refused(delivery_start="2026-10-25T10:00:00Z")
    assert "missing field(s): delivery_day, delivery_hour" in refused()


# -- What is booked ------------------------------------------------------------------------


def test_both_02_03_hours_of_25_october_are_booked_by_their_instants():
    first = parse_frame(
        frame(delivery_start="2026-10-25T02:00:00+02:00", delivery_end="2026-10-25T03:00:00+02:00")
    )
    second = parse_frame(
        frame(
            market="DE",
            delivery_day="2026-10-25",
            delivery_hour="02-03",
            delivery_start="2026-10-25T01:00:00Z",
            delivery_end="2026-10-25T02:00:00Z",
        )
    )
    assert (first.delivery_day, first.delivery_hour) == ("2026-10-25", "02-03")
    assert (second.delivery_day, second.delivery_hour) == ("2026-10-25", "02-03")
    assert (first.delivery_start, first.delivery_end) == (
        "2026-10-25T00:00:00+00:00",
        "2026-10-25T01:00:00+00:00",
    )
    assert (second.delivery_start, second.delivery_end) == (
        "2026-10-25T01:00:00+00:00",
        "2026-10-25T02:00:00+00:00",
    )


def test_a_quarter_hour_and_a_gb_half_hour_with_their_display_labels():
    quarter = parse_frame(
        frame(market="DE", delivery_start="2026-06-01T08:15:00Z", delivery_end="2026-06-01T08:30Z")
    )
    assert (quarter.market, quarter.delivery_day, quarter.delivery_hour) == (
        "DE",
        "2026-06-01",
        "10-11",
    )
    assert quarter.period.minutes == 15
    half = parse_frame(
        frame(
            market="GB",
            delivery_day="2026-10-25",
            delivery_hour="01-02",
            delivery_start="2026-10-25T01:30:00+00:00",
            delivery_end="2026-10-25T02:00:00+00:00",
        )
    )
    assert (half.market, half.delivery_hour, half.period.minutes) == ("GB", "01-02", 30)


def test_the_seeds_frame_is_the_default_markets_hour_and_round_trips_in_both_forms():
    deal = parse_frame(frame(delivery_day="2026-07-01", delivery_hour="00-01"))
    assert (deal.market, deal.delivery_start) == ("DE", "2026-06-30T22:00:00+00:00")
    assert parse_frame(deal.to_frame()) == deal
    assert parse_frame(deal.to_frame(legacy=True)) == deal
    assert set(json.loads(deal.to_frame(legacy=True))["deal_confirmation"]) == {
        "id",
        "price",
        "quantity",
        "direction",
        "delivery_day",
        "delivery_hour",
        "trader_id",
        "execution_time",
    }


# -- The oracle over random deals ----------------------------------------------------------


@st.composite
def periods(draw):
    market = MARKETS[draw(st.sampled_from(sorted(MARKETS)))]
    minutes = draw(st.sampled_from(market.products_minutes))
    day = draw(
        st.one_of(
            st.dates(datetime(2001, 1, 1).date(), datetime(2098, 12, 31).date()),
            st.sampled_from([datetime(2026, 3, 29).date(), datetime(2026, 10, 25).date()]),
        )
    )
    return draw(st.sampled_from(day_periods(market, day, minutes)))


@settings(max_examples=200, deadline=None)
@given(periods(), st.booleans(), st.booleans(), st.sampled_from(["utc", "local"]))
def test_any_period_of_any_market_is_booked_as_sent(period, with_label, with_market, offset):
    tz = UTC if offset == "utc" else MARKETS[period.market].tz
    start, end = (
        t.astimezone(tz).isoformat() for t in (period.delivery_start, period.delivery_end)
    )
    fields = {"delivery_start": start, "delivery_end": end}
    local = period.delivery_start.astimezone(MARKETS[period.market].tz)
    if with_label:
        fields |= {
            "delivery_day": local.date().isoformat(),
            "delivery_hour": f"{local.hour:02d}-{local.hour + 1:02d}",
        }
    if with_market or period.market != "DE":
        fields["market"] = period.market
    deal = validate_deal(BASE | fields)
    assert deal.period == period
    assert (deal.delivery_day, deal.delivery_hour) == (
        local.date().isoformat(),
        f"{local.hour:02d}-{local.hour + 1:02d}",
    )


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            ["market", "delivery_day", "delivery_hour", "delivery_start", "delivery_end"]
        ),
        st.one_of(
            st.text(max_size=30),
            st.sampled_from(["DE", "GB", "2026-10-25", "02-03", "2026-10-25T00:00:00Z"]),
            st.integers(),
            st.none(),
            st.floats(),
        ),
    )
)
def test_any_delivery_fields_give_a_deal_or_a_reason(fields):
    try:
        deal = validate_deal(BASE | fields)
    except InvalidFrame as err:
        assert err.reason
    else:
        assert deal.period.delivery_end > deal.period.delivery_start


# -- Through the drain ---------------------------------------------------------------------


def test_late_deals_are_booked_and_flagged_and_old_lines_get_their_instants(tmp_path):
    capture, database = tmp_path / "capture", tmp_path / "warehouse.duckdb"
    on_time = validate_deal(
        BASE
        | {
            "id": "a" * 32,
            "market": "GB",
            "execution_time": "2026-06-01T07:29:59Z",
            "delivery_start": "2026-06-01T08:30:00Z",
            "delivery_end": "2026-06-01T09:00:00Z",
        }
    )
    late = validate_deal(
        BASE
        | {
            "id": "b" * 32,
            "execution_time": "2026-06-01T08:10:00Z",
            "delivery_start": "2026-06-01T08:15:00Z",
            "delivery_end": "2026-06-01T08:30:00Z",
        }
    )
    buffer = CaptureBuffer(capture)
    buffer.append(on_time, datetime.now(UTC))
    buffer.append(late, datetime.now(UTC))
    buffer.seal()
    # Lines an older listener captured: the seed's form only, one of them on the hour that
    # happens twice, which cannot be booked and goes to the quarantine with its reason.
    line = deal_record(late, datetime.now(UTC))
    for name in ("market", "delivery_start", "delivery_end"):
        del line[name]
    old = [
        line | {"id": "c" * 32, "delivery_day": "2026-10-25", "delivery_hour": "03-04"},
        line | {"id": "d" * 32, "delivery_day": "2026-10-25", "delivery_hour": "02-03"},
    ]
    segment = capture / "segments" / "20000101T000000000000Z-1-0.jsonl"
    segment.write_text("".join(json.dumps(o) + "\n" for o in old))

    result = drain_all(capture, database)
    assert (result.rows_added, result.unbookable) == (3, 1)
    with duckdb.connect(str(database), read_only=True) as conn:
        rows = conn.execute(
            "SELECT id, market, delivery_start, delivery_end, delivery_hour, after_gate_closure "
            "FROM energy.raw_trades ORDER BY id"
        ).fetchall()
    utc = [(r[0][0], r[1], r[2].astimezone(UTC), r[3] - r[2], r[4], r[5]) for r in rows]
    assert utc == [
        ("a", "GB", datetime(2026, 6, 1, 8, 30, tzinfo=UTC), timedelta(minutes=30), "09-10", False),
        ("b", "DE", datetime(2026, 6, 1, 8, 15, tzinfo=UTC), timedelta(minutes=15), "10-11", True),
        ("c", "DE", datetime(2026, 10, 25, 2, tzinfo=UTC), timedelta(hours=1), "03-04", False),
    ]
    (line,) = (capture / "quarantine").glob("*.jsonl")
    record = json.loads(line.read_text())
    assert "happens twice" in record["reason"] and "d" * 32 in record["raw"]


def test_a_warehouse_from_before_markets_is_told_to_rebuild(tmp_path):
    database = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(database)) as conn:
        conn.execute("CREATE SCHEMA energy")
        conn.execute(
            "CREATE TABLE energy.raw_trades (id VARCHAR, price DOUBLE, quantity DOUBLE, "
            "direction VARCHAR, delivery_day DATE, delivery_hour VARCHAR, trader_id VARCHAR, "
            "execution_time TIMESTAMPTZ, received_at TIMESTAMPTZ, segment VARCHAR)"
        )
    with pytest.raises(Exception, match="energy-assets rebuild"):
        drain_all(tmp_path / "capture", database)
