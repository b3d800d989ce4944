"""The exposure tables in a real DuckDB file, read and written through the `warehouse`
resource (dagster-duckdb), recomputing only the delivery days that changed."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from energy_assets.exposure import store
from energy_assets.exposure.positions import EXPOSURE_COLUMNS, LEG_KEY, legs
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
    again = refresh(book)
    assert again.days_recomputed == 0
    assert again.trades_read == 0
    assert len(exposure_rows(book)) == 3


def test_new_trade_recomputes_only_its_day(book):
    refresh(book)
    before = exposure_rows(book)
    book.trade("alice", MON, "13-14", "buy", 1.0, 30.0)
    book.trade("alice", MON, "12-13", "sell", 1.0, 48.0)
    result = refresh(book)
    assert result.detection == "watermark"
    assert result.days_recomputed == 1
    # Only the new deals are read: MON's earlier ones are in its exposure rows.
    assert result.trades_read == 2
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
    # The row count gives it away, and the per-day scan finds its day.
    assert result.detection == "scan"
    assert result.days_recomputed == 1
    assert exposure_rows(book)[("bob", TUE, "08-09")]["net_mwh"] == pytest.approx(-2.0)


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


def test_incremental_equals_full_recompute(book):
    refresh(book)
    book.trade("carol", TUE, "08-09", "buy", 2.5, -1.0)
    book.price(MON, "12-13", 47.5)
    refresh(book)

    def tables():
        return [
            sorted(book.query(f"SELECT * FROM {q(name)}"), key=str)
            for name in ("trader_exposure_daily", "trader_exposure_totals")
        ]

    incremental, incremental_totals = exposure_rows(book), tables()
    full = refresh(book, full=True)
    assert full.days_recomputed == 2
    assert exposure_rows(book) == incremental
    assert tables() == incremental_totals


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
    assert result.missing_inputs == [store.REFERENCE_PRICES]
    row = exposure_rows(warehouse)[("alice", MON, "12-13")]
    assert row["pnl_eur"] is None and row["cash_eur"] == pytest.approx(-50.0)


def test_legs_summed_in_sql_equal_the_polars_legs(book):
    book.trade("alice", MON, "12-13", "buy", 0.3, -7.25)
    with book.connect() as conn:
        tables = store.Tables.of(conn)
        sql = store.read_legs(conn, tables, [MON, TUE]).sort(LEG_KEY)
        trades = conn.execute(f"SELECT * FROM {q('raw_trades')}").pl()
    assert_frame_equal(sql, legs(trades).collect().sort(LEG_KEY), check_exact=False)


def test_marks_kept_on_the_fast_path_match_a_scan(book):
    refresh(book)
    book.trade("alice", MON, "12-13", "buy", 1.0, 41.0)
    book.trade("carol", date(2023, 2, 8), "00-01", "sell", 1.0, 3.0)
    assert refresh(book).detection == "watermark"

    def marks_and_scan(conn) -> tuple[list, list]:
        marks = f"SELECT * FROM {q('trader_exposure_trade_marks')} ORDER BY 1"
        scan = f"SELECT delivery_day, count(*), max(received_at) FROM {q('raw_trades')} GROUP BY 1"
        return conn.execute(marks).fetchall(), conn.execute(scan + " ORDER BY 1").fetchall()

    with book.connect() as conn:
        kept, scanned = marks_and_scan(conn)
        assert kept == scanned and len(kept) == 3
        # A lost mark: the row counts no longer add up, the refresh scans, and recomputes
        # exactly the day whose mark differs.
        conn.execute(
            f"DELETE FROM {q('trader_exposure_trade_marks')} WHERE delivery_day = ?", [TUE]
        )
    rescan = refresh(book)
    assert (rescan.detection, rescan.days_recomputed, rescan.trade_days_changed) == ("scan", 1, 1)
    with book.connect() as conn:
        kept, scanned = marks_and_scan(conn)
    assert kept == scanned


def test_database_from_before_the_marks_held_the_watermark_loses_its_state_table(book):
    refresh(book)
    with book.connect() as conn:
        conn.execute(
            f"""CREATE TABLE {q("trader_exposure_state")} (
                trades_total BIGINT, received_watermark TIMESTAMPTZ, refreshed_at TIMESTAMPTZ)"""
        )
    book.trade("alice", TUE, "12-13", "buy", 1.0, 41.0)
    # The marks alone say what the previous refresh used: the usual path as before.
    update = refresh(book)
    assert (update.detection, update.days_recomputed) == ("watermark", 1)
    refresh(book, full=True)
    with book.connect() as conn:
        tables = conn.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'trader_exposure_state'"
        ).fetchone()
    assert tables == (0,)


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


def _per_day_top(exposure: pl.DataFrame) -> pl.DataFrame:
    """The plain definition of `trader_exposure_top`: each day's LARGEST by |exposure|."""
    return (
        _by_size(exposure)
        .group_by("delivery_day", maintain_order=True)
        .head(store.LARGEST)
        .select(EXPOSURE_COLUMNS)
        .sort("trader_id", "delivery_day", "delivery_hour")
    )


