"""The two assets in a real Dagster instance: materialised against a DuckDB file filled
directly, and requested by their automation conditions after new trades and new prices."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from dagster_duckdb import DuckDBResource

from energy_assets import published
from energy_assets.exposure.assets import (
    EXPOSURE_CONDITION,
    exposure_automation_sensor,
    exposure_dashboard,
    trader_exposure,
)
from energy_assets.tables import TRADER_EXPOSURE
from energy_assets.warehouse import dashboard_resource
from tests.exposure.conftest import q

# Stand-ins with the upstream keys and shapes: `raw_trades` unpartitioned, each market's
# `reference_prices/<code>` hourly. Their own code is the trades and prices domains'; the automation only needs keys,
# partitions and materialisation events.
NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
HOURLY = dg.HourlyPartitionsDefinition(
    start_date=(NOW - timedelta(days=2)).strftime("%Y-%m-%d-%H:%M"), end_offset=48
)


@dg.asset(key="raw_trades", group_name="trades")
def raw_trades_stand_in() -> None: ...


@dg.asset(key=["reference_prices", "DE"], group_name="prices", partitions_def=HOURLY)
def reference_prices_stand_in() -> None: ...


@dg.asset(key=["reference_prices", "GB"], group_name="prices", partitions_def=HOURLY)
def gb_prices_stand_in() -> None: ...


def materialize(instance: dg.DagsterInstance, warehouse, selection=None) -> dg.ExecuteInJobResult:
    result = dg.materialize(
        [trader_exposure, exposure_dashboard],
        instance=instance,
        resources={"warehouse": warehouse.resource(), "dashboard": dashboard_resource()},
        selection=selection,
    )
    assert result.success
    return result


@pytest.fixture
def instance(dagster_home, energy_env):
    with dg.DagsterInstance.get() as instance:
        yield instance


def hour_ago(days: int, hours: int = 0) -> datetime:
    """A whole UTC hour `days` ago (+ `hours`): a DE hourly period's start."""
    return NOW - timedelta(days=days) + timedelta(hours=hours)


