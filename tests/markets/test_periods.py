"""Delivery periods in local time: both daylight-saving nights of 2026 in Berlin and London,
computed by hand, then an independent oracle over random days, labels and instants."""

import json
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from energy_assets.markets import (
    MARKETS,
    Invalid,
    KeyGivenTwice,
    Market,
    Period,
    day_periods,
    delivery_of,
    hour_period,
    market_of,
    one_value_per_key,
    open_periods,
    parse_day,
    parse_hour_label,
    parse_instant,
    period_between,
)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def period(market: str, start: str, end: str) -> Period:
    return Period(market, utc(start), utc(end))


# -- Hand-computed: the two nights of 2026 (both zones change at 01:00 UTC) -------------------


def test_berlin_spring_forward_day_has_23_hours_and_no_02_03():
    hours = day_periods("DE", "2026-03-29", 60)
    assert len(hours) == 23
    assert hours[0] == period("DE", "2026-03-28T23:00", "2026-03-29T00:00")
    assert hours[-1] == period("DE", "2026-03-29T21:00", "2026-03-29T22:00")
    assert [p.label for p in hours[:4]] == ["00-01", "01-02", "03-04", "04-05"]
    assert hour_period("DE", "2026-03-29", "01-02") == period(
        "DE", "2026-03-29T00:00", "2026-03-29T01:00"
    )
    assert hour_period("DE", "2026-03-29", "03-04") == period(
        "DE", "2026-03-29T01:00", "2026-03-29T02:00"
    )
    missing = hour_period("DE", "2026-03-29", "02-03")
    assert isinstance(missing, Invalid)
    assert "does not exist" in missing.reason
    assert len(day_periods("DE", "2026-03-29")) == 92


def test_berlin_fall_back_day_has_25_hours_and_02_03_twice():
    hours = day_periods("DE", "2026-10-25", 60)
    assert len(hours) == 25
    assert hours[0] == period("DE", "2026-10-24T22:00", "2026-10-24T23:00")
    twice = [p for p in hours if p.label == "02-03"]
    assert twice == [
        period("DE", "2026-10-25T00:00", "2026-10-25T01:00"),
        period("DE", "2026-10-25T01:00", "2026-10-25T02:00"),
    ]
    assert [p.local_start.utcoffset() for p in twice] == [timedelta(hours=2), timedelta(hours=1)]
    assert all(p.local_day == date(2026, 10, 25) for p in hours)
    ambiguous = hour_period("DE", "2026-10-25", "02-03")
    assert isinstance(ambiguous, Invalid)
    assert "twice" in ambiguous.reason and "delivery_start" in ambiguous.reason
    assert hour_period("DE", "2026-10-25", "03-04") == period(
        "DE", "2026-10-25T02:00", "2026-10-25T03:00"
    )
    quarters = day_periods("DE", "2026-10-25", 15)
    assert len(quarters) == 100
    assert quarters[-1] == period("DE", "2026-10-25T22:45", "2026-10-25T23:00")


def test_london_spring_forward_day_has_46_half_hours_and_no_01_02():
    halves = day_periods("GB", "2026-03-29")
    assert len(halves) == 46
    assert halves[0] == period("GB", "2026-03-29T00:00", "2026-03-29T00:30")
    assert halves[2] == period("GB", "2026-03-29T01:00", "2026-03-29T01:30")
    assert halves[2].label == "02-03"
    assert isinstance(hour_period("GB", "2026-03-29", "01-02"), Invalid)
    assert day_periods("GB", "2026-03-29", 60) == Invalid("GB does not trade 60-minute periods")


def test_london_fall_back_day_has_50_half_hours_and_01_02_twice():
    halves = day_periods("GB", "2026-10-25")
    assert len(halves) == 50
    assert halves[0] == period("GB", "2026-10-24T23:00", "2026-10-24T23:30")
    assert halves[-1] == period("GB", "2026-10-25T23:30", "2026-10-26T00:00")
    assert [str(p) for p in halves if p.label == "01-02"] == [
        "GB 2026-10-25 01:00-01:30 +0100",
        "GB 2026-10-25 01:30-01:00 +0100",
        "GB 2026-10-25 01:00-01:30 +0000",
        "GB 2026-10-25 01:30-02:00 +0000",
    ]
    assert isinstance(hour_period("GB", "2026-10-25", "01-02"), Invalid)


