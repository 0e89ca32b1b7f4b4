"""Fault injection over real calls (issue 14): STT, TTS, LLM and Graph fail or hang, a peer stops sending
media, a call reaches its maximum length.

Everything is the real stack (signed webhooks, Graph API, WebRTC over loopback, Opus, Whisper, piper) except
the one part made to fail. The caller hears either a spoken fallback within 2 s of the end of its turn, or
the call ends cleanly (terminate seen by Meta); afterwards no task or thread is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import re
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.call import MAX_CALL_GOODBYE, Call
from agent.conversation import SORRY_HEARING, SORRY_LLM, SORRY_TECHNICAL
from agent.runtime import Models
from agent.simulator.caller import SimulatedUser
from agent.simulator.llm_server import Rule, ScriptedLlm, running_llm_server
from agent.simulator.meta import SimCall
from agent.simulator.session import DEFAULT_LINES, Simulation
from agent.speech.stt import Transcriber
from agent.speech.tts import Synthesizer
from agent.whatsapp.graph import RetryPolicy
from tests.e2e.test_llm_turns import FLOW as LLM_FLOW
from tests.wer import normalise, wer

pytestmark = pytest.mark.e2e

ORDER_LINE = "I want to check the status of my order."
GOODBYE_LINE = DEFAULT_LINES[1]
FALLBACK_WITHIN_S = 2.0
# The demo flow's two-sentence greeting cost every test here about 4 s of listening; the faults need only a
# question, an answer and a goodbye.
SHORT_FLOW = """
name: faults
start: welcome
global_intents:
  - name: goodbye
    examples: ["goodbye", "no that's all goodbye"]
    keywords: [goodbye, bye]
    goto: goodbye
nodes:
  welcome:
    say: "Hello, how can I help?"
    intents:
      - name: order
        examples: ["I want to check the status of my order", "where is my order"]
        keywords: [order]
        goto: order_status
  order_status:
    say: "It ships tomorrow. Anything else?"
    intents:
      - name: no
        examples: ["no", "no thanks"]
        goto: goodbye
  goodbye:
    say: "Thanks for calling. Goodbye!"
    end: true
"""


class FaultyTranscriber:
    """The bot's STT: the real one until armed, then it raises or never answers."""

    def __init__(self, real: Transcriber, mode: str) -> None:
        self.real, self.mode, self.armed, self.failures = real, mode, False, 0

    async def transcribe(self, audio16k: np.ndarray) -> str:
        if not self.armed:
            return await self.real.transcribe(audio16k)
        self.failures += 1
        if self.mode == "raise":
            raise RuntimeError("injected: whisper crashed")
        await asyncio.sleep(3600)  # a hung pool: only the deadline gets the caller out of it
        return ""


class FaultySynthesizer:
    """The bot's TTS: the real one until armed (the greeting and warm-up), then it raises or hangs."""

    def __init__(self, real: Synthesizer, mode: str) -> None:
        self.real, self.mode, self.armed = real, mode, False
        self.sample_rate = real.sample_rate

    async def stream(self, text: str) -> AsyncIterator[np.ndarray]:
        if self.armed:
            if self.mode == "raise":
                raise RuntimeError("injected: piper crashed")
            await asyncio.sleep(3600)
        async for chunk in self.real.stream(text):
            yield chunk

    async def synthesize(self, text: str) -> np.ndarray:
        chunks = [chunk async for chunk in self.stream(text)]
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)


@dataclass
class Live:
    sim: Simulation
    user: SimulatedUser
    sim_call: SimCall
    call: Call

    async def finished(self, timeout: float = 15.0) -> dict[str, Any]:
        """Wait for both sides to see the end; returns the bot's record of the call."""
        await asyncio.wait_for(self.sim_call.ended.wait(), timeout)
        await asyncio.wait_for(self.call.ended.wait(), timeout)
        await self.call.wait_closed()
        deadline = time.monotonic() + 5
        while self.sim_call.id not in self.sim.runtime.finished and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self.sim.runtime.finished[self.sim_call.id]