@pytest.mark.slow
def test_materialise_writes_tables_metadata_and_publishes_them(instance, warehouse, energy_env):
    start = hour_ago(1)
    warehouse.trade("alice", "DE", start, 60, "buy", 2.0, 50.0)
    warehouse.trade("bob", "DE", start, 60, "sell", 4.0, 30.0)
    warehouse.price("DE", start, 60, 45.0)
    # A GB half-hour in pounds: 2 MW @ 40 = 1 MWh, 40 GBP; at 42 its PnL is 2 GBP.
    warehouse.trade("bob", "GB", start, 30, "buy", 2.0, 40.0)
    warehouse.price("GB", start, 30, 42.0)

    result = materialize(instance, warehouse)

    exposure = result.asset_materializations_for_node("trader_exposure")[0].metadata
    # alice: cash -100, long 2 @ 45 -> -10; bob: cash 120, short 4 @ 45 -> -60.
    assert exposure["total_pnl_eur"].value == pytest.approx(-70.0)
    assert exposure["gross_exposure_eur"].value == pytest.approx(90.0 + 180.0)
    assert exposure["total_pnl_gbp"].value == pytest.approx(2.0)
    largest = [record.data for record in exposure["largest_exposures"].value.records]
    assert largest[0] == {
        "trader_id": "bob",
        "market": "DE",
        "delivery": f"{start:%Y-%m-%d %H:%M}–{start + timedelta(hours=1):%H:%M} UTC",
        "net_mwh": -4.0,
        "reference_price": 45.0,
        "exposure": -180.0,
        "pnl": -60.0,
        "currency": "EUR",
    }
    assert largest[-1]["currency"] == "GBP"
    totals = {
        (r.data["trader_id"], r.data["currency"]): r.data
        for r in exposure["trader_totals"].value.records
    }
    assert (totals["alice", "EUR"]["trades"], totals["alice", "EUR"]["net_mwh"]) == (1, 2.0)
    assert totals["alice", "EUR"]["pnl"] == pytest.approx(-10.0)
    assert totals["bob", "GBP"]["pnl"] == pytest.approx(2.0)
    assert exposure["dagster/row_count"].value == 3
    rows = warehouse.query(f"SELECT trader_id, currency, pnl FROM {q('trader_exposure_totals')}")
    assert sorted(rows) == [
        ("alice", "EUR", pytest.approx(-10.0)),
        ("bob", "EUR", pytest.approx(-60.0)),
        ("bob", "GBP", pytest.approx(2.0)),
    ]

    # The same run published what the desk shows as confirmed: every trader_exposure row.
    out = Path(energy_env["ENERGY_DASHBOARD_DIR"])
    confirmed = published.read(out, published.CONFIRMED)
    assert confirmed.schema == TRADER_EXPOSURE.polars_schema()
    by_trader = {(r["trader_id"], r["market"]): r for r in confirmed.iter_rows(named=True)}
    assert by_trader["alice", "DE"]["pnl"] == pytest.approx(-10.0)
    assert by_trader["bob", "DE"]["net_mwh"] == pytest.approx(-4.0)
    assert by_trader["bob", "GB"]["currency"] == "GBP"
    with warehouse.connect() as conn:
        stored = conn.execute(
            f"SELECT * FROM {q('trader_exposure')} ORDER BY trader_id, market"
        ).pl()
    assert confirmed.sort("trader_id", "market").equals(
        stored.cast(TRADER_EXPOSURE.polars_schema())
    )
    history = published.read(out, published.PNL_HISTORY)
    assert history.select("trader_id", "currency").rows() == [
        ("alice", "EUR"),
        ("bob", "EUR"),
        ("bob", "GBP"),
    ]
    assert history.filter(currency="EUR")["pnl"].sum() == pytest.approx(-70.0)
    dashboard = result.asset_materializations_for_node("exposure_dashboard")[0].metadata
    assert dashboard["confirmed_rows"].value == 3
    assert dashboard["pnl_history_snapshots"].value == 1
    assert sorted(p.name for p in out.iterdir()) == [published.CONFIRMED, published.PNL_HISTORY]


@pytest.mark.slow
def test_pnl_history_holds_the_latest_snapshots(instance, warehouse, energy_env):
    start = hour_ago(1)
    warehouse.trade("alice", "DE", start, 60, "buy", 2.0, 50.0)
    for value in (40.0, 45.0, 47.0):
        warehouse.price("DE", start, 60, value)
        materialize(instance, warehouse, selection=[trader_exposure])
    dg.materialize(
        [exposure_dashboard],
        instance=instance,
        resources={"warehouse": warehouse.resource(), "dashboard": dashboard_resource()},
        run_config={"ops": {"exposure_dashboard": {"config": {"history_snapshots": 2}}}},
    )
    history = published.read(energy_env["ENERGY_DASHBOARD_DIR"], published.PNL_HISTORY)
    # alice is long 2 MWh bought at 50: PnL 2 x (reference - 50), the two latest, oldest first.
    assert history["pnl"].to_list() == pytest.approx([-10.0, -6.0])
    assert history["snapshot_at"].is_sorted()


@pytest.mark.slow
def test_total_pnl_is_left_out_while_nothing_is_priced(instance, warehouse):
    warehouse.trade("alice", "DE", hour_ago(0, 2), 15, "buy", 1.0, 50.0)
    result = materialize(instance, warehouse, selection=[trader_exposure])
    metadata = result.asset_materializations_for_node("trader_exposure")[0].metadata
    assert "total_pnl_eur" not in metadata
    assert metadata["unpriced_periods"].value == 1


def requested(result: dg.EvaluateAutomationConditionsResult, key: str) -> int:
    return result.get_num_requested(dg.AssetKey(key))


