"""`energy-assets dashboard`: the live desk service."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    from energy_assets.cli import number
    from energy_assets.settings import DEFAULT_DASHBOARD_HOST, DEFAULT_DASHBOARD_PORT

    parser = commands.add_parser(
        "dashboard",
        help=f"Serve the live desk on {DEFAULT_DASHBOARD_HOST}:{DEFAULT_DASHBOARD_PORT}",
        description="Serve the live desk: positions from the capture buffer "
        "(ENERGY_CAPTURE_DIR) as deals land, prices and history from the files the batch "
        "layer publishes (ENERGY_DASHBOARD_DIR), pushed to open pages. Never opens DuckDB "
        "nor calls the market-data vendor. With ENERGY_DESK_OIDC_* set, every page needs a "
        "login (docs/desk.md, Login); without, it serves loopback only.",
    )
    for flag, kind, text in (
        ("--host", str, "address to bind (default: ENERGY_DASHBOARD_HOST, 127.0.0.1)"),
        ("--port", number(int, high=65535), "port (default: ENERGY_DASHBOARD_PORT, 8050)"),
        ("--dir", str, "published files (default: ENERGY_DASHBOARD_DIR)"),
        ("--capture-dir", str, "the capture buffer (default: ENERGY_CAPTURE_DIR)"),
        (
            "--streams-per-client",
            number(int, low=1),
            "event streams one client address may hold (default 8)",
        ),
    ):
        parser.add_argument(flag, type=kind, help=text)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from energy_assets.desk.auth import DeskAuth, refuse_to_bind
    from energy_assets.settings import settings

    current = settings()
    host = args.host or current.dashboard_host
    login = DeskAuth.from_settings(current)
    refusal = login if isinstance(login, str) else refuse_to_bind(host, login)
    if refusal:
        print(f"energy-assets dashboard: {refusal}", file=sys.stderr)
        return 2
    import uvicorn

    from energy_assets.desk.app import STREAMS_PER_CLIENT, create_app
    from energy_assets.desk.connections import connection_limit, guarded_protocol

    connections = connection_limit()
    app = create_app(
        args.capture_dir or current.capture_dir,
        args.dir or current.dashboard_dir,
        # The archive beside the capture buffer in use, unless ENERGY_ARCHIVE_URL moves it.
        archive=current.archive_url or None,
        login=login,
        streams_per_client=args.streams_per_client or STREAMS_PER_CLIENT,
        # Half the connections at most hold streams: pages always get in.
        max_streams=connections // 2,
        replay_memory_mb=current.desk_replay_memory_mb,
        renew_hours=current.desk_renew_hours,
    )
    uvicorn.run(
        app,
        host=host,
        port=args.port if args.port is not None else current.dashboard_port,
        log_level="warning",
        # Head-read and write-stall timeouts, a cap on connections: connections.py.
        http=guarded_protocol(connections),
        # 500 page loads at once queue instead of being refused.
        backlog=2048,
        timeout_graceful_shutdown=2,
    )
    return 0