@contextlib.asynccontextmanager
async def live_call(
    models: Models,
    *,
    tune: Callable[[Simulation], None] = lambda sim: None,
    bot_models: Models | None = None,
    check_leaks: bool = True,
    **start: Any,
) -> AsyncIterator[Live]:
    """A call answered by the bot (with `bot_models`, default the real ones), greeting heard; afterwards, a
    check that nothing was left running. The caller always listens with the real models."""
    threads_before = {t.ident for t in threading.enumerate()}
    scratch = tempfile.TemporaryDirectory(prefix="wacall-faults-")
    if "flow" not in start:
        start["flow"] = str(Path(scratch.name) / "faults.yaml")
        Path(start["flow"]).write_text(SHORT_FLOW, encoding="utf-8")
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(scratch.cleanup)
        sim = await stack.enter_async_context(Simulation.start(bot_models or models, **start))
        tune(sim)
        user = SimulatedUser(transcriber=models.transcriber, synthesizer=models.synthesizer)
        try:
            sim_call, _ = await sim.place_call(user)
            call = sim.runtime.calls[sim_call.id]
            await user.listen(timeout=20)
            yield Live(sim=sim, user=user, sim_call=sim_call, call=call)
        finally:
            await user.close()
    if check_leaks:
        await nothing_left_running(threads_before)


async def nothing_left_running(threads_before: set[int | None]) -> None:
    await asyncio.sleep(0.2)
    gc.collect()
    leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert leftover == [], leftover
    # As in test_simulated_call: the shared inference pool, the loop's default executor and tqdm's monitor.
    new_threads = [
        t
        for t in threading.enumerate()
        if t.ident not in threads_before and not t.name.startswith(("infer", "asyncio", "tqdm_monitor"))
    ]
    assert new_threads == []


def _models_with(models: Models, *, stt: Transcriber | None = None, tts: Synthesizer | None = None) -> Models:
    return Models(
        transcriber=stt or models.transcriber, synthesizer=tts or models.synthesizer, executor=models.executor
    )


def _fallback_in_time(turn: Any) -> None:
    assert turn.voice_to_voice is not None, "the caller heard nothing after its turn"
    assert turn.voice_to_voice < FALLBACK_WITHIN_S, turn.voice_to_voice


# -- media watchdogs ---------------------------------------------------------------------------------


async def test_peer_that_keeps_ice_alive_but_sends_no_rtp_is_hung_up(models: Models) -> None:
    timeout = 1.5

    def tune(sim: Simulation) -> None:
        sim.runtime.services.no_rtp_timeout_s = timeout

    async with live_call(models, tune=tune) as live:
        # A silent caller still sends packets: the watchdog leaves them alone.
        await asyncio.sleep(timeout + 1.0)
        assert not live.sim_call.ended.is_set()
        # The phone stops sending RTP; ICE (and consent) stay up.
        live.user.peer.pc.getTransceivers()[0].sender.replaceTrack(None)
        stopped = time.monotonic()
        record = await live.finished(timeout=10)
        assert time.monotonic() - stopped < timeout + 2.5  # far sooner than ICE consent (~30 s)
        assert live.user.peer.pc.connectionState == "connected"
    assert record["end_reason"] == "no_media"
    assert live.sim_call.actions[-1] == "terminate"


async def test_a_call_at_its_maximum_length_hears_a_goodbye_and_ends(models: Models) -> None:
    def tune(sim: Simulation) -> None:
        sim.runtime.services.max_call_s = 5.0  # the short greeting is heard well before it

    async with live_call(models, tune=tune) as live:
        heard = await live.user.listen(timeout=15, quiet_s=1.0)
        record = await live.finished()
    assert wer(MAX_CALL_GOODBYE, heard) <= 0.3, heard
    assert record["end_reason"] == "max_duration"
    assert live.sim_call.actions[-1] == "terminate"
    assert live.sim_call.end_status == "COMPLETED"


# -- speech-to-text ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["raise", "hang"])
async def test_stt_failure_is_answered_aloud_then_the_call_ends_cleanly(models: Models, mode: str) -> None:
    stt = FaultyTranscriber(models.transcriber, mode)

    def tune(sim: Simulation) -> None:
        sim.runtime.services.conversation.stt_timeout_s = 0.8
        sim.runtime.services.conversation.max_speech_failures = 2

    async with live_call(models, tune=tune, bot_models=_models_with(models, stt=stt)) as live:
        stt.armed = True
        turn = await live.user.say(ORDER_LINE)
        heard = await live.user.listen(timeout=10, quiet_s=1.0)
        assert wer(SORRY_HEARING, heard) <= 0.3, heard
        _fallback_in_time(turn)
        # Again: two failures in a row end the call, after the recorded apology.
        turn = await live.user.say(ORDER_LINE)
        heard = await live.user.listen(timeout=10, quiet_s=1.0)
        record = await live.finished()
    assert wer(SORRY_TECHNICAL, heard) <= 0.3, heard
    _fallback_in_time(turn)
    assert record["end_reason"] == "speech_failed"
    assert live.sim_call.actions[-1] == "terminate"


