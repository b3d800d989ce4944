"""Both Dagster instances: the local SQLite one and the PostgreSQL one on a real server from
Debian's packages, with the run queue and the DuckDB pool configured the same way."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from dagster import DagsterInstance

from energy_assets.operations.demo import INSTANCE_FILES
from energy_assets.warehouse import DUCKDB_POOL
from tests.conftest import free_port
from tests.postgres import LocalPostgres


@dg.asset(pool=DUCKDB_POOL)
def pooled_step(context) -> int:
    context.log.info("writing the warehouse")
    return 1


@pytest.mark.slow
def test_each_instance_has_its_storage_the_run_queue_and_the_duckdb_pool(instance_home):
    kind, home, _env = instance_home
    with DagsterInstance.get() as instance:
        storage = type(instance.run_storage).__name__
        assert storage == ("PostgresRunStorage" if kind == "postgres" else "SqliteRunStorage")
        # SQLite: every run's events in one file (ConsolidatedSqliteEventLogStorage).
        assert type(instance.event_log_storage).__name__ == (
            "PostgresEventLogStorage" if kind == "postgres" else "ConsolidatedSqliteEventLogStorage"
        )
        assert type(instance.schedule_storage).__name__.startswith(
            "Postgres" if kind == "postgres" else "Sqlite"
        )
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        concurrency = instance.get_concurrency_config()
        assert concurrency.pool_config.default_pool_limit == 1
        queue = concurrency.run_queue_config
        assert queue.max_concurrent_runs == 4
        assert {"key": "dagster/backfill", "limit": 1} in queue.tag_concurrency_limits

        # A run's events travel through the storage (on PostgreSQL, each is also a
        # `NOTIFY run_events`, which breaks under SQLAlchemy 2.1: see pyproject.toml).
        result = dg.materialize([pooled_step], instance=instance)
        assert result.success
        logs = instance.all_logs(result.run_id)
        assert any("writing the warehouse" in (event.user_message or "") for event in logs)
        assert instance.get_latest_materialization_event(dg.AssetKey("pooled_step")) is not None
        # The pool's limit is in the instance, so every process that claims a slot sees it.
        assert instance.event_log_storage.get_concurrency_info(DUCKDB_POOL).slot_count == 1

    if kind == "sqlite":
        assert (home / "history" / "runs.db").exists()
        assert (home / "event_log.db").exists()
        assert not list((home / "history").glob("runs/*.db")), "no file per run"
    else:
        assert not (home / "history").exists()


def test_both_instance_files_keep_the_same_pool_and_queue_settings():
    import yaml

    repo = Path(__file__).resolve().parents[2]
    local, postgres = (
        yaml.safe_load((repo / name).read_text()) for name in INSTANCE_FILES.values()
    )
    assert "storage" not in local and "postgres" in postgres["storage"]
    for key in (
        "run_coordinator",
        "concurrency",
        "run_monitoring",
        "run_retries",
        "sensors",
        "schedules",
        "retention",
    ):
        assert local[key] == postgres[key], key


@pytest.mark.slow
def test_the_instance_retries_a_run_whose_worker_crashed_and_no_other(dagster_home):
    with dg.DagsterInstance.get() as instance:
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
        assert not instance.run_retries_retry_on_asset_or_op_failure


@pytest.mark.slow
def test_a_given_server_root_survives_a_restart(tmp_path: Path):
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="energy-pg-keep-")) / "pg"
    root.parent.chmod(0o755)
    port = free_port()
    try:
        with LocalPostgres(port=port, root=root) as server:
            server.create_database("kept")
        assert (root / "data" / "PG_VERSION").exists()
        with LocalPostgres(port=port, root=root) as server:
            listed = server._run(
                str(server.bin_dir / "psql"),
                *server._connect_args(),
                "-d",
                "postgres",
                "-tAc",
                "SELECT datname FROM pg_database WHERE datname = 'kept'",
            )
            assert listed.stdout.strip() == "kept"
    finally:
        import shutil

        shutil.rmtree(root.parent, ignore_errors=True)
