"""The capture buffer: durable files between the listener and the `raw_trades` drain.

Layout under `ENERGY_CAPTURE_DIR` (see docs/trades.md):

    segments/<stamp>-<pid>-<n>.jsonl.open   the one segment the listener is appending to
    segments/<stamp>-<pid>-<n>.jsonl        sealed segments: whole JSON lines, fsynced
    gaps/<stamp>-<pid>-<n>.json             sealed feed gaps, one JSON object each
    drained/                                segments and gaps already in DuckDB, kept for
                                            the retention, then deleted
    quarantine/quarantine-YYYYMMDD.jsonl    refused frames: raw text, reason, time
    listener.json                           the listener's last known state (heartbeat, open gap)
    listener.lock                           held by the one running listener

A sealed name's `<stamp>` is the UTC time the file was sealed (`YYYYMMDDTHHMMSSffffffZ`), so
sorting names sorts files in the order they became visible, across segments and gaps and across
listener restarts; segments are sealed in the order they were written.

Sealing is: flush, fsync, atomic rename `.jsonl.open` -> `.jsonl`, fsync the directory. A sealed
name is therefore a promise that the whole file is on disk. Every line is written to the OS as
it arrives, so a `kill -9` loses nothing already received; the open segment may end in a torn
line, which `recover()` cuts before sealing it on the next start and which readers skip.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from energy_assets.settings import DEFAULT_CAPTURE_SEAL_FRAMES, DEFAULT_CAPTURE_SEAL_SECONDS
from energy_assets.trades.deal import Deal

SEGMENTS = "segments"
GAPS = "gaps"
DRAINED = "drained"
QUARANTINE = "quarantine"
STATE_FILE = "listener.json"
LOCK_FILE = "listener.lock"
SEALED_SUFFIX = ".jsonl"
OPEN_SUFFIX = ".jsonl.open"
GAP_SUFFIX = ".json"


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes, durable: bool = True) -> None:
    # Unique per writer: two drains may archive the same file at once, and a shared temporary
    # name let one rename the other's file away.
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        if durable:
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(tmp, path)
    if durable:
        _fsync_dir(path.parent)


def cut_torn_tail(data: bytes) -> bytes:
    """Everything up to and including the last newline: a torn last line is dropped."""
    end = data.rfind(b"\n")
    return data[: end + 1] if end >= 0 else b""


#: Instants the drain parses as they are: extended ISO-8601 in UTC, `+00:00` or `Z`.
_UTC_INSTANT = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(\+00:00|Z)"
)


def utc_instant(text: str) -> str:
    """An ISO-8601 instant `parse_frame` accepted -> `YYYY-MM-DDTHH:MM:SS[.ffffff]+00:00`, the one
    shape the drain parses (`drain.INSTANT_FORMAT`); the instant is unchanged. The common
    shapes pass by a regex; any other offset or ISO variant goes through `fromisoformat`."""
    match = _UTC_INSTANT.fullmatch(text)
    if match:
        return text[:-1] + "+00:00" if match.group(2) == "Z" else text
    return iso(datetime.fromisoformat(text))


def deal_record(deal: Deal, received_at: datetime) -> dict:
    """One segment line: the deal's fields, `execution_time` in UTC, and `received_at`."""
    # vars(), not Deal.to_dict(): dataclasses.asdict deep-copies and costs 5 us a frame.
    record = dict(vars(deal))
    record["execution_time"] = utc_instant(deal.execution_time)
    record["received_at"] = iso(received_at)
    return record


class ListenerLockHeld(RuntimeError):
    """Another listener holds the capture directory: a second connection would see other deals."""


@dataclass(frozen=True)
class Gap:
    """A stretch without a connection to the exchange: deals in it may be missing."""

    start: datetime
    end: datetime
    reason: str

    def to_dict(self) -> dict:
        return {"gap_start": iso(self.start), "gap_end": iso(self.end), "reason": self.reason}


