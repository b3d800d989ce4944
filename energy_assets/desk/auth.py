"""Who may see what on the desk: login with the company's OpenID Connect provider, a signed
session cookie, and a check on every route that shows figures (docs/desk.md, "Login", says
what each of `SETTINGS` holds).

All of `SETTINGS` set: every page and stream needs a login. None set: no login, and the desk
binds loopback only (`refuse_to_bind`). A trader sees their own book only; head and risk see
every book; a login not in the users file sees nothing. The session holds the login's email
and when it ends, no token; the role is looked up in the file loaded at start. Each decision
is logged, never a token, a code or a cookie.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import re
import time
import tomllib
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
from authlib.deprecate import AuthlibDeprecationWarning
from joserfc.errors import JoseError
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from energy_assets.logs import event_logger
from energy_assets.settings import Settings
from energy_assets.trades.deal import TRADER_ID, TRADER_ID_TEXT, show

with warnings.catch_warnings():
    # Authlib 1.9 prefers the `httpx2` fork and warns when it falls back to httpx (a pinned
    # dependency here, with the same API).
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.integrations.starlette_client import OAuth, OAuthError

ROLES = ("trader", "head", "risk")
SEES_EVERY_BOOK = ("head", "risk")
SESSION_COOKIE = "desk_session"
MIN_SECRET_CHARS = 32
#: What the desk asks the provider for: the ID token's `email` claim is the login.
SCOPE = "openid email"
#: Every exchange with the provider ends within this, whole answers included: httpx's own
#: timeouts bound only the gaps between bytes, which a provider dripping its answer resets.
PROVIDER_TIMEOUT_SECONDS = 10
#: The most of one answer from the provider that is read: its discovery document, its keys and
#: a token are a few kB. Unbounded, one endless answer grew the desk by 5 GB in those 10 s.
PROVIDER_ANSWER_BYTES = 1 << 20
#: What the desk needs of the provider's discovery document (the login, the token, its keys).
ENDPOINTS = ("authorization_endpoint", "token_endpoint", "jwks_uri")
#: What an exchange with the provider can end in besides an answer: no answer in time, a
#: transport error, an error it sent, or an answer that is not what OpenID Connect says (an
#: ID token or key set Authlib refuses raises joserfc's errors: a 500 before).
PROVIDER_FAILED = (
    httpx.HTTPError,
    OAuthError,
    JoseError,
    RuntimeError,
    ValueError,
    KeyError,
    TimeoutError,
)
SETTINGS = (
    "ENERGY_DESK_OIDC_ISSUER",
    "ENERGY_DESK_OIDC_CLIENT_ID",
    "ENERGY_DESK_OIDC_CLIENT_SECRET",
    "ENERGY_DESK_SESSION_SECRET",
    "ENERGY_DESK_USERS",
)

log = event_logger("desk")


class ProviderAnswerRefused(ValueError):
    """An answer of the provider's that is not read: too long, or compressed."""


class _Capped(httpx.AsyncByteStream):
    """An answer's bytes as sent, refused once they pass `PROVIDER_ANSWER_BYTES`."""

    def __init__(self, stream: httpx.AsyncByteStream):
        self.stream = stream

    async def __aiter__(self):
        size = 0
        async for chunk in self.stream:
            size += len(chunk)
            if size > PROVIDER_ANSWER_BYTES:
                raise ProviderAnswerRefused(f"answer over {PROVIDER_ANSWER_BYTES} bytes")
            yield chunk

    async def aclose(self) -> None:
        await self.stream.aclose()


async def _bounded(response: httpx.Response) -> None:
    """httpx hook on every answer, before its body is read: the cap counts the bytes as sent,
    so a compressed answer (the desk asks for `identity`) is refused unread. Decoded, 97 kB of
    gzip grew the desk by 310 MB."""
    encoding = response.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        raise ProviderAnswerRefused(f"answer encoded as {encoding[:40]!r}")
    response.stream = _Capped(response.stream)


Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class Access:
    """What one login may see."""

    email: str
    role: str
    trader_id: str | None = None

    @property
    def every_book(self) -> bool:
        return self.role in SEES_EVERY_BOOK

    def may_see(self, trader_id: str | None) -> bool:
        """`trader_id` None: the whole desk."""
        return self.every_book or (trader_id is not None and trader_id == self.trader_id)


