"""Issue 19, call buttons (spec §6.1, §6.2): the window rule checked before Meta, the simulator's acceptance,
the template outside the window, the REST route and `wacall button`. Graph over httpx.ASGITransport, no sockets."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import httpx
import pytest

from agent.app import create_app
from agent.calling_config import CallButtonSettings
from agent.cli import main
from agent.config import Settings
from agent.runtime import Runtime
from agent.simulator.meta import MetaSimulator
from agent.whatsapp.call_buttons import choose_button_message, send_call_button
from agent.whatsapp.graph import GraphClient, GraphError
from agent.whatsapp.rules import Refusal, Refused, UserCallingState

TOKEN = "sim-token"
PNID = "106540000000002"
USER = "15550002222"
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
API_TOKEN = "api-token"
OFFER = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"


def state(window_opened: datetime | None) -> UserCallingState:
    return UserCallingState(phone_number_id=PNID, user=USER, window_refreshed_at=window_opened)


class Inbox:
    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.payloads.append(json.loads(request.content))
        return httpx.Response(200)

    def values(self, key: str) -> list[dict[str, Any]]:
        return [
            item for p in self.payloads for e in p["entry"] for c in e["changes"] for item in c["value"].get(key, [])
        ]


@pytest.fixture
def inbox() -> Inbox:
    return Inbox()


@pytest.fixture
async def sim(inbox: Inbox) -> AsyncIterator[MetaSimulator]:
    simulator = MetaSimulator(
        webhook_url="http://wacall.test/webhook",
        app_secret="secret",
        access_token=TOKEN,
        phone_number_id=PNID,
        clock=NOW.timestamp,
        webhook_transport=httpx.MockTransport(inbox.handle),
    )
    yield simulator
    await simulator.aclose()


@pytest.fixture
async def graph(sim: MetaSimulator) -> AsyncIterator[GraphClient]:
    async with GraphClient(
        base_url="http://meta.test",
        version="v23.0",
        phone_number_id=PNID,
        token=TOKEN,
        transport=httpx.ASGITransport(app=sim.app),
    ) as client:
        yield client


# ---- the rule, before Meta -------------------------------------------------------------------------


def test_the_window_decides_which_message_carries_the_button() -> None:
    open_window = state(NOW - timedelta(hours=23))
    closed = state(NOW - timedelta(hours=25))
    assert choose_button_message(open_window, NOW, template=None) == "interactive"
    assert choose_button_message(open_window, NOW, template="support_call_button") == "interactive"
    assert choose_button_message(closed, NOW, template="support_call_button") == "template"
    refusal = choose_button_message(closed, NOW, template=None)
    assert isinstance(refusal, Refusal)
    assert refusal.rule == "button.window_closed" and refusal.meta_error_code == 131047
    assert refusal.reason.startswith("customer-service window closed: a free-form call button needs an open 24 h")
    assert "closed at 2026-12-07T11:00:00Z" in refusal.reason and "call_button.template" in refusal.reason
    never = choose_button_message(state(None), NOW, template=None)
    assert isinstance(never, Refusal) and "has never been opened" in never.reason


# ---- against the simulator ---------------------------------------------------------------------------


async def test_inside_the_window_the_interactive_is_accepted_and_a_tap_carries_the_payload(
    graph: GraphClient, sim: MetaSimulator, inbox: Inbox
) -> None:
    sim.permissions.note_user_activity(USER, int(NOW.timestamp()) - 3600)
    config = CallButtonSettings(body="Tap to talk to us", display_text="Call us", ttl_minutes=1440)
    message_id, kind = await send_call_button(
        graph, config, state(NOW - timedelta(hours=1)), NOW, payload="cart-abandon-8812"
    )
    assert kind == "interactive"
    (button,) = sim.call_buttons
    assert (button.id, button.kind, button.status) == (message_id, "interactive", "sent")
    assert (button.payload, button.body_text, button.display_text, button.ttl_minutes) == (
        "cart-abandon-8812",
        "Tap to talk to us",
        "Call us",
        1440,
    )
    (request,) = [r for r in sim.requests if r.path.endswith("/messages")]
    assert request.status == 200 and request.body is not None
    assert request.body["interactive"]["action"] == {
        "name": "voice_call",
        "parameters": {"display_text": "Call us", "ttl_minutes": 1440, "payload": "cart-abandon-8812"},
    }
    await sim.drain_webhooks()
    assert [s["status"] for s in inbox.values("statuses")] == ["sent", "delivered"]

    await sim.user_taps_call_button(message_id, offer_sdp=OFFER)
    (connect,) = [c for c in inbox.values("calls") if c["event"] == "connect"]
    assert connect["cta_payload"] == "cart-abandon-8812"


async def test_outside_the_window_without_a_template_wacall_refuses_before_meta(
    graph: GraphClient, sim: MetaSimulator
) -> None:
    with pytest.raises(Refused) as caught:
        await send_call_button(graph, CallButtonSettings(), state(NOW - timedelta(days=2)), NOW, payload="x")
    assert caught.value.refusal.rule == "button.window_closed"
    assert sim.requests == [] and sim.call_buttons == []


async def test_outside_the_window_the_configured_template_is_sent(graph: GraphClient, sim: MetaSimulator) -> None:
    sim.add_call_button_template("support_call_button", language="es", ttl_minutes=1440)
    config = CallButtonSettings(template="support_call_button", template_language="es", ttl_minutes=600)
    message_id, kind = await send_call_button(graph, config, state(None), NOW, payload="ticket-5521")
    assert kind == "template"
    (button,) = sim.call_buttons
    assert (button.id, button.kind, button.status, button.payload, button.ttl_minutes) == (
        message_id,
        "template",
        "sent",
        "ticket-5521",
        600,
    )
    assert button.template_name == "support_call_button"


async def test_a_template_meta_does_not_know_is_meta_s_refusal(graph: GraphClient, sim: MetaSimulator) -> None:
    config = CallButtonSettings(template="never_approved")
    with pytest.raises(GraphError) as caught:
        await send_call_button(graph, config, state(None), NOW)
    assert caught.value.code == 132001


async def test_the_simulator_fails_a_free_form_button_outside_the_window_as_meta_does(
    graph: GraphClient, sim: MetaSimulator, inbox: Inbox
) -> None:
    """Bypassing wacall's check: Meta takes the request, then fails the message with 131047."""
    message_id = await graph.send_call_button(USER, body_text="Call us", payload="p")
    await sim.drain_webhooks()
    (status,) = inbox.values("statuses")
    assert (status["id"], status["status"], status["errors"][0]["code"]) == (message_id, "failed", 131047)
    with pytest.raises(LookupError):
        await sim.user_taps_call_button(message_id, offer_sdp=OFFER)


