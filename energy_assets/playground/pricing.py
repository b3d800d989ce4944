"""The stand-in vendor's reference prices: pure functions of (seed, delivery hour, time).

No state and no clock of their own: the Market Data API asks them "what is published for
this hour at this instant?", and tests ask them the same question for any instant.

- Revision k of an hour is made at `k * period` seconds after the Unix epoch (so with the
  default 600 s the revisions sit on the wall-clock 10-minute grid), for every k whose
  revision time is before the hour's gate closure (its delivery start). After gate closure
  the price is final.
- With the vendor's grid, revision k is published `publication_delay(...)` seconds late
  (0-30 s, deterministic per seed, day, hour and slot); without it, at once.
- `last_update` is the publication instant, `value` is drawn from (seed, day, hour, k), and
  two consecutive revisions of an hour never carry the same value.
"""

from __future__ import annotations

import functools
import hashlib
import math
import struct
from dataclasses import dataclass
from datetime import UTC, date, datetime

from energy_assets.delivery import delivery_start
from energy_assets.markets import Period

VENDOR_PERIOD_S = 600.0
MAX_PUBLICATION_DELAY_S = 30
UNIT = "euro/mwh"


def unit_draw(*key: object) -> float:
    """A uniform float in [0, 1) fixed by `key`: the same key gives the same draw in any process."""
    digest = hashlib.blake2b("|".join(map(str, key)).encode(), digest_size=8).digest()
    return (struct.unpack(">Q", digest)[0] >> 11) / float(1 << 53)


@functools.lru_cache(maxsize=4096)
def fair_price(seed: int, day: date, hour: int) -> float:
    """A plausible day-ahead level in EUR/MWh for (day, hour): a daily shape with morning and
    evening peaks, a midday solar dip that sometimes goes below zero, and a level per day."""
    shape = (
        55.0
        + 28.0 * math.exp(-(((hour - 8.5) / 2.0) ** 2))
        + 38.0 * math.exp(-(((hour - 19.0) / 2.2) ** 2))
        - 12.0 * math.exp(-(((hour - 3.5) / 2.5) ** 2))
    )
    level = 0.7 + 0.6 * unit_draw("level", seed, day.isoformat())
    solar = 70.0 * unit_draw("solar", seed, day.isoformat()) ** 2
    dip = solar * math.exp(-(((hour - 12.5) / 2.3) ** 2))
    return shape * level - dip


def revision_value(seed: int, day: date, hour: int, revision: int) -> float:
    """The value of revision `revision` of (day, hour), rounded to cents.

    The revision noise is an even number of cents plus the revision's parity, so two
    consecutive revisions always differ: a revision always moves the value.
    """
    base_cents = round(fair_price(seed, day, hour) * 100)
    step = int(unit_draw("revision", seed, day.isoformat(), hour, revision) * 601) - 300
    return (base_cents + 2 * step + (revision % 2)) / 100


def publication_delay(seed: int, day: date, hour: int, revision: int) -> int:
    """Seconds (0-30) by which the vendor publishes revision `revision` of (day, hour) late."""
    draw = unit_draw("delay", seed, day.isoformat(), hour, revision)
    return int(draw * (MAX_PUBLICATION_DELAY_S + 1))


@dataclass(frozen=True)
class Publication:
    """What the vendor shows for one delivery hour at one instant."""

    delivery_day: date
    hour: int
    revision: int  # index of the revision on the grid (k)
    value: float
    last_update: datetime  # UTC, the instant the revision was published
    final: bool  # True once the hour's gate has closed: no revision follows


def last_revision(day: date, hour: int, period: float) -> int:
    """Index of the last revision made strictly before the hour's gate closure."""
    gate = delivery_start(day, hour).timestamp()
    return math.ceil(gate / period) - 1