def _largest_by_sort(exposure: pl.DataFrame) -> pl.DataFrame:
    return _by_size(exposure).head(store.LARGEST)


def _assert_top_is_plain_sort(warehouse, result: store.RefreshResult) -> None:
    with warehouse.connect() as conn:
        everything = conn.execute(f"SELECT * FROM {q('trader_exposure')}").pl()
        top = conn.execute(
            f"SELECT * FROM {q('trader_exposure_top')} ORDER BY trader_id, delivery_day, delivery_hour"
        ).pl()
    assert_frame_equal(top, _per_day_top(everything))
    assert_frame_equal(result.largest, _largest_by_sort(everything))


@pytest.fixture
def many_days(warehouse):
    # Three days of 12 priced hours (more than LARGEST a day), sizes with ties, one unpriced.
    for d, day in enumerate((MON, TUE, date(2023, 2, 8))):
        for i in range(12):
            hour = f"{i:02d}-{i + 1:02d}"
            warehouse.trade("alice", day, hour, "buy", 1.0 + (i + d) % 4, 40.0)
            warehouse.trade("bob", day, hour, "sell", 2.0, 41.0)
            warehouse.price(day, hour, 50.0 if i % 2 else -50.0)
        warehouse.trade("carol", day, "20-21", "buy", 99.0, 10.0)
    return warehouse


def test_top_table_stays_each_days_largest_through_updates_and_revisions(many_days):
    _assert_top_is_plain_sort(many_days, refresh(many_days))
    # A trade that makes a new largest position, on one day only.
    many_days.trade("dave", TUE, "03-04", "buy", 50.0, 45.0)
    result = refresh(many_days)
    assert result.days_recomputed == 1 and result.detection == "watermark"
    _assert_top_is_plain_sort(many_days, result)
    assert result.largest.row(0, named=True)["trader_id"] == "dave"
    # A revision that shrinks it again, and the first price of an unpriced hour.
    many_days.price(TUE, "03-04", 0.5)
    many_days.price(MON, "20-21", 3.0)
    result = refresh(many_days)
    assert result.days_recomputed == 2
    _assert_top_is_plain_sort(many_days, result)
    assert "dave" not in result.largest["trader_id"].to_list()
    # The trade that flattens a day's position drops it from the top.
    many_days.trade("dave", TUE, "03-04", "sell", 50.0, 45.0)
    _assert_top_is_plain_sort(many_days, refresh(many_days))
    _assert_top_is_plain_sort(many_days, refresh(many_days))  # nothing changed
    _assert_top_is_plain_sort(many_days, refresh(many_days, full=True))


