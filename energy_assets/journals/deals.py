"""The deals' journal: the capture files the drain has committed, archived as captured.

After a drain's transaction commits, its segments and gap files are bundled per UTC day of
capture (the stamp their name starts with) into one `deals/YYYY-MM-DD/<first file>.tar.zst`,
then moved to the waiting area `drained/` as before. A drain killed in between leaves them in
the buffer marked as ingested; the next drain archives them again under the same name (they
sort first), so the archive holds every committed file. Each checksum file lists the bundle's
files with their line counts, which the integrity check compares with the warehouse.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from itertools import groupby
from pathlib import Path

from upath import UPath

from energy_assets.journals import archive
from energy_assets.storage import write_atomically
from energy_assets.trades.buffer import (
    GAP_SUFFIX,
    QUARANTINE,
    SEALED_SUFFIX,
    cut_torn_tail,
)

BUNDLE_SUFFIX = ".tar.zst"


def capture_day(name: str) -> date:
    """The UTC day a capture file was sealed on, from the stamp its name starts with."""
    return datetime.strptime(name[:8], "%Y%m%d").date()


def is_segment(name: str) -> bool:
    return name.endswith(SEALED_SUFFIX)


def bundle_data(files: Iterable[tuple[str, bytes]]) -> tuple[bytes, dict[str, int]]:
    """A tar.zst of capture files and their line counts (a gap file counts 1, as the drain)."""
    buffer = io.BytesIO()
    contents = {}
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            contents[name] = cut_torn_tail(data).count(b"\n") if is_segment(name) else 1
    return archive.compress(buffer.getvalue()), contents


def archive_capture(paths: Iterable[Path], root: UPath) -> list[UPath]:
    """Archive committed capture files (segments and gaps), one bundle per capture day."""
    root = UPath(root)
    read = []
    for path in sorted(paths, key=lambda p: (capture_day(p.name), p.name)):
        try:
            read.append((path.name, path.read_bytes()))
        except FileNotFoundError:
            # Another drain of the same buffer archived and moved it first: it is journaled.
            pass
    written = []
    for day, group in groupby(read, key=lambda file: capture_day(file[0])):
        files = list(group)
        data, contents = bundle_data(files)
        target = (
            root / archive.DEALS / day.isoformat() / (files[0][0].split(".")[0] + BUNDLE_SUFFIX)
        )
        archive.write_checked(target, data, contents)
        written.append(target)
    return written


def compact(root: UPath, day: date) -> UPath | None:
    """Merge a finished capture day's bundles into one (a drain writes one every few seconds:
    ~17,000 a day at 100 deals a minute), so a rebuild reads a year in ~365 files. The merged
    bundle is written and checked before the others are deleted, each file before its
    checksum; a crash in between leaves files in two bundles, which the reader takes once."""
    root = UPath(root)
    folder = root / archive.DEALS / day.isoformat()
    if not folder.exists():
        return None
    bundles = [p for p in archive.files_of(folder) if p.name.endswith(BUNDLE_SUFFIX)]
    if len(bundles) < 2:
        return None
    (merged_day,) = list(read_days(root, only=day))
    files = [(name, data) for name, data, _ in merged_day.segments] + merged_day.gaps
    files.sort()
    target = folder / f"{files[0][0].split('.')[0]}-{len(files)}{BUNDLE_SUFFIX}"
    data, contents = bundle_data(files)
    archive.write_checked(target, data, contents)
    archive.read_checked(target)
    for old in bundles:
        if old.name != target.name:
            old.unlink()
            archive.sidecar_of(old).unlink(missing_ok=True)
    return target


@dataclass
class CaptureDay:
    """One capture day of the journal: its segments and gap files, each once, by name."""

    day: date
    segments: list[tuple[str, bytes, str]] = field(default_factory=list)
    gaps: list[tuple[str, bytes]] = field(default_factory=list)
    bundles: int = 0
    archived_bytes: int = 0


def read_days(
    root: UPath, until: date | None = None, only: date | None = None
) -> Iterator[CaptureDay]:
    """The journal day by day, oldest first, every bundle verified against its checksum
    (`ArchiveCorrupt` names the file). A file archived twice (a drain killed after its
    commit, or during a compaction) is read once. `until`: stop after that capture day;
    `only`: that day alone."""
    root = UPath(root)
    for day, folder in archive.day_folders(root, archive.DEALS):
        if until is not None and day > until:
            return
        if only is not None and day != only:
            continue
        files: dict[str, tuple[bytes, str]] = {}
        result = CaptureDay(day)
        for path in archive.files_of(folder):
            if not path.name.endswith(BUNDLE_SUFFIX):
                continue
            data, _ = archive.read_checked(path)
            result.bundles += 1
            result.archived_bytes += len(data)
            with tarfile.open(fileobj=io.BytesIO(archive.decompress(data)), mode="r:") as tar:
                for member in tar:
                    if member.name not in files:
                        files[member.name] = (
                            tar.extractfile(member).read(),
                            f"{path}:{member.name}",
                        )
        for name in sorted(files):
            content, where = files[name]
            if is_segment(name):
                result.segments.append((name, content, where))
            elif name.endswith(GAP_SUFFIX):
                result.gaps.append((name, content))
        yield result


def archived_lines(root: UPath, days: Iterable[date]) -> dict[date, dict[str, int]]:
    """Per capture day in `days`, every archived file and its line count, from the checksum
    files alone (the bundles are not read)."""
    root = UPath(root)
    wanted = set(days)
    result: dict[date, dict[str, int]] = {day: {} for day in wanted}
    for day, folder in archive.day_folders(root, archive.DEALS):
        if day not in wanted:
            continue
        names: dict[str, int] = {}
        for path in archive.files_of(folder):
            if path.name.endswith(BUNDLE_SUFFIX):
                for name, lines in archive.read_sidecar(path).get("contents", {}).items():
                    names.setdefault(name, lines)
        result[day] = names
    return result


#: In the capture buffer: how far each quarantine file is archived ({name: [first line's
#: sha256, offset]}: the first line tells a file started again from the one archived).
QUARANTINE_STATE = "quarantine-archived.json"


def archive_quarantine(directory: Path, root: UPath) -> list[UPath]:
    """Archive what the listener refused since the last drain (evidence, kept like the deals):
    per quarantine file, the whole lines added since the offset archived so far, as
    `quarantine/YYYY-MM-DD/<stamp>-<file>-<offset>.jsonl.zst`. A file the retention deleted
    and the listener started again (another first line) is archived from its start; a lost state
    file only archives lines a second time."""
    root = UPath(root)
    state_path = directory / QUARANTINE_STATE
    try:
        state = json.loads(state_path.read_text())
    except (FileNotFoundError, ValueError):
        state = {}
    written, seen = [], {}
    for path in sorted((directory / QUARANTINE).glob("quarantine-*.jsonl")):
        try:
            with open(path, "rb") as handle:
                head = hashlib.sha256(handle.readline()).hexdigest()
                known_head, start = state.get(path.name, (None, 0))
                if known_head != head:
                    start = 0
                handle.seek(start)
                whole = cut_torn_tail(handle.read())
        except FileNotFoundError:
            continue
        seen[path.name] = [head, start + len(whole)]
        if not whole:
            continue
        day = datetime.strptime(path.stem.split("-")[1], "%Y%m%d").date()
        target = (
            root
            / QUARANTINE
            / day.isoformat()
            / f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{path.stem}-{start}.jsonl.zst"
        )
        contents = {"source": path.name, "offset": start, "frames": whole.count(b"\n")}
        archive.write_checked(target, archive.compress(whole), contents)
        written.append(target)
    if seen != state:
        write_atomically(state_path, json.dumps(seen).encode(), durable=False)
    return written
