"""`energy-assets watch-runs`: one structured line per Dagster run event, for the terminal.

The Dagster UI and its run logs hold every detail; an operator watching the demo's terminal
(or a log shipper) wants the outline: which run started, why, for which assets and
partitions, and how it ended. The watcher polls the instance (runs updated since the last
poll) and writes, e.g.

    event=run_started run_id=3f0c… job=drain_and_refresh trigger=sensor:raw_trades_sensor assets=raw_trades,trader_exposure,…
    event=run_succeeded run_id=3f0c… job=drain_and_refresh … duration_s=3.4 materialized=raw_trades,…
    event=run_failed run_id=9b1d… job=__ASSET_JOB trigger=backfill:jscpfjcj partitions=… error="…"

It only reads the instance; it never launches or changes anything.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from energy_assets.logs import EventLogger, event_logger

_EVENTS = {
    "QUEUED": "run_queued",
    "STARTING": None,  # between queued and started: not worth a line
    "STARTED": "run_started",
    "SUCCESS": "run_succeeded",
    "FAILURE": "run_failed",
    "CANCELING": "run_canceling",
    "CANCELED": "run_canceled",
}


def run_trigger(tags: dict[str, str]) -> str:
    """What asked for the run, from Dagster's own tags."""
    if "dagster/backfill" in tags:
        return f"backfill:{tags['dagster/backfill']}"
    if tags.get("dagster/from_automation_condition") or tags.get("dagster/auto_materialize"):
        return f"automation:{tags.get('dagster/sensor_name', 'default')}"
    if "dagster/sensor_name" in tags:
        return f"sensor:{tags['dagster/sensor_name']}"
    if "dagster/schedule_name" in tags:
        return f"schedule:{tags['dagster/schedule_name']}"
    return "manual"


def run_partitions(tags: dict[str, str]) -> str | None:
    start = tags.get("dagster/asset_partition_range_start")
    if start:
        return f"{start}...{tags.get('dagster/asset_partition_range_end', start)}"
    return tags.get("dagster/partition")


def _asset_names(keys: Iterable | None) -> str:
    return ",".join(sorted(key.to_user_string() for key in keys or ())) or "-"


def _materialized(instance, run_id: str) -> str:
    from dagster import DagsterEventType

    records = instance.get_records_for_run(
        run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION, limit=1000
    ).records
    counts: dict[str, int] = {}
    for record in records:
        key = record.event_log_entry.dagster_event.asset_key.to_user_string()
        counts[key] = counts.get(key, 0) + 1
    # A partitioned asset materialises once per partition: name it once, with the count.
    return ",".join(f"{k}x{n}" if n > 1 else k for k, n in sorted(counts.items())) or "-"


def _failure_message(instance, run_id: str) -> str:
    """The root cause of the first failed step (or of the run), on one line."""
    from dagster import DagsterEventType

    for event_type in (DagsterEventType.STEP_FAILURE, DagsterEventType.RUN_FAILURE):
        records = instance.get_records_for_run(run_id, of_type=event_type, limit=1).records
        if not records:
            continue
        entry = records[0].event_log_entry
        event = entry.dagster_event
        error = getattr(event.event_specific_data, "error", None) if event else None
        # Dagster wraps the asset's exception ("Error occurred while executing op …"): the
        # innermost cause is what the operator needs.
        while error is not None and getattr(error, "cause", None) is not None:
            error = error.cause
        text = error.message if error is not None else entry.user_message
        first = (text or "").strip().splitlines()
        step = f"{event.step_key}: " if event is not None and event.step_key else ""
        return (step + first[0])[:300] if first else step.rstrip(": ")
    return ""


class RunWatcher:
    """Polls `instance` and logs each run's status changes once."""

    def __init__(self, instance, log: EventLogger | None = None, since: datetime | None = None):
        self.instance = instance
        self.log = log or event_logger("runs")
        self.since = since or datetime.now(UTC) - timedelta(seconds=5)
        self._status: dict[str, str] = {}

    def poll(self) -> int:
        """Logs every status change since the last poll; returns how many lines it wrote."""
        import dagster as dg

        # Overlap the window a little: a run updated in the same instant as the last poll.
        records = self.instance.get_run_records(
            filters=dg.RunsFilter(updated_after=self.since - timedelta(seconds=2)),
            order_by="update_timestamp",
            ascending=True,
            limit=500,
        )
        written = 0
        for record in records:
            run = record.dagster_run
            status = run.status.value
            if self._status.get(run.run_id) == status:
                continue
            self._status[run.run_id] = status
            self.since = max(self.since, record.update_timestamp.replace(tzinfo=UTC))
            event = _EVENTS.get(status)
            if event is None:
                continue
            # Every line stands alone: a short run may be seen only once it has ended.
            fields: dict[str, object] = {
                "run_id": run.run_id,
                "job": run.job_name,
                "trigger": run_trigger(run.tags),
            }
            if run.asset_selection:  # else: every asset of the named job
                fields["assets"] = _asset_names(run.asset_selection)
            partitions = run_partitions(run.tags)
            if partitions:
                fields["partitions"] = partitions
            if record.start_time and record.end_time:
                fields["duration_s"] = round(record.end_time - record.start_time, 1)
            if status in ("SUCCESS", "FAILURE", "CANCELED"):
                fields["materialized"] = _materialized(self.instance, run.run_id)
            if status == "FAILURE":
                fields["error"] = _failure_message(self.instance, run.run_id)
                self.log.error(event, **fields)
            else:
                self.log.info(event, **fields)
            written += 1
        return written

    def run(self, stop: threading.Event, interval_s: float = 2.0) -> None:
        while not stop.is_set():
            try:
                self.poll()
            except Exception as err:  # storage briefly unavailable: say so, keep watching
                self.log.warning("watch_failed", error=repr(err)[:300])
            stop.wait(interval_s)
