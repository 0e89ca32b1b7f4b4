"""Issue 14: the HTTP face under floods and bad input. Each test pins one failure seen in the wild.

The app is the real `create_app` with the console mounted over a real `HandoverService`; the runtime is a
stand-in (`ApiRuntime`) that records what it is handed and turns timestamps into datetimes the way the
ledger does, so a timestamp the parser lets through but the store cannot hold shows up as a failure here.
tests/test_http_fuzz.py reuses `ApiRuntime` and `make_app`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest
from starlette.applications import Starlette

from agent.app import MAX_BODY_BYTES, create_app
from agent.config import DEFAULT_FLOW, Settings
from agent.dialogue.flow import Flow
from agent.handover.console import (
    ADDRESS_MAX_FAILURES,
    AGENT_MAX_FAILURES,
    COOKIE,
    MAX_FAILURE_RECORDS,
    MAX_FAILURES,
    SECURE_COOKIE,
    STREAM_QUEUE,
    Console,
    FailureLimiter,
)
from agent.handover.service import HandoverService
from agent.media.peer import MediaPeer
from agent.media.sdp import MAX_REMOTE_CANDIDATES, SdpError, usable_candidates, validate_offer
from agent.runtime import Runtime
from agent.whatsapp.webhooks import (
    MAX_UNIX_SECONDS,
    PayloadError,
    WebhookPayload,
    call_events,
    call_statuses,
    parse_webhook,
    user_messages,
)
from tests.handover.test_service import Clock, FakeBridge
from tests.handover.test_service import settings as handover_settings
from tests.media.test_sdp import META_OFFER_LINES
from tests.test_app import connect_payload, meta_bytes

APP_SECRET = "test-app-secret"
API_TOKEN = "api-sekret"
TOKENS = {"WACALL_AGENT_TOKEN_ANA": "ana-secret", "WACALL_AGENT_TOKEN_BEN": "ben-secret"}
BASE = "http://wacall.test"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
DEEP = b"[" * 100_000 + b"]" * 100_000
SECRET_LINE = "root:$6$not-a-real-hash:19000:0:99999:7:::"


def sign(body: bytes) -> str:
    return "sha256=" + hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()


def _utc(ts: int | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


class FakeStore:
    def __init__(self) -> None:
        self.limits: list[int] = []

    def recent_calls(self, limit: int) -> list[Any]:
        self.limits.append(limit)
        return []


@dataclass
class ApiRuntime:
    """What `create_app` uses, with the ledger's use of webhook timestamps (datetime.fromtimestamp)."""

    settings: Settings
    handover: HandoverService | None = None
    calls: dict[str, object] = field(default_factory=dict)
    flow: Any = field(default_factory=lambda: SimpleNamespace(name="demo"))
    store: FakeStore = field(default_factory=FakeStore)
    dispatched: list[WebhookPayload] = field(default_factory=list)
    placed: list[tuple[str, Flow | None]] = field(default_factory=list)
    status: str = "ok"

    def health(self) -> dict[str, Any]:
        return {"status": self.status, "live_calls": len(self.calls), "flow": self.flow.name}

    async def accept_webhook(self, payload: WebhookPayload) -> None:
        self.accept(payload)

    def accept(self, payload: WebhookPayload) -> None:
        for event in call_events(payload):
            call = event.call
            for ts in (call.timestamp, call.start_time, call.end_time):
                _utc(ts)
        for status in call_statuses(payload):
            _utc(status.status.timestamp)
        for message in user_messages(payload):
            _utc(message.message.timestamp)
            if message.permission_reply is not None:
                _utc(message.permission_reply.expiration_timestamp)
        self.dispatched.append(payload)

    async def place_call(self, to: str, *, flow: Flow | None = None) -> Any:
        self.placed.append((to, flow))
        return SimpleNamespace(id="wacid.NEW", ref="ref-1", state="ringing")

    async def send_call_button(self, to: str, *, payload: str | None, text: str | None) -> tuple[str, str]:
        assert isinstance(payload, str | None) and isinstance(text, str | None)
        return "wamid.BUTTON", "interactive"

    async def request_permission(self, to: str, text: str | None) -> str:
        assert isinstance(text, str | None), "the Graph API would be sent a non-string text"
        return "wamid.PERMISSION"


