"""The desk's dashboard: static pages rendered from the exposure tables.

`load` reads DuckDB once (inside the `exposure_dashboard` run); `render_site` is a pure
function of that data; `write_site` puts the pages on disk atomically, `version.json` last.
The pages are self-contained (inline CSS, inline SVG charts, a few lines of inline JS, no
network): they work from `file://` and from `energy-assets dashboard`, which serves them as
plain files so a refresh storm never reaches DuckDB or the vendor. Each page polls
`version.json` with a conditional GET and reloads itself when a new version lands.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl

from energy_assets.exposure import store

DEFAULT_DAYS = 7
DEFAULT_HISTORY_POINTS = 500
VERSION_FILE = "version.json"
INDEX = "index.html"


@dataclass
class DashboardData:
    """Everything the pages show, read in one go."""

    generated_at: datetime
    periods: pl.DataFrame
    daily: pl.DataFrame
    totals: pl.DataFrame
    history: pl.DataFrame
    gaps: list[dict] = field(default_factory=list)
    prices_fetched_at: datetime | None = None

    @property
    def traders(self) -> list[str]:
        return sorted(set(self.totals["trader_id"].to_list()))


@dataclass
class WrittenSite:
    version: str
    pages: list[str]
    bytes: int


def load(
    conn: duckdb.DuckDBPyConnection,
    days: int = DEFAULT_DAYS,
    history_points: int = DEFAULT_HISTORY_POINTS,
    now: datetime | None = None,
) -> DashboardData:
    """Read the latest `days` delivery days of positions, all totals, the PnL history and the
    feed gaps that touch those days."""
    t = store.ensure_tables(conn)
    have_prices = t.exists(conn, t.reference_prices)
    price_join = (
        f"""LEFT JOIN (SELECT delivery_day, delivery_hour, last_update, fetched_at
                       FROM {t.reference_prices}
                       QUALIFY row_number() OVER (PARTITION BY delivery_day, delivery_hour
                           ORDER BY last_update DESC NULLS LAST, fetched_at DESC NULLS LAST) = 1)
            p USING (delivery_day, delivery_hour)"""
        if have_prices
        else "LEFT JOIN (SELECT NULL::DATE AS delivery_day, NULL::VARCHAR AS delivery_hour, "
        "NULL::TIMESTAMPTZ AS last_update, NULL::TIMESTAMPTZ AS fetched_at) p "
        "USING (delivery_day, delivery_hour)"
    )
    shown_days = f"""SELECT DISTINCT delivery_day FROM {t.exposure}
                     ORDER BY delivery_day DESC LIMIT {int(days)}"""
    periods = conn.execute(
        f"""SELECT e.*, p.last_update AS price_updated_at, p.fetched_at AS price_fetched_at
            FROM {t.exposure} e {price_join}
            WHERE e.delivery_day IN ({shown_days})
            ORDER BY trader_id, delivery_day, delivery_hour"""
    ).pl()
    daily = conn.execute(
        f"""SELECT * FROM {t.daily} WHERE delivery_day IN ({shown_days})
            ORDER BY trader_id, delivery_day"""
    ).pl()
    totals = conn.execute(f"SELECT * FROM {t.totals} ORDER BY trader_id").pl()
    history = conn.execute(
        f"""SELECT * FROM {t.history} WHERE snapshot_at >= (
                SELECT coalesce(min(snapshot_at), '-infinity'::TIMESTAMPTZ) FROM (
                    SELECT DISTINCT snapshot_at FROM {t.history}
                    ORDER BY snapshot_at DESC LIMIT {int(history_points)}))
            ORDER BY snapshot_at, trader_id"""
    ).pl()
    fetched = (
        conn.execute(f"SELECT max(fetched_at) FROM {t.reference_prices}").fetchone()[0]
        if have_prices
        else None
    )
    now = now or datetime.now(UTC)
    gaps = _gaps(conn, t, periods, now)
    return DashboardData(
        generated_at=now,
        periods=periods,
        daily=daily,
        totals=totals,
        history=history,
        gaps=gaps,
        prices_fetched_at=fetched,
    )


def _gaps(
    conn: duckdb.DuckDBPyConnection, t: store.Tables, periods: pl.DataFrame, now: datetime
) -> list[dict]:
    """Feed gaps during which deals for the shown delivery days may have been made.

    A deal for day D can be made from D−1 00:00 UTC (tradable hours run to the end of the
    next day) until D ends, so a gap matters to D when it overlaps [D−1, D+1)."""
    if not t.exists(conn, t.feed_gaps):
        return []
    shown = sorted(set(periods["delivery_day"].to_list())) if periods.height else []
    if shown:
        start = _midnight(shown[0]) - timedelta(days=1)
        end = _midnight(shown[-1]) + timedelta(days=1)
    else:
        start, end = now - timedelta(days=1), now + timedelta(days=1)
    rows = conn.execute(
        f"""SELECT gap_start, gap_end, reason FROM {t.feed_gaps}
            WHERE (gap_end IS NULL OR gap_end >= {store.timestamp_literal(start)})
              AND (gap_start IS NULL OR gap_start < {store.timestamp_literal(end)})
            ORDER BY gap_start"""
    ).fetchall()
    gaps = []
    for gap_start, gap_end, reason in rows:
        g_start = gap_start or start
        g_end = gap_end or now
        touched = [
            d
            for d in shown
            if g_start < _midnight(d) + timedelta(days=1)
            and g_end >= _midnight(d) - timedelta(days=1)
        ]
        gaps.append({"start": gap_start, "end": gap_end, "reason": reason or "", "days": touched})
    return gaps


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


# --- rendering -----------------------------------------------------------------------------

_VERSION_TOKEN = "__DASHBOARD_VERSION__"

_CSS = """
:root{--fav:#0a7d32;--fav-bg:#e3f6e8;--unf:#b3261e;--unf-bg:#fbe5e3;--mute:#6b7280;--line:#e5e7eb}
*{box-sizing:border-box}body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;
margin:0;color:#111827;background:#f9fafb}header{display:flex;gap:16px;align-items:center;
flex-wrap:wrap;padding:12px 20px;background:#111827;color:#fff}header h1{font-size:18px;margin:0}
header .meta{color:#d1d5db;font-size:12px}header select{font-size:14px;padding:4px}
main{padding:16px 20px;max-width:1400px}section{margin:0 0 24px}h2{font-size:16px;margin:0 0 8px}
.banner{background:#fff4d6;border:1px solid #f0b429;color:#7a4b00;padding:10px 14px;
border-radius:6px;margin:0 0 16px}.banner b{color:#5c3900}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin:0 0 20px}.card{background:#fff;
border:1px solid var(--line);border-radius:8px;padding:10px 14px;min-width:160px}
.card .k{color:var(--mute);font-size:12px}.card .v{font-size:20px;font-variant-numeric:tabular-nums}
table{border-collapse:collapse;background:#fff;border:1px solid var(--line);width:100%}
th,td{padding:5px 8px;border-bottom:1px solid var(--line);text-align:right;white-space:nowrap}
th{background:#f3f4f6;font-weight:600;font-size:12px}td:first-child,th:first-child{text-align:left}
td{font-variant-numeric:tabular-nums}tr.day td{background:#f3f4f6;font-weight:600;text-align:left}
.fav{color:var(--fav);background:var(--fav-bg)}.unf{color:var(--unf);background:var(--unf-bg)}
.na{color:var(--mute)}.pos{color:var(--fav)}.neg{color:var(--unf)}.age{color:var(--mute);font-size:12px}
.scroll{overflow-x:auto}svg{background:#fff;border:1px solid var(--line);border-radius:8px}
.legend span{display:inline-block;margin-right:14px;font-size:12px}
.legend i{display:inline-block;width:12px;height:3px;margin-right:4px;vertical-align:middle}
a{color:#1d4ed8}
"""

# Polls version.json with a conditional GET (cache: no-cache sends If-None-Match, the server
# answers 304 while nothing changed) at a jittered interval so a room of open pages does not
# poll in lockstep; reloads on a new version. Ages tick in the browser, not at render time.
_JS = """
(function () {
  var version = document.documentElement.getAttribute("data-version");
  function fmtAge(s) {
    if (s < 90) return Math.round(s) + " s";
    if (s < 5400) return Math.round(s / 60) + " min";
    if (s < 172800) return Math.round(s / 3600) + " h";
    return Math.round(s / 86400) + " d";
  }
  function tickAges() {
    var els = document.querySelectorAll("[data-ts]");
    for (var i = 0; i < els.length; i++) {
      var t = Date.parse(els[i].getAttribute("data-ts"));
      if (!isNaN(t)) els[i].textContent = fmtAge(Math.max(0, (Date.now() - t) / 1000));
    }
  }
  function poll() {
    if (location.protocol !== "http:" && location.protocol !== "https:") return;
    fetch("version.json", { cache: "no-cache" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (v) { if (v && v.version && v.version !== version) location.reload(); })
      .catch(function () {})
      .then(function () { setTimeout(poll, 4000 + Math.random() * 2000); });
  }
  var pick = document.getElementById("pick");
  if (pick) pick.addEventListener("change", function () { location.href = pick.value; });
  tickAges();
  setInterval(tickAges, 10000);
  setTimeout(poll, 4000 + Math.random() * 2000);
})();
"""


def page_name(trader_id: str) -> str:
    """A safe, stable file name for a trader's page."""
    slug = re.sub(r"[^A-Za-z0-9_.-]", "_", trader_id)[:60]
    if slug != trader_id:
        slug += "-" + hashlib.sha1(trader_id.encode()).hexdigest()[:8]
    return f"trader-{slug}.html"


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _num(value, digits: int = 2, signed: bool = False, cls: bool = False) -> str:
    if value is None:
        return '<td class="na" title="no reference price yet">–</td>'
    text = f"{value:+,.{digits}f}" if signed else f"{value:,.{digits}f}"
    css = ""
    if cls:
        css = ' class="pos"' if value > 0 else ' class="neg"' if value < 0 else ""
    return f"<td{css}>{text}</td>"


def _edge(value, side: str) -> str:
    """'How are we doing so far?' for one side of the book: EUR/MWh in our favour."""
    if value is None:
        return '<td class="na">–</td>'
    css = "fav" if value > 0 else "unf" if value < 0 else ""
    word = "favours us" if value > 0 else "against us" if value < 0 else "even"
    return f'<td class="{css}" data-edge="{side}" title="{side}: {word}">{value:+,.2f}</td>'


def _ts(value: datetime | None) -> str:
    return value.astimezone(UTC).isoformat() if value else ""


def _age_cell(value: datetime | None, now: datetime) -> str:
    if value is None:
        return '<td class="na">–</td>'
    seconds = max(0.0, (now - value).total_seconds())
    minutes = seconds / 60
    static = f"{minutes:.0f} min" if minutes < 90 else f"{minutes / 60:.0f} h"
    return (
        f'<td class="age" title="revised {_e(_ts(value))}">'
        f'<span data-ts="{_e(_ts(value))}">{static}</span></td>'
    )


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if value else "–"


def _banner(gaps: list[dict]) -> str:
    if not gaps:
        return ""
    items = []
    for g in gaps:
        span = (
            f"since {_when(g['start'])} (ongoing)"
            if g["end"] is None
            else f"from {_when(g['start'])} to {_when(g['end'])}"
        )
        days = ", ".join(str(d) for d in g["days"]) or "the latest days"
        reason = f" ({_e(g['reason'])})" if g["reason"] else ""
        items.append(
            f"<li>Trade feed gap {span}{reason}: positions for {_e(days)} may be incomplete.</li>"
        )
    return (
        '<div class="banner" id="feed-gap-banner" role="alert"><b>Data may be incomplete.</b>'
        f"<ul>{''.join(items)}</ul></div>"
    )


def _cards(items: list[tuple[str, str, str]]) -> str:
    cells = "".join(
        f'<div class="card" data-metric="{_e(key)}"><div class="k">{_e(label)}</div>'
        f'<div class="v">{value}</div></div>'
        for key, label, value in items
    )
    return f'<div class="cards">{cells}</div>'


def _money(value, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f} €"


def _sum(frame: pl.DataFrame, column: str):
    """Σ of a column, None (never 0) when it holds no value at all."""
    if frame.height == 0 or frame[column].null_count() == frame.height:
        return None
    return frame[column].sum()


def _chart(history: pl.DataFrame, title: str) -> str:
    """PnL over time, with the cumulative part moved by new trades and by price moves."""
    width, height, pad = 900, 220, 48
    if history.height == 0:
        return f'<p class="na">No PnL history yet for {_e(title)}.</p>'
    per_snapshot = (
        history.group_by("snapshot_at")
        .agg(
            pl.col("pnl_eur").sum(),
            pl.col("pnl_change_trades_eur").sum(),
            pl.col("pnl_change_prices_eur").sum(),
        )
        .sort("snapshot_at")
        .with_columns(
            pl.col("pnl_change_trades_eur").cum_sum().alias("trades_cum"),
            pl.col("pnl_change_prices_eur").cum_sum().alias("prices_cum"),
        )
    )
    series = {
        "PnL": ("#111827", per_snapshot["pnl_eur"].to_list()),
        "moved by new trades (cumulative)": ("#2563eb", per_snapshot["trades_cum"].to_list()),
        "moved by prices (cumulative)": ("#d97706", per_snapshot["prices_cum"].to_list()),
    }
    values = [v for _, vs in series.values() for v in vs if v is not None] + [0.0]
    lo, hi = min(values), max(values)
    if hi - lo < 1e-9:
        lo, hi = lo - 1, hi + 1
    n = per_snapshot.height
    xs = [pad + (width - 2 * pad) * (i / max(1, n - 1)) for i in range(n)]

    def y(v: float) -> float:
        return height - pad / 2 - (height - pad) * (v - lo) / (hi - lo)

    lines = []
    for name, (colour, vs) in series.items():
        points = " ".join(
            f"{x:.1f},{y(v):.1f}" for x, v in zip(xs, vs, strict=True) if v is not None
        )
        if n == 1 and points:
            x0, y0 = points.split(",")
            lines.append(f'<circle cx="{x0}" cy="{y0}" r="3" fill="{colour}"/>')
        lines.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}">'
            f"<title>{_e(name)}</title></polyline>"
        )
    times = per_snapshot["snapshot_at"].to_list()
    zero = y(0.0)
    svg = (
        f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" '
        f'aria-label="PnL over time, {_e(title)}">'
        f'<line x1="{pad}" x2="{width - pad}" y1="{zero:.1f}" y2="{zero:.1f}" stroke="#9ca3af" '
        'stroke-dasharray="4 3"/>'
        f'<text x="4" y="{y(hi) + 4:.1f}" font-size="11" fill="#6b7280">{hi:,.0f} €</text>'
        f'<text x="4" y="{y(lo):.1f}" font-size="11" fill="#6b7280">{lo:,.0f} €</text>'
        f'<text x="{pad}" y="{height - 4}" font-size="11" fill="#6b7280">{_e(_when(times[0]))}</text>'
        f'<text x="{width - pad}" y="{height - 4}" font-size="11" fill="#6b7280" '
        f'text-anchor="end">{_e(_when(times[-1]))}</text>'
        f"{''.join(lines)}</svg>"
    )
    legend = "".join(
        f'<span><i style="background:{c}"></i>{_e(name)}</span>' for name, (c, _) in series.items()
    )
    return f'{svg}<div class="legend">{legend}</div>'


def _periods_table(periods: pl.DataFrame, now: datetime) -> str:
    head = (
        "<thead><tr><th rowspan=2>Delivery</th><th colspan=2>Bought</th><th colspan=2>Sold</th>"
        "<th rowspan=2>Net MWh</th><th rowspan=2>Reference €/MWh</th>"
        "<th rowspan=2>Reference age</th>"
        '<th colspan=2 title="buys: reference − our average; sells: our average − reference; '
        'green when it favours us">How are we doing so far? €/MWh</th>'
        "<th rowspan=2>PnL €</th></tr>"
        "<tr><th>MWh</th><th>our avg €/MWh</th><th>MWh</th><th>our avg €/MWh</th>"
        "<th>buys</th><th>sells</th></tr></thead>"
    )
    rows = []
    current_day = None
    for r in periods.iter_rows(named=True):
        if r["delivery_day"] != current_day:
            current_day = r["delivery_day"]
            rows.append(f'<tr class="day"><td colspan="11">{_e(current_day)}</td></tr>')
        ref = r["reference_price"]
        buy_edge = None if ref is None or r["buy_vwap"] is None else ref - r["buy_vwap"]
        sell_edge = None if ref is None or r["sell_vwap"] is None else r["sell_vwap"] - ref
        rows.append(
            f'<tr data-period="{_e(r["delivery_day"])} {_e(r["delivery_hour"])}">'
            f"<td>{_e(r['delivery_day'])} {_e(r['delivery_hour'])}</td>"
            f"{_num(r['bought_mwh'], 1)}{_num(r['buy_vwap'])}"
            f"{_num(r['sold_mwh'], 1)}{_num(r['sell_vwap'])}"
            f"{_num(r['net_mwh'], 1, signed=True)}{_num(ref)}"
            f"{_age_cell(r.get('price_updated_at'), now)}"
            f"{_edge(buy_edge, 'buys')}{_edge(sell_edge, 'sells')}"
            f"{_num(r['pnl_eur'], 2, cls=True)}</tr>"
        )
    if not rows:
        rows.append(
            '<tr><td colspan="11" class="na">No positions in these delivery days.</td></tr>'
        )
    return f'<div class="scroll"><table class="periods">{head}<tbody>{"".join(rows)}</tbody></table></div>'


def _daily_table(daily: pl.DataFrame, first_column: str = "delivery_day") -> str:
    head = (
        "<thead><tr><th>Delivery day</th><th>Trades</th><th>Bought MWh</th><th>Sold MWh</th>"
        "<th>Net MWh</th><th>Cash €</th><th>PnL €</th><th>Gross exposure €</th>"
        "<th>Unpriced hours</th></tr></thead>"
    )
    rows = [
        f'<tr data-day="{_e(r[first_column])}"><td>{_e(r[first_column])}</td><td>{r["trades"]}</td>'
        f"{_num(r['bought_mwh'], 1)}{_num(r['sold_mwh'], 1)}{_num(r['net_mwh'], 1, signed=True)}"
        f"{_num(r['cash_eur'])}{_num(r['pnl_eur'], 2, cls=True)}{_num(r['gross_exposure_eur'])}"
        f"<td>{r['unpriced_periods']}</td></tr>"
        for r in daily.iter_rows(named=True)
    ]
    return f'<div class="scroll"><table class="daily">{head}<tbody>{"".join(rows)}</tbody></table></div>'


def _traders_table(totals: pl.DataFrame) -> str:
    head = (
        "<thead><tr><th>Trader</th><th>Trades</th><th>Bought MWh</th><th>Sold MWh</th>"
        "<th>Net MWh</th><th>PnL €</th><th>Exposure €</th><th>Gross exposure €</th>"
        "<th>Unpriced hours</th></tr></thead>"
    )
    rows = [
        f'<tr data-trader="{_e(r["trader_id"])}"><td><a href="{_e(page_name(r["trader_id"]))}">'
        f"{_e(r['trader_id'])}</a></td><td>{r['trades']}</td>"
        f"{_num(r['bought_mwh'], 1)}{_num(r['sold_mwh'], 1)}{_num(r['net_mwh'], 1, signed=True)}"
        f"{_num(r['pnl_eur'], 2, cls=True)}{_num(r['exposure_eur'])}{_num(r['gross_exposure_eur'])}"
        f"<td>{r['unpriced_periods']}</td></tr>"
        for r in totals.iter_rows(named=True)
    ]
    return f'<div class="scroll"><table class="traders">{head}<tbody>{"".join(rows)}</tbody></table></div>'


def desk_periods(periods: pl.DataFrame) -> pl.DataFrame:
    """Every trader's periods summed into the desk's, with desk-wide average prices."""
    if periods.height == 0:
        return periods
    return (
        periods.with_columns(
            (pl.col("buy_vwap").fill_null(0) * pl.col("bought_mwh")).alias("_buy_eur"),
            (pl.col("sell_vwap").fill_null(0) * pl.col("sold_mwh")).alias("_sell_eur"),
        )
        .group_by("delivery_day", "delivery_hour")
        .agg(
            pl.col("trades").sum(),
            pl.col("bought_mwh").sum(),
            pl.col("sold_mwh").sum(),
            pl.col("net_mwh").sum(),
            pl.col("_buy_eur").sum(),
            pl.col("_sell_eur").sum(),
            pl.col("cash_eur").sum(),
            pl.col("reference_price").first(),
            pl.col("price_updated_at").first(),
        )
        .with_columns(
            pl.when(pl.col("bought_mwh") > 0)
            .then(pl.col("_buy_eur") / pl.col("bought_mwh"))
            .alias("buy_vwap"),
            pl.when(pl.col("sold_mwh") > 0)
            .then(pl.col("_sell_eur") / pl.col("sold_mwh"))
            .alias("sell_vwap"),
            (pl.col("cash_eur") + pl.col("net_mwh") * pl.col("reference_price")).alias("pnl_eur"),
        )
        .sort("delivery_day", "delivery_hour")
    )


def _desk_daily(daily: pl.DataFrame) -> pl.DataFrame:
    if daily.height == 0:
        return daily
    return (
        daily.group_by("delivery_day")
        .agg(
            pl.col(
                "trades", "bought_mwh", "sold_mwh", "net_mwh", "cash_eur", "unpriced_periods"
            ).sum(),
            pl.when(pl.col("pnl_eur").is_not_null().any())
            .then(pl.col("pnl_eur").sum())
            .alias("pnl_eur"),
            pl.when(pl.col("gross_exposure_eur").is_not_null().any())
            .then(pl.col("gross_exposure_eur").sum())
            .alias("gross_exposure_eur"),
        )
        .sort("delivery_day")
    )


def _page(title: str, selected: str, traders: list[str], data: DashboardData, body: str) -> str:
    options = [
        f'<option value="{INDEX}"{" selected" if selected == "" else ""}>Desk (all traders)</option>'
    ]
    options += [
        f'<option value="{_e(page_name(t))}"{" selected" if t == selected else ""}>{_e(t)}</option>'
        for t in traders
    ]
    fetched = data.prices_fetched_at
    fetched_html = (
        f'reference prices fetched <span data-ts="{_e(_ts(fetched))}">{_e(_when(fetched))}</span> ago'
        if fetched
        else "no reference prices yet"
    )
    return (
        "<!doctype html>\n"
        f'<html lang="en" data-version="{_VERSION_TOKEN}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{_e(title)} · desk exposure</title><style>{_CSS}</style>"
        '<link rel="icon" href="data:,"></head><body>'
        f'<header><h1>{_e(title)}</h1><label>Trader <select id="pick">{"".join(options)}</select>'
        f'</label><span class="meta">as of {_e(_when(data.generated_at))} · {fetched_html}'
        f" · version {_VERSION_TOKEN}</span></header>"
        f"<main>{_banner(data.gaps)}{body}</main><script>{_JS}</script></body></html>\n"
    )


def render_site(data: DashboardData) -> dict[str, str]:
    """File name -> page text (with the version token still in place)."""
    traders = data.traders
    pages: dict[str, str] = {}
    totals = data.totals
    desk_pnl = _sum(totals, "pnl_eur")
    desk = _cards(
        [
            ("pnl_eur", "Desk PnL", _money(desk_pnl)),
            ("gross_exposure_eur", "Gross exposure", _money(_sum(totals, "gross_exposure_eur"))),
            ("net_mwh", "Net position", f"{(_sum(totals, 'net_mwh') or 0):+,.1f} MWh"),
            ("trades", "Trades", f"{int(_sum(totals, 'trades') or 0):,}"),
            ("traders", "Traders", str(len(traders))),
        ]
    )
    body = (
        f"{desk}<section><h2>Traders</h2>{_traders_table(totals)}</section>"
        f"<section><h2>Desk PnL over time</h2>{_chart(data.history, 'the desk')}</section>"
        f"<section><h2>Desk daily totals</h2>{_daily_table(_desk_daily(data.daily))}</section>"
        f"<section><h2>Desk per delivery hour</h2>"
        f"{_periods_table(desk_periods(data.periods), data.generated_at)}</section>"
    )
    pages[INDEX] = _page("Desk", "", traders, data, body)
    for trader in traders:
        mine = pl.col("trader_id") == trader
        t = totals.filter(mine)
        cards = _cards(
            [
                ("pnl_eur", "PnL", _money(_sum(t, "pnl_eur"))),
                ("gross_exposure_eur", "Gross exposure", _money(_sum(t, "gross_exposure_eur"))),
                ("net_mwh", "Net position", f"{(_sum(t, 'net_mwh') or 0):+,.1f} MWh"),
                ("trades", "Trades", f"{int(_sum(t, 'trades') or 0):,}"),
                (
                    "unpriced_periods",
                    "Hours without price",
                    str(int(_sum(t, "unpriced_periods") or 0)),
                ),
            ]
        )
        body = (
            f"{cards}<section><h2>Per delivery hour</h2>"
            f"{_periods_table(data.periods.filter(mine), data.generated_at)}</section>"
            f"<section><h2>Daily totals</h2>{_daily_table(data.daily.filter(mine))}</section>"
            f"<section><h2>PnL over time</h2>{_chart(data.history.filter(mine), trader)}</section>"
        )
        pages[page_name(trader)] = _page(trader, trader, traders, data, body)
    return pages


def _atomic_write(path: Path, text: str) -> int:
    payload = text.encode("utf-8")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return len(payload)


def write_site(out_dir: Path, data: DashboardData) -> WrittenSite:
    """Write every page atomically (temp file + rename), drop pages of vanished traders, and
    publish `version.json` last: a browser that sees the new version finds the new pages."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pages = render_site(data)
    digest = hashlib.sha256()
    for name in sorted(pages):
        digest.update(name.encode())
        digest.update(pages[name].encode())
    version = digest.hexdigest()[:16]
    written = 0
    for name, text in pages.items():
        written += _atomic_write(out_dir / name, text.replace(_VERSION_TOKEN, version))
    for stale in out_dir.glob("trader-*.html"):
        if stale.name not in pages:
            stale.unlink(missing_ok=True)
    written += _atomic_write(
        out_dir / VERSION_FILE,
        json.dumps({"version": version, "generated_at": _ts(data.generated_at)}),
    )
    return WrittenSite(version=version, pages=sorted(pages), bytes=written)
