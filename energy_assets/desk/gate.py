"""Gate closure on screen: per market, the periods around now on its finest grid, each with its
gate closure, whether it is still open, and the open MW that must be closed before it.

The board is computed at the view's instant and rendered once per change; the page counts
down to each row's gate closure by itself (`static/desk.js`), so the server pushes only when a
row's state changes (at gate closures, as the window moves on: the service's periodic recheck).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property, lru_cache

import polars as pl

from energy_assets.exposure.positions import FLAT
from energy_assets.markets import MARKETS, Invalid, Market, Period, open_periods

#: The board shows the steps starting from this long before now to `AHEAD` after it: the
#: trading that is urgent. Positions further out are in the period table; a board of every held
#: step to the end of the next day made each push slower to show (benchmarks/README.md, Live).
BEFORE = timedelta(hours=1)
AHEAD = timedelta(hours=3)
#: An open position this close to its gate closure stands out.
CLOSING_SOON = timedelta(minutes=15)

OPEN = "open"
CLOSING = "closing"
CLOSED = "closed"


@dataclass(frozen=True)
class Step:
    """One step of a market's finest grid on the board."""

    period: Period
    #: Σ MW of every product covering the step; None when no deal covers it.
    net_mw: float | None
    #: Deals executed at or after their period's gate closure, among those covering the step.
    late_deals: int
    state: str  # OPEN, CLOSING or CLOSED at the board's instant
    #: Traders whose own MW in the step is not flat: on the desk's board two traders' opposite
    #: positions net to a flat desk, yet each must close theirs.
    open_traders: int = 0

    @property
    def gate_closure(self) -> datetime:
        return self.period.gate_closure

    @property
    def has_position(self) -> bool:
        """Some trader holds an open position in the step (this trader, on their board)."""
        return self.open_traders > 0


@dataclass(frozen=True)
class Board:
    market: Market
    at: datetime
    steps: list[Step]

    @property
    def local_now(self) -> datetime:
        return self.at.astimezone(self.market.tz)

    @cached_property
    def key(self) -> tuple:
        """What the board shows, to tell whether a page must be rendered again."""
        return (
            self.market.code,
            self.local_now.tzname(),
            tuple((s.period, s.net_mw, s.late_deals, s.state, s.open_traders) for s in self.steps),
        )


def ambiguous(local: datetime) -> bool:
    """A local wall time that happens twice (a fall-back night): its offset tells which."""
    return local.replace(fold=1 - local.fold).utcoffset() != local.utcoffset()


def state_at(gate_closure: datetime, has_position: bool, now: datetime) -> str:
    """closed from gate closure on; closing while a position is open in the last
    `CLOSING_SOON` before it; else open. `desk.js` applies the same rule every second."""
    if now >= gate_closure:
        return CLOSED
    if has_position and gate_closure - now < CLOSING_SOON:
        return CLOSING
    return OPEN


class Boards:
    """The boards of every page of one view at `now`: `of(trader_id)` a trader's (their open
    MW), `of(None)` the desk's (every trader's, netted).

    `net`: open MW per trader and grid step (`trader_id`, `market`, `delivery_start`,
    `delivery_end`, `net_mw`: `net_positions`); `late`: per trader and product, the deals
    executed after gate closure (`late_deals`), counted on each step the product covers.
    """

    def __init__(self, net: pl.DataFrame, late: pl.DataFrame, now: datetime):
        self.now = now
        # No board reaches outside [now − BEFORE, now + AHEAD).
        near = (pl.col("delivery_end") > now - BEFORE) & (pl.col("delivery_start") < now + AHEAD)
        period = ["market", "delivery_start", "delivery_end"]
        mine = (
            net.filter(near)
            .group_by("trader_id", *period, maintain_order=True)
            .agg(pl.col("net_mw").sum())
            .with_columns((pl.col("net_mw").abs() > FLAT).cast(pl.Int64).alias("open"))
        )
        # The desk's: every trader's MW netted, and how many traders hold an open position.
        desk = mine.group_by(period, maintain_order=True).agg(pl.col("net_mw", "open").sum())
        # Per trader (None: the desk) and step: (net MW, traders with an open position).
        self._steps: dict[str | None, dict[tuple, tuple[float, int]]] = {
            None: {(m, s, e): (mw, held) for m, s, e, mw, held in desk.iter_rows()}
        }
        for trader, market, start, end, mw, held in mine.iter_rows():
            self._steps.setdefault(trader, {})[market, start, end] = (mw, held)
        self._flagged: dict[str | None, dict[tuple, int]] = {}
        for trader, market, start, end, count in (
            late.filter(near).select("trader_id", *period, "late_deals").iter_rows()
        ):
            if market not in MARKETS or not count:
                continue
            for step in Period(market, start, end).steps():
                key = (market, step.delivery_start, step.delivery_end)
                for who in (trader, None):
                    flags = self._flagged.setdefault(who, {})
                    flags[key] = flags.get(key, 0) + count
        self._made: dict[str | None, list[Board]] = {}

    def of(self, trader_id: str | None = None) -> list[Board]:
        steps = self._steps.get(trader_id, {})
        flagged = self._flagged.get(trader_id, {})
        # Every trader without a position or a flag near now has the same boards: made once
        # ("" is no trader id).
        who = trader_id if steps or flagged or trader_id is None else ""
        if who not in self._made:
            self._made[who] = [_board(m, self.now, steps, flagged) for m in MARKETS.values()]
        return self._made[who]


@lru_cache(maxsize=16)
def _window(market: Market, now: datetime) -> tuple[Period, ...]:
    """The steps starting in [now − BEFORE, now + AHEAD). Once per market and view: every
    page's board asks."""
    since = now - BEFORE - timedelta(minutes=market.gate_closure_minutes, microseconds=1)
    found: set[Period] = set()
    for periods in (open_periods(market, since), open_periods(market, now)):
        if not isinstance(periods, Invalid):
            found.update(p for p in periods if p.delivery_start < now + AHEAD)
    return tuple(sorted(found))


def _board(
    market: Market,
    now: datetime,
    held: dict[tuple, tuple[float, int]],
    flagged: dict[tuple, int],
) -> Board:
    steps = []
    for period in _window(market, now):
        key = (market.code, period.delivery_start, period.delivery_end)
        net_mw, traders = held.get(key, (None, 0))
        state = state_at(period.gate_closure, traders > 0, now)
        steps.append(Step(period, net_mw, flagged.get(key, 0), state, traders))
    return Board(market, now, steps)
