"""The live desk's state: positions from the capture buffer, marked with the published prices,
beside what the batch layer confirmed (docs/desk.md, "Live and confirmed").

Every figure comes from `energy_assets.exposure.positions`, the maths `trader_exposure` uses;
a new deal costs one `rebook` of the periods it touches and a `mark` of the book, never a pass
over every deal. A period's row is **confirmed** when `confirmed.parquet` holds as many deals
for it as the buffer or more (older deals leave the buffer after 72 h), else **live**.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import cached_property
from pathlib import Path

import polars as pl

from energy_assets import published
from energy_assets.desk import gate
from energy_assets.exposure.positions import (
    BOOK_COLUMNS,
    BOOK_SCHEMA,
    EXPOSURE_COLUMNS,
    EXPOSURE_SCHEMA,
    PERIOD,
    PERIOD_KEY,
    book,
    daily_totals,
    desk_positions,
    legs,
    mark,
    net_positions,
    rebook,
    trader_totals,
)
from energy_assets.markets import Invalid, parse_instant
from energy_assets.tables import PRICE_ROW, TRADER_PNL_HISTORY
from energy_assets.trades.buffer import BufferFollower, Gap, Update, open_feed_gap, refused_today
from energy_assets.trades.lines import bookable, typed

#: Delivery days the period tables show on each side of today (`days_around`).
DEFAULT_DAYS = 7
#: PnL snapshots the charts draw (the latest ones).
DEFAULT_HISTORY_POINTS = 500
#: Closed feed gaps shown in the banner: those that ended within the buffer's retention ...
RECENT_GAPS = timedelta(hours=72)
#: ... the latest each on its line, the rest on one: an exchange dropping every connection for
#: an hour a night (the original playground's does) leaves hundreds of gaps a night.
SHOWN_GAPS = 5

LIVE = "live"
CONFIRMED = "confirmed"

_EMPTY_BOOK = pl.DataFrame(schema=BOOK_SCHEMA)
#: `prices.parquet`'s row (`tables.PRICE_ROW`) as the marking reads it: `value` named
#: `reference_price`, as in `trader_exposure`.
_PRICE_COLUMNS = {
    ("reference_price" if name == "value" else name): kind
    for name, kind in PRICE_ROW.items()
    if name != "currency"
}
_EMPTY_PRICES = pl.DataFrame(schema=_PRICE_COLUMNS)


#: The published files the desk reads, and the attribute that holds each.
_PUBLISHED = {
    published.PRICES: "prices",
    published.CONFIRMED: "confirmed",
    published.PNL_HISTORY: "history",
}


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class GapWarning:
    """A banner line: deals made in [start, end) may be missing (end None: still open)."""

    start: datetime | None
    end: datetime | None
    reason: str
    days: list[date] = field(default_factory=list)
    #: > 0: not a gap but the deal confirmations the listener refused today, the last at `start`.
    refused: int = 0
    #: > 0: that many older gaps in [start, end), `seconds` without the feed in all.
    more: int = 0
    seconds: float = 0.0

    @property
    def open(self) -> bool:
        return self.end is None


@dataclass
class DeskView:
    """Everything the pages show, computed once per change."""

    # Per trader, the days around now (`days_around`): EXPOSURE_COLUMNS + status,
    # last_deal_at, late_deals, price_updated_at, price_fetched_at.
    rows: pl.DataFrame
    totals: pl.DataFrame  # trader_totals of every row
    daily: pl.DataFrame  # daily_totals of the shown days
    desk_rows: pl.DataFrame  # desk_positions of the desk's days (+ price ages, late_deals)
    desk_daily: pl.DataFrame
    net: pl.DataFrame  # net_positions of the boards' periods: open MW per trader on the grid
    #: Per trader and period, the buffer's deals executed at or after gate closure (> 0 only).
    late: pl.DataFrame
    now: datetime  # the desk's clock when the view was made
    history: pl.DataFrame
    warnings: list[GapWarning]
    deals: int
    prices_fetched_at: datetime | None
    have_prices: bool
    confirmed_at: datetime | None

    @property
    def traders(self) -> list[str]:
        # `totals` has a row per trader and currency.
        return self.totals["trader_id"].unique(maintain_order=True).to_list()

    @cached_property
    def boards(self) -> gate.Boards:
        """The gate-closure boards of every page (`gate.py`), made once per view."""
        return gate.Boards(self.net, self.late, self.now)


def merge(live: pl.DataFrame, confirmed: pl.DataFrame | None) -> pl.DataFrame:
    """Live rows and confirmed rows (of one shape, with `trades`) -> one row per period with
    `status`: the confirmed row where it holds at least the live row's deals, else the live
    row. Only the periods the buffer holds are compared: a confirmed year is not sorted for
    each deal."""
    live = live.with_columns(pl.lit(LIVE).alias("status"))
    if confirmed is None:
        return live
    held = confirmed.with_columns(pl.lit(CONFIRMED).alias("status"))
    if live.is_empty():
        return held
    # Only confirmed periods starting within the live book's span can be among its periods.
    start = pl.col("delivery_start")
    span = start.is_between(live["delivery_start"].min(), live["delivery_start"].max())
    near = held.filter(span)
    # Most deals first, and of as many the confirmed row ("confirmed" < "live").
    both = (
        pl.concat([live, near.join(live, on=PERIOD_KEY, how="semi")])
        .sort("trades", "status", descending=[True, False])
        .unique(PERIOD_KEY, keep="first", maintain_order=True)
    )
    return pl.concat([held.filter(~span), near.join(live, on=PERIOD_KEY, how="anti"), both])


def warnings(
    listener: dict | None,
    gaps: list[Gap],
    shown_days: list[date],
    now: datetime,
) -> list[GapWarning]:
    """The open gap (from the listener's state, or a silent listener) and the recent closed
    gaps, each with the shown delivery days whose deals it may hide: a deal for day D can be
    made from D−1 00:00 UTC until D ends, so a gap matters to D when it overlaps [D−1, D+1)."""
    found: list[GapWarning] = []
    if listener is None:
        found.append(GapWarning(None, None, "no listener has written its state yet"))
    else:
        # The batch layer's rule (`no_recent_feed_gaps`): a declared gap, or one since the
        # listener last heard the exchange once its heartbeat is stale.
        gap = open_feed_gap(listener, now)
        since = parse_instant(gap[0]) if gap else None
        if isinstance(since, Invalid) or isinstance(
            parse_instant(listener.get("heartbeat")), Invalid
        ):
            found.append(GapWarning(None, None, "the listener's state file is unreadable"))
        elif gap:
            found.append(GapWarning(since, None, gap[1]))
    recent = [
        g for g in sorted(gaps, key=lambda g: g.start, reverse=True) if now - g.end <= RECENT_GAPS
    ]
    found += [GapWarning(gap.start, gap.end, gap.reason) for gap in recent[:SHOWN_GAPS]]
    older = recent[SHOWN_GAPS:]
    if older:
        seconds = sum((gap.end - gap.start).total_seconds() for gap in older)
        start, end = min(g.start for g in older), max(g.end for g in older)
        found.append(GapWarning(start, end, "", more=len(older), seconds=seconds))
    for warning in found:
        start = warning.start or now - RECENT_GAPS
        end = warning.end or now
        warning.days = [
            d
            for d in shown_days
            if start < _midnight(d) + timedelta(days=1) and end >= _midnight(d) - timedelta(days=1)
        ]
    refused = refused_today(listener, now)
    if refused:
        last = parse_instant(refused.get("last_at"))
        last = None if isinstance(last, Invalid) else last  # the count says enough without it
        found.append(GapWarning(last, last, "", refused=refused["count"]))
    return found


def days_around(days: Iterable[date], today: date, per_side: int = DEFAULT_DAYS) -> list[date]:
    """The delivery days a period table shows: the first `per_side` from today on (open, or
    being delivered) and the last `per_side` before it (recently delivered). A far-away day
    takes a place on its own side only, after every nearer one: deals for 2999 never push a
    real position off the page."""
    ordered = sorted(set(days))
    delivered = [d for d in ordered if d < today]
    coming = [d for d in ordered if d >= today]
    return delivered[max(0, len(delivered) - per_side) :] + coming[:per_side]


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


def _marked(book_rows: pl.DataFrame, prices: pl.DataFrame) -> pl.DataFrame:
    """Book (or exposure) rows marked with the prices: `EXPOSURE_COLUMNS`."""
    return (
        mark(book_rows.select(BOOK_COLUMNS).cast(BOOK_SCHEMA), prices)
        .collect()
        .cast(EXPOSURE_SCHEMA)
    )


def _prices_for_marking(prices: pl.DataFrame | None) -> pl.DataFrame:
    if prices is None:
        return _EMPTY_PRICES
    return (
        prices.rename({"value": "reference_price"})
        .select(*(pl.col(name).cast(dtype) for name, dtype in _PRICE_COLUMNS.items()))
        .filter(pl.col("reference_price").is_not_null())
    )


class LiveDesk:
    """The state of the live desk; `refresh()` takes in what changed, `view()` shows it."""

    def __init__(
        self,
        capture_dir: str | Path,
        dashboard_dir: str | Path,
        clock=utc_now,
    ):
        self.follower = BufferFollower(capture_dir)
        self.dashboard_dir = Path(dashboard_dir)
        self.clock = clock
        self.ids: set[str] = set()
        self.book = _EMPTY_BOOK
        self.last_deal = pl.DataFrame(
            schema={
                **{c: EXPOSURE_SCHEMA[c] for c in PERIOD_KEY},
                "last_deal_at": pl.Datetime("us", "UTC"),
                "late_deals": pl.Int64,
            }
        )
        self.gaps: list[Gap] = []
        self.listener: dict | None = None
        self.prices: pl.DataFrame | None = None
        self.confirmed: pl.DataFrame | None = None
        self.history: pl.DataFrame | None = None
        self._changed_at: dict[str, int | None] = {}
        self._confirmed_made: tuple | None = None
        self.changes = 0

    # -- taking in ---------------------------------------------------------------------------
    def refresh(self) -> bool:
        """Read what is new in the buffer and the published files; True when anything changed."""
        changed = False
        while True:  # the rebuild comes in batches of MAX_POLL_BYTES
            update = self.follower.poll()
            changed |= self.apply(update)
            if not update.more:
                break
        for name, attribute in _PUBLISHED.items():
            stamp = published.changed_at(self.dashboard_dir, name)
            if stamp != self._changed_at.get(name, -1):
                self._changed_at[name] = stamp
                frame = published.read(self.dashboard_dir, name)
                # A file gone is nothing published; one that cannot be read keeps the last
                # one read until the next publication.
                if frame is not None or stamp is None:
                    setattr(self, attribute, frame)
                    changed = True
        if changed:
            self.changes += 1
        return changed

    def apply(self, update: Update) -> bool:
        """Take in one poll of the buffer: new deals (first receipt of an id wins, as in the
        drain), closed gaps and the listener's state."""
        changed = update.listener_changed or bool(update.gaps)
        if update.gaps:  # kept while the banner shows them
            now = self.clock()
            self.gaps = [g for g in self.gaps + update.gaps if now - g.end <= RECENT_GAPS]
        if update.listener_changed:
            self.listener = update.listener
        if update.deals.height == 0:
            return changed
        fresh = update.deals.unique(subset="id", keep="first", maintain_order=True)
        if self.ids:
            known = self.ids
            fresh = fresh.filter(pl.Series([i not in known for i in fresh["id"]]))
        if fresh.height == 0:
            return changed
        self.ids.update(fresh["id"].to_list())
        deals = bookable(typed(fresh))[0]
        if self.book.height == 0:
            self.book = book(deals).collect()
        else:
            self.book = rebook(self.book, legs(deals)).collect()
        self.book = self.book.cast(BOOK_SCHEMA)
        # Per period: the last deal received, and the deals executed after gate closure
        # (booked like any other, flagged by the drain's rule: `typed`).
        newest = deals.group_by(PERIOD_KEY).agg(
            pl.col("received_at").max().alias("last_deal_at"),
            pl.col("after_gate_closure").sum().alias("late_deals"),
        )
        self.last_deal = (
            pl.concat([self.last_deal, newest.cast(self.last_deal.schema)])
            .group_by(PERIOD_KEY)
            .agg(pl.col("last_deal_at").max(), pl.col("late_deals").sum())
        )
        return True

    # -- showing -----------------------------------------------------------------------------
    def view(self) -> DeskView:
        now = self.clock()
        prices = _prices_for_marking(self.prices)
        # Every period for the totals; the rest of the view only the days a page shows and
        # the periods the gate-closure boards reach.
        marked = merge(_marked(self.book, prices), self._confirmed_marked(prices))
        today = now.astimezone(UTC).date()
        days = marked.select("trader_id", "delivery_day").unique()
        trader_days = pl.DataFrame(
            [
                (trader, day)
                for (trader,), held in days.group_by("trader_id")
                for day in days_around(held["delivery_day"], today)
            ],
            schema={"trader_id": pl.String, "delivery_day": pl.Date},
            orient="row",
        )
        desk_days = days_around(days["delivery_day"].unique(), today)
        on_boards = (pl.col("delivery_end") > now - gate.BEFORE) & (
            pl.col("delivery_start") < now + gate.AHEAD
        )
        ages = prices.select(
            *PERIOD,
            pl.col("last_update").alias("price_updated_at"),
            pl.col("fetched_at").alias("price_fetched_at"),
        )
        rows = (
            marked.filter(
                pl.col("delivery_day").is_in(desk_days)
                | pl.struct("trader_id", "delivery_day").is_in(trader_days.to_struct().implode())
                | on_boards
            )
            .join(self.last_deal, on=PERIOD_KEY, how="left")
            .join(ages, on=PERIOD, how="left")
            .with_columns(pl.col("late_deals").fill_null(0))
            .sort(PERIOD_KEY)
        )
        late = self.last_deal.filter(pl.col("late_deals") > 0).select(*PERIOD_KEY, "late_deals")
        # Around now: per trader for their page, over every trader for the desk's.
        shown = rows.join(trader_days, on=["trader_id", "delivery_day"], how="semi")
        desk_rows = desk_positions(
            rows.filter(pl.col("delivery_day").is_in(desk_days)).select(EXPOSURE_COLUMNS)
        ).join(ages, on=PERIOD, how="left")
        desk_late = late.group_by(PERIOD).agg(pl.col("late_deals").sum())
        desk_rows = desk_rows.join(desk_late, on=PERIOD, how="left").with_columns(
            pl.col("late_deals").fill_null(0)
        )
        shown_days = sorted(set(desk_days) | set(trader_days["delivery_day"].to_list()))
        fetched = prices["fetched_at"].max() if prices.height else None
        confirmed_ns = self._changed_at.get(published.CONFIRMED)
        return DeskView(
            rows=shown,
            totals=trader_totals(marked),
            daily=daily_totals(shown.select(EXPOSURE_COLUMNS)),
            desk_rows=desk_rows,
            desk_daily=daily_totals(desk_rows.select(EXPOSURE_COLUMNS)),
            net=net_positions(rows.filter(on_boards)),
            late=late,
            now=now,
            history=self._history(),
            warnings=warnings(self.listener, self.gaps, shown_days, now),
            deals=len(self.ids),
            prices_fetched_at=fetched,
            have_prices=prices.height > 0,
            confirmed_at=(
                datetime.fromtimestamp(confirmed_ns / 1e9, UTC)
                if confirmed_ns and self.confirmed is not None
                else None
            ),
        )

    def _confirmed_marked(self, prices: pl.DataFrame) -> pl.DataFrame | None:
        """`confirmed.parquet` marked with the prices, made again only when either is
        published anew, not for each deal."""
        made = self._confirmed_made
        if made is None or made[0] is not self.confirmed or made[1] is not self.prices:
            held = None if self.confirmed is None else _marked(self.confirmed, prices)
            made = self._confirmed_made = (self.confirmed, self.prices, held)
        return made[2]

    def _history(self) -> pl.DataFrame:
        history = self.history
        if history is None:
            history = pl.DataFrame(schema=TRADER_PNL_HISTORY.polars_schema())
        snapshots = history["snapshot_at"].unique().sort().tail(DEFAULT_HISTORY_POINTS)
        return history.filter(pl.col("snapshot_at").is_in(snapshots.implode())).sort(
            "snapshot_at", "trader_id", "currency"
        )
