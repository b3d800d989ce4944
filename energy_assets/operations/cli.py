"""`energy-assets demo` and `energy-assets watch-runs`."""

from __future__ import annotations

import argparse
import os
from dataclasses import fields

from energy_assets.operations.demo import DEFAULT_PLAYGROUND_ARGS, Demo, DemoOptions

DEFAULTS = DemoOptions()


def register(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser(
        "demo",
        help="Run the whole demo on supervisord: playground, listener, Dagster, dashboard",
        description="Write supervisord's configuration for the playground, the listener, "
        "`dagster dev` (UI and daemon: the sensors and schedules run by themselves, the recent "
        "prices included) and the dashboard, then run supervisord in the foreground. Ctrl-C or "
        "SIGTERM stops every program cleanly (the listener first, sealing its segment).",
    )
    add = demo.add_argument
    add("--host", default=DEFAULTS.host, help="interface to bind (default: %(default)s)")
    for name, what in (
        ("ui", "Dagster UI"),
        ("exchange", "playground exchange"),
        ("market-data", "playground Market Data API"),
        ("dashboard", "desk dashboard"),
        ("postgres", "private PostgreSQL server"),
    ):
        default = getattr(DEFAULTS, f"{name.replace('-', '_')}_port")
        add(f"--{name}-port", type=int, default=default, help=f"{what} port (default: {default})")
    add(
        "--no-playground",
        dest="playground",
        action="store_false",
        help="use the services at ENERGY_EXCHANGE_URL / ENERGY_MARKET_DATA_URL instead",
    )
    add(
        "--playground-args",
        default=DEFAULT_PLAYGROUND_ARGS,
        help="arguments for `energy-assets playground` besides its address (default: the "
        'vendor\'s behaviour, "%(default)s")',
    )
    add(
        "--no-dashboard",
        dest="dashboard_port",
        action="store_const",
        const=None,
        help="do not serve the dashboard",
    )
    add(
        "--backfill-days",
        type=int,
        default=DEFAULTS.backfill_days,
        help="recent_prices_sensor asks for the reference prices never stored from this many "
        "days before today to the hour under way (default: %(default)s; -1: none)",
    )
    add(
        "--dagster-home",
        default=os.environ.get("DAGSTER_HOME") or DEFAULTS.dagster_home,
        help="Dagster instance directory (default: $DAGSTER_HOME or %(default)s)",
    )
    add(
        "--instance",
        choices=("sqlite", "postgres"),
        help="Dagster instance kind (default: $DAGSTER_INSTANCE or sqlite). postgres without "
        "DAGSTER_PG_HOST runs a private PostgreSQL server",
    )
    add("--log-dir", help="write each program's output to DIR/<program>.log, not the terminal")
    add(
        "--dagster-output",
        choices=("file", "terminal"),
        default="file",
        help="where `dagster dev`'s verbose output goes: data/logs/dagster.log, or this "
        "terminal (default: %(default)s)",
    )
    add(
        "--stop-timeout",
        dest="stop_timeout_s",
        type=float,
        default=DEFAULTS.stop_timeout_s,
        help="seconds each program gets to stop before it is killed (default: %(default)s)",
    )
    demo.set_defaults(run=run_demo)

    watch = commands.add_parser(
        "watch-runs",
        help="Print one structured line per Dagster run event (queued, started, succeeded, failed)",
        description="Polls the Dagster instance at $DAGSTER_HOME and prints one key=value line "
        "per run status change, with the run id, job, trigger, assets, partitions, duration and, "
        "for a failure, the error. Read-only. The demo runs it; Ctrl-C stops it.",
    )
    watch.add_argument(
        "--interval", type=float, default=2.0, help="seconds between polls (default: %(default)s)"
    )
    watch.set_defaults(run=run_watch)


def run_demo(args: argparse.Namespace) -> int:
    return Demo(DemoOptions(**{f.name: getattr(args, f.name) for f in fields(DemoOptions)})).run()


def run_watch(args: argparse.Namespace) -> int:
    import signal
    import threading

    from dagster import DagsterInstance

    from energy_assets.operations.runs import RunWatcher

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with DagsterInstance.get() as instance:
        RunWatcher(instance).run(stop, interval_s=args.interval)
    return 0