def test_a_quarter_hour_is_labelled_by_the_local_hour_that_contains_it():
    quarter = period_between("DE", utc("2026-06-01T08:15"), utc("2026-06-01T08:30"))
    assert quarter == period("DE", "2026-06-01T08:15", "2026-06-01T08:30")
    assert (quarter.local_day, quarter.label, quarter.minutes, quarter.hours) == (
        date(2026, 6, 1),
        "10-11",
        15,
        0.25,
    )
    assert quarter.gate_closure == utc("2026-06-01T08:10")
    half = period_between("GB", utc("2026-06-01T08:30"), utc("2026-06-01T09:00"))
    assert (half.label, half.gate_closure) == ("09-10", utc("2026-06-01T07:30"))


def test_an_hour_covers_four_quarter_hours_and_a_half_hour_is_one_step():
    hour = hour_period("DE", "2026-10-25", "03-04")
    assert hour.steps() == [
        period("DE", "2026-10-25T02:00", "2026-10-25T02:15"),
        period("DE", "2026-10-25T02:15", "2026-10-25T02:30"),
        period("DE", "2026-10-25T02:30", "2026-10-25T02:45"),
        period("DE", "2026-10-25T02:45", "2026-10-25T03:00"),
    ]
    half = period("GB", "2026-10-25T00:30", "2026-10-25T01:00")
    assert half.steps() == [half]


@pytest.mark.parametrize(
    ("market", "start", "end", "reason"),
    [
        ("DE", "2026-06-01T08:00", "2026-06-01T08:20", "20-minute period is not a product of DE"),
        ("GB", "2026-06-01T08:00", "2026-06-01T08:15", "15-minute period is not a product of GB"),
        ("DE", "2026-06-01T08:05", "2026-06-01T08:20", "not on DE's 15-minute grid"),
        ("DE", "2026-06-01T08:15", "2026-06-01T09:15", "not on DE's 60-minute grid"),
        ("DE", "2026-06-01T09:00", "2026-06-01T08:00", "must be after"),
        ("FR", "2026-06-01T08:00", "2026-06-01T09:00", "unknown market 'FR'"),
        ("DE", "1999-12-31T23:00", "2000-01-01T00:00", "outside 2000..8999"),
    ],
)
def test_instants_that_name_no_product_of_the_market_are_refused(market, start, end, reason):
    result = period_between(market, utc(start), utc(end))
    assert isinstance(result, Invalid)
    assert reason in result.reason


def test_open_periods_run_from_the_next_before_gate_closure_to_the_end_of_the_next_day():
    # 23:56 in Berlin on 24 October: today's last quarter-hour closed at 23:40, tomorrow's
    # first at 23:55; tomorrow (the 25-hour day) has 100 quarter-hours.
    now = utc("2026-10-24T21:56")
    open_now = open_periods("DE", now)
    assert len(open_now) == 99
    assert open_now[0] == period("DE", "2026-10-24T22:15", "2026-10-24T22:30")
    assert open_now[-1].delivery_end == utc("2026-10-25T23:00")
    assert [p.label for p in open_periods("DE", now, 60)][:3] == ["01-02", "02-03", "02-03"]
    # London at 10:00 BST with a 60-minute lead: 11:00-11:30 closes right now, 11:30 is next.
    london = open_periods("GB", utc("2026-06-01T09:00"))
    assert london[0] == period("GB", "2026-06-01T10:30", "2026-06-01T11:00")
    assert str(london[0]) == "GB 2026-06-01 11:30-12:00 +0100"
    assert london[-1].delivery_end == utc("2026-06-02T23:00")


def test_open_periods_at_the_gate_closure_instant_is_closed():
    first = open_periods("DE", utc("2026-06-01T07:55"))[0]
    assert first == period("DE", "2026-06-01T08:15", "2026-06-01T08:30")