def flows_folder(folder: Path) -> Path:
    """A prompts folder: a good flow, a broken one holding a secret-looking line, a FIFO, an escaping link."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "demo.yaml").write_text(DEFAULT_FLOW.read_text(encoding="utf-8"), encoding="utf-8")
    (folder / "demo.test.yaml").write_text("tests: []\n", encoding="utf-8")
    (folder / "broken.yaml").write_text(f"{SECRET_LINE}\n", encoding="utf-8")
    (folder / "huge.yaml").write_bytes(b"#" * (2 << 20))
    secret = folder.parent / "outside.yaml"
    secret.write_text(f"{SECRET_LINE}\n", encoding="utf-8")
    (folder / "link.yaml").symlink_to(secret)
    os.mkfifo(folder / "fifo.yaml")
    return folder


def make_settings(flows: Path) -> Settings:
    return Settings(
        app_secret=APP_SECRET,
        verify_token="verify",
        api_token=API_TOKEN,
        flow=str(flows / "demo.yaml"),
        handover=handover_settings(),
    )


async def make_app(flows: Path) -> tuple[Starlette, ApiRuntime]:
    """The real app over a real desk; the console reads agents' tokens from os.environ (see `tokens`)."""
    FakeBridge.made.clear()
    service = HandoverService(handover_settings(), clock=Clock(), tick_s=None, bridge_factory=FakeBridge)
    runtime = ApiRuntime(settings=make_settings(flows), handover=service)
    return create_app(cast(Runtime, runtime)), runtime


@pytest.fixture
def tokens(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in TOKENS.items():
        monkeypatch.setenv(name, value)
    yield


@pytest.fixture
async def app(tmp_path: Path, tokens: None) -> AsyncIterator[tuple[Starlette, ApiRuntime]]:
    app, runtime = await make_app(flows_folder(tmp_path / "prompts"))
    yield app, runtime
    assert runtime.handover is not None
    await runtime.handover.aclose()


@pytest.fixture
async def client(app: tuple[Starlette, ApiRuntime]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app[0]), base_url=BASE) as c:
        yield c


# ---- 1. bodies are bounded while they are read -------------------------------------------------------

BODY_ROUTES = [
    ("/webhook", {"X-Hub-Signature-256": "sha256=" + "0" * 64}),
    ("/console/api/signin", {"Content-Type": "application/json"}),
    ("/v1/calls", AUTH),
    ("/v1/call-permissions", AUTH),
]


@pytest.mark.parametrize(("path", "headers"), BODY_ROUTES, ids=[p for p, _ in BODY_ROUTES])
async def test_a_declared_length_over_the_limit_is_refused_before_reading(
    app: tuple[Starlette, ApiRuntime], path: str, headers: dict[str, str]
) -> None:
    reads = 0

    async def receive() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": b"x" * 65536, "more_body": True}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    raw_headers = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    raw_headers += [(b"content-length", str(200 << 20).encode()), (b"host", b"wacall.test")]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": raw_headers,
        "client": ("127.0.0.1", 5000),
        "server": ("wacall.test", 80),
    }
    await app[0](scope, receive, send)
    assert sent[0]["status"] == 413
    assert reads == 0, "the body was read although its declared length was over the limit"


