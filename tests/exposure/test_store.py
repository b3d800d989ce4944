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
    positions,
    trader_totals,
)
from energy_assets.markets import hour_period
from tests.exposure.conftest import q

MON = date(2023, 2, 6)
TUE = date(2023, 2, 7)
T0 = datetime(2023, 2, 6, 9, 0, tzinfo=UTC)


def refresh(warehouse, full: bool = False, at: datetime | None = None) -> store.RefreshResult:
    # Through DuckDBResource, as the asset does: this is where a duckdb/dagster-duckdb
    # mismatch (e.g. duckdb 2.0 without `.arrow()`) would surface.
    with warehouse.resource().get_connection() as conn:
        return store.refresh(conn, at or datetime.now(UTC), run_id="test", full=full)


def exposure_rows(warehouse) -> dict[tuple, dict]:
    with warehouse.connect() as conn:
        cursor = conn.execute(f"SELECT * FROM {q('trader_exposure')}")
        names = [d[0] for d in cursor.description]
        rows = [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
    return {(r["trader_id"], r["delivery_day"], r["delivery_hour"]): r for r in rows}


@pytest.fixture
def book(warehouse):
    # alice MON 12-13: buy 2 @ 50, sell 1 @ 60 -> net 1, cash -40; ref 45 -> pnl 5.
    warehouse.trade("alice", MON, "12-13", "buy", 2.0, 50.0)
    warehouse.trade("alice", MON, "12-13", "sell", 1.0, 60.0)
    # bob TUE 08-09: sell 3 @ -2 -> cash -6, net -3; ref -4 -> exposure 12, pnl 6.
    warehouse.trade("bob", TUE, "08-09", "sell", 3.0, -2.0)
    # bob TUE 09-10: no price yet.
    warehouse.trade("bob", TUE, "09-10", "buy", 1.0, 10.0)
    warehouse.price(MON, "12-13", 45.0)
    warehouse.price(TUE, "08-09", -4.0)
    return warehouse


def test_table_has_exactly_the_contract_columns(book):
    refresh(book)
    with book.connect() as conn:
        columns = [r[0] for r in conn.execute(f"DESCRIBE {q('trader_exposure')}").fetchall()]
    assert columns == EXPOSURE_COLUMNS


def test_first_refresh_matches_hand_computed_figures(book):
    result = refresh(book)
    rows = exposure_rows(book)
    alice = rows[("alice", MON, "12-13")]
    assert (alice["net_mwh"], alice["cash_eur"], alice["pnl_eur"]) == pytest.approx(
        (1.0, -40.0, 5.0)
    )
    bob = rows[("bob", TUE, "08-09")]
    assert (bob["net_mwh"], bob["exposure_eur"], bob["pnl_eur"]) == pytest.approx((-3.0, 12.0, 6.0))
    unpriced = rows[("bob", TUE, "09-10")]
    assert unpriced["reference_price"] is None and unpriced["pnl_eur"] is None
    totals = dict(book.query(f"SELECT trader_id, pnl_eur FROM {q('trader_exposure_totals')}"))
    assert totals == pytest.approx({"alice": 5.0, "bob": 6.0})
    assert result.days_recomputed == 2
    daily = book.query(
        f"SELECT trader_id, delivery_day, unpriced_periods FROM {q('trader_exposure_daily')} ORDER BY 1, 2"
    )
    assert daily == [("alice", MON, 0), ("bob", TUE, 1)]


def test_nothing_changed_recomputes_nothing(book):
    refresh(book)
    before = exposure_rows(book)
    again = refresh(book)
    assert again.days_recomputed == 0
    assert exposure_rows(book) == before


def test_new_trade_recomputes_only_its_day(book):
    refresh(book)
    before = exposure_rows(book)
    book.trade("alice", MON, "13-14", "buy", 1.0, 30.0)
    book.trade("alice", MON, "12-13", "sell", 1.0, 48.0)
    result = refresh(book)
    assert result.days_recomputed == 1
    after = exposure_rows(book)
    assert after[("alice", MON, "13-14")]["cash_eur"] == pytest.approx(-30.0)
    # alice 12-13: bought 2 @ 50, sold 1 @ 60 and now 1 @ 48 -> flat, cash 8, PnL 8.
    alice = after[("alice", MON, "12-13")]
    assert (alice["trades"], alice["net_mwh"], alice["sell_vwap"]) == (3, 0.0, 54.0)
    assert alice["cash_eur"] == pytest.approx(8.0) and alice["pnl_eur"] == pytest.approx(8.0)
    assert after[("bob", TUE, "08-09")] == before[("bob", TUE, "08-09")]


def test_late_loaded_trade_with_old_received_at_is_not_missed(book):
    refresh(book)
    # Received before the last refresh but loaded after it: a received_at watermark misses it.
    book.trade("bob", TUE, "08-09", "buy", 1.0, -3.0, received_at=T0 - timedelta(days=30))
    result = refresh(book)
    assert result.days_recomputed == 1
    assert exposure_rows(book)[("bob", TUE, "08-09")]["net_mwh"] == pytest.approx(-2.0)


def test_deal_for_an_old_delivery_day_arriving_late_is_booked(book):
    refresh(book)
    long_ago = date(2022, 12, 1)
    book.trade("alice", long_ago, "07-08", "sell", 2.0, 30.0, received_at=T0 - timedelta(days=90))
    book.price(long_ago, "07-08", 25.0)
    assert refresh(book).days_recomputed == 1
    # short 2 sold @ 30, reference 25: cash 60, PnL 60 - 50 = 10.
    old = exposure_rows(book)[("alice", long_ago, "07-08")]
    assert (old["cash_eur"], old["pnl_eur"]) == pytest.approx((60.0, 10.0))


def test_a_day_whose_deals_are_gone_loses_its_rows(book):
    refresh(book)
    with book.connect() as conn:
        conn.execute(f"DELETE FROM {q('raw_trades')} WHERE delivery_day = ?", [TUE])
    result = refresh(book)
    assert result.days_recomputed == 1
    assert set(exposure_rows(book)) == {("alice", MON, "12-13")}
    bob = result.history.filter(trader_id="bob").row(0, named=True)
    # bob's whole book (PnL 6 at the old prices) went away with his deals.
    assert (bob["trades"], bob["new_trades"], bob["pnl_change_eur"]) == (0, -2, -6.0)


def test_price_revision_recomputes_only_its_day_and_is_attributed_to_prices(book):
    refresh(book)
    book.price(TUE, "08-09", -5.0)
    result = refresh(book)
    assert result.days_recomputed == 1
    bob = exposure_rows(book)[("bob", TUE, "08-09")]
    # short 3, reference -4 -> -5: cash -6 + 15 = 9 (was 6).
    assert bob["pnl_eur"] == pytest.approx(9.0)
    history = {r["trader_id"]: r for r in result.history.iter_rows(named=True)}
    assert history["bob"]["pnl_change_prices_eur"] == pytest.approx(3.0)
    assert history["bob"]["pnl_change_trades_eur"] == pytest.approx(0.0)
    assert history["alice"]["pnl_change_eur"] == 0.0


def test_every_revision_of_a_day_is_picked_up(book):
    refresh(book)
    for value in (-5.0, -6.0, -7.0):
        book.price(TUE, "08-09", value)
        assert refresh(book).days_recomputed == 1
        # short 3: cash -6 - 3 * value
        assert exposure_rows(book)[("bob", TUE, "08-09")]["pnl_eur"] == pytest.approx(
            -6 - 3 * value
        )
    book.trade("bob", TUE, "08-09", "buy", 3.0, -7.0)
    assert refresh(book).days_recomputed == 1
    assert exposure_rows(book)[("bob", TUE, "08-09")]["net_mwh"] == pytest.approx(0.0)


def test_first_price_of_an_hour_fills_its_pnl(book):
    refresh(book)
    book.price(TUE, "09-10", 12.0)
    refresh(book)
    row = exposure_rows(book)[("bob", TUE, "09-10")]
    assert (row["reference_price"], row["pnl_eur"]) == pytest.approx((12.0, 2.0))


def test_refetch_with_same_value_changes_nothing(book):
    refresh(book)
    book.price(MON, "12-13", 45.0, fetched_at=datetime.now(UTC) + timedelta(minutes=10))
    assert refresh(book).days_recomputed == 0


def test_price_on_a_day_nobody_traded_recomputes_nothing(book):
    refresh(book)
    book.price(date(2023, 2, 9), "00-01", 50.0)
    assert refresh(book).days_recomputed == 0


def test_withdrawn_price_leaves_its_hour_unpriced(book):
    refresh(book)
    with book.connect() as conn:
        conn.execute(f"DELETE FROM {q('reference_prices')} WHERE delivery_day = ?", [MON])
    assert refresh(book).days_recomputed == 1
    alice = exposure_rows(book)[("alice", MON, "12-13")]
    assert alice["reference_price"] is None and alice["pnl_eur"] is None
    assert alice["cash_eur"] == pytest.approx(-40.0)


def test_history_appends_one_row_per_trader_per_refresh_and_adds_up(book):
    first = datetime(2023, 2, 6, 10, tzinfo=UTC)
    refresh(book, at=first)
    book.trade("alice", MON, "12-13", "buy", 1.0, 40.0)  # new trade: 1 MWh @ 40, ref 45: +5
    book.price(MON, "12-13", 46.0)  # the old long 1 MWh gains 1
    refresh(book, at=first + timedelta(minutes=10))
    rows = book.query(
        f"""SELECT snapshot_at, trader_id, pnl_eur, pnl_change_eur, pnl_change_trades_eur,
                   pnl_change_prices_eur, new_trades FROM {q("trader_pnl_history")} ORDER BY 1, 2"""
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
    warehouse.trade("alice", MON, "12-13", "buy", 1.0, 50.0)
    with warehouse.connect() as conn:
        conn.execute(f"DROP TABLE {q('reference_prices')}")
    result = refresh(warehouse)
    assert result.missing_inputs == ["energy.reference_prices"]
    row = exposure_rows(warehouse)[("alice", MON, "12-13")]
    assert row["pnl_eur"] is None and row["cash_eur"] == pytest.approx(-50.0)


def test_missing_trades_table_books_nothing(warehouse):
    with warehouse.connect() as conn:
        conn.execute(f"DROP TABLE {q('raw_trades')}")
    result = refresh(warehouse)
    assert result.missing_inputs == ["energy.raw_trades"]
    assert (result.days_recomputed, exposure_rows(warehouse)) == (0, {})


def test_largest_exposures_are_the_top_of_the_whole_table_ties_included(warehouse):
    # 14 priced periods over two days (more than LARGEST), sizes with ties, one unpriced.
    hours = [f"{h:02d}-{h + 1:02d}" for h in range(7)]
    for day in (MON, TUE):
        for i, hour in enumerate(hours):
            warehouse.trade("alice", day, hour, "buy", 1.0 + i % 3, 40.0)
            warehouse.trade("bob", day, hour, "sell", 2.0, 41.0)
            warehouse.price(day, hour, 50.0 if i % 2 else -50.0)
    warehouse.trade("carol", TUE, "20-21", "buy", 99.0, 10.0)  # no price: never "largest"
    result = refresh(warehouse)
    with warehouse.connect() as conn:
        everything = conn.execute(f"SELECT * FROM {q('trader_exposure')}").pl()
    assert everything.height == 29 and result.largest.height == store.LARGEST
    assert_frame_equal(result.largest, _largest_by_sort(everything))
    assert "carol" not in result.largest["trader_id"].to_list()


def _by_size(exposure: pl.DataFrame) -> pl.DataFrame:
    """Priced periods, largest |exposure| first, ties by period: a plain sort."""
    return (
        exposure.drop_nulls("exposure_eur")
        .with_columns(size=pl.col("exposure_eur").abs())
        .sort(
            ["size", "trader_id", "delivery_day", "delivery_hour"],
            descending=[True, False, False, False],
        )
        .drop("size")
    )


def _largest_by_sort(exposure: pl.DataFrame) -> pl.DataFrame:
    return _by_size(exposure).head(store.LARGEST)


def test_trader_totals_are_the_totals_of_every_period(warehouse):
    for i, trader in enumerate(("alice", "bob", "carol")):
        for day in (MON, TUE):
            warehouse.trade(trader, day, "10-11", "buy", 1.0 + i, 40.0)
            warehouse.trade(trader, day, "11-12", "sell", 2.0, 41.0 - i)
    warehouse.price(MON, "10-11", 45.0)
    warehouse.price(TUE, "11-12", -3.0)
    result = refresh(warehouse)
    with warehouse.connect() as conn:
        exposure = conn.execute(f"SELECT * FROM {q('trader_exposure')}").pl()
        stored = conn.execute(f"SELECT * FROM {q('trader_exposure_totals')} ORDER BY 1").pl()
    assert_frame_equal(stored, trader_totals(exposure), check_exact=False)
    assert_frame_equal(result.totals, stored)
    # alice: MON 10-11 long 1 bought @ 40, reference 45 -> +5; TUE 11-12 short 2 sold @ 41,
    # reference -3 -> cash 82, the short worth +6: 88; the other two periods are unpriced.
    alice = stored.row(0, named=True)
    assert (alice["pnl_eur"], alice["unpriced_periods"]) == pytest.approx((93.0, 2))


# --- incremental = full recompute = the positions of every deal -----------------------------

TRADERS = ["alice", "bob", "carol", "dave"]
HOURS = [f"{h:02d}-{h + 1:02d}" for h in range(8, 14)]
DAYS = [MON + timedelta(days=d) for d in range(5)]


def _random_step(conn, rng, step: int) -> None:
    """One thing that happens to the upstream tables between two refreshes."""
    kind = rng.choice(["deals", "deals", "late", "revision", "revision", "refetch", "withdrawn"])
    now = T0 + timedelta(minutes=10 * step)
    if kind in ("deals", "late"):
        # A late load: deals for the oldest days, received long before the last refresh.
        days, received = (DAYS[:2], now - timedelta(days=60)) if kind == "late" else (DAYS, now)
        for _ in range(rng.randint(1, 6)):
            deal_id, price = uuid.uuid4().hex, round(rng.uniform(-20, 120), 2)
            quantity, direction = round(rng.uniform(0.1, 5), 1), rng.choice(["buy", "sell"])
            deal_day, deal_hour = rng.choice(days), rng.choice(HOURS)
            period = hour_period("DE", deal_day, deal_hour)
            conn.execute(
                f"INSERT INTO {q('raw_trades')} (id, price, quantity, direction, delivery_day, "
                "delivery_hour, trader_id, execution_time, received_at, segment, market, "
                "delivery_start, delivery_end, after_gate_closure) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 's', 'DE', ?, ?, false)",
                [
                    deal_id,
                    price,
                    quantity,
                    direction,
                    deal_day,
                    deal_hour,
                    rng.choice(TRADERS),
                    received,
                    received,
                    period.delivery_start,
                    period.delivery_end,
                ],
            )
        return
    day, hour = rng.choice(DAYS), rng.choice(HOURS)
    current = conn.execute(
        f"SELECT value FROM {q('reference_prices')} WHERE delivery_day = ? AND delivery_hour = ?",
        [day, hour],
    ).fetchone()
    if kind == "refetch":
        value = current[0] if current else None
    elif kind == "withdrawn":
        value = None
    else:
        value = round(rng.uniform(-30, 150), 2)
    conn.execute(
        f"DELETE FROM {q('reference_prices')} WHERE delivery_day = ? AND delivery_hour = ?",
        [day, hour],
    )
    if value is not None:
        conn.execute(
            f"INSERT INTO {q('reference_prices')} VALUES (?, ?, ?, 'euro/mwh', ?, ?)",
            [day, hour, value, now, now],
        )


def _tables(conn) -> dict[str, pl.DataFrame]:
    def read(table: str, key: list[str]) -> pl.DataFrame:
        return conn.execute(f"SELECT * FROM {q(table)}").pl().sort(key)

    return {
        "exposure": read("trader_exposure", PERIOD_KEY),
        "daily": read("trader_exposure_daily", ["trader_id", "delivery_day"]),
        "totals": read("trader_exposure_totals", ["trader_id"]),
    }


def _from_every_deal(conn) -> dict[str, pl.DataFrame]:
    """The tables as the positions maths makes them from every deal and the latest prices."""
    deals = conn.execute(f"SELECT * FROM {q('raw_trades')}").pl()
    prices = conn.execute(
        f"""SELECT delivery_day, delivery_hour, value AS reference_price
            FROM {q("reference_prices")} WHERE value IS NOT NULL"""
    ).pl()
    exposure = positions(deals, prices)
    return {
        "exposure": exposure,
        "daily": daily_totals(exposure),
        "totals": trader_totals(exposure),
    }


def _assert_same(got: dict[str, pl.DataFrame], expected: dict[str, pl.DataFrame]) -> None:
    for name, frame in expected.items():
        assert_frame_equal(got[name], frame, check_exact=False, check_dtypes=False)


# One history in `make test-fast`, all four in `make test`.
@pytest.mark.parametrize(
    "seed", [1, *(pytest.param(seed, marks=pytest.mark.slow) for seed in (2, 3, 4))]
)
def test_incremental_refresh_equals_a_full_recompute_over_random_histories(warehouse, seed):
    rng = random.Random(seed)
    # A book to start from: every trader in a few periods, some of them priced.
    with warehouse.connect() as conn:
        for step in range(3):
            _random_step(conn, rng, step)
        for day in DAYS:
            for hour in rng.sample(HOURS, 3):
                conn.execute(
                    f"INSERT INTO {q('reference_prices')} VALUES (?, ?, ?, 'euro/mwh', ?, ?)",
                    [day, hour, round(rng.uniform(0, 100), 2), T0, T0],
                )
    pnl_moves: dict[str, float] = {}
    # One connection throughout: the test is about the data, not about opening the file.
    with warehouse.connect() as conn:
        for step in range(3, 28):
            result = store.refresh(conn, T0 + timedelta(minutes=10 * step))
            _assert_same(_tables(conn), _from_every_deal(conn))
            for row in result.history.iter_rows(named=True):
                parts = row["pnl_change_trades_eur"] + row["pnl_change_prices_eur"]
                assert parts == pytest.approx(row["pnl_change_eur"], abs=1e-6)
                pnl_moves[row["trader_id"]] = pnl_moves.get(row["trader_id"], 0.0) + parts
                # Every PnL move of the history adds up to the PnL now.
                assert pnl_moves[row["trader_id"]] == pytest.approx(row["pnl_eur"] or 0.0, abs=1e-6)
            _random_step(conn, rng, step)
        store.refresh(conn, T0 + timedelta(hours=5))
        incremental = _tables(conn)
        assert store.refresh(conn, T0 + timedelta(hours=6), full=True).days_recomputed == len(DAYS)
        _assert_same(_tables(conn), incremental)
