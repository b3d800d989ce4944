"""Which delivery days the period tables show (the days around now, per side of today), and
which change a stream's `Last-Event-ID` names, whether a stream may be deflated: pure
functions, for any input."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from energy_assets.desk.app import accepts_deflate, change_of, replay_instant
from energy_assets.desk.live import days_around, warnings
from energy_assets.markets import EARLIEST, LATEST

TODAY = date(2026, 12, 4)


@given(
    st.lists(st.dates(min_value=date(1, 1, 1), max_value=date(9999, 12, 31)), max_size=60),
    st.integers(min_value=0, max_value=10),
)
def test_no_far_day_takes_the_place_of_a_nearer_one_on_its_side(days, per_side):
    shown = days_around(days, TODAY, per_side)
    assert shown == sorted(set(shown)) and set(shown) <= set(days)
    for side in (lambda d: d < TODAY, lambda d: d >= TODAY):
        mine = [d for d in shown if side(d)]
        assert len(mine) == min(per_side, len({d for d in days if side(d)}))
        if mine:
            nearest_left_out = [d for d in set(days) - set(mine) if side(d)]
            farthest = max(abs((d - TODAY).days) for d in mine)
            assert all(abs((d - TODAY).days) >= farthest for d in nearest_left_out)


def test_seven_days_in_2999_leave_the_real_ones():
    real = [TODAY - timedelta(days=2), TODAY, TODAY + timedelta(days=1)]
    far = [date(2999, 1, n) for n in range(1, 8)]
    assert set(real) <= set(days_around(real + far, TODAY))


@given(st.text())
def test_any_last_event_id_names_a_change_of_this_run_or_none(text):
    change = change_of(text, "0123abcd")
    assert change is None or (text == f"0123abcd-{change}" and 0 <= change < 10**18)


def test_event_ids_of_this_run_and_of_others():
    assert change_of("0123abcd-42", "0123abcd") == 42
    for other in ["fedc0987-42", "0123abcd-42\n", "0123abcd-٤٢", "0123abcd-", "", "x" * 999]:
        assert change_of(other, "0123abcd") is None


NOW = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
#: The instants near the ends of what Python and the journals hold, in every offset.
_ISO_EDGES = st.builds(
    lambda day, offset: f"{day}T00:00{offset}",
    st.sampled_from(
        ["0001-01-01", "1999-12-31", "2000-01-01", "8999-12-31", "9000-01-01", "9999-12-31"]
    ),
    st.sampled_from(["Z", "+14:00", "-14:00", "+00:00", "", "+23:59"]),
)


@given(st.one_of(st.text(), st.datetimes().map(lambda d: d.isoformat()), _ISO_EDGES))
def test_any_replay_instant_is_an_instant_inside_the_journals_years_or_a_reason(text):
    at = replay_instant(text, NOW)
    if isinstance(at, str):
        assert len(at) < 200  # the error page never echoes a long request back
    else:
        assert at.tzinfo is not None and at.utcoffset() == timedelta(0)
        assert EARLIEST <= at < LATEST
        assert text == "" or at == datetime.fromisoformat(text)


def test_the_replay_instant_refuses_the_sentinel_dates_and_names_why():
    assert replay_instant("", NOW) == NOW
    assert replay_instant("2026-12-01T10:00+01:00", NOW) == datetime(2026, 12, 1, 9, tzinfo=UTC)
    assert "is outside 2000..8999" in replay_instant("0001-01-01T00:00+14:00", NOW)
    assert "is outside 2000..8999" in replay_instant("9999-12-31T23:59-14:00", NOW)
    assert "is outside 2000..8999" in replay_instant("1999-12-31T23:00Z", NOW)
    for text in ("2026-12-01T10:00", "２０２６-12-01T00:00Z", "x" * 10_000):
        assert "must be ISO-8601 with an offset" in replay_instant(text, NOW)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=10,
)
_REFUSED = st.fixed_dictionaries(
    {},
    optional={
        "day": st.sampled_from(["2026-12-05", "2026-12-04"]) | _JSON,
        "count": st.integers() | _JSON,
        "last_at": st.sampled_from(["2026-12-05T10:00:00+00:00", "9999-12-31T23:59:59"]) | _JSON,
    },
)


@given(_REFUSED | _JSON)
def test_any_refused_count_in_the_listener_state_is_a_banner_line_or_none(refused):
    now = datetime(2026, 12, 5, 12, tzinfo=UTC)
    listener = {"heartbeat": now.isoformat(), "refused": refused}
    lines = [w for w in warnings(listener, [], [now.date()], now) if w.refused]
    today = isinstance(refused, dict) and refused.get("day") == "2026-12-05"
    count = refused.get("count") if today else None
    if type(count) is int and count > 0:
        (line,) = lines
        assert line.refused == count
        # Its time, when shown, is a real instant in the years the desk shows.
        assert line.start is None or line.start.utcoffset() is not None
    else:
        assert lines == []


@given(st.text())
def test_any_accept_encoding_header_is_read_as_taking_deflate_or_not(header):
    assert accepts_deflate(header) in (True, False)


def test_deflate_is_taken_when_named_without_a_zero_weight():
    assert accepts_deflate("gzip, deflate, br, zstd")  # what Chromium sends
    assert accepts_deflate("Deflate;q=0.5")
    assert not accepts_deflate("gzip, br")
    assert not accepts_deflate("deflate;q=0, gzip")
    assert not accepts_deflate("deflated")
    assert not accepts_deflate("")
