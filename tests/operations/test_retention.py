"""The daily run retention against a real Dagster instance: real runs with real event logs."""

from datetime import UTC, datetime

import dagster as dg
import pytest

from energy_assets.operations.retention import (
    delete_runs_before,
    run_retention_job,
    run_retention_schedule,
)


@dg.asset
def a_small_asset() -> int:
    return 1


def real_runs(instance: dg.DagsterInstance, count: int) -> list[str]:
    return [dg.materialize([a_small_asset], instance=instance).run_id for _ in range(count)]


def run_files(home, run_id: str) -> list:
    """What a run leaves on the instance's disk besides its rows: its captured logs."""
    return [p for p in (home / "storage" / run_id,) if p.exists()]


@pytest.mark.slow
def test_runs_created_before_the_cutoff_go_with_their_events_newer_ones_stay(dagster_home):
    with dg.DagsterInstance.get() as instance:
        old = real_runs(instance, 5)
        running_old = instance.add_run(
            dg.DagsterRun(job_name="still_running", status=dg.DagsterRunStatus.STARTED)
        )
        cutoff = datetime.now(UTC)
        new = real_runs(instance, 2)
        assert all(instance.all_logs(run_id) for run_id in old)
        assert all(run_files(dagster_home, run_id) for run_id in old)

        # Batches of 2: the 5 old finished runs take three rounds.
        deleted = delete_runs_before(instance, cutoff, batch=2)

        assert deleted == 5
        remaining = {record.dagster_run.run_id for record in instance.get_run_records()}
        assert remaining == {*new, running_old.run_id}, "a run still in progress is kept"
        for run_id in old:
            assert instance.get_run_by_id(run_id) is None
            assert run_files(dagster_home, run_id) == []
        assert all(instance.all_logs(run_id) for run_id in new)
        assert all(run_files(dagster_home, run_id) for run_id in new)
        # The old runs' materialisations went with them; the newer ones are still there.
        events = instance.fetch_materializations(dg.AssetKey("a_small_asset"), limit=100)
        assert sorted(record.run_id for record in events.records) == sorted(new)


@pytest.mark.slow
def test_the_scheduled_job_deletes_by_the_configured_age_and_keeps_its_own_run(dagster_home):
    with dg.DagsterInstance.get() as instance:
        finished = real_runs(instance, 3)
        # The default, 7 days: nothing here is that old.
        kept = run_retention_job.execute_in_process(instance=instance)
        assert kept.success
        assert {r.dagster_run.run_id for r in instance.get_run_records()} >= set(finished)
        # 0 days: every finished run created before the job started goes (the first
        # retention run too); the job's own run, still running while it deletes, stays.
        result = run_retention_job.execute_in_process(
            instance=instance,
            run_config={"ops": {"delete_old_runs": {"config": {"retention_days": 0}}}},
        )
        assert result.success
        assert [r.dagster_run.run_id for r in instance.get_run_records()] == [result.run_id]
        output = next(e for e in result.all_node_events if e.event_type_value == "STEP_OUTPUT")
        assert output.step_output_data.metadata["runs_deleted"].value == 4


def test_the_schedule_runs_daily_from_the_start():
    assert run_retention_schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert run_retention_schedule.cron_schedule == "17 3 * * *"
    at = datetime(2026, 12, 2, 3, 17, tzinfo=UTC)
    request = run_retention_schedule(dg.build_schedule_context(scheduled_execution_time=at))
    assert request.run_key == "2026-12-02"
    from energy_assets.definitions import defs

    assert defs.resolve_schedule_def("run_retention_schedule").job_name == "run_retention"
