"""Follow the listener's capture buffer: every deal line and feed gap, as soon as it is on disk.

The listener appends whole lines to `segments/*.jsonl.open` and seals it by renaming it to a
new `*.jsonl` name; the drain later moves sealed files to `drained/` under the same name, where
they stay for the retention (72 h). The follower reads

- the open segment up to its last newline, remembering the offset: a torn last line (the
  listener killed mid-write, or simply not finished yet) is left for the next poll, never read;
- each sealed segment once by name: the same lines the open file had, under its new name, so
  the reader dedupes by deal id (`LiveDesk` does);
- `drained/` when its directory changes (a drain run, or a file we may not have seen in
  `segments/`); `segments/` is listed before `drained/`, so a file moved between the two
  listings is seen in the second;
- gap files in `gaps/` and `drained/`, and the open gap in `listener.json`.

It never writes into the buffer.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import polars as pl

from energy_assets.logs import event_logger
from energy_assets.trades.buffer import (
    DRAINED,
    GAP_SUFFIX,
    GAPS,
    OPEN_SUFFIX,
    SEALED_SUFFIX,
    SEGMENTS,
    STATE_FILE,
    cut_torn_tail,
    read_listener_state,
)
from energy_assets.trades.drain import SEGMENT_SCHEMA

log = event_logger("desk")

#: Bytes of deal lines one poll reads at most: a rebuild from 72 h of buffer (~120 MB of lines)
#: is taken in a few batches, so the lines and their frame never sit in memory all at once.
MAX_POLL_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class FeedGap:
    """A closed gap from a gap file: deals made between `start` and `end` may be missing."""

    start: datetime
    end: datetime
    reason: str


@dataclass
class Update:
    """What one poll found: new deal lines (SEGMENT_SCHEMA, not yet deduped), new closed gaps,
    and the listener's state when it changed (None when it did not)."""

    deals: pl.DataFrame
    gaps: list[FeedGap] = field(default_factory=list)
    listener: dict | None = None
    listener_changed: bool = False
    more: bool = False  # stopped at `max_bytes`: poll again for the rest

    @property
    def empty(self) -> bool:
        return self.deals.height == 0 and not self.gaps and not self.listener_changed


def _entries(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            return list(it)
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


def parse_lines(data: bytes) -> pl.DataFrame:
    """Whole JSON lines -> SEGMENT_SCHEMA rows. A line that is not a deal record (the listener
    writes none, but a disk can) is skipped and logged, not allowed to stop the desk."""
    if not data:
        return pl.DataFrame(schema=SEGMENT_SCHEMA)
    try:
        return pl.read_ndjson(io.BytesIO(data), schema=SEGMENT_SCHEMA)
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


class BufferFollower:
    """Reads what the listener adds to `directory`; `poll()` returns only what is new."""

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
        listed = sorted(_entries(self._segments), key=lambda e: e.name)
        sealed = {
            e.name: Path(e.path)
            for e in listed
            if e.name.endswith(SEALED_SUFFIX) and e.name not in self._read
        }
        gaps: list[FeedGap] = []
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
            for entry in sorted(_entries(self._gaps), key=lambda e: e.name):
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
        offset = self._open_offsets.get(entry.name, 0)
        try:
            with open(entry.path, "rb") as handle:
                handle.seek(offset)
                data = cut_torn_tail(handle.read())
        except FileNotFoundError:  # sealed since the listing: read under its new name
            return b""
        self._open_offsets[entry.name] = offset + len(data)
        return data

    def _read_sealed(self, path: Path) -> bytes:
        try:
            data = cut_torn_tail(path.read_bytes())
        except FileNotFoundError:  # drained since the listing: read in drained/
            return b""
        self._read.add(path.name)
        return data

    def _read_gap(self, path: Path) -> list[FeedGap]:
        try:
            record = json.loads(path.read_text())
            gap = FeedGap(
                datetime.fromisoformat(record["gap_start"]),
                datetime.fromisoformat(record["gap_end"]),
                record.get("reason") or "",
            )
        except FileNotFoundError:
            return []
        except (ValueError, KeyError, TypeError) as err:
            log.warning("gap_file_skipped", file=path.name, error=str(err))
            gap = None
        self._read.add(path.name)
        return [gap] if gap else []
