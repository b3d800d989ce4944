"""The exchange listener: one websocket connection, every frame validated, every good deal
appended to the capture buffer. It never opens DuckDB; the `raw_trades` drain does that.

The exchange replays nothing, so the listener's job is to stay connected: it reconnects forever
with capped exponential backoff and jitter, and records every stretch in which deals may be
missing as a feed gap (start, end, reason) through the buffer: no connection, a silent exchange,
and the time it was not running at all (docs/trades.md, "Feed gaps").
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import attrgetter

from tenacity import RetryCallState, wait_random_exponential
from tenacity.wait import WaitBaseT
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidHandshake,
)

from energy_assets.logs import EventLogger, event_logger
from energy_assets.trades.buffer import (
    STATE_FILE,
    CaptureBuffer,
    Gap,
    iso,
    read_listener_state,
    refused_today,
    resumed_gap,
    utc_instant,
    utc_now,
)
from energy_assets.trades.deal import OTHER_TERMS, TERMS, Deal, Refused, parse_frame, show

#: The pause before reconnect n (from 1): full jitter under min(30 s, 0.5 s * 2**(n-1)), so the
#: first retry comes within 0.5 s.
RECONNECT_WAIT = wait_random_exponential(multiplier=0.5, max=30)
#: A connection that lived this long (or delivered a deal) starts the count again from 1.
HEALTHY_CONNECTION_SECONDS = 10.0
#: The keepalive: a ping this often, and a connection on which nothing (no frame, no answer to
#: a ping) was heard for `SILENCE_LIMIT_SECONDS` is given up, so a half-open exchange is
#: noticed within 15 s of the last thing it sent.
PING_EVERY_SECONDS = 5.0
SILENCE_LIMIT_SECONDS = 12.0
#: Bytes we may have written that the exchange has not read; past this the connection is given
#: up. The websocket library answers each ping at once and unthrottled, so an exchange pinging
#: without reading grows the listener without bound (docs/trades.md, "Feed gaps").
UNSENT_LIMIT = 1024 * 1024
#: The listener's own loop not running this long (SIGSTOP, a frozen VM, a starved machine) is
#: recorded as a feed gap: the exchange may have dropped us meanwhile.
STALL_SECONDS = 10.0


class CaptureFailed(RuntimeError):
    """The buffer could not take a frame (disk full, permissions): the listener stops with an
    error instead of reading frames it cannot keep."""


#: Receipts of one deal id written to the buffer while the listener remembers the id: the
#: deal, then two of the exchange's repeats as evidence. A later repeat is counted
#: (`duplicates_not_kept`), not written: an exchange repeating one confirmation as fast as it
#: can wrote 14 MB of segments a second. Dropping it loses nothing: the drain keeps the first
#: receipt, which is written already, either sealed (fsynced) or earlier in the same open
#: segment, so no crash can keep the repeat and lose it.
RECEIPTS_KEPT = 3


_BUT_THE_INSTANT = attrgetter(*(name for name in TERMS if name != "execution_time"))


def terms(deal: Deal) -> int:
    """What a confirmation books (`deal.TERMS`), as a hash, its execution time as the buffer
    writes it: a repeat in another spelling of the same instant is the same deal."""
    return hash((_BUT_THE_INSTANT(deal), utc_instant(deal.execution_time)))


class RecentIds:
    """Recently seen deal ids, how many times each came and the terms of the first receipt,
    bounded: an id forgotten only means its next repeats are written again, and the drain
    drops them."""

    def __init__(self, size: int = 100_000):
        self.size = size
        self._ids: OrderedDict[str, tuple[int, int]] = OrderedDict()

    def receipt(self, deal: Deal) -> tuple[int, bool]:
        """Which receipt of `deal`'s id this is (1 for the first), and whether it books the
        same as the first (one that does not is no repeat: it is not counted)."""
        mine = terms(deal)
        count, first = self._ids.get(deal.id, (0, mine))
        if mine != first:
            return count, False
        self._ids[deal.id] = (count + 1, first)
        if count == 0 and len(self._ids) > self.size:
            self._ids.popitem(last=False)
        return count + 1, True


@dataclass
class Counters:
    frames: int = 0
    deals: int = 0
    duplicates: int = 0
    #: Repeats past RECEIPTS_KEPT, counted and not written.
    duplicates_not_kept: int = 0
    quarantined: int = 0
    #: Refused frames not written to the quarantine: the day's file was full.
    not_kept: int = 0
    reconnects: int = 0
    gaps: int = 0


class Listener:
    """Holds the one exchange connection and feeds the capture buffer."""

    def __init__(
        self,
        url: str,
        buffer: CaptureBuffer,
        log: EventLogger | None = None,
        status_every: float = 5.0,
        wait: WaitBaseT = RECONNECT_WAIT,
        open_timeout: float = 10.0,
    ):
        self.url = url
        self.buffer = buffer
        self._full_day = ""
        self.log = log or event_logger("listener")
        self.status_every = status_every
        self.wait = wait
        self._attempts = RetryCallState(None, None, (), {})  # `wait` reads its attempt_number
        self.open_timeout = open_timeout
        self.counters = Counters()
        self.recent = RecentIds()
        self.connected = False
        # The last moment the exchange was heard from (a frame, a pong, the handshake): where a
        # gap starts when the connection turns out to be gone.
        self.heard_at: datetime | None = None
        self._heard_mono = 0.0
        # The open feed gap: since when we may be missing deals, and why.
        self.gap_since: datetime | None = None
        self.gap_reason = ""
        self.failure: BaseException | None = None
        # Deal confirmations refused today (UTC), for the desk's banner: {"day", "count",
        # "last_at", "last_reason"}, carried over a restart on the same day.
        self.refused: dict = {}
        self._stop = asyncio.Event()
        self._status_mark = (time.monotonic(), 0)

    def stop(self) -> None:
        self._stop.set()

    # -- gaps ------------------------------------------------------------------------------
    def _resume_gap_from_last_run(self) -> None:
        path = self.buffer.directory / STATE_FILE
        try:
            written = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        except FileNotFoundError:
            return  # first run on this buffer: nothing was promised before it
        except OSError:
            written = utc_now()
        state = read_listener_state(self.buffer.directory)
        self.gap_since, self.gap_reason = resumed_gap(state, written)
        self.refused = refused_today(state, utc_now())

    def _heard(self, moment: datetime) -> None:
        self.heard_at = moment
        self._heard_mono = time.monotonic()

    def _open_gap(self, reason: str) -> None:
        """Deals may be missing from the last moment the exchange was heard from (not from
        when its silence was noticed) until the next connection."""
        if self.gap_since is None:
            self.gap_since = self.heard_at or utc_now()
            self.gap_reason = reason
            self.log.warning("feed_gap_started", since=iso(self.gap_since), reason=reason)

    def _close_gap(self) -> None:
        if self.gap_since is None:
            return
        self._record_gap(Gap(self.gap_since, utc_now(), self.gap_reason))
        self.gap_since = None
        self.gap_reason = ""

    def _record_gap(self, gap: Gap) -> None:
        self.buffer.record_gap(gap)
        self.counters.gaps += 1
        self.log.warning(
            "feed_gap_recorded",
            start=iso(gap.start),
            end=iso(gap.end),
            seconds=round((gap.end - gap.start).total_seconds(), 3),
            reason=gap.reason,
        )

    def _write_state(self, stopping: bool = False) -> None:
        connected = self.connected and not stopping
        state = {"heartbeat": iso(utc_now()), "connected": connected, "url": self.url}
        if self.heard_at is not None:
            state["heard_at"] = iso(self.heard_at)
        if self.gap_since is not None:
            state["gap_since"] = iso(self.gap_since)
            state["gap_reason"] = self.gap_reason
        if self.refused:
            state["refused"] = self.refused
        self.buffer.write_state(state)

    # -- frames ----------------------------------------------------------------------------
    def on_frame(self, raw: str | bytes) -> None:
        received_at = utc_now()
        self.counters.frames += 1
        self._heard(received_at)
        try:
            deal = parse_frame(raw, received_at)
            if isinstance(deal, Refused):
                self._quarantine(raw, deal.reason, received_at)
                if deal.confirmation:
                    self._refused_confirmation(deal.reason, received_at)
                return
            receipt, same = self.recent.receipt(deal)
            if not same:
                # The first receipt is booked; these terms are not, and the desk is told.
                reason = f"deal {deal.id} {OTHER_TERMS}"
                self._quarantine(raw, reason, received_at)
                self._refused_confirmation(reason, received_at)
                return
            if receipt > 1:
                self.counters.duplicates += 1
                if receipt > RECEIPTS_KEPT:
                    self.counters.duplicates_not_kept += 1
                    return
            # A repeat is captured too, up to RECEIPTS_KEPT: the drain keeps the first.
            self.buffer.append(deal, received_at)
            self.counters.deals += 1
        except OSError:
            raise  # the buffer cannot keep frames: the caller stops the listener
        except Exception as err:
            # Last resort: a frame no check foresaw must not stop the feed (§6 of the contract).
            reason = f"processing failed: {type(err).__name__}: {show(str(err))}"
            self.log.error("frame_failed", reason=reason)
            self._quarantine(raw, reason, received_at)

    def _refused_confirmation(self, reason: str, received_at: datetime) -> None:
        """A deal the exchange confirmed and the book lacks: counted for the desk's banner."""
        day = f"{received_at:%Y-%m-%d}"
        count = self.refused.get("count", 0) if self.refused.get("day") == day else 0
        self.refused = {"day": day, "count": count + 1, "last_at": iso(received_at)}
        self.refused["last_reason"] = reason

    def _quarantine(self, raw: str | bytes, reason: str, received_at: datetime) -> None:
        self.counters.quarantined += 1
        if not self.buffer.quarantine(raw, reason, received_at):
            self.counters.not_kept += 1
            day = f"{received_at:%Y-%m-%d}"
            if self._full_day != day:  # once a day: the status line counts the rest
                self._full_day = day
                self.log.warning("quarantine_full", day=day)

    def status(self) -> None:
        now = time.monotonic()
        since, frames_then = self._status_mark
        rate = (self.counters.frames - frames_then) / max(now - since, 1e-9)
        self._status_mark = (now, self.counters.frames)
        self.log.info(
            "status",
            connected=self.connected,
            frames_per_s=round(rate, 1),
            frames=self.counters.frames,
            deals=self.counters.deals,
            duplicates_seen=self.counters.duplicates,
            duplicates_not_kept=self.counters.duplicates_not_kept,
            quarantined=self.counters.quarantined,
            quarantined_not_kept=self.counters.not_kept,
            reconnects=self.counters.reconnects,
            gaps=self.counters.gaps,
            segments_sealed=self.buffer.sealed_segments,
        )

    async def _ticker(self) -> None:
        next_status = time.monotonic() + self.status_every
        ticked, ticked_at = time.monotonic(), utc_now()
        while not self._stop.is_set():
            stalled = time.monotonic() - ticked
            if stalled >= STALL_SECONDS:
                # Frozen: frames read after it prove nothing about the stretch itself, so a gap
                # open now (the exchange dropped us meanwhile) starts before it, and otherwise
                # the stretch is a gap of its own.
                if self.gap_since is not None:
                    self.gap_since = min(self.gap_since, ticked_at)
                else:
                    self._record_gap(
                        Gap(ticked_at, utc_now(), f"listener not running for {stalled:.0f} s")
                    )
            ticked, ticked_at = time.monotonic(), utc_now()
            try:
                self.buffer.seal_if_due()
                self._write_state()
            except OSError as err:
                self._fail(err)
                return
            if time.monotonic() >= next_status:
                self.status()
                next_status = max(next_status + self.status_every, time.monotonic())
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=0.2)
            except TimeoutError:
                pass

    async def _keepalive(self, ws, silence: list[str]) -> None:
        """Pings every `PING_EVERY_SECONDS`; a pong counts as heard. Once nothing was heard
        for `SILENCE_LIMIT_SECONDS`, or the exchange leaves more than `UNSENT_LIMIT` bytes of
        ours unread, it says why in `silence` and aborts the connection. Time the loop itself
        did not run (see `_ticker`) is not held against the exchange."""
        next_ping = 0.0
        awake = time.monotonic()
        while True:
            now = time.monotonic()
            if now - awake > 2.0:  # a 0.5 s sleep overran: we were not listening
                self._heard_mono = max(self._heard_mono, now)
            awake = now
            silent = now - self._heard_mono
            unsent = ws.transport.get_write_buffer_size()
            if silent >= SILENCE_LIMIT_SECONDS or unsent > UNSENT_LIMIT:
                silence.append(
                    f"exchange silent for {silent:.0f} s (no frame, no answer to pings)"
                    if silent >= SILENCE_LIMIT_SECONDS
                    else f"exchange not reading: {unsent} bytes of ours unsent"
                )
                ws.transport.abort()
                return
            # Only onto an empty buffer: a ping waits for the buffer to drain, and would wait
            # forever on an exchange that does not read.
            if now >= next_ping and not unsent:
                next_ping = now + PING_EVERY_SECONDS
                try:
                    pong = await ws.ping()
                except ConnectionClosed:
                    return  # the reader says why
                pong.add_done_callback(self._on_pong)
            await asyncio.sleep(0.5)

    def _on_pong(self, pong: asyncio.Future) -> None:
        if not pong.cancelled() and pong.exception() is None:
            self._heard(utc_now())

    # -- connection ------------------------------------------------------------------------
    async def _session(self) -> str:
        """One connection, until it ends; returns why it ended."""
        started = time.monotonic()
        deals_before = self.counters.deals
        try:
            async with connect(
                self.url,
                open_timeout=self.open_timeout,
                ping_interval=None,  # our own keepalive: it notes when a pong was heard
                close_timeout=2,
                max_size=2**20,
                # Frames read but not yet processed: enough to ride out a sealing fsync at
                # full speed, bounded so a stalled disk pushes back on TCP, not on memory.
                max_queue=4096,
            ) as ws:
                self.connected = True
                self._heard(utc_now())
                self._close_gap()
                self.log.info("connected", url=self.url, reconnects=self.counters.reconnects)
                silence: list[str] = []
                keepalive = asyncio.ensure_future(self._keepalive(ws, silence))
                reader = asyncio.ensure_future(self._read(ws))
                stopper = asyncio.ensure_future(self._stop.wait())
                try:
                    done, _ = await asyncio.wait(
                        {reader, stopper}, return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    keepalive.cancel()
                if reader in done:
                    stopper.cancel()
                    reason = reader.result()
                    return silence[0] if silence else reason
                reader.cancel()
                return "listener stopped"
        except ConnectionClosedOK as err:
            return f"connection closed cleanly ({_close_text(err)})"
        except ConnectionClosedError as err:
            return f"connection dropped ({_close_text(err)})"
        except (OSError, TimeoutError, InvalidHandshake) as err:
            return f"cannot connect: {type(err).__name__}: {err}"
        finally:
            self.connected = False
            lived = time.monotonic() - started
            if self.counters.deals > deals_before or lived >= HEALTHY_CONNECTION_SECONDS:
                self._attempts.attempt_number = 1

    def _fail(self, err: BaseException) -> None:
        self.log.error("capture_failed", error=f"{type(err).__name__}: {err}")
        self.failure = err
        self.stop()

    async def _read(self, ws) -> str:
        try:
            while True:
                # Text frames as bytes: the parser refuses invalid UTF-8 as one bad frame.
                # Decoded by websockets, it failed the connection (code 1007), and the deals
                # sent behind it on that connection were lost.
                message = await ws.recv(decode=False)
                try:
                    self.on_frame(message)
                except OSError as err:
                    self._fail(err)
                    raise CaptureFailed(str(err)) from err
        except ConnectionClosedOK:
            return f"connection closed cleanly ({_close_text(ws)})"
        except ConnectionClosedError as err:
            return f"connection dropped ({_close_text(err)})"

    async def run(self) -> None:
        self.buffer.acquire()
        recovered = self.buffer.recover()
        if recovered:
            self.log.warning("recovered_open_segments", count=len(recovered))
        self._resume_gap_from_last_run()
        ticker = asyncio.ensure_future(self._ticker())
        try:
            while not self._stop.is_set():
                reason = await self._session()
                if self._stop.is_set():
                    break
                self._open_gap(reason)
                delay = self.wait(self._attempts)
                self._attempts.prepare_for_next_attempt()
                self.counters.reconnects += 1
                self.log.warning("reconnecting", reason=reason, delay_s=round(delay, 3))
                try:
                    await asyncio.wait_for(self._stop.wait(), timeout=delay)
                except TimeoutError:
                    pass
        finally:
            self._stop.set()
            await ticker
            self._open_gap("listener stopped")
            self.buffer.seal()
            self._write_state(stopping=True)
            self.status()
            self.buffer.release()
            self.log.info("stopped", sealed_segments=self.buffer.sealed_segments)
        if self.failure is not None:
            raise CaptureFailed(str(self.failure)) from self.failure


def _close_text(closed: ConnectionClosed | ClientConnection) -> str:
    """How a connection ended, for a gap's reason: the close code and reason, if any."""
    if isinstance(closed, ConnectionClosed):
        frame = closed.rcvd or closed.sent
        code, reason = (frame.code, frame.reason) if frame else (None, "")
    else:
        code, reason = closed.close_code, closed.close_reason
    if code is None:
        return "no close frame"
    return f"code {code}" + (f", {reason}" if reason else "")


def run_listener(listener: Listener) -> int:
    """Run until SIGTERM/SIGINT; the open segment is sealed before exit (status 0)."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, listener.stop)
        await listener.run()

    asyncio.run(main())
    return 0
