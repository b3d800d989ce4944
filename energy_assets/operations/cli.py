"""`energy-assets demo` and `energy-assets backfill-recent-prices`."""

from __future__ import annotations

import argparse
import os

from energy_assets.settings import (
    DEFAULT_DASHBOARD_HOST as DEFAULT_HOST,
)
from energy_assets.settings import (
    DEFAULT_DASHBOARD_PORT,
    DEFAULT_EXCHANGE_PORT,
    DEFAULT_MARKET_DATA_PORT,
    DEFAULT_UI_PORT,
)

DEFAULT_POSTGRES_PORT = 5433
DEFAULT_DAGSTER_HOME = "data/dagster_home"
DEFAULT_BACKFILL_DAYS = 2


def register(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser(
        "demo",
        help="Run the whole demo: playground, listener, Dagster UI + daemon, dashboard",
        description="Start the playground, the listener, `dagster dev` (UI and daemon: the "
        "trade sensor, the price schedule and the exposure automation run by themselves) and "
        "the dashboard as child processes; backfill the recent reference prices once Dagster "
        "is up; Ctrl-C or SIGTERM stops every child cleanly (the listener seals its segment).",
    )
    demo.add_argument(
        "--host", default=DEFAULT_HOST, help="interface to bind (default: %(default)s)"
    )
    demo.add_argument(
        "--ui-port",
        type=int,
        default=DEFAULT_UI_PORT,
        help="Dagster UI port (default: %(default)s)",
    )
    demo.add_argument(
        "--exchange-port",
        type=int,
        default=DEFAULT_EXCHANGE_PORT,
        help="playground exchange port (default: %(default)s)",
    )
    demo.add_argument(
        "--market-data-port",
        type=int,
        default=DEFAULT_MARKET_DATA_PORT,
        help="playground Market Data API port (default: %(default)s)",
    )
    demo.add_argument(
        "--dashboard-port",
        type=int,
        default=DEFAULT_DASHBOARD_PORT,
        help="desk dashboard port (default: %(default)s)",
    )
    demo.add_argument(
        "--no-playground",
        action="store_true",
        help="use the services at ENERGY_EXCHANGE_URL / ENERGY_MARKET_DATA_URL instead "
        "(e.g. the original playground started with its own ./build.sh)",
    )
    demo.add_argument(
        "--playground-args",
        default=None,
        help="arguments for `energy-assets playground` besides its address (default: the "
        "vendor's behaviour, \"--vendor-grid --rate-limit-per-minute 50 "
        '--rate-limit-per-hour 1000"; e.g. "--rate 10 --traders 15")',
    )
    demo.add_argument("--no-dashboard", action="store_true", help="do not serve the dashboard")
    demo.add_argument(
        "--backfill-days",
        type=int,
        default=DEFAULT_BACKFILL_DAYS,
        help="backfill reference prices from this many days before today to the end of "
        "tomorrow, once, at start (default: %(default)s; -1: none)",
    )
    demo.add_argument(
        "--dagster-home",
        default=os.environ.get("DAGSTER_HOME") or DEFAULT_DAGSTER_HOME,
        help="Dagster instance directory (default: $DAGSTER_HOME or %(default)s)",
    )
    demo.add_argument(
        "--instance",
        choices=("sqlite", "postgres"),
        default=None,
        help="Dagster instance kind (default: $DAGSTER_INSTANCE or sqlite). postgres without "
        "DAGSTER_PG_HOST starts a private PostgreSQL server under data/postgres",
    )
    demo.add_argument(
        "--postgres-port",
        type=int,
        default=DEFAULT_POSTGRES_PORT,
        help="port of the private PostgreSQL server (default: %(default)s)",
    )
    demo.add_argument(
        "--log-dir",
        default=None,
        help="write each child's output to DIR/<child>.log instead of this terminal",
    )
    demo.add_argument(
        "--dagster-output",
        choices=("file", "terminal"),
        default="file",
        help="where `dagster dev`'s own (verbose) output goes: data/logs/dagster.log, or this "
        "terminal (default: %(default)s)",
    )
    demo.add_argument(
        "--stop-timeout",
        type=float,
        default=30.0,
        help="seconds each child gets to stop before it is killed (default: %(default)s)",
    )
    demo.set_defaults(run=run_demo)

    backfill = commands.add_parser(
        "backfill-recent-prices",
        help="Ask Dagster for one backfill of the recent reference prices never materialised",
        description="Asks the Dagster webserver at URL for one backfill of every "
        "reference_prices partition from DAYS days before today to the end of tomorrow that the "
        "instance at $DAGSTER_HOME holds no materialisation of (the daemon runs it). The demo "
        "runs this once Dagster is up.",
    )
    backfill.add_argument(
        "--url",
        default=f"http://{DEFAULT_HOST}:{DEFAULT_UI_PORT}",
        help="the Dagster webserver (default: %(default)s)",
    )
    backfill.add_argument(
        "--days",
        type=int,
        default=DEFAULT_BACKFILL_DAYS,
        help="days before today (default: %(default)s)",
    )
    backfill.set_defaults(run=run_backfill)

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
    from energy_assets.operations.demo import DEFAULT_PLAYGROUND_ARGS, Demo, DemoOptions

    options = DemoOptions(
        host=args.host,
        ui_port=args.ui_port,
        exchange_port=args.exchange_port,
        market_data_port=args.market_data_port,
        dashboard_port=None if args.no_dashboard else args.dashboard_port,
        playground=not args.no_playground,
        playground_args=DEFAULT_PLAYGROUND_ARGS
        if args.playground_args is None
        else args.playground_args,
        backfill_days=args.backfill_days,
        dagster_home=args.dagster_home,
        instance=args.instance,
        postgres_port=args.postgres_port,
        log_dir=args.log_dir,
        dagster_output=args.dagster_output,
        stop_timeout_s=args.stop_timeout,
    )
    return Demo(options).run()


def run_backfill(args: argparse.Namespace) -> int:
    from dagster import DagsterInstance

    from energy_assets.definitions import defs
    from energy_assets.logs import event_logger
    from energy_assets.operations.backfill import request_recent_prices_backfill

    log = event_logger("backfill")
    with DagsterInstance.get() as instance:
        request = request_recent_prices_backfill(args.url, instance, defs, days=args.days)
    if request.partitions:
        log.info(
            "backfill_requested",
            backfill_id=request.backfill_id,
            partitions=len(request.partitions),
            first=request.partitions[0],
            last=request.partitions[-1],
        )
    else:
        log.info("backfill_skipped", reason=request.reason, backfill_id=request.backfill_id or "")
    return 0


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
