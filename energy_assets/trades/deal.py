"""The deal confirmation of the exchange contract: its fields, validation and wire form.

This is the one place the contract's fields live; the playground, the listener, the drain
and the tests all import it.

`parse_frame` is total: whatever a frame holds, it returns a `Deal` or a `Refused` with the
reason the quarantine keeps, never an exception. What it accepts is what `raw_trades` can
hold and what every blocking check on it passes (docs/trades.md, "Validation"): ASCII-only
full-string grammars for ids, labels, days and instants; finite numbers inside the market's
limits; instants an exchange can have meant.
"""

from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from energy_assets.markets import (
    EARLIEST,
    LATEST,
    YEARS,
    Invalid,
    KeyGivenTwice,
    Period,
    delivery_of,
    one_value_per_key,
    parse_instant,
    show,
)

#: Envelope names the exchange uses; the second comes from a newer revision of its spec.
ENVELOPES = ("deal_confirmation", "trade_confirmation")
DIRECTIONS = ("buy", "sell")
FIELDS = (
    "id",
    "price",
    "quantity",
    "direction",
    "delivery_day",
    "delivery_hour",
    "trader_id",
    "execution_time",
    "market",
    "delivery_start",
    "delivery_end",
)
#: What a confirmation books: every field but its id. A later receipt of an id with other terms
#: is no repeat of it (the listener and the drain quarantine it; the first stays booked).
TERMS = FIELDS[1:]
#: Why such a receipt is quarantined, after `deal <id>`.
OTHER_TERMS = "confirmed again with other terms than its first receipt"
#: The fields of the contract's first revision (§1): what the original exchange sends.
LEGACY_FIELDS = FIELDS[:8]
#: Fields every frame carries; the delivery period comes from `markets.delivery_of` (§5).
REQUIRED = ("id", "price", "quantity", "direction", "trader_id", "execution_time")

#: SIDC's harmonised maximum and minimum clearing prices for continuous intraday (€/MWh).
PRICE_LIMIT = 9_999
#: MW. Far above any real deal (intraday deals are single to a few hundred MW; the largest
#: power station in Europe is ~5.7 GW), far below what breaks a sum of a year of deals.
QUANTITY_LIMIT = 10_000
#: A delivery period lies in `markets.EARLIEST` .. `markets.LATEST` (2000..8999), its local
#: day too: before 2000 there was no continuous power market, from 9000 on are the sentinels
#: (`9999-12-31`). A far day inside them (a year 2999 typo) is a confirmed deal all the same:
#: booked, and flagged by the `no_far_deliveries` check. Execution times are 2000 or later
#: and at most `CLOCK_SKEW` ahead of us.
LATEST_DELIVERY_DAY = LATEST.date() - timedelta(days=1)
CLOCK_SKEW = timedelta(days=1)
#: Trader ids as the desk's systems write them (`flex_trader_4`): ASCII, no spaces or controls.
TRADER_ID_MAX = 64

#: Hex is hex in either case (the contract says "32 hex characters"); stored in lower case, so
#: one deal sent in both cases is one deal, as a UUID is.
_DEAL_ID = re.compile(r"[0-9a-fA-F]{32}")
TRADER_ID = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.@-]{{0,{TRADER_ID_MAX - 1}}}")
TRADER_ID_TEXT = f"1-{TRADER_ID_MAX} ASCII letters, digits or _.@- (not starting with a symbol)"
_REQUIRED = frozenset(REQUIRED)


