"""Tests for the HTTP face in `agent.app`: Meta's verification GET, signed webhook POSTs, /healthz.

The runtime is replaced by a small stand-in that records what it is handed, so these tests check only the
route's job: refuse what cannot be trusted or parsed, hand everything else over exactly once.
Signatures are computed here with `hmac` directly, not with the simulator's or the server's helpers, so
a shared mistake cannot make both sides agree.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, cast

import httpx
import pytest

from agent.app import MAX_BODY_BYTES, create_app
from agent.config import Settings
from agent.runtime import Runtime
from agent.whatsapp.webhooks import WebhookPayload, call_events

APP_SECRET = "test-app-secret"
VERIFY_TOKEN = "test-verify-token"
CALL_ID = "wacid.HBgLMTU1NTAwMDIyMjIVAgASGCA5QzFFN0QyRjA0QjE2QkE3MkE0QzlGRkUwRDFBOEMwMRwYCzE1NTUwMDAxMTExFQIAAA=="


def connect_payload(call: dict[str, Any] | None = None) -> dict[str, Any]:
    """A user-initiated connect webhook as in spec §2.3; the caller's name is non-ASCII on purpose."""
    call_obj = {
        "id": CALL_ID,
        "from": "15550002222",
        "to": "15550001111",
        "event": "connect",
        "timestamp": "1760681506",
        "direction": "USER_INITIATED",
        "session": {"sdp_type": "offer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"},
    }
    if call is not None:
        call_obj = call
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "102290000000001",
                "changes": [
                    {
                        "field": "calls",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {"display_phone_number": "15550001111", "phone_number_id": "106540000000002"},
                            "contacts": [{"profile": {"name": "Ana Ñandú"}, "wa_id": "15550002222"}],
                            "calls": [call_obj],
                        },
                    }
                ],
            }
        ],
    }


def call_without(key: str) -> dict[str, Any]:
    call = connect_payload()["entry"][0]["changes"][0]["value"]["calls"][0]
    return {k: v for k, v in call.items() if k != key}


