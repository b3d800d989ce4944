"""`energy-assets dashboard`."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("dashboard", help="Serve the desk dashboard on 127.0.0.1:8050")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    raise SystemExit("energy-assets dashboard: not implemented yet")
