"""Meta's delivery quirks and our calling rules, over the real server, store and simulator.

Webhooks are built here from the spec's shapes and delivered signed by the Meta simulator, so the
server's handling of duplicates, late and stale events, business hours, capacity and restarts is
checked end to end, with the SQLite ledger as the witness.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from agent.runtime import Models, Runtime
from agent.simulator.caller import SimulatedUser
from agent.simulator.session import Simulation
from agent.store.sqlite import SqliteStore
from agent.whatsapp.rules import Refused

pytestmark = pytest.mark.e2e

USER = "15550002222"


def _call_payload(sim: Simulation, call: dict[str, Any], *, field: str = "calls") -> dict[str, Any]:
    value: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550001111", "phone_number_id": sim.settings.phone_number_id},
        "contacts": [{"profile": {"name": "Ana Example"}, "wa_id": USER}],
    }
    value["calls" if field == "calls" else "messages"] = [call]
    change = {"field": field, "value": value}
    return {"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [change]}]}


async def _handled(sim: Simulation) -> None:
    """Wait until the server has finished acting on every webhook delivered so far."""
    for _ in range(100):
        if not sim.runtime._tasks:
            return
        await asyncio.sleep(0.05)


async def _settle(sim: Simulation) -> None:
    for _ in range(100):
        if not sim.runtime._tasks and not sim.runtime.calls:
            return
        await asyncio.sleep(0.05)


async def test_duplicate_connect_is_answered_once(models: Models) -> None:
    async with Simulation.start(models) as sim:
        sim.meta.delivery.duplicate = True
        user = SimulatedUser(transcriber=models.transcriber)
        try:
            sim_call, _ = await sim.place_call(user)
            await asyncio.sleep(0.3)
            assert sim_call.actions == ["pre_accept", "accept"]
            events = [e.event for e in sim.runtime.store.list_events(sim_call.id)]
            assert events.count("connect") == 1
            await sim.meta.user_hangup(sim_call.id)
            await _settle(sim)
        finally:
            await user.close()


async def test_terminate_before_connect_is_not_answered(models: Models) -> None:
    async with Simulation.start(models) as sim:
        now = str(int(time.time()))
        call_id = "wacid.LATE-CONNECT-1"
        terminate = {"id": call_id, "from": USER, "to": "15550001111", "event": "terminate",
                     "timestamp": now, "direction": "USER_INITIATED", "status": "COMPLETED"}
        connect = {"id": call_id, "from": USER, "to": "15550001111", "event": "connect", "timestamp": now,
                   "direction": "USER_INITIATED", "session": {"sdp_type": "offer", "sdp": "v=0\r\n"}}
        assert (await sim.meta.send_webhook(_call_payload(sim, terminate))).status_code == 200
        assert (await sim.meta.send_webhook(_call_payload(sim, connect))).status_code == 200
        await _settle(sim)
        assert not [r for r in sim.meta.requests if r.call_id == call_id]
        assert call_id not in sim.runtime.calls


async def test_stale_connect_is_dropped(models: Models) -> None:
    async with Simulation.start(models, stale_event_s=60) as sim:
        call_id = "wacid.STALE-1"
        connect = {"id": call_id, "from": USER, "to": "15550001111", "event": "connect",
                   "timestamp": str(int(time.time()) - 600), "direction": "USER_INITIATED",
                   "session": {"sdp_type": "offer", "sdp": "v=0\r\n"}}
        assert (await sim.meta.send_webhook(_call_payload(sim, connect))).status_code == 200
        await _settle(sim)
        assert not [r for r in sim.meta.requests if r.call_id == call_id]


async def test_after_hours_call_is_rejected_and_recorded_as_missed(models: Models) -> None:
    today = time.strftime("%Y-%m-%d", time.gmtime())
    hours = {"timezone": "UTC", "weekly": {d: ["00:00-23:59"] for d in
             ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")},
             "holidays": [today]}
    async with Simulation.start(models, business_hours=hours) as sim:
        user = SimulatedUser(transcriber=models.transcriber)
        try:
            offer = await user.make_offer()
            sim_call = await sim.meta.place_user_call(wa_id=USER, offer_sdp=offer)
            await asyncio.wait_for(sim_call.ended.wait(), 10)
            assert sim_call.actions == ["reject"]
            await _settle(sim)
            [missed] = sim.runtime.store.list_contact_events(user=USER)
            assert missed.reason == "after_hours"
            assert missed.detail["rule"] == "hours.holiday"
            record = sim.runtime.store.get_call(sim_call.id)
            assert record is not None and record.outcome == "after_hours"
            # A user call opens the customer-service window even when it is not answered (spec §8.1).
            assert sim.runtime.ledger.user_state(USER).window_refreshed_at is not None
        finally:
            await user.close()


async def test_call_over_capacity_is_rejected_not_half_answered(models: Models) -> None:
    async with Simulation.start(models, max_concurrent_calls=1) as sim:
        first, second = SimulatedUser(transcriber=models.transcriber), SimulatedUser(transcriber=models.transcriber)
        try:
            call1, _ = await sim.place_call(first)
            offer = await second.make_offer()
            call2 = await sim.meta.place_user_call(wa_id="15550003333", offer_sdp=offer)
            await asyncio.wait_for(call2.ended.wait(), 10)
            assert call2.actions == ["reject"]
            assert call1.actions == ["pre_accept", "accept"]
            await _handled(sim)
            [missed] = sim.runtime.store.list_contact_events(user="15550003333")
            assert missed.reason == "over_capacity"
            await sim.meta.user_hangup(call1.id)
            await _settle(sim)
        finally:
            await first.close()
            await second.close()


async def test_outbound_call_from_a_us_number_is_refused(models: Models) -> None:
    """Meta offers no business-initiated calls from US numbers (spec §8): refused here, naming the rule."""
    async with Simulation.start(models, business_number="15550001111") as sim:
        with pytest.raises(Refused) as refused:
            await sim.runtime.place_call("447700900123")
        assert refused.value.refusal.rule == "bic.country_blocked"
        assert refused.value.refusal.meta_error_code == 138013


async def test_outbound_call_without_permission_is_refused_before_meta(models: Models) -> None:
    async with Simulation.start(models, business_number="447700900111") as sim:
        with pytest.raises(Refused) as refused:
            await sim.runtime.place_call("447700900123")
        assert refused.value.refusal.rule == "permission.none"
        assert refused.value.refusal.meta_error_code == 138006
        assert not [r for r in sim.meta.requests if r.action == "connect"]


async def test_permission_request_needs_an_open_window(models: Models) -> None:
    async with Simulation.start(models, business_number="447700900111") as sim:
        with pytest.raises(Refused) as refused:
            await sim.runtime.request_permission("447700900123")
        assert refused.value.refusal.rule == "permission.window_closed"


async def test_restart_on_the_same_database_keeps_everything(models: Models, tmp_path: Any) -> None:
    data_dir = str(tmp_path / "data")
    async with Simulation.start(models, data_dir=data_dir) as sim:
        user = SimulatedUser(transcriber=models.transcriber)
        try:
            sim_call, _ = await sim.place_call(user)
            await user.listen(timeout=20)
            reply = {"from": USER, "id": "wamid.REPLY1", "timestamp": str(int(time.time())), "type": "interactive",
                     "interactive": {"type": "call_permission_reply", "call_permission_reply": {
                         "response": "accept", "is_permanent": True, "response_source": "user_action"}}}
            assert (await sim.meta.send_webhook(_call_payload(sim, reply, field="messages"))).status_code == 200
            await sim.meta.user_hangup(sim_call.id)
            await _settle(sim)
        finally:
            await user.close()
        live = sim.runtime.store.get_call(sim_call.id)
        assert live is not None and live.state == "ended"
        # A call that was live when the process died: written as live, never closed.
        from agent.store.base import CallRecord

        sim.runtime.store.save_call(CallRecord(id="wacid.WAS-LIVE", direction="USER_INITIATED", state="active",
                                               from_number=USER))
    store = SqliteStore.in_data_dir(data_dir)
    try:
        settings = sim.settings
        runtime = Runtime(settings, models, store=store)
        record = store.get_call(sim_call.id)
        assert record is not None
        assert record.outcome == "answered" and record.duration_s is not None and record.cost is not None
        assert record.transcript and record.transcript[0]["who"] == "bot"
        events = [e.event for e in store.list_events(sim_call.id)]
        assert events[0] == "connect" and "terminate" in events
        state = runtime.ledger.user_state(USER)
        assert str(state.permission) == "permanent"
        assert state.window_refreshed_at is not None
        was_live = store.get_call("wacid.WAS-LIVE")
        assert was_live is not None and was_live.state == "ended" and was_live.end_reason == "ended_by_restart"
        await runtime.aclose()
    finally:
        store.close()


async def test_settings_updates_are_obeyed_and_survive_a_restart(models: Models, tmp_path: Any) -> None:
    """account_settings_update (spec §5): calling off → 138000 first; a BIC restriction → 138014 first."""
    data_dir = str(tmp_path / "data")

    def settings_payload(sim: Simulation, calling: dict[str, Any]) -> dict[str, Any]:
        value = {"phone_number_settings": {"calling": calling}}
        change = {"field": "account_settings_update", "value": value}
        return {"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [change]}]}

    async with Simulation.start(models, business_number="447700900111", data_dir=data_dir) as sim:
        reply = {"from": "34600111222", "id": "wamid.GRANT", "timestamp": str(int(time.time())),
                 "type": "interactive", "interactive": {"type": "call_permission_reply", "call_permission_reply": {
                     "response": "accept", "is_permanent": True, "response_source": "user_action"}}}
        await sim.meta.send_webhook(_call_payload(sim, reply, field="messages"))
        await sim.meta.send_webhook(settings_payload(sim, {"status": "DISABLED"}))
        with pytest.raises(Refused) as refused:
            await sim.runtime.place_call("34600111222")
        assert refused.value.refusal.rule == "calling.disabled" and refused.value.refusal.meta_error_code == 138000
        until = int(time.time()) + 3600
        restricted = {"status": "ENABLED", "restrictions": {"restrictions_list": [
            {"type": "RESTRICTED_BUSINESS_INITIATED_CALLING", "reason": "low pickup rate", "expiration": until}]}}
        await sim.meta.send_webhook(settings_payload(sim, restricted))
        with pytest.raises(Refused) as refused:
            await sim.runtime.place_call("34600111222")
        assert refused.value.refusal.rule == "bic.restricted" and refused.value.refusal.meta_error_code == 138014
    store = SqliteStore.in_data_dir(data_dir)
    try:
        runtime = Runtime(sim.settings, models, store=store)
        with pytest.raises(Refused) as refused:
            await runtime.place_call("34600111222")
        assert refused.value.refusal.rule == "bic.restricted"
        await runtime.aclose()
    finally:
        store.close()