@pytest.mark.parametrize(("path", "headers"), BODY_ROUTES, ids=[p for p, _ in BODY_ROUTES])
async def test_a_chunked_body_is_cut_off_at_the_limit(
    client: httpx.AsyncClient, app: tuple[Starlette, ApiRuntime], path: str, headers: dict[str, str]
) -> None:
    """A 200 MB chunked POST: the server stops reading just past 1 MB instead of holding all of it."""
    chunk = b" " * (64 << 10)
    pulled = 0

    async def flood() -> AsyncIterator[bytes]:
        nonlocal pulled
        for _ in range((200 << 20) // len(chunk)):
            pulled += 1
            yield chunk

    response = await client.post(path, content=flood(), headers=headers)
    assert response.status_code == 413
    assert pulled * len(chunk) <= MAX_BODY_BYTES + 2 * len(chunk), f"read {pulled * len(chunk)} bytes"
    assert app[1].dispatched == [] and app[1].placed == []


async def test_a_body_just_under_the_limit_is_still_read(client: httpx.AsyncClient) -> None:
    body = json.dumps({"to": "34600111222", "pad": "x" * (MAX_BODY_BYTES - 100)}).encode()
    assert len(body) <= MAX_BODY_BYTES
    response = await client.post("/v1/calls", content=body, headers=AUTH)
    assert response.status_code == 202


# ---- 2. ?limit= ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", ["abc", "-1", "0", "1.5", "1e3", "9" * 30, "٣"])
async def test_a_bad_limit_is_a_400_naming_the_parameter(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, limit: str
) -> None:
    with caplog.at_level(logging.WARNING, logger="agent.app"):
        response = await client.get("/v1/calls", params={"limit": limit}, headers=AUTH)
    assert response.status_code == 400
    assert "limit must be a whole number from 1 to 500" in response.json()["error"]
    assert any("limit" in r.getMessage() for r in caplog.records)


async def test_a_large_limit_is_capped(client: httpx.AsyncClient, app: tuple[Starlette, ApiRuntime]) -> None:
    assert (await client.get("/v1/calls", params={"limit": "100000"}, headers=AUTH)).status_code == 200
    assert (await client.get("/v1/calls", params={"limit": "7"}, headers=AUTH)).status_code == 200
    assert (await client.get("/v1/calls", headers=AUTH)).status_code == 200
    assert app[1].store.limits == [500, 7, 20]


# ---- 3. deep JSON and out-of-range timestamps -----------------------------------------------------------


async def test_deep_json_is_a_400_everywhere(client: httpx.AsyncClient) -> None:
    calls = await client.post("/v1/calls", content=DEEP, headers=AUTH)
    signin = await client.post("/console/api/signin", content=DEEP, headers={"Content-Type": "application/json"})
    webhook = await client.post("/webhook", content=DEEP, headers={"X-Hub-Signature-256": sign(DEEP)})
    assert (calls.status_code, signin.status_code, webhook.status_code) == (400, 400, 400)
    assert "nested too deeply" in calls.json()["error"] and "nested too deeply" in webhook.text


def test_deep_json_inside_a_valid_envelope_is_a_payload_error() -> None:
    payload = connect_payload()
    payload["entry"][0]["changes"][0]["value"]["calls"][0]["extra"] = json.loads("[" * 900 + "]" * 900)
    parse_webhook(meta_bytes(payload))  # deep but parseable: kept as an unmodelled extra
    with pytest.raises(PayloadError):
        parse_webhook(b'{"object":"whatsapp_business_account","entry":' + DEEP + b"}")


async def test_nan_in_a_body_is_not_json(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/calls", content=b'{"to": NaN}', headers=AUTH)
    assert response.status_code == 400


async def test_fields_of_the_wrong_type_are_a_400(client: httpx.AsyncClient) -> None:
    nested = json.loads("[" * 900 + "]" * 900)
    calls = await client.post("/v1/calls", json={"to": nested}, headers=AUTH)
    permission = await client.post("/v1/call-permissions", json={"to": "34600111222", "text": [1]}, headers=AUTH)
    signin = await client.post("/console/api/signin", json={"agent": nested, "token": {"a": 1}})
    assert (calls.status_code, permission.status_code, signin.status_code) == (400, 400, 400)
    assert permission.json()["error"] == "`text` must be a string"
    assert signin.json()["error"] == "agent and token must be strings"


def with_call_timestamp(value: Any) -> bytes:
    payload = connect_payload()
    payload["entry"][0]["changes"][0]["value"]["calls"][0]["timestamp"] = value
    return meta_bytes(payload)


@pytest.mark.parametrize("value", [1e30, -1, "-1", 10**30, "9" * 30, "9" * 5000, MAX_UNIX_SECONDS + 1, 1e300])
async def test_timestamps_a_datetime_cannot_hold_are_malformed(client: httpx.AsyncClient, value: Any) -> None:
    body = with_call_timestamp(value)
    with pytest.raises(PayloadError, match="timestamp"):
        parse_webhook(body)
    response = await client.post("/webhook", content=body, headers={"X-Hub-Signature-256": sign(body)})
    assert response.status_code == 400


async def test_the_largest_timestamp_is_accepted_and_stored(
    client: httpx.AsyncClient, app: tuple[Starlette, ApiRuntime]
) -> None:
    body = with_call_timestamp(MAX_UNIX_SECONDS)
    response = await client.post("/webhook", content=body, headers={"X-Hub-Signature-256": sign(body)})
    assert response.status_code == 200 and len(app[1].dispatched) == 1


def test_a_wrong_object_is_named_without_echoing_its_structure() -> None:
    with pytest.raises(PayloadError, match="got an array"):
        parse_webhook(b'{"object": [[[1]]], "entry": []}')


# ---- 4. flows are picked by name from the prompts folder -----------------------------------------------


async def test_a_flow_is_picked_by_name(client: httpx.AsyncClient, app: tuple[Starlette, ApiRuntime]) -> None:
    for name in ("demo", "demo.yaml"):
        response = await client.post("/v1/calls", json={"to": "34600111222", "flow": name}, headers=AUTH)
        assert response.status_code == 202, response.text
    assert [flow.name for _, flow in app[1].placed if flow is not None] == ["demo", "demo"]


@pytest.mark.parametrize(
    "flow",
    ["/etc/shadow", "../outside", "../outside.yaml", "prompts/demo", "..", "demo/../demo", "link", "broken",
     "fifo", "huge", "nope", "demo.test", 7, ["demo"], {"name": "demo"}, "demo\x00", "x" * 300],
)  # fmt: skip
async def test_anything_but_a_good_flow_name_is_refused_without_leaking(
    client: httpx.AsyncClient,
    app: tuple[Starlette, ApiRuntime],
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
    flow: Any,
) -> None:
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="agent.app"):
        response = await client.post("/v1/calls", json={"to": "34600111222", "flow": flow}, headers=AUTH)
    assert time.monotonic() - started < 1.0  # the FIFO once blocked the loop for 3 s
    assert response.status_code == 400
    error = response.json()["error"]
    assert "available flows: broken, demo, fifo, huge, link" in error or "available: broken, demo" in error
    assert SECRET_LINE not in error and "root:" not in error
    assert str(tmp_path) not in error and "/etc" not in error
    assert caplog.records, "a refused flow must leave a log line"
    assert app[1].placed == []


# ---- 5. sign-in throttling ----------------------------------------------------------------------------


def client_at(app: Starlette, address: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(address, 40000)), base_url=BASE)