#: A login: printable ASCII, no space, one @. Not any Unicode: `casefold` maps "ß" to "ss" and
#: the long s "ſ" to "s", so anna@deſk.example would have been let in as anna@desk.example.
_EMAIL = re.compile(r"[\x21-\x3f\x41-\x7e]+@[\x21-\x3f\x41-\x7e]+")
_USER_KEYS = {"role", "trader_id"}


def parse_users(text: str) -> dict[str, Access] | str:
    """The users file: logins (case-insensitive) to what they may see, or why it is not one."""
    try:
        document = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError) as err:
        return f"not TOML: {err}"
    extra = sorted(set(document) - {"users"})
    if extra:
        return f'unknown top-level key(s) {extra}: only [users."<email>"] tables'
    table = document.get("users")
    if not isinstance(table, dict) or not table:
        return 'no users: add [users."<email>"] tables'
    users: dict[str, Access] = {}
    for email, entry in table.items():
        if not _EMAIL.fullmatch(email):
            return f"“{email}” is not an email address of printable ASCII"
        if not isinstance(entry, dict):
            return f"users.“{email}” is not a table"
        unknown = sorted(set(entry) - _USER_KEYS)
        if unknown:
            return f"users.“{email}”: unknown key(s) {unknown} (role, trader_id)"
        role, trader = entry.get("role"), entry.get("trader_id")
        if role not in ROLES:
            return f"users.“{email}”: role must be one of {', '.join(ROLES)}, not {role!r}"
        # A book no deal can name would stay empty: its trader would see nothing, never why.
        if trader is not None and (not isinstance(trader, str) or not TRADER_ID.fullmatch(trader)):
            return f"users.“{email}”: trader_id must be {TRADER_ID_TEXT}, got {show(trader)}"
        if role == "trader" and trader is None:
            return f"users.“{email}”: a trader needs a trader_id (their book)"
        key = email.lower()
        if key in users:
            return f"“{email}” is listed twice"
        users[key] = Access(email, role, trader)
    return users


def load_users(path: str) -> dict[str, Access] | str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        return f"cannot read {path}: {err}"
    parsed = parse_users(text)
    return f"{path}: {parsed}" if isinstance(parsed, str) else parsed


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


_LOCAL_PATH = re.compile(r"/(?![/\\])[\x21-\x7e]*")


def local_path(text: str) -> str:
    """Where to go after the login: a path on this desk, never another site nor the login
    itself; else `/`."""
    if not _LOCAL_PATH.fullmatch(text) or text.startswith(("/login", "/logout")):
        return "/"
    return text


class _Sessions:
    """Starlette's signed-cookie sessions, the cookie `Secure` when the request came over TLS
    (as uvicorn sees it: behind a proxy, from its X-Forwarded-Proto, FORWARDED_ALLOW_IPS)."""

    def __init__(self, app: ASGIApp, secret: str, max_age: int):
        options = dict(session_cookie=SESSION_COOKIE, max_age=max_age, same_site="lax")
        self.plain = SessionMiddleware(app, secret, https_only=False, **options)
        self.tls = SessionMiddleware(app, secret, https_only=True, **options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        tls = scope.get("scheme") in ("https", "wss")
        await (self.tls if tls else self.plain)(scope, receive, send)


def _page(title: str, message: str, status: int, login: bool = False) -> HTMLResponse:
    from energy_assets.desk.render import env

    html = env.get_template("auth.html").render(title=title, message=message, login=login)
    return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})


