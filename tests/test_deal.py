"""The contract's deal confirmation: what passes, and why everything else is refused."""

import json

import pytest

from energy_assets.trades.deal import Deal, InvalidFrame, parse_frame

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


@pytest.mark.parametrize("envelope", ["deal_confirmation", "trade_confirmation"])
def test_both_envelopes_parse_to_the_same_deal(envelope):
    deal = parse_frame(json.dumps({envelope: GOOD}))
    assert deal == Deal(**GOOD)
    assert parse_frame(deal.to_frame(envelope)) == deal


def test_zero_and_negative_prices_and_z_suffix_are_valid():
    deal = parse_frame(
        json.dumps(
            {"trade_confirmation": {**GOOD, "price": -3, "execution_time": "2023-02-21T06:13:43Z"}}
        )
    )
    assert deal.price == -3.0
    assert parse_frame(json.dumps({"deal_confirmation": {**GOOD, "price": 0}})).price == 0.0


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "JSON object"),
        ('"text"', "JSON object"),
        (json.dumps({"heartbeat": {}}), "not a deal confirmation"),
        (json.dumps({"deal_confirmation": [1]}), "JSON object"),
        (
            json.dumps({"deal_confirmation": {k: v for k, v in GOOD.items() if k != "price"}}),
            "missing field",
        ),
        (json.dumps({"deal_confirmation": {**GOOD, "price": "abc"}}), "price must be a number"),
        (json.dumps({"deal_confirmation": {**GOOD, "price": "20.64"}}), "price must be a number"),
        (
            json.dumps({"deal_confirmation": {**GOOD, "quantity": True}}),
            "quantity must be a number",
        ),
        (json.dumps({"deal_confirmation": {**GOOD, "quantity": 0}}), "quantity must be > 0"),
        (json.dumps({"deal_confirmation": {**GOOD, "quantity": -1.5}}), "quantity must be > 0"),
        (json.dumps({"deal_confirmation": {**GOOD, "direction": "hold"}}), "direction"),
        (json.dumps({"deal_confirmation": {**GOOD, "id": "xyz"}}), "id must be"),
        (json.dumps({"deal_confirmation": {**GOOD, "id": 42}}), "id must be a string"),
        (json.dumps({"deal_confirmation": {**GOOD, "delivery_day": "2023-02-30"}}), "day"),
        (json.dumps({"deal_confirmation": {**GOOD, "delivery_day": "21.02.2023"}}), "day"),
        (json.dumps({"deal_confirmation": {**GOOD, "delivery_hour": "24-25"}}), "delivery hour"),
        (json.dumps({"deal_confirmation": {**GOOD, "delivery_hour": "15-17"}}), "delivery hour"),
        (json.dumps({"deal_confirmation": {**GOOD, "delivery_hour": 15}}), "must be a string"),
        (json.dumps({"deal_confirmation": {**GOOD, "trader_id": ""}}), "trader_id"),
        (json.dumps({"deal_confirmation": {**GOOD, "execution_time": "yesterday"}}), "ISO-8601"),
        (
            json.dumps({"deal_confirmation": {**GOOD, "execution_time": "2023-02-21T06:13:43"}}),
            "offset",
        ),
        ('{"deal_confirmation": {"price": NaN}}', "missing field"),
    ],
)
def test_malformed_frames_are_refused_with_a_reason(frame, reason):
    with pytest.raises(InvalidFrame) as err:
        parse_frame(frame)
    assert reason in err.value.reason