async def sign_in(c: httpx.AsyncClient, agent: str, token: str) -> httpx.Response:
    return await c.post("/console/api/signin", json={"agent": agent, "token": token})


async def test_an_attackers_address_is_throttled_but_the_agent_elsewhere_is_not(
    app: tuple[Starlette, ApiRuntime],
) -> None:
    async with client_at(app[0], "203.0.113.66") as attacker, client_at(app[0], "198.51.100.7") as desk:
        refused = [(await sign_in(attacker, "ana", f"guess{i}")).status_code for i in range(MAX_FAILURES + 3)]
        assert refused[:MAX_FAILURES] == [401] * MAX_FAILURES
        assert set(refused[MAX_FAILURES:]) == {429}
        assert (await sign_in(attacker, "ana", "ana-secret")).status_code == 429
        assert (await sign_in(desk, "ana", "ana-secret")).status_code == 200


async def test_guesses_spread_over_many_addresses_never_lock_out_a_clean_address(
    app: tuple[Starlette, ApiRuntime],
) -> None:
    for i in range(AGENT_MAX_FAILURES + 5):
        async with client_at(app[0], f"10.1.{i // 250}.{i % 250}") as attacker:
            assert (await sign_in(attacker, "ana", "guess")).status_code == 401
            # Past the agent-wide count, an address that has guessed as ana waits before guessing again.
            second = (await sign_in(attacker, "ana", "guess")).status_code
            assert second == (429 if i * 2 + 1 >= AGENT_MAX_FAILURES else 401)
    async with client_at(app[0], "198.51.100.7") as desk:
        assert (await sign_in(desk, "ana", "ana-secret")).status_code == 200


