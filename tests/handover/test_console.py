"""The console's HTTP side: sign-in, session cookie, CSRF, same-site checks, actions, and the event stream.

Driven through httpx's ASGI transport against the real `Console` and `HandoverService` (with the fake bridge
and call from test_service.py), so no sockets and no browser are needed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import cast

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from agent.handover.console import COOKIE, Console
from agent.handover.service import HandoverService
from tests.handover.test_service import ASKED, Clock, FakeBridge, FakeCall, settings

TOKENS = {"WACALL_AGENT_TOKEN_ANA": "ana-secret", "WACALL_AGENT_TOKEN_BEN": "ben-secret"}
BASE = "http://wacall.test"


@pytest.fixture
async def service() -> AsyncIterator[HandoverService]:
    FakeBridge.made.clear()
    service = HandoverService(settings(), clock=Clock(), tick_s=None, bridge_factory=FakeBridge)
    yield service
    await service.aclose()


def app_for(service: HandoverService, **options: float) -> Starlette:
    console = Console(service, service.settings, env=TOKENS, **options)
    return Starlette(routes=[Mount("/console", routes=console.routes)])


@pytest.fixture
async def client(service: HandoverService) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app_for(service, stream_max_s=0.2, disconnect_grace_s=0.05))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as c:
        yield c


async def sign_in(client: httpx.AsyncClient, agent: str = "ana", token: str = "ana-secret") -> str:
    response = await client.post("/console/api/signin", json={"agent": agent, "token": token})
    assert response.status_code == 200, response.text
    return str(response.json()["csrf"])


async def test_page_and_assets_are_served_with_a_strict_policy(client: httpx.AsyncClient) -> None:
    page = await client.get("/console/")
    assert page.status_code == 200 and 'src="static/console.js"' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert "<script>" not in page.text  # no inline script: the CSP would block it
    js = await client.get("/console/static/console.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert (await client.get("/console/static/console.css")).status_code == 200
    assert (await client.get("/console/static/..%2Fconsole.py")).status_code == 404


async def test_sign_in_sets_a_strict_http_only_cookie_scoped_to_the_console(client: httpx.AsyncClient) -> None:
    assert (await client.get("/console/api/session")).json() == {"signed_in": False}
    response = await client.post("/console/api/signin", json={"agent": "ana", "token": "ana-secret"})
    assert response.status_code == 200
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/console" in cookie
    assert "secure" not in cookie  # plain http here; https requests get Secure
    session = (await client.get("/console/api/session")).json()
    assert session["signed_in"] and session["agent"]["name"] == "Ana"
    assert session["csrf"] == response.json()["csrf"]


async def test_wrong_token_and_unknown_agent_get_the_same_answer(client: httpx.AsyncClient) -> None:
    wrong = await client.post("/console/api/signin", json={"agent": "ana", "token": "nope"})
    unknown = await client.post("/console/api/signin", json={"agent": "zed", "token": "nope"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json() == {"error": "unknown agent or wrong token"}
    assert "set-cookie" not in wrong.headers


async def test_repeated_failures_lock_the_agent_out_for_a_while(client: httpx.AsyncClient) -> None:
    for _ in range(5):
        await client.post("/console/api/signin", json={"agent": "ana", "token": "guess"})
    locked = await client.post("/console/api/signin", json={"agent": "ana", "token": "ana-secret"})
    assert locked.status_code == 429
    await sign_in(client, "ben", "ben-secret")  # others are not affected


async def test_an_agent_whose_token_is_not_set_cannot_sign_in(service: HandoverService) -> None:
    app = Starlette(routes=[Mount("/console", routes=Console(service, service.settings, env={}).routes)])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
        response = await client.post("/console/api/signin", json={"agent": "ana", "token": ""})
    assert response.status_code == 401


async def test_sign_in_must_be_json_from_the_same_site(client: httpx.AsyncClient) -> None:
    form = await client.post("/console/api/signin", data={"agent": "ana", "token": "ana-secret"})
    assert form.status_code == 415
    foreign = await client.post(
        "/console/api/signin",
        json={"agent": "ana", "token": "ana-secret"},
        headers={"Origin": "https://evil.example"},
    )
    assert foreign.status_code == 403
    cross = await client.post(
        "/console/api/signin", json={"agent": "ana", "token": "ana-secret"}, headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert cross.status_code == 403


async def test_every_post_needs_the_sessions_csrf_token(client: httpx.AsyncClient, service: HandoverService) -> None:
    assert (await client.post("/console/api/status", json={"status": "available"})).status_code == 401
    csrf = await sign_in(client)
    missing = await client.post("/console/api/status", json={"status": "available"})
    wrong = await client.post("/console/api/status", json={"status": "available"}, headers={"X-CSRF-Token": "x"})
    assert missing.status_code == wrong.status_code == 403
    assert service.view("ana")["me"]["status"] == "away"
    ok = await client.post("/console/api/status", json={"status": "available"}, headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 200 and ok.json()["me"]["status"] == "available"
    bad = await client.post("/console/api/status", json={"status": "asleep"}, headers={"X-CSRF-Token": csrf})
    assert bad.status_code == 400


async def test_signing_in_elsewhere_signs_the_older_page_out(service: HandoverService) -> None:
    app = app_for(service)
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as first,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as second,
    ):
        await sign_in(first)
        await sign_in(second)
        assert (await first.get("/console/api/state")).status_code == 401
        assert (await second.get("/console/api/state")).status_code == 200


async def test_take_a_call_through_the_api(client: httpx.AsyncClient, service: HandoverService) -> None:
    csrf = {"X-CSRF-Token": await sign_in(client)}
    call = FakeCall()
    service.on_handover(call, ASKED)
    await client.post("/console/api/status", json={"status": "available"}, headers=csrf)
    state = (await client.get("/console/api/state")).json()
    assert state["offer"]["call_id"] == call.id
    no_sdp = await client.post(f"/console/api/calls/{call.id}/accept", json={}, headers=csrf)
    assert no_sdp.status_code == 400
    accepted = await client.post(f"/console/api/calls/{call.id}/accept", json={"sdp": "v=0 offer"}, headers=csrf)
    assert accepted.status_code == 200 and accepted.json() == {"sdp": "v=0 answer"}
    assert (await client.get("/console/api/state")).json()["call"]["call_id"] == call.id
    again = await client.post(f"/console/api/calls/{call.id}/accept", json={"sdp": "v=0 offer"}, headers=csrf)
    assert again.status_code == 409
    unknown = await client.post(f"/console/api/calls/{call.id}/transfer", json={}, headers=csrf)
    assert unknown.status_code == 404
    hung_up = await client.post(f"/console/api/calls/{call.id}/hangup", json={}, headers=csrf)
    assert hung_up.status_code == 200 and hung_up.json()["call"] is None
    await asyncio.sleep(0)
    assert call.hangups == ["agent_hung_up"]


async def test_event_stream_sends_state_and_a_gone_console_sets_the_agent_away(
    client: httpx.AsyncClient, service: HandoverService
) -> None:
    csrf = {"X-CSRF-Token": await sign_in(client)}
    await client.post("/console/api/status", json={"status": "available"}, headers=csrf)
    call = FakeCall()

    async def hand_over_soon() -> None:
        await asyncio.sleep(0.05)
        service.on_handover(call, ASKED)

    task = asyncio.create_task(hand_over_soon())
    stream = await client.get("/console/api/events")  # ends by itself after stream_max_s
    await task
    assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
    events = [line.removeprefix("event: ") for line in stream.text.splitlines() if line.startswith("event: ")]
    assert events[0] == "state" and "offer" in events
    assert service.desk.agent("ana").status.value == "offered"
    await asyncio.sleep(0.15)  # longer than disconnect_grace_s with no stream open
    assert service.desk.agent("ana").status.value == "away"
    assert service.view("ana")["waiting"][0]["offered_to"] is None


async def test_sign_out_ends_the_session_and_sets_the_agent_away(
    client: httpx.AsyncClient, service: HandoverService
) -> None:
    csrf = {"X-CSRF-Token": await sign_in(client)}
    await client.post("/console/api/status", json={"status": "available"}, headers=csrf)
    out = await client.post("/console/api/signout", json={}, headers=csrf)
    assert out.status_code == 200 and COOKIE in out.headers["set-cookie"]
    assert service.desk.agent("ana").status.value == "away"
    assert (await client.get("/console/api/events")).status_code == 401


async def test_the_app_mounts_the_console_only_when_handover_has_queues(service: HandoverService) -> None:
    from agent.app import create_app
    from agent.config import Settings
    from agent.runtime import Runtime

    def runtime(handover: HandoverService | None) -> Runtime:
        fake = SimpleNamespace(
            settings=Settings(handover=service.settings if handover else {}),
            handover=handover,
            calls={},
            flow=SimpleNamespace(name="t"),
            health=lambda: {"status": "ok", "live_calls": 0, "flow": "t"},
        )
        return cast(Runtime, fake)

    for handover, status in ((service, 200), (None, 404)):
        app = create_app(runtime(handover))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
            assert (await client.get("/console/")).status_code == status
            assert (await client.get("/healthz")).status_code == 200
