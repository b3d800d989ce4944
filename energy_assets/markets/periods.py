"""Delivery periods: `[delivery_start, delivery_end)` in UTC, in a market.

A period is its instants; the local day and the `HH-HH` label (the local hour that contains
the start) are derived for display and for the older wire form, never computed with. Every
function here is total: any input gives a value or an `Invalid` with its reason. Days and
instants outside 2000..8999 are refused, which also keeps every datetime operation far from
year 1 and 9999.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from energy_assets.markets.config import DEFAULT_MARKET, MARKETS, Market

#: The instants a period may start or end at; outside them no exchange can have meant it.
#: Before 2000 there was no continuous power market. A confirmed deal is a fact however far
#: ahead it delivers (contract §5: booked and flagged, a year 2999 typo included), but the
#: years from 9000 on are where "no date" sentinels live (`9999-12-31`, `9998-12-31`,
#: `9999-01-01`), and refusing them keeps a thousand years between any period and
#: `datetime.max`: a day's bounds, the next day, gate closures, steps never overflow.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
#: The years a day or an instant may be in, for reasons.
YEARS = f"{EARLIEST.year}..{LATEST.year - 1}"

_DAY = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})", re.ASCII)
_LABEL = re.compile(r"([0-9]{2})-([0-9]{2})", re.ASCII)
#: Seconds' fractions to nanoseconds, as Java's `Instant` and Go's RFC3339Nano write them, read
#: to the microsecond (`fromisoformat` drops the rest), as every table stores instants; the
#: offset with or without its colon or in whole hours (`+0100` and `+01`, as Java's
#: `SimpleDateFormat` writes them); `t` and `z` in lower case as well (RFC 3339 §5.6: ISO-8601
#: allows them), and a comma before the fraction (ISO-8601's preferred decimal sign).
_INSTANT = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}(:[0-9]{2}([.,][0-9]{1,9})?)?"
    r"([Zz]|[+-][0-9]{2}(:?[0-9]{2})?)",
    re.ASCII,
)


@dataclass(frozen=True)
class Invalid:
    """Why an input names no period; fit for the quarantine and for a 400 answer."""

    reason: str


@dataclass(frozen=True, order=True)
class Period:
    """A delivery period of a market: `[delivery_start, delivery_end)`, both in UTC."""

    market: str
    delivery_start: datetime
    delivery_end: datetime

    @property
    def config(self) -> Market:
        return MARKETS[self.market]

    @property
    def minutes(self) -> int:
        return int((self.delivery_end - self.delivery_start).total_seconds()) // 60

    @property
    def hours(self) -> float:
        """The period's length in hours: MWh = MW × hours."""
        return self.minutes / 60

    @property
    def local_start(self) -> datetime:
        return self.delivery_start.astimezone(self.config.tz)

    @property
    def local_end(self) -> datetime:
        return self.delivery_end.astimezone(self.config.tz)

    @property
    def local_day(self) -> date:
        return self.local_start.date()

    @property
    def label(self) -> str:
        """`HH-HH`, the local hour that contains the start (10:15-10:30 is `10-11`)."""
        hour = self.local_start.hour
        return f"{hour:02d}-{hour + 1:02d}"

    @property
    def gate_closure(self) -> datetime:
        return self.config.gate_closure(self.delivery_start)

    def steps(self) -> list[Period]:
        """The market's finest-grid periods this one covers, in order."""
        step = timedelta(minutes=self.config.grid_minutes)
        count = (self.delivery_end - self.delivery_start) // step
        return [
            Period(
                self.market, self.delivery_start + i * step, self.delivery_start + (i + 1) * step
            )
            for i in range(count)
        ]

    def __str__(self) -> str:
        """`DE 2026-10-25 02:00-03:00 +0100`: local wall clock with the offset of the start."""
        start, end = self.local_start, self.local_end
        return f"{self.market} {start:%Y-%m-%d %H:%M}-{end:%H:%M} {start:%z}"


def market_of(code: object) -> Market | Invalid:
    """A market code from the wire -> its Market."""
    if isinstance(code, str) and code in MARKETS:
        return MARKETS[code]
    known = ", ".join(sorted(MARKETS))
    return Invalid(f"unknown market {show(code)} (known: {known})")


def parse_day(text: object) -> date | Invalid:
    """`"2026-10-25"` -> date, ASCII `YYYY-MM-DD` in 2000..8999 only."""
    match = _DAY.fullmatch(text) if isinstance(text, str) else None
    if not match:
        return Invalid(f"delivery day must be an ISO date YYYY-MM-DD, got {show(text)}")
    try:
        day = date(*map(int, match.groups()))
    except ValueError:
        return Invalid(f"delivery day {text!r} is not a calendar date")
    if not EARLIEST.date() <= day < LATEST.date():
        return Invalid(f"delivery_day must be in the years {YEARS}, got {text!r}")
    return day