def meta_bytes(payload: dict[str, Any]) -> bytes:
    """Serialise as Meta does: compact, non-ASCII escaped (spec §1.2)."""
    return json.dumps(payload, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def signature(body: bytes, secret: str = APP_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass
class FakeFlow:
    name: str = "demo"


@dataclass
class FakeRuntime:
    """Just what `create_app` uses: settings, accept_webhook, live calls and the flow's name."""

    settings: Settings
    calls: dict[str, object] = field(default_factory=dict)
    flow: FakeFlow = field(default_factory=FakeFlow)
    dispatched: list[WebhookPayload] = field(default_factory=list)
    status: str = "ok"

    def health(self) -> dict[str, Any]:
        return {"status": self.status, "live_calls": len(self.calls), "flow": self.flow.name}

    async def accept_webhook(self, payload: WebhookPayload) -> None:
        self.dispatched.append(payload)


@pytest.fixture
def runtime() -> FakeRuntime:
    return FakeRuntime(settings=Settings(app_secret=APP_SECRET, verify_token=VERIFY_TOKEN))


@pytest.fixture
async def client(runtime: FakeRuntime) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(cast(Runtime, runtime))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://wacall.test") as c:
        yield c


async def post_signed(client: httpx.AsyncClient, body: bytes, sig: str | None = None) -> httpx.Response:
    headers = {"Content-Type": "application/json", "X-Hub-Signature-256": sig or signature(body)}
    return await client.post("/webhook", content=body, headers=headers)


# ---- GET /webhook: the subscription handshake ---------------------------------------------------


async def test_verification_echoes_the_challenge(client: httpx.AsyncClient) -> None:
    params = {"hub.mode": "subscribe", "hub.challenge": "1158863600", "hub.verify_token": VERIFY_TOKEN}
    response = await client.get("/webhook", params=params)
    assert response.status_code == 200
    assert response.text == "1158863600"
    assert response.headers["content-type"].startswith("text/plain")


async def test_verification_challenge_is_opaque(client: httpx.AsyncClient) -> None:
    """Treated as a string, never int(): a non-numeric challenge comes back unchanged."""
    params = {"hub.mode": "subscribe", "hub.challenge": "abc-007", "hub.verify_token": VERIFY_TOKEN}
    response = await client.get("/webhook", params=params)
    assert (response.status_code, response.text) == (200, "abc-007")


@pytest.mark.parametrize(
    "params",
    [
        {"hub.mode": "subscribe", "hub.challenge": "CHALLENGE-7", "hub.verify_token": "wrong"},
        {"hub.mode": "unsubscribe", "hub.challenge": "CHALLENGE-7", "hub.verify_token": VERIFY_TOKEN},
        {"hub.challenge": "CHALLENGE-7", "hub.verify_token": VERIFY_TOKEN},
        {"hub.mode": "subscribe", "hub.challenge": "CHALLENGE-7"},
        {},
    ],
    ids=["wrong-token", "wrong-mode", "no-mode", "no-token", "nothing"],
)
async def test_verification_refused(
    client: httpx.AsyncClient, params: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="agent.app"):
        response = await client.get("/webhook", params=params)
    assert response.status_code == 403
    assert "CHALLENGE-7" not in response.text  # the challenge is not echoed on failure
    assert any("verification refused" in r.getMessage() for r in caplog.records)


async def test_verification_refused_when_no_token_is_configured() -> None:
    """An unconfigured server must not verify a subscription that sends an empty token."""
    runtime = FakeRuntime(settings=Settings(app_secret=APP_SECRET, verify_token=""))
    app = create_app(cast(Runtime, runtime))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://wacall.test") as c:
        params = {"hub.mode": "subscribe", "hub.challenge": "1", "hub.verify_token": ""}
        assert (await c.get("/webhook", params=params)).status_code == 403


# ---- POST /webhook: signatures ------------------------------------------------------------------


async def test_signed_post_is_dispatched_once(client: httpx.AsyncClient, runtime: FakeRuntime) -> None:
    body = meta_bytes(connect_payload())
    assert b"\\u00d1" in body  # escaped exactly like Meta's payloads
    response = await post_signed(client, body)
    assert response.status_code == 200
    assert len(runtime.dispatched) == 1
    (event,) = call_events(runtime.dispatched[0])
    assert event.call.id == CALL_ID
    assert event.call.event == "connect"
    assert event.phone_number_id == "106540000000002"
    assert event.contact is not None and event.contact.name == "Ana Ñandú"


async def test_signature_is_checked_on_raw_bytes(client: httpx.AsyncClient, runtime: FakeRuntime) -> None:
    """Pretty-printed bytes signed as sent are fine; re-serialising before checking would break this."""
    body = json.dumps(connect_payload(), indent=2, ensure_ascii=False).encode("utf-8")
    assert (await post_signed(client, body)).status_code == 200
    assert len(runtime.dispatched) == 1


@pytest.mark.parametrize(
    "sig",
    [
        None,
        "",
        "sha256=" + "0" * 64,
        signature(b"some other body"),
        signature(meta_bytes(connect_payload()), secret="another-app"),
        "sha1=" + hashlib.sha1(b"x").hexdigest(),
        "sha256=not-hex",
    ],
    ids=["missing", "empty", "zeros", "other-body", "other-secret", "sha1", "not-hex"],
)
async def test_bad_signature_is_401_and_not_dispatched(
    client: httpx.AsyncClient, runtime: FakeRuntime, sig: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    body = meta_bytes(connect_payload())
    headers = {"Content-Type": "application/json"}
    if sig is not None:
        headers["X-Hub-Signature-256"] = sig
    with caplog.at_level(logging.WARNING, logger="agent.app"):
        response = await client.post("/webhook", content=body, headers=headers)
    assert response.status_code == 401
    assert runtime.dispatched == []
    assert any("webhook refused" in r.getMessage() for r in caplog.records)


async def test_signature_over_modified_body_is_refused(client: httpx.AsyncClient, runtime: FakeRuntime) -> None:
    body = meta_bytes(connect_payload())
    tampered = body.replace(b"15550002222", b"15550009999")
    response = await post_signed(client, tampered, sig=signature(body))
    assert response.status_code == 401
    assert runtime.dispatched == []


# ---- POST /webhook: malformed but correctly signed ----------------------------------------------


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"\xff\xfe", "UTF-8"),
        (b"[1, 2]", "expected a JSON object"),
        (meta_bytes({**connect_payload(), "object": "page"}), "object"),
        (meta_bytes({"object": "whatsapp_business_account"}), "entry"),
        (meta_bytes(connect_payload(call_without("id"))), "calls[0].id"),
    ],
    ids=["broken-json", "empty", "not-utf8", "array", "wrong-object", "no-entry", "no-call-id"],
)
async def test_malformed_payload_is_400_with_the_problem_named(
    client: httpx.AsyncClient,
    runtime: FakeRuntime,
    caplog: pytest.LogCaptureFixture,
    body: bytes,
    problem: str,
) -> None:
    with caplog.at_level(logging.WARNING, logger="agent.app"):
        response = await post_signed(client, body)
    assert response.status_code == 400
    assert problem in response.text
    assert runtime.dispatched == []
    records = [r for r in caplog.records if r.name == "agent.app" and r.levelno >= logging.WARNING]
    assert records, "a refused webhook must leave a log line"
    assert any(problem in r.getMessage() for r in records)


async def test_oversized_body_is_refused(client: httpx.AsyncClient, runtime: FakeRuntime) -> None:
    body = b"{" + b" " * MAX_BODY_BYTES + b"}"
    response = await post_signed(client, body)
    assert response.status_code == 413
    assert runtime.dispatched == []


# ---- /healthz -----------------------------------------------------------------------------------


async def test_healthz(client: httpx.AsyncClient, runtime: FakeRuntime) -> None:
    runtime.calls["wacid.A"] = object()
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "live_calls": 1, "flow": "demo"}


@pytest.mark.parametrize("status", ["draining", "degraded"])
async def test_healthz_is_503_while_draining_or_failing(
    client: httpx.AsyncClient, runtime: FakeRuntime, status: str
) -> None:
    """A load balancer stops sending webhooks to a process that is shutting down or cannot write."""
    runtime.status = status
    response = await client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["status"] == status


async def test_other_methods_and_paths(client: httpx.AsyncClient) -> None:
    assert (await client.put("/webhook")).status_code == 405
    assert (await client.get("/nope")).status_code == 404


def test_store_health_stays_degraded_for_its_window_after_a_failed_write() -> None:
    from agent.runtime import StoreHealth

    now = [100.0]
    health = StoreHealth(window_s=60, clock=lambda: now[0])
    assert not health.failing
    health.note(None)
    assert not health.failing
    health.note(OSError("disk full"))
    now[0] += 59
    assert health.failing and "disk full" in health.describe()
    now[0] += 2
    assert not health.failing