async def test_unknown_agent_ids_count_only_against_the_address(service_console: Console) -> None:
    app = Starlette(routes=service_console_routes(service_console))
    async with client_at(app, "203.0.113.66") as attacker:
        for i in range(ADDRESS_MAX_FAILURES):
            assert (await sign_in(attacker, f"nobody-{i}-" + "x" * 1000, "guess")).status_code == 401
        assert (await sign_in(attacker, "ben", "ben-secret")).status_code == 429
    assert len(service_console._by_address) == 1
    assert len(service_console._by_pair) == len(service_console._by_agent) == 0


def test_failure_records_double_their_lockout_expire_and_stay_bounded() -> None:
    clock = Clock()
    limiter = FailureLimiter(clock, free=2, lockout_s=10, max_lockout_s=40, memory_s=100, max_records=50)
    waits = []
    for _ in range(5):
        limiter.failed("a")
        waits.append(limiter.locked_for("a"))
    assert waits == [0, 10, 20, 40, 40]
    clock.now += 40 + 100 + 1
    assert limiter.locked_for("a") == 0 and limiter.failures("a") == 0 and len(limiter) == 0
    for i in range(MAX_FAILURE_RECORDS):
        limiter.failed(f"addr-{i}")
    assert len(limiter) == 50


@pytest.fixture
async def service_console(tokens: None) -> AsyncIterator[Console]:
    FakeBridge.made.clear()
    service = HandoverService(handover_settings(), clock=Clock(), tick_s=None, bridge_factory=FakeBridge)
    yield Console(service, service.settings)
    await service.aclose()


def service_console_routes(console: Console) -> list[Any]:
    from starlette.routing import Mount

    return [Mount("/console", routes=console.routes)]


# ---- 6. a full event queue --------------------------------------------------------------------------


async def test_signing_in_again_over_a_stalled_stream_is_not_a_500(service_console: Console) -> None:
    app = Starlette(routes=service_console_routes(service_console))
    async with client_at(app, "198.51.100.7") as desk:
        assert (await sign_in(desk, "ana", "ana-secret")).status_code == 200
        session = next(iter(service_console._sessions.values()))
        stalled: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=STREAM_QUEUE)
        for i in range(STREAM_QUEUE):
            stalled.put_nowait({"type": "transcript", "n": i})
        session.streams.add(stalled)
        assert (await sign_in(desk, "ana", "ana-secret")).status_code == 200
    items = [stalled.get_nowait() for _ in range(stalled.qsize())]
    assert len(items) == STREAM_QUEUE
    assert items[0]["n"] == 1 and items[-1]["type"] == "signed_out"


