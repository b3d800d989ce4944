"""The live desk service: a Starlette app that follows the capture buffer and pushes each change
to every open page as a Server-Sent Event (docs/desk.md, "Push").

    /                        the desk view
    /trader/<trader_id>      one trader's page (404 page for a trader we do not know)
    /events?topic=desk&topic=trader/<id>   one event stream for the pages a browser shows
    /static/...              styles and script (Starlette's StaticFiles: nothing outside it)
    /health                  JSON: deals the pages show, last change, clients
    /replay?at=<instant>     the desk at a past instant, from the journals (not live)
    /login, /logout          with a login configured (auth.py): who sees which book

On a change the view is computed once and each page's changing part (its *fragment*) rendered
once; the same event goes to the bounded queue of every stream following that page.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from energy_assets.desk import auth, render
from energy_assets.desk.live import LiveDesk, utc_now
from energy_assets.desk.replaying import Replays
from energy_assets.journals.archive import archive_problem
from energy_assets.logs import event_logger
from energy_assets.markets import Invalid, parse_instant
from energy_assets.settings import DEFAULT_DESK_RENEW_HOURS, DEFAULT_DESK_REPLAY_MEMORY_MB

STATIC_DIR = Path(__file__).parent / "static"
#: How often the service looks at the buffer and the published files.
POLL_SECONDS = 0.1
#: Events a client may have waiting before it is dropped (it reconnects to the current state).
QUEUE_EVENTS = 8
#: SSE comment line sent when nothing else was, so proxies and browsers keep the stream open.
PING_SECONDS = 15
#: A write to a client that takes longer than this ends its stream.
SEND_TIMEOUT_SECONDS = 10
#: The view is recomputed at least this often, so a silent listener's banner shows.
RECHECK_SECONDS = 5
#: What the browser waits before reconnecting a dropped stream (the SSE `retry` field), ms.
RETRY_MS = 1000
#: Event streams one client address may hold: a browser needs one, whatever its tabs (desk.js
#: shares it); the rest is for a few browsers behind one address.
STREAMS_PER_CLIENT = 8
#: Event streams in all (the command sets half its connection limit, so pages always get in).
MAX_STREAMS = 500
#: Pages one stream may follow (a browser's open desk tabs).
MAX_TOPICS = 64


def security_headers(submit_to: str = "") -> dict[str, str]:
    """The headers on every response. Scripts, styles and workers only from the desk's own
    files (no inline script or style, no eval); nothing may frame the desk; no MIME sniffing;
    the referrer only to the desk itself; forms submit only to the desk, and to `submit_to`
    (the login's provider, where logging out ends) when given."""
    forms = f"'self' {urlsplit(submit_to)._replace(path='').geturl()}" if submit_to else "'self'"
    return {
        "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
        "img-src 'self' data:; connect-src 'self'; worker-src 'self'; "
        f"form-action {forms}; base-uri 'none'; frame-ancestors 'none'",
        "x-frame-options": "DENY",
        "x-content-type-options": "nosniff",
        "referrer-policy": "same-origin",
        "cross-origin-opener-policy": "same-origin",
    }


SECURITY_HEADERS = security_headers()

log = event_logger("desk")


#: The zlib header a deflated event stream starts with (`Content-Encoding: deflate`).
ZLIB_HEADER = b"\x78\x9c"


def deflated(data: bytes) -> bytes:
    """`data` as deflate blocks that stand alone: compressed from a fresh window and ended by a
    full flush, so they can follow any others in a stream, each event compressed once for
    every stream (benchmarks/README.md, "Live": what a full page's event weighs)."""
    squeeze = zlib.compressobj(6, zlib.DEFLATED, -15)
    return squeeze.compress(data) + squeeze.flush(zlib.Z_FULL_FLUSH)


@dataclass(frozen=True)
class Event:
    """One stream event, encoded once for every stream: as is, and deflated."""

    plain: bytes
    deflated: bytes

    @classmethod
    def of(cls, event: ServerSentEvent) -> Event:
        plain = event.encode()
        return cls(plain, deflated(plain))


#: Sent when a stream has had nothing else for PING_SECONDS, so proxies keep it open.
PING = Event.of(ServerSentEvent(comment="ping"))
#: What every stream starts with: how long the browser waits before reconnecting.
RETRY = Event.of(ServerSentEvent(retry=RETRY_MS))
#: Ends a stream whose login has ended: its pages reload, which takes them to the login.
LOGIN_ENDED = Event.of(ServerSentEvent("", event="login"))


def accepts_deflate(accept_encoding: str) -> bool:
    """Whether an `Accept-Encoding` header takes `deflate` (named, and not with q=0)."""
    for coding in accept_encoding.lower().split(","):
        name, _, params = coding.strip().partition(";")
        if name.strip() == "deflate":
            weight = params.replace(" ", "")
            return weight not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


@dataclass(eq=False)
class Client:
    """One open event stream: the pages it follows, its address, and the events waiting for
    it (None ends the stream)."""

    topics: frozenset[str]
    address: str
    queue: asyncio.Queue
    every_book: bool = True  # its login sees every book, so the picker lists them all


@dataclass
class Page:
    change: int  # the change that made this fragment
    event_id: str
    event: Event  # the fragment as its stream event, encoded once for every stream
    fragment: str
    # The whole page, made on first request, by whether its login sees every book (a trader's
    # own login's picker lists them only).
    html: dict[bool, str] = field(default_factory=dict)


class Broker:
    """Per topic the current fragment, and the open event streams."""

    def __init__(self):
        self.pages: dict[str, Page] = {}
        self.nav = ""
        self.streams: set[Client] = set()
        self.dropped = 0

    def subscribe(self, topics: frozenset[str], address: str, every_book: bool = True) -> Client:
        # A change may bring an event for each page followed and the trader list.
        queue = asyncio.Queue(QUEUE_EVENTS * (len(topics) + 1))
        client = Client(topics, address, queue, every_book)
        self.streams.add(client)
        return client

    def held_by(self, address: str) -> int:
        return sum(client.address == address for client in self.streams)

    def publish(self, event: Event, topic: str | None = None) -> None:
        """`event` to the streams following `topic`; None: the trader list, to the streams
        whose login sees every book."""
        for client in list(self.streams):
            if client.every_book if topic is None else topic in client.topics:
                self._put(client, event)

    def _put(self, client: Client, event: Event) -> None:
        try:
            client.queue.put_nowait(event)
        except asyncio.QueueFull:
            # Free what it holds and end its stream; its browser reconnects to the current
            # state (the connection's own limits close a socket that stopped reading).
            self.streams.discard(client)
            while not client.queue.empty():
                client.queue.get_nowait()
            client.queue.put_nowait(None)
            self.dropped += 1


@dataclass(eq=False)
class DeskService:
    """The state, the renderer and the broker of one running service."""

    desk: LiveDesk
    poll_seconds: float
    replays: Replays  # `/replay`, from the journals' archive
    login: bool  # pages carry a logout button
    streams_per_client: int
    max_streams: int
    # The users file's books: each has its page before its first deal, so a trader who
    # logs in before dealing sees their empty book, not "no such trader".
    books: tuple[str, ...] = ()
    broker: Broker = field(default_factory=Broker)
    trader_pages: render.TraderPages = field(default_factory=render.TraderPages)
    boot: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    traders: list[str] = field(default_factory=list)
    deals: int = 0  # the deals the pages served show (`/health`)
    changed_at: float = 0.0
    rebuild_seconds: float = 0.0
    #: How often the state is made again from the buffer, as on a start, in the background:
    #: the desk then holds the buffer's 72 h and at most this much more, not every deal since
    #: it started (docs/desk.md, "Following the buffer").
    renew_seconds: float = DEFAULT_DESK_RENEW_HOURS * 3600

    def compute(self) -> tuple[dict[str, Page], set[str], str, list[str], int]:
        """One view, every fragment rendered once, and the pages whose fragment changed with
        their event encoded (runs in a worker thread: deflating a full page's event is work the
        event loop's streams must not wait for). Only `install` changes `broker.pages`, after
        this, on the loop."""
        view = self.desk.view()
        traders = view.traders + [book for book in self.books if book not in view.traders]
        fragments = {render.DESK_TOPIC: render.desk_fragment(view)}
        for trader, fragment in self.trader_pages.fragments(view, traders).items():
            fragments[render.trader_topic(trader)] = fragment
        self.trader_pages.forget(traders)
        change = self.desk.changes
        event_id = f"{self.boot}-{change}"
        changed = {}
        for topic, fragment in fragments.items():
            current = self.broker.pages.get(topic)
            if current is None or current.fragment != fragment:
                data = json.dumps({"topic": topic, "html": fragment})
                event = Event.of(ServerSentEvent(data, event="live", id=event_id))
                changed[topic] = Page(change, event_id, event, fragment)
        return changed, set(fragments), render.nav_fragment(traders), traders, view.deals

    def install(
        self, changed: dict[str, Page], topics: set[str], nav: str, traders: list[str], deals: int
    ):
        """Swap the changed pages in and push them (on the event loop)."""
        broker = self.broker
        for topic, page in changed.items():
            broker.pages[topic] = page
            broker.publish(page.event, topic)
        for topic in set(broker.pages) - topics:  # a trader gone from the buffer
            del broker.pages[topic]
        if nav != broker.nav:
            broker.nav = nav
            for page in broker.pages.values():
                page.html.clear()
            broker.publish(Event.of(ServerSentEvent(nav, event="nav")))
        self.traders = traders
        self.deals = deals
        self.changed_at = time.time()

    async def rebuild(self) -> None:
        started = time.perf_counter()
        await asyncio.to_thread(self.desk.refresh)
        self.install(*await asyncio.to_thread(self.compute))
        self.rebuild_seconds = time.perf_counter() - started
        log.info(
            "rebuilt",
            deals=self.deals,
            traders=len(self.traders),
            seconds=round(self.rebuild_seconds, 3),
        )

    def renewed(self) -> LiveDesk:
        """A new state from the buffer, as on a start (in a worker thread, while `follow`
        goes on with the current one)."""
        started, old = time.perf_counter(), self.desk
        fresh = LiveDesk(old.follower.directory, old.dashboard_dir, clock=old.clock)
        fresh.refresh()
        log.info(
            "renewed",
            deals_before=len(old.ids),
            deals=len(fresh.ids),
            seconds=round(time.perf_counter() - started, 3),
        )
        return fresh

    async def follow(self) -> None:
        computed = renewed = time.monotonic()
        renewing: asyncio.Future | None = None
        while True:
            await asyncio.sleep(self.poll_seconds)
            try:
                if renewing is None and time.monotonic() - renewed >= self.renew_seconds:
                    renewing = asyncio.ensure_future(asyncio.to_thread(self.renewed))
                if renewing is not None and renewing.done():
                    done, renewing, renewed = renewing, None, time.monotonic()
                    fresh = done.result()
                    fresh.changes = self.desk.changes + 1  # event ids never go back
                    self.desk, computed = fresh, 0.0
                changed = await asyncio.to_thread(self.desk.refresh)
                if changed or time.monotonic() - computed > RECHECK_SECONDS:
                    computed = time.monotonic()
                    self.install(*await asyncio.to_thread(self.compute))
            except Exception as err:  # a bad file must not stop the desk; say so, keep going
                log.error("refresh_failed", error=repr(err))

    # -- HTTP --------------------------------------------------------------------------------
    def page_html(self, topic: str, title: str, selected: str, every_book: bool = True) -> str:
        page = self.broker.pages[topic]
        if every_book not in page.html:
            nav = (
                render.nav_fragment(self.traders, selected)
                if every_book
                else render.nav_fragment([selected], selected, desk=False)
            )
            made = render.page(title, topic, nav, page.fragment, page.event_id, self.login)
            page.html[every_book] = made
        return page.html[every_book]

    async def desk_page(self, request: Request) -> HTMLResponse:
        return HTMLResponse(self.page_html(render.DESK_TOPIC, "Desk", ""))

    async def trader_page(self, request: Request) -> HTMLResponse:
        trader = request.path_params["trader_id"]
        topic = render.trader_topic(trader)
        if topic not in self.broker.pages:
            raise HTTPException(404, f"No trader “{trader}” in the buffer or the confirmed book.")
        return HTMLResponse(self.page_html(topic, trader, trader, auth.every_book(request)))

    async def events(self, request: Request) -> EventSourceResponse:
        """One stream for every page a browser shows: `?topic=desk&topic=trader/<id>...`;
        each `live` event carries its topic. Topics unknown here are ignored (a trader gone
        from the book must not stop the browser's other pages)."""
        asked = request.query_params.getlist("topic")
        if not asked or len(asked) > MAX_TOPICS:
            raise HTTPException(
                400,
                f"Name between 1 and {MAX_TOPICS} pages to follow, "
                "e.g. /events?topic=desk&topic=trader/alice.",
            )
        topics = frozenset(t for t in asked if t in self.broker.pages)
        if not topics:
            raise HTTPException(404, f"No such page to follow: {', '.join(asked)}.")
        address = request.client.host if request.client else ""
        held = self.broker.held_by(address)
        if held >= self.streams_per_client:
            raise HTTPException(
                429,
                f"{address} holds {held} event streams already, the most one address may "
                "(a browser needs one for all its tabs).",
                headers={"Retry-After": "5"},
            )
        if len(self.broker.streams) >= self.max_streams:
            raise HTTPException(
                503,
                f"The desk is serving {self.max_streams} event streams, its most.",
                headers={"Retry-After": "5"},
            )
        since = change_of(
            request.headers.get("last-event-id") or request.query_params.get("since", ""),
            self.boot,
        )
        client = self.broker.subscribe(topics, address, auth.every_book(request))
        # Oldest first, so the stream's ids never go back; the change `since` names is sent
        # again, as a stream dropped in the middle of one change lacks some of its pages.
        for page in sorted((self.broker.pages[t] for t in topics), key=lambda p: p.change):
            if since is None or page.change >= since:
                client.queue.put_nowait(page.event)

        ends = auth.session_ends(request)
        # Deflated when the browser takes it (every browser does): a page's event is its whole
        # fragment, mostly table rows that deflate well. sse-starlette compresses nothing, so
        # this stream sends its own pings, deflated like the rest.
        deflate = accepts_deflate(request.headers.get("accept-encoding", ""))

        def encoded(event: Event) -> bytes:
            return event.deflated if deflate else event.plain

        async def stream():
            try:
                yield ZLIB_HEADER + RETRY.deflated if deflate else RETRY.plain
                while True:
                    left = None if ends is None else max(0.0, ends - time.time())
                    wait = PING_SECONDS if left is None else min(PING_SECONDS, left)
                    try:
                        event = await asyncio.wait_for(client.queue.get(), wait)
                    except TimeoutError:
                        if ends is None or ends > time.time():
                            yield encoded(PING)
                            continue
                        yield encoded(LOGIN_ENDED)
                        return
                    if event is None:
                        return
                    yield encoded(event)
            finally:
                self.broker.streams.discard(client)

        headers = {
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
            "Vary": "Accept-Encoding",
        }
        if deflate:
            headers["Content-Encoding"] = "deflate"
        return EventSourceResponse(
            stream(), ping=0, send_timeout=SEND_TIMEOUT_SECONDS, headers=headers
        )

    async def replay_page(self, request: Request) -> HTMLResponse:
        at = replay_instant(request.query_params.get("at", ""), datetime.now(UTC))
        if isinstance(at, str):
            raise HTTPException(400, at)
        problem = archive_problem(self.replays.archive)
        if problem:  # ENERGY_ARCHIVE_URL names what cannot be opened here: the live desk goes on
            raise HTTPException(503, f"The journals cannot be replayed: {problem}")
        return HTMLResponse(await self.replays.page(at, request.is_disconnected))

    async def health(self, request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "status": "ok",
                # What a page requested now shows; the desk may have read more already.
                "deals": self.deals,
                "traders": len(self.traders),
                "changes": self.desk.changes,
                "changed_at": self.changed_at,
                "clients": len(self.broker.streams),
                "dropped_clients": self.broker.dropped,
                "rebuild_seconds": round(self.rebuild_seconds, 3),
            }
        )


