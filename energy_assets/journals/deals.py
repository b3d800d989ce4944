"""The deals' journal: the capture files the drain has committed, archived as captured.

After a drain's transaction commits, its segments and gap files are bundled per UTC day of
capture (the stamp their name starts with) into one `deals/YYYY-MM-DD/<first file>.tar.gz`,
then moved to the waiting area `drained/` as before. A drain killed in between leaves them in
the buffer marked as ingested; the next drain archives them again under the same name (they
sort first), so the archive holds every committed file. Each checksum file lists the bundle's
files with their line counts, which the integrity check compares with the warehouse.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from itertools import groupby
from pathlib import Path

from upath import UPath

from energy_assets.journals.archive import (
    DEALS,
    day_folders,
    files_of,
    read_checked,
    read_sidecar,
    write_checked,
)
from energy_assets.trades.buffer import GAP_SUFFIX, SEALED_SUFFIX, cut_torn_tail

BUNDLE_SUFFIX = ".tar.gz"
#: gzip level of the bundles: 6 of 9 compresses capture JSON within a few % of 9, ~3x faster.
COMPRESS_LEVEL = 6


def capture_day(name: str) -> date:
    """The UTC day a capture file was sealed on, from the stamp its name starts with."""
    return datetime.strptime(name[:8], "%Y%m%d").date()


def is_segment(name: str) -> bool:
    return name.endswith(SEALED_SUFFIX)


def bundle(paths: Iterable[Path]) -> tuple[bytes, dict[str, int]]:
    """A tar.gz of capture files and their line counts (a gap file counts 1, as the drain)."""
    buffer = io.BytesIO()
    contents = {}
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=COMPRESS_LEVEL) as tar:
        for path in paths:
            data = path.read_bytes()
            info = tarfile.TarInfo(path.name)
            info.size = len(data)
            info.mtime = int(path.stat().st_mtime)
            tar.addfile(info, io.BytesIO(data))
            contents[path.name] = cut_torn_tail(data).count(b"\n") if is_segment(path.name) else 1
    return buffer.getvalue(), contents


def archive_capture(paths: Iterable[Path], root: UPath) -> list[UPath]:
    """Archive committed capture files (segments and gaps), one bundle per capture day."""
    existing = sorted((p for p in paths if p.exists()), key=lambda p: (capture_day(p.name), p.name))
    written = []
    for day, group in groupby(existing, key=lambda p: capture_day(p.name)):
        files = list(group)
        data, contents = bundle(files)
        target = root / DEALS / day.isoformat() / (files[0].name.split(".")[0] + BUNDLE_SUFFIX)
        write_checked(target, data, contents)
        written.append(target)
    return written


@dataclass
class CaptureDay:
    """One capture day of the journal: its segments and gap files, each once, by name."""

    day: date
    segments: list[tuple[str, bytes, str]] = field(default_factory=list)
    gaps: list[tuple[str, bytes]] = field(default_factory=list)
    bundles: int = 0
    archived_bytes: int = 0


def read_days(root: UPath, until: date | None = None) -> Iterator[CaptureDay]:
    """The journal day by day, oldest first, every bundle verified against its checksum
    (`ArchiveCorrupt` names the file). A file archived twice (a drain killed after its
    commit) is read once. `until`: stop after that capture day."""
    for day, folder in day_folders(root, DEALS):
        if until is not None and day > until:
            return
        files: dict[str, tuple[bytes, str]] = {}
        result = CaptureDay(day)
        for path in files_of(folder):
            if not path.name.endswith(BUNDLE_SUFFIX):
                continue
            data, _ = read_checked(path)
            result.bundles += 1
            result.archived_bytes += len(data)
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
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
    wanted = set(days)
    result: dict[date, dict[str, int]] = {day: {} for day in wanted}
    for day, folder in day_folders(root, DEALS):
        if day not in wanted:
            continue
        names: dict[str, int] = {}
        for path in files_of(folder):
            if path.name.endswith(BUNDLE_SUFFIX):
                for name, lines in read_sidecar(path).get("contents", {}).items():
                    names.setdefault(name, lines)
        result[day] = names
    return result
