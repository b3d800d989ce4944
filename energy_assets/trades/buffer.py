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
import io
import json
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from energy_assets.logs import event_logger
from energy_assets.markets import Invalid, parse_instant
from energy_assets.settings import DEFAULT_CAPTURE_SEAL_FRAMES, DEFAULT_CAPTURE_SEAL_SECONDS
from energy_assets.storage import fsync_dir, write_atomically
from energy_assets.trades.deal import FIELDS, Deal

SEGMENTS = "segments"
GAPS = "gaps"
DRAINED = "drained"
QUARANTINE = "quarantine"
STATE_FILE = "listener.json"
LOCK_FILE = "listener.lock"
SEALED_SUFFIX = ".jsonl"
OPEN_SUFFIX = ".jsonl.open"
GAP_SUFFIX = ".json"

_FLOATS = {"price", "quantity"}
#: How a segment line is read: every contract field plus the listener's receive time.
SEGMENT_SCHEMA = {name: (pl.Float64 if name in _FLOATS else pl.String) for name in FIELDS} | {
    "received_at": pl.String
}

log = event_logger("trades")
#: One encoder for every segment line: `json.dumps` with `separators` builds a new one a call.
_LINE = json.JSONEncoder(separators=(",", ":"))


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def cut_torn_tail(data: bytes) -> bytes:
    """Everything up to and including the last newline: a torn last line is dropped."""
    end = data.rfind(b"\n")
    return data[: end + 1] if end >= 0 else b""


#: Instants the drain parses as they are: extended ISO-8601 in UTC, `+00:00` or `Z`.
_UTC_INSTANT = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(\+00:00|Z)"
)


def utc_instant(text: str) -> str:
    """An instant `parse_frame` accepted -> `YYYY-MM-DDTHH:MM:SS[.ffffff]+00:00`, the one
    shape the drain parses (`lines.INSTANT_FORMAT`); the instant is unchanged. The common
    shapes pass by a regex; any other goes through `parse_instant`, the listener's grammar, so
    the buffer takes exactly the instants the listener does (ValueError for any other)."""
    match = _UTC_INSTANT.fullmatch(text)
    if match:
        return text[:-1] + "+00:00" if match.group(2) == "Z" else text
    moment = parse_instant(text)
    if isinstance(moment, Invalid):
        raise ValueError(moment.reason)
    return iso(moment)


def deal_record(deal: Deal, received_at: datetime) -> dict:
    """One segment line: the deal's fields, `execution_time` in UTC, and `received_at`."""
    record = deal.to_dict()
    record["execution_time"] = utc_instant(deal.execution_time)
    record["received_at"] = iso(received_at)
    return record


class ListenerLockHeld(RuntimeError):
    """Another listener holds the capture directory: a second connection would see other deals."""


#: What JSON that is not a gap's object raises on the way (an instant near year 1 or 9999 in
#: another offset overflows).
_NOT_A_GAP = (ValueError, KeyError, TypeError, AttributeError, OverflowError, RecursionError)


@dataclass(frozen=True)
class Gap:
    """A stretch without a connection to the exchange: deals in it may be missing. The one
    gap model: the listener writes it, the drain stores it (`row`), the desk warns of it."""

    start: datetime
    end: datetime
    reason: str

    def to_dict(self) -> dict:
        return {"gap_start": iso(self.start), "gap_end": iso(self.end), "reason": self.reason}

    @classmethod
    def parse(cls, content: str | bytes) -> Gap | str:
        """A sealed gap file's content, or why it is not one (the drain quarantines such a
        file, the desk and the rebuild skip it). Total: never an exception."""
        try:
            record = json.loads(content)
            start, end = (datetime.fromisoformat(record[key]) for key in ("gap_start", "gap_end"))
            if start.tzinfo is None or end.tzinfo is None:
                return "not a gap: an instant without an offset"
            if end.astimezone(UTC) < start.astimezone(UTC):
                return "not a gap: it ends before it starts"
            reason = str(record.get("reason") or "")
        except _NOT_A_GAP as err:
            return f"not a gap file: {type(err).__name__}: {str(err)[:80]}"
        return cls(start, end, reason)

    def row(self, source: str) -> dict:
        """Its `energy.feed_gaps` row, `source` the gap file's name."""
        return {
            "gap_start": self.start,
            "gap_end": self.end,
            "reason": self.reason,
            "seconds": (self.end - self.start).total_seconds(),
            "source": source,
        }


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
        os.write(self._fd, (_LINE.encode(record) + "\n").encode())
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
        fsync_dir(self.segments_dir)
        self.sealed_segments += 1
        self._fd = None
        self._open_path = None
        return sealed

    def record_gap(self, gap: Gap) -> Path:
        path = self.gaps_dir / (self._name() + GAP_SUFFIX)
        write_atomically(path, json.dumps(gap.to_dict()).encode() + b"\n")
        return path

    def quarantine(self, raw: str | bytes, reason: str, received_at: datetime) -> bool:
        """Keep a refused frame (False: the day's quarantine is full, the frame is not kept)."""
        return quarantine(self.directory, [(raw, reason)], received_at, QUARANTINE_DAY_BYTES) == 1

    def close(self) -> None:
        self.seal()
        self.release()

    # -- listener state --------------------------------------------------------------------
    def write_state(self, state: dict) -> None:
        # Not fsynced: it only has to survive a killed process, not a power cut.
        write_atomically(
            self.directory / STATE_FILE, json.dumps(state).encode() + b"\n", durable=False
        )

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
            fsync_dir(self.segments_dir)
        return recovered


