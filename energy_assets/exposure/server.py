"""`energy-assets dashboard`: serve the rendered pages as static files, nothing else.

The server reads only the dashboard directory -- never DuckDB, never the vendor -- so a room
of traders refreshing at once costs a few file reads. Files are cached in memory keyed by
inode, mtime and size (the renderer replaces files by rename, so a new version is a new
inode), gzipped once per version for browsers that accept it; every answer carries an ETag,
and `If-None-Match` gets a bodiless 304, which is what the pages' version polling costs. One thread per connection, with a deep accept queue so a
burst of 500 connections queues instead of being refused.
"""

from __future__ import annotations

import gzip
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from energy_assets.exposure.dashboard import INDEX, VERSION_FILE
from energy_assets.logs import event_logger

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8050
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".json": "application/json",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
_GZIP_MIN_BYTES = 1024
_PLACEHOLDER = (
    b"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Desk exposure</title>"
    b"<link rel='icon' href='data:,'></head><body style='font-family:system-ui;padding:24px'>"
    b"<h1>No dashboard yet</h1><p>It appears here as soon as <code>exposure_dashboard</code> "
    b"has been materialised.</p><script>setInterval(function(){fetch('version.json',"
    b"{cache:'no-cache'}).then(function(r){if(r.ok)location.reload();}).catch(function(){});},"
    b"5000);</script></body></html>"
)


@dataclass
class _Entry:
    key: tuple[int, int, int]
    body: bytes
    etag: str
    gzipped: bytes | None = None


class _FileCache:
    """File bytes by name, reloaded when the file's inode, mtime or size changes; the
    gzipped variant is made once per version, on first demand."""

    def __init__(self, root: Path):
        self.root = root
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}

    def get(self, name: str, gzip_ok: bool) -> tuple[bytes, str, bool] | None:
        """(body, etag, is_gzipped) or None when there is no such file."""
        path = self.root / name
        try:
            stat = path.stat()
        except OSError:
            return None
        key = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        entry = self._entries.get(name)
        if entry is None or entry.key != key:
            try:
                body = path.read_bytes()
            except OSError:
                return None
            entry = _Entry(key, body, f'"{stat.st_ino:x}-{stat.st_mtime_ns:x}-{len(body):x}"')
            with self._lock:
                self._entries[name] = entry
        if not gzip_ok or len(entry.body) < _GZIP_MIN_BYTES:
            return entry.body, entry.etag, False
        if entry.gzipped is None:
            with self._lock:
                if entry.gzipped is None:
                    entry.gzipped = gzip.compress(entry.body, compresslevel=6, mtime=0)
        return entry.gzipped, entry.etag[:-1] + '-gz"', True


class DashboardHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "energy-dashboard"
    # Idle keep-alive connections are closed after this many seconds.
    timeout = 30

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def _serve(self, head: bool) -> None:
        name = self.path.split("?", 1)[0].split("#", 1)[0].lstrip("/") or INDEX
        suffix = Path(name).suffix
        # Only plain files at the top of the directory: no traversal, no listings.
        if "/" in name or "\\" in name or name.startswith(".") or suffix not in _TYPES:
            self._reply(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain", head=head)
            return
        gzip_ok = "gzip" in (self.headers.get("Accept-Encoding") or "")
        found = self.server.files.get(name, gzip_ok)  # type: ignore[attr-defined]
        if found is None:
            if name == INDEX:
                self._reply(HTTPStatus.OK, _PLACEHOLDER, _TYPES[".html"], head=head)
            else:
                self._reply(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain", head=head)
            return
        body, etag, gzipped = found
        if etag in (self.headers.get("If-None-Match") or ""):
            self._reply(HTTPStatus.NOT_MODIFIED, b"", None, etag=etag, head=True)
            return
        self._reply(HTTPStatus.OK, body, _TYPES[suffix], etag=etag, head=head, gzipped=gzipped)

    def _reply(
        self,
        status: HTTPStatus,
        body: bytes,
        content_type: str | None,
        etag: str | None = None,
        head: bool = False,
        gzipped: bool = False,
    ) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        if gzipped:
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Vary", "Accept-Encoding")
        if etag:
            self.send_header("ETag", etag)
        # Always revalidate: a new version must show on the next load, and revalidation is a 304.
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Content-Type-Options", "nosniff")
        if status != HTTPStatus.NOT_MODIFIED:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head and body:
            self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:
        # One line per request would cost more than the request during a refresh storm.
        pass


class DashboardServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    def __init__(self, root: Path, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT):
        self.files = _FileCache(Path(root))
        super().__init__((host, port), DashboardHandler)


def serve(root: Path, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
    """Serve `root` until interrupted."""
    log = event_logger("dashboard")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    server = DashboardServer(root, host, port)
    bound_host, bound_port = server.server_address[:2]
    log.info(
        "serving",
        url=f"http://{bound_host}:{bound_port}/",
        directory=root.resolve(),
        has_pages=(root / VERSION_FILE).exists(),
    )
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        log.info("stopped")
