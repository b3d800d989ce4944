"""Position and PnL maths against figures computed by hand (see the comments on each deal), and
against a plain-Python oracle over random deals of both markets across their DST nights."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, timedelta

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from energy_assets.exposure.positions import (
    DESK,
    EXPOSURE_COLUMNS,
    PERIOD_KEY,
    book,
    daily_totals,
    desk_positions,
    legs,
    net_positions,
    pnl_attribution,
    positions,
    positions_of_sides,
    rebook,
    trader_totals,
)
from energy_assets.tables import TRADER_EXPOSURE, TRADER_NET_POSITION
from tests.exposure.periods import (
    CURRENCIES,
    GRID,
    MARKETS,
    PRODUCTS,
    deal,
    local_day,
    price,
    prices_frame,
    trades_frame,
    utc,
)

# 6 February 2026, Berlin in winter time (UTC+1): local 12-13 is 11:00-12:00 UTC.
H12, H13, H14 = "2026-02-06T11:00Z", "2026-02-06T12:00Z", "2026-02-06T13:00Z"
MON = date(2026, 2, 6)
TUE = date(2026, 2, 7)
TRADES = trades_frame(
    [
        # alice 12-13: buys 2 MW @ 50 and 1 MW @ 20 (3 MWh for 120 EUR, VWAP 40), sells 1 @ 60.
        deal("alice", "DE", H12, 60, "buy", 2.0, 50.0),
        deal("alice", "DE", H12, 60, "buy", 1.0, 20.0),
        deal("alice", "DE", H12, 60, "sell", 1.0, 60.0),
        # alice 13-14: sells 2 MW at a negative price, i.e. pays 20 EUR to deliver.
        deal("alice", "DE", H13, 60, "sell", 2.0, -10.0),
        # alice 14-15: no reference price yet.
        deal("alice", "DE", H14, 60, "buy", 1.5, 30.0),
        # bob 12-13: buys 4 @ 44, sells 6 @ 46: short 2.
        deal("bob", "DE", H12, 60, "buy", 4.0, 44.0),
        deal("bob", "DE", H12, 60, "sell", 6.0, 46.0),
    ]
)
PRICES = prices_frame(
    [
        price("DE", H12, 60, 45.0),
        price("DE", H13, 60, -5.0),
        price("DE", "2026-02-06T10:00Z", 60, 99.0),
        # The quarter-hour 12:00-12:15 local has its own price: never the hour's.
        price("DE", H12, 15, 1000.0),
    ]
)


def pos(trades: pl.DataFrame = TRADES, prices: pl.DataFrame = PRICES) -> pl.DataFrame:
    return positions(trades, prices, MARKETS)


def row(frame: pl.DataFrame, **key) -> dict:
    selected = frame.filter(*(pl.col(k) == v for k, v in key.items()))
    assert selected.height == 1, selected
    return selected.row(0, named=True)


def test_columns_and_types_are_the_tables():
    result = pos()
    assert result.columns == EXPOSURE_COLUMNS == TRADER_EXPOSURE.column_names
    assert result.schema == TRADER_EXPOSURE.polars_schema()
    assert net_positions(result, MARKETS).schema == TRADER_NET_POSITION.polars_schema()


def test_one_row_per_trader_and_period():
    assert pos().select("trader_id", "delivery_start").rows() == [
        ("alice", utc(H12)),
        ("alice", utc(H13)),
        ("alice", utc(H14)),
        ("bob", utc(H12)),
    ]


def test_long_position_with_mixed_trades():
    r = row(pos(), trader_id="alice", delivery_start=utc(H12))
    assert (r["market"], r["currency"], r["delivery_day"]) == ("DE", "EUR", MON)
    assert r["trades"] == 3
    assert r["bought_mwh"] == pytest.approx(3.0)
    assert r["sold_mwh"] == pytest.approx(1.0)
    assert r["net_mwh"] == pytest.approx(2.0)
    assert r["buy_vwap"] == pytest.approx(40.0)
    assert r["sell_vwap"] == pytest.approx(60.0)
    assert r["cash"] == pytest.approx(60.0 - 120.0)
    assert r["reference_price"] == pytest.approx(45.0)  # the hour's, not its quarter's 1000
    assert r["exposure"] == pytest.approx(2.0 * 45.0)
    assert r["pnl"] == pytest.approx(-60.0 + 90.0)


def test_negative_prices():
    r = row(pos(), trader_id="alice", delivery_start=utc(H13))
    assert r["bought_mwh"] == 0.0
    assert r["buy_vwap"] is None
    assert r["sell_vwap"] == pytest.approx(-10.0)
    assert r["net_mwh"] == pytest.approx(-2.0)
    assert r["cash"] == pytest.approx(-20.0)
    # Short 2 MWh at a reference of -5: the position is worth +10 EUR ...
    assert r["exposure"] == pytest.approx(10.0)
    # ... and selling at -10 where the market says -5 lost 5 EUR/MWh on 2 MWh.
    assert r["pnl"] == pytest.approx(-10.0)


def test_period_without_price_is_null_not_zero():
    r = row(pos(), trader_id="alice", delivery_start=utc(H14))
    assert r["net_mwh"] == pytest.approx(1.5)
    assert r["cash"] == pytest.approx(-45.0)
    assert r["sell_vwap"] is None
    assert r["reference_price"] is None
    assert r["pnl"] is None
    assert r["exposure"] is None


def test_a_period_sold_back_needs_no_price_its_pnl_is_its_cash():
    # carol 14-15, no reference price: buys 0.3 MW @ 40, sells 0.1 @ 50 and 0.2 @ 45. Flat
    # (0.3 - (0.1 + 0.2) is -5.6e-17 in floats); cash -12 + 5 + 9 = 2 EUR, realised.
    trades = trades_frame(
        [
            deal("carol", "DE", H14, 60, "buy", 0.3, 40.0),
            deal("carol", "DE", H14, 60, "sell", 0.1, 50.0),
            deal("carol", "DE", H14, 60, "sell", 0.2, 45.0),
        ]
    )
    r = row(pos(trades), trader_id="carol")
    assert r["reference_price"] is None
    assert r["net_mwh"] == pytest.approx(0.0, abs=1e-12)
    assert r["pnl"] == pytest.approx(2.0)
    assert r["exposure"] == 0.0
    carol = row(trader_totals(pos(trades)), trader_id="carol")
    assert carol["unpriced_periods"] == 0 and carol["unpriced_net_mwh"] == 0.0
    assert carol["pnl"] == pytest.approx(2.0) and carol["gross_exposure"] == 0.0


def test_short_position():
    r = row(pos(), trader_id="bob")
    assert r["net_mwh"] == pytest.approx(-2.0)
    assert r["cash"] == pytest.approx(276.0 - 176.0)
    assert r["exposure"] == pytest.approx(-90.0)
    assert r["pnl"] == pytest.approx(10.0)


def test_no_trades_gives_no_rows():
    assert pos(TRADES.clear()).height == 0
    assert net_positions(pos(TRADES.clear()), MARKETS).height == 0


def test_quarter_hour_energy_is_a_quarter_of_its_mw_in_cash_and_pnl():
    # 8 MW over 10:15-10:30 local is 2 MWh: paid 2 × 40 = 80 EUR; at 50 it is worth 100.
    # Sold 4 MW of it back at 60: 1 MWh, 60 EUR. Net 1 MWh (4 MW).
    start = "2026-02-06T09:15Z"
    trades = trades_frame(
        [
            deal("alice", "DE", start, 15, "buy", 8.0, 40.0),
            deal("alice", "DE", start, 15, "sell", 4.0, 60.0),
        ]
    )
    r = row(pos(trades, prices_frame([price("DE", start, 15, 50.0)])), trader_id="alice")
    assert (r["bought_mwh"], r["sold_mwh"], r["net_mwh"]) == (2.0, 1.0, 1.0)
    assert (r["buy_vwap"], r["sell_vwap"]) == (40.0, 60.0)  # per MWh, whatever the length
    assert r["cash"] == pytest.approx(60.0 - 80.0)
    assert r["exposure"] == pytest.approx(50.0)
    assert r["pnl"] == pytest.approx(-20.0 + 50.0)
    net = net_positions(pos(trades), MARKETS)
    assert net.select("delivery_start", "net_mw").rows() == [(utc(start), 4.0)]


def test_gb_half_hours_in_gbp():
    # London 10:00-10:30 in winter is 10:00-10:30 UTC. Buy 10 MW @ 70 = 5 MWh, 350 GBP;
    # sell 4 MW @ 75 = 2 MWh, 150 GBP. Net 3 MWh; at 72: worth 216, PnL -200 + 216 = 16 GBP.
    start = "2026-02-06T10:00Z"
    trades = trades_frame(
        [
            deal("bob", "GB", start, 30, "buy", 10.0, 70.0),
            deal("bob", "GB", start, 30, "sell", 4.0, 75.0),
        ]
    )
    result = pos(trades, prices_frame([price("GB", start, 30, 72.0)]))
    r = row(result, trader_id="bob")
    assert (r["market"], r["currency"]) == ("GB", "GBP")
    assert r["delivery_end"] == utc("2026-02-06T10:30Z")
    assert (r["bought_mwh"], r["sold_mwh"], r["net_mwh"]) == (5.0, 2.0, 3.0)
    assert r["cash"] == pytest.approx(-200.0)
    assert r["exposure"] == pytest.approx(216.0)
    assert r["pnl"] == pytest.approx(16.0)
    totals = row(trader_totals(result), trader_id="bob")
    assert (totals["currency"], totals["pnl"]) == ("GBP", pytest.approx(16.0))
    assert net_positions(result, MARKETS).select("delivery_start", "net_mw").rows() == [
        (utc(start), 6.0)
    ]


def test_an_hourly_deal_nets_against_the_quarter_hours_of_its_hour():
    # Berlin 10-11 in winter is 09:00-10:00 UTC. Bought the hour, 10 MW; sold 10 MW in each of
    # the first three quarters and 6 MW in the last: open 0, 0, 0, 4 MW.
    hour = "2026-02-06T09:00Z"
    quarters = [utc(hour) + timedelta(minutes=15 * i) for i in range(4)]
    trades = trades_frame(
        [
            deal("alice", "DE", hour, 60, "buy", 10.0, 50.0),
            *(deal("alice", "DE", q, 15, "sell", 10.0, 52.0) for q in quarters[:3]),
            deal("alice", "DE", quarters[3], 15, "sell", 6.0, 52.0),
        ]
    )
    result = pos(trades, PRICES.clear())
    net = net_positions(result, MARKETS)
    assert net.select("delivery_start", "delivery_end", "net_mw").rows() == [
        (q, q + timedelta(minutes=15), mw)
        for q, mw in zip(quarters, [0.0, 0.0, 0.0, 4.0], strict=True)
    ]
    assert net["delivery_day"].to_list() == [MON] * 4
    # The periods stay apart in trader_exposure, each in MWh: 10 bought, 9 sold (36 MW × ¼ h).
    assert result.height == 5
    assert result["net_mwh"].sum() == pytest.approx(1.0)
    assert (net["net_mw"] * 0.25).sum() == pytest.approx(result["net_mwh"].sum())
    # Cash: -10 MWh × 50 + 9 MWh × 52 = -32 EUR.
    assert result["cash"].sum() == pytest.approx(-500.0 + 468.0)


def test_totals_never_add_currencies():
    trades = trades_frame(
        [
            deal("alice", "DE", H12, 60, "buy", 1.0, 50.0),  # -50 EUR
            deal("alice", "GB", "2026-02-06T11:00Z", 30, "sell", 2.0, 40.0),  # +40 GBP
            deal("bob", "GB", "2026-02-06T11:00Z", 30, "buy", 2.0, 41.0),  # -41 GBP
        ]
    )
    prices = prices_frame([price("DE", H12, 60, 55.0), price("GB", "2026-02-06T11:00Z", 30, 42.0)])
    result = pos(trades, prices)
    totals = trader_totals(result)
    assert totals.select("trader_id", "currency", "cash", "pnl").rows() == [
        ("alice", "EUR", -50.0, pytest.approx(5.0)),
        ("alice", "GBP", 40.0, pytest.approx(40.0 - 42.0)),
        ("bob", "GBP", -41.0, pytest.approx(-41.0 + 42.0)),
    ]
    daily = daily_totals(result)
    assert daily.select("trader_id", "market", "currency").rows() == [
        ("alice", "DE", "EUR"),
        ("alice", "GB", "GBP"),
        ("bob", "GB", "GBP"),
    ]
    desk = desk_positions(result)
    assert desk.select("market", "currency", "cash").rows() == [
        ("DE", "EUR", -50.0),
        ("GB", "GBP", pytest.approx(-1.0)),
    ]
    split = pnl_attribution(result.clear(), result, prices.clear(), prices)
    assert split.select("trader_id", "currency").rows() == [
        ("alice", "EUR"),
        ("alice", "GBP"),
        ("bob", "GBP"),
    ]


def test_spring_forward_night_in_both_markets():
    # 29 March 2026. Berlin: 01-02 is 00:00 UTC, then 03-04 is 01:00 UTC (no 02-03).
    # London: 00:00-00:30 and 00:30-01:00 GMT are 00:00 and 00:30 UTC; 02:00 BST is 01:00 UTC.
    trades = trades_frame(
        [
            deal("alice", "DE", "2026-03-29T00:00Z", 60, "buy", 4.0, 30.0),
            deal("alice", "DE", "2026-03-29T01:00Z", 60, "sell", 4.0, 35.0),
            deal("alice", "GB", "2026-03-29T00:30Z", 30, "buy", 2.0, 20.0),
            deal("alice", "GB", "2026-03-29T01:00Z", 30, "buy", 2.0, 21.0),
        ]
    )
    result = pos(trades, PRICES.clear())
    assert result["delivery_day"].to_list() == [date(2026, 3, 29)] * 4
    net = net_positions(result, MARKETS)
    de = net.filter(market="DE")
    assert de["delivery_start"].to_list() == [
        utc("2026-03-29T00:00Z") + timedelta(minutes=15 * i) for i in range(8)
    ]
    assert de["net_mw"].to_list() == [4.0] * 4 + [-4.0] * 4
    assert net.filter(market="GB")["net_mw"].to_list() == [2.0, 2.0]
    # 4 MWh bought at 30 and sold at 35 an hour later: cash +20 EUR, flat over the day.
    day = row(daily_totals(result), market="DE")
    assert (day["net_mwh"], day["cash"]) == (0.0, 20.0)


def test_fall_back_night_keeps_both_02_03_hours_apart():
    # 25 October 2026. Berlin's 02-03 happens twice: 00:00 UTC (CEST) and 01:00 UTC (CET).
    # Long the first 5 MW, short the first quarter of the second 5 MW: they never net.
    trades = trades_frame(
        [
            deal("alice", "DE", "2026-10-25T00:00Z", 60, "buy", 5.0, 40.0),
            deal("alice", "DE", "2026-10-25T01:00Z", 15, "sell", 5.0, 45.0),
            # London's day 25 October starts at 23:00 UTC on the 24th (BST) ...
            deal("bob", "GB", "2026-10-24T23:00Z", 30, "buy", 1.0, 30.0),
            # ... and its 01:00-01:30 happens twice: 00:00 UTC (BST) and 01:00 UTC (GMT).
            deal("bob", "GB", "2026-10-25T00:00Z", 30, "buy", 1.0, 30.0),
            deal("bob", "GB", "2026-10-25T01:00Z", 30, "sell", 1.0, 31.0),
        ]
    )
    result = pos(trades, PRICES.clear())
    assert set(result["delivery_day"].to_list()) == {date(2026, 10, 25)}
    net = net_positions(result, MARKETS)
    de = net.filter(market="DE")
    assert de.select("delivery_start", "net_mw").rows() == [
        *((utc("2026-10-25T00:00Z") + timedelta(minutes=15 * i), 5.0) for i in range(4)),
        (utc("2026-10-25T01:00Z"), -5.0),
    ]
    gb = net.filter(market="GB")
    assert gb["net_mw"].to_list() == [1.0, 1.0, -1.0]
    days = daily_totals(result)
    assert days.select("market", "delivery_day", "periods").rows() == [
        ("DE", date(2026, 10, 25), 2),
        ("GB", date(2026, 10, 25), 3),
    ]


def test_trader_totals():
    totals = trader_totals(pos())
    alice = row(totals, trader_id="alice")
    assert alice["currency"] == "EUR"
    assert alice["periods"] == 3
    assert alice["unpriced_periods"] == 1
    assert alice["trades"] == 5
    assert alice["bought_mwh"] == pytest.approx(4.5)
    assert alice["sold_mwh"] == pytest.approx(3.0)
    assert alice["net_mwh"] == pytest.approx(1.5)
    assert alice["cash"] == pytest.approx(-60.0 - 20.0 - 45.0)
    # PnL and exposure of the priced periods only; the unpriced 1.5 MWh is reported apart.
    assert alice["pnl"] == pytest.approx(30.0 - 10.0)
    assert alice["exposure"] == pytest.approx(90.0 + 10.0)
    assert alice["gross_exposure"] == pytest.approx(100.0)
    assert alice["unpriced_net_mwh"] == pytest.approx(1.5)
    bob = row(totals, trader_id="bob")
    assert bob["gross_exposure"] == pytest.approx(90.0)
    assert bob["unpriced_net_mwh"] == 0.0


def test_totals_of_a_trader_with_no_price_at_all_are_null():
    trades = trades_frame([deal("carol", "DE", "2026-02-06T23:00Z", 60, "buy", 1.0, 10.0)])
    carol = row(trader_totals(pos(trades)), trader_id="carol")
    assert carol["pnl"] is None
    assert carol["gross_exposure"] is None
    assert carol["cash"] == pytest.approx(-10.0)


def test_daily_totals_split_by_local_delivery_day():
    # 23:00 UTC on the 6th is 00-01 on the 7th in Berlin.
    tue = "2026-02-06T23:00Z"
    trades = pl.concat([TRADES, trades_frame([deal("alice", "DE", tue, 60, "buy", 1.0, 10.0)])])
    prices = pl.concat([PRICES, prices_frame([price("DE", tue, 60, 12.0)])])
    daily = daily_totals(pos(trades, prices))
    assert daily.select("trader_id", "delivery_day").rows() == [
        ("alice", MON),
        ("alice", TUE),
        ("bob", MON),
    ]
    assert row(daily, trader_id="alice", delivery_day=MON)["pnl"] == pytest.approx(20.0)
    assert row(daily, trader_id="alice", delivery_day=TUE)["pnl"] == pytest.approx(2.0)
    assert row(trader_totals(pos(trades, prices)), trader_id="alice")["pnl"] == pytest.approx(22.0)


def test_pnl_attribution_splits_new_trades_from_price_revisions():
    before_trades = TRADES.filter(
        pl.col("trader_id") == "alice", pl.col("delivery_start") == utc(H12)
    )
    prices_before = prices_frame([price("DE", H12, 60, 45.0)])
    after_trades = pl.concat(
        [
            before_trades,
            trades_frame(
                [
                    deal("alice", "DE", H12, 60, "buy", 1.0, 40.0),
                    deal("alice", "DE", H13, 60, "sell", 2.0, -10.0),
                ]
            ),
        ]
    )
    prices_after = prices_frame([price("DE", H12, 60, 47.0), price("DE", H13, 60, -5.0)])
    before = pos(before_trades, prices_before)
    after = pos(after_trades, prices_after)

    split = row(pnl_attribution(before, after, prices_before, prices_after), trader_id="alice")
    # Before: cash -60, long 2 @ 45 -> 30. The old book at the new price: -60 + 2*47 = 34.
    # After: 12-13 cash -100, long 3 @ 47 -> 41; 13-14 cash -20, short 2 @ -5 -> -10; total 31.
    assert split["currency"] == "EUR"
    assert split["new_trades"] == 2
    assert split["pnl_change_prices"] == pytest.approx(34.0 - 30.0)
    assert split["pnl_change_trades"] == pytest.approx(31.0 - 34.0)
    assert split["pnl_change"] == pytest.approx(31.0 - 30.0)


def test_closing_an_unpriced_position_realises_its_pnl_as_a_trade():
    # alice 14-15 has no price: long 1.5 @ 30 (PnL unknown), then sells 1.5 @ 34: +6 EUR.
    before_trades = TRADES.filter(pl.col("delivery_start") == utc(H14))
    after_trades = pl.concat(
        [before_trades, trades_frame([deal("alice", "DE", H14, 60, "sell", 1.5, 34.0)])]
    )
    before, after = pos(before_trades), pos(after_trades)
    assert row(before, trader_id="alice")["pnl"] is None
    split = row(pnl_attribution(before, after, PRICES, PRICES), trader_id="alice")
    assert split["pnl_change_trades"] == pytest.approx(6.0)
    assert split["pnl_change_prices"] == 0.0
    assert split["pnl_change"] == pytest.approx(6.0)


def test_pnl_attribution_from_nothing_is_all_new_trades():
    after = pos()
    alice = row(pnl_attribution(after.clear(), after, PRICES.clear(), PRICES), trader_id="alice")
    assert alice["pnl_change_prices"] == 0.0
    assert alice["pnl_change_trades"] == pytest.approx(20.0)
    assert alice["new_trades"] == 5


def test_rebooking_new_deals_onto_a_book_equals_booking_every_deal():
    later = trades_frame(
        [
            # alice 12-13 buys 1 more @ 44: 4 MWh for 164 EUR, VWAP 41; cash -104.
            deal("alice", "DE", H12, 60, "buy", 1.0, 44.0),
            # alice 13-14 had only sells: her first buy there, 1 @ 5.
            deal("alice", "DE", H13, 60, "buy", 1.0, 5.0),
            # carol: a quarter-hour nobody traded before.
            deal("carol", "DE", "2026-02-07T08:15Z", 15, "sell", 0.5, 70.0),
        ]
    )
    every_deal = book(pl.concat([TRADES, later])).sort(PERIOD_KEY).collect()
    rebooked = rebook(book(TRADES).collect(), legs(later)).sort(PERIOD_KEY).collect()
    assert_frame_equal(rebooked, every_deal, check_exact=False, rel_tol=1e-12)
    alice = row(rebooked, trader_id="alice", delivery_start=utc(H12))
    assert (alice["trades"], alice["bought_mwh"], alice["net_mwh"]) == (4, 4.0, 3.0)
    assert alice["buy_vwap"] == pytest.approx(41.0) and alice["cash"] == pytest.approx(-104.0)
    assert row(rebooked, trader_id="carol")["sold_mwh"] == 0.125
    # Periods without new deals come back exactly as they were.
    untouched = rebooked.filter(pl.col("trader_id") == "bob")
    assert_frame_equal(untouched, every_deal.filter(pl.col("trader_id") == "bob"), check_exact=True)


def test_desk_positions_equal_the_positions_of_every_deal_booked_to_one_trader():
    deals = trades_frame(
        [
            deal("a", "DE", H12, 60, "buy", 1.0, 10.0),
            deal("a", "DE", H12, 60, "sell", 2.0, 20.0),
            deal("b", "DE", H12, 60, "buy", 3.0, 30.0),
            deal("b", "DE", "2026-02-07T11:00Z", 60, "sell", 4.0, -5.0),
        ]
    )
    prices = prices_frame([price("DE", H12, 60, 25.0)])
    desk = desk_positions(pos(deals, prices))
    # Hand-computed for 12-13: bought 1@10 + 3@30 = 4 MWh at 25, sold 2@20.
    first = desk.row(0, named=True)
    assert first["trader_id"] == DESK
    assert (first["bought_mwh"], first["sold_mwh"], first["net_mwh"]) == (4.0, 2.0, 2.0)
    assert first["buy_vwap"] == pytest.approx(25.0)
    assert first["cash"] == pytest.approx(40.0 - 100.0)
    assert first["pnl"] == pytest.approx(-60.0 + 2.0 * 25.0)
    assert desk.row(1, named=True)["pnl"] is None  # the 7th has no price yet
    assert desk.equals(pos(deals.with_columns(trader_id=pl.lit(DESK)), prices))


def test_positions_of_sides_summed_elsewhere_equal_the_positions_of_the_deals():
    # alice 12-13 as the warehouse sums it, in MW: buys 2 deals, 3 MW for Σ q·p 120; sells 1 @ 60.
    start, end = utc(H12), utc(H13)
    summed = pl.DataFrame(
        {
            "trader_id": ["alice"],
            "market": ["DE"],
            "delivery_start": [start],
            "delivery_end": [end],
            "delivery_day": [MON],
            "trades": [3],
            "buy_mw": [3.0],
            "sell_mw": [1.0],
            "buy_price_mw": [120.0],
            "sell_price_mw": [60.0],
        }
    )
    deals = TRADES.filter(pl.col("trader_id") == "alice", pl.col("delivery_start") == start)
    from_sides = positions_of_sides(summed, PRICES, MARKETS)
    assert from_sides.equals(pos(deals))
    assert row(from_sides, trader_id="alice")["pnl"] == pytest.approx(30.0)


# -- the oracle ------------------------------------------------------------------------------

#: Eight UTC hours around each DST night of 2026 (both markets change at 01:00 UTC).
WINDOWS = [utc("2026-03-28T21:00Z"), utc("2026-10-24T21:00Z")]


@st.composite
def random_book(draw):
    deals = []
    for _ in range(draw(st.integers(0, 40))):
        market = draw(st.sampled_from(["DE", "GB"]))
        minutes = draw(st.sampled_from(PRODUCTS[market]))
        window = draw(st.sampled_from(WINDOWS))
        start = window + timedelta(minutes=minutes * draw(st.integers(0, 8 * 60 // minutes - 1)))
        deals.append(
            deal(
                draw(st.sampled_from(["a", "b", "c"])),
                market,
                start,
                minutes,
                draw(st.sampled_from(["buy", "sell"])),
                draw(st.integers(1, 500)) / 10,
                draw(st.integers(-50_000, 300_000)) / 100,
            )
        )
    # Some positions closed out: a deal that takes each back to flat, priced or not.
    held: dict[tuple, float] = defaultdict(float)
    for trader, market, start, end, _day, direction, mw, _p in deals:
        held[(trader, market, start, end)] += mw if direction == "buy" else -mw
    for key in draw(st.sets(st.sampled_from(sorted(held)))) if held else ():
        trader, market, start, end = key
        if abs(held[key]) > 1e-9:
            minutes = int((end - start).total_seconds()) // 60
            direction = "sell" if held[key] > 0 else "buy"
            deals.append(deal(trader, market, start, minutes, direction, abs(held[key]), 42.5))
    periods = sorted({d[1:4] for d in deals})
    priced = draw(st.sets(st.integers(0, max(len(periods) - 1, 0))))
    prices = [
        (*p, draw(st.integers(-5000, 30000)) / 100) for i, p in enumerate(periods) if i in priced
    ]
    return deals, prices


def oracle(deals: list[tuple], prices: list[tuple]):
    """Plain Python: per period the sums, per grid step the MW, per trader and currency totals."""
    price_of = {p[:3]: p[3] for p in prices}
    rows: dict[tuple, dict] = {}
    steps: dict[tuple, float] = defaultdict(float)
    for trader, market, start, end, _day, direction, mw, p in deals:
        hours = (end - start).total_seconds() / 3600
        r = rows.setdefault(
            (trader, market, start, end),
            {"trades": 0, "bought": 0.0, "sold": 0.0, "buy_money": 0.0, "sell_money": 0.0},
        )
        r["trades"] += 1
        side = "bought" if direction == "buy" else "sold"
        r[side] += mw * hours
        r["buy_money" if direction == "buy" else "sell_money"] += mw * hours * p
        step = start
        while step < end:
            steps[(trader, market, step)] += mw if direction == "buy" else -mw
            step += timedelta(minutes=GRID[market])
    exposure = {}
    totals: dict[tuple, dict] = defaultdict(lambda: {"cash": 0.0, "pnl": 0.0, "net": 0.0})
    for key, r in rows.items():
        trader, market, start, end = key
        net = r["bought"] - r["sold"]
        cash = r["sell_money"] - r["buy_money"]
        ref = price_of.get(key[1:])
        # Flat: bought and sold back, the PnL realised whatever the price.
        pnl = cash if abs(net) < 1e-6 else None if ref is None else cash + net * ref
        exposure[key] = {
            "delivery_day": local_day(market, start),
            "currency": CURRENCIES[market],
            "trades": r["trades"],
            "bought_mwh": r["bought"],
            "sold_mwh": r["sold"],
            "net_mwh": net,
            "buy_vwap": r["buy_money"] / r["bought"] if r["bought"] else None,
            "sell_vwap": r["sell_money"] / r["sold"] if r["sold"] else None,
            "cash": cash,
            "reference_price": ref,
            "pnl": pnl,
        }
        total = totals[(trader, CURRENCIES[market])]
        total["cash"] += cash
        total["net"] += net
        total["pnl"] += pnl or 0.0
    return exposure, dict(steps), dict(totals)


def close(a, b) -> bool:
    if a is None or b is None:
        return a is b
    if not isinstance(b, float):
        return a == b
    return a == pytest.approx(b, rel=1e-9, abs=1e-6)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_book())
def test_the_maths_equal_a_plain_python_oracle_over_random_deals(book_and_prices):
    deals, prices = book_and_prices
    expected, expected_steps, expected_totals = oracle(deals, prices)
    result = positions(trades_frame(deals), prices_frame(prices), MARKETS)

    assert result.height == len(expected)
    for r in result.iter_rows(named=True):
        want = expected[(r["trader_id"], r["market"], r["delivery_start"], r["delivery_end"])]
        for column, value in want.items():
            assert close(r[column], value), (column, r, want)

    net = net_positions(result, MARKETS)
    got_steps = {(r[0], r[1], r[2]): r[5] for r in net.rows()}
    assert got_steps.keys() == expected_steps.keys()
    for key, mw in expected_steps.items():
        assert close(got_steps[key], mw), key
    assert all(
        r["delivery_end"] - r["delivery_start"] == timedelta(minutes=GRID[r["market"]])
        for r in net.iter_rows(named=True)
    )

    totals = trader_totals(result)
    assert {(r["trader_id"], r["currency"]) for r in totals.iter_rows(named=True)} == set(
        expected_totals
    )
    for r in totals.iter_rows(named=True):
        want = expected_totals[(r["trader_id"], r["currency"])]
        assert close(r["cash"], want["cash"]) and close(r["net_mwh"], want["net"])
        assert r["pnl"] is None or close(r["pnl"], want["pnl"])