@pytest.mark.parametrize(
    ("parameters", "problem"),
    [
        ({"display_text": "x" * 21}, "display_text"),
        ({"ttl_minutes": 0}, "minutes"),
        ({"ttl_minutes": 43201}, "minutes"),
        ({"payload": "p" * 513}, "512"),
        ({"colour": "green"}, "Unknown voice_call parameter"),
    ],
)
async def test_the_simulator_refuses_bad_button_parameters(
    sim: MetaSimulator, parameters: dict[str, Any], problem: str
) -> None:
    action = {"name": "voice_call", "parameters": parameters}
    interactive = {"type": "voice_call", "body": {"text": "hi"}, "action": action}
    body = {"messaging_product": "whatsapp", "to": USER, "type": "interactive", "interactive": interactive}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app), base_url="http://meta.test") as c:
        response = await c.post(f"/v23.0/{PNID}/messages", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == 100 and problem in response.json()["error"]["error_data"]["details"]


# ---- REST route and CLI ------------------------------------------------------------------------------


@dataclass
class ButtonRuntime:
    """What `create_app` needs, sending buttons for real: through the Graph client to the simulator."""

    settings: Settings
    graph: GraphClient
    user_state: UserCallingState
    calls: dict[str, object] = field(default_factory=dict)
    handover: None = None

    async def send_call_button(self, to: str, *, payload: str | None, text: str | None) -> tuple[str, str]:
        assert to == self.user_state.user
        return await send_call_button(
            self.graph, self.settings.call_button, self.user_state, NOW, payload=payload, text=text
        )


async def test_the_rest_route_sends_refuses_and_checks_its_input(graph: GraphClient, sim: MetaSimulator) -> None:
    runtime = ButtonRuntime(settings=Settings(api_token=API_TOKEN), graph=graph, user_state=state(NOW))
    sim.permissions.note_user_activity(USER, int(NOW.timestamp()))
    app = create_app(cast(Runtime, runtime))
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://wacall.test") as c:
        sent = await c.post("/v1/call-buttons", json={"to": f"+{USER}", "payload": "order-17"}, headers=auth)
        assert sent.status_code == 202, sent.text
        assert sent.json() == {"message_id": sim.call_buttons[0].id, "to": USER, "kind": "interactive"}
        assert sim.call_buttons[0].payload == "order-17"

        assert (await c.post("/v1/call-buttons", json={"to": USER})).status_code == 401
        too_long = await c.post("/v1/call-buttons", json={"to": USER, "payload": "p" * 513}, headers=auth)
        assert too_long.status_code == 400 and "512" in too_long.json()["error"]

        runtime.user_state = state(NOW - timedelta(days=3))
        refused = await c.post("/v1/call-buttons", json={"to": USER}, headers=auth)
        assert refused.status_code == 409
        assert refused.json()["rule"] == "button.window_closed" and refused.json()["meta_error_code"] == 131047

        runtime.settings.call_button.template = "never_approved"
        meta_refused = await c.post("/v1/call-buttons", json={"to": USER}, headers=auth)
        assert meta_refused.status_code == 502 and meta_refused.json()["code"] == 132001

        document = (await c.get("/openapi.json")).json()
    operation = document["paths"]["/v1/call-buttons"]["post"]
    assert operation["operationId"] == "sendCallButton" and {"202", "409", "502"} <= set(operation["responses"])


def test_wacall_button_posts_to_the_running_servers_api(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, str, Any]] = []

    def fake_request(method: str, url: str, **kw: Any) -> httpx.Response:
        seen.append((method, url, kw["json"]))
        return httpx.Response(202, json={"message_id": "wamid.X", "to": USER, "kind": "template"})

    monkeypatch.setenv("WACALL_API_TOKEN", API_TOKEN)
    monkeypatch.setattr(httpx, "request", fake_request)
    assert main(["button", USER, "--payload", "ticket-5521", "--server", "http://127.0.0.1:9"]) == 0
    assert seen == [("POST", "http://127.0.0.1:9/v1/call-buttons", {"to": USER, "payload": "ticket-5521"})]
