"""The stand-in Market Data API over real HTTP on loopback."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import requests

from energy_assets.markets import hour_period, period_between
from energy_assets.playground.market_data import SlidingWindowLimiter
from energy_assets.playground.pricing import published_price
from energy_assets.playground.server import MarketDataOptions, Playground

QUERY = {"delivery_day": "2026-03-14", "delivery_hour": "08-09"}
FROZEN = datetime.fromisoformat("2026-03-13T16:21:40+00:00").timestamp()


def get(pg, path="/reference-price", params=QUERY, **kwargs):
    return requests.get(pg.market_data_url + path, params=params, timeout=10, **kwargs)


@pytest.mark.parametrize("path", ["/reference-price", "/v1/reference-price"])
def test_answer_has_exactly_the_contract_keys(start_playground, path):
    pg = start_playground(market_data=MarketDataOptions(seed=4, clock=lambda: FROZEN))
    answer = get(pg, path)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "application/json"
    body = answer.json()
    assert set(body) == {"delivery_day", "delivery_hour", "last_update", "unit", "value"}
    assert body["delivery_day"] == "2026-03-14" and body["delivery_hour"] == "08-09"
    assert body["unit"] == "euro/mwh"
    assert isinstance(body["value"], float)
    assert body["last_update"] == "2026-03-13T16:20:00+00:00"
    expected = published_price(4, hour_period("DE", "2026-03-14", "08-09"), FROZEN)
    assert body["value"] == expected.value


@pytest.mark.parametrize(
    ("market", "start", "end", "unit"),
    [
        ("DE", "2026-10-25T00:00:00Z", "2026-10-25T01:00:00Z", "euro/mwh"),
        ("DE", "2026-10-25T01:00:00Z", "2026-10-25T02:00:00Z", "euro/mwh"),
        ("DE", "2026-10-25T01:15:00Z", "2026-10-25T01:30:00Z", "euro/mwh"),
        ("GB", "2026-10-25T01:30:00Z", "2026-10-25T02:00:00Z", "gbp/mwh"),
    ],
)
def test_the_newer_form_answers_for_exactly_the_period_asked(
    shared_playground, market, start, end, unit
):
    params = {"market": market, "delivery_start": start, "delivery_end": end}
    body = get(shared_playground, params=params).json()
    assert set(body) == {"market", "delivery_start", "delivery_end", "value", "unit", "last_update"}
    assert (body["market"], body["delivery_start"], body["delivery_end"]) == (market, start, end)
    assert body["unit"] == unit
    period = period_between(market, datetime.fromisoformat(start), datetime.fromisoformat(end))
    # A past period: its price is final, whatever the clock (the playground's seed is 0).
    assert body["value"] == published_price(0, period, time.time()).value


def test_prices_are_deterministic_per_day_and_hour(start_playground):
    first = start_playground(market_data=MarketDataOptions(seed=4, clock=lambda: FROZEN))
    second = start_playground(market_data=MarketDataOptions(seed=4, clock=lambda: FROZEN))
    hours = [f"{h:02d}-{h + 1:02d}" for h in range(24)]
    answers = [
        [get(pg, params={"delivery_day": "2026-03-14", "delivery_hour": h}).json() for h in hours]
        for pg in (first, second)
    ]
    assert answers[0] == answers[1]
    assert len({a["value"] for a in answers[0]}) > 20


BAD_QUERIES = [
    {},
    {"delivery_day": "2026-03-14"},
    {"delivery_hour": "08-09"},
    {"delivery_day": "", "delivery_hour": "08-09"},
    {"delivery_day": "2026-03-14", "delivery_hour": ""},
    {"delivery_day": "2026-3-14", "delivery_hour": "08-09"},
    {"delivery_day": "14.03.2026", "delivery_hour": "08-09"},
    {"delivery_day": "2026-02-30", "delivery_hour": "08-09"},
    {"delivery_day": "2026-13-01", "delivery_hour": "08-09"},
    {"delivery_day": "2026-03-14T00:00", "delivery_hour": "08-09"},
    {"delivery_day": "2026-03-14\n", "delivery_hour": "08-09"},
    {"delivery_day": "２０２６-03-14", "delivery_hour": "08-09"},
    {"delivery_day": "today", "delivery_hour": "08-09"},
    {"delivery_day": "2026-03-14", "delivery_hour": "24-25"},
    {"delivery_day": "2026-03-14", "delivery_hour": "23-00"},
    {"delivery_day": "2026-03-14", "delivery_hour": "08-10"},
    {"delivery_day": "2026-03-14", "delivery_hour": "8-9"},
    {"delivery_day": "2026-03-14", "delivery_hour": "08"},
    {"delivery_day": "2026-03-14", "delivery_hour": "ab-cd"},
    {"delivery_day": "2026-03-14", "delivery_hour": "08-09 "},
    {"delivery_day": ["2026-03-14", "2026-03-15"], "delivery_hour": "08-09"},
    # Contract §5: Berlin's hour that does not exist, and the one that happens twice.
    {"delivery_day": "2026-03-29", "delivery_hour": "02-03"},
    {"delivery_day": "2026-10-25", "delivery_hour": "02-03"},
    # The newer form: every parameter, a known market, one of its products on its grid.
    {"market": "DE", "delivery_start": "2026-03-14T08:00:00Z"},
    {"market": "FR", "delivery_start": "2026-03-14T08:00:00Z", "delivery_end": "2026-03-14T09:00Z"},
    {"market": "DE", "delivery_start": "2026-03-14T08:00:00Z", "delivery_end": "2026-03-14T08:20Z"},
    {"market": "GB", "delivery_start": "2026-03-14T08:00:00Z", "delivery_end": "2026-03-14T08:15Z"},
    {"market": "DE", "delivery_start": "2026-03-14T08:05:00Z", "delivery_end": "2026-03-14T08:20Z"},
    {"market": "DE", "delivery_start": "2026-03-14 08:00", "delivery_end": "2026-03-14T09:00Z"},
    {"market": "DE", "delivery_start": "0001-01-01T00:00Z", "delivery_end": "0001-01-01T01:00Z"},
    {
        "market": "DE",
        "delivery_start": "2026-03-14T08:00:00Z",
        "delivery_end": "2026-03-14T09:00:00Z",
        "delivery_day": "2026-03-14",
    },
]


@pytest.mark.parametrize("params", BAD_QUERIES, ids=str)
def test_malformed_parameters_get_400(shared_playground, params):
    pg = shared_playground
    answer = get(pg, params=params)
    assert answer.status_code == 400
    assert set(answer.json()) == {"error_message"} and answer.json()["error_message"]


@pytest.mark.parametrize(
    "path", ["/", "/reference-prices", "/v2/reference-price", "/v1", "/reference-price/x"]
)
def test_unknown_paths_get_404(shared_playground, path):
    pg = shared_playground
    answer = get(pg, path)
    assert answer.status_code == 404 and "error_message" in answer.json()


def test_other_methods_are_refused(start_playground):
    pg = start_playground()
    answer = requests.post(pg.market_data_url + "/reference-price", params=QUERY, timeout=5)
    assert answer.status_code == 405


def test_a_revision_changes_value_and_last_update(start_playground):
    pg = start_playground(market_data=MarketDataOptions(revise_every=1.0))
    tomorrow = datetime.now(UTC).date() + timedelta(days=1)
    open_hour = {"delivery_day": tomorrow.isoformat(), "delivery_hour": "20-21"}
    time.sleep(1.05 - time.time() % 1.0)  # just after a revision: cross exactly one more
    before = get(pg, params=open_hour).json()
    time.sleep(1.0)
    after = get(pg, params=open_hour).json()
    assert after["value"] != before["value"]
    assert datetime.fromisoformat(after["last_update"]) > datetime.fromisoformat(
        before["last_update"]
    )
    # A closed hour does not move any more.
    closed = {"delivery_day": "2023-05-12", "delivery_hour": "08-09"}
    assert get(pg, params=closed).json() == get(pg, params=closed).json()
    assert get(pg, params=closed).json()["last_update"] < "2023-05-12T08:00:00+00:00"


def test_vendor_grid_publishes_late(start_playground):
    now = [FROZEN]
    pg = start_playground(market_data=MarketDataOptions(vendor_grid=True, clock=lambda: now[0]))
    grid = datetime.fromisoformat("2026-03-13T16:30:00+00:00").timestamp()
    seen = set()
    for second in range(0, 40, 2):
        now[0] = grid + second
        body = get(pg).json()
        published = datetime.fromisoformat(body["last_update"]).timestamp()
        assert published <= now[0]
        seen.add((body["last_update"], body["value"]))
    published = sorted(datetime.fromisoformat(u).timestamp() for u, _ in seen)
    assert len(seen) == 2  # the 16:20 revision, then the 16:30 one once published
    assert 0 <= published[1] - grid <= 30 and 0 <= published[0] - (grid - 600) <= 30


def test_error_rate_answers_5xx(start_playground):
    pg = start_playground(market_data=MarketDataOptions(error_rate=0.4, seed=1))
    with requests.Session() as session:
        statuses = [
            session.get(pg.market_data_url + "/reference-price", params=QUERY).status_code
            for _ in range(200)
        ]
    errors = [s for s in statuses if s >= 500]
    assert 50 <= len(errors) <= 110
    assert set(statuses) - set(errors) == {200}
    assert pg.server_errors == len(errors) and pg.requests_served == 200


def test_latency_delays_every_answer_but_not_each_other(start_playground):
    pg = start_playground(market_data=MarketDataOptions(latency=0.3))
    started = time.monotonic()
    assert get(pg).status_code == 200
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: get(pg).status_code, range(8)))
    assert answers == [200] * 8
    assert time.monotonic() - started < 1.5  # served side by side, not one after another


def test_no_latency_keeps_answers_fast(start_playground):
    pg = start_playground()
    with requests.Session() as session:
        started = time.monotonic()
        for _ in range(200):
            session.get(pg.market_data_url + "/reference-price", params=QUERY).raise_for_status()
        per_request = (time.monotonic() - started) / 200
    assert per_request < 0.02


def test_rate_limit_per_minute(start_playground):
    pg = start_playground(market_data=MarketDataOptions(rate_limit_per_minute=5))
    statuses = [get(pg) for _ in range(7)]
    assert [a.status_code for a in statuses] == [200] * 5 + [429] * 2
    retry_after = int(statuses[5].headers["Retry-After"])
    assert 55 <= retry_after <= 60
    assert "error_message" in statuses[5].json()
    assert pg.rate_limited == 2
    # every request counts, malformed or not
    assert get(pg, "/nowhere").status_code == 429


def test_rate_limit_per_hour(start_playground):
    pg = start_playground(
        market_data=MarketDataOptions(rate_limit_per_minute=50, rate_limit_per_hour=3)
    )
    statuses = [get(pg) for _ in range(4)]
    assert [a.status_code for a in statuses] == [200, 200, 200, 429]
    assert 3540 <= int(statuses[3].headers["Retry-After"]) <= 3600


def test_sliding_window_counts_every_request():
    limiter = SlidingWindowLimiter(limit=3, window=60.0)
    assert [limiter.admit(t) for t in (0.0, 10.0, 20.0)] == [None, None, None]
    # Refused requests count too: at 30 the window holds 0, 10, 20 and 30 itself, so two
    # of them must age out before the next request fits: at 70.
    assert limiter.admit(30.0) == pytest.approx(40.0)
    assert limiter.admit(60.5) == pytest.approx(19.5)  # 10, 20, 30, 60.5: wait for 20 to go
    assert limiter.admit(95.0) is None  # only 60.5 within the last 60 s
    assert limiter.admit(96.0) is None
    assert limiter.admit(97.0) == pytest.approx(58.0)  # 60.5, 95, 96 and 97 itself


def test_stopped_api_refuses_connections(start_playground):
    pg = start_playground()
    session = requests.Session()
    assert session.get(pg.market_data_url + "/reference-price", params=QUERY).ok
    pg.stop()
    with pytest.raises(requests.ConnectionError):
        session.get(pg.market_data_url + "/reference-price", params=QUERY, timeout=5)


@pytest.mark.parametrize(
    "options",
    [
        {"revise_every": 0},
        {"error_rate": 1.5},
        {"latency": -1},
        {"rate_limit_per_minute": 0},
    ],
    ids=str,
)
def test_options_the_api_cannot_honour_are_refused(options):
    with pytest.raises(ValueError):
        Playground(market_data=MarketDataOptions(**options), exchange_port=0, market_data_port=0)


# --- The newer form: any market's period (contract §5) --------------------------------------

QUARTER = {
    "market": "DE",
    "delivery_start": "2026-03-14T07:15:00Z",
    "delivery_end": "2026-03-14T07:30:00Z",
}


def test_the_newer_form_answers_a_periods_price(start_playground):
    pg = start_playground(market_data=MarketDataOptions(seed=4, clock=lambda: FROZEN))
    body = get(pg, "/v1/reference-price", params=QUARTER).json()
    assert set(body) == {"market", "delivery_start", "delivery_end", "value", "unit", "last_update"}
    assert (body["market"], body["delivery_start"], body["delivery_end"]) == tuple(QUARTER.values())
    assert body["unit"] == "euro/mwh" and isinstance(body["value"], float)
    published = datetime.fromisoformat(body["last_update"])
    assert (
        datetime(2026, 3, 13, 16, 20, tzinfo=UTC)
        <= published
        <= datetime.fromtimestamp(FROZEN, UTC)
    )
    gb = {"market": "GB", "delivery_start": "2026-03-14T07:30:00+00:00",
          "delivery_end": "2026-03-14T08:00:00+00:00"}  # fmt: skip
    assert get(pg, params=gb).json()["unit"] == "gbp/mwh"


def test_a_periods_price_is_final_after_its_gate_closure(start_playground):
    # DE closes 5 min before delivery: the 07:15 quarter's last revision is made at 07:00.
    late = datetime(2026, 3, 14, 9, 0, tzinfo=UTC).timestamp()
    pg = start_playground(market_data=MarketDataOptions(seed=4, clock=lambda: late))
    stamp = datetime.fromisoformat(get(pg, params=QUARTER).json()["last_update"])
    assert (
        datetime(2026, 3, 14, 7, 0, tzinfo=UTC)
        <= stamp
        <= datetime(2026, 3, 14, 7, 0, 30, tzinfo=UTC)
    )


@pytest.mark.parametrize(
    "params",
    [
        {**QUARTER, "market": "FR"},
        {**QUARTER, "delivery_end": "2026-03-14T07:35:00Z"},  # a 20-minute product
        {**QUARTER, "market": "GB"},  # GB trades no quarter-hours
        {**QUARTER, "delivery_start": "2026-03-14T07:15:00"},  # no offset
        {**QUARTER, "delivery_start": "9999-12-31T23:45:00Z"},
        {"market": "DE", "delivery_start": QUARTER["delivery_start"]},
    ],
)
def test_the_newer_form_refuses_what_names_no_period(shared_playground, params):
    answer = get(shared_playground, params=params)
    assert answer.status_code == 400 and answer.json()["error_message"]


def test_an_injected_clock_drives_the_rate_limit_too(start_playground):
    now = [FROZEN]
    pg = start_playground(
        market_data=MarketDataOptions(rate_limit_per_minute=2, clock=lambda: now[0])
    )
    assert [get(pg).status_code for _ in range(3)] == [200, 200, 429]
    now[0] += 61  # a minute of the injected clock, a moment of the real one
    assert get(pg).status_code == 200
