"""A plain websocket client for the playground's tests: reads frames as a listener would."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from energy_assets.playground.server import Playground
from tests.conftest import free_port


@dataclass
class Reading:
    """The raw frames one connection received and how it ended."""

    frames: list[str] = field(default_factory=list)
    closed: ConnectionClosed | None = None  # None: still open when reading stopped


async def _read(url: str, count: int | None, idle: float, done) -> Reading:
    reading = Reading()
    async with connect(url, ping_interval=None, close_timeout=2) as connection:
        quiet = 0.0
        try:
            while count is None or len(reading.frames) < count:
                # Once the sender says it is done, a short silence means the end.
                if quiet >= idle or (quiet >= 0.2 and done is not None and done.is_set()):
                    break
                try:
                    # recv() is cancellation-safe: a timeout loses no frame.
                    reading.frames.append(await asyncio.wait_for(connection.recv(), 0.1))
                    quiet = 0.0
                except TimeoutError:
                    quiet += 0.1
        except ConnectionClosed as closed:
            reading.closed = closed
    return reading


def read_frames(url: str, count: int | None = None, idle: float = 3.0, done=None) -> Reading:
    """Frames from one connection until `count` arrived, the server closed it, or nothing
    came for `idle` seconds (0.2 s once the `done` event, e.g. `pg.finished`, is set)."""
    return asyncio.run(_read(url, count, idle, done))


def read_connections(url: str, connections: int, idle: float = 3.0, done=None) -> list[Reading]:
    """Reconnect after each close, as a listener does, `connections` times."""
    return [read_frames(url, idle=idle, done=done) for _ in range(connections)]


@pytest.fixture(scope="module")
def shared_playground():
    """One default playground for a module's read-only checks (each start costs ~0.1 s)."""
    with Playground(exchange_port=free_port(), market_data_port=free_port()) as playground:
        yield playground
