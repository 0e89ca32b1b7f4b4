"""Our real Graph client against the real Meta simulator, with the answer SDP our real media stack makes.

The simulator re-derives Meta's rules from the spec without sharing code with `agent.whatsapp` or
`agent.media`, so this is where a disagreement between the two readings shows up. No sockets for HTTP:
Graph requests go through `httpx.ASGITransport`, webhooks into an `httpx.MockTransport` that records them.
The answer SDP comes from `MediaPeer.answer()` on a Meta-shaped offer (real aiortc, 127.0.0.1 only).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from agent.media.peer import MediaPeer
from agent.simulator.meta import ACTIVE, ENDED, PRE_ACCEPTED, MetaSimulator
from agent.simulator.phone_sdp import meta_shaped_offer
from agent.whatsapp.graph import GraphClient, GraphError

TOKEN = "sim-token-abc"
APP_SECRET = "sim-app-secret"
PNID = "106540000000002"
WA_ID = "15550002222"
LOOPBACK = ["127.0.0.1"]


@dataclass
class WebhookInbox:
    """Stands in for our server's webhook route: answers 200 and keeps each payload."""

    payloads: list[dict[str, Any]] = field(default_factory=list)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.payloads.append(json.loads(request.content))
        return httpx.Response(200, text="OK")

    def calls(self, event: str) -> list[dict[str, Any]]:
        return [
            call
            for payload in self.payloads
            for entry in payload["entry"]
            for change in entry["changes"]
            for call in change["value"].get("calls", [])
            if call["event"] == event
        ]


@dataclass
class Setup:
    sim: MetaSimulator
    inbox: WebhookInbox
    graph: GraphClient
    offer: str
    answer: str
    other_answer: str
    raw_aiortc_answer: str


async def phone_offer() -> tuple[MediaPeer, str]:
    """A Meta-shaped offer from a real aiortc peer, with Meta's (controlled) ICE role."""
    phone = MediaPeer(hosts=LOOPBACK, label="phone")
    transceiver = phone.pc.addTransceiver(phone.outbound, direction="sendrecv")
    ice = transceiver.sender.transport.transport
    ice._role_set = True
    ice._connection.ice_controlling = False
    return phone, meta_shaped_offer(await phone.offer())


def graph_client(sim: MetaSimulator, token: str = TOKEN) -> GraphClient:
    return GraphClient(
        base_url="http://meta.test",
        version="v23.0",
        phone_number_id=PNID,
        token=token,
        transport=httpx.ASGITransport(app=sim.app),
    )


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    inbox = WebhookInbox()
    sim = MetaSimulator(
        webhook_url="http://wacall.test/webhook",
        app_secret=APP_SECRET,
        access_token=TOKEN,
        phone_number_id=PNID,
        webhook_transport=httpx.MockTransport(inbox.handle),
    )
    graph = graph_client(sim)
    phone, offer = await phone_offer()
    bot = MediaPeer(hosts=LOOPBACK, label="bot")
    other_bot = MediaPeer(hosts=LOOPBACK, label="bot-2")
    try:
        answer = await bot.answer(offer)
        other_answer = await other_bot.answer(offer)
        yield Setup(
            sim=sim,
            inbox=inbox,
            graph=graph,
            offer=offer,
            answer=answer,
            other_answer=other_answer,
            raw_aiortc_answer=bot.pc.localDescription.sdp,
        )
    finally:
        await graph.aclose()
        await sim.aclose()
        for peer in (bot, other_bot, phone):
            await peer.close()


async def place_call(s: Setup) -> str:
    call = await s.sim.place_user_call(wa_id=WA_ID, offer_sdp=s.offer)
    (connect,) = s.inbox.calls("connect")
    assert connect["id"] == call.id and connect["session"]["sdp"] == s.offer
    return call.id


