"""`/replay` computed in a child process, one at a time, so that the live desk stays live.

A replay reads every deal up to its instant (journals/replay.py). In the desk's own process a
few at once had held its pushes back for seconds, its refresh waiting for a worker thread, and
grown it by gigabytes it kept (benchmarks/README.md, "Live"). Here a replay is a child process
at a lower CPU priority that the kernel's out-of-memory killer takes first, stopped once its
memory passes the desk's limit (`ENERGY_DESK_REPLAY_MEMORY_MB`) or when the browser that asked
goes away.

    python -m energy_assets.desk.replaying <instant> <archive>   # the page's HTML on stdout
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path

from starlette.exceptions import HTTPException
from upath import UPath

from energy_assets.journals.archive import DEALS, PRICES, ArchiveCorrupt, day_folders
from energy_assets.logs import event_logger

log = event_logger("desk")

#: How often the child's memory and the asking browser are looked at.
WATCH_SECONDS = 0.2
#: How long a request waits for the replay before it (a double click's first, say) to end.
QUEUE_SECONDS = 2.0
#: The child's exit status when the journals themselves are corrupt (the desk's 500).
CORRUPT = 3


def _rss_bytes(pid: int) -> int | None:
    """The process's resident memory; None where Linux's /proc is not there to say."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return None


class Replays:
    """The replays of one desk: at most one computing at a time."""

    def __init__(self, archive: str, memory_mb: int):
        self.archive = archive
        self.memory_bytes = memory_mb * 1024 * 1024
        self.one_at_a_time = asyncio.Lock()

    async def page(self, at: datetime, gone: Callable[[], Awaitable[bool]]) -> str:
        """The replay page's HTML; HTTPException with the reason when it cannot be made.
        `gone`: whether the browser that asked has left (the child is stopped then)."""
        try:
            await asyncio.wait_for(self.one_at_a_time.acquire(), QUEUE_SECONDS)
        except TimeoutError:
            raise HTTPException(
                503,
                "Another replay is being computed: the desk computes one at a time, so that "
                "its live pages stay live. Try again in a few seconds.",
                headers={"Retry-After": "10"},
            ) from None
        try:
            if not await asyncio.to_thread(self._archived):  # nothing to compute apart
                return await asyncio.to_thread(_page, at, self.archive)
            return await self._child(at, gone)
        finally:
            self.one_at_a_time.release()

    def _archived(self) -> bool:
        """Whether either journal holds a day yet."""
        root = UPath(self.archive)
        return any(day_folders(root, journal) for journal in (DEALS, PRICES))

    async def _child(self, at: datetime, gone: Callable[[], Awaitable[bool]]) -> str:
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", __name__, at.isoformat(), self.archive,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        done = asyncio.ensure_future(child.communicate())
        over = False
        try:
            while not done.done():
                await asyncio.wait([done], timeout=WATCH_SECONDS)
                if done.done():
                    break
                rss = _rss_bytes(child.pid)
                over = rss is not None and rss > self.memory_bytes
                if over or await gone():
                    break
        finally:
            if not done.done():
                with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                    child.kill()
            out, err = await done
        if child.returncode == 0:
            return out.decode()
        said = err.decode(errors="replace").strip().splitlines()[-1:] or [""]
        log.warning("replay_failed", at=at.isoformat(), status=child.returncode, said=said[0])
        if over:
            raise HTTPException(
                503,
                f"The replay needed more than {self.memory_bytes >> 20} MB, the desk's limit "
                "for one (ENERGY_DESK_REPLAY_MEMORY_MB), and was stopped.",
            )
        if child.returncode == CORRUPT:
            raise HTTPException(500, f"The journals cannot be replayed: {said[0]}")
        raise HTTPException(503, f"The replay failed (exit status {child.returncode}).")


def main(argv: list[str]) -> int:
    """The child: the page for `argv` (an instant as `datetime.isoformat` wrote it, the
    archive) on stdout."""
    with contextlib.suppress(OSError):  # The kernel's first choice when memory runs out ...
        Path("/proc/self/oom_score_adj").write_text("1000")
    with contextlib.suppress(OSError):  # ... and the live desk's pushes before its work.
        os.nice(10)
    try:
        page = _page(datetime.fromisoformat(argv[0]), argv[1])
    except ArchiveCorrupt as err:
        print(err, file=sys.stderr)
        return CORRUPT
    sys.stdout.write(page)
    return 0


def _page(at: datetime, archive: str) -> str:
    from energy_assets.desk.render import replay_page
    from energy_assets.journals.replay import view_at

    return replay_page(view_at(at, archive))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
