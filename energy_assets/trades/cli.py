"""`energy-assets listen`."""

from __future__ import annotations

import argparse

from energy_assets.cli import number, websocket_url, websocket_url_problem
from energy_assets.settings import settings


def register(commands: argparse._SubParsersAction) -> None:
    defaults = settings()
    parser = commands.add_parser(
        "listen",
        help="Capture the exchange's deal confirmations into the capture buffer",
        description="Hold the one connection to ENERGY_EXCHANGE_URL and append every valid "
        "deal to the capture buffer in ENERGY_CAPTURE_DIR. Stops cleanly on SIGTERM/SIGINT.",
    )
    parser.add_argument(
        "--url", type=websocket_url, help="exchange websocket (default: ENERGY_EXCHANGE_URL)"
    )
    parser.add_argument("--capture-dir", help="capture buffer (default: ENERGY_CAPTURE_DIR)")
    parser.add_argument(
        "--seal-seconds",
        type=number(float, high=86400),
        default=defaults.capture_seal_seconds,
        help="seal the open segment after this many seconds (default: %(default)s)",
    )
    parser.add_argument(
        "--seal-frames",
        type=number(int, low=1),
        default=defaults.capture_seal_frames,
        help="... or after this many frames (default: %(default)s)",
    )
    parser.add_argument(
        "--status-every",
        type=number(float, above=True, high=86400),
        default=5.0,
        help="seconds between status lines (default: %(default)s)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from energy_assets.logs import event_logger
    from energy_assets.trades.buffer import CaptureBuffer, ListenerLockHeld
    from energy_assets.trades.listener import CaptureFailed, Listener, run_listener

    current = settings()
    url = args.url or current.exchange_url
    log = event_logger("listener")
    problem = websocket_url_problem(url)
    if problem:  # ENERGY_EXCHANGE_URL (the flag's own value is checked by argparse)
        log.error("refused", reason=f"ENERGY_EXCHANGE_URL: {problem}", url=url)
        return 2
    buffer = CaptureBuffer(
        args.capture_dir or current.capture_dir,
        seal_seconds=args.seal_seconds,
        seal_frames=args.seal_frames,
    )
    log.info("starting", url=url, capture_dir=buffer.directory)
    listener = Listener(url, buffer, log=log, status_every=args.status_every)
    try:
        return run_listener(listener)
    except ListenerLockHeld as err:
        log.error("refused", reason=str(err))
        return 2
    except CaptureFailed:
        return 1
