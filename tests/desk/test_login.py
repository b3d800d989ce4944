"""Who sees what on the desk: a real OpenID Connect provider on loopback (oidc-provider-mock),
the real service as a process, and Chromium doing the whole login."""

from __future__ import annotations

import gzip
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from joserfc import jwt
from joserfc.jwk import RSAKey

from energy_assets.desk.auth import (
    PROVIDER_ANSWER_BYTES,
    PROVIDER_TIMEOUT_SECONDS,
    SETTINGS,
    Access,
    local_path,
    parse_users,
)
from energy_assets.logs import format_event
from tests.conftest import REPO, free_port
from tests.desk.conftest import deal, desk_env, write_deals, write_listener_state
from tests.desk.load import rss_mb

USERS = """
[users."anna@desk.example"]
role = "trader"
trader_id = "alice"

[users."Bert@Desk.example"]
role = "trader"
trader_id = "bob"

[users."carol@desk.example"]
role = "trader"
trader_id = "carol"

[users."head@desk.example"]
role = "head"
"""

ALICE_ROW = 'tr[data-period="2026-12-02 12-13"]'


def users_file(tmp_path: Path) -> Path:
    path = tmp_path / "users.toml"
    path.write_text(USERS)
    return path


def log_in(context, url: str, email: str):
    """Open `url` in a new page of `context`, be sent to the provider, log in as `email`."""
    page = context.new_page()
    page.goto(url)
    assert "/oauth2/authorize" in page.url, page.url  # the provider's login form
    page.fill("input[name=sub]", email)
    with page.expect_navigation():
        page.click("button:has-text('Authorize')")
    page.wait_for_load_state()
    return page


def status(context, url: str, **headers: str) -> int:
    """The answer's status to a request carrying the context's cookies, redirects not followed."""
    return context.request.get(url, headers=headers, max_redirects=0).status


def picker(page) -> list[str]:
    return page.locator("#pick option").all_inner_texts()