async def test_pre_accept_then_accept_with_our_real_answer(setup: Setup) -> None:
    call_id = await place_call(setup)
    await setup.graph.pre_accept(call_id, setup.answer)
    call = setup.sim.calls[call_id]
    assert call.state == PRE_ACCEPTED
    assert call.answer_ready.is_set()

    await setup.graph.accept(call_id, setup.answer, biz_opaque_callback_data="session-7f3a")
    assert call.state == ACTIVE
    assert call.accepted.is_set()
    assert call.answer_sdp == setup.answer
    assert call.biz_opaque_callback_data == "session-7f3a"
    assert call.actions == ["pre_accept", "accept"]
    assert [(r.status, r.error_code) for r in setup.sim.requests] == [(200, None), (200, None)]


async def test_accept_without_pre_accept(setup: Setup) -> None:
    call_id = await place_call(setup)
    await setup.graph.accept(call_id, setup.answer)
    assert setup.sim.calls[call_id].state == ACTIVE


async def test_accept_with_a_different_sdp_is_refused(setup: Setup) -> None:
    """Meta applies the pre_accept answer to its media leg; accept cannot change it (spec §3.2)."""
    call_id = await place_call(setup)
    await setup.graph.pre_accept(call_id, setup.answer)
    assert setup.other_answer != setup.answer
    with pytest.raises(GraphError) as info:
        await setup.graph.accept(call_id, setup.other_answer)
    assert info.value.code == 100
    assert info.value.status == 400
    assert "differs from pre_accept" in str(info.value)
    assert setup.sim.calls[call_id].state == PRE_ACCEPTED


async def test_aiortc_answer_without_shaping_is_refused(setup: Setup) -> None:
    """Why `shape_answer` exists: aiortc also lists sha-384/512 fingerprints, which Meta refuses."""
    assert "a=fingerprint:sha-512" in setup.raw_aiortc_answer
    call_id = await place_call(setup)
    with pytest.raises(GraphError) as info:
        await setup.graph.pre_accept(call_id, setup.raw_aiortc_answer)
    assert info.value.code == 100
    assert "sha-256" in str(info.value)


async def test_wrong_token_is_190_unauthorised(setup: Setup) -> None:
    call_id = await place_call(setup)
    async with graph_client(setup.sim, token="not-the-token") as bad:
        with pytest.raises(GraphError) as info:
            await bad.pre_accept(call_id, setup.answer)
    assert info.value.code == 190
    assert info.value.status == 401
    assert setup.sim.calls[call_id].actions == []  # refused before it reached the call


async def test_unknown_call_id(setup: Setup) -> None:
    with pytest.raises(GraphError) as info:
        await setup.graph.accept("wacid.DOES-NOT-EXIST", setup.answer)
    assert info.value.code == 100
    assert info.value.status == 400
    assert "wacid.DOES-NOT-EXIST" in str(info.value)


async def test_reject_sends_a_terminate_webhook(setup: Setup) -> None:
    call_id = await place_call(setup)
    await setup.graph.reject(call_id)
    await setup.sim.drain_webhooks()
    call = setup.sim.calls[call_id]
    assert call.state == ENDED
    (terminate,) = setup.inbox.calls("terminate")
    assert terminate["id"] == call_id
    assert terminate["status"] == "COMPLETED"
    assert "start_time" not in terminate  # never picked up
    # A rejected call cannot be accepted afterwards.
    with pytest.raises(GraphError) as info:
        await setup.graph.accept(call_id, setup.answer)
    assert info.value.code == 100


async def test_terminate_an_active_call(setup: Setup) -> None:
    call_id = await place_call(setup)
    await setup.graph.pre_accept(call_id, setup.answer)
    await setup.graph.accept(call_id, setup.answer)
    await setup.graph.terminate(call_id)
    await setup.sim.drain_webhooks()
    call = setup.sim.calls[call_id]
    assert call.state == ENDED
    assert call.actions == ["pre_accept", "accept", "terminate"]
    (terminate,) = setup.inbox.calls("terminate")
    assert terminate["status"] == "COMPLETED"
    assert "start_time" in terminate and "duration" in terminate


async def test_terminate_before_accept_is_refused(setup: Setup) -> None:
    """An unanswered call is declined with reject; terminate is for active calls (spec §3.2)."""
    call_id = await place_call(setup)
    with pytest.raises(GraphError) as info:
        await setup.graph.terminate(call_id)
    assert info.value.code == 100
    assert "reject" in str(info.value)
