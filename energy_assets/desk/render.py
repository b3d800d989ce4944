"""The desk's pages from a `DeskView`: Jinja templates in `templates/`, styles and script in
`static/`. A page is its frame (`page.html`) around a *fragment*, the part that changes: the
service renders each fragment once per change and pushes the same text to every open page."""

from __future__ import annotations

import itertools
import secrets
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from urllib.parse import quote

import jinja2
import polars as pl

from energy_assets.desk import gate
from energy_assets.desk.live import CONFIRMED, DeskView
from energy_assets.exposure.positions import (
    EXPOSURE_COLUMNS,
    FLAT,
    PERIOD,
    daily_totals,
    desk_positions,
)
from energy_assets.journals.replay import ReplayView
from energy_assets.markets import DEFAULT_MARKET, MARKETS
from energy_assets.prices.plan import stale_after

env = jinja2.Environment(
    loader=jinja2.PackageLoader("energy_assets.desk", "templates"),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
    undefined=jinja2.StrictUndefined,
)

DESK_TOPIC = "desk"


def trader_topic(trader_id: str) -> str:
    return f"trader/{trader_id}"


def trader_url(trader_id: str) -> str:
    return "/trader/" + quote(trader_id, safe="")


def _rounded(value: float, digits: int) -> float:
    """`value` as the page writes it: rounded, and 0.0 when that is zero (a flat position's
    float residue, -1e-17, is no position: never "-0.0", never red)."""
    return round(value, digits) + 0.0


def _num(value, digits: int = 2) -> str:
    return "–" if value is None else f"{_rounded(value, digits):,.{digits}f}"


def _signed(value, digits: int = 1) -> str:
    """With its sign, but for zero."""
    if value is None:
        return "–"
    shown = _rounded(value, digits)
    return f"{shown:+,.{digits}f}" if shown else f"{shown:.{digits}f}"


def _sign(value, digits: int = 2) -> int | None:
    """-1, 0 or 1 as the figure reads written with `digits`; None for no figure."""
    if value is None:
        return None
    shown = _rounded(value, digits)
    return (shown > 0) - (shown < 0)


def _sign_class(value, digits: int = 2) -> str:
    return {None: "na", 1: "pos", -1: "neg", 0: ""}[_sign(value, digits)]


def _ts(value: datetime | None) -> str:
    return value.astimezone(UTC).isoformat() if value else ""


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else "–"


def _stale_after(row: dict) -> str:
    """When the row's reference price goes stale (the vendor's next revision is certainly out),
    as an ISO instant for the page's clock; "" when it is final or there is none."""
    updated = row.get("price_updated_at")
    if updated is None:
        return ""
    market = MARKETS[row.get("market") or DEFAULT_MARKET]
    moment = stale_after(updated, market.gate_closure(row["delivery_start"]))
    return _ts(moment) if moment else ""


for _filter in (_num, _signed, _sign, _sign_class, _ts, _when, _stale_after):
    env.filters[_filter.__name__.removeprefix("_")] = _filter
env.globals.update(trader_url=trader_url, CONFIRMED=CONFIRMED, DEFAULT_MARKET=DEFAULT_MARKET)


def period_label(market: str, start: datetime, end: datetime) -> str:
    """A period in its market's local time, for display: `12-13` for an hour, `12:15-12:30`
    for a shorter product; the repeated hour of a fall-back night carries its UTC offset
    (`02-03+01:00`); another market than the default is named first (`GB 12:00-12:30`)."""
    config = MARKETS.get(market)
    zone = config.tz if config else UTC
    local_start, local_end = start.astimezone(zone), end.astimezone(zone)
    if end - start == timedelta(hours=1) and local_start.minute == 0:
        text = f"{local_start.hour:02d}-{local_start.hour + 1:02d}"
    else:
        text = f"{local_start:%H:%M}-{local_end:%H:%M}"
    if gate.ambiguous(local_start):
        text += _offset(local_start)
    return text if market == DEFAULT_MARKET else f"{market} {text}"