class CaptureBuffer:
    """Append-only segment files in one directory; the listener is its only writer."""

    def __init__(
        self,
        directory: str | Path,
        seal_seconds: float = DEFAULT_CAPTURE_SEAL_SECONDS,
        seal_frames: int = DEFAULT_CAPTURE_SEAL_FRAMES,
    ):
        self.directory = Path(directory)
        self.seal_seconds = seal_seconds
        self.seal_frames = seal_frames
        self.segments_dir = self.directory / SEGMENTS
        self.gaps_dir = self.directory / GAPS
        self.drained_dir = self.directory / DRAINED
        self.quarantine_dir = self.directory / QUARANTINE
        for folder in (self.segments_dir, self.gaps_dir, self.drained_dir, self.quarantine_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = None
        self._open_path: Path | None = None
        self._opened_at = 0.0
        self._frames = 0
        self._counter = 0
        self._last_name = ""
        self._lock_fd: int | None = None
        self.sealed_segments = 0
        self.sealed_frames = 0

    # -- ownership -------------------------------------------------------------------------
    def acquire(self) -> None:
        """Take the listener lock (released by the OS when the process dies, even by kill -9)."""
        fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ListenerLockHeld(
                f"another listener holds {self.directory / LOCK_FILE}; "
                "the platform must hold exactly one exchange connection"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- writing ---------------------------------------------------------------------------
    def _name(self) -> str:
        """A fresh name, stamped now: sealed files are named when they become visible, so
        name order is the order the drain and the sensor can see them in."""
        self._counter += 1
        name = f"{_stamp(utc_now())}-{os.getpid()}-{self._counter:09d}"
        # A wall clock stepped back must not make a new file sort before an older one.
        if name <= self._last_name:
            name = self._last_name.split("-")[0] + f"-{os.getpid()}-{self._counter:09d}"
        self._last_name = name
        return name

    def append(self, deal: Deal, received_at: datetime) -> None:
        self.append_record(deal_record(deal, received_at))

    def append_record(self, record: dict) -> None:
        if self._fd is None:
            self._open_path = self.segments_dir / (self._name() + OPEN_SUFFIX)
            self._fd = os.open(self._open_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            self._opened_at = time.monotonic()
            self._frames = 0
        # One write per line, straight to the OS: a kill -9 loses at most the line in flight.
        os.write(self._fd, (json.dumps(record, separators=(",", ":")) + "\n").encode())
        self._frames += 1
        if self._frames >= self.seal_frames:
            self.seal()

    def seal_if_due(self) -> bool:
        if self._fd is not None and time.monotonic() - self._opened_at >= self.seal_seconds:
            self.seal()
            return True
        return False

    def seal(self) -> Path | None:
        """Make the open segment durable and visible to the drain under its sealed name."""
        if self._fd is None or self._open_path is None:
            return None
        os.fsync(self._fd)
        os.close(self._fd)
        sealed = self.segments_dir / (self._name() + SEALED_SUFFIX)
        os.replace(self._open_path, sealed)
        _fsync_dir(self.segments_dir)
        self.sealed_segments += 1
        self.sealed_frames += self._frames
        self._fd = None
        self._open_path = None
        return sealed

    def record_gap(self, gap: Gap) -> Path:
        path = self.gaps_dir / (self._name() + GAP_SUFFIX)
        write_atomically(path, json.dumps(gap.to_dict()).encode() + b"\n")
        return path

    def quarantine(self, raw: str | bytes, reason: str, received_at: datetime) -> None:
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8", errors="backslashreplace")
        line = json.dumps({"received_at": iso(received_at), "reason": reason, "raw": raw})
        path = self.quarantine_dir / f"quarantine-{received_at.astimezone(UTC):%Y%m%d}.jsonl"
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    def close(self) -> None:
        self.seal()
        self.release()

    # -- listener state --------------------------------------------------------------------
    def write_state(self, state: dict) -> None:
        # Not fsynced: it only has to survive a killed process, not a power cut.
        write_atomically(
            self.directory / STATE_FILE, json.dumps(state).encode() + b"\n", durable=False
        )

    def read_state(self) -> dict | None:
        return read_listener_state(self.directory)

    # -- recovery --------------------------------------------------------------------------
    def recover(self) -> list[Path]:
        """Seal open segments left by a killed listener, cutting a torn last line. Call it
        holding the lock, before appending."""
        recovered = []
        for path in sorted(self.segments_dir.glob("*" + OPEN_SUFFIX)):
            data = path.read_bytes()
            whole = cut_torn_tail(data)
            if not whole:
                path.unlink()
                continue
            if len(whole) != len(data):
                with open(path, "r+b") as handle:
                    handle.truncate(len(whole))
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
            sealed = self.segments_dir / (self._name() + SEALED_SUFFIX)
            os.replace(path, sealed)
            recovered.append(sealed)
        for tmp in self.gaps_dir.glob("*.tmp"):
            tmp.unlink()
        if recovered:
            _fsync_dir(self.segments_dir)
        return recovered


# -- reading, for the drain and the sensor ---------------------------------------------------
def sealed_files(directory: str | Path) -> tuple[list[Path], list[Path]]:
    """(sealed deal segments, sealed gap files) waiting in the buffer, oldest first."""
    directory = Path(directory)
    segments = sorted(
        (directory / SEGMENTS / entry.name)
        for entry in _scan(directory / SEGMENTS)
        if entry.name.endswith(SEALED_SUFFIX)
    )
    gaps = sorted(
        (directory / GAPS / entry.name)
        for entry in _scan(directory / GAPS)
        if entry.name.endswith(GAP_SUFFIX)
    )
    return segments, gaps


def newest_sealed_name(directory: str | Path) -> str | None:
    """The newest sealed file name (segment or gap): the sensor's cheap look at the buffer."""
    names = [
        entry.name
        for folder in (SEGMENTS, GAPS)
        for entry in _scan(Path(directory) / folder)
        if entry.name.endswith(SEALED_SUFFIX)
        or (folder == GAPS and entry.name.endswith(GAP_SUFFIX))
    ]
    return max(names) if names else None


def _scan(folder: Path) -> Iterable[os.DirEntry]:
    try:
        with os.scandir(folder) as entries:
            return list(entries)
    except FileNotFoundError:
        return []


def read_listener_state(directory: str | Path) -> dict | None:
    try:
        return json.loads((Path(directory) / STATE_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return None


#: The listener writes its heartbeat every 0.2 s: one older than this means it is not running
#: (killed and not restarted, frozen), so deals may be missing since it last heard the exchange.
LISTENER_SILENT_AFTER = timedelta(seconds=30)


def silent_heartbeat(state: dict | None, now: datetime) -> str | None:
    """The listener's last heartbeat when it is older than `LISTENER_SILENT_AFTER`, else None."""
    heartbeat = (state or {}).get("heartbeat")
    try:
        stale = now - datetime.fromisoformat(heartbeat) > LISTENER_SILENT_AFTER
    except (TypeError, ValueError):
        return None
    return heartbeat if stale else None


def open_feed_gap(state: dict | None, now: datetime) -> tuple[str, str] | None:
    """(since, reason) of the feed gap open now according to `listener.json`: the one the
    listener itself declared, or, when its heartbeat is stale, one since it last heard the
    exchange. None while the listener reports and is connected (or never ran)."""
    if not state:
        return None
    if state.get("gap_since"):
        return state["gap_since"], state.get("gap_reason") or "listener not running"
    heartbeat = silent_heartbeat(state, now)
    if heartbeat is None:
        return None
    since = min(heartbeat, state.get("heard_at") or heartbeat, key=datetime.fromisoformat)
    return since, f"listener not reporting since {heartbeat} (frozen or killed)"


def archive(paths: Iterable[Path], directory: str | Path) -> int:
    """Move drained files out of the waiting area (they stay for the retention)."""
    drained = Path(directory) / DRAINED
    drained.mkdir(parents=True, exist_ok=True)
    moved = 0
    for path in paths:
        try:
            os.replace(path, drained / path.name)
            moved += 1
        except FileNotFoundError:
            pass
    return moved


def apply_retention(directory: str | Path, retention: timedelta, now: float | None = None) -> int:
    """Delete drained files and quarantine files older than `retention`; returns the count."""
    cutoff = (time.time() if now is None else now) - retention.total_seconds()
    deleted = 0
    for folder in (DRAINED, QUARANTINE):
        for entry in _scan(Path(directory) / folder):
            try:
                if entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    deleted += 1
            except FileNotFoundError:
                pass
    return deleted
