"""A whole WhatsApp call through the real stack: signed webhooks, Graph API, WebRTC, VAD, STT, flow, TTS.

The caller is the simulated WhatsApp user; everything it "hears" went through Opus over loopback and was
transcribed on its side, so these checks are on what a real caller would hear.
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading

import pytest

from agent.dialogue.flow import load_flow
from agent.runtime import Models
from agent.simulator.caller import SimulatedUser
from agent.simulator.session import DEFAULT_LINES, Line, Simulation, run_call
from tests.wer import best_wer, wer, wer_within

pytestmark = pytest.mark.e2e


def _open_sockets() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                count += 1
        except OSError:
            continue
    return count


def _flow_lines(node: str) -> str:
    flow = load_flow("prompts/demo.yaml")
    return " ".join(flow.nodes[node].say)


async def test_default_call_caller_hears_the_flow_and_bot_hangs_up(models: Models) -> None:
    threads_before = {t.ident for t in threading.enumerate()}
    sockets_before = _open_sockets()

    result = await run_call(models, [Line(text=t) for t in DEFAULT_LINES])

    said = [text for who, text, _ in result.conversation.entries if who == "caller"]
    assert said == DEFAULT_LINES
    # What the caller heard after each of its lines matches the flow (WER ≤ 0.2).
    greeting, order_heard, goodbye_heard = result.replies
    # The greeting names the caller; Whisper on the caller's side may spell the name (or "billing") its own way.
    greeting_ref = _flow_lines("welcome").split(",", 1)[1] + " " + _flow_lines("menu")
    assert wer_within(greeting_ref, greeting) <= 0.25, (greeting_ref, greeting)
    order_reply = _flow_lines("order_status") + " " + _flow_lines("anything_else")
    assert wer(order_reply, order_heard) <= 0.2, (order_reply, order_heard)
    # "No, that's all. Goodbye." may be taken as the "no" answer or as the global goodbye intent; both end at
    # the goodbye node. A caller who hung up on no_match or agent would hear another line: that is a failure.
    goodbyes = [_flow_lines("goodbye")]
    assert best_wer(goodbyes, goodbye_heard) <= 0.2, (goodbyes, goodbye_heard)

    # The bot understood the caller (its own transcript, from the caller's real audio).
    summary = result.call_summary
    assert summary is not None
    caller_as_heard = [e["text"] for e in summary["transcript"] if e["who"] == "caller"]
    assert len(caller_as_heard) == 2
    for ref, hyp in zip(DEFAULT_LINES, caller_as_heard, strict=True):
        assert wer(ref, hyp) <= 0.2, (ref, hyp)

    # The bot ended the call with terminate, and Meta's side saw it end.
    assert summary["end_reason"] == "bot_ended"
    assert result.ended_by == "bot"
    assert result.sim_call.actions == ["pre_accept", "accept", "terminate"]
    assert result.sim_call.end_status == "COMPLETED"
    assert all(turn.voice_to_voice is not None for turn in result.conversation.turns)
    # Each line's speech onset and end are stamped when those frames left the phone, in that order.
    for turn in result.conversation.turns:
        assert turn.first_voiced_sent is not None
        assert 0.5 < turn.last_voiced_sent - turn.first_voiced_sent < 5.0

    # Nothing left behind: tasks, threads (beyond the shared model pool), sockets.
    await asyncio.sleep(0.2)
    gc.collect()
    leftover_tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert leftover_tasks == []
    # Allowed: the shared inference pool, and the event loop's own default executor (aiortc encodes Opus
    # there); both are bounded and shared by all calls, and the loop shuts its pool down when it closes.
    # tqdm's monitor is one daemon thread per process, started by faster-whisper's first decode.
    new_threads = [
        t
        for t in threading.enumerate()
        if t.ident not in threads_before and not t.name.startswith(("infer", "asyncio", "tqdm_monitor"))
    ]
    assert new_threads == []
    assert _open_sockets() <= sockets_before


async def test_caller_hangs_up_mid_call_and_everything_is_closed(models: Models) -> None:
    async with Simulation.start(models) as sim:
        user = SimulatedUser(transcriber=models.transcriber, synthesizer=models.synthesizer)
        try:
            sim_call, _ = await sim.place_call(user)
            await user.listen(timeout=20)
            call = sim.runtime.calls[sim_call.id]
            await sim.meta.user_hangup(sim_call.id)
            await asyncio.wait_for(call.ended.wait(), 10)
            await call.wait_closed()
            assert call.end_reason == "remote_completed"
            assert sim_call.id not in sim.runtime.calls
            assert sim.runtime.finished[sim_call.id]["end_reason"] == "remote_completed"
            # The bot must not send terminate for a call the user already ended.
            assert "terminate" not in sim_call.actions
        finally:
            await user.close()