def _offset(moment: datetime) -> str:
    minutes = int(moment.utcoffset().total_seconds()) // 60
    return f"{'+' if minutes >= 0 else '-'}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def board_cells(board: gate.Board, desk: bool = False) -> dict:
    """A board as the template shows it: local wall times, instants for the page's clock."""
    rows = []
    for step in board.steps:
        start, end = step.period.local_start, step.period.local_end
        closes = step.gate_closure.astimezone(board.market.tz)
        rows.append(
            {
                "day": f"{start:%a %Y-%m-%d}",
                "label": f"{start:%H:%M}–{end:%H:%M}",
                # The fall-back night's repeated wall times, told apart by their offset.
                "offset": _offset(start) if gate.ambiguous(start) else "",
                "start": _ts(step.period.delivery_start),
                "gate_closure": _ts(step.gate_closure),
                "closes": f"{closes:%H:%M}"
                + (f" {_offset(closes)}" if gate.ambiguous(closes) else ""),
                "net_mw": step.net_mw,
                "flat": step.net_mw is not None and abs(step.net_mw) <= FLAT,
                "has_position": step.has_position,
                "open_traders": step.open_traders,
                "late_deals": step.late_deals,
                "state": step.state,
            }
        )
    local = board.local_now
    return {
        "desk": desk,
        "market": board.market.code,
        "zone": board.market.time_zone,
        "abbreviation": local.tzname(),
        "offset": _offset(local),
        "rows": rows,
    }


#: Each period row's HTML by what it shows (and whether it shows its source): a push renders
#: again only the rows that changed, not a page of a thousand.
_ROW_HTML: dict[tuple, str] = {}
ROWS_KEPT = 50_000
#: Each row rendered gets a version, a count this process never gives again: a page keeps a
#: row it shows when the pushed one has its version (desk.js). A count, not a hash, since a
#: busy page's hashes doubled its deflated push. `ROWS_SERVED` names this process's count on
#: the table, so a page that outlives the process (a restart) takes no version for another.
_VERSIONS = itertools.count()
ROWS_SERVED = secrets.token_hex(4)
env.globals["rows_served"] = ROWS_SERVED


def _rows(frame: pl.DataFrame, with_status: bool = True) -> list[dict]:
    """The period rows with their label (`period_label`), "how are we doing so far?" per
    side, per MWh in our favour: buys reference − our average, sells our average − reference
    (null without a price or a side), and `html`, the row as `periods_table` shows it."""
    edges = frame.with_columns(
        (pl.col("reference_price") - pl.col("buy_vwap")).alias("buy_edge"),
        (pl.col("sell_vwap") - pl.col("reference_price")).alias("sell_edge"),
    )
    made = []
    for r in edges.iter_rows(named=True):
        key = (with_status, *r.items())
        html = _ROW_HTML.get(key)
        if html is None:
            if len(_ROW_HTML) >= ROWS_KEPT:
                _ROW_HTML.clear()
            row = {**r, "label": period_label(r["market"], r["delivery_start"], r["delivery_end"])}
            html = _ROW_HTML[key] = env.get_template("macros.html").module.period_row(
                row, with_status, format(next(_VERSIONS), "x")
            )
        made.append({"delivery_day": r["delivery_day"], "html": html})
    return made


def charts(history: pl.DataFrame) -> list[dict]:
    """One PnL chart per currency: amounts of different currencies are never added."""
    return [
        _chart(part, str(currency))
        for (currency,), part in history.sort("currency").group_by("currency", maintain_order=True)
    ]


