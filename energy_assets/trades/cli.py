"""`energy-assets listen`."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "listen", help="Capture the exchange's deal confirmations into the capture buffer"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    raise SystemExit("energy-assets listen: not implemented yet")
