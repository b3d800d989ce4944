"""Any request the desk is sent: an answer below 500, and the desk goes on serving. The app in
process (Starlette's test client, the buffer followed as in the service) against requests
Hypothesis makes: every route, unknown ones, Unicode and percent-escapes in paths, query
parameters the pages read with any value, and the headers they read."""

from __future__ import annotations

from urllib.parse import quote, urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from energy_assets.desk.app import create_app
from tests.desk.conftest import deal, write_deals

ROUTES = ["/", "/trader/", "/trader/alice", "/events", "/replay", "/health", "/static/", "/x"]
VALUES = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        [
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59+14:00",
            "9" * 400,
            "1e999",
            "NaN",
            "-0",
            "//evil.example",
            "%00",
            "trader/",
            "trader/nobody",
        ]
    ),
)
# A topic the desk follows would open an endless stream: those are the push tests' part.
TOPICS = VALUES.filter(lambda topic: topic not in ("desk", "trader/alice"))
HEADERS = st.dictionaries(
    st.sampled_from(["Last-Event-ID", "Accept", "Cookie", "If-None-Match", "Range"]),
    st.one_of(
        st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60),
        st.sampled_from(["text/event-stream", "bytes=99999999-", "-1", "9" * 400]),
    ),
    max_size=3,
)


@st.composite
def requests(draw) -> tuple[str, str, dict[str, str]]:
    route = draw(st.sampled_from(ROUTES))
    if route.endswith("/") and route != "/":
        route += quote(draw(st.text(max_size=20)), safe="/%")
    keys = ["topic"] if route == "/events" else ["at", "since", "next", "day", "topic"]
    query = draw(
        st.lists(
            st.tuples(st.sampled_from(keys), TOPICS if route == "/events" else VALUES),
            max_size=4,
        )
    )
    path = route + ("?" + urlencode(query) if query else "")
    return draw(st.sampled_from(["GET", "HEAD"])), path, draw(HEADERS)


@pytest.fixture(scope="module")
def desk(tmp_path_factory):
    capture = tmp_path_factory.mktemp("capture")
    write_deals(capture, [deal(1), deal(2, trader="bob", delivery_hour="13-14")])
    app = create_app(capture, tmp_path_factory.mktemp("dashboard"))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield client


@settings(max_examples=400)
@given(requests())
def test_any_request_gets_an_answer_below_500_and_the_desk_goes_on(desk, request_):
    method, path, headers = request_
    answer = desk.request(method, path, headers=headers, follow_redirects=False)
    assert answer.status_code < 500, (method, path, headers, answer.text[:300])
    assert desk.get("/health").status_code == 200