@pytest.mark.slow
def test_each_trader_sees_their_own_book_and_the_head_sees_every_book(
    desk_dirs, start_desk, browser, oidc_provider, tmp_path
):
    capture, _ = desk_dirs
    write_listener_state(capture)
    write_deals(capture, [deal(1), deal(2, trader="bob", quantity=5.0)])
    # Bound to every address: allowed, since every page needs a login.
    env = oidc_provider.desk_env(users_file(tmp_path), ENERGY_DASHBOARD_HOST="0.0.0.0")
    desk = start_desk(env=env)
    stream = {"accept": "text/event-stream"}

    anna = browser.new_context()
    page = log_in(anna, desk.url + "/", "anna@desk.example")
    assert page.url == desk.url + "/trader/alice"  # the desk's address leads to her book
    assert picker(page) == ["alice"]
    assert "bob" not in page.content()
    row = page.locator(ALICE_ROW)
    assert row.get_attribute("data-trades") == "1"
    write_deals(capture, [deal(3)])  # live updates reach her page
    page.wait_for_function(
        f"""() => document.querySelector('{ALICE_ROW}')?.dataset.trades === "2" """,
        timeout=10_000,
    )
    assert page.locator("#connection").inner_text() == "live"
    for path in ["/trader/bob", "/trader/nobody", "/replay", "/replay?at=2026-12-01T10:00Z"]:
        assert status(anna, desk.url + path) == 403, path
    assert status(anna, desk.url + "/events?topic=desk", **stream) == 403
    assert status(anna, desk.url + "/events?topic=trader/bob", **stream) == 403
    # The health probe tells her, and anyone not logged in, that the desk answers; not how
    # many deals and traders it holds.
    assert anna.request.get(desk.url + "/health").json() == {"status": "ok"}
    assert browser.new_context().request.get(desk.url + "/health").json() == {"status": "ok"}

    bert = browser.new_context()  # his login's case differs from the file's: still him
    page = log_in(bert, desk.url + "/trader/alice", "bert@desk.example")
    assert page.url == desk.url + "/trader/alice"
    assert "sees the book of bob only" in page.locator("#auth-message").inner_text()
    assert page.locator(ALICE_ROW).count() == 0
    assert status(bert, desk.url + "/trader/alice") == 403
    assert status(bert, desk.url + "/events?topic=trader/alice", **stream) == 403
    page.goto(desk.url + "/trader/bob")
    assert picker(page) == ["bob"]

    carol = browser.new_context()  # on the list, no deal yet: her empty book, live
    page = log_in(carol, desk.url + "/", "carol@desk.example")
    assert page.url == desk.url + "/trader/carol"
    assert picker(page) == ["carol"]
    assert status(carol, desk.url + "/trader/carol") == 200
    write_deals(capture, [deal(4, trader="carol")])
    page.wait_for_function(
        """() => document.querySelector('tr[data-period="2026-12-02 12-13"]') !== null""",
        timeout=10_000,
    )

    head = browser.new_context()
    page = log_in(head, desk.url + "/", "head@desk.example")
    assert page.url == desk.url + "/"
    assert picker(page) == ["Desk (all traders)", "alice", "bob", "carol"]
    assert {r.get_attribute("data-trader") for r in page.locator("tr[data-trader]").all()} == {
        "alice",
        "bob",
        "carol",
    }
    assert status(head, desk.url + "/trader/bob") == 200
    assert status(head, desk.url + "/replay") == 200
    assert head.request.get(desk.url + "/health").json()["deals"] == 4

    eve = browser.new_context()  # the provider knows her; the desk's file does not
    page = log_in(eve, desk.url + "/", "eve@desk.example")
    assert "eve@desk.example is not on the desk's list" in page.content()
    assert status(eve, desk.url + "/") == 303  # no session was made: to the login
    assert status(eve, desk.url + "/events?topic=desk", **stream) == 401

    # A look-alike the provider vouches for: "ſ" (long s) case-folds to "s", so matched without
    # care this login was anna's.
    mallory = browser.new_context()
    page = log_in(mallory, desk.url + "/", "anna@de\u017fk.example")
    assert "email addresses of printable ASCII" in page.content()
    assert status(mallory, desk.url + "/trader/alice") == 303

    log = desk.log_path.read_text()
    assert "event=access who=anna@desk.example what=/trader/alice allowed=True" in log
    assert 'event=access who=anna@desk.example what="/events?topic=trader/bob" allowed=False' in log
    assert "event=access who=bert@desk.example what=/trader/alice allowed=False" in log
    assert "event=login who=eve@desk.example allowed=False" in log
    cookies = [c["value"] for ctx in (anna, bert, carol, head) for c in ctx.cookies()]
    assert cookies and not any(value in log for value in cookies)
    assert "code=" not in log and env["ENERGY_DESK_OIDC_CLIENT_SECRET"] not in log
    for context in (anna, bert, carol, head, eve, mallory):
        context.close()


@pytest.mark.slow
def test_no_tampered_or_expired_session_sees_anything(
    desk_dirs, start_desk, browser, oidc_provider, tmp_path
):
    write_deals(desk_dirs[0], [deal(1)])
    session_seconds = 12
    env = oidc_provider.desk_env(
        users_file(tmp_path), ENERGY_DESK_SESSION_HOURS=str(session_seconds / 3600)
    )
    desk = start_desk(env=env)
    context = browser.new_context()
    # No session: the page sends the browser to the provider, and back to the same page.
    page = log_in(context, desk.url + "/trader/alice", "anna@desk.example")
    assert page.url == desk.url + "/trader/alice"
    (cookie,) = context.cookies()
    assert cookie["name"] == "desk_session"
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and not cookie["secure"]

    # One character of the signed payload changed: not a session.
    value = cookie["value"]
    tampered = value[:5] + ("A" if value[5] != "A" else "B") + value[6:]
    context.add_cookies([{**cookie, "value": tampered}])
    page.goto(desk.url + "/trader/alice")
    assert "/oauth2/authorize" in page.url

    page = log_in(context, desk.url + "/trader/alice", "anna@desk.example")
    assert page.locator(ALICE_ROW).get_attribute("data-trades") == "1"
    # The session ends with the page open: its stream ends, it reloads, to the login.
    page.wait_for_url("**/oauth2/authorize**", timeout=(session_seconds + 10) * 1000)
    # No session: each login's first visit so far, the changed cookie, and now.
    assert desk.log_path.read_text().count("who=- what=/trader/alice allowed=False") == 4

    page = log_in(context, desk.url + "/trader/alice", "anna@desk.example")
    with page.expect_navigation():
        page.click("button:has-text('Log out')")
    assert status(context, desk.url + "/trader/alice") == 303
    assert "event=logout who=anna@desk.example" in desk.log_path.read_text()
    context.close()


