"""One vendor answer judged alone: a price, or the reason it is refused. Never an exception.

`judge_answer` is total: whatever bytes the vendor sends (any JSON value, numbers no float
holds, sentinel dates, Unicode look-alikes, trailing newlines, a body nested past the recursion
limit), it returns a `JudgedAnswer` or a `Refused` naming the reason. Every accepted value is
finite, inside the market's limits and in the market's unit; `last_update` is a real instant
between 2000 and now plus a clock skew. The request form is not its business: the caller
passes the fields the answer must echo (`{"delivery_day": ..., "delivery_hour": ...}` for the
contract's hourly form; the newer form's `market` and its `delivery_start`, `delivery_end` as
UTC datetimes, compared as instants).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from energy_assets.markets import Invalid, KeyGivenTwice, one_value_per_key, parse_instant, show

#: A `last_update` later than now by more than this is refused (the vendor's clock and ours).
CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class PriceRules:
    """What a market accepts as a price: its unit, the units the vendor may use instead (with
    the factor to the market's unit), and the harmonised price limits in the market's unit."""

    unit: str
    #: Lower-case ASCII unit -> factor to `unit`. The market's own unit is always accepted.
    conversions: Mapping[str, float] = field(default_factory=dict)
    low: float = -9999.0
    high: float = 9999.0

    def factor(self, unit: str) -> float | None:
        """The factor from `unit` to the market's unit, None for a unit we do not know.
        ASCII only before lower-casing: `"K"` (Kelvin sign) lower-cases to `"k"`."""
        if not unit.isascii():
            return None
        key = unit.lower()
        if key == self.unit:
            return 1.0
        return self.conversions.get(key)


#: The default market (DE, contract §5): EUR per MWh. The limits are SIDC's harmonised
#: intraday limits (±9,999 €/MWh), the widest a European market clears at; the day-ahead's
#: (SDAC, -500 to +4,000 €/MWh) lie inside them, so one rule serves both products.
EURO_MWH = PriceRules(
    unit="euro/mwh",
    conversions={"eur/mwh": 1.0, "euro/kwh": 1000.0, "eur/kwh": 1000.0},
)


@dataclass(frozen=True)
class JudgedAnswer:
    """An accepted answer: `value` in the market's `unit`, `last_update` in UTC."""

    value: float
    unit: str
    last_update: datetime
    #: The answer's JSON object, for callers that read more fields (never needed to judge).
    fields: Mapping[str, Any]


@dataclass(frozen=True)
class Refused:
    """An answer that is not a valid price for the period asked, and why."""

    reason: str


def _json_number(text: str) -> float:
    # JSON integers as floats: a 401-digit integer becomes inf (refused as not finite) instead
    # of an int that overflows float() later; int() also refuses >4,300 digits with ValueError.
    return float(text)


def decode(body: bytes | str) -> Any | Refused:
    """The answer's JSON value, or why it is not JSON."""
    try:
        return json.loads(body, parse_int=_json_number, object_pairs_hook=one_value_per_key)
    except KeyGivenTwice as error:
        return Refused(f"answer is ambiguous: {error}")
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
        return Refused(f"answer is not JSON: {type(error).__name__}: {str(error)[:80]}")


def _judge(data: Any, echo: Mapping[str, str | datetime], rules: PriceRules, now: datetime):
    if not isinstance(data, dict):
        return Refused(f"answer is not a JSON object: {type(data).__name__}")
    wanted = (*echo, "value", "unit", "last_update")
    missing = [key for key in wanted if key not in data]
    if missing:
        return Refused(f"answer lacks {', '.join(missing)}")
    for key, expected in echo.items():
        if isinstance(expected, datetime):  # an instant: any offset naming the same moment
            got = parse_instant(data[key])
            if isinstance(got, Invalid):
                return Refused(f"{key}: {got.reason}")
            if got != expected:
                return Refused(f"answer is for {key} {got.isoformat()}, not {expected.isoformat()}")
        elif data[key] != expected:
            return Refused(f"answer is for {key} {show(data[key])}, not {expected!r}")

    unit = data["unit"]
    if not isinstance(unit, str):
        return Refused(f"unit is not a string: {show(unit)}")
    factor = rules.factor(unit)
    if factor is None:
        return Refused(f"unit {show(unit)} is not {rules.unit} nor one we convert")
    value = data["value"]
    if isinstance(value, int) and not isinstance(value, bool):  # an already decoded body
        value = float(value) if abs(value) < 10**300 else math.inf
    if isinstance(value, bool) or not isinstance(value, float):
        return Refused(f"value is not a number: {show(value)}")
    if not math.isfinite(value):
        return Refused(f"value is not finite: {show(value)}")
    value = value if factor == 1.0 else round(value * factor, 6)
    if not rules.low <= value <= rules.high:
        return Refused(
            f"value {value!r} {rules.unit} is outside the market's limits "
            f"[{rules.low:g}, {rules.high:g}]"
        )

    stamp = parse_instant(data["last_update"])
    if isinstance(stamp, Invalid):
        return Refused(f"last_update: {stamp.reason}")
    if stamp > now + CLOCK_SKEW:
        return Refused(
            f"last_update {stamp.isoformat()} is in the future (now {now.isoformat()}, "
            f"clock skew allowed {CLOCK_SKEW})"
        )
    return JudgedAnswer(value=value, unit=rules.unit, last_update=stamp, fields=data)


def judge_answer(
    body: bytes | str | Any,
    echo: Mapping[str, str | datetime],
    rules: PriceRules = EURO_MWH,
    now: datetime | None = None,
) -> JudgedAnswer | Refused:
    """Judge one 200 answer's body (bytes or text; an already decoded JSON value is taken as
    is) against the fields it must echo: a string is compared exactly, a datetime as an
    instant (`"2026-10-25T00:00:00Z"` echoes `"2026-10-25T02:00:00+02:00"`). Total: a price
    or a reason, never an exception."""
    now = now or datetime.now(UTC)
    try:
        data = decode(body) if isinstance(body, bytes | str) else body
        if isinstance(data, Refused):
            return data
        return _judge(data, echo, rules, now)
    except Exception as error:  # the last resort: a case the rules above did not foresee
        return Refused(f"answer could not be judged: {type(error).__name__}: {str(error)[:80]}")


@dataclass(frozen=True)
class PriceRequest:
    """One period to fetch: `params` of `GET reference-price`, and `accept`, which turns the
    200 body (and when it was read) into the price or a `Refused` and must never raise
    (`period_prices.period_request` builds one for a period)."""

    key: str
    params: dict[str, str]
    accept: Callable[[bytes, datetime], Any]
