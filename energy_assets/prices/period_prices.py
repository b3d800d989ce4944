"""The newer request form (contract §5): any market's delivery period by its instants.

`GET reference-price?market=DE&delivery_start=…&delivery_end=…` answers `market`,
`delivery_start`, `delivery_end`, `value`, `unit`, `last_update`; one period per request, one
vendor and one budget for every market. `period_request` builds it as a `PriceRequest` for
`MarketDataClient.fetch_requests`: the answer must echo the period asked (as instants: `Z` and
`+00:00` are the same), carry the market's unit and a plausible revision instant, or it is
refused with its reason (`answer.judge_answer`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from energy_assets.markets import MARKETS, Period
from energy_assets.prices.answer import EURO_MWH, PriceRequest, PriceRules, Refused, judge_answer


@dataclass(frozen=True)
class PeriodPrice:
    """The vendor's price of one period, in its market's unit."""

    period: Period
    value: float
    unit: str
    last_update: datetime
    fetched_at: datetime


def price_rules(market: str) -> PriceRules:
    """What the market accepts as a price: EUR markets take the contract's conversions."""
    unit = MARKETS[market].unit
    return EURO_MWH if unit == EURO_MWH.unit else PriceRules(unit=unit)


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def period_request(period: Period, key: str | None = None) -> PriceRequest:
    """The request of one period; `key` names it in the fetch report (default: `str(period)`,
    e.g. `DE 2026-10-25 02:00-02:15 +0100`)."""
    rules = price_rules(period.market)
    echo = {
        "market": period.market,
        "delivery_start": period.delivery_start,
        "delivery_end": period.delivery_end,
    }

    def accept(body: bytes, fetched_at: datetime) -> PeriodPrice | Refused:
        judged = judge_answer(body, echo, rules, now=fetched_at)
        if isinstance(judged, Refused):
            return judged
        return PeriodPrice(period, judged.value, judged.unit, judged.last_update, fetched_at)

    return PriceRequest(
        key=key or str(period),
        params={
            "market": period.market,
            "delivery_start": _instant(period.delivery_start),
            "delivery_end": _instant(period.delivery_end),
        },
        accept=accept,
    )


def price_row(price: PeriodPrice) -> dict:
    """One `PRICE_ROW` of a fetched period price: its value in the market's currency."""
    period = price.period
    return {
        "market": period.market,
        "delivery_start": period.delivery_start.astimezone(UTC),
        "delivery_end": period.delivery_end.astimezone(UTC),
        "value": price.value,
        "currency": MARKETS[period.market].currency,
        "last_update": price.last_update,
        "fetched_at": price.fetched_at,
    }
