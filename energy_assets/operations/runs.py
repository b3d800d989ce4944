"""`energy-assets watch-runs`: one structured line per Dagster run event, for the terminal.

The UI holds every detail; an operator watching the demo's terminal (or a log shipper) wants
the outline: which run started, why, for which assets and partitions, how it ended, e.g.

    event=run_started run_id=3f0c… job=drain_and_refresh trigger=sensor:raw_trades_sensor assets=raw_trades,…
    event=run_failed run_id=9b1d… job=__ASSET_JOB trigger=backfill:jscpfjcj partitions=… error="…"

It polls the instance at $DAGSTER_HOME for the runs updated since its last poll and changes
nothing. The demo runs it; Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import signal
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

from energy_assets.logs import EventLogger, event_logger

#: The line of each run status (none for STARTING, between queued and started).
EVENTS = {
    "QUEUED": "run_queued",
    "STARTED": "run_started",
    "SUCCESS": "run_succeeded",
    "FAILURE": "run_failed",
    "CANCELING": "run_canceling",
    "CANCELED": "run_canceled",
}


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "watch-runs",
        help="Print one structured line per Dagster run event (queued, started, succeeded, failed)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between polls")
    parser.set_defaults(run=watch)


def watch(args: argparse.Namespace) -> int:
    from dagster import DagsterInstance

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with DagsterInstance.get() as instance:
        watcher = RunWatcher(instance)
        while not stop.is_set():
            try:
                watcher.poll()
            except Exception as err:  # storage briefly unavailable: say so, keep watching
                watcher.log.warning("watch_failed", error=repr(err)[:300])
            stop.wait(args.interval)
    return 0


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


class RunWatcher:
    """Polls `instance` and logs each run's status changes once."""

    def __init__(self, instance, log: EventLogger | None = None):
        self.instance, self.log = instance, log or event_logger("runs")
        self.since = datetime.now(UTC) - timedelta(seconds=5)
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
            run, status = record.dagster_run, record.dagster_run.status.value
            if self._status.get(run.run_id) == status:
                continue
            self._status[run.run_id] = status
            self.since = max(self.since, record.update_timestamp.replace(tzinfo=UTC))
            if status not in EVENTS:
                continue
            # Every line stands alone: a short run may be seen only once it has ended.
            fields: dict[str, object] = {"run_id": run.run_id, "job": run.job_name}
            fields["trigger"] = run_trigger(run.tags)
            if run.asset_selection:  # else: every asset of the named job
                fields["assets"] = ",".join(sorted(k.to_user_string() for k in run.asset_selection))
            if partitions := run_partitions(run.tags):
                fields["partitions"] = partitions
            if record.start_time and record.end_time:
                fields["duration_s"] = round(record.end_time - record.start_time, 1)
            if status in ("SUCCESS", "FAILURE", "CANCELED"):
                fields["materialized"] = self.materialized(run.run_id)
            if status == "FAILURE":
                fields["error"] = self.failure(run.run_id)
            (self.log.error if status == "FAILURE" else self.log.info)(EVENTS[status], **fields)
            written += 1
        return written

    def materialized(self, run_id: str) -> str:
        """The assets the run stored, a partitioned one once with its count (`prices/DEx24`)."""
        import dagster as dg

        events = self.instance.get_records_for_run(
            run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION, limit=1000
        ).records
        counts = Counter(e.event_log_entry.dagster_event.asset_key.to_user_string() for e in events)
        return ",".join(f"{k}x{n}" if n > 1 else k for k, n in sorted(counts.items())) or "-"

    def failure(self, run_id: str) -> str:
        """The root cause of the first failed step (or of the run), on one line."""
        import dagster as dg

        for event_type in (dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE):
            for record in self.instance.get_records_for_run(
                run_id, of_type=event_type, limit=1
            ).records:
                entry = record.event_log_entry
                event = entry.dagster_event
                error = getattr(event.event_specific_data, "error", None) if event else None
                # Dagster wraps the asset's exception ("Error occurred while executing op …"):
                # the innermost cause is what the operator needs.
                while error is not None and error.cause is not None:
                    error = error.cause
                text = error.message if error is not None else entry.user_message or ""
                step = f"{event.step_key}: " if event is not None and event.step_key else ""
                return (step + text.strip().split("\n")[0])[:300].rstrip(": ")
        return ""