def parse_hour_label(text: object) -> int | Invalid:
    """`"07-08"` -> 7: one of `00-01` … `23-24`."""
    match = _LABEL.fullmatch(text) if isinstance(text, str) else None
    if match:
        start, end = int(match.group(1)), int(match.group(2))
        if 0 <= start < 24 and end == start + 1:
            return start
    return Invalid(f"delivery hour must be one of 00-01 … 23-24, got {show(text)}")


def parse_instant(text: object) -> datetime | Invalid:
    """An ISO-8601 instant with offset (`…Z` or `…+02:00`) -> UTC datetime, in 2000..8999."""
    if not isinstance(text, str) or not _INSTANT.fullmatch(text):
        return Invalid(f"instant must be ISO-8601 with an offset, got {show(text)}")
    try:
        instant = datetime.fromisoformat(text.upper())  # ASCII by the grammar
    except ValueError:  # the grammar's digits out of range: month 13, offset 25:00
        return Invalid(f"instant {text!r} is not a valid date and time")
    # The year before any arithmetic: near year 1 or 9999 a shift to UTC overflows.
    if EARLIEST.year - 1 <= instant.year <= LATEST.year:
        instant = instant.astimezone(UTC)
        if EARLIEST <= instant < LATEST:
            return instant
    return Invalid(f"instant {text!r} is outside {YEARS}")


def _market_and_day(market: Market | str, day: date | str) -> tuple[Market, date] | Invalid:
    """A market (or its code) and a local day (or its text), or the reason either is bad."""
    market = market_of(market) if isinstance(market, str) else market
    if isinstance(market, Invalid):
        return market
    day = parse_day(day) if isinstance(day, str) else day
    if isinstance(day, Invalid):
        return day
    if not isinstance(day, date) or not EARLIEST.date() <= day < LATEST.date():
        return Invalid(f"delivery day {day!r} is outside {YEARS}")
    return market, day


def hour_period(market: Market | str, day: date | str, label: str) -> Period | Invalid:
    """The hourly period a local day and `HH-HH` label name in `market`.

    Invalid when the label names no local hour that day (the spring-forward gap) or two (the
    repeated hour of a fall-back night): neither can be booked without guessing.
    """
    found = _market_and_day(market, day)
    if isinstance(found, Invalid):
        return found
    market, day = found
    hour = parse_hour_label(label)
    if isinstance(hour, Invalid):
        return hour
    wall = datetime.combine(day, time(hour))
    starts = {wall.replace(tzinfo=market.tz, fold=fold).astimezone(UTC) for fold in (0, 1)}
    existing = [s for s in starts if s.astimezone(market.tz).replace(tzinfo=None) == wall]
    where = f"{day.isoformat()} {label} in {market.code} ({market.time_zone})"
    if not existing:
        return Invalid(f"{where} does not exist: the clocks skip that hour")
    if len(existing) > 1:
        return Invalid(f"{where} happens twice: delivery_start is needed to tell which")
    start = existing[0]
    return Period(market.code, start, start + timedelta(hours=1))


def period_between(market: Market | str, start: datetime, end: datetime) -> Period | Invalid:
    """The period `[start, end)` in `market`, if it is one of the market's products on its grid."""
    market = market_of(market) if isinstance(market, str) else market
    if isinstance(market, Invalid):
        return market
    if not isinstance(start, datetime) or not isinstance(end, datetime):
        return Invalid("delivery_start and delivery_end must be instants")
    if start.tzinfo is None or end.tzinfo is None:
        return Invalid("delivery_start and delivery_end must carry an offset")
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    if not (EARLIEST <= start < LATEST and EARLIEST <= end <= LATEST):
        return Invalid(f"delivery period is outside {YEARS}")
    seconds = (end - start).total_seconds()
    if seconds <= 0:
        return Invalid("delivery_end must be after delivery_start")
    minutes = seconds / 60
    if minutes not in market.products_minutes:
        traded = " and ".join(str(m) for m in market.products_minutes)
        return Invalid(
            f"a {minutes:g}-minute period is not a product of {market.code} "
            f"(it trades {traded} minutes)"
        )
    local = start.astimezone(market.tz)
    if local.second or local.microsecond or (local.hour * 60 + local.minute) % int(minutes):
        return Invalid(
            f"delivery_start {local.isoformat()} is not on {market.code}'s "
            f"{int(minutes)}-minute grid"
        )
    return Period(market.code, start, end)


def day_bounds(market: Market, day: date) -> tuple[datetime, datetime]:
    """The UTC instants at which local `day` starts and ends (23, 24 or 25 hours apart)."""

    def midnight(d: date) -> datetime:
        return datetime.combine(d, time(0), tzinfo=market.tz).astimezone(UTC)

    return midnight(day), midnight(day + timedelta(days=1))


