"""`energy-assets demo`."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "demo", help="Run the whole demo: playground, listener and Dagster UI"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    raise SystemExit("energy-assets demo: not implemented yet")