def replay_instant(text: str, now: datetime) -> datetime | str:
    """The UTC instant `/replay?at=` names (`now` when empty), or why it names none."""
    if not text:
        return now
    at = parse_instant(text)
    return f"{at.reason}: e.g. 2026-12-01T10:00Z" if isinstance(at, Invalid) else at


def change_of(event_id: str, boot: str) -> int | None:
    """The change an event id `<boot>-<change>` of this run names; None for anything else (an
    id from before a restart, or not an id): such a stream gets every page's current state."""
    found = re.fullmatch(r"([0-9a-f]{8})-([0-9]{1,18})", event_id, re.ASCII)
    if found is None or found[1] != boot:
        return None
    return int(found[2])


def _books_followed(request: Request) -> list[str | None]:
    """The books an event stream shows, for the login's guard (None: the whole desk)."""
    prefix = render.trader_topic("")
    return [
        topic.removeprefix(prefix) if topic.startswith(prefix) else None
        for topic in request.query_params.getlist("topic")
    ]


class SecurityHeaders:
    """`security_headers()` on every response the app makes (a header the response already
    has is left as it is)."""

    def __init__(self, app: ASGIApp, submit_to: str = ""):
        self.app = app
        self.headers = security_headers(submit_to)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.headers.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _explain(request: Request, exc: HTTPException) -> str:
    """What happened, in words, for the errors Starlette raises itself."""
    if exc.status_code == 404 and exc.detail == "Not Found":
        return f"There is no page at {request.url.path}."
    if exc.status_code == 405:
        return f"{request.method} is not answered here: the desk's pages are read with GET."
    return exc.detail


