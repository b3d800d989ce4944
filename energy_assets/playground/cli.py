"""`energy-assets playground`."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("playground", help="Run the stand-in exchange and Market Data API")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    raise SystemExit("energy-assets playground: not implemented yet")
