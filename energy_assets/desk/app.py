"""The live desk service: a Starlette app that follows the capture buffer and pushes each change
to every open page as a Server-Sent Event.

    /                        the desk view
    /trader/<trader_id>      one trader's page (404 page for a trader we do not know)
    /events/desk             the desk view's events; /events/trader/<trader_id> a trader's
    /static/...              styles and script (Starlette's StaticFiles: nothing outside it)
    /health                  JSON: deals held, last change, clients
    /replay?at=<instant>     the desk at a past instant, from the journals (not live)
    /login, /logout          with a login configured (auth.py): who sees which book

One background task polls the buffer and the published files every `poll_seconds`. On a
change it computes the view once, renders each page's changing part (its *fragment*) once, and
hands the same text to the bounded queue of every client watching that page. A client whose
queue is full (it does not read) is dropped: its stream ends, its queue is freed, and its
browser reconnects with `Last-Event-ID` to the current state. Events carry ids
`<boot>-<change>`: a reconnect already showing the current id gets nothing new; any other
(an older change, or an id from before a restart) gets the current fragment at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from energy_assets.desk import auth, render
from energy_assets.desk.live import LiveDesk
from energy_assets.journals.archive import ArchiveCorrupt
from energy_assets.journals.replay import view_at
from energy_assets.logs import event_logger

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

log = event_logger("desk")


@dataclass(eq=False)
class Client:
    """One open event stream: the page it watches and the events waiting for it (None ends
    the stream)."""

    topic: str
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(QUEUE_EVENTS))
    every_book: bool = True  # its login sees every book, so the picker lists them all


@dataclass
class Page:
    event_id: str
    fragment: str
    html: str | None = None  # the whole page, made on first request
    own_html: str | None = None  # the same for a trader's own login: the picker lists them only


class Broker:
    """Per topic: the current fragment and the clients watching it."""

    def __init__(self):
        self.pages: dict[str, Page] = {}
        self.nav = ""
        self.clients: dict[str, set[Client]] = {}
        self.dropped = 0

    def subscribe(self, topic: str, every_book: bool = True) -> Client:
        client = Client(topic, every_book=every_book)
        self.clients.setdefault(topic, set()).add(client)
        return client

    def unsubscribe(self, client: Client) -> None:
        self.clients.get(client.topic, set()).discard(client)

    def publish(self, topic: str, event: ServerSentEvent, every_book_only: bool = False) -> None:
        for client in list(self.clients.get(topic, ())):
            if every_book_only and not client.every_book:
                continue
            try:
                client.queue.put_nowait(event)
            except asyncio.QueueFull:
                self._drop(client)

    def publish_nav(self, event: ServerSentEvent) -> None:
        """The trader list, to the clients whose login sees every book."""
        for topic in list(self.clients):
            self.publish(topic, event, every_book_only=True)

    def _drop(self, client: Client) -> None:
        # Free what it holds and end its stream; its browser reconnects to the current state.
        self.unsubscribe(client)
        while not client.queue.empty():
            client.queue.get_nowait()
        client.queue.put_nowait(None)
        self.dropped += 1

    @property
    def client_count(self) -> int:
        return sum(len(c) for c in self.clients.values())


class DeskService:
    """The state, the renderer and the broker of one running service."""

    def __init__(
        self,
        desk: LiveDesk,
        poll_seconds: float = POLL_SECONDS,
        archive: str | None = None,
        login: bool = False,
    ):
        self.desk = desk
        self.login = login  # pages carry a logout button
        self.archive = archive
        self.poll_seconds = poll_seconds
        self.broker = Broker()
        self.trader_pages = render.TraderPages()
        self.boot = uuid.uuid4().hex[:8]
        self.traders: list[str] = []
        self.changed_at = 0.0
        self.rebuild_seconds = 0.0

    def compute(self) -> tuple[dict[str, str], str, list[str]]:
        """One view, every fragment rendered once (runs in a worker thread)."""
        view = self.desk.view()
        fragments = {render.DESK_TOPIC: render.desk_fragment(view)}
        for trader in view.traders:
            fragments[render.trader_topic(trader)] = self.trader_pages.fragment(view, trader)
        self.trader_pages.forget(view.traders)
        return fragments, render.nav_fragment(view.traders), view.traders

    def install(self, fragments: dict[str, str], nav: str, traders: list[str]) -> None:
        """Swap the new fragments in and push those that changed (on the event loop)."""
        event_id = f"{self.boot}-{self.desk.changes}"
        broker = self.broker
        for topic, fragment in fragments.items():
            current = broker.pages.get(topic)
            if current is not None and current.fragment == fragment:
                continue
            broker.pages[topic] = Page(event_id, fragment)
            broker.publish(topic, ServerSentEvent(fragment, event="live", id=event_id))
        for topic in set(broker.pages) - set(fragments):  # a trader gone from the buffer
            del broker.pages[topic]
        if nav != broker.nav:
            broker.nav = nav
            for page in broker.pages.values():
                page.html = None
            broker.publish_nav(ServerSentEvent(nav, event="nav"))
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
        trader = request.path_params.get("trader_id")
        topic = render.DESK_TOPIC if trader is None else render.trader_topic(trader)
        if topic not in self.broker.pages:
            raise HTTPException(404, "no such page")
        since = request.headers.get("last-event-id") or request.query_params.get("since", "")
        client = self.broker.subscribe(topic, auth.every_book(request))
        current = self.broker.pages.get(topic)
        if current is not None and current.event_id != since:
            client.queue.put_nowait(
                ServerSentEvent(current.fragment, event="live", id=current.event_id)
            )

        async def stream():
            try:
                yield ServerSentEvent(retry=RETRY_MS)
                while True:
                    event = await client.queue.get()
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
        text = request.query_params.get("at", "")
        try:
            at = datetime.fromisoformat(text) if text else datetime.now(UTC)
        except ValueError:
            raise HTTPException(
                400, f"“{text}” is not an instant: e.g. 2026-12-01T10:00Z"
            ) from None
        if at.tzinfo is None:
            raise HTTPException(400, f"“{text}” has no time zone: e.g. {text}Z")
        try:
            view = await asyncio.to_thread(view_at, at.astimezone(UTC), self.archive)
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


async def _not_found(request: Request, exc: HTTPException) -> HTMLResponse:
    message = exc.detail if exc.status_code == 404 else exc.detail or "Error"
    return HTMLResponse(render.not_found(message), status_code=exc.status_code)


def create_app(
    capture_dir: str | Path,
    dashboard_dir: str | Path,
    poll_seconds: float = POLL_SECONDS,
    archive: str | None = None,
    login: auth.DeskAuth | None = None,
) -> Starlette:
    """The ASGI app; its lifespan rebuilds the state from the buffer before serving.
    `archive`: the journals' archive `/replay` reads (default `<capture_dir>/archive`).
    `login`: who may see which book (auth.py); None serves every page to anyone who can
    connect, so the command binds loopback only then."""
    archive = archive or str(Path(capture_dir) / "archive")
    service = DeskService(
        LiveDesk(capture_dir, dashboard_dir), poll_seconds, archive, login=login is not None
    )
    guard = login.guard if login else lambda endpoint, home=False: endpoint

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

    app = Starlette(
        routes=[
            # Each route that shows figures is guarded: `trader_id` in its path is the book
            # it shows, any other shows the whole desk. /health holds counts, no figures.
            Route("/", guard(service.desk_page, home=True)),
            Route("/trader/{trader_id:path}", guard(service.trader_page)),
            Route("/events/desk", guard(service.events)),
            Route("/events/trader/{trader_id:path}", guard(service.events)),
            Route("/health", service.health),
            Route("/replay", guard(service.replay_page)),
            Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
            *(login.routes() if login else ()),
        ],
        middleware=login.middleware() if login else auth.loopback_only(),
        exception_handlers={HTTPException: _not_found},
        lifespan=lifespan,
    )
    app.state.service = service
    return app
