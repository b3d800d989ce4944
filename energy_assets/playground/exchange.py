"""The stand-in exchange: a websocket server that pushes the feed's frames to every client.

One exchange-wide stream: each frame of `FrameStream` goes to every client connected at that
moment, and the stream only advances while somebody is connected. Nothing is replayed, so a
client that reconnects gets the frames that follow, never the ones before; and since the
stream waits while nobody listens, the frames a client sees depend on the seed, not on when it
connected. Runs on an asyncio loop owned by the caller (the playground's thread).
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from energy_assets.logs import EventLogger
from energy_assets.playground.feed import Frame, FrameStream
from energy_assets.trades.deal import Deal

# When the sender falls this far behind its schedule (a slow client), it resets the schedule
# instead of bursting to catch up.
MAX_LAG_S = 1.0
# "As fast as possible" still lets the loop accept and close connections now and then.
YIELD_EVERY = 64


class ExchangeServer:
    """The websocket side of the playground; `Playground` drives it from its loop thread."""

    def __init__(self, options, host: str, port: int, log: EventLogger):
        if options.rate < 0:
            raise ValueError(f"rate must be >= 0, got {options.rate!r}")
        for name in ("close_every", "drop_every"):
            if (getattr(options, name) or 0) < 0:
                raise ValueError(f"{name} must be >= 0")
        self.options = options
        self.host = host
        self.port = port
        self.log = log
        self.stream = FrameStream(
            seed=options.seed,
            traders=options.traders,
            envelope=options.envelope,
            duplicate_rate=options.duplicate_rate,
            malformed_rate=options.malformed_rate,
            products=options.products,
            legacy=options.legacy,
        )
        self.sent_deals: list[Deal] = []
        self.frames_sent = 0
        self.duplicates_sent = 0
        self.malformed_sent = 0
        self.malformed_by_kind: Counter[str] = Counter()
        self.connections = 0
        self.clean_closes = 0
        self.drops = 0
        self.finished = threading.Event()  # set once max_deals distinct deals went out
        self.changed = threading.Condition()
        self.paused = threading.Event()
        self._sending = threading.Lock()
        self._delivered: set[str] = set()
        self._clients: dict[ServerConnection, int] = {}  # connection -> frames it got
        self._has_clients: asyncio.Event | None = None
        self._server: Server | None = None
        self._feed: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()

    def pause(self) -> None:
        """Send nothing more until resume(); returns once no frame is being sent."""
        self.paused.set()
        with self._sending:
            pass

    def resume(self) -> None:
        self.paused.clear()

    @property
    def connected(self) -> int:
        return len(self._clients)

    async def start(self) -> None:
        # A restart (after stop) gets a new loop: nothing of the old one may be reused.
        self._clients = {}
        self._tasks = set()
        self._has_clients = asyncio.Event()
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            compression=None,
            # The client sends nothing but pongs; a generous timeout keeps a client that is
            # busy (a benchmark, a debugger) from being dropped when no drop was asked for.
            ping_interval=20,
            ping_timeout=60,
            close_timeout=5,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._feed = asyncio.create_task(self._run_feed())
        self._feed.add_done_callback(self._feed_ended)

    def _feed_ended(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            error = task.exception()
            self.log.error("feed_failed", error=f"{type(error).__name__}: {error}")

    async def stop(self) -> None:
        if self._feed is not None:
            self._feed.cancel()
        if self._server is not None:
            self._server.close()  # closes every connection with 1001 (going away)
            try:
                await asyncio.wait_for(self._server.wait_closed(), timeout=5)
            except TimeoutError:
                pass
        for task in list(self._tasks):
            task.cancel()

    async def _handle(self, connection: ServerConnection) -> None:
        self.connections += 1
        self._clients[connection] = 0
        self._has_clients.set()
        peer = connection.remote_address
        self.log.info("client_connected", peer=_peer(peer), connected=len(self._clients))
        try:
            # The contract's client sends nothing; whatever arrives is read and ignored.
            async for _ in connection:
                pass
        except ConnectionClosed:
            pass
        finally:
            self._forget(connection)
            self.log.info("client_disconnected", peer=_peer(peer), connected=len(self._clients))

    def _forget(self, connection: ServerConnection) -> None:
        self._clients.pop(connection, None)
        if not self._clients:
            self._has_clients.clear()

    def _clock(self) -> datetime:
        start = self.options.start_time
        if start is None:
            return datetime.now(UTC)
        step = 1.0 / self.options.rate if self.options.rate else 0.001
        return start + timedelta(seconds=self.stream.frames * step)

    async def _run_feed(self) -> None:
        loop = asyncio.get_running_loop()
        rate = self.options.rate
        step = 1.0 / rate if rate else 0.0
        next_at: float | None = None
        burst = 0
        while True:
            if not self._clients:
                await self._has_clients.wait()
                next_at = None
            slept = False
            if step:
                now = loop.time()
                if next_at is None or next_at < now - MAX_LAG_S:
                    next_at = now
                if next_at > now:
                    await asyncio.sleep(next_at - now)
                    slept = True
                next_at += step
            if not slept:
                burst += 1
                if burst % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
            if not self._clients:
                continue
            # Held (by this loop only) while a frame is drawn and written, so pause() can
            # wait for the frame in progress; never contended within the loop.
            with self._sending:
                if self.paused.is_set():
                    frame = None
                else:
                    frame = self.stream.next_frame(self._clock())
                    delivered = await self._broadcast(frame)
            if frame is None:
                while self.paused.is_set():
                    await asyncio.sleep(0.01)
                next_at = None
                continue
            if delivered and self._reached_max():
                self.finished.set()
                self.log.info("max_deals_sent", deals=len(self.sent_deals))
                return

    def _reached_max(self) -> bool:
        limit = self.options.max_deals
        return limit is not None and len(self.sent_deals) >= limit

    async def _broadcast(self, frame: Frame) -> int:
        delivered = 0
        for connection in list(self._clients):
            try:
                await connection.send(frame.text)
            except ConnectionClosed:
                self._forget(connection)
                continue
            delivered += 1
            self._after_frame(connection)
        if delivered:
            self._record(frame, delivered)
        return delivered

    def _record(self, frame: Frame, delivered: int) -> None:
        with self.changed:
            self.frames_sent += delivered
            if frame.kind == "malformed":
                self.malformed_sent += delivered
                self.malformed_by_kind[frame.malformed_kind] += delivered
            elif frame.deal.id in self._delivered:
                self.duplicates_sent += delivered
            else:
                # A duplicate whose original reached nobody is, for the clients, the deal.
                self._delivered.add(frame.deal.id)
                self.sent_deals.append(frame.deal)
            self.changed.notify_all()

    def _after_frame(self, connection: ServerConnection) -> None:
        count = self._clients.get(connection)
        if count is None:
            return
        count += 1
        self._clients[connection] = count
        drop_every, close_every = self.options.drop_every, self.options.close_every
        if drop_every and count % drop_every == 0:
            self._forget(connection)
            self.drops += 1
            self._spawn(self._drop(connection, count))
        elif close_every and count % close_every == 0:
            self._forget(connection)
            self.clean_closes += 1
            self._spawn(connection.close(1000, f"closing after {count} frames"))

    def _spawn(self, coroutine) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drop(self, connection: ServerConnection, count: int) -> None:
        """Close the TCP connection with no websocket close frame, once the frames already
        written have left the process (so the client gets every frame counted as sent)."""
        transport = connection.transport
        for _ in range(2000):
            if transport.is_closing() or not transport.get_write_buffer_size():
                break
            await asyncio.sleep(0.005)
        self.log.info("client_dropped", peer=_peer(connection.remote_address), frames=count)
        transport.abort()


def _peer(address) -> str:
    if not address:
        return "?"
    return f"{address[0]}:{address[1]}"