@pytest.mark.parametrize(
    "text",
    [
        "2026-10-25T00:00:00",
        "2026-10-25 00:00Z",
        "２０２６-10-25T00:00Z",
        "2026-10-25T00:00Z\n",
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
        "2026-02-30T00:00Z",
        20261025,
    ],
)
def test_instants_out_of_grammar_or_range_are_refused(text):
    assert isinstance(parse_instant(text), Invalid)


def test_instants_in_offset_or_z_form_are_the_same_utc_instant():
    assert parse_instant("2026-10-25T02:00:00+02:00") == parse_instant("2026-10-25T00:00:00Z")
    assert parse_instant("2026-10-25T02:00+01:00") == utc("2026-10-25T01:00")


def _written(moment: datetime, shape: dict) -> str:
    """`moment` as a serialiser of `shape` writes it (every one ISO-8601)."""
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if shape["digits"]:
        fraction = f"{moment.microsecond:06d}{shape['nanos']:03d}"[: shape["digits"]]
        text += shape["decimal"] + fraction
    total = int(moment.utcoffset().total_seconds()) // 60
    sign, hours, minutes = "-" if total < 0 else "+", abs(total) // 60, abs(total) % 60
    if total == 0 and shape["zulu"]:
        text += "Z"
    elif minutes == 0 and shape["hours_only"]:
        text += f"{sign}{hours:02d}"
    else:
        text += f"{sign}{hours:02d}{':' if shape['colon'] else ''}{minutes:02d}"
    return text.lower() if shape["lower"] else text


@given(
    st.datetimes(datetime(2000, 1, 2), datetime(8998, 12, 31)),
    st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m))),
    st.fixed_dictionaries(
        {
            "digits": st.integers(0, 9),
            "nanos": st.integers(0, 999),
            "decimal": st.sampled_from(".,"),
            "zulu": st.booleans(),
            "hours_only": st.booleans(),
            "colon": st.booleans(),
            "lower": st.booleans(),
        }
    ),
)
def test_any_iso_8601_shape_of_an_instant_is_that_instant_to_the_microsecond(wall, zone, shape):
    """Fractions of 1-9 digits after `.` or `,`, `Z`, `±HH:MM`, `±HHMM` and `±HH`, `t`/`z` in
    either case: as Java, Go, Python and C# serialisers write them."""
    moment = wall.replace(tzinfo=zone)
    kept = 10 ** (6 - min(shape["digits"], 6))
    expected = moment.replace(microsecond=moment.microsecond // kept * kept if kept < 10**6 else 0)
    assert parse_instant(_written(moment, shape)) == expected.astimezone(UTC)


# -- The oracle: scan UTC instants, keep those whose local wall clock matches ----------------

MARKET_CODES = sorted(MARKETS)


def _last_sunday(year: int, month: int) -> date:
    day = date(year, month, 31)
    return day - timedelta(days=(day.weekday() + 1) % 7)


days = st.one_of(
    st.dates(min_value=date(2000, 1, 2), max_value=date(8999, 12, 30)),
    st.builds(
        _last_sunday, st.integers(2000, 8999), st.sampled_from([3, 10])
    ),  # the DST days of every year
)


def oracle_day(market: str, day: date, minutes: int) -> list[Period]:
    tz = MARKETS[market].tz
    t = datetime.combine(day - timedelta(days=2), datetime.min.time(), tzinfo=UTC)
    step = timedelta(minutes=minutes)
    found = []
    while t.date() <= day + timedelta(days=2):
        if t.astimezone(tz).date() == day:
            found.append(Period(market, t, t + step))
        t += step
    return found


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(MARKET_CODES), days, st.data())
def test_a_local_day_is_every_grid_instant_whose_local_date_is_that_day(market, day, data):
    minutes = data.draw(st.sampled_from(MARKETS[market].products_minutes))
    assert day_periods(market, day, minutes) == oracle_day(market, day, minutes)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(MARKET_CODES), days, st.integers(0, 23))
