"""How fast the playground serves, against the ceiling of the libraries it stands on.

    .venv/bin/python benchmarks/playground.py [--deals 50000] [--hours 8760]

- exchange: good deals/s a plain websocket client receives at `rate=0`, beside a bare
  websockets server pushing one constant, pre-serialised frame (the library's ceiling);
- Market Data API: GETs/s through one keep-alive `requests.Session` for a year of hours,
  beside a bare `ThreadingHTTPServer` answering a constant body the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

from energy_assets.playground.server import ExchangeOptions, Playground


async def receive(url: str, count: int) -> float:
    async with connect(url, max_queue=None) as connection:
        await connection.recv()
        started = time.perf_counter()
        for _ in range(count - 1):
            await connection.recv()
        return (count - 1) / (time.perf_counter() - started)


def bare_websocket_rate(count: int, frame: str) -> float:
    async def main():
        async def push(connection):
            try:
                while True:
                    await connection.send(frame)
            except Exception:  # noqa: BLE001 - the client left
                pass

        async with serve(push, "127.0.0.1", 0, compression=None) as server:
            port = server.sockets[0].getsockname()[1]
            return await receive(f"ws://127.0.0.1:{port}", count)

    return asyncio.run(main())


def year_of_hours(hours: int):
    start = date(2025, 1, 1)
    for n in range(hours):
        yield {
            "delivery_day": (start + timedelta(days=n // 24)).isoformat(),
            "delivery_hour": f"{n % 24:02d}-{n % 24 + 1:02d}",
        }


def fetch_rate(base_url: str, hours: int) -> float:
    with requests.Session() as session:
        started = time.perf_counter()
        for params in year_of_hours(hours):
            session.get(base_url + "/reference-price", params=params).raise_for_status()
        return hours / (time.perf_counter() - started)


class ConstantHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    body = json.dumps(
        {
            "delivery_day": "2025-01-01",
            "delivery_hour": "00-01",
            "last_update": "2024-12-31T23:50:00+00:00",
            "unit": "euro/mwh",
            "value": 27.74,
        }
    ).encode()

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)


def bare_http_rate(hours: int) -> float:
    server = ThreadingHTTPServer(("127.0.0.1", 0), ConstantHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        return fetch_rate(f"http://127.0.0.1:{server.server_address[1]}", hours)
    finally:
        server.shutdown()
        server.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deals", type=int, default=50_000)
    parser.add_argument("--hours", type=int, default=8_760)
    args = parser.parse_args()

    options = ExchangeOptions(rate=0, seed=1, max_deals=args.deals)
    with Playground(exchange=options, exchange_port=0, market_data_port=0) as pg:
        feed = asyncio.run(receive(pg.exchange_url, args.deals))
        sample = pg.sent_deals[0].to_frame()
        fetch = fetch_rate(pg.market_data_url, args.hours)
    ceiling = bare_websocket_rate(args.deals, sample)
    bare = bare_http_rate(args.hours)
    print(f"exchange, rate=0: {feed:,.0f} deals/s received ({args.deals:,} deals)")
    print(f"  bare websockets server, constant frame: {ceiling:,.0f} frames/s")
    print(f"  ratio playground / bare: {feed / ceiling:.2f}")
    print(f"market data, {args.hours:,} hours via one session: {fetch:,.0f} requests/s")
    print(f"  = {1000 / fetch:.2f} ms a request; a year of hours in {args.hours / fetch:.1f} s")
    print(f"  bare ThreadingHTTPServer, constant body: {bare:,.0f} requests/s")
    print(f"  ratio playground / bare: {fetch / bare:.2f}")


if __name__ == "__main__":
    main()
