"""The deal confirmation of the exchange contract: its fields, validation and wire form.

This is the one place the contract's fields live; the playground, the listener, the drain
and the tests all import it.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from energy_assets.delivery import parse_delivery_day, parse_hour_label

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
)
_DEAL_ID = re.compile(r"^[0-9a-f]{32}$")


class InvalidFrame(ValueError):
    """A frame that is not a valid deal confirmation; `reason` says why, for quarantine."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Deal:
    """One deal confirmation, validated. Field meanings are the contract's."""

    id: str
    price: float
    quantity: float
    direction: str
    delivery_day: str
    delivery_hour: str
    trader_id: str
    execution_time: str

    def to_dict(self) -> dict[str, Any]:
        # asdict() deep-copies recursively: slow on the feed's hot path.
        return {name: getattr(self, name) for name in FIELDS}

    def to_frame(self, envelope: str = "deal_confirmation") -> str:
        """The websocket text frame that carries this deal."""
        if envelope not in ENVELOPES:
            raise ValueError(f"unknown envelope {envelope!r}")
        return json.dumps({envelope: self.to_dict()})


def _number(payload: dict[str, Any], name: str) -> float:
    value = payload[name]
    # bool is an int in Python; "1.2" is a string: neither is a number on the wire.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidFrame(f"{name} must be a number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise InvalidFrame(f"{name} must be finite, got {value!r}")
    return value


def _string(payload: dict[str, Any], name: str) -> str:
    value = payload[name]
    if not isinstance(value, str):
        raise InvalidFrame(f"{name} must be a string, got {type(value).__name__} {value!r}")
    return value


def validate_deal(payload: Any) -> Deal:
    """The envelope's content -> Deal, or InvalidFrame naming the first problem."""
    if not isinstance(payload, dict):
        raise InvalidFrame(f"deal must be a JSON object, got {type(payload).__name__}")
    missing = [name for name in FIELDS if name not in payload]
    if missing:
        raise InvalidFrame(f"missing field(s): {', '.join(missing)}")

    deal_id = _string(payload, "id")
    if not _DEAL_ID.match(deal_id):
        raise InvalidFrame(f"id must be 32 lowercase hex characters, got {deal_id!r}")
    price = _number(payload, "price")
    quantity = _number(payload, "quantity")
    if quantity <= 0:
        raise InvalidFrame(f"quantity must be > 0, got {quantity!r}")
    direction = _string(payload, "direction")
    if direction not in DIRECTIONS:
        raise InvalidFrame(f"direction must be 'buy' or 'sell', got {direction!r}")
    delivery_day = _string(payload, "delivery_day")
    delivery_hour = _string(payload, "delivery_hour")
    trader_id = _string(payload, "trader_id")
    execution_time = _string(payload, "execution_time")
    try:
        parse_delivery_day(delivery_day)
        parse_hour_label(delivery_hour)
    except ValueError as err:
        raise InvalidFrame(str(err)) from None
    if not trader_id.strip():
        raise InvalidFrame("trader_id must not be empty")
    try:
        executed = datetime.fromisoformat(execution_time)
    except ValueError:
        raise InvalidFrame(f"execution_time must be ISO-8601, got {execution_time!r}") from None
    if executed.tzinfo is None:
        raise InvalidFrame(f"execution_time must carry an offset, got {execution_time!r}")
    return Deal(
        id=deal_id,
        price=price,
        quantity=quantity,
        direction=direction,
        delivery_day=delivery_day,
        delivery_hour=delivery_hour,
        trader_id=trader_id,
        execution_time=execution_time,
    )


def parse_frame(text: str | bytes) -> Deal:
    """One websocket frame -> Deal, or InvalidFrame with a reason fit for the quarantine."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidFrame("frame is not UTF-8 text") from None
    try:
        message = json.loads(text)
    except ValueError as err:
        raise InvalidFrame(f"frame is not JSON: {err}") from None
    if not isinstance(message, dict):
        raise InvalidFrame(f"frame must be a JSON object, got {type(message).__name__}")
    envelopes = [name for name in ENVELOPES if name in message]
    if not envelopes:
        kinds = ", ".join(sorted(map(str, message))) or "empty object"
        raise InvalidFrame(f"not a deal confirmation (message type: {kinds})")
    if len(envelopes) > 1:
        raise InvalidFrame("frame carries both envelopes")
    return validate_deal(message[envelopes[0]])
