"""End to end on a temporary DAGSTER_HOME: scripted exchange -> listener -> buffer -> the
real `dagster-daemon` running raw_trades_sensor -> drain_and_refresh runs -> rows in DuckDB,
untouched, and the desk's confirmed positions published by the same runs."""

import time

import dagster as dg
import duckdb
import pytest

from energy_assets import published
from energy_assets.tables import RAW_TRADES
from tests.conftest import stop_process_group
from tests.trades.conftest import expected, frames, make_deals, stored_deals

# Seconds or more: the real dagster-daemon.
pytestmark = pytest.mark.slow


def rows_now(database) -> int:
    try:
        with duckdb.connect(str(database), read_only=True) as conn:
            return conn.execute(f"SELECT count(*) FROM {RAW_TRADES}").fetchone()[0]
    except (duckdb.IOException, duckdb.CatalogException):
        return -1  # not created yet, or a drain holds the file right now


def confirmed_trades(energy_env) -> int:
    """Deals counted in the desk's published confirmed positions (0 before the first)."""
    confirmed = published.read(energy_env["ENERGY_DASHBOARD_DIR"], published.CONFIRMED)
    return 0 if confirmed is None else confirmed["trades"].sum()


def _prices_only(run) -> bool:
    """A run of the price side (the planner's batches, recent_prices_sensor's ranges)."""
    return run.job_name == "reference_prices_planned" or bool(
        run.asset_selection
        and all(key.path[0] == "reference_prices" for key in run.asset_selection)
    )


def test_daemon_sensor_drains_the_listeners_deals(
    tmp_path, dagster_home, energy_env, exchange, thread_listener, start_daemon
):
    deals = make_deals(120, seed=40)
    server = exchange([frames(deals[:60]) + [("sleep", 3)] + frames(deals[60:]) + [("hold",)]])
    listener = thread_listener(server.url, tmp_path / "capture", seal_seconds=0.5)
    daemon = start_daemon()
    database = tmp_path / "warehouse.duckdb"
    deadline = time.monotonic() + 150
    while (
        rows_now(database) < len(deals) or confirmed_trades(energy_env) < len(deals)
    ) and time.monotonic() < deadline:
        daemon.assert_running()
        time.sleep(1)
    listener.stop()
    stop_process_group(daemon.process)
    assert stored_deals(database) == expected(deals), daemon.tail()
    # Every run of the trades was the one drain_and_refresh job: drained, refreshed,
    # published, no chain (the price runs, planned and recent, run beside them on their own).
    instance = dg.DagsterInstance.get()
    runs = [record.dagster_run for record in instance.get_run_records()]
    trade_runs = [run for run in runs if not _prices_only(run)]
    assert trade_runs and {run.job_name for run in trade_runs} == {"drain_and_refresh"}
    assert confirmed_trades(energy_env) == len(expected(deals))
