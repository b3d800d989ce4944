"""`energy-assets playground`: the stand-in exchange and Market Data API in one process."""

from __future__ import annotations

import argparse

from energy_assets.cli import instant, number
from energy_assets.settings import DEFAULT_EXCHANGE_PORT, DEFAULT_MARKET_DATA_PORT

DESCRIPTION = """\
Run the stand-in exchange (websocket deal confirmations) and Market Data API (reference
prices) of docs/playground.md in one process, until Ctrl-C or SIGTERM.

Without fault switches both speak exactly the contract of shared/external-services.md.
Every misbehaviour the contract names is a switch below; with --seed the deal stream and
the prices are reproducible."""


def _products(text: str) -> tuple[tuple[str, int], ...]:
    from energy_assets.playground.feed import parse_products

    try:
        return parse_products(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "playground",
        help="Run the stand-in exchange and Market Data API",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    where = parser.add_argument_group("where it listens")
    where.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    where.add_argument(
        "--exchange-port",
        type=number(int, high=65535),
        default=DEFAULT_EXCHANGE_PORT,
        help="exchange websocket port (default %(default)s; 0 = any free port)",
    )
    where.add_argument(
        "--market-data-port",
        type=number(int, high=65535),
        default=DEFAULT_MARKET_DATA_PORT,
        help="Market Data API port (default %(default)s; 0 = any free port)",
    )

    feed = parser.add_argument_group("exchange feed")
    feed.add_argument(
        "--rate",
        type=number(float),
        default=3.0,
        help="frames per second (default %(default)s; 0 = as fast as possible)",
    )
    feed.add_argument(
        "--traders",
        type=number(int, above=True),
        default=5,
        help="traders flex_trader_1..N (default %(default)s)",
    )
    feed.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed of the deal stream and of the prices (default: a fresh deal stream each "
        "run, printed at start, and price seed 0)",
    )
    feed.add_argument(
        "--products",
        type=_products,
        default=None,
        help="market:minutes products the deals are drawn from, e.g. DE:60,GB:30 (default: "
        "every product of every market in energy_assets/markets/)",
    )
    feed.add_argument(
        "--legacy-frames",
        dest="legacy",
        action="store_true",
        help="frames of the contract's first revision: the default market's hours named by "
        "delivery_day and delivery_hour only, like the original playground",
    )
    feed.add_argument(
        "--max-deals",
        type=number(int, above=True),
        default=None,
        help="stop sending after this many distinct good deals (default: never)",
    )
    feed.add_argument(
        "--start-time",
        type=instant,
        default=None,
        help="simulated clock for execution times, e.g. 2023-02-21T06:00:00+00:00 "
        "(default: the wall clock)",
    )

    prices = parser.add_argument_group("reference prices")
    prices.add_argument(
        "--revise-every",
        type=number(float, above=True),
        default=600.0,
        help="seconds between revisions of every open hour (default %(default)s)",
    )
    prices.add_argument(
        "--vendor-grid",
        action="store_true",
        help="revise on the wall-clock 10-minute grid and publish each revision 0-30 s late "
        "(overrides --revise-every)",
    )

    faults = parser.add_argument_group("fault switches (all off by default)")
    faults.add_argument(
        "--duplicate-rate",
        type=number(float, high=1),
        default=0.0,
        help="share of deals sent a second time, within a few frames (0..1)",
    )
    faults.add_argument(
        "--malformed-rate",
        type=number(float, high=1),
        default=0.0,
        help="share of frames that are malformed, taking every kind in turn: not JSON, not an "
        "object, another message type, a missing field, a mistyped field, an out-of-range field",
    )
    faults.add_argument(
        "--close-every",
        type=number(int),
        default=0,
        metavar="N",
        help="close each connection cleanly (code 1000) after N frames",
    )
    faults.add_argument(
        "--drop-every",
        type=number(int),
        default=0,
        metavar="N",
        help="drop each connection abruptly (TCP closed, no close frame) after N frames",
    )
    faults.add_argument(
        "--envelope",
        choices=("deal_confirmation", "trade_confirmation", "mixed"),
        default="deal_confirmation",
        help="message name: the original's, the newer spec's (execution_time may end in Z), "
        "or a random mix (default %(default)s)",
    )
    faults.add_argument(
        "--error-rate",
        type=number(float, high=1),
        default=0.0,
        help="share of Market Data answers that are 5xx (0..1)",
    )
    faults.add_argument(
        "--latency",
        type=number(float),
        default=0.0,
        metavar="SECONDS",
        help="seconds added to every Market Data answer",
    )
    faults.add_argument(
        "--rate-limit-per-minute",
        type=number(int, above=True),
        default=None,
        metavar="N",
        help="answer 429 (with Retry-After) past N requests in any 60 s",
    )
    faults.add_argument(
        "--rate-limit-per-hour",
        type=number(int, above=True),
        default=None,
        metavar="M",
        help="answer 429 (with Retry-After) past M requests in any 3,600 s",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import secrets
    import signal
    import threading
    from dataclasses import fields

    from energy_assets.logs import event_logger
    from energy_assets.playground.feed import DEFAULT_PRODUCTS
    from energy_assets.playground.server import ExchangeOptions, MarketDataOptions, Playground

    # Without --seed each run sends new deal ids (a restarted demo must not resend ids the
    # warehouse already holds), while the vendor's prices stay those of seed 0.
    deal_seed = args.seed if args.seed is not None else secrets.randbits(31)
    price_seed = args.seed if args.seed is not None else 0
    log = event_logger("playground")
    given = vars(args)

    def options(kind, **values):
        """The switches named as `kind`'s fields, and `values`."""
        return kind(**{f.name: given[f.name] for f in fields(kind) if f.name in given} | values)

    try:
        playground = Playground(
            exchange=options(
                ExchangeOptions, seed=deal_seed, products=args.products or DEFAULT_PRODUCTS
            ),
            market_data=options(MarketDataOptions, seed=price_seed),
            host=args.host,
            exchange_port=args.exchange_port,
            market_data_port=args.market_data_port,
            log=log,
        )
    except ValueError as err:
        raise SystemExit(f"energy-assets playground: {err}") from None
    stop = threading.Event()

    def request_stop(signum, _frame):
        log.info("stopping", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        playground.start()
    except OSError as err:
        raise SystemExit(f"energy-assets playground: cannot listen: {err}") from None
    bind = f"[{args.host}]" if ":" in args.host else args.host
    print(
        f"exchange listening on ws://{bind}:{playground.exchange_port} "
        f"(connect to {playground.exchange_url}; seed {deal_seed}, rate {args.rate}/s)",
        flush=True,
    )
    print(
        f"market data listening on http://{bind}:{playground.market_data_port} "
        f"(connect to {playground.market_data_url}; price seed {price_seed})",
        flush=True,
    )
    try:
        while not stop.wait(10.0):
            stats = playground.market_data_stats
            log.info(
                "status",
                connected=playground.connected,
                deals_sent=len(playground.sent_deals),
                frames_sent=playground.frames_sent,
                http_requests=stats.requests,
                http_5xx=stats.server_errors,
                http_429=stats.rate_limited,
            )
    finally:
        playground.stop()
    return 0
