"""The journals' archive: write-once files grouped by UTC day, each with a checksum beside it.

Layout under `ENERGY_ARCHIVE_URL` (default `<ENERGY_CAPTURE_DIR>/archive`; a local path or any
fsspec URL such as `s3://bucket/prefix`):

    deals/YYYY-MM-DD/<first file>.tar.zst          the capture files of one drain, as captured
    prices/YYYY-MM-DD/<stamp>-<run id>.jsonl.zst   the vendor answers one price run stored
    quarantine/YYYY-MM-DD/<stamp>-<file>-<offset>.jsonl.zst  frames the listener refused
    <file>.json                                    beside each: sha256, size and what it holds

Compressed with zstd level 1 (standard frames: `zstd -d`, `tar --zstd -xf`): faster than gzip
on capture JSON for a smaller file (benchmarks/README.md, rebuild), so archiving adds little
to a drain.

A file is written before its checksum, so a checksum says its file is whole. Nothing is
rewritten or deleted except by the archive's own retention (`ENERGY_ARCHIVE_RETENTION_DAYS`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
from upath import UPath

from energy_assets.storage import write_atomically

DEALS = "deals"
PRICES = "prices"
QUARANTINE = "quarantine"
SIDECAR_SUFFIX = ".json"
ZSTD_LEVEL = 1


def compress(data: bytes) -> bytes:
    return pa.Codec("zstd", compression_level=ZSTD_LEVEL).compress(data, asbytes=True)


def decompress(data: bytes) -> bytes:
    return pa.CompressedInputStream(pa.BufferReader(data), "zstd").read()


class ArchiveCorrupt(RuntimeError):
    """An archived file that does not match its checksum, or has none: a rebuild refuses."""


def archive_problem(url: str) -> str | None:
    """Why the archive at `url` cannot be opened here (a protocol fsspec does not know, or its
    filesystem's package, e.g. `s3fs`, not installed), or None when it can."""
    try:
        UPath(url).fs  # noqa: B018 (opening the filesystem is the check)
    except (ImportError, ValueError) as err:
        return f"cannot open the archive {url}: {err}"
    return None


def _is_local(path: UPath) -> bool:
    return path.protocol in ("", "file", "local")


def sidecar_of(path: UPath) -> UPath:
    return path.with_name(path.name + SIDECAR_SUFFIX)


def _write(path: UPath, data: bytes) -> None:
    if _is_local(path):
        # Durable and atomic on a local disk: fsync, rename, fsync the directory.
        local = Path(path.path)
        local.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(local, data)
    else:
        # An object store's PUT is atomic: the object appears whole or not at all.
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def write_checked(path: UPath, data: bytes, contents: dict) -> None:
    """Write `data`, then its checksum file (sha256, bytes, `contents`)."""
    _write(path, data)
    sidecar = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "contents": contents}
    _write(sidecar_of(path), json.dumps(sidecar, separators=(",", ":")).encode())


def read_sidecar(path: UPath) -> dict:
    sidecar = sidecar_of(path)
    try:
        return json.loads(sidecar.read_bytes())
    except FileNotFoundError:
        raise ArchiveCorrupt(
            f"archived file {path} has no checksum file {sidecar.name}: it was not archived "
            "completely (a drain or price run killed while archiving; the next drain archives "
            "the same files again under the same name)"
        ) from None
    except ValueError as err:
        raise ArchiveCorrupt(f"checksum file {sidecar} is unreadable: {err}") from None


def read_checked(path: UPath) -> tuple[bytes, dict]:
    """(`data`, `contents`) of an archived file whose checksum matches, else ArchiveCorrupt."""
    meta = read_sidecar(path)
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != meta.get("sha256") or len(data) != meta.get("bytes"):
        raise ArchiveCorrupt(
            f"archived file {path} does not match its checksum (sha256 {digest}, "
            f"{len(data)} bytes; archived as {meta.get('sha256')}, {meta.get('bytes')} bytes): "
            "restore it from a copy of the archive before rebuilding"
        )
    return data, meta.get("contents", {})


def day_folders(root: UPath, journal: str) -> list[tuple[date, UPath]]:
    """The journal's day folders, oldest first."""
    folder = root / journal
    if not folder.exists():
        return []
    days = []
    for entry in folder.iterdir():
        try:
            days.append((date.fromisoformat(entry.name), entry))
        except ValueError:
            continue
    return sorted(days, key=lambda pair: pair[0])


def files_of(folder: UPath) -> list[UPath]:
    """The archived files of a day folder (not their checksums, not temporary files), by name."""
    return sorted(
        (
            entry
            for entry in folder.iterdir()
            if not entry.name.endswith(SIDECAR_SUFFIX) and not entry.name.endswith(".tmp")
        ),
        key=lambda entry: entry.name,
    )


def prune(root: UPath, retention_days: int, today: date) -> int:
    """Delete the day folders older than the retention; returns how many."""
    cutoff = today - timedelta(days=retention_days)
    deleted = 0
    for journal in (DEALS, PRICES, QUARANTINE):
        for day, folder in day_folders(root, journal):
            if day < cutoff:
                if _is_local(folder):
                    shutil.rmtree(folder.path, ignore_errors=True)
                else:
                    folder.fs.rm(folder.path, recursive=True)
                deleted += 1
    return deleted
