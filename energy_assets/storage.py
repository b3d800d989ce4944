"""Writes that survive a crash: whole files by atomic rename, and all-or-nothing transactions.

Every file the project writes for another process to read (capture gaps, the listener's state,
the journals' archive, the published Parquet files) goes through `write_atomically`; every
multi-statement change to DuckDB or SQLite goes through `transaction`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename in `path` durable: fsync the directory itself."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(
    path: str | os.PathLike, data: bytes | Callable[[Path], object], durable: bool = True
) -> None:
    """`path` holds `data` whole or keeps what it held: written to a temporary file beside it,
    then renamed over it. `data` is the bytes, or a function writing the temporary path (a
    Parquet writer). `durable` fsyncs the file and the directory, for a power cut; without
    it, the write survives a killed process only."""
    path = Path(path)
    # Unique per writer: two drains may archive the same file at once, and a shared temporary
    # name let one rename the other's file away.
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        if callable(data):
            data(tmp)
        else:
            tmp.write_bytes(data)
        if durable:
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


@contextmanager
def transaction(conn: Any, begin: str = "BEGIN TRANSACTION") -> Iterator[Any]:
    """Statements in the block commit together, or roll back together when it raises.
    `conn` is a DuckDB or sqlite3 connection; SQLite writers pass `BEGIN IMMEDIATE` to take
    the write lock before reading."""
    conn.execute(begin)
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
