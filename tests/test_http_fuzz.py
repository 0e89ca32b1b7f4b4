"""Property-based fuzzing of the webhook parser and every HTTP endpoint: bad input is a 4xx, never a 5xx
and never an exception escaping the app.

Deterministic (`derandomize=True`, no example database) so CI sees the same payloads every run. Most
webhook bodies carry a valid signature, so the parser and the handler are reached, not just the signature
check; they are made by replacing parts of Meta-shaped payloads, so they get past the envelope too.
Each test checks it ran its share; together they send `sum(EXAMPLES.values())` (10,100) payloads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.whatsapp.webhooks import PayloadError, parse_webhook
from tests.test_app import connect_payload
from tests.test_http_hardening import API_TOKEN, BASE, TOKENS, ApiRuntime, flows_folder, make_app, sign

EXAMPLES = {"parser": 3000, "webhook": 2500, "webhook_raw": 600, "endpoints": 4000}
RAN: Counter[str] = Counter()


def fuzz_settings(name: str) -> Any:
    return settings(
        max_examples=EXAMPLES[name],
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Every refused request logs a warning; thousands of them would only slow the run down."""
    logger = logging.getLogger("agent")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


# ---- strategies ---------------------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
# Two levels deep at most: hypothesis's recursive strategies cost ~5 ms a draw, which would be most of the
# run; deep nesting has its own tests in test_http_hardening.py.
json_values = scalars | st.lists(scalars, max_size=3) | st.dictionaries(st.text(max_size=8), scalars, max_size=3)
timestamps = (
    st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(min_value=-(10**40), max_value=10**40).map(str)
    | st.text(alphabet="0123456789 -+.e", max_size=40)
)


def status_payload() -> dict[str, Any]:
    payload = connect_payload()
    value = payload["entry"][0]["changes"][0]["value"]
    value.pop("calls")
    value["statuses"] = [{"id": "wacid.X", "timestamp": "1760681506", "type": "call", "status": "RINGING"}]
    return payload


def permission_payload() -> dict[str, Any]:
    payload = connect_payload()
    change = payload["entry"][0]["changes"][0]
    change["field"] = "messages"
    change["value"] = {
        "messaging_product": "whatsapp",
        "metadata": {"phone_number_id": "106540000000002"},
        "contacts": [{"wa_id": "15550002222"}],
        "messages": [
            {
                "from": "15550002222",
                "id": "wamid.1",
                "timestamp": "1760681506",
                "type": "interactive",
                "interactive": {
                    "type": "call_permission_reply",
                    "call_permission_reply": {"response": "accept", "expiration_timestamp": 1760768000},
                },
            }
        ],
    }
    return payload


TEMPLATES = [connect_payload(), status_payload(), permission_payload()]


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for key, child in node.items():
            yield from _paths(child, (*prefix, key))
    elif isinstance(node, list):
        for i, child in enumerate(node):
            yield from _paths(child, (*prefix, i))


TEMPLATE_PATHS = [(template, list(_paths(template))) for template in TEMPLATES]


def _replaced(node: Any, path: tuple[Any, ...], value: Any) -> Any:
    """`node` with the part at `path` replaced, copying only the containers on the way down."""
    if not path:
        return value
    if isinstance(node, dict):
        return {**node, path[0]: _replaced(node.get(path[0]), path[1:], value)}
    if isinstance(node, list) and isinstance(path[0], int) and path[0] < len(node):
        copied = list(node)
        copied[path[0]] = _replaced(node[path[0]], path[1:], value)
        return copied
    return node  # an earlier replacement took this part away


@st.composite
def webhook_payloads(draw: st.DrawFn) -> Any:
    """A Meta-shaped payload with a few parts replaced: timestamps by odd numbers, anything by any JSON."""
    payload, paths = draw(st.sampled_from(TEMPLATE_PATHS))
    for path in draw(st.lists(st.sampled_from(paths), max_size=3)):
        is_time = bool(path) and str(path[-1]).endswith(("timestamp", "_time", "duration"))
        payload = _replaced(payload, path, draw(timestamps if is_time else json_values))
    return payload


