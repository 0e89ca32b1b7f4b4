"""`/metrics` scraped over HTTP during and after a real simulated call (WebRTC, STT, flow, TTS): the series an
operator alerts on must move with the call, not only exist."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.runtime import Models
from agent.simulator.caller import SimulatedUser
from agent.simulator.meta import Decision, ScriptedPhone
from agent.simulator.session import Simulation

pytestmark = pytest.mark.e2e

TOKEN = "scrape-token-for-the-e2e-test"
ORDER_LINE = "I want to check the status of my order."


async def scrape(app_url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample as Prometheus would store it, parsed with prometheus-client's own parser."""
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{app_url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def sample(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_move_during_and_after_a_simulated_call(models: Models) -> None:
    async with Simulation.start(models, metrics_token=TOKEN) as sim:
        before = await scrape(sim.app_url)
        assert sample(before, "wacall_live_calls") == 0
        user = SimulatedUser(transcriber=models.transcriber, synthesizer=models.synthesizer)
        try:
            sim_call, _ = await sim.place_call(user)
            await user.listen(timeout=20)
            during = await scrape(sim.app_url)
            assert sample(during, "wacall_live_calls") == 1
            assert sample(during, "wacall_answer_seconds_count", direction="inbound") == 1
            assert sample(during, "wacall_webhook_ack_seconds_count") >= 1
            assert sample(during, "wacall_calls_total", direction="inbound", outcome="answered") == 0

            await user.say(ORDER_LINE)
            await user.listen(timeout=15, quiet_s=1.0)
            call = sim.runtime.calls[sim_call.id]
            await sim.meta.user_hangup(sim_call.id)
            await asyncio.wait_for(call.ended.wait(), 10)
            await call.wait_closed()
        finally:
            await user.close()

        after = await scrape(sim.app_url)
    assert sample(after, "wacall_live_calls") == 0
    assert sample(after, "wacall_calls_total", direction="inbound", outcome="answered") == 1
    for stage in ("transcript", "reply_text", "first_audio", "voice_to_voice"):
        assert sample(after, "wacall_turn_stage_seconds_count", stage=stage) >= 1, stage
    v2v = sample(after, "wacall_turn_stage_seconds_sum", stage="voice_to_voice")
    assert 0 < v2v / sample(after, "wacall_turn_stage_seconds_count", stage="voice_to_voice") < 5
    assert sample(after, "wacall_answer_seconds_count", direction="inbound") == 1
    assert sample(after, "wacall_event_loop_lag_seconds_count") > sample(before, "wacall_event_loop_lag_seconds_count")
    assert sample(after, "wacall_webhook_ack_seconds_count") > sample(during, "wacall_webhook_ack_seconds_count")
    assert sample(after, "wacall_inference_queue_length") >= 0
    assert sample(after, "wacall_graph_errors_total") == 0


async def test_an_outbound_call_counts_its_pickup_time_and_outcome(models: Models) -> None:
    from tests.e2e.test_outbound_call import BUSINESS, USER, _until

    async with Simulation.start(models, business_number=BUSINESS, metrics_token=TOKEN) as sim:
        user = SimulatedUser(transcriber=models.transcriber, synthesizer=models.synthesizer)
        sim.meta.add_user(USER, phone=ScriptedPhone(Decision.ACCEPT, user.answer_business_call, think_s=0.3))
        try:
            await sim.meta.user_sets_profile_permission(USER, grant=True, permanent=True)
            await _until(lambda: str(sim.runtime.ledger.user_state(USER).permission) == "permanent")
            call = await sim.runtime.place_call(USER)
            await user.listen(timeout=20)
            during = await scrape(sim.app_url)
            await sim.meta.user_hangup(call.id)
            await _until(lambda: call.id in sim.runtime.finished)
        finally:
            await user.close()
        after = await scrape(sim.app_url)
    assert sample(during, "wacall_live_calls") == 1
    # From dialling to the user picking up: at least the phone's think time.
    assert sample(during, "wacall_answer_seconds_count", direction="outbound") == 1
    assert sample(during, "wacall_answer_seconds_sum", direction="outbound") >= 0.3
    assert sample(after, "wacall_calls_total", direction="outbound", outcome="answered") == 1
    assert sample(after, "wacall_live_calls") == 0
