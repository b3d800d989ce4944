"""The live desk service: a Starlette app that follows the capture buffer and pushes each change
to every open page as a Server-Sent Event.

    /                        the desk view
    /trader/<trader_id>      one trader's page (404 page for a trader we do not know)
    /events?topic=desk&topic=trader/<id>   one event stream for the pages a browser shows
    /static/...              styles and script (Starlette's StaticFiles: nothing outside it)
    /health                  JSON: deals held, last change, clients
    /replay?at=<instant>     the desk at a past instant, from the journals (not live)
    /login, /logout          with a login configured (auth.py): who sees which book

One background task polls the buffer and the published files every `poll_seconds`. On a
change it computes the view once, renders each page's changing part (its *fragment*) once, and
hands the same event to the bounded queue of every stream following that page. A browser holds
one stream for all its tabs (`static/desk-worker.js`). A stream whose queue is full (it does not
read) is dropped: its stream ends, its queue is freed, and its browser reconnects with
`Last-Event-ID` to the current state. Events carry ids `<boot>-<change>`: a stream (re)opened
with an id gets the current fragment of each of its pages changed in or after that change, and
with an id from before a restart (or none), every page's.

Every response carries `security_headers()`; an error is a page saying what happened. A client
address may hold `streams_per_client` event streams, the service `max_streams` in all; the
connections' own limits (timeouts, how many) are `connections.py`'s, below the app.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from energy_assets.desk import auth, render
from energy_assets.desk.live import LiveDesk, utc_now
from energy_assets.journals.archive import ArchiveCorrupt
from energy_assets.journals.replay import view_at
from energy_assets.logs import event_logger
from energy_assets.markets import EARLIEST, LATEST, YEARS

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
    forms = " ".join(
        ["'self'", *([urlsplit(submit_to)._replace(path="").geturl()] if submit_to else [])]
    )
    return {
        "content-security-policy": "; ".join(
            [
                "default-src 'none'",
                "script-src 'self'",
                "style-src 'self'",
                "img-src 'self' data:",
                "connect-src 'self'",
                "worker-src 'self'",
                f"form-action {forms}",
                "base-uri 'none'",
                "frame-ancestors 'none'",
            ]
        ),
        "x-frame-options": "DENY",
        "x-content-type-options": "nosniff",
        "referrer-policy": "same-origin",
        "cross-origin-opener-policy": "same-origin",
    }


SECURITY_HEADERS = security_headers()

log = event_logger("desk")


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
    event: bytes  # the fragment as its stream event, encoded once for every stream
    fragment: str
    html: str | None = None  # the whole page, made on first request
    own_html: str | None = None  # the same for a trader's own login: the picker lists them only


class Broker:
    """Per topic: the current fragment and the clients following it."""

    def __init__(self):
        self.pages: dict[str, Page] = {}
        self.nav = ""
        self.streams: set[Client] = set()
        self.following: dict[str, set[Client]] = {}
        self.per_address: Counter[str] = Counter()
        self.dropped = 0

    def subscribe(self, topics: frozenset[str], address: str, every_book: bool = True) -> Client:
        # A change may bring an event for each page followed and the trader list.
        queue = asyncio.Queue(QUEUE_EVENTS * (len(topics) + 1))
        client = Client(topics, address, queue, every_book)
        self.streams.add(client)
        for topic in topics:
            self.following.setdefault(topic, set()).add(client)
        self.per_address[address] += 1
        return client

    def unsubscribe(self, client: Client) -> None:
        if client not in self.streams:
            return
        self.streams.discard(client)
        for topic in client.topics:
            self.following[topic].discard(client)
            if not self.following[topic]:
                del self.following[topic]
        self.per_address[client.address] -= 1
        if not self.per_address[client.address]:
            del self.per_address[client.address]

    def publish(self, topic: str, event: bytes) -> None:
        for client in list(self.following.get(topic, ())):
            self._put(client, event)

    def publish_nav(self, event: bytes) -> None:
        """The trader list, to the streams whose login sees every book."""
        for client in list(self.streams):
            if client.every_book:
                self._put(client, event)

    def _put(self, client: Client, event: bytes) -> None:
        try:
            client.queue.put_nowait(event)
        except asyncio.QueueFull:
            # Free what it holds and end its stream; its browser reconnects to the current
            # state (the connection's own limits close a socket that stopped reading).
            self.unsubscribe(client)
            while not client.queue.empty():
                client.queue.get_nowait()
            client.queue.put_nowait(None)
            self.dropped += 1

    @property
    def client_count(self) -> int:
        return len(self.streams)


class DeskService:
    """The state, the renderer and the broker of one running service."""

    def __init__(
        self,
        desk: LiveDesk,
        poll_seconds: float = POLL_SECONDS,
        archive: str | None = None,
        login: bool = False,
        streams_per_client: int = STREAMS_PER_CLIENT,
        max_streams: int = MAX_STREAMS,
        books: tuple[str, ...] = (),
    ):
        self.desk = desk
        # The users file's books: each has its page before its first deal, so a trader who
        # logs in before dealing sees their empty book, not "no such trader".
        self.books = books
        self.login = login  # pages carry a logout button
        self.archive = archive
        self.poll_seconds = poll_seconds
        self.streams_per_client = streams_per_client
        self.max_streams = max_streams
        self.broker = Broker()
        self.trader_pages = render.TraderPages()
        self.boot = uuid.uuid4().hex[:8]
        self.traders: list[str] = []
        self.changed_at = 0.0
        self.rebuild_seconds = 0.0

    def compute(self) -> tuple[dict[str, str], str, list[str]]:
        """One view, every fragment rendered once (runs in a worker thread)."""
        view = self.desk.view()
        traders = view.traders + [book for book in self.books if book not in view.traders]
        fragments = {render.DESK_TOPIC: render.desk_fragment(view)}
        for trader in traders:
            fragments[render.trader_topic(trader)] = self.trader_pages.fragment(view, trader)
        self.trader_pages.forget(traders)
        return fragments, render.nav_fragment(traders), traders

    def install(self, fragments: dict[str, str], nav: str, traders: list[str]) -> None:
        """Swap the new fragments in and push those that changed (on the event loop)."""
        change = self.desk.changes
        event_id = f"{self.boot}-{change}"
        broker = self.broker
        for topic, fragment in fragments.items():
            current = broker.pages.get(topic)
            if current is not None and current.fragment == fragment:
                continue
            data = json.dumps({"topic": topic, "html": fragment})
            event = ServerSentEvent(data, event="live", id=event_id).encode()
            page = Page(change, event_id, event, fragment)
            broker.pages[topic] = page
            broker.publish(topic, page.event)
        for topic in set(broker.pages) - set(fragments):  # a trader gone from the buffer
            del broker.pages[topic]
        if nav != broker.nav:
            broker.nav = nav
            for page in broker.pages.values():
                page.html = None
            broker.publish_nav(ServerSentEvent(nav, event="nav").encode())
        self.traders = traders
        self.changed_at = time.time()

    async def rebuild(self) -> None:
        started = time.perf_counter()
        await asyncio.to_thread(self.desk.refresh)
        self.install(*await asyncio.to_thread(self.compute))
        self.rebuild_seconds = time.perf_counter() - started
        log.info(
            "rebuilt",
            deals=len(self.desk.ids),
            traders=len(self.traders),
            seconds=round(self.rebuild_seconds, 3),
        )

    async def follow(self) -> None:
        computed = time.monotonic()
        while True:
            await asyncio.sleep(self.poll_seconds)
            try:
                changed = await asyncio.to_thread(self.desk.refresh)
                if changed or time.monotonic() - computed > RECHECK_SECONDS:
                    computed = time.monotonic()
                    self.install(*await asyncio.to_thread(self.compute))
            except Exception as err:  # a bad file must not stop the desk; say so, keep going
                log.error("refresh_failed", error=repr(err))

    # -- HTTP --------------------------------------------------------------------------------
    def page_html(self, topic: str, title: str, selected: str, every_book: bool = True) -> str:
        page = self.broker.pages[topic]
        made = page.html if every_book else page.own_html
        if made is None:
            nav = (
                render.nav_fragment(self.traders, selected)
                if every_book
                else render.nav_fragment([selected], selected, desk=False)
            )
            made = render.page(
                title, topic, selected, nav, page.fragment, page.event_id, logout=self.login
            )
            if every_book:
                page.html = made
            else:
                page.own_html = made
        return made

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
        held = self.broker.per_address[address]
        if held >= self.streams_per_client:
            raise HTTPException(
                429,
                f"{address} holds {held} event streams already, the most one address may "
                "(a browser needs one for all its tabs).",
                headers={"Retry-After": "5"},
            )
        if self.broker.client_count >= self.max_streams:
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

        async def stream():
            try:
                yield ServerSentEvent(retry=RETRY_MS)
                while True:
                    left = None if ends is None else max(0.0, ends - time.time())
                    try:
                        event = await asyncio.wait_for(client.queue.get(), left)
                    except TimeoutError:
                        # The login has ended: its pages reload, which takes them to the login.
                        yield ServerSentEvent("", event="login")
                        return
                    if event is None:
                        return
                    yield event
            finally:
                self.broker.unsubscribe(client)

        return EventSourceResponse(
            stream(),
            ping=PING_SECONDS,
            send_timeout=SEND_TIMEOUT_SECONDS,
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def replay_page(self, request: Request) -> HTMLResponse:
        at = replay_instant(request.query_params.get("at", ""), datetime.now(UTC))
        if isinstance(at, str):
            raise HTTPException(400, at)
        try:
            view = await asyncio.to_thread(view_at, at, self.archive)
        except ArchiveCorrupt as err:
            raise HTTPException(500, f"The journals cannot be replayed: {err}") from None
        return HTMLResponse(render.replay_page(view))

    async def health(self, request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "deals": len(self.desk.ids),
                "traders": len(self.traders),
                "changes": self.desk.changes,
                "changed_at": self.changed_at,
                "clients": self.broker.client_count,
                "dropped_clients": self.broker.dropped,
                "rebuild_seconds": round(self.rebuild_seconds, 3),
            }
        )


def replay_instant(text: str, now: datetime) -> datetime | str:
    """The UTC instant `/replay?at=` names (`now` when empty), or why it names none: ISO 8601
    with a time zone, ASCII, inside the years the journals can hold."""
    if not text:
        return now
    shown = f"“{text[:40]}{'…' if len(text) > 40 else ''}”"
    try:
        if not text.isascii() or len(text) > 40:
            raise ValueError
        at = datetime.fromisoformat(text)
    except ValueError:
        return f"{shown} is not an instant: e.g. 2026-12-01T10:00Z"
    if at.tzinfo is None:
        return f"{shown} has no time zone: e.g. {text}Z"
    try:
        at = at.astimezone(UTC)
    except OverflowError:
        at = None
    if at is None or not EARLIEST <= at < LATEST:
        return f"{shown} is outside the years the journals can hold ({YEARS})"
    return at


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
) -> Starlette:
    """The ASGI app; its lifespan rebuilds the state from the buffer before serving.
    `archive`: the journals' archive `/replay` reads (default `<capture_dir>/archive`).
    `clock`: the desk's now (gate closures, the days around now); tests fix it.
    `login`: who may see which book (auth.py); None serves every page to anyone who can
    connect, so the command binds loopback only then."""
    archive = archive or str(Path(capture_dir) / "archive")
    service = DeskService(
        LiveDesk(capture_dir, dashboard_dir, clock=clock),
        poll_seconds,
        archive,
        login=login is not None,
        streams_per_client=streams_per_client,
        max_streams=max_streams,
        books=login.books() if login else (),
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
        # holds counts, no figures.
        Route("/", guard(service.desk_page, home=True)),
        Route("/trader/{trader_id:path}", guard(service.trader_page)),
        Route("/events", guard(service.events, books=_books_followed)),
        Route("/health", service.health),
        Route("/replay", guard(service.replay_page)),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        *(login.routes() if login else ()),
    ]
    # Outermost first: the headers go on the login's answers too.
    middleware = [
        Middleware(SecurityHeaders, submit_to=login.issuer if login else ""),
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
