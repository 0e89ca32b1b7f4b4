"""A natural caller on a real simulated call: what the bot receives has the script's pauses and room noise.

The line goes through the caller's Opus encoder, WebRTC on 127.0.0.1 and the bot's decoder; the audio is
taken where the bot's VAD takes it (a tap on the call's inbound audio, 16 kHz).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.runtime import Models
from agent.simulator.caller_script import parse_script
from agent.simulator.caller_voice import PiperCallerVoice
from agent.simulator.natural_caller import NaturalCaller
from agent.simulator.room_noise import dbfs
from agent.simulator.session import Simulation

pytestmark = pytest.mark.e2e

FLOW = """
name: tiny
start: hello
nodes:
  hello:
    say: "Hello."
    intents:
      - name: book
        examples: ["I would like to book an appointment"]
        keywords: [book]
        goto: bye
  bye:
    say: "Okay."
    end: true
"""
FRAME = 320  # 20 ms at 16 kHz
LEVEL = -40.0


async def test_the_bot_receives_the_pause_and_the_noise(models: Models, tmp_path: Path) -> None:
    flow = tmp_path / "tiny.yaml"
    flow.write_text(FLOW, encoding="utf-8")
    script = parse_script(
        f"""
        name: one pause
        seed: 4
        noise: {{level_dbfs: {LEVEL}}}
        lines: ["I would like to book [pause 1.0] an appointment please"]
        """
    )
    caller = NaturalCaller(script, reply_timeout_s=6.0, end_wait_s=3.0)
    await caller.prepare(PiperCallerVoice())
    heard: list[tuple[float, np.ndarray]] = []
    async with Simulation.start(models, flow=str(flow)) as sim:
        user = caller.user()
        try:
            sim_call = await caller.connect(sim, user)
            sim.runtime.calls[sim_call.id].add_audio_tap(lambda pcm, t: heard.append((t, pcm.copy())))
            run = await caller.converse(user, sim.meta, sim_call)
        finally:
            await user.close()
    line = run.lines[0]
    assert line.started is not None and line.ended is not None
    assert run.greeting_heard_at is not None and run.greeting_heard_at < line.started
    audio = np.concatenate([pcm for _, pcm in heard])
    levels = np.array([dbfs(audio[i : i + FRAME]) for i in range(0, audio.size - FRAME, FRAME)])
    # Before the line the bot hears the room, not digital silence.
    t0 = heard[0][0]
    before = levels[: int((line.started - t0 - 0.3) / 0.02)]
    assert before.size > 10 and abs(float(np.median(before)) - LEVEL) < 4.0, np.median(before)
    # Inside the line: one stretch of about a second at the room's level, between two stretches of words.
    first = int((line.started - t0 - 0.2) / 0.02)
    last = int((line.ended - t0 + 0.2) / 0.02)
    inside = levels[first:last]
    loud = inside > LEVEL + 12
    quiet_runs: list[int] = []
    run_length = 0
    for is_loud in loud[int(np.argmax(loud)) :]:
        if is_loud:
            if run_length:
                quiet_runs.append(run_length)
            run_length = 0
        else:
            run_length += 1
    longest = max(quiet_runs) * 0.02
    assert 0.9 <= longest <= 1.15, (longest, quiet_runs)
    assert run.ended_by in ("bot", "caller") and run.call_ended_at is not None