def test_database_from_before_the_top_table_gets_it_filled(many_days):
    refresh(many_days)
    with many_days.connect() as conn:
        conn.execute(f"DROP TABLE {q('trader_exposure_top')}")
    # Nothing changed since: the refresh recomputes no day, and still finds the largest.
    result = refresh(many_days)
    assert result.days_recomputed == 0
    _assert_top_is_plain_sort(many_days, result)
    many_days.trade("dave", MON, "05-06", "sell", 30.0, 45.0)
    _assert_top_is_plain_sort(many_days, refresh(many_days))


def test_full_recompute_rebuilds_the_top_table(many_days):
    refresh(many_days)
    with many_days.connect() as conn:
        conn.execute(f"DELETE FROM {q('trader_exposure_top')}")
        conn.execute(f"INSERT INTO {q('trader_exposure_top')} SELECT * FROM {q('trader_exposure')}")
        # A stray row of a day without trades, larger than anything real.
        conn.execute(
            f"""INSERT INTO {q("trader_exposure_top")} SELECT * REPLACE (
                    DATE '2023-03-01' AS delivery_day, 1e9 AS exposure_eur)
                FROM {q("trader_exposure")} LIMIT 1"""
        )
    _assert_top_is_plain_sort(many_days, refresh(many_days, full=True))


def test_frames_written_as_literals_keep_every_value_exactly(warehouse):
    floats = [0.1 + 0.2, -0.0, 5e-324, 1.7976931348623157e308, 1e16, float("inf"), float("nan")]
    frame = pl.DataFrame(
        {
            "trader_id": ["o'brien", None, "x", "y", "z", "w", "v"],
            "delivery_day": [MON, TUE, None, MON, MON, MON, MON],
            "trades": [1, None, -(2**62), 0, 3, 4, 5],
            "exposure_eur": floats,
            "snapshot_at": [T0, None, T0, T0, T0, T0, T0],
        },
        schema_overrides={"snapshot_at": pl.Datetime("us", "UTC")},
    )
    columns = frame.columns
    with warehouse.connect() as conn:
        conn.execute(
            """CREATE TABLE literals (trader_id VARCHAR, delivery_day DATE, trades BIGINT,
               exposure_eur DOUBLE, snapshot_at TIMESTAMPTZ)"""
        )
        conn.execute(f"INSERT INTO literals {store._values(frame, columns)}")
        back = conn.execute("SELECT * FROM literals").pl()
    back = back.with_columns(pl.col("snapshot_at").dt.convert_time_zone("UTC"))
    assert_frame_equal(back, frame, check_exact=True)
    # Bit for bit: -0.0 stays negative, the subnormal stays itself.
    assert [str(v) for v in back["exposure_eur"]] == [str(v) for v in floats]


def test_trader_totals_are_the_roll_up_of_the_daily_totals_old_databases_included(many_days):
    result = refresh(many_days)
    expected = result.totals.sort("trader_id")

    def stored() -> pl.DataFrame:
        with many_days.connect() as conn:
            return conn.execute(f"SELECT * FROM {q('trader_exposure_totals')}").pl()

    assert_frame_equal(stored(), expected, check_exact=False)
    # A database from before: totals were a table written by each refresh, and there was no
    # top table. The next refresh turns the totals into the view, whatever the table held.
    with many_days.connect() as conn:
        conn.execute(f"DROP VIEW {q('trader_exposure_totals')}")
        conn.execute(f"DROP TABLE {q('trader_exposure_top')}")
        conn.execute(
            f"CREATE TABLE {q('trader_exposure_totals')} AS "
            f"SELECT * REPLACE (0.0 AS pnl_eur) FROM {q('trader_exposure_daily')}"
        )
    many_days.trade("dave", MON, "05-06", "sell", 30.0, 45.0)
    result = refresh(many_days)
    assert "dave" in result.totals["trader_id"].to_list()
    assert_frame_equal(stored(), result.totals.sort("trader_id"), check_exact=False)
    with many_days.connect() as conn:
        kinds = conn.execute(
            "SELECT count(*) FROM duckdb_views() WHERE view_name = 'trader_exposure_totals'"
        ).fetchone()
    assert kinds == (1,)
