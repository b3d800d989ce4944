"""The desk's HTTP connections: uvicorn's protocol with the limits uvicorn does not have
(docs/desk.md, "Connections").

uvicorn (0.54) times a connection out only between requests, so one that never sends, or sends
a request's head a byte at a time, is held forever (Kludex/uvicorn#160, #1192) until the
descriptors run out. uvicorn takes its protocol class as a public option (`http=`), so the fix
is a small subclass of its httptools protocol: a head must arrive whole within `head_timeout`
and be at most `max_head_bytes`; at most `max_connections` are open, one more evicting the
oldest still waiting for a head; a peer that stops reading for `stall_timeout` is aborted
(closing would wait for its buffer to drain, which it never does).
"""

from __future__ import annotations

import asyncio
import resource

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

#: A request's head (request line and headers) must arrive within this, seconds.
HEAD_TIMEOUT_SECONDS = 10.0
#: A head larger than this is refused (a browser's, cookies included, is far smaller).
MAX_HEAD_BYTES = 64 * 1024
#: A peer that reads nothing for this long while data waits for it is disconnected, seconds.
STALL_TIMEOUT_SECONDS = 10.0
#: Descriptors kept for everything but connections: buffer files, published files, the
#: listening socket, worker threads, logs.
FD_RESERVE = 100

_TOO_LARGE_TEXT = b"The request's head (its line and headers) is larger than the desk accepts.\n"
_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: text/plain; charset=utf-8\r\nx-content-type-options: nosniff\r\n"
    b"connection: close\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(_TOO_LARGE_TEXT), _TOO_LARGE_TEXT)
)


def connection_limit(reserve: int = FD_RESERVE) -> int:
    """Connections this process can hold and still open its files: the descriptor limit
    (`ulimit -n`) less `reserve`."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(16, soft - reserve)


def guarded_protocol(
    max_connections: int,
    head_timeout: float = HEAD_TIMEOUT_SECONDS,
    stall_timeout: float = STALL_TIMEOUT_SECONDS,
    max_head_bytes: int = MAX_HEAD_BYTES,
) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with the limits above (pass it as `uvicorn.run(http=...)`).
    Each call makes a class with its own registry of connections waiting for a head."""
    # Connections waiting for a request's head -> their deadline; insertion order is age.
    waiting: dict[GuardedProtocol, asyncio.TimerHandle] = {}

    class GuardedProtocol(HttpToolsProtocol):
        _head_bytes = 0
        _stall: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                oldest = next(iter(waiting), None)
                if oldest is None:  # every connection is answering: refuse this one
                    transport.abort()
                    return
                oldest._expire()
            self._await_head()

        def _await_head(self) -> None:
            self._head_done()
            self._head_bytes = 0
            waiting[self] = self.loop.call_later(head_timeout, self._expire)

        def _head_done(self) -> None:
            timer = waiting.pop(self, None)
            if timer is not None:
                timer.cancel()

        def _expire(self) -> None:
            self._head_done()
            self.transport.abort()

        def data_received(self, data: bytes) -> None:
            if self in waiting:
                self._head_bytes += len(data)
                if self._head_bytes > max_head_bytes:
                    self._head_done()
                    self.transport.write(_TOO_LARGE)
                    self.transport.close()
                    return
            super().data_received(data)

        def on_headers_complete(self) -> None:
            self._head_done()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            # uvicorn armed its keep-alive timer: the connection is idle, and the next
            # request's head has its deadline from now (a pipelined one is already whole).
            if self.timeout_keep_alive_task is not None:
                self._await_head()

        def pause_writing(self) -> None:
            super().pause_writing()
            if self._stall is None:
                self._stall = self.loop.call_later(stall_timeout, self.transport.abort)

        def resume_writing(self) -> None:
            self._unstall()
            super().resume_writing()

        def _unstall(self) -> None:
            if self._stall is not None:
                self._stall.cancel()
                self._stall = None

        def connection_lost(self, exc: Exception | None) -> None:
            self._head_done()
            self._unstall()
            super().connection_lost(exc)

    return GuardedProtocol
