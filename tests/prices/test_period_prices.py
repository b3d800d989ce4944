"""The newer request form through the real client against the playground's Market Data API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from energy_assets.markets import Period, open_periods
from energy_assets.playground.pricing import published_price
from energy_assets.playground.server import MarketDataOptions
from energy_assets.prices.budget import FRESH
from energy_assets.prices.client import MarketDataClient
from energy_assets.prices.period_prices import PeriodPrice, period_request


def test_quarter_hours_and_half_hours_of_both_markets(start_playground, tmp_path):
    playground = start_playground(
        market_data=MarketDataOptions(seed=3, vendor_grid=True, rate_limit_per_minute=50)
    )
    client = MarketDataClient(
        base_url=playground.market_data_url + "/v1", budget_path=str(tmp_path / "budget.sqlite")
    )
    now = datetime.now(UTC)
    periods = open_periods("DE", now + timedelta(hours=1))[:4] + open_periods("GB", now)[:2]
    periods.append(open_periods("DE", now + timedelta(hours=1), 60)[0])
    # Open periods, as the planner fetches them: `bulk` would wait, by the clock, up to two
    # minutes around each 10-minute slot for the planner's burst (tests/prices/test_budget.py).
    report = client.fetch_requests([period_request(p) for p in periods], priority=FRESH)
    assert not report.errors and report.requests == len(periods)
    for period in periods:
        price = report.prices[str(period)]
        assert isinstance(price, PeriodPrice) and price.period == period
        assert price.unit == {"DE": "euro/mwh", "GB": "gbp/mwh"}[period.market]
        truth = published_price(3, period, price.fetched_at.timestamp(), vendor_grid=True)
        assert price.last_update <= price.fetched_at
        assert (price.value, price.last_update) == (truth.value, truth.last_update) or (
            price.last_update < truth.last_update  # a revision published during the request
        )
    assert playground.rate_limited == 0


def test_an_answer_for_another_period_fails_its_key_only(scripted_market_data, tmp_path):
    from tests.prices.conftest import Answer

    vendor = scripted_market_data()
    start = datetime(2026, 10, 25, 0, 0, tzinfo=UTC)
    asked = Period("DE", start, start + timedelta(minutes=15))
    body = {
        "market": "DE",
        "delivery_start": "2026-10-25T00:15:00Z",  # the next quarter-hour
        "delivery_end": "2026-10-25T00:30:00Z",
        "value": 41.5,
        "unit": "euro/mwh",
        "last_update": "2026-10-24T23:50:07Z",
    }
    vendor.script = [Answer(200, body)]
    client = MarketDataClient(base_url=vendor.url, budget_enabled=False, max_retries=0)
    report = client.fetch_requests([period_request(asked, "q")])
    assert "q" in report.errors and "delivery_start" in str(report.errors["q"])
