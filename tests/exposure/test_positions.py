"""Position and PnL maths against figures computed by hand (see the comments on each deal)."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from energy_assets.exposure.positions import (
    DESK,
    EXPOSURE_COLUMNS,
    PERIOD_KEY,
    book,
    daily_totals,
    desk_positions,
    legs,
    pnl_attribution,
    positions,
    positions_of_legs,
    rebook,
    trader_totals,
)

MON = date(2023, 2, 6)
TUE = date(2023, 2, 7)


def trades_frame(rows: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(
        rows,
        schema={
            "trader_id": pl.String,
            "delivery_day": pl.Date,
            "delivery_hour": pl.String,
            "direction": pl.String,
            "quantity": pl.Float64,
            "price": pl.Float64,
        },
        orient="row",
    )


def prices_frame(rows: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(
        rows,
        schema={"delivery_day": pl.Date, "delivery_hour": pl.String, "reference_price": pl.Float64},
        orient="row",
    )


TRADES = trades_frame(
    [
        # alice 12-13: buys 2 @ 50 and 1 @ 20 (3 MWh for 120 EUR, VWAP 40), sells 1 @ 60.
        ("alice", MON, "12-13", "buy", 2.0, 50.0),
        ("alice", MON, "12-13", "buy", 1.0, 20.0),
        ("alice", MON, "12-13", "sell", 1.0, 60.0),
        # alice 13-14: sells 2 at a negative price, i.e. pays 20 EUR to deliver.
        ("alice", MON, "13-14", "sell", 2.0, -10.0),
        # alice 14-15: no reference price yet.
        ("alice", MON, "14-15", "buy", 1.5, 30.0),
        # bob 12-13: buys 4 @ 44, sells 6 @ 46: short 2.
        ("bob", MON, "12-13", "buy", 4.0, 44.0),
        ("bob", MON, "12-13", "sell", 6.0, 46.0),
    ]
)
PRICES = prices_frame([(MON, "12-13", 45.0), (MON, "13-14", -5.0), (MON, "11-12", 99.0)])


def row(frame: pl.DataFrame, **key) -> dict:
    selected = frame.filter(*(pl.col(k) == v for k, v in key.items()))
    assert selected.height == 1, selected
    return selected.row(0, named=True)


def test_columns_are_exactly_the_contract():
    assert positions(TRADES, PRICES).columns == EXPOSURE_COLUMNS


def test_one_row_per_trader_and_period():
    result = positions(TRADES, PRICES)
    assert result.select("trader_id", "delivery_hour").rows() == [
        ("alice", "12-13"),
        ("alice", "13-14"),
        ("alice", "14-15"),
        ("bob", "12-13"),
    ]


def test_long_position_with_mixed_trades():
    r = row(positions(TRADES, PRICES), trader_id="alice", delivery_hour="12-13")
    assert r["trades"] == 3
    assert r["bought_mwh"] == pytest.approx(3.0)
    assert r["sold_mwh"] == pytest.approx(1.0)
    assert r["net_mwh"] == pytest.approx(2.0)
    assert r["buy_vwap"] == pytest.approx(40.0)
    assert r["sell_vwap"] == pytest.approx(60.0)
    assert r["cash_eur"] == pytest.approx(60.0 - 120.0)
    assert r["reference_price"] == pytest.approx(45.0)
    assert r["exposure_eur"] == pytest.approx(2.0 * 45.0)
    assert r["pnl_eur"] == pytest.approx(-60.0 + 90.0)


def test_negative_prices():
    r = row(positions(TRADES, PRICES), trader_id="alice", delivery_hour="13-14")
    assert r["bought_mwh"] == 0.0
    assert r["buy_vwap"] is None
    assert r["sell_vwap"] == pytest.approx(-10.0)
    assert r["net_mwh"] == pytest.approx(-2.0)
    assert r["cash_eur"] == pytest.approx(-20.0)
    # Short 2 MWh at a reference of -5: the position is worth +10 EUR ...
    assert r["exposure_eur"] == pytest.approx(10.0)
    # ... and selling at -10 where the market says -5 lost 5 EUR/MWh on 2 MWh.
    assert r["pnl_eur"] == pytest.approx(-10.0)


def test_period_without_price_is_null_not_zero():
    r = row(positions(TRADES, PRICES), trader_id="alice", delivery_hour="14-15")
    assert r["net_mwh"] == pytest.approx(1.5)
    assert r["cash_eur"] == pytest.approx(-45.0)
    assert r["sell_vwap"] is None
    assert r["reference_price"] is None
    assert r["pnl_eur"] is None
    assert r["exposure_eur"] is None


def test_short_position():
    r = row(positions(TRADES, PRICES), trader_id="bob")
    assert r["net_mwh"] == pytest.approx(-2.0)
    assert r["buy_vwap"] == pytest.approx(44.0)
    assert r["sell_vwap"] == pytest.approx(46.0)
    assert r["cash_eur"] == pytest.approx(276.0 - 176.0)
    assert r["exposure_eur"] == pytest.approx(-90.0)
    assert r["pnl_eur"] == pytest.approx(10.0)


def test_no_trades_gives_no_rows():
    assert positions(TRADES.clear(), PRICES).height == 0


def test_trader_totals():
    totals = trader_totals(positions(TRADES, PRICES))
    alice = row(totals, trader_id="alice")
    assert alice["periods"] == 3
    assert alice["unpriced_periods"] == 1
    assert alice["trades"] == 5
    assert alice["bought_mwh"] == pytest.approx(4.5)
    assert alice["sold_mwh"] == pytest.approx(3.0)
    assert alice["net_mwh"] == pytest.approx(1.5)
    assert alice["cash_eur"] == pytest.approx(-60.0 - 20.0 - 45.0)
    # PnL and exposure of the priced periods only; the unpriced 1.5 MWh is reported apart.
    assert alice["pnl_eur"] == pytest.approx(30.0 - 10.0)
    assert alice["exposure_eur"] == pytest.approx(90.0 + 10.0)
    assert alice["gross_exposure_eur"] == pytest.approx(100.0)
    assert alice["unpriced_net_mwh"] == pytest.approx(1.5)
    bob = row(totals, trader_id="bob")
    assert bob["exposure_eur"] == pytest.approx(-90.0)
    assert bob["gross_exposure_eur"] == pytest.approx(90.0)
    assert bob["unpriced_net_mwh"] == 0.0


def test_totals_of_a_trader_with_no_price_at_all_are_null():
    trades = trades_frame([("carol", TUE, "00-01", "buy", 1.0, 10.0)])
    totals = trader_totals(positions(trades, PRICES))
    carol = row(totals, trader_id="carol")
    assert carol["pnl_eur"] is None
    assert carol["gross_exposure_eur"] is None
    assert carol["cash_eur"] == pytest.approx(-10.0)


def test_daily_totals_split_by_delivery_day():
    trades = pl.concat([TRADES, trades_frame([("alice", TUE, "00-01", "buy", 1.0, 10.0)])])
    prices = pl.concat([PRICES, prices_frame([(TUE, "00-01", 12.0)])])
    daily = daily_totals(positions(trades, prices))
    assert daily.select("trader_id", "delivery_day").rows() == [
        ("alice", MON),
        ("alice", TUE),
        ("bob", MON),
    ]
    assert row(daily, trader_id="alice", delivery_day=MON)["pnl_eur"] == pytest.approx(20.0)
    assert row(daily, trader_id="alice", delivery_day=TUE)["pnl_eur"] == pytest.approx(2.0)
    assert row(trader_totals(positions(trades, prices)), trader_id="alice")[
        "pnl_eur"
    ] == pytest.approx(22.0)


def test_pnl_attribution_splits_new_trades_from_price_revisions():
    before_trades = TRADES.filter(
        pl.col("trader_id") == "alice", pl.col("delivery_hour") == "12-13"
    )
    prices_before = prices_frame([(MON, "12-13", 45.0)])
    after_trades = pl.concat(
        [
            before_trades,
            trades_frame(
                [
                    ("alice", MON, "12-13", "buy", 1.0, 40.0),
                    ("alice", MON, "13-14", "sell", 2.0, -10.0),
                ]
            ),
        ]
    )
    prices_after = prices_frame([(MON, "12-13", 47.0), (MON, "13-14", -5.0)])
    before = positions(before_trades, prices_before)
    after = positions(after_trades, prices_after)

    split = row(pnl_attribution(before, after, prices_before, prices_after), trader_id="alice")
    # Before: cash -60, long 2 @ 45 -> 30. The old book at the new price: -60 + 2*47 = 34.
    # After: 12-13 cash -100, long 3 @ 47 -> 41; 13-14 cash -20, short 2 @ -5 -> -10; total 31.
    assert split["new_trades"] == 2
    assert split["pnl_change_prices_eur"] == pytest.approx(34.0 - 30.0)
    assert split["pnl_change_trades_eur"] == pytest.approx(31.0 - 34.0)
    assert split["pnl_change_eur"] == pytest.approx(31.0 - 30.0)
    assert after["pnl_eur"].sum() - before["pnl_eur"].sum() == pytest.approx(1.0)


def test_pnl_attribution_from_nothing_is_all_new_trades():
    after = positions(TRADES, PRICES)
    split = pnl_attribution(after.clear(), after, PRICES.clear(), PRICES)
    alice = row(split, trader_id="alice")
    assert alice["pnl_change_prices_eur"] == 0.0
    assert alice["pnl_change_trades_eur"] == pytest.approx(20.0)
    assert alice["new_trades"] == 5


def test_rebooking_new_deals_onto_a_book_equals_booking_every_deal():
    later = trades_frame(
        [
            # alice 12-13 buys 1 more @ 44: 4 MWh for 164 EUR, VWAP 41; cash -104.
            ("alice", MON, "12-13", "buy", 1.0, 44.0),
            # alice 13-14 had only sells: her first buy there, 1 @ 5.
            ("alice", MON, "13-14", "buy", 1.0, 5.0),
            # carol: a period nobody traded before.
            ("carol", TUE, "08-09", "sell", 0.5, 70.0),
        ]
    )
    every_deal = book(pl.concat([TRADES, later])).sort(PERIOD_KEY).collect()
    rebooked = rebook(book(TRADES).collect(), legs(later)).sort(PERIOD_KEY).collect()
    assert_frame_equal(rebooked, every_deal, check_exact=False, rel_tol=1e-12)
    alice = rebooked.filter(trader_id="alice", delivery_hour="12-13").row(0, named=True)
    assert (alice["trades"], alice["bought_mwh"], alice["net_mwh"]) == (4, 4.0, 3.0)
    assert alice["buy_vwap"] == pytest.approx(41.0) and alice["cash_eur"] == pytest.approx(-104.0)
    short_only = rebooked.filter(trader_id="alice", delivery_hour="13-14").row(0, named=True)
    assert short_only["buy_vwap"] == pytest.approx(5.0) and short_only["sell_vwap"] == -10.0
    # Periods without new deals come back exactly as they were.
    untouched = rebooked.filter(pl.col("trader_id") == "bob")
    assert_frame_equal(untouched, every_deal.filter(pl.col("trader_id") == "bob"), check_exact=True)


def test_desk_positions_equal_the_positions_of_every_deal_booked_to_one_trader():
    deals = pl.DataFrame(
        {
            "trader_id": ["a", "a", "b", "b"],
            "delivery_day": [date(2026, 1, 1)] * 3 + [date(2026, 1, 2)],
            "delivery_hour": ["01-02"] * 4,
            "direction": ["buy", "sell", "buy", "sell"],
            "price": [10.0, 20.0, 30.0, -5.0],
            "quantity": [1.0, 2.0, 3.0, 4.0],
        }
    )
    prices = pl.DataFrame(
        {"delivery_day": [date(2026, 1, 1)], "delivery_hour": ["01-02"], "reference_price": [25.0]}
    )
    desk = desk_positions(positions(deals, prices))
    # Hand-computed for 2026-01-01 01-02: bought 1@10 + 3@30 = 4 MWh at 25, sold 2@20.
    first = desk.row(0, named=True)
    assert first["trader_id"] == DESK
    assert (first["bought_mwh"], first["sold_mwh"], first["net_mwh"]) == (4.0, 2.0, 2.0)
    assert first["buy_vwap"] == pytest.approx(25.0)
    assert first["cash_eur"] == pytest.approx(40.0 - 100.0)
    assert first["pnl_eur"] == pytest.approx(-60.0 + 2.0 * 25.0)
    assert desk.row(1, named=True)["pnl_eur"] is None  # 2026-01-02 has no price yet
    as_one_trader = positions(deals.with_columns(trader_id=pl.lit(DESK)), prices)
    assert desk.equals(as_one_trader)


def test_positions_of_legs_summed_elsewhere_equal_the_positions_of_the_deals():
    # alice MON 12-13 as the warehouse sums it: buys 2 deals, 3 MWh for 120 EUR; sells 1, 1 @ 60.
    summed = pl.DataFrame(
        {
            "trader_id": ["alice", "alice"],
            "delivery_day": [MON, MON],
            "delivery_hour": ["12-13", "12-13"],
            "direction": ["buy", "sell"],
            "trades": [2, 1],
            "mwh": [3.0, 1.0],
            "eur": [120.0, 60.0],
        }
    )
    deals = TRADES.filter(pl.col("trader_id") == "alice", pl.col("delivery_hour") == "12-13")
    from_legs = positions_of_legs(summed, PRICES)
    assert from_legs.equals(positions(deals, PRICES))
    assert row(from_legs, trader_id="alice")["pnl_eur"] == pytest.approx(30.0)