def encode(payload: Any, ascii_only: bool) -> bytes:
    return json.dumps(payload, ensure_ascii=ascii_only, separators=(",", ":")).encode("utf-8", "surrogatepass")


webhook_bodies = st.builds(encode, webhook_payloads(), st.booleans())


# ---- the parser ---------------------------------------------------------------------------------------


def test_the_parser_only_ever_raises_payload_error() -> None:
    runtime = ApiRuntime(settings=None)  # type: ignore[arg-type]

    @fuzz_settings("parser")
    @given(body=webhook_bodies | st.builds(encode, json_values, st.booleans()) | st.binary(max_size=300))
    def parse(body: bytes) -> None:
        RAN["parser"] += 1
        try:
            payload = parse_webhook(body)
        except PayloadError:
            return
        runtime.accept(payload)  # the flattened views, and every timestamp as a datetime

    with quiet():
        parse()
    assert RAN["parser"] >= EXAMPLES["parser"]
    assert runtime.dispatched, "no fuzzed payload was valid: the parser was only tested on refusals"


# ---- HTTP: one app and one event loop per test ----------------------------------------------------------


class Harness:
    """The real app on a private event loop, so hypothesis (which is synchronous) can drive it."""

    def __init__(self, tmp_path: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.app, self.runtime = self.loop.run_until_complete(make_app(flows_folder(tmp_path / "prompts")))
        self.client = self._client("192.0.2.66")
        self.desk = self._client("198.51.100.7")  # signs in; never fails, so never throttled

    def _client(self, address: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app, client=(address, 40000)), base_url=BASE)

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        self.run(self.client.aclose())
        self.run(self.desk.aclose())
        assert self.runtime.handover is not None
        self.run(self.runtime.handover.aclose())
        self.loop.close()


@pytest.fixture
def harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    for name, value in TOKENS.items():
        monkeypatch.setenv(name, value)
    h = Harness(tmp_path)
    try:
        with quiet():
            yield h
    finally:
        h.close()


def test_signed_webhooks_get_200_or_400(harness: Harness) -> None:
    @fuzz_settings("webhook")
    @given(body=webhook_bodies)
    def post(body: bytes) -> None:
        RAN["webhook"] += 1
        response = harness.run(
            harness.client.post("/webhook", content=body, headers={"X-Hub-Signature-256": sign(body)})
        )
        assert response.status_code in (200, 400), (response.status_code, response.text, body[:300])

    post()
    assert RAN["webhook"] >= EXAMPLES["webhook"]
    assert harness.runtime.dispatched, "no fuzzed webhook got through to the handler"


def test_raw_webhook_bodies_and_signatures(harness: Harness) -> None:
    signatures = st.one_of(st.none(), st.just("valid"), st.text(max_size=80), st.just("sha256=" + "0" * 64))

    @fuzz_settings("webhook_raw")
    @given(body=st.binary(max_size=500), signature=signatures)
    def post(body: bytes, signature: str | None) -> None:
        RAN["webhook_raw"] += 1
        headers = (
            {} if signature is None else {"X-Hub-Signature-256": sign(body) if signature == "valid" else signature}
        )
        with contextlib.suppress(UnicodeEncodeError, httpx.LocalProtocolError):  # headers httpx cannot send
            response = harness.run(harness.client.post("/webhook", content=body, headers=headers))
            assert response.status_code in (200, 400, 401), response.status_code

    post()
    assert RAN["webhook_raw"] >= EXAMPLES["webhook_raw"]


# ---- every endpoint -------------------------------------------------------------------------------------