def automation_ticks(instance: dg.DagsterInstance, warehouse):
    """One evaluation of the exposure automation sensor's conditions per call, as the daemon
    ticks: `tick(cursor)` -> the result, whose `.cursor` the next tick takes."""
    defs = dg.Definitions(
        assets=[
            raw_trades_stand_in,
            reference_prices_stand_in,
            gb_prices_stand_in,
            trader_exposure,
            exposure_dashboard,
        ],
        sensors=[exposure_automation_sensor],
        resources={"warehouse": warehouse.resource(), "dashboard": dashboard_resource()},
    )
    selection = dg.AssetSelection.assets("trader_exposure", "exposure_dashboard")

    def tick(cursor=None) -> dg.EvaluateAutomationConditionsResult:
        return dg.evaluate_automation_conditions(
            defs=defs, instance=instance, asset_selection=selection, cursor=cursor
        )

    return tick


@pytest.mark.slow
def test_automation_requests_a_refresh_after_new_trades_and_after_a_price_revision(
    instance, warehouse
):
    tick = automation_ticks(instance, warehouse)

    first = tick()
    # In 1.13 a condition's first tick counts as "handled": nothing runs until upstream moves.
    assert requested(first, "trader_exposure") == 0
    quiet = tick(first.cursor)
    assert requested(quiet, "trader_exposure") == 0

    # New trades land in raw_trades.
    warehouse.trade("alice", "DE", hour_ago(0, 3), 60, "buy", 1.0, 50.0)
    instance.report_runless_asset_event(dg.AssetMaterialization("raw_trades"))
    after_trades = tick(quiet.cursor)
    assert requested(after_trades, "trader_exposure") == 1
    assert requested(after_trades, "exposure_dashboard") == 1
    materialize(instance, warehouse)
    quiet = tick(after_trades.cursor)
    assert requested(quiet, "trader_exposure") == 0

    # A revision of one hourly price partition, an hour of the past day (not the latest
    # partition, which eager() would insist on).
    hour = NOW - timedelta(hours=20)
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            ["reference_prices", "DE"], partition=hour.strftime("%Y-%m-%d-%H:%M")
        )
    )
    after_price = tick(quiet.cursor)
    assert requested(after_price, "trader_exposure") == 1
    assert requested(after_price, "exposure_dashboard") == 1


@pytest.mark.slow
def test_a_drain_run_that_refreshed_exposure_itself_causes_no_second_refresh(instance, warehouse):
    tick = automation_ticks(instance, warehouse)

    quiet = tick()
    warehouse.trade("alice", "DE", hour_ago(0, 3), 60, "buy", 1.0, 50.0)
    # What drain_and_refresh does: raw_trades, then both exposure assets, in ONE run.
    result = dg.materialize(
        [raw_trades_stand_in, trader_exposure, exposure_dashboard],
        instance=instance,
        resources={"warehouse": warehouse.resource(), "dashboard": dashboard_resource()},
    )
    assert result.success
    after_drain = tick(quiet.cursor)
    assert requested(after_drain, "trader_exposure") == 0
    assert requested(after_drain, "exposure_dashboard") == 0
    # raw_trades alone (from the UI, say) still refreshes exposure.
    instance.report_runless_asset_event(dg.AssetMaterialization("raw_trades"))
    assert requested(tick(after_drain.cursor), "trader_exposure") == 1


@pytest.mark.slow
def test_a_price_stored_just_after_a_refresh_read_the_prices_gets_its_own_refresh(
    instance, warehouse
):
    # The races of a busy desk: a refresh reads the prices, a price run then commits a
    # revision, and both materialisations land before the automation's next tick. The
    # revision must still reach the exposure, whether the refresh was a drain_and_refresh
    # run's or the one the automation requested at the tick before (the race a 30 s tick
    # exposed: the end-to-end test saw the exposure never catch up).
    tick = automation_ticks(instance, warehouse)
    hour = NOW - timedelta(hours=20)

    def revise(value: float) -> None:
        warehouse.price("DE", hour, 60, value)
        instance.report_runless_asset_event(
            dg.AssetMaterialization(
                ["reference_prices", "DE"], partition=hour.strftime("%Y-%m-%d-%H:%M")
            )
        )

    def marked() -> list[tuple]:
        return warehouse.query(f"SELECT reference_price, pnl FROM {q('trader_exposure')}")

    warehouse.price("DE", hour, 60, 60.0)
    quiet = tick()
    warehouse.trade("alice", "DE", hour, 60, "buy", 1.0, 50.0)
    drained = dg.materialize(
        [raw_trades_stand_in, trader_exposure, exposure_dashboard],
        instance=instance,
        resources={"warehouse": warehouse.resource(), "dashboard": dashboard_resource()},
    )
    assert drained.success
    revise(70.0)
    after_drain = tick(quiet.cursor)
    assert requested(after_drain, "trader_exposure") == 1

    materialize(instance, warehouse)  # the requested run, reading 70
    assert marked() == [(70.0, pytest.approx(20.0))]
    revise(80.0)  # before the next tick, which sees the request and this revision at once
    after_request = tick(after_drain.cursor)
    assert requested(after_request, "trader_exposure") == 1
    materialize(instance, warehouse)
    assert marked() == [(80.0, pytest.approx(30.0))]
    # Handled: the next quiet tick asks for nothing more.
    assert requested(tick(after_request.cursor), "trader_exposure") == 0