def _chart(history: pl.DataFrame, currency: str) -> dict:
    """PnL over time with the cumulative part moved by new trades and by prices, as SVG
    coordinates (the template draws them); `history` of one currency."""
    width, height, pad = 900, 220, 48
    per_snapshot = (
        history.group_by("snapshot_at")
        .agg(pl.col("pnl", "pnl_change_trades", "pnl_change_prices").sum())
        .sort("snapshot_at")
        .with_columns(
            pl.col("pnl_change_trades").cum_sum().alias("trades_cum"),
            pl.col("pnl_change_prices").cum_sum().alias("prices_cum"),
        )
    )
    series = [
        ("pnl", "PnL", per_snapshot["pnl"].to_list()),
        ("trades", "moved by new trades (cumulative)", per_snapshot["trades_cum"].to_list()),
        ("prices", "moved by prices (cumulative)", per_snapshot["prices_cum"].to_list()),
    ]
    values = [v for _, _, vs in series for v in vs if v is not None] + [0.0]
    lo, hi = min(values), max(values)
    if hi - lo < 1e-9:
        lo, hi = lo - 1, hi + 1
    n = per_snapshot.height
    xs = [pad + (width - 2 * pad) * (i / max(1, n - 1)) for i in range(n)]

    def y(v: float) -> float:
        return height - pad / 2 - (height - pad) * (v - lo) / (hi - lo)

    drawn = [
        {
            "key": key,
            "name": name,
            "points": " ".join(
                f"{x:.1f},{y(v):.1f}" for x, v in zip(xs, vs, strict=True) if v is not None
            ),
        }
        for key, name, vs in series
    ]
    times = per_snapshot["snapshot_at"].to_list()
    labels = {
        "hi": f"{hi:,.0f} {currency}",
        "hi_y": y(hi) + 4,
        "lo": f"{lo:,.0f} {currency}",
        "lo_y": y(lo),
        "first": _when(times[0]),
        "last": _when(times[-1]),
        "left": pad,
        "right": width - pad,
    }
    return dict(
        width=width, height=height, series=drawn, zero_y=y(0.0), labels=labels, currency=currency
    )


def _sum(frame: pl.DataFrame, column: str):
    """Σ of a column; None (never 0) when it holds no value at all."""
    if frame.height == 0 or frame[column].null_count() == frame.height:
        return None
    return frame[column].sum()


def _freshness(view: DeskView, deals: int | None = None) -> dict:
    # Nothing here changes with a deal of another trader: their pages get no event for it.
    return {
        "prices_fetched_at": view.prices_fetched_at,
        "have_prices": view.have_prices,
        "confirmed_at": view.confirmed_at,
        "deals": deals,
    }


def _markets_of(currency: str) -> str:
    """The markets that trade in `currency` ("DE" for EUR), as a card names them."""
    return "/".join(code for code, m in MARKETS.items() if m.currency == currency) or currency


def _cards(totals: pl.DataFrame) -> dict:
    """The headline figures; money per currency (`pnl`, `gross_exposure`: currency -> sum),
    the net position per currency's markets (`net_mwh`: markets -> sum: MWh of Berlin and of
    London are not one position)."""
    by_currency = {
        str(currency): part
        for (currency,), part in totals.sort("currency").group_by("currency", maintain_order=True)
    }
    return {
        "pnl": {c: _sum(part, "pnl") for c, part in by_currency.items()},
        "gross_exposure": {c: _sum(part, "gross_exposure") for c, part in by_currency.items()},
        "net_mwh": {_markets_of(c): _sum(part, "net_mwh") for c, part in by_currency.items()},
        "trades": int(_sum(totals, "trades") or 0),
        "unpriced_periods": int(_sum(totals, "unpriced_periods") or 0),
    }


def _book(
    totals: pl.DataFrame, rows: pl.DataFrame, daily: pl.DataFrame, with_status: bool = True
) -> dict:
    """What every page shows of a book: its headline figures, periods and delivery days."""
    return dict(cards=_cards(totals), periods=_rows(rows, with_status), daily=daily.to_dicts())


def desk_fragment(view: DeskView) -> str:
    return env.get_template("desk_live.html").render(
        fresh=_freshness(view, view.deals),
        warnings=view.warnings,
        **_book(view.totals, view.desk_rows, view.desk_daily, with_status=False),
        traders=view.totals.iter_rows(named=True),
        trader_count=view.totals["trader_id"].n_unique(),
        charts=charts(view.history),
        boards=[board_cells(b, desk=True) for b in view.boards.of(None)],
    )


