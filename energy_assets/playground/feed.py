"""The stand-in exchange's frame stream: good deals, duplicates and malformed frames.

Pure and deterministic: the same seed and the same clock readings give the same frames.
Three independent random streams keep the switches from disturbing one another:

- `deals:<seed>` draws the good deals, so the sequence of good deals under a seed is the
  same whatever faults are switched on;
- `envelope:<seed>` picks each deal's envelope (and, for `trade_confirmation`, whether the
  execution time ends in `Z`);
- `faults:<seed>` decides duplicates and malformed frames and fills the malformed ones.
"""

from __future__ import annotations

import bisect
import functools
import json
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta

from energy_assets.markets import DEFAULT_MARKET, MARKETS, Period, day_periods
from energy_assets.playground.pricing import fair_price
from energy_assets.trades.deal import ENVELOPES, REQUIRED, Deal

ENVELOPE_CHOICES = (*ENVELOPES, "mixed")
MALFORMED_KINDS = (
    "not_json",
    "not_object",
    "other_type",
    "missing_field",
    "mistyped_field",
    "out_of_range",
)
#: A duplicate is re-sent within this many frames of its original.
DUPLICATE_WINDOW = 5


def trader_ids(traders: int) -> list[str]:
    return [f"flex_trader_{n}" for n in range(1, traders + 1)]


def format_time(moment: datetime, zulu: bool = False) -> str:
    text = moment.astimezone(UTC).isoformat(timespec="seconds")
    return text.replace("+00:00", "Z") if zulu else text


#: What the stand-in exchange trades by default: every product of every market (contract §5).
DEFAULT_PRODUCTS = tuple(
    (code, m) for code, market in MARKETS.items() for m in market.products_minutes
)


def parse_products(text: str) -> tuple[tuple[str, int], ...]:
    """`"DE:60,DE:15,GB:30"` -> ((market, minutes), ...); ValueError naming what no market trades."""
    products = []
    for item in text.split(","):
        code, _, minutes = item.strip().partition(":")
        market = MARKETS.get(code)
        if market is None or not minutes.isascii() or not minutes.isdigit():
            raise ValueError(f"product must look like DE:60 with a known market, got {item!r}")
        if int(minutes) not in market.products_minutes:
            raise ValueError(f"{code} does not trade {minutes}-minute periods")
        products.append((code, int(minutes)))
    return tuple(dict.fromkeys(products))


@functools.lru_cache(maxsize=256)
def _day(market: str, day: date, minutes: int, unique_labels: bool) -> tuple[Period, ...]:
    periods = day_periods(market, day, minutes)
    if unique_labels:
        # The seed's form names a period by its label alone: not the repeated fall-back hour.
        labels = Counter(p.label for p in periods)
        periods = [p for p in periods if labels[p.label] == 1]
    return tuple(periods)


def tradable(market: str, minutes: int, now: datetime, unique_labels: bool = False) -> list[Period]:
    """The periods of `minutes` open at `now` (`markets.open_periods`), from a cache of days."""
    config = MARKETS[market]
    today = now.astimezone(config.tz).date()
    periods = _day(market, today, minutes, unique_labels) + _day(
        market, today + timedelta(days=1), minutes, unique_labels
    )
    first = bisect.bisect_right(
        periods,
        now + timedelta(minutes=config.gate_closure_minutes),
        key=lambda p: p.delivery_start,
    )
    return list(periods[first:])


class DealGenerator:
    """Good deals drawn from one seeded stream: ids, traders, sides, sizes, products, periods,
    prices.

    Every deal consumes the same number of draws whatever the clock says, so the n-th deal's
    id, trader, side, size and price draws are fixed by the seed alone; its product is one of
    `products` ((market, minutes) pairs) and its period the same draw mapped onto that
    product's periods open at the deal's execution time (from the next one before gate
    closure to the end of the next local day). `legacy` deals are the default market's hours
    only, for frames of the contract's first revision.
    """

    def __init__(
        self,
        seed: int,
        traders: int,
        products: tuple[tuple[str, int], ...] = DEFAULT_PRODUCTS,
        legacy: bool = False,
    ):
        if traders < 1:
            raise ValueError(f"traders must be >= 1, got {traders!r}")
        if not products:
            raise ValueError("at least one product is needed")
        self.seed = seed
        self.traders = trader_ids(traders)
        self.products = ((DEFAULT_MARKET, 60),) if legacy else tuple(products)
        self.legacy = legacy
        self._rng = random.Random(f"deals:{seed}")

    def next_deal(self, executed: datetime, zulu: bool = False) -> Deal:
        rng = self._rng
        deal_id = f"{rng.getrandbits(128):032x}"
        trader = self.traders[int(rng.random() * len(self.traders))]
        direction = "buy" if rng.random() < 0.5 else "sell"
        quantity = round(0.1 + rng.random() * 24.9, 1)
        period_draw = rng.random()
        spread_draw = rng.random()
        special_draw = rng.random()
        product_draw = rng.random()

        executed = executed.astimezone(UTC).replace(microsecond=0)
        market, minutes = self.products[int(product_draw * len(self.products))]
        periods = tradable(market, minutes, executed, unique_labels=self.legacy)
        period = periods[int(period_draw * len(periods))]

        price = fair_price(self.seed, period) + (spread_draw - 0.5) * 24.0
        if special_draw < 0.02:
            price = 0.0  # power prices can be exactly zero ...
        elif special_draw < 0.05:
            price = -0.01 - special_draw * 800.0  # ... or negative
        return Deal(
            id=deal_id,
            price=round(price, 2),
            quantity=quantity,
            direction=direction,
            delivery_day=period.local_day.isoformat(),
            delivery_hour=period.label,
            trader_id=trader,
            execution_time=format_time(executed, zulu),
            market=market,
            delivery_start=period.delivery_start.isoformat(),
            delivery_end=period.delivery_end.isoformat(),
        )


