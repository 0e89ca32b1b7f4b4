"""LLM turns over a real call: streamed sentences in order, a spoken fallback on timeout, tools that act.

The LLM is a local OpenAI-compatible server (scripted); everything else is the real stack.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.conversation import SORRY_LLM
from agent.runtime import Models
from agent.simulator.caller import SimulatedUser
from agent.simulator.llm_server import Rule, ScriptedCall, ScriptedLlm, running_llm_server
from agent.simulator.session import Simulation
from tests.wer import normalise, wer

pytestmark = pytest.mark.e2e

HOURS = "We open at nine in the morning. We close at six in the evening."
FLOW = """
name: llm_shop
start: hello
nodes:
  hello:
    say: "Hello, this is the shop assistant. How can I help?"
    next: assistant
  assistant:
    llm:
      prompt: "You are the shop's assistant. Answer in at most two short sentences."
      transitions: [goodbye]
  goodbye:
    say: "Goodbye."
    end: true
"""
RULES = [
    # The test is about streaming, not recognition: Whisper tiny sometimes hears "hours" as "now is".
    Rule(match=re.compile(r"hours|open", re.I), text=HOURS, token_delay_s=0.04),
    Rule(match="address", hang=True),
    Rule(match="bye", text="Thank you for calling. Goodbye!", tool_calls=[ScriptedCall("end_call", {})]),
]


@pytest.fixture
async def llm_url() -> AsyncIterator[str]:
    async with running_llm_server(ScriptedLlm(RULES)) as url:
        yield url


@pytest.fixture
def flow_file(tmp_path: Path) -> str:
    path = tmp_path / "llm_shop.yaml"
    path.write_text(FLOW, encoding="utf-8")
    return str(path)


async def test_llm_answer_streams_two_sentences_heard_in_order(
    models: Models, flow_file: str, llm_url: str
) -> None:
    async with Simulation.start(models, flow=flow_file, llm_base_url=llm_url, llm_timeout_s=1.5) as sim:
        user = SimulatedUser(transcriber=models.transcriber, synthesizer=models.synthesizer)
        try:
            await sim.place_call(user)
            await user.listen(timeout=20)
            await user.say("What are your opening hours?")
            heard = await user.listen(timeout=20, quiet_s=1.5)
        finally:
            await user.close()
        text = normalise(heard)
        assert wer(HOURS, heard) <= 0.3, heard
        assert text.index("open") < text.index("close"), heard


async def test_llm_timeout_gives_a_spoken_fallback_quickly(models: Models, flow_file: str, llm_url: str) -> None:
    async with Simulation.start(models, flow=flow_file, llm_base_url=llm_url, llm_timeout_s=1.0) as sim:
        user = SimulatedUser(transcriber=models.transcriber, synthesizer=models.synthesizer)
        try:
            await sim.place_call(user)
            await user.listen(timeout=20)
            turn = await user.say("What is your address?")
            heard = await user.listen(timeout=20, quiet_s=1.5)
        finally:
            await user.close()
        assert wer(SORRY_LLM, heard) <= 0.3, heard
        # Never dead air: the fallback starts within 2 s of the end of the caller's speech.
        assert turn.voice_to_voice is not None and turn.voice_to_voice < 2.0, turn.voice_to_voice


async def test_llm_tool_call_ends_the_call(models: Models, flow_file: str, llm_url: str) -> None:
    async with Simulation.start(models, flow=flow_file, llm_base_url=llm_url) as sim:
        user = SimulatedUser(transcriber=models.transcriber, synthesizer=models.synthesizer)
        try:
            sim_call, _ = await sim.place_call(user)
            await user.listen(timeout=20)
            await user.say("Thanks, that's all, bye.")
            await asyncio.wait_for(sim_call.ended.wait(), 20)
            heard = await user.listen(timeout=5, quiet_s=0.5)
        finally:
            await user.close()
        assert "goodbye" in normalise(heard), heard
        assert sim_call.actions[-1] == "terminate"  # the bot hung up, as the tool asked
        deadline = time.monotonic() + 5
        while sim_call.id not in sim.runtime.finished and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert sim.runtime.finished[sim_call.id]["end_reason"] == "bot_ended"
