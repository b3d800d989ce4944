"""The exposure tables in a real DuckDB file, read and written through the `warehouse`
resource (dagster-duckdb): hand-computed figures, and the incremental refresh equal to a full
recompute and to the positions of every deal, whatever happened in between."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from energy_assets.exposure import store
from energy_assets.exposure.positions import (
    EXPOSURE_COLUMNS,
    PERIOD_KEY,
    daily_totals,
    market_frame,
    net_positions,
    positions,
    trader_totals,
)
from energy_assets.markets import MARKETS
from energy_assets.tables import TRADER_NET_POSITION, OutdatedTable
from tests.exposure.conftest import q
from tests.exposure.periods import PRODUCTS, local_day, utc

# Berlin in winter is UTC+1: MON 12-13 local is 11:00 UTC, TUE 08-09 is 07:00 UTC.
MON, TUE = date(2026, 2, 6), date(2026, 2, 7)
M12, M13 = "2026-02-06T11:00Z", "2026-02-06T12:00Z"
T08, T09 = "2026-02-07T07:00Z", "2026-02-07T08:00Z"
T0 = datetime(2026, 2, 6, 9, 0, tzinfo=UTC)


def refresh(warehouse, full: bool = False, at: datetime | None = None) -> store.RefreshResult:
    # Through DuckDBResource, as the asset does: this is where a duckdb/dagster-duckdb
    # mismatch (e.g. duckdb 2.0 without `.arrow()`) would surface.
    with warehouse.resource().get_connection() as conn:
        return store.refresh(conn, at or datetime.now(UTC), run_id="test", full=full)


def rows_of(warehouse, table: str) -> dict[tuple, dict]:
    with warehouse.connect() as conn:
        frame = conn.execute(f"SELECT * FROM {q(table)}").pl()
    return {
        (r["trader_id"], r["market"], r["delivery_start"], r["delivery_end"]): r
        for r in frame.with_columns(
            pl.col("delivery_start", "delivery_end").dt.convert_time_zone("UTC")
        ).iter_rows(named=True)
    }


def exposure_rows(warehouse) -> dict[tuple, dict]:
    return rows_of(warehouse, "trader_exposure")


def key(trader: str, start: str, minutes: int = 60, market: str = "DE") -> tuple:
    return (trader, market, utc(start), utc(start) + timedelta(minutes=minutes))


@pytest.fixture
def book(warehouse):
    # alice MON 12-13: buy 2 @ 50, sell 1 @ 60 -> net 1, cash -40; ref 45 -> pnl 5.
    warehouse.trade("alice", "DE", M12, 60, "buy", 2.0, 50.0)
    warehouse.trade("alice", "DE", M12, 60, "sell", 1.0, 60.0)
    # bob TUE 08-09: sell 3 @ -2 -> cash -6, net -3; ref -4 -> exposure 12, pnl 6.
    warehouse.trade("bob", "DE", T08, 60, "sell", 3.0, -2.0)
    # bob TUE 09-10: no price yet.
    warehouse.trade("bob", "DE", T09, 60, "buy", 1.0, 10.0)
    warehouse.price("DE", M12, 60, 45.0)
    warehouse.price("DE", T08, 60, -4.0)
    return warehouse


def test_tables_have_exactly_the_declared_columns(book):
    refresh(book)
    with book.connect() as conn:

        def columns(table: str) -> list[str]:
            return [r[0] for r in conn.execute(f"DESCRIBE {q(table)}").fetchall()]

        assert columns("trader_exposure") == EXPOSURE_COLUMNS
        assert columns("trader_net_position") == TRADER_NET_POSITION.column_names


def _grid(conn) -> pl.DataFrame:
    return _utc(conn.execute(f"SELECT * FROM {q('trader_net_position')}").pl()).sort(PERIOD_KEY)


def test_a_full_recompute_makes_the_grid_again_when_a_market_grid_changes(book):
    # alice's and bob's DE hours are four quarter-hours each on the grid; on an hourly grid
    # they are one step each, though no period of theirs changed.
    refresh(book)
    hourly = market_frame().with_columns(
        pl.when(pl.col("market") == "DE")
        .then(60)
        .otherwise(pl.col("grid_minutes"))
        .alias("grid_minutes")
    )
    with book.resource().get_connection() as conn:
        assert _grid(conn).height == 12
        store.refresh(conn, datetime.now(UTC), full=True, markets=hourly)
        exposure = conn.execute(f"SELECT * FROM {q('trader_exposure')}").pl()
        assert_frame_equal(_grid(conn), net_positions(exposure, hourly), check_dtypes=False)
        assert _grid(conn).height == 3


def test_a_grid_table_made_again_is_filled_whole_by_a_full_recompute(book):
    refresh(book)
    with book.connect() as conn:
        expected = _grid(conn)
        conn.execute(f"DROP TABLE {q('trader_net_position')}")
    refresh(book, full=True)
    with book.connect() as conn:
        assert_frame_equal(_grid(conn), expected)


def test_first_refresh_matches_hand_computed_figures(book):
    result = refresh(book)
    rows = exposure_rows(book)
    alice = rows[key("alice", M12)]
    assert (alice["net_mwh"], alice["cash"], alice["pnl"]) == pytest.approx((1.0, -40.0, 5.0))
    assert (alice["currency"], alice["delivery_day"]) == ("EUR", MON)
    bob = rows[key("bob", T08)]
    assert (bob["net_mwh"], bob["exposure"], bob["pnl"]) == pytest.approx((-3.0, 12.0, 6.0))
    unpriced = rows[key("bob", T09)]
    assert unpriced["reference_price"] is None and unpriced["pnl"] is None
    totals = book.query(f"SELECT trader_id, currency, pnl FROM {q('trader_exposure_totals')}")
    assert sorted(totals) == [
        ("alice", "EUR", pytest.approx(5.0)),
        ("bob", "EUR", pytest.approx(6.0)),
    ]
    assert result.days_recomputed == 2
    daily = book.query(
        f"SELECT trader_id, market, delivery_day, unpriced_periods FROM {q('trader_exposure_daily')} ORDER BY 1, 3"
    )
    assert daily == [("alice", "DE", MON, 0), ("bob", "DE", TUE, 1)]


def test_net_positions_are_stored_on_the_grid_and_replaced_with_their_day(book):
    refresh(book)
    # alice sells back the last two quarters of 12-13 (11:30 and 11:45 UTC), 1 MW each.
    for minute in (30, 45):
        book.trade("alice", "DE", f"2026-02-06T11:{minute}Z", 15, "sell", 1.0, 55.0)
    assert refresh(book).days_recomputed == 1
    nets = rows_of(book, "trader_net_position")
    alice = sorted((k[2], r["net_mw"]) for k, r in nets.items() if k[0] == "alice")
    assert alice == [
        (utc(M12) + timedelta(minutes=15 * i), mw) for i, mw in enumerate([1, 1, 0, 0])
    ]
    assert sum(r["net_mw"] for k, r in nets.items() if k[0] == "bob") == -3.0 * 4 + 1.0 * 4


def test_nothing_changed_recomputes_nothing(book):
    refresh(book)
    before = exposure_rows(book)
    again = refresh(book)
    assert again.days_recomputed == 0
    assert exposure_rows(book) == before


def test_new_trade_recomputes_only_its_day(book):
    refresh(book)
    before = exposure_rows(book)
    book.trade("alice", "DE", M13, 60, "buy", 1.0, 30.0)
    book.trade("alice", "DE", M12, 60, "sell", 1.0, 48.0)
    result = refresh(book)
    assert result.days_recomputed == 1
    after = exposure_rows(book)
    assert after[key("alice", M13)]["cash"] == pytest.approx(-30.0)
    # alice 12-13: bought 2 @ 50, sold 1 @ 60 and now 1 @ 48 -> flat, cash 8, PnL 8.
    alice = after[key("alice", M12)]
    assert (alice["trades"], alice["net_mwh"], alice["sell_vwap"]) == (3, 0.0, 54.0)
    assert alice["cash"] == pytest.approx(8.0) and alice["pnl"] == pytest.approx(8.0)
    assert after[key("bob", T08)] == before[key("bob", T08)]


def test_a_gb_deal_recomputes_only_its_market_day_in_gbp(book):
    refresh(book)
    before = exposure_rows(book)
    # London's 12:00-12:30 on MON in winter is 12:00 UTC: 4 MW @ 70 = 2 MWh, 140 GBP.
    book.trade("alice", "GB", "2026-02-06T12:00Z", 30, "buy", 4.0, 70.0)
    book.price("GB", "2026-02-06T12:00Z", 30, 75.0)
    result = refresh(book)
    assert result.days_recomputed == 1
    after = exposure_rows(book)
    gb = after[key("alice", "2026-02-06T12:00Z", 30, "GB")]
    assert (gb["currency"], gb["bought_mwh"], gb["cash"], gb["pnl"]) == (
        "GBP",
        2.0,
        -140.0,
        pytest.approx(10.0),
    )
    assert {k: v for k, v in after.items() if k[1] == "DE"} == before
    totals = {
        (r["trader_id"], r["currency"]): r["pnl"] for r in result.totals.iter_rows(named=True)
    }
    assert totals == {
        ("alice", "EUR"): pytest.approx(5.0),
        ("alice", "GBP"): pytest.approx(10.0),
        ("bob", "EUR"): pytest.approx(6.0),
    }
    history = result.history.filter(trader_id="alice", currency="GBP").row(0, named=True)
    assert history["pnl_change_trades"] == pytest.approx(10.0)


def test_late_loaded_trade_with_old_received_at_is_not_missed(book):
    refresh(book)
    # Received before the last refresh but loaded after it: a received_at watermark misses it.
    book.trade("bob", "DE", T08, 60, "buy", 1.0, -3.0, received_at=T0 - timedelta(days=30))
    result = refresh(book)
    assert result.days_recomputed == 1
    assert exposure_rows(book)[key("bob", T08)]["net_mwh"] == pytest.approx(-2.0)


def test_deal_for_an_old_delivery_day_arriving_late_is_booked(book):
    refresh(book)
    long_ago = "2025-12-01T06:00Z"
    book.trade("alice", "DE", long_ago, 60, "sell", 2.0, 30.0, received_at=T0 - timedelta(days=90))
    book.price("DE", long_ago, 60, 25.0)
    assert refresh(book).days_recomputed == 1
    # short 2 sold @ 30, reference 25: cash 60, PnL 60 - 50 = 10.
    old = exposure_rows(book)[key("alice", long_ago)]
    assert (old["cash"], old["pnl"]) == pytest.approx((60.0, 10.0))


def test_a_deal_delivering_in_2999_is_booked_on_its_own_day_and_grid(book):
    """The feed books a confirmed deal however far ahead it delivers (contract §5): its day
    is one more day, its hour four quarter-hours, nothing in between is filled in."""
    refresh(book)
    grid_rows = len(rows_of(book, "trader_net_position"))
    far = "2999-01-01T14:00Z"
    book.trade("alice", "DE", far, 60, "buy", 2.0, 40.0)
    assert refresh(book).days_recomputed == 1
    row = exposure_rows(book)[key("alice", far)]
    assert (row["net_mwh"], row["cash"], row["pnl"]) == (2.0, -80.0, None)
    nets = rows_of(book, "trader_net_position")
    assert len(nets) == grid_rows + 4
    refresh(book, full=True)
    assert exposure_rows(book)[key("alice", far)] == row


def test_a_day_whose_deals_are_gone_loses_its_rows(book):
    refresh(book)
    with book.connect() as conn:
        conn.execute(f"DELETE FROM {q('raw_trades')} WHERE delivery_day = ?", [TUE])
    result = refresh(book)
    assert result.days_recomputed == 1
    assert set(exposure_rows(book)) == {key("alice", M12)}
    assert {k[0] for k in rows_of(book, "trader_net_position")} == {"alice"}
    bob = result.history.filter(trader_id="bob").row(0, named=True)
    # bob's whole book (PnL 6 at the old prices) went away with his deals.
    assert (bob["trades"], bob["new_trades"], bob["pnl_change"]) == (0, -2, -6.0)


def test_price_revision_recomputes_only_its_day_and_is_attributed_to_prices(book):
    refresh(book)
    book.price("DE", T08, 60, -5.0)
    result = refresh(book)
    assert result.days_recomputed == 1
    # short 3, reference -4 -> -5: cash -6 + 15 = 9 (was 6).
    assert exposure_rows(book)[key("bob", T08)]["pnl"] == pytest.approx(9.0)
    history = {r["trader_id"]: r for r in result.history.iter_rows(named=True)}
    assert history["bob"]["pnl_change_prices"] == pytest.approx(3.0)
    assert history["bob"]["pnl_change_trades"] == pytest.approx(0.0)
    assert history["alice"]["pnl_change"] == 0.0


def test_a_quarter_hour_price_marks_only_the_quarter_hour(book):
    refresh(book)
    book.price("DE", M12, 15, 1000.0)  # the first quarter of alice's hour: not her product
    assert refresh(book).days_recomputed == 0
    book.trade("alice", "DE", M12, 15, "sell", 4.0, 990.0)  # 1 MWh sold at 990
    refresh(book)
    rows = exposure_rows(book)
    assert rows[key("alice", M12)]["reference_price"] == 45.0
    quarter = rows[key("alice", M12, 15)]
    assert (quarter["reference_price"], quarter["pnl"]) == (1000.0, pytest.approx(990.0 - 1000.0))


def test_every_revision_of_a_day_is_picked_up(book):
    refresh(book)
    for value in (-5.0, -6.0, -7.0):
        book.price("DE", T08, 60, value)
        assert refresh(book).days_recomputed == 1
        # short 3: cash -6 - 3 * value
        assert exposure_rows(book)[key("bob", T08)]["pnl"] == pytest.approx(-6 - 3 * value)
    book.trade("bob", "DE", T08, 60, "buy", 3.0, -7.0)
    assert refresh(book).days_recomputed == 1
    assert exposure_rows(book)[key("bob", T08)]["net_mwh"] == pytest.approx(0.0)


def test_first_price_of_a_period_fills_its_pnl(book):
    refresh(book)
    book.price("DE", T09, 60, 12.0)
    refresh(book)
    row = exposure_rows(book)[key("bob", T09)]
    assert (row["reference_price"], row["pnl"]) == pytest.approx((12.0, 2.0))


def test_refetch_with_same_value_changes_nothing(book):
    refresh(book)
    book.price("DE", M12, 60, 45.0, fetched_at=datetime.now(UTC) + timedelta(minutes=10))
    assert refresh(book).days_recomputed == 0


def test_price_on_a_day_nobody_traded_recomputes_nothing(book):
    refresh(book)
    book.price("DE", "2026-02-09T00:00Z", 60, 50.0)
    assert refresh(book).days_recomputed == 0


def test_withdrawn_price_leaves_its_period_unpriced(book):
    refresh(book)
    with book.connect() as conn:
        conn.execute(f"DELETE FROM {q('reference_prices')} WHERE delivery_start = ?", [utc(M12)])
    assert refresh(book).days_recomputed == 1
    alice = exposure_rows(book)[key("alice", M12)]
    assert alice["reference_price"] is None and alice["pnl"] is None
    assert alice["cash"] == pytest.approx(-40.0)


def test_an_hourly_price_table_from_before_periods_asks_for_a_rebuild(warehouse):
    """A `reference_prices` table of `delivery_day` + `delivery_hour` (before prices per
    period) is refused, naming the way out: `energy-assets rebuild` makes it again from the
    prices' journal, its labels read as Berlin's hours (tests/journals/test_rebuild.py)."""
    with warehouse.connect() as conn:
        conn.execute(
            f"""CREATE OR REPLACE TABLE {q("reference_prices")} (delivery_day DATE,
                delivery_hour VARCHAR, value DOUBLE, unit VARCHAR, last_update TIMESTAMPTZ,
                fetched_at TIMESTAMPTZ)"""
        )
        conn.execute(
            f"INSERT INTO {q('reference_prices')} VALUES (?, '12-13', 45.0, 'euro/mwh', ?, ?)",
            [MON, T0, T0],
        )
    warehouse.trade("alice", "DE", M12, 60, "buy", 1.0, 40.0)
    with pytest.raises(OutdatedTable, match="run `energy-assets rebuild`"):
        refresh(warehouse)


def test_history_appends_one_row_per_trader_per_refresh_and_adds_up(book):
    first = datetime(2026, 2, 6, 10, tzinfo=UTC)
    refresh(book, at=first)
    book.trade("alice", "DE", M12, 60, "buy", 1.0, 40.0)  # new trade: 1 MWh @ 40, ref 45: +5
    book.price("DE", M12, 60, 46.0)  # the old long 1 MWh gains 1
    refresh(book, at=first + timedelta(minutes=10))
    rows = book.query(
        f"""SELECT snapshot_at, trader_id, pnl, pnl_change, pnl_change_trades,
                   pnl_change_prices, new_trades FROM {q("trader_pnl_history")} ORDER BY 1, 2"""
    )
    assert [(r[0], r[1]) for r in rows] == [
        (first, "alice"),
        (first, "bob"),
        (first + timedelta(minutes=10), "alice"),
        (first + timedelta(minutes=10), "bob"),
    ]
    # First snapshot: everything is new trades.
    assert rows[0][2:6] == pytest.approx((5.0, 5.0, 5.0, 0.0))
    # Second: alice now long 2, cash -80, ref 46 -> 12. Old book at 46: -40 + 46 = 6.
    _, _, pnl, change, by_trades, by_prices, new_trades = rows[2]
    assert pnl == pytest.approx(12.0)
    assert by_prices == pytest.approx(1.0)
    assert by_trades == pytest.approx(6.0)
    assert change == pytest.approx(by_trades + by_prices)
    assert new_trades == 1


def test_missing_price_table_leaves_everything_unpriced(warehouse):
    warehouse.trade("alice", "DE", M12, 60, "buy", 1.0, 50.0)
    with warehouse.connect() as conn:
        conn.execute(f"DROP TABLE {q('reference_prices')}")
    result = refresh(warehouse)
    assert result.missing_inputs == ["energy.reference_prices"]
    row = exposure_rows(warehouse)[key("alice", M12)]
    assert row["pnl"] is None and row["cash"] == pytest.approx(-50.0)


def test_missing_trades_table_books_nothing(warehouse):
    with warehouse.connect() as conn:
        conn.execute(f"DROP TABLE {q('raw_trades')}")
    result = refresh(warehouse)
    assert result.missing_inputs == ["energy.raw_trades"]
    assert (result.days_recomputed, exposure_rows(warehouse)) == (0, {})


def test_largest_exposures_are_the_top_of_each_currency_ties_included(warehouse):
    # 14 priced DE periods over two days (more than LARGEST), sizes with ties, one unpriced;
    # and two GB periods, whose pounds are ranked apart from the euros.
    for day in ("2026-02-06", "2026-02-07"):
        for i in range(7):
            start = f"{day}T0{i}:00Z"
            warehouse.trade("alice", "DE", start, 60, "buy", 1.0 + i % 3, 40.0)
            warehouse.trade("bob", "DE", start, 60, "sell", 2.0, 41.0)
            warehouse.price("DE", start, 60, 50.0 if i % 2 else -50.0)
    warehouse.trade("carol", "DE", "2026-02-07T19:00Z", 60, "buy", 99.0, 10.0)  # no price
    for start in ("2026-02-06T10:00Z", "2026-02-06T10:30Z"):
        warehouse.trade("dave", "GB", start, 30, "buy", 1.0, 40.0)
        warehouse.price("GB", start, 30, 1.0)
    result = refresh(warehouse)
    with warehouse.connect() as conn:
        everything = conn.execute(f"SELECT * FROM {q('trader_exposure')}").pl()
    assert everything.height == 31
    expected = pl.concat(
        [_by_size(everything.filter(currency=c)).head(store.LARGEST) for c in ("EUR", "GBP")]
    )
    assert_frame_equal(result.largest, expected)
    assert result.largest.filter(currency="GBP").height == 2
    assert "carol" not in result.largest["trader_id"].to_list()


def _by_size(exposure: pl.DataFrame) -> pl.DataFrame:
    """Priced periods, largest |exposure| first, ties by period: a plain sort."""
    return (
        exposure.drop_nulls("exposure")
        .with_columns(size=pl.col("exposure").abs())
        .sort(
            ["size", "trader_id", "market", "delivery_start", "delivery_end"],
            descending=[True, False, False, False, False],
        )
        .drop("size")
    )


def test_trader_totals_are_the_totals_of_every_period(warehouse):
    for i, trader in enumerate(("alice", "bob", "carol")):
        for day in ("2026-02-06", "2026-02-07"):
            warehouse.trade(trader, "DE", f"{day}T09:00Z", 60, "buy", 1.0 + i, 40.0)
            warehouse.trade(trader, "DE", f"{day}T10:00Z", 60, "sell", 2.0, 41.0 - i)
    warehouse.trade("alice", "GB", "2026-02-06T09:00Z", 30, "sell", 2.0, 30.0)
    warehouse.price("DE", "2026-02-06T09:00Z", 60, 45.0)
    warehouse.price("DE", "2026-02-07T10:00Z", 60, -3.0)
    result = refresh(warehouse)
    with warehouse.connect() as conn:
        exposure = conn.execute(f"SELECT * FROM {q('trader_exposure')}").pl()
        stored = conn.execute(f"SELECT * FROM {q('trader_exposure_totals')} ORDER BY 1, 2").pl()
    assert_frame_equal(stored, trader_totals(exposure), check_exact=False)
    assert_frame_equal(result.totals, stored)
    # alice: MON 10-11 long 1 bought @ 40, reference 45 -> +5; TUE 11-12 short 2 sold @ 41,
    # reference -3 -> cash 82, the short worth +6: 88; the other two periods are unpriced.
    alice = stored.filter(trader_id="alice", currency="EUR").row(0, named=True)
    assert (alice["pnl"], alice["unpriced_periods"]) == pytest.approx((93.0, 2))
    pounds = stored.filter(trader_id="alice", currency="GBP").row(0, named=True)
    assert (pounds["cash"], pounds["pnl"]) == (30.0, None)


# --- incremental = full recompute = the positions of every deal -----------------------------

TRADERS = ["alice", "bob", "carol", "dave"]
#: Both DST nights of 2026 and a plain day: market days of 23, 25 and 24 hours.
STARTS = [utc("2026-03-28T22:00Z"), utc("2026-10-24T21:00Z"), utc("2026-06-01T08:00Z")]


def _random_period(rng) -> tuple[str, datetime, datetime]:
    market = rng.choice(["DE", "DE", "GB"])
    minutes = rng.choice(PRODUCTS[market])
    start = rng.choice(STARTS) + timedelta(minutes=minutes * rng.randrange(6 * 60 // minutes))
    return market, start, start + timedelta(minutes=minutes)


def _random_step(conn, rng, step: int) -> None:
    """One thing that happens to the upstream tables between two refreshes."""
    kind = rng.choice(["deals", "deals", "late", "revision", "revision", "refetch", "withdrawn"])
    now = T0 + timedelta(minutes=10 * step)
    if kind in ("deals", "late"):
        # A late load: deals received long before the last refresh.
        received = now - timedelta(days=60) if kind == "late" else now
        for _ in range(rng.randint(1, 6)):
            market, start, end = _random_period(rng)
            conn.execute(
                f"""INSERT INTO {q("raw_trades")} (id, price, quantity, direction, delivery_day,
                    delivery_hour, trader_id, execution_time, market, delivery_start,
                    delivery_end, after_gate_closure, received_at, segment)
                    VALUES (?, ?, ?, ?, ?, '00-01', ?, ?, ?, ?, ?, false, ?, 's')""",
                [
                    uuid.uuid4().hex,
                    round(rng.uniform(-20, 120), 2),
                    round(rng.uniform(0.1, 5), 1),
                    rng.choice(["buy", "sell"]),
                    local_day(market, start),
                    rng.choice(TRADERS),
                    received,
                    market,
                    start,
                    end,
                    received,
                ],
            )
        return
    market, start, end = _random_period(rng)
    where = (
        f"FROM {q('reference_prices')} WHERE market = ? AND delivery_start = ? AND delivery_end = ?"
    )
    current = conn.execute(f"SELECT value {where}", [market, start, end]).fetchone()
    if kind == "refetch":
        value = current[0] if current else None
    elif kind == "withdrawn":
        value = None
    else:
        value = round(rng.uniform(-30, 150), 2)
    conn.execute(f"DELETE {where}", [market, start, end])
    if value is not None:
        conn.execute(
            f"""INSERT INTO {q("reference_prices")} (market, delivery_start, delivery_end, value,
                currency, last_update, fetched_at) VALUES (?, ?, ?, ?, ?, ?, ?)""",
            [market, start, end, value, MARKETS[market].currency, now, now],
        )


def _utc(frame: pl.DataFrame) -> pl.DataFrame:
    instants = [c for c in ("delivery_start", "delivery_end", "snapshot_at") if c in frame.columns]
    return frame.with_columns(pl.col(instants).dt.convert_time_zone("UTC"))


def _tables(conn) -> dict[str, pl.DataFrame]:
    def read(table: str, key: list[str]) -> pl.DataFrame:
        return _utc(conn.execute(f"SELECT * FROM {q(table)}").pl()).sort(key)

    return {
        "exposure": read("trader_exposure", PERIOD_KEY),
        "net": read("trader_net_position", PERIOD_KEY),
        "daily": read("trader_exposure_daily", ["trader_id", "market", "delivery_day"]),
        "totals": read("trader_exposure_totals", ["trader_id", "currency"]),
    }


def _from_every_deal(conn) -> dict[str, pl.DataFrame]:
    """The tables as the positions maths makes them from every deal and the latest prices."""
    deals = conn.execute(f"SELECT * FROM {q('raw_trades')}").pl()
    prices = conn.execute(
        f"""SELECT market, delivery_start, delivery_end, value AS reference_price
            FROM {q("reference_prices")} WHERE value IS NOT NULL"""
    ).pl()
    exposure = positions(deals, prices)
    return {
        "exposure": exposure,
        "net": net_positions(exposure),
        "daily": daily_totals(exposure),
        "totals": trader_totals(exposure),
    }


def _assert_same(got: dict[str, pl.DataFrame], expected: dict[str, pl.DataFrame]) -> None:
    for name, frame in expected.items():
        assert_frame_equal(got[name], frame, check_exact=False, check_dtypes=False)


# One history in `make test-fast`, two in `make test` (24 refreshes each, ~10 s).
@pytest.mark.parametrize("seed", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_incremental_refresh_equals_a_full_recompute_over_random_histories(warehouse, seed):
    rng = random.Random(seed)
    # A book to start from: every trader in a few periods, some of them priced.
    with warehouse.connect() as conn:
        for step in range(6):
            _random_step(conn, rng, step)
    pnl_moves: dict[tuple, float] = {}
    # One connection throughout: the test is about the data, not about opening the file.
    with warehouse.connect() as conn:
        for step in range(6, 30):
            result = store.refresh(conn, T0 + timedelta(minutes=10 * step))
            _assert_same(_tables(conn), _from_every_deal(conn))
            for row in result.history.iter_rows(named=True):
                parts = row["pnl_change_trades"] + row["pnl_change_prices"]
                assert parts == pytest.approx(row["pnl_change"], abs=1e-6)
                book = (row["trader_id"], row["currency"])
                pnl_moves[book] = pnl_moves.get(book, 0.0) + parts
                # Every PnL move of the history adds up to the PnL now, in each currency.
                assert pnl_moves[book] == pytest.approx(row["pnl"] or 0.0, abs=1e-6)
            _random_step(conn, rng, step)
        store.refresh(conn, T0 + timedelta(hours=5))
        incremental = _tables(conn)
        days = conn.execute(
            f"SELECT count(DISTINCT (market, delivery_day)) FROM {q('raw_trades')}"
        ).fetchone()[0]
        assert store.refresh(conn, T0 + timedelta(hours=6), full=True).days_recomputed == days
        _assert_same(_tables(conn), incremental)


def test_a_warehouse_from_before_markets_comes_to_the_new_shape(warehouse):
    """The hourly, euro-only tables of an older version: the derived ones are made again by
    the next refresh, the PnL history keeps its rows, in EUR."""
    with warehouse.connect() as conn:
        conn.execute(
            f"""CREATE TABLE {q("trader_exposure")} (trader_id VARCHAR, delivery_day DATE,
                delivery_hour VARCHAR, trades BIGINT, cash_eur DOUBLE, pnl_eur DOUBLE)"""
        )
        conn.execute(
            f"INSERT INTO {q('trader_exposure')} VALUES ('old', ?, '01-02', 1, 1, 1)", [MON]
        )
        conn.execute(
            f"""CREATE TABLE {q("trader_pnl_history")} (snapshot_at TIMESTAMPTZ, run_id VARCHAR,
                trader_id VARCHAR, trades BIGINT, net_mwh DOUBLE, cash_eur DOUBLE, pnl_eur DOUBLE,
                exposure_eur DOUBLE, gross_exposure_eur DOUBLE, unpriced_periods BIGINT,
                new_trades BIGINT, pnl_change_eur DOUBLE, pnl_change_trades_eur DOUBLE,
                pnl_change_prices_eur DOUBLE, days_recomputed BIGINT)"""
        )
        conn.execute(
            f"""INSERT INTO {q("trader_pnl_history")}
                VALUES (?, 'r0', 'alice', 1, 1, -40, 3, 43, 43, 0, 1, 3, 3, 0, 1)""",
            [T0],
        )
    warehouse.trade("alice", "DE", M12, 60, "buy", 1.0, 40.0)
    warehouse.price("DE", M12, 60, 45.0)
    result = refresh(warehouse)
    assert result.days_recomputed == 1
    assert set(exposure_rows(warehouse)) == {key("alice", M12)}
    history = warehouse.query(
        f"SELECT run_id, currency, pnl FROM {q('trader_pnl_history')} ORDER BY snapshot_at"
    )
    assert history == [("r0", "EUR", 3.0), ("test", "EUR", 5.0)]
    assert refresh(warehouse).days_recomputed == 0