#: Characters of a refused frame a quarantine line keeps (a deal confirmation is a few hundred
#: bytes); a longer frame keeps its start and its length, `raw_length`.
RAW_KEPT = 4096
#: Bytes the listener may write to one day's quarantine file, so that a feed of refused frames
#: as fast as it can send them cannot fill the disk the segments are written to
#: (docs/trades.md). Past it a refused frame is counted, not kept.
QUARANTINE_DAY_BYTES = 64 * 1024 * 1024


def quarantine(
    directory: str | Path,
    refused: Iterable[tuple[str | bytes, str]],
    received_at: datetime,
    day_bytes: int | None = None,
) -> int:
    """Keep what cannot be booked, as evidence: per (raw text, reason), one line with both and
    `received_at` in `quarantine/quarantine-YYYYMMDD.jsonl` (the listener's refused frames, the
    drain's unbookable lines), the raw text cut to `RAW_KEPT` characters. With `day_bytes`,
    nothing is written once the day's file holds that many bytes. Returns the lines kept."""
    lines = []
    for raw, reason in refused:
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8", errors="backslashreplace")
        line = {"received_at": iso(received_at), "reason": reason, "raw": raw[:RAW_KEPT]}
        if len(raw) > RAW_KEPT:
            line["raw_length"] = len(raw)
        lines.append(json.dumps(line) + "\n")
    path = Path(directory) / QUARANTINE / f"quarantine-{received_at.astimezone(UTC):%Y%m%d}.jsonl"
    if day_bytes is not None and _size(path) >= day_bytes:
        return 0
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("".join(lines))
    return len(lines)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


# -- reading: the drain, the sensor, the price planner's book and the desk ---------------------
def sealed_files(directory: str | Path) -> tuple[list[Path], list[Path]]:
    """(sealed deal segments, sealed gap files) waiting in the buffer, oldest first."""
    directory = Path(directory)
    segments = sorted(
        Path(entry.path)
        for entry in _scan(directory / SEGMENTS)
        if entry.name.endswith(SEALED_SUFFIX)
    )
    gaps = sorted(
        Path(entry.path) for entry in _scan(directory / GAPS) if entry.name.endswith(GAP_SUFFIX)
    )
    return segments, gaps


def deal_files(directory: str | Path, since: float) -> list[Path]:
    """Every segment, open or sealed, waiting or drained (kept for the retention), last
    written at or after `since` (epoch seconds)."""
    found = []
    for folder in (SEGMENTS, DRAINED):
        for entry in _scan(Path(directory) / folder):
            if not entry.name.endswith((SEALED_SUFFIX, OPEN_SUFFIX)):
                continue
            try:
                if entry.stat().st_mtime >= since:
                    found.append(Path(entry.path))
            except FileNotFoundError:  # drained or deleted between the listing and the stat
                continue
    return found


def whole_lines(path: str | Path, offset: int = 0) -> bytes:
    """The file's whole lines from `offset` (b"" when it has gone): a line the listener has
    not finished, or a torn one, is never read."""
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            return cut_torn_tail(handle.read())
    except FileNotFoundError:
        return b""


