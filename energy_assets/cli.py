"""The `energy-assets` command: one sub-command per long-running piece of the platform."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from urllib.parse import urlsplit


def instant(text: str) -> datetime:
    """An argparse type: an ISO-8601 instant with its offset, in UTC (`markets.parse_instant`)."""
    from energy_assets.markets import Invalid, parse_instant

    found = parse_instant(text)
    if isinstance(found, Invalid):
        raise argparse.ArgumentTypeError(found.reason)
    return found


def number(kind, low: float = 0, high: float = math.inf, above: bool = False):
    """An argparse type: a `kind` from `low` (or above it, `above`) to `high`; nan refused."""

    def parse(text: str):
        value = kind(text)
        if not (low < value <= high if above else low <= value <= high):
            bound = f"> {low}" if above else f">= {low}"
            if high < math.inf:
                bound += f" and <= {high}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value

    return parse


def websocket_url_problem(text: str) -> str | None:
    """Why `text` is no websocket URL to connect to (`ws://` or `wss://`, a host, a port in
    range), or None when it is one. Total: never an exception."""
    try:
        parts = urlsplit(text)
        port = parts.port  # raises on a port out of range or not a number
    except ValueError as err:
        return f"not a URL: {err}"
    if parts.scheme not in ("ws", "wss"):
        return "the scheme must be ws:// or wss://"
    if not parts.hostname or any(c.isspace() for c in text):
        return "a host is needed, without spaces"
    if port == 0:
        return "port 0 is no port to connect to"
    return None


def websocket_url(text: str) -> str:
    """An argparse type: `websocket_url_problem` as a usage error."""
    problem = websocket_url_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(f"{problem}: {text!r}")
    return text


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
        try:
            # The parser's defaults are settings too: both inside.
            args = build_parser().parse_args(argv)
            return int(args.run(args) or 0)
        finally:
            sys.stdout.flush()  # a reader gone early (`| head`) is met here, not at exit
    except BrokenPipeError:
        # What is left to print has no reader: not written, and no traceback (Python's
        # documented recipe: stdout to /dev/null, so the flush at exit does not fail again).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
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
