"""A business-initiated call, end to end: permission granted, call placed, user picks up and hears the bot.

Meta's side (ringing, SDP answer, ACCEPTED, terminate) is the simulator; the user's phone is a real WebRTC
peer answering our offer; the cost comes from the shipped rate card.
"""

from __future__ import annotations

import asyncio
import math
import time
from decimal import Decimal
from pathlib import Path

import pytest

from agent.cli import main as cli_main
from agent.dialogue.flow import load_flow
from agent.media.peer import MediaPeer
from agent.media.sdp import shape_offer
from agent.runtime import Models
from agent.simulator.caller import SimulatedUser
from agent.simulator.meta import Decision, ScriptedPhone
from agent.simulator.session import Simulation
from agent.whatsapp.graph import GraphError
from agent.whatsapp.pricing import RateCard
from agent.whatsapp.rules import Refused
from tests.wer import wer

pytestmark = pytest.mark.e2e

BUSINESS = "447700900111"  # a UK business number: business-initiated calls are allowed from there
USER = "34600111222"  # a Spanish mobile


async def _until(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.05)


async def test_outbound_call_to_a_user_who_granted_permission(
    models: Models, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flow = load_flow("prompts/demo.yaml")
    greeting = " ".join(flow.nodes["welcome"].say) + " " + " ".join(flow.nodes["menu"].say)
    data_dir = str(tmp_path / "data")
    async with Simulation.start(models, business_number=BUSINESS, data_dir=data_dir) as sim:
        user = SimulatedUser(transcriber=models.transcriber, synthesizer=models.synthesizer)
        phone = ScriptedPhone(Decision.ACCEPT, user.answer_business_call, think_s=0.3)
        sim.meta.add_user(USER, name="Ana Example", phone=phone)
        try:
            await sim.meta.user_sets_profile_permission(USER, grant=True, permanent=True)
            await _until(lambda: str(sim.runtime.ledger.user_state(USER).permission) == "permanent")

            call = await sim.runtime.place_call(USER)
            sim_call = sim.meta.calls[call.id]
            heard = await user.listen(timeout=20)
            assert sim_call.statuses[:2] == ["RINGING", "ACCEPTED"], sim_call.statuses
            await sim.meta.user_hangup(call.id)
            await _until(lambda: call.id in sim.runtime.finished)
        finally:
            await user.close()

        # The user heard the bot's opening line (their name may be misheard; compare the rest).
        opening = greeting.replace("{{caller.name}}", "").replace("Hello ,", "Hello,")
        assert wer(opening.split(",", 1)[1], heard.split(",", 1)[-1]) <= 0.2, heard
        record = sim.runtime.store.get_call(call.id)
        assert record is not None
        assert record.direction == "BUSINESS_INITIATED" and record.outcome == "answered"
        assert record.to_number == USER and record.from_number == BUSINESS
        assert record.biz_opaque_callback_data == call.ref
        assert record.duration_s is not None and record.duration_s > 0
        found = RateCard.load().rate_for_number(USER)
        assert found is not None and found.country == "ES"
        rate = found.usd_per_minute
        expected = (Decimal(math.ceil(record.duration_s / 6)) * rate / 10).quantize(Decimal("0.0001"))
        assert record.cost is not None and abs(record.cost - expected) <= rate / 10, (record.cost, expected)
        assert record.cost > 0
        # An answered business call opens the user's service window and counts toward the 24 h cap.
        state = sim.runtime.ledger.user_state(USER)
        assert len(state.connected_calls) == 1 and state.window_refreshed_at is not None

    # `wacall calls` lists it from the database, server stopped.
    assert cli_main(["calls", "--data-dir", data_dir]) == 0
    listing = capsys.readouterr().out
    assert USER in listing and "out" in listing and "answered" in listing and f"{record.cost:.4f}" in listing


async def test_wacall_refuses_what_meta_would_refuse(models: Models) -> None:
    """Without permission wacall refuses itself, naming the rule; Meta (the simulator) would say 138006."""
    async with Simulation.start(models, business_number=BUSINESS) as sim:
        with pytest.raises(Refused) as refused:
            await sim.runtime.place_call(USER)
        assert refused.value.refusal.meta_error_code == 138006
        assert "permission" in refused.value.refusal.reason
        with pytest.raises(GraphError) as meta_says:
            await sim.runtime.graph.connect(USER, shape_offer(await MediaPeer(hosts=["127.0.0.1"]).offer()))
        assert meta_says.value.code == 138006


async def test_permission_request_and_reply_through_the_server(models: Models) -> None:
    async with Simulation.start(models, business_number=BUSINESS) as sim:
        sim.meta.add_user(USER, name="Ana Example")
        await sim.meta.user_sends_message(USER, "Hi, can you call me about my order?")
        await _until(lambda: sim.runtime.ledger.user_state(USER).window_refreshed_at is not None)
        message_id = await sim.runtime.request_permission(USER, "May we call you about your order?")
        assert message_id.startswith("wamid.")
        with pytest.raises(Refused) as again:  # 1 request per 24 h
            await sim.runtime.request_permission(USER)
        assert again.value.refusal.rule == "permission.request_limit_24h"
        await sim.meta.user_replies_to_permission(USER, accept=True, permanent=False)
        await _until(lambda: str(sim.runtime.ledger.user_state(USER).permission) == "temporary")
        state = sim.runtime.ledger.user_state(USER)
        assert state.permission_expires_at is not None


async def test_unanswered_outbound_call_is_recorded_as_missed(models: Models) -> None:
    async with Simulation.start(models, business_number=BUSINESS) as sim:
        sim.meta.timings.ring_timeout = 1.0
        user = SimulatedUser(transcriber=models.transcriber)
        sim.meta.add_user(USER, phone=ScriptedPhone(Decision.NO_ANSWER, user.answer_business_call))
        try:
            await sim.meta.user_sets_profile_permission(USER, grant=True, permanent=True)
            await _until(lambda: str(sim.runtime.ledger.user_state(USER).permission) == "permanent")
            call = await sim.runtime.place_call(USER)
            await _until(lambda: call.id in sim.runtime.finished, timeout=15)
        finally:
            await user.close()
        record = sim.runtime.store.get_call(call.id)
        assert record is not None and record.outcome == "unanswered" and record.cost == 0
        [missed] = sim.runtime.store.list_contact_events(user=USER)
        assert missed.reason == "unanswered"
        assert sim.runtime.ledger.user_state(USER).consecutive_unanswered == 1


async def test_calls_api_needs_the_token_and_explains_refusals(models: Models) -> None:
    import httpx

    from agent.app import create_app

    async with Simulation.start(models, business_number=BUSINESS, api_token="sekret") as sim:
        transport = httpx.ASGITransport(app=create_app(sim.runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://wacall.test") as client:
            assert (await client.post("/v1/calls", json={"to": USER})).status_code == 401
            bad = await client.post("/v1/calls", json={"to": "12"}, headers={"Authorization": "Bearer sekret"})
            assert bad.status_code == 400
            refused = await client.post("/v1/calls", json={"to": USER}, headers={"Authorization": "Bearer sekret"})
            assert refused.status_code == 409
            assert refused.json()["rule"] == "permission.none" and refused.json()["meta_error_code"] == 138006
            listing = await client.get("/v1/calls", headers={"Authorization": "Bearer sekret"})
            assert listing.status_code == 200 and listing.json()["calls"] == []
