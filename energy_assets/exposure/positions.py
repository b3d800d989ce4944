"""Positions and mark-to-market PnL: pure polars functions of data frames, no Dagster, no I/O.

A *period* is one product of one market, `[delivery_start, delivery_end)` in UTC; a deal's
`quantity` is MW held over it, so its energy is `quantity × hours` MWh and its money
`quantity × hours × price` (prices are per MWh). One row per (`trader_id`, `market`,
`delivery_start`, `delivery_end`), the columns of `tables.TRADER_EXPOSURE` (each described
there, and in docs/exposure.md).

A period without a reference price has null `reference_price`, `pnl` and `exposure`: never 0,
which would read as "flat" or "break-even". A *flat* period (net 0 MWh: bought and sold back)
needs no price: its PnL is its cash, realised, and its exposure 0, priced or not.

Trades -> `legs` (Σ per period and side, in MW) -> `sides` (both sides of a period on its row)
-> `book` (the columns down to `cash`: a *book*) -> `mark` (the currency and the price
columns). The warehouse sums each period's sides in SQL next to the data and hands them to
`positions_of_sides`; `positions` does the same from the deals.
`rebook` adds the legs of new deals to a book already made (the live desk's way of keeping up).
`net_positions` spreads a book over each market's finest grid: an hourly deal counts in each of
its quarter-hours, and every product covering a step nets there (`tables.TRADER_NET_POSITION`).
Totals are per currency: amounts of different currencies are never added together.
"""

from __future__ import annotations

from collections.abc import Iterable

import polars as pl

from energy_assets.markets import MARKETS, Market
from energy_assets.tables import (
    TRADER_EXPOSURE,
    TRADER_EXPOSURE_DAILY,
    TRADER_NET_POSITION,
    TRADER_PNL_HISTORY,
)

#: A delivery period of a market.
PERIOD = ["market", "delivery_start", "delivery_end"]
#: The grain of a position.
PERIOD_KEY = ["trader_id", *PERIOD]
#: Columns of `energy.trader_exposure`, in table order: the book, marked.
EXPOSURE_COLUMNS = TRADER_EXPOSURE.column_names
EXPOSURE_SCHEMA = TRADER_EXPOSURE.polars_schema()
#: Columns of a book: a period's deals summed, before currency and price (`book`).
BOOK_COLUMNS = [
    c for c in EXPOSURE_COLUMNS if c not in ("currency", "reference_price", "pnl", "exposure")
]
BOOK_SCHEMA = {c: EXPOSURE_SCHEMA[c] for c in BOOK_COLUMNS}
#: Columns of the totals after their own key (per trader and currency; per trader, market
#: and delivery day), `currency` first.
TOTAL_COLUMNS = TRADER_EXPOSURE_DAILY.column_names[3:]
#: What `pnl_attribution` gives per trader and currency.
ATTRIBUTION_COLUMNS = ["trader_id", "currency"] + [
    c for c in TRADER_PNL_HISTORY.column_names if c.startswith(("new_", "pnl_change"))
]

#: A net position within this of 0 (MWh or MW) is flat: float sums of deals that close each
#: other out leave a residue of ~1e-16 of their volume.
FLAT = 1e-9


def _flat(net: str = "net_mwh") -> pl.Expr:
    return pl.col(net).abs() <= FLAT


#: One row per market: what the maths needs of its configuration.
MARKET_SCHEMA = {"market": pl.String, "currency": pl.String, "grid_minutes": pl.Int64}


def market_frame(markets: Iterable[Market] | None = None) -> pl.DataFrame:
    """The markets the maths knows (`MARKET_SCHEMA`): those given, else every configured one."""
    if markets is None:
        markets = MARKETS.values()
    rows = [(m.code, m.currency, m.grid_minutes) for m in markets]
    return pl.DataFrame(rows, schema=MARKET_SCHEMA, orient="row")


def _markets(markets: pl.DataFrame | None) -> pl.LazyFrame:
    return (market_frame() if markets is None else markets).lazy().cast(MARKET_SCHEMA)