# -- text-to-speech ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["raise", "hang"])
async def test_tts_failure_plays_the_recorded_fallback_and_the_call_goes_on(models: Models, mode: str) -> None:
    tts = FaultySynthesizer(models.synthesizer, mode)

    def tune(sim: Simulation) -> None:
        sim.runtime.services.conversation.tts_first_audio_timeout_s = 0.6

    async with live_call(models, tune=tune, bot_models=_models_with(models, tts=tts)) as live:
        tts.armed = True
        turn = await live.user.say(ORDER_LINE)
        heard = await live.user.listen(timeout=10, quiet_s=1.5)
        assert wer(SORRY_TECHNICAL, heard) <= 0.3, heard
        _fallback_in_time(turn)
        assert not live.sim_call.ended.is_set()  # one failure: the call goes on
        tts.armed = False
        await live.user.say(GOODBYE_LINE)
        await live.user.listen(timeout=10, quiet_s=1.0)
        record = await live.finished()
    assert record["end_reason"] == "bot_ended"


# -- LLM -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rule",
    [Rule(match="", status=500), Rule(match="", latency_s=5.0)],
    ids=["http-500", "no-first-token"],
)
async def test_llm_failure_gives_the_spoken_fallback_quickly(models: Models, tmp_path: Path, rule: Rule) -> None:
    flow = tmp_path / "llm_shop.yaml"
    flow.write_text(LLM_FLOW, encoding="utf-8")
    threads_before = {t.ident for t in threading.enumerate()}
    async with running_llm_server(ScriptedLlm([rule])) as url:
        async with live_call(models, flow=str(flow), llm_base_url=url, llm_timeout_s=1.0, check_leaks=False) as live:
            turn = await live.user.say("What is your address?")
            heard = await live.user.listen(timeout=10, quiet_s=1.5)
            assert not live.sim_call.ended.is_set()
    await nothing_left_running(threads_before)
    assert wer(SORRY_LLM, heard) <= 0.3, heard
    _fallback_in_time(turn)


# -- Graph API -----------------------------------------------------------------------------------------

QUICK_ENDING = RetryPolicy(attempts=5, first_backoff_s=0.1, max_backoff_s=0.5, budget_s=6.0, attempt_timeout_s=0.8)


@pytest.mark.parametrize(
    "faults",
    [
        [{"status": 503, "count": 2}],
        [{"status": 429, "retry_after": "0.3"}, {"status": 500}],
        [{"status": 503, "delay_s": 1.3}],  # no answer within the attempt's timeout
    ],
    ids=["5xx", "429-then-5xx", "timeout"],
)
async def test_terminate_is_retried_until_meta_ends_the_call(models: Models, faults: list[dict[str, Any]]) -> None:
    def tune(sim: Simulation) -> None:
        sim.runtime.graph.ending_retry = QUICK_ENDING

    async with live_call(models, tune=tune) as live:
        for fault in faults:
            live.sim.meta.graph_faults.inject("terminate", **fault)
        await live.user.say(GOODBYE_LINE)
        await live.user.listen(timeout=10, quiet_s=1.0)
        record = await live.finished()
    terminates = [r.status for r in live.sim.meta.requests if r.action == "terminate"]
    # A stalled attempt is recorded when Meta finally answers it, after the retry that got through.
    assert terminates.count(200) == 1 and len(terminates) == 1 + sum(f.get("count", 1) for f in faults), terminates
    assert live.sim_call.end_status == "COMPLETED"
    assert record["end_reason"] == "bot_ended"
    assert re.fullmatch(r"(pre_accept, )?accept, terminate", ", ".join(live.sim_call.actions)), live.sim_call.actions
    assert "goodbye" in normalise(" ".join(h.text for h in live.user.heard))