@pytest.mark.slow
def test_binding_beyond_loopback_without_a_login_is_refused(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENERGY_DESK_")}
    env["ENERGY_CAPTURE_DIR"] = str(tmp_path / "capture")
    port = str(free_port())
    args = [sys.executable, "-m", "energy_assets.cli", "dashboard", "--port", port]
    refused = subprocess.run(
        [*args, "--host", "0.0.0.0"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert refused.returncode == 2
    assert "refusing to serve the desk on 0.0.0.0 without a login" in refused.stderr
    assert all(name in refused.stderr for name in SETTINGS)
    # Half a configuration is refused anywhere, naming what is missing.
    env["ENERGY_DESK_OIDC_ISSUER"] = "https://login.example"
    half = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True)
    assert half.returncode == 2 and "ENERGY_DESK_USERS" in half.stderr


@pytest.mark.slow
def test_without_a_login_the_desk_answers_only_to_loopback_names(desk_dirs, start_desk):
    write_deals(desk_dirs[0], [deal(1)])
    desk = start_desk()
    port = int(desk.url.rsplit(":", 1)[1])
    assert _request(port, "GET", "/trader/alice")[0] == 200  # the demo: no login
    assert _request(port, "GET", "/trader/alice", Host=f"localhost:{port}")[0] == 200
    # A page whose own name resolves to 127.0.0.1 (DNS rebinding) reads nothing.
    assert _request(port, "GET", "/trader/alice", Host="rebind.example")[0] == 400


class MisbehavingProvider:
    """An identity provider on loopback that answers each connection by the next of `answers`:
    "drip" (a 100 kB answer announced, sent a byte a second: no gap long enough for a read
    timeout), "flood" (an endless answer at full speed), "gzip" (a compressed answer of 100 MB
    in 100 kB), "empty" (a discovery document of nothing) or "good" (the endpoints a login
    needs), and for a whole login "token" (an ID token for anna signed with `key`), "keys"
    (`key`'s public half), "garbled_keys" (a key set that is none) or "expired_token" (one
    that ended an hour ago)."""

    def __init__(self, answers: list[str], key: RSAKey | None = None):
        self.answers = iter(answers)
        self.key = key
        self.nonce = ""  # the login's, for the ID token
        self.server = socket.create_server(("127.0.0.1", 0))
        self.issuer = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                peer, _ = self.server.accept()
            except OSError:  # closed: the test is over
                return
            answer = getattr(self, "_" + next(self.answers))
            threading.Thread(target=self._answer, args=(peer, answer), daemon=True).start()

    def close(self) -> None:
        self.stop.set()
        self.server.close()

    def _answer(self, peer: socket.socket, answer) -> None:
        with peer:
            peer.recv(65536)
            try:
                answer(peer)
            except OSError:  # the desk hung up
                return

    def _json(self, peer: socket.socket, body: bytes, *headers: bytes) -> None:
        head = [b"HTTP/1.1 200 OK", b"Content-Type: application/json", *headers]
        head.append(b"Content-Length: %d" % len(body))
        peer.sendall(b"\r\n".join(head) + b"\r\n\r\n" + body)

    def _drip(self, peer: socket.socket) -> None:
        peer.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        peer.sendall(b"Content-Length: 100000\r\n\r\n{")
        while not self.stop.wait(1.0):
            peer.sendall(b" ")

    def _flood(self, peer: socket.socket) -> None:
        peer.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        peer.sendall(b"Content-Length: 100000000000\r\n\r\n{")
        spaces = b" " * 65536
        while not self.stop.is_set():
            peer.sendall(spaces)

    def _gzip(self, peer: socket.socket) -> None:
        body = gzip.compress(b'{"issuer": "' + b"a" * 100_000_000 + b'"}')
        self._json(peer, body, b"Content-Encoding: gzip")

    def _empty(self, peer: socket.socket) -> None:
        self._json(peer, b"{}")

    def _good(self, peer: socket.socket) -> None:
        endpoints = {"issuer": self.issuer, "response_types_supported": ["code"]}
        for name, path in (("authorization", "authorize"), ("token", "token")):
            endpoints[f"{name}_endpoint"] = f"{self.issuer}/{path}"
        endpoints["jwks_uri"] = f"{self.issuer}/jwks"
        self._json(peer, json.dumps(endpoints).encode())

    def _expired_token(self, peer: socket.socket) -> None:
        self._token(peer, now=int(time.time()) - 3600)

    def _token(self, peer: socket.socket, now: int | None = None) -> None:
        now = int(time.time()) if now is None else now
        claims = {"iss": self.issuer, "aud": "energy-desk", "sub": "anna", "nonce": self.nonce}
        claims |= {"iat": now, "exp": now + 300, "email": "anna@desk.example"}
        signed = jwt.encode({"alg": "RS256", "kid": self.key.kid}, claims, self.key)
        answer = {"access_token": "a", "token_type": "Bearer", "expires_in": 300}
        self._json(peer, json.dumps(answer | {"id_token": signed}).encode())

    def _keys(self, peer: socket.socket) -> None:
        self._json(peer, json.dumps({"keys": [self.key.as_dict(private=False)]}).encode())

    def _garbled_keys(self, peer: socket.socket) -> None:
        self._json(peer, b'{"keys": "none"}')


@pytest.mark.slow
def test_a_provider_that_drips_floods_or_garbles_its_answer_costs_one_login_and_no_memory(
    desk_dirs, start_desk, tmp_path
):
    provider = MisbehavingProvider(["drip", "flood", "gzip", "empty", "good"])
    try:
        desk = start_desk(env=desk_env(provider.issuer, users_file(tmp_path)))
        port = int(desk.url.rsplit(":", 1)[1])
        rss_before = rss_mb(desk.proc.pid)
        waits = []
        for _ in range(4):
            began = time.monotonic()
            code, body = _request(port, "GET", "/login")
            waits.append(time.monotonic() - began)
            assert code == 502 and b"The identity provider did not answer." in body
        # The drip is cut at the deadline; the rest are refused as soon as they show what
        # they are. The endless answer grew the desk by 5 GB in 10 s before it was bounded.
        assert waits[0] < PROVIDER_TIMEOUT_SECONDS + 5
        assert max(waits[1:]) < PROVIDER_TIMEOUT_SECONDS / 2
        assert rss_mb(desk.proc.pid) - rss_before < 50
        assert desk.health()
        # The empty document is not kept: once the provider answers properly, the login goes
        # to it.
        code, _ = _request(port, "GET", "/login")
        assert code == 302
        reasons = [
            line.split("reason=", 1)[1]
            for line in desk.log_path.read_text().splitlines()
            if "event=login_failed" in line
        ]
        assert reasons == [
            '"identity provider: TimeoutError"',
            f'"identity provider: ProviderAnswerRefused: answer over {PROVIDER_ANSWER_BYTES} bytes"',
            "\"identity provider: ProviderAnswerRefused: answer encoded as 'gzip'\"",
            '"identity provider: ProviderAnswerRefused: discovery document without '
            'authorization_endpoint, token_endpoint, jwks_uri"',
        ]
    finally:
        provider.close()


@pytest.mark.slow
def test_a_garbled_key_set_or_an_expired_token_costs_one_login_not_every_later_one(
    desk_dirs, start_desk, tmp_path
):
    # Both used to be a 500 (joserfc's errors went uncaught), and Authlib keeps the key set
    # once read: a garbled one failed every later login until the desk restarted.
    key = RSAKey.generate_key(2048, parameters={"kid": "desk-test"})
    answers = ["good", "token", "garbled_keys", "expired_token", "keys", "token", "keys"]
    provider = MisbehavingProvider(answers, key)
    try:
        desk = start_desk(env=desk_env(provider.issuer, users_file(tmp_path)))
        answers = []
        with httpx.Client(base_url=desk.url, timeout=30) as anna:
            for _ in range(3):
                to_provider = anna.get("/login", params={"next": "/trader/alice"})
                assert to_provider.status_code == 302
                asked = parse_qs(urlsplit(to_provider.headers["location"]).query)
                provider.nonce = asked["nonce"][0]
                back = {"code": "from-the-provider", "state": asked["state"][0]}
                answers.append(anna.get("/login/callback", params=back))
            assert [answer.status_code for answer in answers] == [400, 400, 303]
            assert answers[2].headers["location"] == "/trader/alice"
            assert anna.get("/trader/alice").status_code == 200
    finally:
        provider.close()


# -- the users file and the return path: total, whatever the input ------------------------------
@given(st.text())
def test_any_text_is_a_users_table_or_a_reason(text):
    assert isinstance(parse_users(text), dict | str)


emails = st.from_regex(r"[a-z0-9._]{1,12}@[a-z0-9.]{1,12}", fullmatch=True)
entries = st.one_of(
    st.builds(
        lambda t: {"role": "trader", "trader_id": t},
        st.from_regex(r"[a-z0-9_]{1,12}", fullmatch=True) | st.text(max_size=8),
    ),
    st.sampled_from([{"role": "head"}, {"role": "risk"}]),
    st.fixed_dictionaries({"role": st.text(max_size=8)}),
    st.fixed_dictionaries({"role": st.just("trader")}),
    st.dictionaries(st.text(max_size=6), st.integers(), max_size=2),
)


def _toml(value) -> str:
    if isinstance(value, str):
        return '"' + value.encode("unicode_escape").decode().replace('"', '\\"') + '"'
    return str(value)


@given(st.dictionaries(emails, entries, max_size=5))
def test_a_users_file_maps_each_login_to_what_it_may_see(table):
    text = "".join(
        f'[users."{email}"]\n' + "".join(f"{_toml(k)} = {_toml(v)}\n" for k, v in entry.items())
        for email, entry in table.items()
    )
    parsed = parse_users(text)
    valid = table and all(
        set(e) <= {"role", "trader_id"}
        and e.get("role") in ("trader", "head", "risk")
        and (e["role"] != "trader" or "trader_id" in e)
        # A book a deal can name (deal.TRADER_ID): `_alice`, `..`, ` alice` are none.
        and ("trader_id" not in e or re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.@-]*", e["trader_id"]))
        for e in table.values()
    )
    if not valid:
        assert isinstance(parsed, str)
        return
    assert set(parsed) == {email.casefold() for email in table}
    for email, entry in table.items():
        access = parsed[email.casefold()]
        assert access == Access(email, entry["role"], entry.get("trader_id"))
        assert access.may_see(None) == (entry["role"] != "trader")
        assert access.may_see("someone else's book") == (entry["role"] != "trader")
        if "trader_id" in entry:
            assert access.may_see(entry["trader_id"])


@given(st.text(), st.text())
def test_an_access_decision_is_one_log_line_whatever_was_asked(who, what):
    line = format_event("info", "desk", "access", {"who": who, "what": what, "allowed": False})
    assert len(line.splitlines()) == 1 and line.isprintable()
    assert line.endswith(" allowed=False")


@given(st.text())
def test_the_return_path_never_leaves_the_desk(text):
    path = local_path(text)
    parts = urlsplit(path)
    assert path.startswith("/") and not parts.scheme and not parts.netloc
    assert path == text or path == "/"


# -- the gate in front of the Dagster UI --------------------------------------------------------
NGINX = "/usr/sbin/nginx"
PAUSED = "{instance{autoMaterializePaused}}"


def _request(port: int, method: str, path: str, body: bytes = b"", **headers: str):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body or None, headers=headers)
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


def _graphql(port: int, query: str) -> tuple[int, bytes]:
    """A GraphQL query as the UI sends it: JSON in a POST."""
    body = json.dumps({"query": query}).encode()
    return _request(port, "POST", "/graphql", body, **{"Content-Type": "application/json"})


def _paused(port: int) -> bool:
    status, body = _graphql(port, PAUSED)
    assert status == 200, body
    return json.loads(body)["data"]["instance"]["autoMaterializePaused"]


def _wait_http(port: int, proc: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            _request(port, "GET", "/server_info")
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"not serving:\n{log.read_text()}")


@pytest.fixture
def ui_gate(tmp_path) -> Iterator[tuple[int, int]]:
    """A real dagster-webserver on loopback and deploy/nginx/dagster-ui.conf in a real nginx in
    front of it (oauth2-proxy, which sits between them in deploy/, is not a Debian package:
    nginx passes straight to the webserver here). Yields (webserver port, gate port)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    ui_port, gate_port = free_port(), free_port()
    ui_log = tmp_path / "webserver.log"
    with open(ui_log, "ab") as out:
        ui = subprocess.Popen(
            [str(Path(sys.executable).parent / "dagster-webserver"), "--empty-workspace"]
            + ["-h", "127.0.0.1", "-p", str(ui_port)],
            env={**os.environ, "DAGSTER_HOME": str(home)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    site = (REPO / "deploy/nginx/dagster-ui.conf").read_text()
    (prefix / "dagster-ui.conf").write_text(
        site.replace("listen 8080;", f"listen 127.0.0.1:{gate_port};").replace(
            "127.0.0.1:4180", f"127.0.0.1:{ui_port}"
        )
    )
    temp = " ".join(
        f"{kind}_temp_path {prefix}/{kind};" for kind in ("client_body", "proxy", "fastcgi")
    )
    (prefix / "nginx.conf").write_text(
        ("user root;\n" if os.geteuid() == 0 else "")
        + f"daemon off;\npid {prefix}/nginx.pid;\nerror_log {prefix}/error.log;\n"
        + "events {}\n"
        + f"http {{\n  access_log {prefix}/access.log;\n  {temp}\n"
        + f"  uwsgi_temp_path {prefix}/uwsgi; scgi_temp_path {prefix}/scgi;\n"
        + f"  include {prefix}/dagster-ui.conf;\n}}\n"
    )
    command = [NGINX, "-p", str(prefix), "-c", str(prefix / "nginx.conf")]
    checked = subprocess.run([*command, "-t"], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    nginx_log = prefix / "out.log"
    with open(nginx_log, "ab") as out:
        nginx = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_http(ui_port, ui, ui_log)
        _wait_http(gate_port, nginx, nginx_log)
        yield ui_port, gate_port
    finally:
        for proc in (nginx, ui):
            proc.terminate()
            proc.wait(30)


@pytest.mark.slow
@pytest.mark.skipif(not Path(NGINX).exists(), reason="Debian's nginx-light (make setup)")
def test_the_ui_gate_refuses_graphql_a_page_of_another_site_could_send(ui_gate, browser):
    ui, gate = ui_gate
    before = _paused(ui)
    mutation = f"mutation{{setAutoMaterializePaused(paused:{str(not before).lower()})}}"
    encoded = quote(mutation, safe="")
    sneaky = "".join(f"%{b:02X}" for b in mutation.encode())  # every byte percent-encoded
    attempts = [
        ("GET", f"/graphql?query={encoded}", {}),
        ("GET", f"/graphql?query={sneaky}", {}),
        ("GET", f"/graphql?%71uery={encoded}", {}),
        ("GET", f"/%67raphql?query={encoded}", {}),
        ("GET", f"//graphql?query={encoded}", {}),
        ("GET", f"/x/../graphql?query={encoded}", {}),
        ("GET", f"/graphql/?query={encoded}", {}),
        ("HEAD", f"/graphql?query={encoded}", {}),
        # A plain <form> POSTs these types without a CORS preflight; the webserver then
        # reads the operation from the URL.
        (
            "POST",
            f"/graphql?query={encoded}",
            {"Content-Type": "application/x-www-form-urlencoded"},
        ),
        ("POST", f"/graphql?query={encoded}", {"Content-Type": "text/plain"}),
        ("POST", f"/graphql?query={encoded}", {}),
    ]
    for method, path, headers in attempts:
        assert _request(gate, method, path, b"x=1", **headers)[0] == 405, (method, path)
    assert _paused(ui) == before  # nothing got through
    # The same GET straight to the webserver runs the mutation: the hole the gate closes.
    assert _request(ui, "GET", f"/graphql?query={encoded}")[0] == 200
    assert _paused(ui) == (not before)
    # The UI's own way, JSON in a POST, passes the gate; so do its pages and GraphiQL.
    mutation_back = mutation.replace(str(not before).lower(), str(before).lower())
    status, body = _graphql(gate, mutation_back)
    assert status == 200, body
    assert _paused(ui) == before
    assert _request(gate, "GET", "/graphql", Accept="text/html")[0] == 200
    assert _request(gate, "GET", "/runs")[0] == 200

    # The real UI in Chromium through the gate: every GraphQL request it makes passes.
    page = browser.new_page()
    answers: list[tuple[str, int]] = []
    page.on("response", lambda r: answers.append((r.url, r.status)) if "graphql" in r.url else None)
    page.goto(f"http://127.0.0.1:{gate}/runs")
    page.wait_for_timeout(5_000)
    assert answers and all(status == 200 for _, status in answers), answers