def test_an_hour_label_names_the_one_hour_whose_local_start_matches_or_is_refused(
    market, day, hour
):
    tz = MARKETS[market].tz
    matches = [
        p
        for p in oracle_day(market, day, 60)
        if p.local_start.hour == hour and p.local_start.astimezone(tz).minute == 0
    ]
    label = f"{hour:02d}-{hour + 1:02d}"
    result = hour_period(market, day.isoformat(), label)
    if len(matches) == 1:
        assert result == matches[0]
        assert (result.local_day, result.label) == (day, label)
    else:
        assert isinstance(result, Invalid)
        assert ("does not exist" if not matches else "twice") in result.reason


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(MARKET_CODES), days, st.data())
def test_every_period_of_a_day_round_trips_through_its_instants(market, day, data):
    minutes = data.draw(st.sampled_from(MARKETS[market].products_minutes))
    periods = day_periods(market, day, minutes)
    chosen = data.draw(st.sampled_from(periods))
    assert period_between(market, chosen.delivery_start, chosen.delivery_end) == chosen
    steps = chosen.steps()
    assert steps[0].delivery_start == chosen.delivery_start
    assert steps[-1].delivery_end == chosen.delivery_end
    assert all(s.minutes == MARKETS[market].grid_minutes for s in steps)
    assert all(a.delivery_end == b.delivery_start for a, b in zip(steps, steps[1:], strict=False))


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(MARKET_CODES),
    st.datetimes(
        min_value=datetime(2000, 1, 2), max_value=datetime(8999, 12, 1), timezones=st.just(UTC)
    ),
)
def test_open_periods_are_exactly_those_of_today_and_tomorrow_before_gate_closure(market, now):
    today = now.astimezone(MARKETS[market].tz).date()
    lead = timedelta(minutes=MARKETS[market].gate_closure_minutes)
    grid = MARKETS[market].grid_minutes
    candidates = oracle_day(market, today, grid) + oracle_day(
        market, today + timedelta(days=1), grid
    )
    assert open_periods(market, now) == [p for p in candidates if now < p.delivery_start - lead]


anything = st.one_of(
    st.text(),
    st.text(alphabet="0123456789-:TZ+.０١", max_size=30),
    st.integers(),
    st.integers(min_value=10**4300),  # past the digits Python prints
    st.floats(),
    st.none(),
    st.booleans(),
    st.lists(st.integers() | st.integers(min_value=10**4300), max_size=2),
)


@settings(max_examples=200, deadline=None)
@given(anything, anything, anything)
def test_every_parser_answers_any_input_with_a_value_or_a_reason(market, day, label):
    for result in (
        market_of(market),
        delivery_of({"market": market, "delivery_day": day, "delivery_hour": label}),
        delivery_of({"market": market, "delivery_start": day, "delivery_end": label}),
        parse_day(day),
        parse_hour_label(label),
        parse_instant(day),
        hour_period(
            market if isinstance(market, str) else "DE", day if isinstance(day, str) else "x", label
        ),
    ):
        assert isinstance(result, Invalid | date | int | datetime | Period | Market)


@settings(max_examples=100, deadline=None)
@given(anything, anything, anything, anything)
def test_every_period_function_answers_any_input_with_a_value_or_a_reason(a, b, c, d):
    for result in (
        period_between(a if isinstance(a, str) else "DE", b, c),
        day_periods(a if isinstance(a, str) else "DE", b if isinstance(b, str) else "x", d),
        day_periods("DE", "2026-10-25", d),
        day_periods("GB", "2026-03-29", c),
        open_periods(a if isinstance(a, str) else "DE", b),
    ):
        assert isinstance(result, Invalid | list | Period)


_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=8,
)


@given(st.dictionaries(st.text(max_size=5), _VALUES, min_size=1), st.data())
def test_a_key_given_twice_is_one_value_when_alike_and_refused_when_not(written, data):
    key = data.draw(st.sampled_from(sorted(written)))
    again = data.draw(st.sampled_from([written[key]]) | _VALUES)
    text = json.dumps(written)[:-1] + f", {json.dumps(key)}: {json.dumps(again)}}}"
    try:
        read = json.loads(text, object_pairs_hook=one_value_per_key)
    except KeyGivenTwice as refused:
        assert json.loads(json.dumps(written[key])) != json.loads(json.dumps(again))
        assert "given twice with different values" in str(refused)
    else:
        assert read == json.loads(json.dumps(written))