# ---- 7. Secure cookies behind a TLS proxy ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "base", "secure"),
    [("auto", "http://x.test", False), ("auto", "https://x.test", True), ("always", "http://x.test", True),
     ("never", "https://x.test", False)],
)  # fmt: skip
async def test_secure_cookies_setting(tokens: None, mode: str, base: str, secure: bool) -> None:
    FakeBridge.made.clear()
    config = handover_settings().model_copy(update={"secure_cookies": mode})
    service = HandoverService(config, clock=Clock(), tick_s=None, bridge_factory=FakeBridge)
    app = Starlette(routes=service_console_routes(Console(service, config)))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base) as c:
            response = await sign_in(c, "ana", "ana-secret")
            cookie = response.headers["set-cookie"]
            name, value = cookie.split(";")[0].split("=", 1)
            assert name == (SECURE_COOKIE if secure else COOKIE)
            assert ("; secure" in cookie.lower()) is secure
            session = await c.get("/console/api/session", headers={"Cookie": f"{name}={value}"})
            assert session.json()["signed_in"] is True
    finally:
        await service.aclose()


# ---- 8. remote ICE candidates -------------------------------------------------------------------------


def candidate(i: int, address: str = "", transport: str = "udp", port: int = 40000, typ: str = "host") -> str:
    address = address or f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}"
    return f"a=candidate:{i} 1 {transport} {2130706431 - i} {address} {port} typ {typ}"


def offer_with(candidates: list[str]) -> str:
    lines = [line for line in META_OFFER_LINES if not line.startswith("a=candidate:")]
    return "\r\n".join(lines + candidates) + "\r\n"


def test_candidates_are_capped_keeping_the_highest_priority() -> None:
    pruned = usable_candidates(offer_with([candidate(i) for i in range(4002)]))
    kept = [line for line in pruned.split("\r\n") if line.startswith("a=candidate:")]
    assert len(kept) == MAX_REMOTE_CANDIDATES
    assert kept == [candidate(i) for i in range(MAX_REMOTE_CANDIDATES)]
    assert validate_offer(pruned).candidates == MAX_REMOTE_CANDIDATES


def test_unusable_candidates_are_dropped() -> None:
    good = candidate(1, "203.0.113.10")
    bad = [
        candidate(2, transport="tcp"),
        candidate(3, "a9b8c7d6-1111-2222-3333-444455556666.local"),
        candidate(4, "meta.example"),
        candidate(5, port=0),
        candidate(6, port=70000),
        candidate(7, "0.0.0.0"),
        candidate(8, "224.0.0.1"),
        candidate(9, typ="weird"),
        "a=candidate:10 1 udp 1 10.0.0.10",
        "a=candidate:11 2 udp 1 10.0.0.11 40000 typ host",
    ]
    pruned = usable_candidates(offer_with([*bad, good, candidate(12, "2001:db8::1")]), families={4})
    assert [line for line in pruned.split("\r\n") if line.startswith("a=candidate:")] == [good]


def test_an_offer_with_only_unusable_candidates_is_refused() -> None:
    with pytest.raises(SdpError, match="none of the 3 ICE candidates is usable"):
        usable_candidates(offer_with([candidate(1, "x.local"), candidate(2, transport="tcp"), candidate(3, port=0)]))
    with pytest.raises(SdpError, match="none of the 1 ICE candidates"):
        usable_candidates(offer_with([candidate(1, "2001:db8::1")]), families={4})


async def test_the_peer_applies_at_most_the_cap_quickly() -> None:
    peer = MediaPeer(hosts=["127.0.0.1"])
    try:
        started = time.monotonic()
        await peer.answer(offer_with([candidate(i) for i in range(4002)]))
        assert time.monotonic() - started < 1.5
        assert peer.pc.remoteDescription is not None
        remote = [line for line in peer.pc.remoteDescription.sdp.split("\r\n") if line.startswith("a=candidate:")]
        assert len(remote) == MAX_REMOTE_CANDIDATES
    finally:
        await peer.close()


async def test_the_peer_refuses_an_offer_with_only_unusable_candidates() -> None:
    peer = MediaPeer(hosts=["127.0.0.1"])
    try:
        with pytest.raises(SdpError, match="usable"):
            await peer.answer(offer_with([candidate(1, "2001:db8::1")]))
        assert peer.pc.remoteDescription is None
    finally:
        await peer.close()
