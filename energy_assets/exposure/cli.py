"""`energy-assets dashboard`: serve the desk dashboard's static pages."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "dashboard",
        help="Serve the desk dashboard on 127.0.0.1:8050 (static files only)",
        description="Serve the pages that the exposure_dashboard asset renders into "
        "ENERGY_DASHBOARD_DIR. Never opens DuckDB nor calls the market-data vendor.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8050, help="port (default 8050)")
    parser.add_argument(
        "--dir", default=None, help="directory of the pages (default: ENERGY_DASHBOARD_DIR)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from energy_assets.exposure.server import serve
    from energy_assets.settings import settings

    serve(Path(args.dir) if args.dir else settings().dashboard_dir, args.host, args.port)
    return 0
