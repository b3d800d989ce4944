"""raw_trades as the desk runs it: Dagster runs on a real instance, checks, metadata, the
CLI, and two drains launched at once."""

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import dagster as dg
import duckdb
import pytest

from energy_assets.journals.resources import archive_resource
from energy_assets.settings import Settings
from energy_assets.trades.assets import raw_trades
from energy_assets.trades.buffer import CaptureBuffer, Gap
from energy_assets.trades.deal import validate_deal
from energy_assets.trades.resources import capture_resource
from energy_assets.warehouse import DUCKDB_POOL, dashboard_resource, warehouse_resource
from tests.conftest import REPO
from tests.trades.conftest import expected, make_deals, pending, stored_deals

# Seconds or more: Dagster runs in a real instance.
pytestmark = pytest.mark.slow


def resources():
    settings = Settings.from_env()
    return {
        "warehouse": warehouse_resource(),
        "capture": capture_resource(settings),
        "archive": archive_resource(settings),
        "dashboard": dashboard_resource(),
    }


def fill(deals, gap=None):
    buffer = CaptureBuffer(os.environ["ENERGY_CAPTURE_DIR"], seal_frames=40)
    for deal in deals:
        buffer.append(deal, datetime.now(UTC))
    buffer.seal()
    if gap:
        buffer.record_gap(gap)


def materialize():
    return dg.materialize(
        [raw_trades], instance=dg.DagsterInstance.get(), resources=resources(), raise_on_error=False
    )


def test_deal_confirmations_refused_today_make_raw_trades_warn(dagster_home, energy_env):
    fill(make_deals(3, seed=21))
    now = datetime.now(UTC)
    refused = {"day": f"{now:%Y-%m-%d}", "count": 2, "last_at": now.isoformat()}
    state = {"heartbeat": now.isoformat(), "connected": True, "heard_at": now.isoformat()}
    state["refused"] = refused | {"last_reason": "quantity must be > 0, got 0"}
    CaptureBuffer(os.environ["ENERGY_CAPTURE_DIR"]).write_state(state)
    result = materialize()
    assert result.success
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    refusals = checks["no_refused_confirmations"]
    assert refusals.passed is False and refusals.severity == dg.AssetCheckSeverity.WARN
    assert refusals.metadata["refused_today"].value == 2
    assert refusals.metadata["last_reason"].value == "quantity must be > 0, got 0"