def day_periods(
    market: Market | str, day: date | str, minutes: int | None = None
) -> list[Period] | Invalid:
    """Every period of `minutes` (default: the finest grid) of a local delivery day, in order:
    on the fall-back day 100 quarter-hours in DE, 23 hours on the spring-forward day."""
    found = _market_and_day(market, day)
    if isinstance(found, Invalid):
        return found
    market, day = found
    minutes = market.grid_minutes if minutes is None else minutes
    if minutes not in market.products_minutes:
        return Invalid(f"{market.code} does not trade {show(minutes)}-minute periods")
    first, last = day_bounds(market, day)
    step = timedelta(minutes=minutes)
    return [
        Period(market.code, first + i * step, first + (i + 1) * step)
        for i in range((last - first) // step)
    ]


def open_periods(
    market: Market | str, now: datetime, minutes: int | None = None
) -> list[Period] | Invalid:
    """The tradable periods at `now`: from the next one still before its gate closure to the
    end of the next local day (contract §2), of `minutes` (default: the finest grid)."""
    market = market_of(market) if isinstance(market, str) else market
    if isinstance(market, Invalid):
        return market
    if not isinstance(now, datetime) or now.tzinfo is None:
        return Invalid("now must be an instant with an offset")
    if not EARLIEST <= now < LATEST - timedelta(days=3):
        return Invalid(f"now {now.isoformat()} is outside {YEARS}")
    today = now.astimezone(market.tz).date()
    periods: list[Period] = []
    for day in (today, today + timedelta(days=1)):
        found = day_periods(market, day, minutes)
        if isinstance(found, Invalid):
            return found
        periods += found
    return [p for p in periods if now < p.gate_closure]


def show(value: object, limit: int = 60) -> str:
    """A bad value for a reason: its repr, cut to `limit` characters, for any value."""
    try:
        text = repr(value)
    except ValueError:  # an int too long to print (Python's 4,300-digit limit), or holding one
        if isinstance(value, int):
            return f"an integer of ~{int(value.bit_length() * 0.30103)} digits"
        return f"a {type(value).__name__} holding an integer too long to print"
    return text if len(text) <= limit else text[: limit - 3] + "..."


class KeyGivenTwice(ValueError):
    """A JSON object naming one key twice with two values."""


def one_value_per_key(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """`object_pairs_hook` for JSON from the wire: a key given twice with two different values
    is refused, since parsers disagree on which one counts (Python keeps the last, others the
    first); given twice alike, it is one value."""
    result = dict(pairs)
    if len(result) != len(pairs):
        for key, value in pairs:
            if result[key] != value:
                raise KeyGivenTwice(f"key {show(key)} given twice with different values")
    return result


def delivery_of(fields: dict) -> Period | Invalid:
    """The period a deal confirmation's delivery fields name (contract §5), or why none can be
    booked safely.

    `market` defaults to the default market; `delivery_start` + `delivery_end`, when present,
    are authoritative and must be one of the market's products on its grid; `delivery_day` +
    `delivery_hour`, when present with them, must name the same local day and hour; alone they
    name the market's hour, refused when that hour does not exist or happens twice.
    """
    market = market_of(fields.get("market", DEFAULT_MARKET))
    if isinstance(market, Invalid):
        return market
    has_label = "delivery_day" in fields or "delivery_hour" in fields
    has_instants = "delivery_start" in fields or "delivery_end" in fields
    if not has_label and not has_instants:
        return Invalid("missing field(s): delivery_day, delivery_hour")
    label: tuple[date, str] | None = None
    if has_label:
        missing = [f for f in ("delivery_day", "delivery_hour") if f not in fields]
        if missing:
            return Invalid(f"missing field(s): {', '.join(missing)}")
        day, hour = parse_day(fields["delivery_day"]), parse_hour_label(fields["delivery_hour"])
        if isinstance(day, Invalid):
            return day
        if isinstance(hour, Invalid):
            return hour
        label = (day, fields["delivery_hour"])
    if not has_instants:
        if 60 not in market.products_minutes:
            return Invalid(
                f"{market.code} trades no hours: delivery_start and delivery_end are needed"
            )
        return hour_period(market, *label)
    missing = [f for f in ("delivery_start", "delivery_end") if f not in fields]
    if missing:
        return Invalid(f"missing field(s): {', '.join(missing)}")
    start = parse_instant(fields["delivery_start"])
    if isinstance(start, Invalid):
        return Invalid(f"delivery_start: {start.reason}")
    end = parse_instant(fields["delivery_end"])
    if isinstance(end, Invalid):
        return Invalid(f"delivery_end: {end.reason}")
    period = period_between(market, start, end)
    if isinstance(period, Invalid) or label is None:
        return period
    if (period.local_day, period.label) != label:
        return Invalid(
            f"delivery_day/delivery_hour {label[0].isoformat()} {label[1]} and "
            f"delivery_start/delivery_end ({period}) name different periods"
        )
    return period
