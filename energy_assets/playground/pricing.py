"""The stand-in vendor's reference prices: pure functions of (seed, delivery period, time).

No state and no clock of their own: the Market Data API asks them "what is published for
this period at this instant?", and tests ask them the same question for any instant.

- Revision k of a period is made at `k * every` seconds after the Unix epoch (so with the
  default 600 s the revisions sit on the wall-clock 10-minute grid), for every k whose
  revision time is before the period's gate closure (its market's lead before delivery
  start). After gate closure the price is final.
- With the vendor's grid, revision k is published `publication_delay(...)` seconds late
  (0-30 s, deterministic per seed, period and slot); without it, at once.
- `last_update` is the publication instant, `value` is drawn from (seed, period, k), and
  two consecutive revisions of a period never carry the same value.
"""

from __future__ import annotations

import functools
import hashlib
import math
import struct
from dataclasses import dataclass
from datetime import UTC, datetime

from energy_assets.markets import Period

VENDOR_PERIOD_S = 600.0
MAX_PUBLICATION_DELAY_S = 30


def unit_draw(*key: object) -> float:
    """A uniform float in [0, 1) fixed by `key`: the same key gives the same draw in any process."""
    digest = hashlib.blake2b("|".join(map(str, key)).encode(), digest_size=8).digest()
    return (struct.unpack(">Q", digest)[0] >> 11) / float(1 << 53)


def _key(period: Period) -> str:
    return f"{period.market}|{period.delivery_start.isoformat()}|{period.minutes}"


#: Each currency's prices on the euro's scale, so GB's look like GBP prices.
_SCALE = {"EUR": 1.0, "GBP": 0.86}


@functools.lru_cache(maxsize=16384)
def fair_price(seed: int, period: Period) -> float:
    """A plausible day-ahead level per MWh for a delivery period, in its market's currency: a
    daily shape in local time with morning and evening peaks, a midday solar dip that sometimes
    goes below zero, and a level per market and local day."""
    local = period.local_start
    hour = local.hour + (local.minute + period.minutes / 2) / 60 - 0.5
    day = f"{period.market}|{local.date().isoformat()}"
    shape = (
        55.0
        + 28.0 * math.exp(-(((hour - 8.5) / 2.0) ** 2))
        + 38.0 * math.exp(-(((hour - 19.0) / 2.2) ** 2))
        - 12.0 * math.exp(-(((hour - 3.5) / 2.5) ** 2))
    )
    level = 0.7 + 0.6 * unit_draw("level", seed, day)
    solar = 70.0 * unit_draw("solar", seed, day) ** 2
    dip = solar * math.exp(-(((hour - 12.5) / 2.3) ** 2))
    return (shape * level - dip) * _SCALE.get(period.config.currency, 1.0)


def revision_value(seed: int, period: Period, revision: int) -> float:
    """The value of revision `revision` of a period, rounded to cents.

    The revision noise is an even number of cents plus the revision's parity, so two
    consecutive revisions always differ: a revision always moves the value.
    """
    base_cents = round(fair_price(seed, period) * 100)
    step = int(unit_draw("revision", seed, _key(period), revision) * 601) - 300
    return (base_cents + 2 * step + (revision % 2)) / 100


def publication_delay(seed: int, period: Period, revision: int) -> int:
    """Seconds (0-30) by which the vendor publishes revision `revision` of a period late."""
    draw = unit_draw("delay", seed, _key(period), revision)
    return int(draw * (MAX_PUBLICATION_DELAY_S + 1))


@dataclass(frozen=True)
class Publication:
    """What the vendor shows for one delivery period at one instant."""

    period: Period
    revision: int  # index of the revision on the grid (k)
    value: float
    last_update: datetime  # UTC, the instant the revision was published
    final: bool  # True once the period's gate has closed: no revision follows

    @property
    def unit(self) -> str:
        return self.period.config.unit


def last_revision(period: Period, every: float) -> int:
    """Index of the last revision made strictly before the period's gate closure."""
    return math.ceil(period.gate_closure.timestamp() / every) - 1


def published_price(
    seed: int,
    period: Period,
    now: float,
    every: float = VENDOR_PERIOD_S,
    vendor_grid: bool = False,
) -> Publication:
    """The revision of a period the vendor publishes at Unix time `now`.

    `every` is the revision interval in seconds; with `vendor_grid` it is the vendor's
    600 s and each revision appears 0-30 s after its grid instant.
    """
    if vendor_grid:
        every = VENDOR_PERIOD_S
    if not every > 0:
        raise ValueError(f"revision interval must be > 0 seconds, got {every!r}")
    last = last_revision(period, every)
    revision = min(math.floor(now / every), last)
    delay = publication_delay(seed, period, revision) if vendor_grid else 0
    if vendor_grid and revision * every + delay > now:
        # Made, but not yet published: the previous revision is still the one on show.
        revision -= 1
        delay = publication_delay(seed, period, revision)
    published = revision * every + delay
    return Publication(
        period=period,
        revision=revision,
        value=revision_value(seed, period, revision),
        last_update=datetime.fromtimestamp(published, UTC),
        final=revision == last and now >= period.gate_closure.timestamp(),
    )