def _period_types(frame: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
    # Instants compare and join only at one unit and zone: UTC microseconds, as tables.py says.
    return frame.lazy().with_columns(
        pl.col("market").cast(pl.String),
        pl.col("delivery_start", "delivery_end").cast(pl.Datetime("us", "UTC")),
    )


#: Length of the period in hours (0.25, 0.5, 1: the scalings are exact in binary floating point).
HOURS = (pl.col("delivery_end") - pl.col("delivery_start")).dt.total_microseconds() / 3.6e9


def legs(trades: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
    """Trades -> one row per period and direction: `trades`, `mw` = Σ q, `price_mw` = Σ q·p.

    `trades` needs `trader_id`, `market`, `delivery_start`, `delivery_end`, `delivery_day`,
    `direction` (`buy`/`sell`), `price` (per MWh, may be ≤ 0) and `quantity` (MW, > 0). The
    hours come in after the sums (`book`).
    """
    return (
        _period_types(trades)
        .group_by(*PERIOD_KEY, "delivery_day", "direction")
        .agg(
            pl.len().cast(pl.Int64).alias("trades"),
            pl.col("quantity").sum().cast(pl.Float64).alias("mw"),
            (pl.col("quantity") * pl.col("price")).sum().cast(pl.Float64).alias("price_mw"),
        )
    )


def sides(legs_frame: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
    """Legs -> one row per period: `trades`, and of each side Σ MW (`buy_mw`, `sell_mw`) and
    Σ MW·p (`buy_price_mw`, `sell_price_mw`), 0 for a side without deals.

    The warehouse computes the same sums from the deals in SQL next to the data
    (`store.SIDES_SQL`), so that millions of trades never cross into Python.
    """
    # Each side's columns are made before the group-by, so that every aggregate is a plain sum
    # (polars' fast path).
    is_buy = pl.col("direction") == "buy"
    is_sell = pl.col("direction") == "sell"
    return (
        _period_types(legs_frame)
        .select(
            *PERIOD_KEY,
            "delivery_day",
            "trades",
            pl.when(is_buy).then(pl.col("mw")).otherwise(0.0).alias("buy_mw"),
            pl.when(is_sell).then(pl.col("mw")).otherwise(0.0).alias("sell_mw"),
            pl.when(is_buy).then(pl.col("price_mw")).otherwise(0.0).alias("buy_price_mw"),
            pl.when(is_sell).then(pl.col("price_mw")).otherwise(0.0).alias("sell_price_mw"),
        )
        .group_by(*PERIOD_KEY, "delivery_day")
        .agg(
            pl.col("trades").sum().cast(pl.Int64),
            pl.col("buy_mw", "sell_mw", "buy_price_mw", "sell_price_mw").sum(),
        )
    )


def _in_mwh(sides_frame: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
    # Each side's Σ MW and Σ MW·p over the period's hours: MWh and money.
    return _period_types(sides_frame).select(
        *PERIOD_KEY,
        "delivery_day",
        pl.col("trades").cast(pl.Int64),
        (pl.col("buy_mw") * HOURS).alias("bought_mwh"),
        (pl.col("sell_mw") * HOURS).alias("sold_mwh"),
        (pl.col("buy_price_mw") * HOURS).alias("_buy_money"),
        (pl.col("sell_price_mw") * HOURS).alias("_sell_money"),
    )


#: Each side's VWAP, its volume and Σ MWh·p (`_buy_money`, `_sell_money`).
_SIDES = {"buy_vwap": ("bought_mwh", "_buy_money"), "sell_vwap": ("sold_mwh", "_sell_money")}


def _vwaps() -> list[pl.Expr]:
    # A VWAP over no volume does not exist: null, not 0 and not NaN.
    return [
        pl.when(pl.col(volume) > 0)
        .then(pl.col(money) / pl.col(volume))
        .cast(pl.Float64)
        .alias(vwap)
        for vwap, (volume, money) in _SIDES.items()
    ]


def _moneys() -> list[pl.Expr]:
    # Each side's Σ MWh·p again, from its VWAP × volume.
    return [
        pl.when(pl.col(volume) > 0).then(pl.col(vwap) * pl.col(volume)).otherwise(0.0).alias(money)
        for vwap, (volume, money) in _SIDES.items()
    ]


def _booked(sums: pl.LazyFrame) -> pl.LazyFrame:
    return sums.select(
        *PERIOD_KEY,
        "delivery_day",
        "trades",
        pl.col("bought_mwh", "sold_mwh").cast(pl.Float64),
        (pl.col("bought_mwh") - pl.col("sold_mwh")).cast(pl.Float64).alias("net_mwh"),
        *_vwaps(),
        (pl.col("_sell_money") - pl.col("_buy_money")).cast(pl.Float64).alias("cash"),
    )


def rebook(
    book_frame: pl.DataFrame | pl.LazyFrame, new_legs: pl.DataFrame | pl.LazyFrame
) -> pl.LazyFrame:
    """A book and the legs of the deals made since -> the book with them: what `book`
    gives for all the deals, without reading the earlier deals again.

    Counts and volumes add up. Each side's Σ MWh·p is rebuilt from the book as VWAP × volume
    before the new deals' is added: a rounding or two more than summing every deal afresh
    (~1e-16 relative), which a full recompute resets. Periods without new legs are returned as
    they were, unrounded.
    """
    book_lazy = _period_types(book_frame).select(BOOK_COLUMNS)
    added = _in_mwh(sides(new_legs))
    touched = added.select(PERIOD_KEY)
    before = book_lazy.join(touched, on=PERIOD_KEY, how="semi").select(
        *PERIOD_KEY, "delivery_day", "trades", "bought_mwh", "sold_mwh", *_moneys()
    )
    summed = (
        pl.concat([before, added], how="vertical_relaxed")
        .group_by(*PERIOD_KEY, "delivery_day")
        .agg(pl.col("trades", "bought_mwh", "sold_mwh", "_buy_money", "_sell_money").sum())
    )
    return pl.concat(
        [book_lazy.join(touched, on=PERIOD_KEY, how="anti"), _booked(summed)],
        how="vertical_relaxed",
    )


def book(trades: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
    """Trades -> one row per period with `trades`, volumes, VWAPs and cash; no prices."""
    return _booked(_in_mwh(sides(legs(trades))))


def _priced(frame: pl.LazyFrame) -> pl.LazyFrame:
    return frame.with_columns(
        pl.when(_flat())
        .then(pl.col("cash"))
        .otherwise(pl.col("cash") + pl.col("net_mwh") * pl.col("reference_price"))
        .alias("pnl"),
        pl.when(_flat())
        .then(0.0)
        .otherwise(pl.col("net_mwh") * pl.col("reference_price"))
        .alias("exposure"),
    )


def _prices(prices: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
    return _period_types(prices).select(*PERIOD, pl.col("reference_price").cast(pl.Float64))


def mark(
    book_frame: pl.DataFrame | pl.LazyFrame,
    prices: pl.DataFrame | pl.LazyFrame,
    markets: pl.DataFrame | None = None,
) -> pl.LazyFrame:
    """Book + reference prices -> `energy.trader_exposure` rows (`EXPOSURE_COLUMNS`).

    `prices` has one row per period (`market`, `delivery_start`, `delivery_end`) with the latest
    price in `reference_price`; open periods without a row stay unpriced (null PnL and
    exposure), flat ones have their cash for PnL. A
    period is marked with the price of exactly that period: an hour with the hour's price, a
    quarter-hour with the quarter-hour's. `currency` comes from `markets` (`market_frame`).
    """
    return (
        _period_types(book_frame)
        .join(_markets(markets).select("market", "currency"), on="market", how="left")
        .join(_prices(prices), on=PERIOD, how="left")
        .pipe(_priced)
        .select(EXPOSURE_COLUMNS)
    )


def positions(
    trades: pl.DataFrame | pl.LazyFrame,
    prices: pl.DataFrame | pl.LazyFrame,
    markets: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Trades and reference prices -> one sorted row per period (`EXPOSURE_COLUMNS`)."""
    return positions_of_sides(sides(legs(trades)), prices, markets)


def positions_of_sides(
    sides_frame: pl.DataFrame | pl.LazyFrame,
    prices: pl.DataFrame | pl.LazyFrame,
    markets: pl.DataFrame | None = None,
    sort: bool = True,
) -> pl.DataFrame:
    """Each period's sides (as `sides` makes them) and reference prices -> what `positions`
    gives for the deals beneath (in no particular order with `sort=False`: a table needs
    none)."""
    marked = mark(_booked(_in_mwh(sides_frame)), prices, markets)
    return (marked.sort(PERIOD_KEY) if sort else marked).cast(EXPOSURE_SCHEMA).collect()


def net_positions(
    book_frame: pl.DataFrame | pl.LazyFrame,
    markets: pl.DataFrame | None = None,
    sort: bool = True,
) -> pl.DataFrame:
    """A book (or exposure rows) -> the open MW of each trader on each market's finest grid
    (`tables.TRADER_NET_POSITION`, sorted): every product covering a step counts in it with its MW,
    so an hourly buy of 10 MW and four quarter-hour sells of 10 MW are flat in each quarter.

    A step some deal covers keeps its row when the products net to 0 (closed out, not absent).
    A market without a configured grid counts each period as one step. `sort=False`: in no
    particular order.
    """
    grid = _markets(markets).select("market", "grid_minutes")
    minutes = (pl.col("delivery_end") - pl.col("delivery_start")).dt.total_minutes()
    periods = (
        _period_types(book_frame)
        .select(*PERIOD_KEY, "delivery_day", (pl.col("net_mwh") / HOURS).alias("net_mw"))
        .join(grid, on="market", how="left")
        .with_columns(pl.col("grid_minutes").fill_null(minutes))
    )
    # Only the products longer than the grid are spread over its steps (DE hours: 4 each).
    one_step = minutes == pl.col("grid_minutes")
    step = pl.duration(minutes=pl.col("grid_minutes"))
    spread = (
        periods.filter(~one_step)
        .with_columns(pl.int_ranges(0, minutes // pl.col("grid_minutes")).alias("_step"))
        .explode("_step")
        .with_columns(
            (pl.col("delivery_start") + step * pl.col("_step")).alias("delivery_start"),
            (pl.col("delivery_start") + step * (pl.col("_step") + 1)).alias("delivery_end"),
        )
    )
    columns = [*PERIOD_KEY, "delivery_day", "net_mw"]
    netted = (
        pl.concat([periods.filter(one_step).select(columns), spread.select(columns)])
        .group_by(*PERIOD_KEY, "delivery_day")
        .agg(pl.col("net_mw").sum())
        .select(TRADER_NET_POSITION.column_names)
    )
    return (
        (netted.sort(PERIOD_KEY) if sort else netted)
        .cast(TRADER_NET_POSITION.polars_schema())
        .collect()
    )


def _totals(exposure: pl.DataFrame | pl.LazyFrame, key: list[str]) -> pl.LazyFrame:
    priced = pl.col("pnl").is_not_null()
    return (
        exposure.lazy()
        .group_by(key)
        .agg(
            pl.len().cast(pl.Int64).alias("periods"),
            (~priced).sum().cast(pl.Int64).alias("unpriced_periods"),
            pl.col("trades").sum().cast(pl.Int64),
            pl.col("bought_mwh", "sold_mwh", "net_mwh", "cash").sum(),
            # Sums over priced periods only; null when no period is priced yet.
            pl.when(priced.any()).then(pl.col("pnl").sum()).alias("pnl"),
            pl.when(priced.any()).then(pl.col("exposure").sum()).alias("exposure"),
            pl.when(priced.any()).then(pl.col("exposure").abs().sum()).alias("gross_exposure"),
            pl.col("net_mwh").filter(~priced).sum().alias("unpriced_net_mwh"),
        )
        .select(*dict.fromkeys([*key, *TOTAL_COLUMNS]))
        .sort(key, nulls_last=True)
    )


def trader_totals(exposure: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """Per trader and currency, over every delivery period: volumes, cash, and PnL, exposure
    and gross exposure (Σ |exposure|) of the priced periods only (`unpriced_periods` and
    `unpriced_net_mwh` say what they leave out): currencies are never added together."""
    return _totals(exposure, ["trader_id", "currency"]).collect()


def daily_totals(exposure: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """Per trader, market and the market's local delivery day; same columns and rules as
    `trader_totals`. Every column is a sum over periods, so the days' totals add up to the
    trader's in each currency (null PnL stays null only while none of the days is priced)."""
    return _totals(exposure, ["trader_id", "market", "delivery_day", "currency"]).collect()


#: `trader_id` of the desk's rows: every trader's periods summed (`desk_positions`).
DESK = "desk"


def desk_positions(exposure: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """Exposure rows of many traders -> the desk's, one row per delivery period with
    `trader_id` = `DESK`, the same columns (`EXPOSURE_COLUMNS`) and the same rules: volumes,
    cash, PnL and exposure add up; each side's VWAP is Σ MWh·p / Σ MWh over every trader's
    deals, rebuilt from the traders' VWAP × volume; the reference price is the period's."""
    return (
        exposure.lazy()
        .with_columns(_moneys())
        .group_by(*PERIOD, "delivery_day", "currency")
        .agg(
            pl.col("trades").sum().cast(pl.Int64),
            pl.col("bought_mwh", "sold_mwh", "net_mwh", "cash", "_buy_money", "_sell_money").sum(),
            pl.col("reference_price").first(),
        )
        .with_columns(pl.lit(DESK).alias("trader_id"), *_vwaps())
        .pipe(_priced)
        .select(EXPOSURE_COLUMNS)
        .sort(PERIOD_KEY)
        .collect()
    )


def _valued(cash: str, net: str, price: str) -> pl.Expr:
    # PnL of a period at a given price, counted only where it is known: flat, or priced.
    return (
        pl.when(_flat(net))
        .then(pl.col(cash))
        .when(pl.col(price).is_not_null())
        .then(pl.col(cash) + pl.col(net) * pl.col(price))
        .otherwise(0.0)
    )


def pnl_attribution(
    before: pl.DataFrame | pl.LazyFrame,
    after: pl.DataFrame | pl.LazyFrame,
    prices_before: pl.DataFrame | pl.LazyFrame,
    prices_after: pl.DataFrame | pl.LazyFrame,
) -> pl.DataFrame:
    """Split each trader's PnL change between two refreshes into what moved it, per currency.

    With old book B0 (cash, net per period), new book B1, old prices R0, new prices R1, and
    PnL(B, R) = Σ over periods priced in R of cash + net · price, and over periods flat in B of
    cash (a trade that closes a period out realises its PnL, price or not):

    - `pnl_change_prices` = PnL(B0, R1) − PnL(B0, R0): the book held before, revalued
      (price revisions, and a period's first price);
    - `pnl_change_trades` = PnL(B1, R1) − PnL(B0, R1): the new trades, at today's prices;
    - they add up to `pnl_change` = PnL(B1, R1) − PnL(B0, R0).

    `before`/`after` carry `trader_id`, `market`, `delivery_start`, `delivery_end`, `currency`,
    `trades`, `cash`, `net_mwh` (only the periods that may have changed are needed); `prices_*`
    carry `market`, `delivery_start`, `delivery_end`, `reference_price`.
    """
    key = [*PERIOD_KEY, "currency"]
    cols = [*key, "trades", "cash", "net_mwh"]
    old = _period_types(before).select(cols)
    new = _period_types(after).select(cols)
    joined = (
        old.join(new, on=key, how="full", coalesce=True, suffix="_1")
        .join(_prices(prices_before).rename({"reference_price": "r0"}), on=PERIOD, how="left")
        .join(_prices(prices_after).rename({"reference_price": "r1"}), on=PERIOD, how="left")
        .with_columns(
            pl.col("trades", "cash", "net_mwh", "trades_1", "cash_1", "net_mwh_1").fill_null(0)
        )
    )
    old_at_r0 = _valued("cash", "net_mwh", "r0")
    old_at_r1 = _valued("cash", "net_mwh", "r1")
    new_at_r1 = _valued("cash_1", "net_mwh_1", "r1")
    return (
        joined.group_by("trader_id", "currency")
        .agg(
            (pl.col("trades_1") - pl.col("trades")).sum().cast(pl.Int64).alias("new_trades"),
            (new_at_r1 - old_at_r0).sum().alias("pnl_change"),
            (new_at_r1 - old_at_r1).sum().alias("pnl_change_trades"),
            (old_at_r1 - old_at_r0).sum().alias("pnl_change_prices"),
        )
        .select(ATTRIBUTION_COLUMNS)
        .sort("trader_id", "currency", nulls_last=True)
        .collect()
    )