@pytest.mark.slow
def test_eager_alone_would_never_fire_below_hourly_prices(instance):
    # Why trader_exposure has its own condition: eager() waits until no upstream partition is
    # missing, and hourly prices always have hours never fetched.
    eager = trader_exposure.map_asset_specs(
        lambda spec: spec.replace_attributes(automation_condition=dg.AutomationCondition.eager())
    )
    defs = dg.Definitions(
        assets=[raw_trades_stand_in, reference_prices_stand_in, gb_prices_stand_in, eager],
        resources={"warehouse": DuckDBResource(database=":memory:")},
    )
    selection = dg.AssetSelection.assets("trader_exposure")
    first = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, asset_selection=selection
    )
    instance.report_runless_asset_event(dg.AssetMaterialization("raw_trades"))
    hour = NOW - timedelta(hours=20)
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            ["reference_prices", "DE"], partition=hour.strftime("%Y-%m-%d-%H:%M")
        )
    )
    result = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, asset_selection=selection, cursor=first.cursor
    )
    assert requested(result, "trader_exposure") == 0


def test_code_location_wires_the_exposure_assets():
    from energy_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    exposure = graph.get(dg.AssetKey("trader_exposure"))
    assert exposure.parent_keys == {
        dg.AssetKey("raw_trades"),
        dg.AssetKey(["reference_prices", "DE"]),
        dg.AssetKey(["reference_prices", "GB"]),
    }
    assert exposure.automation_condition == EXPOSURE_CONDITION
    assert graph.get(dg.AssetKey("exposure_dashboard")).parent_keys == {
        dg.AssetKey("trader_exposure")
    }
    sensor = defs.resolve_sensor_def("exposure_automation_sensor")
    # On from the start: nobody has to switch it on in the UI.
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING


@pytest.mark.slow
def test_full_recompute_on_request(instance, warehouse):
    for days_ago in (1, 2):
        warehouse.trade("alice", "DE", hour_ago(days_ago), 60, "buy", 1.0, 5.0)
    materialize(instance, warehouse, selection=[trader_exposure])
    unchanged = materialize(instance, warehouse, selection=[trader_exposure])
    assert metadata_of(unchanged)["days_recomputed"].value == 0
    full = dg.materialize(
        [trader_exposure],
        instance=instance,
        resources={"warehouse": warehouse.resource(), "dashboard": dashboard_resource()},
        run_config={"ops": {"trader_exposure": {"config": {"full_recompute": True}}}},
    )
    assert metadata_of(full)["days_recomputed"].value == 2


def metadata_of(result) -> dict:
    return result.asset_materializations_for_node("trader_exposure")[0].metadata


def test_a_published_file_of_an_older_shape_reads_as_not_published_yet(tmp_path):
    # confirmed.parquet as the hourly, euro-only version wrote it: the desk waits for the next
    # publication rather than failing on it.
    old = pl.DataFrame({"trader_id": ["a"], "delivery_hour": ["12-13"], "pnl_eur": [1.0]})
    old.write_parquet(tmp_path / published.CONFIRMED)
    assert published.read(tmp_path, published.CONFIRMED) is None
