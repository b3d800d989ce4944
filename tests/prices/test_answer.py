"""The vendor answer's parser is total: any body yields a price or a reason, never an exception,
and every accepted price is finite, inside the market's limits, in €/MWh, with a plausible
`last_update`."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from energy_assets.markets import EARLIEST
from energy_assets.prices.answer import (
    CLOCK_SKEW,
    EURO_MWH,
    JudgedAnswer,
    Refused,
    judge_answer,
)

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
ECHO = {"delivery_day": "2026-12-03", "delivery_hour": "13-14"}
GOOD = {**ECHO, "last_update": "2026-12-03T11:50:12+00:00", "unit": "euro/mwh", "value": 87.41}


def judge(body):
    return judge_answer(body, ECHO, EURO_MWH, now=NOW)


def assert_price_or_reason(result) -> None:
    assert isinstance(result, JudgedAnswer | Refused), result
    if isinstance(result, Refused):
        assert isinstance(result.reason, str) and result.reason
        return
    assert isinstance(result.value, float) and math.isfinite(result.value)
    assert EURO_MWH.low <= result.value <= EURO_MWH.high
    assert result.unit == "euro/mwh"
    assert result.last_update.tzinfo is not None
    assert EARLIEST <= result.last_update <= NOW + CLOCK_SKEW
    for key, value in ECHO.items():
        assert result.fields[key] == value


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=20,
)


@given(JSON)
def test_any_json_value_is_a_price_or_a_reason(value):
    assert_price_or_reason(judge(json.dumps(value)))
    assert_price_or_reason(judge(value))  # an already decoded value too


@given(st.binary(max_size=300))
def test_any_bytes_are_a_price_or_a_reason(body):
    assert_price_or_reason(judge(body))


SENTINELS = [
    "0001-01-01T00:30:00+01:00",
    "9999-12-31T23:30:00-01:00",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "1970-01-01T00:00:00Z",
    "2099-01-01T00:00:00Z",
    "1999-12-31T23:59:59Z",
]
LOOK_ALIKES = str.maketrans("0123456789", "０１２３４５６７８９")
ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")
HOSTILE = st.one_of(
    st.sampled_from(SENTINELS),
    st.integers(min_value=10**17, max_value=10**420) | st.integers(max_value=-(10**17)),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e308, -1e308, 9999.000001, -9999.5, 10000, "27.74", "", None, True]),
    st.sampled_from(["EUR/kWh", "euro/kwh", "EUR/MWh", "USD/MWh", "gbp/mwh", "€/MWh", "kWh"]),
    st.sampled_from(["euro/mwh\n", "euro/\u212awh", "euro/mwh ", "ＥＵＲ/MWh"]),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.text(max_size=30),
)


def mutate_text(text: str, how: str) -> str:
    return {
        "newline": text + "\n",
        "fullwidth": text.translate(LOOK_ALIKES),
        "arabic": text.translate(ARABIC_INDIC),
        "space": " " + text,
        "nul": text + "\x00",
        "surrogate": text[:-1] + "\ud800",
    }[how]


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(st.sampled_from(sorted(GOOD)), HOSTILE, min_size=1, max_size=3),
    st.sets(st.sampled_from(sorted(GOOD)), max_size=2),
)
def test_good_answers_mutated_are_a_price_or_a_reason(replaced, dropped):
    answer = {**GOOD, **replaced}
    for key in dropped:
        answer.pop(key, None)
    body = json.dumps(answer)  # a huge integer is written as its digits, as a vendor would
    assert_price_or_reason(judge(body))


@given(
    st.sampled_from(sorted(GOOD)),
    st.sampled_from(["newline", "fullwidth", "arabic", "space", "nul", "surrogate"]),
)
def test_look_alike_strings_are_refused(key, how):
    value = GOOD[key]
    if not isinstance(value, str):
        return
    result = judge(json.dumps({**GOOD, key: mutate_text(value, how)}))
    if key == "unit" and how in ("fullwidth", "arabic"):  # "euro/mwh" has no digit to replace
        assert isinstance(result, JudgedAnswer)
        return
    assert isinstance(result, Refused), (key, how)


@given(
    st.floats(min_value=-2e4, max_value=2e4, allow_nan=False),
    st.sampled_from(["EUR/kWh", "euro/kwh"]),
)
def test_kwh_is_converted_and_judged_in_mwh(per_kwh, unit):
    result = judge(json.dumps({**GOOD, "unit": unit, "value": per_kwh}))
    assert_price_or_reason(result)
    if isinstance(result, JudgedAnswer):
        assert result.value == pytest.approx(per_kwh * 1000, abs=1e-6)  # rounded to 6 places


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ('{"value": ' + "9" * 401 + "}", "lacks"),
        (json.dumps(GOOD).replace("87.41", "9" * 401), "not finite"),
        (json.dumps(GOOD).replace("87.41", "1e308"), "outside the market's limits"),
        (json.dumps(GOOD).replace("87.41", "NaN"), "not finite"),
        (json.dumps(GOOD).replace("87.41", "-Infinity"), "not finite"),
        (json.dumps({**GOOD, "last_update": SENTINELS[0]}), "is outside 2000..8999"),
        (json.dumps({**GOOD, "last_update": "1970-01-01T00:00:00Z"}), "is outside 2000..8999"),
        (json.dumps({**GOOD, "last_update": SENTINELS[1]}), "is outside 2000..8999"),
        (json.dumps({**GOOD, "last_update": "2099-01-01T00:00:00Z"}), "in the future"),
        (json.dumps({**GOOD, "last_update": "2026-12-03T11:50:12"}), "with an offset"),
        (json.dumps({**GOOD, "unit": "USD/MWh"}), "not euro/mwh"),
        (json.dumps({**GOOD, "unit": "euro/\u212awh"}), "not euro/mwh"),  # Kelvin sign
        (json.dumps({**GOOD, "delivery_hour": "13-14\n"}), "not '13-14'"),
        ("[" * 100_000 + "]" * 100_000, "not JSON"),
        (b"\xff\xfe\x00", "not JSON"),
        (json.dumps(GOOD).replace('"value": 87.41', '"value": 1, "value": 87.41'), "ambiguous"),
    ],
)
def test_hostile_answers_are_refused_with_their_reason(body, reason):
    result = judge(body)
    assert isinstance(result, Refused)
    assert reason in result.reason


def test_a_known_other_unit_is_converted_to_the_markets():
    result = judge(json.dumps({**GOOD, "unit": "EUR/kWh", "value": 0.05}))
    assert isinstance(result, JudgedAnswer)
    assert (result.value, result.unit) == (50.0, "euro/mwh")


def test_last_update_within_the_clock_skew_is_accepted():
    ahead = (NOW + CLOCK_SKEW - timedelta(seconds=1)).isoformat()
    result = judge(json.dumps({**GOOD, "last_update": ahead}))
    assert isinstance(result, JudgedAnswer)
    assert result.last_update == NOW + CLOCK_SKEW - timedelta(seconds=1)


def test_a_last_update_to_the_nanosecond_is_read_to_the_microsecond():
    result = judge(json.dumps({**GOOD, "last_update": "2026-12-03T11:50:12.123456789Z"}))
    assert result.last_update == datetime(2026, 12, 3, 11, 50, 12, 123456, tzinfo=UTC)


NEWER_ECHO = {
    "market": "DE",
    "delivery_start": datetime(2026, 10, 25, 0, 0, tzinfo=UTC),
    "delivery_end": datetime(2026, 10, 25, 0, 15, tzinfo=UTC),
}
NEWER = {
    "market": "DE",
    "delivery_start": "2026-10-25T02:00:00+02:00",
    "delivery_end": "2026-10-25T00:15:00Z",
    "value": 41.2,
    "unit": "euro/mwh",
    "last_update": "2026-10-24T23:50:00Z",
}


@given(
    st.dictionaries(st.sampled_from(sorted(NEWER)), HOSTILE, max_size=3),
    st.sets(st.sampled_from(sorted(NEWER)), max_size=2),
)
def test_the_newer_form_echoes_instants_and_is_total(replaced, dropped):
    answer = {**NEWER, **replaced}
    for key in dropped:
        answer.pop(key, None)
    result = judge_answer(json.dumps(answer), NEWER_ECHO, EURO_MWH, now=NOW)
    assert isinstance(result, JudgedAnswer | Refused)
    if isinstance(result, JudgedAnswer):
        assert math.isfinite(result.value) and EURO_MWH.low <= result.value <= EURO_MWH.high
        assert result.unit == "euro/mwh"


def test_the_newer_form_compares_instants_not_strings():
    assert isinstance(judge_answer(json.dumps(NEWER), NEWER_ECHO, now=NOW), JudgedAnswer)
    other = {**NEWER, "delivery_end": "2026-10-25T00:30:00Z"}
    result = judge_answer(json.dumps(other), NEWER_ECHO, now=NOW)
    assert isinstance(result, Refused) and "delivery_end" in result.reason
    # `t` and `z` in lower case (RFC 3339 §5.6): the same instants, the same answer.
    instants = ("delivery_start", "delivery_end", "last_update")
    lowered = {**NEWER, **{name: NEWER[name].lower() for name in instants}}
    upper = judge_answer(json.dumps(NEWER), NEWER_ECHO, now=NOW)
    lower = judge_answer(json.dumps(lowered), NEWER_ECHO, now=NOW)
    assert (lower.value, lower.unit, lower.last_update) == (
        upper.value,
        upper.unit,
        upper.last_update,
    )