class DeskAuth:
    """The login routes, the session middleware and the guard of the desk's routes."""

    def __init__(self, current: Settings, users: dict[str, Access]):
        self.issuer = current.desk_oidc_issuer.rstrip("/")
        self.client_id = current.desk_oidc_client_id
        self.session_secret = current.desk_session_secret
        self.users = users
        self.session_seconds = current.desk_session_hours * 3600
        self.client = OAuth().register(
            "desk",
            server_metadata_url=self.issuer + "/.well-known/openid-configuration",
            client_id=self.client_id,
            client_secret=current.desk_oidc_client_secret,
            client_kwargs={
                "scope": SCOPE,
                "timeout": PROVIDER_TIMEOUT_SECONDS,
                "headers": {"Accept-Encoding": "identity"},
                "event_hooks": {"response": [_bounded]},
            },
        )

    @classmethod
    def from_settings(cls, current: Settings) -> DeskAuth | None | str:
        """The login as configured; None when nothing is; else why it cannot start."""
        values = {name: getattr(current, name.removeprefix("ENERGY_").lower()) for name in SETTINGS}
        missing = [name for name, value in values.items() if not value]
        if len(missing) == len(SETTINGS):
            return None
        if missing:
            return f"the desk's login is half configured: set {', '.join(missing)} too"
        if len(current.desk_session_secret) < MIN_SECRET_CHARS:
            return (
                f"ENERGY_DESK_SESSION_SECRET has fewer than {MIN_SECRET_CHARS} characters: "
                "make one with `python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
            )
        users = load_users(current.desk_users)
        if isinstance(users, str):
            return f"ENERGY_DESK_USERS: {users}"
        return cls(current, users)

    # -- the app's parts ----------------------------------------------------------------------
    def books(self) -> tuple[str, ...]:
        """Every trader's book the users file names, in its order."""
        return tuple(dict.fromkeys(a.trader_id for a in self.users.values() if a.trader_id))

    def middleware(self) -> list[Middleware]:
        max_age = max(1, math.ceil(self.session_seconds))
        return [Middleware(_Sessions, secret=self.session_secret, max_age=max_age)]

    def routes(self) -> list[Route]:
        return [
            Route("/login", self.login),
            Route("/login/callback", self.callback, name="login_callback"),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/logged-out", self.logged_out, name="logged_out"),
        ]

    # -- who is asking ------------------------------------------------------------------------
    def who(self, request: Request) -> tuple[str | None, Access | None]:
        """The session's login (None: none, or it has ended) and what it may see."""
        email, until = request.session.get("email"), request.session.get("until")
        if not isinstance(email, str) or not isinstance(until, int | float):
            return None, None
        if until <= time.time():
            return None, None
        return email, self.users.get(email.lower())

    def guard(
        self,
        endpoint: Endpoint,
        home: bool = False,
        books: Callable[[Request], list[str | None]] | None = None,
    ) -> Endpoint:
        """`endpoint` for a login allowed to see what it shows: the book of its path's
        `trader_id`, else the whole desk; or every one of `books(request)` (None: the whole
        desk). No session: pages go to the login, streams get 401. `home`: a trader asking
        for it is sent to their own page."""

        async def guarded(request: Request) -> Response:
            path = request.url.path
            # What was asked, in the log: an event stream's pages are in its query.
            what = path + ("?" + request.url.query if books and request.url.query else "")
            email, access = self.who(request)
            if email is None:
                log.info("access", who="-", what=what, allowed=False, reason="no session")
                if "text/event-stream" in request.headers.get("accept", ""):
                    return PlainTextResponse("log in first", 401)
                target = request.scope.get("raw_path", b"").decode("latin-1") or path
                if request.url.query:
                    target += "?" + request.url.query
                return RedirectResponse("/login?next=" + quote(target, safe=""), 303)
            trader = request.path_params.get("trader_id")
            if access is not None and trader is None and home and not access.every_book:
                if access.trader_id is not None:
                    log.info(
                        "access", who=email, what=what, allowed=False, reason="sent to own page"
                    )
                    from energy_assets.desk.render import trader_url

                    return RedirectResponse(trader_url(access.trader_id), 303)
            shown = books(request) if books else [trader]
            allowed = access is not None and all(access.may_see(book) for book in shown)
            log.info("access", who=email, what=what, allowed=allowed)
            if not allowed:
                return self.denied(email, access)
            request.state.access = access
            return await endpoint(request)

        return guarded

    def probe(self, endpoint: Endpoint) -> Endpoint:
        """`endpoint` (the health probe's counts) for a login that sees every book; to anyone
        else, a probe included, only that the desk answers: how many deals and traders the
        desk holds, and when it last changed, are the desk's business."""

        async def probed(request: Request) -> Response:
            _, access = self.who(request)
            if access is None or not access.every_book:
                return JSONResponse({"status": "ok"})
            return await endpoint(request)

        return probed

    def denied(self, email: str, access: Access | None) -> HTMLResponse:
        if access is None:
            message = f"{email} is not on the desk's list of users. Ask the desk's head."
        elif access.trader_id is not None:
            message = f"{email} sees the book of {access.trader_id} only."
        else:
            message = f"{email} has no book here."
        return _page("Not allowed", message, 403)

    # -- login, callback, logout --------------------------------------------------------------
    async def login(self, request: Request) -> Response:
        request.session.clear()
        request.session["next"] = local_path(request.query_params.get("next", "/"))
        try:
            async with asyncio.timeout(PROVIDER_TIMEOUT_SECONDS):
                discovered = await self.client.load_server_metadata()
                lacking = [name for name in ENDPOINTS if not isinstance(discovered.get(name), str)]
                if lacking:
                    raise ProviderAnswerRefused(f"discovery document without {', '.join(lacking)}")
                back = request.url_for("login_callback")
                return await self.client.authorize_redirect(request, back)
        except PROVIDER_FAILED as err:
            # Authlib keeps the first discovery document it reads for good: one it could not
            # use is forgotten, so the next login reads the provider's again.
            self.client.server_metadata.clear()
            why = f": {err}" if isinstance(err, ProviderAnswerRefused) else ""
            log.error("login_failed", reason=f"identity provider: {type(err).__name__}{why}")
            return _page("Login unavailable", "The identity provider did not answer.", 502)

    async def callback(self, request: Request) -> Response:
        try:
            async with asyncio.timeout(PROVIDER_TIMEOUT_SECONDS):
                token = await self.client.authorize_access_token(
                    request, claims_options={"iss": {"essential": True, "values": [self.issuer]}}
                )
        except PROVIDER_FAILED as err:
            # A lost or tampered login in progress, an error from the provider, a bad token.
            # Authlib keeps the provider's key set once read: forgotten, so a garbled one costs
            # this login, not every later one.
            self.client.server_metadata.pop("jwks", None)
            log.info("login", who="-", allowed=False, reason=type(err).__name__)
            request.session.clear()
            return _page("Login failed", "The login did not complete.", 400, login=True)
        claims = token.get("userinfo") or {}
        email = claims.get("email")
        next_path = local_path(str(request.session.get("next", "/")))
        request.session.clear()
        if not isinstance(email, str) or claims.get("email_verified") is False:
            log.info("login", who="-", allowed=False, reason="no verified email claim")
            return _page("Not allowed", "The identity provider sent no verified email.", 403)
        if not _EMAIL.fullmatch(email):
            log.info("login", who="-", allowed=False, reason="email not printable ASCII")
            return _page(
                "Not allowed", "The desk takes logins by email addresses of printable ASCII.", 403
            )
        access = self.users.get(email.lower())
        log.info("login", who=email, allowed=access is not None)
        if access is None:
            return self.denied(email, None)
        request.session.update(email=email, until=time.time() + self.session_seconds)
        return RedirectResponse(next_path, 303)

    async def logout(self, request: Request) -> Response:
        email, _ = self.who(request)
        request.session.clear()
        log.info("logout", who=email or "-")
        try:
            async with asyncio.timeout(PROVIDER_TIMEOUT_SECONDS):
                made = await self.client.create_logout_url(
                    post_logout_redirect_uri=str(request.url_for("logged_out")),
                    client_id=self.client_id,
                )
            return RedirectResponse(made["url"], 303)
        except PROVIDER_FAILED:  # no end_session_endpoint, or no answer
            return RedirectResponse(request.url_for("logged_out"), 303)

    async def logged_out(self, request: Request) -> Response:
        return _page("Logged out", "You are logged out of the desk.", 200, login=True)


def every_book(request: Request) -> bool:
    """Whether the request's login sees every book (True when the desk has no login)."""
    access = getattr(request.state, "access", None)
    return access is None or access.every_book


def session_ends(request: Request) -> float | None:
    """When the request's login ends (Unix time); None when the desk has no login."""
    if getattr(request.state, "access", None) is None:
        return None
    until = request.session.get("until")
    return float(until) if isinstance(until, int | float) else None


def loopback_only() -> list[Middleware]:
    """Without a login: answer only requests addressed to a loopback name, so a page whose
    own name resolves to 127.0.0.1 (DNS rebinding) cannot read the desk."""
    return [Middleware(TrustedHostMiddleware, allowed_hosts=["127.0.0.1", "localhost"])]


def refuse_to_bind(host: str, auth: DeskAuth | None) -> str | None:
    """Why the desk must not serve on `host`, or None."""
    if auth is not None or is_loopback(host):
        return None
    return (
        f"refusing to serve the desk on {host or 'every address'} without a login: "
        f"set {', '.join(SETTINGS)} (docs/desk.md, “Login”), or bind 127.0.0.1"
    )