def published_price(
    seed: int,
    day: date,
    hour: int,
    now: float,
    period: float = VENDOR_PERIOD_S,
    vendor_grid: bool = False,
) -> Publication:
    """The revision of (day, hour) the vendor publishes at Unix time `now`.

    `period` is the revision interval in seconds; with `vendor_grid` it is the vendor's
    600 s and each revision appears 0-30 s after its grid instant.
    """
    if vendor_grid:
        period = VENDOR_PERIOD_S
    if not period > 0:
        raise ValueError(f"revision period must be > 0 seconds, got {period!r}")
    last = last_revision(day, hour, period)
    revision = min(math.floor(now / period), last)
    delay = publication_delay(seed, day, hour, revision) if vendor_grid else 0
    if vendor_grid and revision * period + delay > now:
        # Made, but not yet published: the previous revision is still the one on show.
        revision -= 1
        delay = publication_delay(seed, day, hour, revision)
    published = revision * period + delay
    return Publication(
        delivery_day=day,
        hour=hour,
        revision=revision,
        value=revision_value(seed, day, hour, revision),
        last_update=datetime.fromtimestamp(published, UTC),
        final=revision == last and now >= delivery_start(day, hour).timestamp(),
    )


def next_publication(
    seed: int,
    day: date,
    hour: int,
    now: float,
    period: float = VENDOR_PERIOD_S,
    vendor_grid: bool = False,
) -> datetime | None:
    """When (day, hour) next gets a new revision after `now`, or None once its price is final."""
    if vendor_grid:
        period = VENDOR_PERIOD_S
    current = published_price(seed, day, hour, now, period, vendor_grid).revision
    following = current + 1
    if following > last_revision(day, hour, period):
        return None
    delay = publication_delay(seed, day, hour, following) if vendor_grid else 0
    return datetime.fromtimestamp(following * period + delay, UTC)


# --- The newer form: any market's period (contract §5) -------------------------------------


@dataclass(frozen=True)
class PeriodPublication:
    """What the vendor shows for one delivery period of a market at one instant."""

    period: Period
    revision: int  # index of the revision on the grid (k)
    value: float
    last_update: datetime  # UTC, the instant the revision was published
    final: bool  # True once the period's gate has closed: no revision follows


def _period_name(period: Period) -> str:
    return f"{period.market}|{period.delivery_start.isoformat()}|{period.delivery_end.isoformat()}"


def period_revision_value(seed: int, period: Period, revision: int) -> float:
    """Revision `revision` of a period's price, in its market's currency, rounded to cents:
    the day's shape at the local hour, a per-period offset, revision noise whose parity makes
    two consecutive revisions always differ."""
    local = period.local_start
    base = fair_price(seed, local.date(), local.hour) * (0.86 if period.market == "GB" else 1.0)
    offset = (unit_draw("period", seed, _period_name(period)) - 0.5) * 8.0
    base_cents = round((base + offset) * 100)
    step = int(unit_draw("revision", seed, _period_name(period), revision) * 601) - 300
    return (base_cents + 2 * step + (revision % 2)) / 100


def period_publication_delay(seed: int, period: Period, revision: int) -> int:
    """Seconds (0-30) by which the vendor publishes revision `revision` of a period late."""
    draw = unit_draw("delay", seed, _period_name(period), revision)
    return int(draw * (MAX_PUBLICATION_DELAY_S + 1))


def period_last_revision(period: Period) -> int:
    """Index of the last revision made strictly before the period's gate closure."""
    return math.ceil(period.gate_closure.timestamp() / VENDOR_PERIOD_S) - 1


def published_period_price(seed: int, period: Period, now: float) -> PeriodPublication:
    """The revision of `period` the vendor publishes at Unix time `now`, on the vendor's grid:
    revised every 600 s until gate closure, each revision published 0-30 s late."""
    last = period_last_revision(period)
    revision = min(math.floor(now / VENDOR_PERIOD_S), last)
    if revision * VENDOR_PERIOD_S + period_publication_delay(seed, period, revision) > now:
        revision -= 1  # made, not yet published: the previous revision is on show
    published = revision * VENDOR_PERIOD_S + period_publication_delay(seed, period, revision)
    return PeriodPublication(
        period=period,
        revision=revision,
        value=period_revision_value(seed, period, revision),
        last_update=datetime.fromtimestamp(published, UTC),
        final=revision == last and now >= period.gate_closure.timestamp(),
    )
