"""`run_retention_schedule`: once a day, delete the Dagster runs older than
`ENERGY_RUN_RETENTION_DAYS` (default 7) with their event logs and captured logs, so the
instance stays bounded; Dagster deletes none by itself. Only finished runs go, through the
public `DagsterInstance` API, so it works the same on SQLite and PostgreSQL. What the runs
wrote to DuckDB stays.
"""

from datetime import UTC, datetime, timedelta

import dagster as dg

from energy_assets.settings import settings

FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]


def delete_runs_before(instance: dg.DagsterInstance, cutoff: datetime, batch: int = 200) -> int:
    """Deletes every finished run created before `cutoff`, its events and its captured
    stdout/stderr (which `delete_run` leaves), `batch` runs per query; returns how many."""
    deleted = 0
    while True:
        records = instance.get_run_records(
            filters=dg.RunsFilter(created_before=cutoff, statuses=FINISHED), limit=batch
        )
        for record in records:
            instance.delete_run(record.dagster_run.run_id)
            instance.compute_log_manager.delete_logs(prefix=[record.dagster_run.run_id])
        deleted += len(records)
        if len(records) < batch:
            return deleted


class RetentionConfig(dg.Config):
    retention_days: float = settings().run_retention_days
    """Runs created longer ago than this are deleted (`ENERGY_RUN_RETENTION_DAYS`)."""


@dg.op(out=dg.Out(dg.Nothing))
def delete_old_runs(context: dg.OpExecutionContext, config: RetentionConfig):
    """Delete the finished runs older than the retention, with their event logs."""
    cutoff = datetime.now(UTC) - timedelta(days=config.retention_days)
    deleted = delete_runs_before(context.instance, cutoff)
    context.log.info(f"deleted {deleted} run(s) created before {cutoff.isoformat()}")
    return dg.Output(None, metadata={"runs_deleted": deleted, "cutoff": cutoff.isoformat()})


@dg.job(
    name="run_retention",
    executor_def=dg.in_process_executor,
    description="Delete the Dagster runs older than ENERGY_RUN_RETENTION_DAYS (default 7), "
    "with their event logs.",
)
def run_retention_job():
    delete_old_runs()


@dg.schedule(
    name="run_retention_schedule",
    cron_schedule="17 3 * * *",
    execution_timezone="UTC",
    job=run_retention_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily at 03:17 UTC: deletes the runs older than ENERGY_RUN_RETENTION_DAYS.",
)
def run_retention_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    return dg.RunRequest(run_key=context.scheduled_execution_time.date().isoformat())