def _scan(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as entries:
            return list(entries)
    except FileNotFoundError:
        return []


def _names(folder: Path) -> set[str]:
    try:
        return set(os.listdir(folder))
    except FileNotFoundError:
        return set()


def _mtime_ns(path: Path) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return None


def json_lines(data: bytes) -> io.BytesIO:
    """`data` for `pl.read_ndjson` as text, whatever its first bytes: polars reads a stream
    that starts with gzip, zlib or zstd's magic bytes as compressed (a corrupt segment
    starting `x\x01` raised "corrupt deflate stream"; a gzip member was inflated and read). A
    leading empty line is no row."""
    return io.BytesIO(b"\n" + data)


def parse_lines(data: bytes) -> pl.DataFrame:
    """Whole JSON lines -> SEGMENT_SCHEMA rows. A line that is not a deal record (the listener
    writes none, but a disk can) is skipped and logged, not allowed to stop the desk."""
    if not data:
        return pl.DataFrame(schema=SEGMENT_SCHEMA)
    try:
        return pl.read_ndjson(json_lines(data), schema=SEGMENT_SCHEMA)
    except Exception:
        rows = []
        for line in data.splitlines():
            try:
                record = json.loads(line)
                row = {name: record[name] for name in SEGMENT_SCHEMA}
                rows.append(pl.DataFrame([row], schema=SEGMENT_SCHEMA))
            except (ValueError, KeyError, TypeError, pl.exceptions.PolarsError):
                if line.strip():
                    log.warning("capture_line_skipped", line=line[:200].decode(errors="replace"))
        return pl.concat(rows) if rows else pl.DataFrame(schema=SEGMENT_SCHEMA)


#: Bytes of deal lines one poll reads at most: a rebuild from 72 h of buffer (~120 MB of lines)
#: is taken in a few batches, so the lines and their frame never sit in memory all at once.
MAX_POLL_BYTES = 32 * 1024 * 1024


@dataclass
class Update:
    """What one poll found: new deal lines (SEGMENT_SCHEMA, not yet deduped), new closed gaps,
    and the listener's state when it changed (None when it did not)."""

    deals: pl.DataFrame
    gaps: list[Gap] = field(default_factory=list)
    listener: dict | None = None
    listener_changed: bool = False
    more: bool = False  # stopped at `max_bytes`: poll again for the rest


class BufferFollower:
    """Follows the buffer for the live desk: every deal line and feed gap as soon as it is on
    disk; `poll()` returns only what is new. It never writes into the buffer. It reads

    - the open segment up to its last newline, remembering the offset: a torn last line (the
      listener killed mid-write, or simply not finished yet) is left for the next poll;
    - each sealed segment once by name: the same lines the open file had, under its new name,
      so the reader dedupes by deal id (`LiveDesk` does);
    - `drained/` when its directory changes (a drain run, or a file not seen in `segments/`);
      `segments/` is listed before `drained/`, so a file moved between the two listings is
      seen in the second;
    - gap files in `gaps/` and `drained/`, and the open gap in `listener.json`.
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self._segments = self.directory / SEGMENTS
        self._drained = self.directory / DRAINED
        self._gaps = self.directory / GAPS
        self._read: set[str] = set()  # sealed segment and gap names already read
        self._open_offsets: dict[str, int] = {}  # open segment name -> bytes read
        self._drained_mtime: int | None = -1
        self._gaps_mtime: int | None = -1
        self._state_mtime: int | None = -1
        self.listener: dict | None = None

    def poll(self, max_bytes: int = MAX_POLL_BYTES) -> Update:
        """What is new since the last poll: sealed segments in name order (the order they
        were sealed, so the first receipt of an id comes first, as in the drain), then the
        open segments' new whole lines; at most about `max_bytes` of them (`more` says so)."""
        listed = sorted(_scan(self._segments), key=lambda e: e.name)
        sealed = {
            e.name: Path(e.path)
            for e in listed
            if e.name.endswith(SEALED_SUFFIX) and e.name not in self._read
        }
        gaps: list[Gap] = []
        mtime = _mtime_ns(self._drained)
        if mtime != self._drained_mtime:
            self._drained_mtime = mtime
            # A set difference, not a loop: drained/ holds 72 h of files (~260 k).
            for name in sorted(_names(self._drained) - self._read):
                if name.endswith(SEALED_SUFFIX):
                    sealed[name] = self._drained / name  # moved since the first listing
                elif name.endswith(GAP_SUFFIX):
                    gaps.extend(self._read_gap(self._drained / name))
        chunks: list[bytes] = []
        size = 0
        more = False
        for name in sorted(sealed):
            if size >= max_bytes:
                more = True
                self._drained_mtime = -1  # list it again next poll
                break
            chunks.append(self._read_sealed(sealed[name]))
            size += len(chunks[-1])
        open_now = set()
        if not more:
            for entry in listed:
                if entry.name.endswith(OPEN_SUFFIX):
                    open_now.add(entry.name)
                    chunks.append(self._read_open(entry))
            # Open segments sealed (or cut by recovery) since: their offsets go.
            for name in list(self._open_offsets):
                if name not in open_now:
                    del self._open_offsets[name]
        mtime = _mtime_ns(self._gaps)
        if mtime != self._gaps_mtime:
            self._gaps_mtime = mtime
            for entry in sorted(_scan(self._gaps), key=lambda e: e.name):
                if entry.name.endswith(GAP_SUFFIX) and entry.name not in self._read:
                    gaps.extend(self._read_gap(Path(entry.path)))
        listener_changed = False
        mtime = _mtime_ns(self.directory / STATE_FILE)
        if mtime != self._state_mtime:
            self._state_mtime = mtime
            state = read_listener_state(self.directory)
            listener_changed = state != self.listener
            self.listener = state
        data = b"".join(chunks)
        chunks.clear()
        return Update(parse_lines(data), gaps, self.listener, listener_changed, more)

    def _read_open(self, entry: os.DirEntry) -> bytes:
        # b"" when sealed since the listing: read under its new name.
        offset = self._open_offsets.get(entry.name, 0)
        data = whole_lines(entry.path, offset)
        self._open_offsets[entry.name] = offset + len(data)
        return data

    def _read_sealed(self, path: Path) -> bytes:
        try:
            data = cut_torn_tail(path.read_bytes())
        except FileNotFoundError:  # drained since the listing: read in drained/
            return b""
        self._read.add(path.name)
        return data

    def _read_gap(self, path: Path) -> list[Gap]:
        try:
            gap = Gap.parse(path.read_bytes())
        except FileNotFoundError:
            return []
        self._read.add(path.name)
        if isinstance(gap, str):
            log.warning("gap_file_skipped", file=path.name, error=gap)
            return []
        return [gap]


def read_listener_state(directory: str | Path) -> dict | None:
    """`listener.json`'s object; None when there is none or it is not one."""
    try:
        state = json.loads((Path(directory) / STATE_FILE).read_text())
    except (FileNotFoundError, ValueError, RecursionError):
        return None
    return state if isinstance(state, dict) else None


#: The listener writes its heartbeat every 0.2 s: one older than this means it is not running
#: (killed and not restarted, frozen), so deals may be missing since it last heard the exchange.
LISTENER_SILENT_AFTER = timedelta(seconds=30)


def silent_heartbeat(state: dict | None, now: datetime) -> str | None:
    """The listener's last heartbeat when it is older than `LISTENER_SILENT_AFTER`, else None."""
    heartbeat = (state or {}).get("heartbeat")
    try:
        stale = now - datetime.fromisoformat(heartbeat) > LISTENER_SILENT_AFTER
    except (TypeError, ValueError, OverflowError):  # year 1 or 9999 overflows the subtraction
        return None
    return heartbeat if stale else None


def refused_today(state: object, now: datetime) -> dict:
    """The listener's count of deal confirmations refused on `now`'s UTC day (`refused` in its
    state: `day`, `count`, `last_at`, `last_reason`), or {} when there is none or it is not
    one."""
    refused = state.get("refused") if isinstance(state, dict) else None
    if not isinstance(refused, dict) or refused.get("day") != f"{now:%Y-%m-%d}":
        return {}
    count = refused.get("count")
    return refused if type(count) is int and count > 0 else {}


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
    try:
        since = min(heartbeat, state.get("heard_at") or heartbeat, key=datetime.fromisoformat)
    except (TypeError, ValueError, OverflowError):
        since = heartbeat
    return since, f"listener not reporting since {heartbeat} (frozen or killed)"


#: How far past the file's own write time an instant in it may lie (clock steps).
STATE_SKEW = timedelta(minutes=1)


def resumed_gap(state: dict | None, written: datetime) -> tuple[datetime, str]:
    """Where the feed gap a starting listener inherits begins, and why: the gap the last run
    declared, else the last moment it heard the exchange (it died without saying so: kill -9,
    power cut). An instant the file does not hold plausibly (not an ISO instant, before the
    years trades can have, after `written`, the file's modification time) counts as
    `written`: deals may be missing at least since the file was last written."""
    state = state or {}

    def instant(name: str) -> datetime | None:
        moment = parse_instant(state.get(name))
        plausible = not isinstance(moment, Invalid) and moment <= written + STATE_SKEW
        return moment if plausible else None

    if state.get("gap_since"):
        reason = state.get("gap_reason")
        return instant("gap_since") or written, (
            reason[:200] if isinstance(reason, str) and reason else "listener not running"
        )
    heard = [moment for moment in (instant("heartbeat"), instant("heard_at")) if moment]
    return min(heard, default=written), "listener stopped abruptly"


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