async def _error_page(request: Request, exc: HTTPException) -> HTMLResponse:
    return HTMLResponse(
        render.error_page(exc.status_code, _explain(request, exc)),
        status_code=exc.status_code,
        headers=exc.headers,
    )


async def _server_error(request: Request, exc: Exception) -> HTMLResponse:
    # Starlette answers a failure outside the middleware: the headers are set here too.
    return HTMLResponse(
        render.error_page(500, "The desk failed to answer this request; its log says why."),
        status_code=500,
        headers=SECURITY_HEADERS,
    )


def create_app(
    capture_dir: str | Path,
    dashboard_dir: str | Path,
    poll_seconds: float = POLL_SECONDS,
    archive: str | None = None,
    login: auth.DeskAuth | None = None,
    streams_per_client: int = STREAMS_PER_CLIENT,
    max_streams: int = MAX_STREAMS,
    clock: Callable[[], datetime] = utc_now,
    replay_memory_mb: int = DEFAULT_DESK_REPLAY_MEMORY_MB,
    renew_hours: float = DEFAULT_DESK_RENEW_HOURS,
) -> Starlette:
    """The ASGI app; its lifespan rebuilds the state from the buffer before serving.
    `archive`: the journals' archive `/replay` reads (default `<capture_dir>/archive`).
    `clock`: the desk's now (gate closures, the days around now); tests fix it.
    `login`: who may see which book (auth.py); None serves every page to anyone who can
    connect, so the command binds loopback only then. `replay_memory_mb`: the most one
    replay may use (replaying.py). `renew_hours`: how often the state is made again."""
    service = DeskService(
        LiveDesk(capture_dir, dashboard_dir, clock=clock),
        poll_seconds,
        Replays(archive or str(Path(capture_dir) / "archive"), replay_memory_mb),
        login is not None,
        streams_per_client,
        max_streams,
        login.books() if login else (),
        renew_seconds=renew_hours * 3600,
    )
    guard = login.guard if login else lambda endpoint, home=False, books=None: endpoint

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        await service.rebuild()
        task = asyncio.create_task(service.follow())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    routes = [
        # Each route that shows figures is guarded: `trader_id` in its path is the book it
        # shows, the event stream's are its topics, any other shows the whole desk. /health
        # holds counts, no figures: behind a login, only for one that sees every book.
        Route("/", guard(service.desk_page, home=True)),
        Route("/trader/{trader_id:path}", guard(service.trader_page)),
        Route("/events", guard(service.events, books=_books_followed)),
        Route("/health", login.probe(service.health) if login else service.health),
        Route("/replay", guard(service.replay_page)),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        *(login.routes() if login else ()),
    ]
    # Outermost first: the headers go on the login's answers too.
    middleware = [
        Middleware(SecurityHeaders, submit_to=login.issuer if login else ""),
        # Pages, scripts and styles gzipped for a browser that takes it (a busy desk's page is
        # ~1 MiB of table rows); event streams are left to `events`, which deflates them.
        Middleware(GZipMiddleware, compresslevel=6),
        *(login.middleware() if login else auth.loopback_only()),
    ]
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={HTTPException: _error_page, Exception: _server_error},
        lifespan=lifespan,
    )
    app.state.service = service
    return app