CONSOLE_API = ["session", "signin", "signout", "status", "state", "events"]
PATHS = st.one_of(
    st.sampled_from(
        [
            "/webhook",
            "/healthz",
            "/v1/calls",
            "/v1/call-permissions",
            "/v1/call-buttons",
            "/console",
            "/console/",
            "/console/static/console.js",
        ]
        + [f"/console/api/{name}" for name in CONSOLE_API]
    ),
    st.builds(
        "/console/api/calls/{}/{}".format,
        st.sampled_from(["wacid.1", "nope", "%2e%2e"]),
        st.sampled_from(["accept", "decline", "hangup", "return", "explode"]),
    ),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz/._%-0123456789", max_size=30).map(lambda p: "/" + p),
)
known_fields = st.fixed_dictionaries(
    {},
    optional={
        "to": st.one_of(st.sampled_from(["34600111222", "+34 600 111 222", "12"]), json_values),
        "flow": st.one_of(
            st.sampled_from(["demo", "fifo", "link", "../outside", "/etc/shadow", "broken"]), json_values
        ),
        "text": json_values,
        "payload": json_values,
        "agent": st.one_of(st.sampled_from(["ana", "ben", "zed"]), json_values),
        "token": st.one_of(st.sampled_from(["ana-secret", "nope"]), json_values),
        "status": st.one_of(st.sampled_from(["available", "away"]), json_values),
        "sdp": st.one_of(st.just("v=0\r\n"), json_values),
        "node": json_values,
    },
)
bodies = st.one_of(
    st.none(),
    st.builds(lambda d: json.dumps(d).encode(), known_fields),
    st.builds(encode, json_values, st.booleans()),
    st.binary(max_size=200),
)


# Header and query variants are drawn whole from prepared lists: each separate draw costs hypothesis about
# a third of a millisecond, and the run has thousands of requests to make.
HEADER_SETS = [
    {
        **({} if auth is None else {"Authorization": f"Bearer {auth}"}),
        **({} if content_type is None else {"Content-Type": content_type}),
        **({} if origin is None else {"Origin": origin}),
        "x-session": session,
    }
    for auth in (API_TOKEN, "guess", None)
    for content_type in ("application/json", "text/plain", "application/json; x=1", None)
    for origin in (None, BASE, "https://evil.example")
    for session in ("none", "cookie", "cookie+csrf")
]
QUERIES = [{}, {"limit": "5"}, {"limit": "abc"}, {"limit": "-3"}, {"limit": "9" * 40}, {"limit": ""}]
QUERIES += [{"hub.mode": "subscribe", "hub.verify_token": "verify", "hub.challenge": "42"}, {"hub.mode": "x"}]


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "method": draw(st.sampled_from(["GET", "POST", "POST", "POST", "PUT", "DELETE", "HEAD", "OPTIONS"])),
        "path": draw(PATHS),
        "headers": dict(draw(st.sampled_from(HEADER_SETS))),
        "params": draw(st.sampled_from(QUERIES) | st.dictionaries(st.just("limit"), st.text(max_size=12))),
        "body": draw(bodies),
    }


async def signed_in(harness: Harness) -> tuple[str, str]:
    response = await harness.desk.post("/console/api/signin", json={"agent": "ben", "token": "ben-secret"})
    assert response.status_code == 200, response.text
    cookie = response.headers["set-cookie"].split(";")[0]
    harness.desk.cookies.clear()
    return cookie, response.json()["csrf"]


def test_every_endpoint_answers_bad_input_with_a_4xx(harness: Harness) -> None:
    session = harness.run(signed_in(harness))

    @fuzz_settings("endpoints")
    @given(request=requests())
    def send(request: dict[str, Any]) -> None:
        nonlocal session
        RAN["endpoints"] += 1
        headers = dict(request["headers"])
        with_session = headers.pop("x-session")
        streaming = request["path"].endswith("/api/events") and request["method"] in ("GET", "HEAD")
        if with_session != "none" and not streaming:  # a signed-in event stream stays open for 25 s
            headers["Cookie"] = session[0]
            if with_session == "cookie+csrf":
                headers["X-CSRF-Token"] = session[1]
        try:
            response = harness.run(
                harness.client.request(
                    request["method"],
                    request["path"],
                    params=request["params"],
                    headers=headers,
                    content=request["body"],
                )
            )
        except (UnicodeEncodeError, httpx.InvalidURL):
            return  # not sendable by httpx, so not the app's concern
        finally:
            harness.client.cookies.clear()
        assert response.status_code < 500, (request, response.status_code, response.text[:300])
        if response.status_code == 200 and request["path"].endswith(("/api/signout", "/api/signin")):
            session = harness.run(signed_in(harness))  # the fuzz signed the desk's session out

    send()
    assert RAN["endpoints"] >= EXAMPLES["endpoints"]
