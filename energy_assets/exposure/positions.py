"""Positions and mark-to-market PnL: pure polars functions of data frames, no Dagster, no I/O.

One row per (`trader_id`, `delivery_day`, `delivery_hour`) -- a *period*:

| column | meaning |
| --- | --- |
| `trades` | number of deals |
| `bought_mwh`, `sold_mwh` | Σ quantity of buys / sells (0 when none) |
| `net_mwh` | bought − sold: long > 0, short < 0 |
| `buy_vwap`, `sell_vwap` | Σ q·p / Σ q of buys / sells, EUR/MWh (null when none) |
| `cash_eur` | Σ sell q·p − Σ buy q·p |
| `reference_price` | the latest reference price of the period, EUR/MWh (null while none) |
| `pnl_eur` | cash_eur + net_mwh · reference_price |
| `exposure_eur` | net_mwh · reference_price |

A period without a reference price has null `reference_price`, `pnl_eur` and `exposure_eur`:
never 0, which would read as "flat" or "break-even".

Trades -> `legs` (Σ per period and side) -> `book_legs` (the columns down to `cash_eur`: a
*book*) -> `mark` (the price columns). The warehouse sums the legs in SQL next to the data and
hands them to `positions_of_legs`; `positions` does the same from the deals themselves.
`rebook` adds the legs of new deals to a book already made (the live desk's way of keeping up).
"""

from __future__ import annotations

import polars as pl

#: The grain of a position.
PERIOD_KEY = ["trader_id", "delivery_day", "delivery_hour"]
#: Columns of a book: a period's deals summed, before any price (`book_legs`).
BOOK_COLUMNS = [
    *PERIOD_KEY,
    "trades",
    "bought_mwh",
    "sold_mwh",
    "net_mwh",
    "buy_vwap",
    "sell_vwap",
    "cash_eur",
]
#: Columns of `energy.trader_exposure`, in table order: the book, marked.
EXPOSURE_COLUMNS = [*BOOK_COLUMNS, "reference_price", "pnl_eur", "exposure_eur"]
#: Columns of the totals tables after their own key (per trader; per trader and delivery day).
TOTAL_COLUMNS = [
    "periods",
    "unpriced_periods",
    "trades",
    "bought_mwh",
    "sold_mwh",
    "net_mwh",
    "cash_eur",
    "pnl_eur",
    "exposure_eur",
    "gross_exposure_eur",
    "unpriced_net_mwh",
]

EXPOSURE_SCHEMA = {
    "trader_id": pl.String,
    "delivery_day": pl.Date,
    "delivery_hour": pl.String,
    "trades": pl.Int64,
    "bought_mwh": pl.Float64,
    "sold_mwh": pl.Float64,
    "net_mwh": pl.Float64,
    "buy_vwap": pl.Float64,
    "sell_vwap": pl.Float64,
    "cash_eur": pl.Float64,
    "reference_price": pl.Float64,
    "pnl_eur": pl.Float64,
    "exposure_eur": pl.Float64,
}