class InvalidFrame(ValueError):
    """Raised inside the parser to stop at the first problem; `parse_frame` turns it into
    `Refused`. Field checks added later raise it too."""

    def __init__(self, reason: str, confirmation: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.confirmation = confirmation


@dataclass(frozen=True)
class Refused:
    """A frame that is not a valid deal confirmation; `reason` is what the quarantine keeps.
    `confirmation`: the frame carried a deal envelope, so a deal the exchange confirmed may be
    missing from the book (the desk says so), not a heartbeat or some other message."""

    reason: str
    confirmation: bool = False


@dataclass(frozen=True)
class Deal:
    """One deal confirmation, validated. Field meanings are the contract's. The delivery period
    is always complete: `market`, `delivery_start` and `delivery_end` (UTC, ISO-8601) are
    authoritative; `delivery_day` and `delivery_hour` are its local day and label."""

    id: str
    price: float
    quantity: float
    direction: str
    delivery_day: str
    delivery_hour: str
    trader_id: str
    execution_time: str
    market: str
    delivery_start: str
    delivery_end: str

    @property
    def period(self) -> Period:
        return Period(
            self.market,
            datetime.fromisoformat(self.delivery_start),
            datetime.fromisoformat(self.delivery_end),
        )

    def to_dict(self, legacy: bool = False) -> dict[str, Any]:
        """The contract's fields; `legacy`: only those of its first revision (§1)."""
        # asdict() deep-copies recursively: slow on the feed's hot path.
        return {name: getattr(self, name) for name in (LEGACY_FIELDS if legacy else FIELDS)}

    def to_frame(self, envelope: str = "deal_confirmation", legacy: bool = False) -> str:
        """The websocket text frame that carries this deal."""
        if envelope not in ENVELOPES:
            raise ValueError(f"unknown envelope {envelope!r}")
        return json.dumps({envelope: self.to_dict(legacy)})


def _number(payload: dict[str, Any], name: str, low: float, high: float) -> float:
    value = payload[name]
    # bool is an int in Python; "1.2" is a string: neither is a number on the wire.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidFrame(f"{name} must be a number, got {type(value).__name__} {show(value)}")
    # Compared before float(): a 400-digit integer overflows a float.
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidFrame(f"{name} must be finite, got {show(value)}")
    if not low <= value <= high:
        raise InvalidFrame(f"{name} must be within {low:g}..{high:g}, got {show(value)}")
    return float(value) + 0.0  # -0.0 is 0: no page shows a price of "-0.00"


def _string(
    payload: dict[str, Any], name: str, grammar: re.Pattern | None = None, what: str = ""
) -> str:
    value = payload[name]
    if not isinstance(value, str):
        raise InvalidFrame(f"{name} must be a string, got {type(value).__name__} {show(value)}")
    if grammar is not None and not grammar.fullmatch(value):
        raise InvalidFrame(f"{name} must be {what}, got {show(value)}")
    return value


def _instant(payload: dict[str, Any], name: str, latest: datetime) -> datetime:
    """An instant field (`markets.parse_instant`) -> aware datetime in UTC, at most `latest`."""
    moment = parse_instant(payload[name])
    if isinstance(moment, Invalid):
        raise InvalidFrame(f"{name}: {moment.reason}")
    if moment > latest:
        raise InvalidFrame(f"{name} {payload[name]!r} is after {latest.isoformat()}")
    return moment


#: The fields a delivery period is resolved from (contract §5). One that is null is left out:
#: serialisers write an optional field they do not fill as null (Jackson's default).
_DELIVERY_FIELDS = ("market", "delivery_day", "delivery_hour", "delivery_start", "delivery_end")
#: The longest field value cached: an instant with microseconds and offset is 32 characters.
_CACHED_LENGTH = 40


@functools.lru_cache(maxsize=4096)
def _resolved(*values: object) -> tuple[str, str, str, str, str] | Invalid:
    """`markets.delivery_of` for the delivery fields' values (None where a field is left out
    or null) -> (market, local day, label, start, end) as the deal writes them, or why not. A feed
    names the same few hundred open periods over and over: resolving each once, not once a
    frame, is most of what keeps the listener up with the exchange (benchmarks/README.md)."""
    fields = {name: v for name, v in zip(_DELIVERY_FIELDS, values, strict=True) if v is not None}
    period = delivery_of(fields)
    if isinstance(period, Invalid):
        return period
    # The instants and the local day both inside the years, as `plausible_dates` checks them:
    # Berlin's 2000-01-01 00-01 starts in 1999 UTC, a start at 8999-12-31T23:00Z is 9000 there.
    if not (
        EARLIEST <= period.delivery_start
        and period.delivery_end <= LATEST
        and EARLIEST.date() <= period.local_day <= LATEST_DELIVERY_DAY
    ):
        return Invalid(f"delivery period {period} is outside the years {YEARS}")
    return (
        period.market,
        period.local_day.isoformat(),
        period.label,
        period.delivery_start.isoformat(),
        period.delivery_end.isoformat(),
    )


def _delivery(payload: dict[str, Any]) -> tuple[str, str, str, str, str]:
    """The deal's delivery period as (market, local day, label, start, end), or InvalidFrame."""
    values = tuple(map(payload.get, _DELIVERY_FIELDS))
    # Only short strings are cached: any other value is refused anyway; 1, 1.0 and True, or 0.0
    # and -0.0, are one key to a cache but quoted differently in the reason; and a hostile
    # feed's megabyte-long fields would otherwise be held, 4,096 of them.
    resolve = _resolved
    for value in values:
        if value is not None and (type(value) is not str or len(value) > _CACHED_LENGTH):
            resolve = _resolved.__wrapped__
            break
    resolved = resolve(*values)
    if isinstance(resolved, Invalid):
        raise InvalidFrame(resolved.reason)
    return resolved


def validate_deal(payload: Any, now: datetime | None = None) -> Deal:
    """The envelope's content -> Deal, or InvalidFrame naming the first problem. `now` (UTC,
    default the clock) bounds how far ahead an execution time may be."""
    if not isinstance(payload, dict):
        raise InvalidFrame(f"deal must be a JSON object, got {type(payload).__name__}")
    if not _REQUIRED.issubset(payload):
        missing = [name for name in REQUIRED if name not in payload]
        raise InvalidFrame(f"missing field(s): {', '.join(missing)}")

    deal_id = _string(payload, "id", _DEAL_ID, "32 ASCII hex characters").lower()
    price = _number(payload, "price", -PRICE_LIMIT, PRICE_LIMIT)
    quantity = _number(payload, "quantity", 0, QUANTITY_LIMIT)
    if quantity <= 0:
        raise InvalidFrame(f"quantity must be > 0, got {show(payload['quantity'])}")
    direction = payload["direction"]
    if not isinstance(direction, str) or direction not in DIRECTIONS:
        raise InvalidFrame(f"direction must be 'buy' or 'sell', got {show(direction)}")
    # Market, instants and labels (contract §5), inside the years 2000..8999.
    market, delivery_day, delivery_hour, delivery_start, delivery_end = _delivery(payload)
    trader_id = _string(payload, "trader_id", TRADER_ID, TRADER_ID_TEXT)
    _instant(payload, "execution_time", (now or datetime.now(UTC)) + CLOCK_SKEW)
    return Deal(
        id=deal_id,
        price=price,
        quantity=quantity,
        direction=direction,
        delivery_day=delivery_day,
        delivery_hour=delivery_hour,
        trader_id=trader_id,
        execution_time=payload["execution_time"],
        market=market,
        delivery_start=delivery_start,
        delivery_end=delivery_end,
    )


def parse_frame(text: str | bytes, now: datetime | None = None) -> Deal | Refused:
    """One websocket frame -> Deal, or Refused with a reason fit for the quarantine. Never
    raises. `now` (UTC, default the clock) bounds how far ahead an execution time may be."""
    try:
        return _parse(text, now)
    except InvalidFrame as err:
        return Refused(err.reason, err.confirmation)


def _parse(text: str | bytes, now: datetime | None) -> Deal:
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidFrame("frame is not UTF-8 text") from None
    try:
        # A byte order mark before the JSON is ignored, as RFC 8259 (8.1) allows a parser to.
        message = json.loads(text.removeprefix("\ufeff"), object_pairs_hook=one_value_per_key)
    except KeyGivenTwice as err:
        raise InvalidFrame(f"frame is ambiguous: {err}") from None
    except ValueError as err:  # also Python's 4,300-digit limit on integers
        raise InvalidFrame(f"frame is not JSON: {show(str(err))}") from None
    except RecursionError:
        raise InvalidFrame("frame nests JSON too deeply") from None
    if not isinstance(message, dict):
        raise InvalidFrame(f"frame must be a JSON object, got {type(message).__name__}")
    envelopes = [name for name in ENVELOPES if name in message]
    if not envelopes:
        kinds = ", ".join(sorted(map(show, message))) or "empty object"
        raise InvalidFrame(f"not a deal confirmation (message type: {show(kinds)})")
    if len(envelopes) > 1:
        raise InvalidFrame("frame carries both envelopes", confirmation=True)
    try:
        return validate_deal(message[envelopes[0]], now)
    except InvalidFrame as err:
        raise InvalidFrame(err.reason, confirmation=True) from None