def _by_trader(frame: pl.DataFrame) -> dict[str, tuple[pl.DataFrame, tuple]]:
    """Per trader, their rows and those rows as a page shows them, to tell whether they changed:
    their sums are added up in whatever order the rows come, so they may differ in their last
    bits from one view to the next; rounded, they do not make every page render again for
    another trader's deal. One pass over the frame for every trader: a filter and a hash a
    trader cost 1.5 ms each, 1.5 s a change with 1,000 traders."""
    hashes = frame.with_columns(pl.col(pl.Float64).round(6)).hash_rows(seed=0)
    keyed = pl.DataFrame({"trader_id": frame["trader_id"], "h": hashes})
    shown = dict(keyed.group_by("trader_id", maintain_order=True).agg("h").iter_rows())
    parts = frame.partition_by("trader_id", as_dict=True, maintain_order=True)
    return {key[0]: (part, (*shown[key[0]], *frame.columns)) for key, part in parts.items()}


class TraderPages:
    """Trader fragments, rendered again only for a trader whose figures (or the page's
    shared parts: prices' freshness, banners) changed: a deal re-renders its trader's page
    and the desk's, not every page."""

    def __init__(self):
        self._made: dict[str, tuple[tuple, str]] = {}

    def fragments(self, view: DeskView, traders: list[str]) -> dict[str, str]:
        """Each trader's fragment of `view`."""
        frames = (view.totals, view.rows, view.daily, view.history)
        split = [_by_trader(frame) for frame in frames]
        fresh = _freshness(view)
        shared = (repr(fresh), repr(view.warnings))
        made = {}
        for trader_id in traders:
            found = [parts.get(trader_id) for parts in split]
            boards = view.boards.of(trader_id)
            key = (
                *shared,
                *(f[1] if f else () for f in found),
                # The boards move on with the clock (gate closures, the window), not only with
                # deals.
                tuple(board.key for board in boards),
            )
            kept = self._made.get(trader_id)
            if kept is None or kept[0] != key:
                totals, rows, daily, history = (
                    f[0] if f else frame.clear() for f, frame in zip(found, frames, strict=True)
                )
                html = env.get_template("trader_live.html").render(
                    boards=[board_cells(b) for b in boards],
                    fresh=fresh,
                    warnings=view.warnings,
                    **_book(totals, rows, daily),
                    charts=charts(history),
                    trader=trader_id,
                )
                kept = (key, html)
                self._made[trader_id] = kept
            made[trader_id] = kept[1]
        return made

    def forget(self, keep: list[str]) -> None:
        self._made = {trader: self._made[trader] for trader in keep if trader in self._made}


def nav_fragment(traders: list[str], selected: str = "", desk: bool = True) -> str:
    """The picker's options: `desk` the whole desk's too."""
    return env.get_template("nav.html").render(traders=traders, selected=selected, desk=desk)


def page(title: str, topic: str, nav: str, fragment: str, event_id: str, logout: bool) -> str:
    return env.get_template("page.html").render(
        title=title, topic=topic, nav=nav, fragment=fragment, event_id=event_id, logout=logout
    )


def replay_page(view: ReplayView) -> str:
    """The desk as the journals show it at `view.at` (energy_assets/journals/replay.py)."""
    ages = view.prices.select(*PERIOD, pl.col("last_update").alias("price_updated_at"))
    desk_rows = desk_positions(view.positions).join(ages, on=PERIOD, how="left")
    totals = view.totals()
    fetched = view.prices["fetched_at"].max() if view.prices.height else None
    return env.get_template("replay.html").render(
        at=view.at,
        at_value=view.at.astimezone(UTC).isoformat(timespec="seconds"),
        deals=view.deals,
        priced=view.prices.height,
        fetched=fetched,
        **_book(
            totals, desk_rows, daily_totals(desk_rows.select(EXPOSURE_COLUMNS)), with_status=False
        ),
        traders=totals.iter_rows(named=True),
        trader_count=totals["trader_id"].n_unique(),
    )


def error_page(status: int, message: str) -> str:
    """An error as a page: its name ("Bad Request", "Not Found", ...) and what happened."""
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = f"Error {status}"
    return env.get_template("error.html").render(status=status, title=title, message=message)