def _lazy(frame: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
    return frame.lazy() if isinstance(frame, pl.DataFrame) else frame


#: The grain of a leg: one side of one trader's book in one period.
LEG_KEY = [*PERIOD_KEY, "direction"]


def legs(trades: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
    """Trades -> one row per period and direction: `trades`, `mwh` = Σ q, `eur` = Σ q·p.

    `trades` needs `trader_id`, `delivery_day`, `delivery_hour`, `direction` (`buy`/`sell`),
    `price` (EUR/MWh, may be ≤ 0) and `quantity` (MWh, > 0). The warehouse computes the same
    sums in SQL next to the data (`store.LEGS_SQL`) so that millions of trades never cross
    into Python; everything after the sums happens here.
    """
    return (
        _lazy(trades)
        .group_by(LEG_KEY)
        .agg(
            pl.len().cast(pl.Int64).alias("trades"),
            pl.col("quantity").sum().cast(pl.Float64).alias("mwh"),
            (pl.col("quantity") * pl.col("price")).sum().cast(pl.Float64).alias("eur"),
        )
    )


def book_legs(legs_frame: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
    """Legs -> one row per period with `trades`, volumes, VWAPs and cash; no prices."""
    return _booked(_side_sums(legs_frame))


def _side_sums(legs_frame: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
    # Per period: deals, Σ q and Σ q·p of each side.
    is_buy = pl.col("direction") == "buy"
    is_sell = pl.col("direction") == "sell"
    return (
        _lazy(legs_frame)
        .group_by(PERIOD_KEY)
        .agg(
            pl.col("trades").sum().cast(pl.Int64),
            pl.col("mwh").filter(is_buy).sum().alias("bought_mwh"),
            pl.col("mwh").filter(is_sell).sum().alias("sold_mwh"),
            pl.col("eur").filter(is_buy).sum().alias("_buy_eur"),
            pl.col("eur").filter(is_sell).sum().alias("_sell_eur"),
        )
    )


def _booked(sums: pl.LazyFrame) -> pl.LazyFrame:
    # Side sums -> the book's columns.
    return sums.select(
        *PERIOD_KEY,
        "trades",
        pl.col("bought_mwh").cast(pl.Float64),
        pl.col("sold_mwh").cast(pl.Float64),
        (pl.col("bought_mwh") - pl.col("sold_mwh")).cast(pl.Float64).alias("net_mwh"),
        # A VWAP over no volume does not exist: null, not 0 and not NaN.
        pl.when(pl.col("bought_mwh") > 0)
        .then(pl.col("_buy_eur") / pl.col("bought_mwh"))
        .cast(pl.Float64)
        .alias("buy_vwap"),
        pl.when(pl.col("sold_mwh") > 0)
        .then(pl.col("_sell_eur") / pl.col("sold_mwh"))
        .cast(pl.Float64)
        .alias("sell_vwap"),
        (pl.col("_sell_eur") - pl.col("_buy_eur")).cast(pl.Float64).alias("cash_eur"),
    )


def rebook(
    book_frame: pl.DataFrame | pl.LazyFrame, new_legs: pl.DataFrame | pl.LazyFrame
) -> pl.LazyFrame:
    """A book and the legs of the deals made since -> the book with them: what `book_legs`
    gives for the legs of all the deals, without reading the earlier deals again.

    Counts and volumes add up. Each side's Σ q·p is rebuilt from the book as VWAP × volume
    before the new deals' is added: a rounding or two more than summing every deal afresh
    (~1e-16 relative, some 1e-10 EUR on a million), which a full recompute resets. Periods
    without new legs are returned as they were, unrounded.
    """
    book_lazy = _lazy(book_frame).select(BOOK_COLUMNS)
    added = _side_sums(new_legs)
    touched = added.select(PERIOD_KEY)

    def side_eur(vwap: str, volume: str) -> pl.Expr:
        return pl.when(pl.col(volume) > 0).then(pl.col(vwap) * pl.col(volume)).otherwise(0.0)

    before = book_lazy.join(touched, on=PERIOD_KEY, how="semi").select(
        *PERIOD_KEY,
        "trades",
        "bought_mwh",
        "sold_mwh",
        side_eur("buy_vwap", "bought_mwh").alias("_buy_eur"),
        side_eur("sell_vwap", "sold_mwh").alias("_sell_eur"),
    )
    summed = (
        pl.concat([before, added], how="vertical_relaxed")
        .group_by(PERIOD_KEY)
        .agg(pl.col("trades", "bought_mwh", "sold_mwh", "_buy_eur", "_sell_eur").sum())
    )
    return pl.concat(
        [book_lazy.join(touched, on=PERIOD_KEY, how="anti"), _booked(summed)],
        how="vertical_relaxed",
    )


def book(trades: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
    """Trades -> one row per period with `trades`, volumes, VWAPs and cash; no prices."""
    return book_legs(legs(trades))


def mark(
    book_frame: pl.DataFrame | pl.LazyFrame, prices: pl.DataFrame | pl.LazyFrame
) -> pl.LazyFrame:
    """Book + reference prices -> `energy.trader_exposure` rows (`EXPOSURE_COLUMNS`).

    `prices` has one row per (`delivery_day`, `delivery_hour`) with the latest price in
    `reference_price`; periods without a row stay unpriced (null PnL and exposure).
    """
    price_frame = _lazy(prices).select(
        pl.col("delivery_day").cast(pl.Date),
        pl.col("delivery_hour").cast(pl.String),
        pl.col("reference_price").cast(pl.Float64),
    )
    return (
        _lazy(book_frame)
        .join(price_frame, on=["delivery_day", "delivery_hour"], how="left")
        .with_columns(
            (pl.col("cash_eur") + pl.col("net_mwh") * pl.col("reference_price")).alias("pnl_eur"),
            (pl.col("net_mwh") * pl.col("reference_price")).alias("exposure_eur"),
        )
        .select(EXPOSURE_COLUMNS)
    )


def positions(
    trades: pl.DataFrame | pl.LazyFrame, prices: pl.DataFrame | pl.LazyFrame
) -> pl.DataFrame:
    """Trades and reference prices -> one sorted row per period (`EXPOSURE_COLUMNS`)."""
    return positions_of_legs(legs(trades), prices)


def positions_of_legs(
    legs_frame: pl.DataFrame | pl.LazyFrame, prices: pl.DataFrame | pl.LazyFrame
) -> pl.DataFrame:
    """Legs (as `legs` makes them) and reference prices -> what `positions` gives for the
    deals beneath."""
    return mark(book_legs(legs_frame), prices).sort(PERIOD_KEY).cast(EXPOSURE_SCHEMA).collect()


def _totals(exposure: pl.DataFrame | pl.LazyFrame, key: list[str]) -> pl.LazyFrame:
    priced = pl.col("reference_price").is_not_null()
    return (
        _lazy(exposure)
        .group_by(key)
        .agg(
            pl.len().cast(pl.Int64).alias("periods"),
            (~priced).sum().cast(pl.Int64).alias("unpriced_periods"),
            pl.col("trades").sum().cast(pl.Int64),
            pl.col("bought_mwh").sum(),
            pl.col("sold_mwh").sum(),
            pl.col("net_mwh").sum(),
            pl.col("cash_eur").sum(),
            # Sums over priced periods only; null when no period is priced yet.
            pl.when(priced.any()).then(pl.col("pnl_eur").sum()).alias("pnl_eur"),
            pl.when(priced.any()).then(pl.col("exposure_eur").sum()).alias("exposure_eur"),
            pl.when(priced.any())
            .then(pl.col("exposure_eur").abs().sum())
            .alias("gross_exposure_eur"),
            pl.col("net_mwh").filter(~priced).sum().alias("unpriced_net_mwh"),
        )
        .select(*key, *TOTAL_COLUMNS)
        .sort(key)
    )


def trader_totals(exposure: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """Per trader, over every delivery period: volumes, cash, PnL and exposure.

    `pnl_eur`, `exposure_eur` and `gross_exposure_eur` (Σ |exposure_eur|) add up the priced
    periods only; `unpriced_periods` and `unpriced_net_mwh` say what they leave out.
    """
    return _totals(exposure, ["trader_id"]).collect()


def daily_totals(exposure: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """Per trader and delivery day; same columns and rules as `trader_totals`. Every column
    is a sum over periods, so the days' totals add up to the trader's (null PnL stays null
    only while none of the days is priced)."""
    return _totals(exposure, ["trader_id", "delivery_day"]).collect()


#: `trader_id` of the desk's rows: every trader's periods summed (`desk_positions`).
DESK = "desk"


def desk_positions(exposure: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """Exposure rows of many traders -> the desk's, one row per delivery period with
    `trader_id` = `DESK`, the same columns (`EXPOSURE_COLUMNS`) and the same rules: volumes,
    cash, PnL and exposure add up; each side's VWAP is Σ q·p / Σ q over every trader's deals,
    rebuilt from the traders' VWAP × volume; the reference price is the period's."""
    volume_weighted = {"buy_vwap": "bought_mwh", "sell_vwap": "sold_mwh"}
    summed = (
        _lazy(exposure)
        .with_columns(
            (pl.col(vwap).fill_null(0.0) * pl.col(volume)).alias(f"_{vwap}_eur")
            for vwap, volume in volume_weighted.items()
        )
        .group_by("delivery_day", "delivery_hour")
        .agg(
            pl.col("trades").sum().cast(pl.Int64),
            pl.col("bought_mwh", "sold_mwh", "net_mwh", "cash_eur").sum(),
            pl.col("_buy_vwap_eur", "_sell_vwap_eur").sum(),
            pl.col("reference_price").first(),
        )
    )
    return (
        summed.with_columns(
            pl.lit(DESK).alias("trader_id"),
            *(
                pl.when(pl.col(volume) > 0)
                .then(pl.col(f"_{vwap}_eur") / pl.col(volume))
                .cast(pl.Float64)
                .alias(vwap)
                for vwap, volume in volume_weighted.items()
            ),
            (pl.col("cash_eur") + pl.col("net_mwh") * pl.col("reference_price")).alias("pnl_eur"),
            (pl.col("net_mwh") * pl.col("reference_price")).alias("exposure_eur"),
        )
        .select(EXPOSURE_COLUMNS)
        .sort(PERIOD_KEY)
        .collect()
    )


def _valued(cash: str, net: str, price: str) -> pl.Expr:
    # PnL of a period at a given price, counted only where that price exists.
    return (
        pl.when(pl.col(price).is_not_null())
        .then(pl.col(cash) + pl.col(net) * pl.col(price))
        .otherwise(0.0)
    )


def pnl_attribution(
    before: pl.DataFrame | pl.LazyFrame,
    after: pl.DataFrame | pl.LazyFrame,
    prices_before: pl.DataFrame | pl.LazyFrame,
    prices_after: pl.DataFrame | pl.LazyFrame,
) -> pl.DataFrame:
    """Split each trader's PnL change between two refreshes into what moved it.

    With old book B0 (cash, net per period), new book B1, old prices R0, new prices R1, and
    PnL(B, R) = Σ over periods priced in R of cash + net · price:

    - `pnl_change_prices_eur` = PnL(B0, R1) − PnL(B0, R0): the book held before, revalued
      (price revisions, and a period's first price);
    - `pnl_change_trades_eur` = PnL(B1, R1) − PnL(B0, R1): the new trades, at today's prices;
    - they add up to `pnl_change_eur` = PnL(B1, R1) − PnL(B0, R0).

    `before`/`after` carry `trader_id`, `delivery_day`, `delivery_hour`, `trades`, `cash_eur`,
    `net_mwh` (only the periods that may have changed are needed); `prices_*` carry
    `delivery_day`, `delivery_hour`, `reference_price`.
    """
    cols = [*PERIOD_KEY, "trades", "cash_eur", "net_mwh"]
    slot = ["delivery_day", "delivery_hour"]
    old = _lazy(before).select(cols)
    new = _lazy(after).select(cols)
    joined = (
        old.join(new, on=PERIOD_KEY, how="full", coalesce=True, suffix="_1")
        .join(
            _lazy(prices_before).select(*slot, pl.col("reference_price").alias("r0")),
            on=slot,
            how="left",
        )
        .join(
            _lazy(prices_after).select(*slot, pl.col("reference_price").alias("r1")),
            on=slot,
            how="left",
        )
        .with_columns(
            pl.col(
                "trades", "cash_eur", "net_mwh", "trades_1", "cash_eur_1", "net_mwh_1"
            ).fill_null(0)
        )
    )
    old_at_r0 = _valued("cash_eur", "net_mwh", "r0")
    old_at_r1 = _valued("cash_eur", "net_mwh", "r1")
    new_at_r1 = _valued("cash_eur_1", "net_mwh_1", "r1")
    return (
        joined.group_by("trader_id")
        .agg(
            (pl.col("trades_1") - pl.col("trades")).sum().cast(pl.Int64).alias("new_trades"),
            (new_at_r1 - old_at_r0).sum().alias("pnl_change_eur"),
            (new_at_r1 - old_at_r1).sum().alias("pnl_change_trades_eur"),
            (old_at_r1 - old_at_r0).sum().alias("pnl_change_prices_eur"),
        )
        .sort("trader_id")
        .collect()
    )
