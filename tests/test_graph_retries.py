"""Graph requests against a Meta that is briefly unwell: terminate/reject are retried, answers barely.

Regression for issue 14: a transient error on `terminate` left Meta billing a call we had hung up. The Meta
simulator's fault knobs (`graph_faults`) answer 5xx/429 or stall for the next requests.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from agent.media.peer import MediaPeer
from agent.simulator.meta import ACTIVE, ENDED, MetaSimulator
from agent.simulator.session import bound_socket, serve
from agent.whatsapp.graph import GraphClient, GraphError, GraphTransportError, RetryPolicy
from tests.test_graph_against_simulator import APP_SECRET, LOOPBACK, PNID, TOKEN, WA_ID, WebhookInbox, phone_offer

FAST = RetryPolicy(attempts=4, first_backoff_s=0.05, max_backoff_s=0.2, budget_s=3.0, attempt_timeout_s=0.5)


@dataclass
class Live:
    sim: MetaSimulator
    graph: GraphClient
    call_id: str
    answer: str


def _client(sim: MetaSimulator, base_url: str = "http://meta.test", asgi: bool = True) -> GraphClient:
    return GraphClient(
        base_url=base_url,
        version="v23.0",
        phone_number_id=PNID,
        token=TOKEN,
        transport=httpx.ASGITransport(app=sim.app) if asgi else None,
        ending_retry=FAST,
    )


@pytest.fixture
async def ringing() -> AsyncIterator[Live]:
    """A user call Meta has offered us, with our real answer SDP ready; the Graph client talks ASGI."""
    inbox = WebhookInbox()
    sim = MetaSimulator(
        webhook_url="http://wacall.test/webhook",
        app_secret=APP_SECRET,
        access_token=TOKEN,
        phone_number_id=PNID,
        webhook_transport=httpx.MockTransport(inbox.handle),
    )
    graph = _client(sim)
    phone, offer = await phone_offer()
    bot = MediaPeer(hosts=LOOPBACK, label="bot")
    try:
        answer = await bot.answer(offer)
        call = await sim.place_user_call(wa_id=WA_ID, offer_sdp=offer)
        yield Live(sim=sim, graph=graph, call_id=call.id, answer=answer)
    finally:
        await graph.aclose()
        await sim.aclose()
        await bot.close()
        await phone.close()


async def _accepted(live: Live) -> None:
    await live.graph.pre_accept(live.call_id, live.answer)
    await live.graph.accept(live.call_id, live.answer)
    assert live.sim.calls[live.call_id].state == ACTIVE


def _statuses(live: Live, action: str) -> list[int]:
    return [r.status for r in live.sim.requests if r.action == action]


async def test_terminate_is_retried_through_5xx_until_meta_sees_it(ringing: Live) -> None:
    await _accepted(ringing)
    ringing.sim.graph_faults.inject("terminate", status=503, count=2)
    await ringing.graph.terminate(ringing.call_id)
    assert _statuses(ringing, "terminate") == [503, 503, 200]
    assert ringing.sim.calls[ringing.call_id].state == ENDED


async def test_terminate_honours_retry_after_on_429(ringing: Live) -> None:
    await _accepted(ringing)
    ringing.sim.graph_faults.inject("terminate", status=429, retry_after="0.4")
    started = time.monotonic()
    await ringing.graph.terminate(ringing.call_id)
    assert time.monotonic() - started >= 0.4  # Meta's wait, not our 50 ms back-off
    assert _statuses(ringing, "terminate") == [429, 200]


async def test_terminate_gives_up_within_its_budget(ringing: Live) -> None:
    await _accepted(ringing)
    ringing.sim.graph_faults.inject("terminate", status=500, count=100)
    started = time.monotonic()
    with pytest.raises(GraphError) as info:
        await ringing.graph.terminate(ringing.call_id)
    assert info.value.status == 500
    assert len(_statuses(ringing, "terminate")) == FAST.attempts
    assert time.monotonic() - started < FAST.budget_s


async def test_a_4xx_refusal_is_not_retried(ringing: Live) -> None:
    # Terminating a call that was never accepted is a state error (4xx): repeating it changes nothing.
    with pytest.raises(GraphError) as info:
        await ringing.graph.terminate(ringing.call_id)
    assert 400 <= info.value.status < 500
    assert len(_statuses(ringing, "terminate")) == 1


async def test_reject_is_retried_too(ringing: Live) -> None:
    ringing.sim.graph_faults.inject("reject", status=502)
    await ringing.graph.reject(ringing.call_id)
    assert _statuses(ringing, "reject") == [502, 200]


async def test_accept_gets_one_quick_retry_only(ringing: Live) -> None:
    ringing.sim.graph_faults.inject("pre_accept", status=503)
    await ringing.graph.pre_accept(ringing.call_id, ringing.answer)
    assert _statuses(ringing, "pre_accept") == [503, 200]
    ringing.sim.graph_faults.inject("accept", status=503, count=5)
    with pytest.raises(GraphError):
        await ringing.graph.accept(ringing.call_id, ringing.answer)
    assert _statuses(ringing, "accept") == [503, 503]


async def test_accept_does_not_wait_out_a_long_retry_after(ringing: Live) -> None:
    await ringing.graph.pre_accept(ringing.call_id, ringing.answer)
    ringing.sim.graph_faults.inject("accept", status=429, retry_after="5")
    started = time.monotonic()
    with pytest.raises(GraphError):
        await ringing.graph.accept(ringing.call_id, ringing.answer)
    assert time.monotonic() - started < 1.0
    assert _statuses(ringing, "accept") == [429]


async def test_terminate_retries_a_request_that_never_came_back() -> None:
    """A stalled Meta (no answer within the attempt's timeout) over real HTTP: the next attempt goes out."""
    inbox = WebhookInbox()
    sim = MetaSimulator(
        webhook_url="http://wacall.test/webhook",
        app_secret=APP_SECRET,
        access_token=TOKEN,
        phone_number_id=PNID,
        webhook_transport=httpx.MockTransport(inbox.handle),
    )
    sock = bound_socket()
    port = sock.getsockname()[1]
    phone, offer = await phone_offer()
    bot = MediaPeer(hosts=LOOPBACK, label="bot")
    try:
        async with serve(sim.app, sock):
            graph = _client(sim, f"http://127.0.0.1:{port}", asgi=False)
            try:
                answer = await bot.answer(offer)
                call = await sim.place_user_call(wa_id=WA_ID, offer_sdp=offer)
                live = Live(sim=sim, graph=graph, call_id=call.id, answer=answer)
                await _accepted(live)
                sim.graph_faults.inject("terminate", status=503, delay_s=FAST.attempt_timeout_s + 0.5)
                await graph.terminate(call.id)
                assert sim.calls[call.id].state == ENDED
                assert _statuses(live, "terminate")[-1] == 200
            finally:
                await graph.aclose()
    finally:
        await sim.aclose()
        await bot.close()
        await phone.close()


async def test_transport_errors_are_retried_then_raised() -> None:
    attempts = 0

    def refuse(request: httpx.Request) -> httpx.Response:
        nonlocal attempts
        attempts += 1
        raise httpx.ConnectError("connection refused", request=request)

    graph = GraphClient(
        base_url="http://meta.test",
        version="v23.0",
        phone_number_id=PNID,
        token=TOKEN,
        transport=httpx.MockTransport(refuse),
        ending_retry=FAST,
    )
    try:
        with pytest.raises(GraphTransportError):
            await graph.terminate("wacid.X")
    finally:
        await graph.aclose()
    assert attempts == FAST.attempts
