"""Trade-capture fixtures: a scripted exchange that sends exact frames, deals to send, a
listener to run in a thread or as the real `energy-assets listen` process, and a way to read
back what reached DuckDB."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from tenacity import wait_random_exponential
from websockets.asyncio.server import serve

from energy_assets.tables import RAW_TRADES
from energy_assets.trades.buffer import CaptureBuffer, sealed_files
from energy_assets.trades.deal import Deal, validate_deal
from energy_assets.trades.drain import drain
from energy_assets.trades.listener import Listener
from tests.conftest import REPO, free_port

#: The listener's reconnect wait, shrunk for tests: within 0.2 s first, never over 1 s.
FAST_RECONNECTS = wait_random_exponential(multiplier=0.2, max=1.0)


def make_deals(count: int, seed: int = 0) -> list[Deal]:
    rng = random.Random(seed)
    base = datetime(2026, 11, 25, 6, 0, tzinfo=UTC)
    deals = []
    for _ in range(count):
        hour = rng.randrange(24)
        executed = base + timedelta(
            seconds=rng.randrange(86_400), microseconds=rng.randrange(10**6)
        )
        deals.append(
            validate_deal(
                dict(
                    id=f"{rng.getrandbits(128):032x}",
                    price=round(rng.uniform(-50, 300), 2),
                    quantity=round(rng.uniform(0.1, 25), 1),
                    direction=rng.choice(["buy", "sell"]),
                    delivery_day=str(date(2026, 11, 25) + timedelta(days=rng.randrange(2))),
                    delivery_hour=f"{hour:02d}-{hour + 1:02d}",
                    trader_id=f"trader_{rng.randrange(15)}",
                    execution_time=executed.isoformat().replace(
                        "+00:00", rng.choice(["Z", "+00:00"])
                    ),
                )
            )
        )
    return deals


def frames(deals: list[Deal], envelope: str = "deal_confirmation") -> list[tuple]:
    return [("send", deal.to_frame(envelope)) for deal in deals]


@dataclass
class ScriptedExchange:
    """A websocket server on a free loopback port. Connection n plays `scripts[n]` (the last
    script repeats): ("send", text), ("sleep", s), ("wait", threading.Event), ("close", code),
    ("drop",) for an abrupt TCP abort, ("hold",) to stay open until the server stops, ("mute",)
    to go half-open: the connection stays up, nothing more is sent, pings go unanswered,
    ("ping_flood",): pings as fast as it can, never reading, until the peer gives up,
    ("text_bytes", data): a text frame of any bytes, valid UTF-8 or not."""

    scripts: list[list[tuple]]
    port: int = field(default_factory=free_port)
    connections: int = 0
    finished: list[threading.Event] = field(default_factory=list)
    muted_at: list[datetime] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> ScriptedExchange:
        self._ready = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "scripted exchange did not start"
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopped.set)
            self._thread.join(10)

    def script_done(self, index: int, timeout: float = 30) -> None:
        while len(self.finished) <= index:
            time.sleep(0.01)
        assert self.finished[index].wait(timeout), f"script {index} did not finish"

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        async with serve(self._handle, "127.0.0.1", self.port):
            self._ready.set()
            await self._stopped.wait()

    async def _handle(self, ws) -> None:
        index = self.connections
        self.connections += 1
        done = threading.Event()
        self.finished.append(done)
        script = self.scripts[min(index, len(self.scripts) - 1)]
        try:
            for step in script:
                kind = step[0]
                if kind == "send":
                    await ws.send(step[1])
                elif kind == "sleep":
                    await asyncio.sleep(step[1])
                elif kind == "wait":
                    while not step[1].is_set():
                        await asyncio.sleep(0.01)
                elif kind == "close":
                    await ws.close(step[1])
                    return
                elif kind == "drop":
                    # What was sent before the drop reaches the peer: abort() discards the
                    # transport's unsent buffer, which on a busy machine still held frames.
                    while ws.transport.get_write_buffer_size():
                        await asyncio.sleep(0.005)
                    await asyncio.sleep(0.05)
                    ws.transport.abort()
                    return
                elif kind == "hold":
                    await self._stopped.wait()
                    return
                elif kind == "text_bytes":  # a text frame of these bytes, UTF-8 or not
                    ws.protocol.send_text(step[1])
                    ws.transport.writelines(ws.protocol.data_to_send())
                elif kind == "ping_flood":
                    # Pings as fast as the loop writes them, reading nothing back.
                    ws.transport.pause_reading()
                    while not ws.transport.is_closing():
                        for _ in range(1000):
                            ws.protocol.send_ping(b"p" * 125)
                        ws.transport.writelines(ws.protocol.data_to_send())
                        await asyncio.sleep(0)
                    return
                elif kind == "mute":
                    self.muted_at.append(datetime.now(UTC))
                    ws.transport.pause_reading()
                    await self._stopped.wait()
                    ws.transport.resume_reading()  # to notice the peer is gone, not wait 10 s
                    return
            await self._stopped.wait()
        finally:
            done.set()


@pytest.fixture
def exchange() -> Iterator:
    """`exchange(scripts)` starts a ScriptedExchange; stopped after the test."""
    started = []

    def start(scripts: list[list[tuple]]) -> ScriptedExchange:
        server = ScriptedExchange(scripts).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


class ThreadListener:
    """The real Listener on its own event loop in a thread (signals stay with pytest)."""

    def __init__(self, url: str, directory: Path, wait=FAST_RECONNECTS, **buffer_options):
        self.buffer = CaptureBuffer(directory, **buffer_options)
        self.listener = Listener(url, self.buffer, status_every=1.0, wait=wait)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as err:  # surfaced by stop()
            self.error = err

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self.listener.run()

    def start(self) -> ThreadListener:
        self._thread.start()
        return self

    def stop(self) -> None:
        deadline = time.monotonic() + 5
        while not hasattr(self, "_loop") and time.monotonic() < deadline:
            time.sleep(0.01)
        self._loop.call_soon_threadsafe(self.listener.stop)
        self._thread.join(15)
        assert not self._thread.is_alive(), "listener did not stop"
        if self.error:
            raise self.error


@pytest.fixture
def thread_listener() -> Iterator:
    started = []

    def start(url: str, directory: Path, **options) -> ThreadListener:
        listener = ThreadListener(url, directory, **options).start()
        started.append(listener)
        return listener

    yield start
    for listener in started:
        if listener._thread.is_alive():
            listener.stop()


class ListenerProcess:
    """`energy-assets listen` as a real subprocess, logging to a file."""

    def __init__(self, url: str, directory: Path, log: Path, *extra: str):
        env = {**os.environ, "ENERGY_EXCHANGE_URL": url, "ENERGY_CAPTURE_DIR": str(directory)}
        self.log_path = log
        self._log = open(log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "energy_assets.cli", "listen", "--status-every", "1", *extra],
            cwd=REPO,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_for(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log_path.read_text():
                return
            assert self.proc.poll() is None, self.log_path.read_text()
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not logged:\n{self.log_path.read_text()}")

    def terminate(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self._log.close()
        return code


@pytest.fixture
def listener_process(tmp_path: Path) -> Iterator:
    started = []

    def start(url: str, directory: Path, *extra: str) -> ListenerProcess:
        process = ListenerProcess(url, directory, tmp_path / "listener.log", *extra)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.proc.poll() is None:
            process.proc.kill()
            process.proc.wait()


def captured_ids(directory: Path) -> list[str]:
    """Deal ids in the buffer, sealed or open (torn lines skipped), in capture order.

    The listener seals a segment by renaming `.jsonl.open` to `.jsonl`; one sealed between
    listing the folder and reading it is read again under its new name."""
    while True:
        try:
            return _read_ids(directory / "segments")
        except FileNotFoundError:
            continue


def _read_ids(folder: Path) -> list[str]:
    ids = []
    for path in sorted(folder.glob("*.jsonl*")):
        for line in path.read_bytes().split(b"\n"):
            try:
                ids.append(json.loads(line)["id"])
            except ValueError:
                pass
    return ids


def wait_until(predicate, timeout: float = 30, message: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {message}")


def drain_all(directory: Path, database: Path):
    with duckdb.connect(str(database)) as conn:
        return drain(conn, directory)


def stored_deals(database: Path) -> dict[str, Deal]:
    """energy.raw_trades read back as Deals (execution_time as an instant, in UTC)."""
    with duckdb.connect(str(database), read_only=True) as conn:
        rows = conn.execute(
            "SELECT id, price, quantity, direction, delivery_day, delivery_hour, trader_id, "
            f"execution_time, market, delivery_start, delivery_end FROM {RAW_TRADES}"
        ).fetchall()
    deals = {}
    for row in rows:
        assert row[0] not in deals, f"id {row[0]} stored twice"
        deals[row[0]] = _normalised(
            Deal(
                *row[:4],
                str(row[4]),
                *row[5:7],
                row[7].isoformat(),
                row[8],
                *(instant.astimezone(UTC).isoformat() for instant in row[9:11]),
            )
        )
    return deals


def _normalised(deal: Deal) -> Deal:
    moment = datetime.fromisoformat(deal.execution_time).astimezone(UTC)
    return Deal(**{**deal.to_dict(), "execution_time": moment.isoformat()})


def expected(deals: list[Deal]) -> dict[str, Deal]:
    """The first receipt of every id, as the drain must store it."""
    result: dict[str, Deal] = {}
    for deal in deals:
        result.setdefault(deal.id, _normalised(deal))
    return result


def pending(directory: Path) -> int:
    segments, gaps = sealed_files(directory)
    return len(segments) + len(gaps)