def test_materialize_drains_reports_and_checks(dagster_home, energy_env):
    deals = make_deals(100, seed=20)
    # A confirmed deal for a day in 2999: booked, and flagged by a warning, never blocking.
    far = deals[0].to_dict(legacy=True) | {"id": "f" * 32, "delivery_day": "2999-01-01"}
    deals.append(validate_deal(far))
    now = datetime.now(UTC)
    fill(deals + deals[:10], Gap(now - timedelta(seconds=30), now, "connection dropped"))
    result = materialize()
    assert result.success
    (event,) = result.get_asset_materialization_events()
    meta = {key: value.value for key, value in event.materialization.metadata.items()}
    assert meta["rows_added"] == 101 and meta["total_rows"] == 101
    assert meta["duplicates_dropped"] == 10 and meta["segments_drained"] == 3
    assert meta["feed_gaps_recorded"] == 1
    newest = max(datetime.fromisoformat(deal.execution_time) for deal in deals)
    assert datetime.fromisoformat(meta["newest_execution_time"]) == newest
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    warnings = {"no_recent_feed_gaps", "no_deals_after_gate_closure", "no_far_deliveries"}
    assert all(checks[name].passed for name in checks if name not in warnings)
    late = sum(
        deal.period.gate_closure <= datetime.fromisoformat(deal.execution_time) for deal in deals
    )
    assert late > 0
    assert checks["no_deals_after_gate_closure"].passed is False
    assert checks["no_deals_after_gate_closure"].metadata["deals_after_gate_closure"].value == late
    assert not checks["no_recent_feed_gaps"].passed
    assert checks["no_recent_feed_gaps"].metadata["gaps_last_24h"].value == 1
    flagged = checks["no_far_deliveries"]
    assert flagged.passed is False and flagged.metadata["far_deliveries"].value == 1
    (listed,) = flagged.metadata["deals"].value.records
    start = datetime.fromisoformat(deals[-1].delivery_start)
    assert (listed.data["id"], listed.data["delivery_start_utc"]) == (
        "f" * 32,
        f"{start:%Y-%m-%dT%H:%MZ}",
    )
    assert stored_deals(energy_env["ENERGY_DUCKDB_PATH"]) == expected(deals)

    # Nothing new: a run adds nothing and the gap stays stored once.
    again = materialize()
    (event,) = again.get_asset_materialization_events()
    assert event.materialization.metadata["rows_added"].value == 0
    with duckdb.connect(energy_env["ENERGY_DUCKDB_PATH"], read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM energy.feed_gaps").fetchone() == (1,)


def test_checks_fail_on_a_damaged_table(dagster_home, energy_env):
    fill(make_deals(5, seed=21))
    assert materialize().success
    with duckdb.connect(energy_env["ENERGY_DUCKDB_PATH"]) as conn:
        conn.execute("INSERT INTO energy.raw_trades SELECT * FROM energy.raw_trades LIMIT 1")
        conn.execute("UPDATE energy.raw_trades SET quantity = -1 WHERE rowid = 1")
        conn.execute("UPDATE energy.raw_trades SET delivery_hour = '24-25' WHERE rowid = 2")
        conn.execute("UPDATE energy.raw_trades SET price = 'inf' WHERE rowid = 3")
        conn.execute("UPDATE energy.raw_trades SET delivery_day = '9999-12-31' WHERE rowid = 4")
        conn.execute(
            "UPDATE energy.raw_trades SET delivery_end = delivery_start + INTERVAL 20 MINUTE "
            "WHERE rowid = 0"
        )
    result = materialize()
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["ids_unique"] is False
    assert checks["quantity_in_limits"] is False
    assert checks["valid_delivery_period"] is False
    assert checks["price_in_limits"] is False
    assert checks["plausible_dates"] is False
    assert checks["no_nulls"] is True


MATERIALIZE = """
import sys
import dagster as dg
from tests.trades.test_assets import materialize
result = materialize()
(event,) = result.get_asset_materialization_events()
print("rows_added", event.materialization.metadata["rows_added"].value, result.run_id)
sys.exit(0 if result.success else 1)
"""


def test_two_drains_launched_at_once_end_exact(dagster_home, energy_env, tmp_path):
    """Two processes drain at once on one instance: the `duckdb` pool (limit 1) queues their
    steps and lets one in at a time; the other is held, then finds nothing left to drain."""
    deals = make_deals(2000, seed=22)
    fill(deals + deals[::3])
    instance = dg.DagsterInstance.get()  # storage created once, not raced by both processes
    pool = instance.event_log_storage
    # The test holds the pool's one slot until both steps wait in its queue. Two claims of a
    # free slot in the same few milliseconds can both succeed on Dagster's SQLite storage
    # (its SELECT ... FOR UPDATE is a no-op there): the pool is a queue, and for that instant
    # DuckDB's own file lock, which the warehouse resource waits out, keeps one writer.
    pool.initialize_concurrency_limit_to_default(DUCKDB_POOL)
    assert pool.claim_concurrency_slot(DUCKDB_POOL, "test", "hold").is_claimed
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", MATERIALIZE],
            cwd=REPO,
            env=os.environ.copy(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    deadline = time.monotonic() + 60
    while pool.get_concurrency_info(DUCKDB_POOL).pending_step_count < 2:
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.05)
    pool.free_concurrency_slot_for_step("test", "hold")
    outputs = [proc.communicate(timeout=120) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    lines = [out.split() for out, _ in outputs]
    assert sorted(int(line[1]) for line in lines) == [0, len(deals)]
    assert stored_deals(energy_env["ENERGY_DUCKDB_PATH"]) == expected(deals)
    assert pending(tmp_path / "capture") == 0
    # The pool's promise: the two drain steps never ran at the same time.
    windows = []
    for line in lines:
        times = {
            record.dagster_event.event_type_value: record.timestamp
            for record in instance.all_logs(line[2])
            if record.dagster_event and record.dagster_event.step_key == "raw_trades"
        }
        windows.append((times["STEP_START"], times["STEP_SUCCESS"]))
    first, second = sorted(windows)
    assert first[1] <= second[0], f"drain steps overlapped: {windows}"


@dg.asset(
    key=["reference_prices", "DE"],
    group_name="prices",
    partitions_def=dg.HourlyPartitionsDefinition(start_date="2026-01-01-00:00"),
)
def _reference_prices_stand_in() -> None: ...


@dg.asset(
    key=["reference_prices", "GB"],
    group_name="prices",
    partitions_def=dg.HourlyPartitionsDefinition(start_date="2026-01-01-00:00"),
)
def _gb_prices_stand_in() -> None: ...


def test_a_failed_blocking_check_stops_the_exposure_automation_and_a_good_drain_starts_it(
    dagster_home, energy_env
):
    from energy_assets.exposure.assets import trader_exposure

    instance = dg.DagsterInstance.get()
    defs = dg.Definitions(
        assets=[raw_trades, _reference_prices_stand_in, _gb_prices_stand_in, trader_exposure],
        resources=resources(),
    )

    def tick(cursor):
        result = dg.evaluate_automation_conditions(
            defs=defs,
            instance=instance,
            asset_selection=dg.AssetSelection.assets("trader_exposure"),
            cursor=cursor,
        )
        return result.get_num_requested(dg.AssetKey("trader_exposure")), result.cursor

    def drain_alone():
        # As from the UI: a run of raw_trades that does not refresh the exposure itself.
        return dg.materialize(
            [raw_trades], instance=instance, resources=resources(), raise_on_error=False
        )

    _, cursor = tick(None)
    fill(make_deals(30, seed=31))
    assert drain_alone().success
    requested, cursor = tick(cursor)
    assert requested == 1
    assert dg.materialize(
        [trader_exposure], instance=instance, resources=resources(), raise_on_error=False
    ).success
    requested, cursor = tick(cursor)
    assert requested == 0

    # A duplicated deal in the table: the next drain's ids_unique check fails and blocks.
    with duckdb.connect(energy_env["ENERGY_DUCKDB_PATH"]) as conn:
        conn.execute("INSERT INTO energy.raw_trades SELECT * FROM energy.raw_trades LIMIT 1")
    fill(make_deals(10, seed=32))
    failed = drain_alone()
    checks = {e.check_name: e.passed for e in failed.get_asset_check_evaluations()}
    assert checks["ids_unique"] is False and not failed.success
    requested, cursor = tick(cursor)
    assert requested == 0
    # Repaired and drained again: the automation refreshes the exposure.
    with duckdb.connect(energy_env["ENERGY_DUCKDB_PATH"]) as conn:
        conn.execute(
            "DELETE FROM energy.raw_trades WHERE rowid NOT IN "
            "(SELECT min(rowid) FROM energy.raw_trades GROUP BY id)"
        )
    fill(make_deals(10, seed=33))
    assert drain_alone().success
    requested, cursor = tick(cursor)
    assert requested == 1


def test_a_listener_that_stopped_reporting_is_an_open_feed_gap(dagster_home, energy_env):
    """Killed and not restarted, or frozen: its heartbeat goes stale, and the drain's gap check
    warns from the last moment the listener heard the exchange."""
    fill(make_deals(3, seed=23))
    now = datetime.now(UTC)
    heard, heartbeat = now - timedelta(seconds=65), now - timedelta(seconds=60)
    CaptureBuffer(os.environ["ENERGY_CAPTURE_DIR"]).write_state(
        {"heartbeat": heartbeat.isoformat(), "heard_at": heard.isoformat(), "connected": True}
    )
    result = materialize()
    assert result.success
    (check,) = [
        e for e in result.get_asset_check_evaluations() if e.check_name == "no_recent_feed_gaps"
    ]
    assert not check.passed
    assert datetime.fromisoformat(check.metadata["open_gap_since"].value) == heard
    assert check.metadata["listener_connected"].value is False
    (row,) = check.metadata["gaps"].value.records
    assert "listener not reporting" in row.data["reason"] and row.data["end_utc"] == "still open"
