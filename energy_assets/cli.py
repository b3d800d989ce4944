"""The `energy-assets` command: one sub-command per long-running piece of the platform."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import datetime


def instant(text: str) -> datetime:
    """An argparse type: an ISO-8601 instant with its offset, in UTC (`markets.parse_instant`)."""
    from energy_assets.markets import Invalid, parse_instant

    found = parse_instant(text)
    if isinstance(found, Invalid):
        raise argparse.ArgumentTypeError(found.reason)
    return found


def build_parser() -> argparse.ArgumentParser:
    # Each domain registers its own sub-commands and imports its heavy modules lazily,
    # so `energy-assets --help` stays fast.
    from energy_assets.desk import cli as desk_cli
    from energy_assets.journals import cli as journals_cli
    from energy_assets.operations import demo as demo_cli
    from energy_assets.playground import cli as playground_cli
    from energy_assets.trades import cli as trades_cli

    parser = argparse.ArgumentParser(prog="energy-assets", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (playground_cli, trades_cli, desk_cli, journals_cli, demo_cli):
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from pydantic import ValidationError

    from energy_assets.settings import refusal

    try:
        # The parser's defaults are settings too: both inside.
        args = build_parser().parse_args(argv)
        return int(args.run(args) or 0)
    except ValidationError as error:
        # A bad ENERGY_* variable or demo option: refused by name before anything starts,
        # with the usage error's exit status, not a traceback.
        demo = error.title == "DemoOptions"
        where = "energy-assets demo" if demo else "energy-assets"
        prefix = "ENERGY_DEMO_" if demo else "ENERGY_"
        print(f"{where}: {refusal(error, prefix, flags=demo)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
