"""What a call writes to the operator's log: no caller words or numbers at INFO (only DEBUG, opt-in, carries
them), and every line of the call tagged with its call id.

Logs are shipped to aggregators and kept for months; a caller reading out an order number or a date of birth
must not end up there by default, and an operator searching for one call must find all of it.
"""

from __future__ import annotations

import logging

import pytest

from agent.logs import CallIdFilter
from agent.runtime import Models
from agent.simulator.caller import SimulatedUser
from agent.simulator.session import USER_WA_ID, Simulation

pytestmark = pytest.mark.e2e


async def test_a_call_logs_no_caller_words_or_number_at_info(models: Models, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    caplog.handler.addFilter(CallIdFilter())
    async with Simulation.start(models) as sim:
        user = SimulatedUser(transcriber=models.transcriber, synthesizer=models.synthesizer)
        try:
            sim_call, _ = await sim.place_call(user)
            await user.listen(timeout=20)
            await user.say("I am calling about the parcel for Zanzibar.")
            await user.listen(timeout=20)
            await sim.meta.user_hangup(sim_call.id)
            await sim.meta.drain_webhooks()
        finally:
            await user.close()
    agent_lines = [r.getMessage() for r in caplog.records if r.name.startswith("agent.") and "simulator" not in r.name]
    assert agent_lines, "nothing was logged at INFO: the check would prove nothing"
    assert any("turn answered" in line for line in agent_lines), agent_lines
    for line in agent_lines:
        assert USER_WA_ID not in line, line
        assert "zanzibar" not in line.lower() and "parcel" not in line.lower(), line
    per_call = [r for r in caplog.records if r.name in ("agent.conversation", "agent.call", "agent.reply_runner")]
    assert per_call, "no line of the call itself was logged"
    assert {getattr(r, "call_id", None) for r in per_call} == {sim_call.id}, [
        (r.name, getattr(r, "call_id", None), r.getMessage()) for r in per_call
    ]
