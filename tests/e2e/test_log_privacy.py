"""Callers' words and numbers stay out of the operator's log at INFO: only DEBUG (opt-in) carries them.

Logs are shipped to aggregators and kept for months; a caller reading out an order number or a date of birth
must not end up there by default.
"""

from __future__ import annotations

import logging

import pytest

from agent.runtime import Models
from agent.simulator.caller import SimulatedUser
from agent.simulator.session import USER_WA_ID, Simulation

pytestmark = pytest.mark.e2e


async def test_a_call_logs_no_caller_words_or_number_at_info(models: Models, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
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