def _with(deal: Deal, legacy: bool = False, **changes: object) -> dict:
    return deal.to_dict(legacy) | changes


def _later(instant: str, minutes: int) -> str:
    return (datetime.fromisoformat(instant) + timedelta(minutes=minutes)).isoformat()


def _envelope(payload: object, name: str = "deal_confirmation") -> str:
    return json.dumps({name: payload})


def _without(deal: Deal, field: str) -> str:
    payload = deal.to_dict()
    del payload[field]
    return _envelope(payload)


# Each kind lists its variants; a malformed frame of a kind takes the next variant in turn,
# so a long enough run sends every one of them.
_VARIANTS: dict[str, list[Callable[[Deal], str]]] = {
    "not_json": [
        lambda d: d.to_frame()[: len(d.to_frame()) // 2],
        lambda d: f"deal_confirmation id={d.id} price={d.price} quantity={d.quantity}",
        lambda d: str({"deal_confirmation": d.to_dict()}),
        lambda d: "",
        lambda d: d.to_frame() + "}",
    ],
    "not_object": [
        lambda d: json.dumps([{"deal_confirmation": d.to_dict()}]),
        lambda d: json.dumps("deal_confirmation"),
        lambda d: "42",
        lambda d: "null",
        lambda d: "true",
    ],
    "other_type": [
        lambda d: json.dumps({"heartbeat": {"time": d.execution_time}}),
        lambda d: json.dumps({"order_update": _with(d, status="filled")}),
        lambda d: json.dumps({"deal_cancellation": {"id": d.id}}),
        lambda d: "{}",
        lambda d: json.dumps({"deal_confirmation": d.to_dict(), "trade_confirmation": d.to_dict()}),
    ],
    "missing_field": [
        *((lambda d, f=field: _without(d, f)) for field in REQUIRED),
        lambda d: _without(d, "delivery_end"),
        lambda d: _envelope(
            {k: v for k, v in d.to_dict().items() if not k.startswith("delivery_")}
        ),
    ],
    "mistyped_field": [
        lambda d: _envelope(_with(d, price="abc")),
        lambda d: _envelope(_with(d, quantity=str(d.quantity))),
        lambda d: _envelope(_with(d, price=True)),
        lambda d: _envelope(_with(d, price=None)),
        lambda d: _envelope(_with(d, id=int(d.id[:12], 16))),
        lambda d: _envelope(_with(d, delivery_day=int(d.delivery_day.replace("-", "")))),
        lambda d: _envelope(_with(d, delivery_hour=int(d.delivery_hour[:2]))),
        lambda d: _envelope(_with(d, direction=[d.direction])),
        lambda d: _envelope(_with(d, trader_id=None)),
        lambda d: _envelope(_with(d, execution_time=1677000000)),
        lambda d: _envelope(list(d.to_dict().values())),
        lambda d: _envelope(d.to_frame()),
    ],
    "out_of_range": [
        lambda d: _envelope(_with(d, quantity=0)),
        lambda d: _envelope(_with(d, quantity=-abs(d.quantity))),
        lambda d: _envelope(_with(d, delivery_hour="24-25")),
        lambda d: _envelope(_with(d, delivery_hour="23-00")),
        lambda d: _envelope(_with(d, delivery_hour="7-8")),
        lambda d: _envelope(_with(d, delivery_hour="07-09")),
        lambda d: _envelope(_with(d, delivery_day="2023-02-30")),
        lambda d: _envelope(_with(d, delivery_day="21.02.2023")),
        # Contract §5: what no market trades, or fields that contradict each other.
        lambda d: _envelope(_with(d, market="XX")),
        lambda d: _envelope(_with(d, delivery_end=_later(d.delivery_start, minutes=20))),
        lambda d: _envelope(
            _with(d, delivery_hour="23-24" if d.delivery_hour != "23-24" else "00-01")
        ),
        lambda d: _envelope(_with(d, delivery_start="0001-01-01T00:00:00Z")),
        lambda d: _envelope(
            _with(d, legacy=True, delivery_day="2026-10-25", delivery_hour="02-03")
        ),
        lambda d: _envelope(
            _with(d, legacy=True, delivery_day="2026-03-29", delivery_hour="02-03")
        ),
        lambda d: _envelope(_with(d, direction="hold")),
        lambda d: _envelope(_with(d, direction=d.direction.upper())),
        lambda d: _envelope(_with(d, id="xyz")),
        lambda d: _envelope(_with(d, id="g" + d.id[1:])),
        lambda d: _envelope(_with(d, id=d.id[:31])),
        lambda d: _envelope(_with(d, execution_time="yesterday")),
        lambda d: _envelope(_with(d, execution_time=d.execution_time[:19])),
        lambda d: _envelope(_with(d, trader_id="")),
        # Python's json writes NaN; lenient parsers read it, the contract's price cannot be it.
        lambda d: _envelope(_with(d, price=float("nan"))),
    ],
}


def malformed_variants(kind: str) -> int:
    """How many distinct malformed frames of `kind` the feed knows."""
    return len(_VARIANTS[kind])


def malformed_frame(kind: str, variant: int, deal: Deal) -> str:
    """Malformed frame number `variant` (mod the kind's count) of `kind`, built around `deal`."""
    variants = _VARIANTS[kind]
    return variants[variant % len(variants)](deal)


@dataclass(frozen=True)
class Frame:
    """One frame of the feed and what it is."""

    text: str
    kind: str  # "deal", "duplicate" or "malformed"
    deal: Deal | None = None  # the deal a "deal" or "duplicate" frame carries
    malformed_kind: str | None = None


class FrameStream:
    """The exchange's frames in order: `next_frame(now)` gives the next one.

    `envelope` is "deal_confirmation", "trade_confirmation" or "mixed" (each deal picks one
    at random). Rates are probabilities per frame (malformed) and per good deal (duplicate).
    """

    def __init__(
        self,
        seed: int = 0,
        traders: int = 5,
        envelope: str = "deal_confirmation",
        duplicate_rate: float = 0.0,
        malformed_rate: float = 0.0,
        products: tuple[tuple[str, int], ...] = DEFAULT_PRODUCTS,
        legacy: bool = False,
    ):
        if envelope not in ENVELOPE_CHOICES:
            raise ValueError(f"envelope must be one of {', '.join(ENVELOPE_CHOICES)}")
        for name, rate in (("duplicate_rate", duplicate_rate), ("malformed_rate", malformed_rate)):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be within 0..1, got {rate!r}")
        self.envelope = envelope
        self.duplicate_rate = duplicate_rate
        self.malformed_rate = malformed_rate
        self.legacy = legacy
        self.deals = DealGenerator(seed, traders, products, legacy)
        self._envelope_rng = random.Random(f"envelope:{seed}")
        self._faults = random.Random(f"faults:{seed}")
        self._junk = DealGenerator(seed ^ 0x5EED, traders, products, legacy)
        self._duplicates: list[tuple[int, Frame]] = []  # (due frame number, frame)
        self._malformed_sent = 0
        self.frames = 0

    def _pick_envelope(self) -> tuple[str, bool]:
        envelope_draw = self._envelope_rng.random()
        zulu_draw = self._envelope_rng.random()
        if self.envelope == "mixed":
            name = ENVELOPES[0] if envelope_draw < 0.5 else ENVELOPES[1]
        else:
            name = self.envelope
        # The newer spec's envelope may write UTC as `Z`; the original's never does.
        return name, name == "trade_confirmation" and zulu_draw < 0.5

    def next_frame(self, now: datetime) -> Frame:
        number = self.frames
        self.frames += 1
        if self._duplicates and self._duplicates[0][0] <= number:
            _, original = self._duplicates.pop(0)
            return replace(original, kind="duplicate")
        if self.malformed_rate and self._faults.random() < self.malformed_rate:
            kind = MALFORMED_KINDS[self._malformed_sent % len(MALFORMED_KINDS)]
            variant = self._malformed_sent // len(MALFORMED_KINDS)
            self._malformed_sent += 1
            text = malformed_frame(kind, variant, self._junk.next_deal(now))
            return Frame(text=text, kind="malformed", malformed_kind=kind)
        name, zulu = self._pick_envelope()
        deal = self.deals.next_deal(now, zulu=zulu)
        frame = Frame(text=deal.to_frame(name, self.legacy), kind="deal", deal=deal)
        if self.duplicate_rate and self._faults.random() < self.duplicate_rate:
            due = number + 1 + int(self._faults.random() * DUPLICATE_WINDOW)
            self._duplicates.append((due, frame))
            self._duplicates.sort(key=lambda item: item[0])
        return frame
