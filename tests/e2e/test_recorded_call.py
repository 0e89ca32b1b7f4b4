"""A recorded call through the real stack (issue 15, recordings): the caller hears the notice first, the file
grows during the call, and afterwards holds the caller on the left channel and the bot on the right, on one
timeline; the calls API downloads it and deletes it, and the runtime's retention deletes an old one.

Each channel of the finished file is transcribed with the bundled Whisper: the caller's words must be on the
left only, the bot's on the right only.
"""

from __future__ import annotations

import asyncio
import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import pytest

from agent.runtime import Models
from agent.simulator.caller import SimulatedUser
from agent.simulator.session import Simulation
from agent.store.base import RecordingRecord
from tests.e2e.test_faults import nothing_left_running
from tests.wer import normalise, wer

pytestmark = pytest.mark.e2e

NOTICE = "This call is recorded."
GREETING = "Hello. How can I help?"
CALLER = "I have a question about my order."
GOODBYE = "Thank you. Goodbye."
TOKEN = "recordings-e2e-token"

FLOW = f"""
name: recorded_e2e
start: hello
fallback: ["Sorry?"]
recording: {{enabled: true, announce: "{NOTICE}"}}
nodes:
  hello:
    say: "{GREETING}"
    intents:
      - name: order
        examples: ["I have a question about my order"]
        keywords: [order]
        goto: bye
  bye:
    say: "{GOODBYE}"
    end: true
"""


async def _finished(sim: Simulation, call_id: str) -> dict[str, Any]:
    for _ in range(300):
        if call_id in sim.runtime.finished:
            return sim.runtime.finished[call_id]
        await asyncio.sleep(0.05)
    raise AssertionError("the call never ended")


def _read(path: Path) -> tuple[str, np.ndarray]:
    """The file's codec and its channels at 16 kHz (what Whisper wants), float in int16 range."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.channels == 2
        resampler = av.AudioResampler(format="s16p", layout="stereo", rate=16000)
        parts = [out.to_ndarray() for f in container.decode(stream) for out in resampler.resample(f)]
        return stream.codec_context.name, np.concatenate(parts, axis=1)


def _onset(channel: np.ndarray, after_s: float = 0.0, rate: int = 16000) -> float:
    """The first 20 ms window after `after_s` loud enough to be speech."""
    win = rate // 50
    frames = channel[: channel.size // win * win].reshape(-1, win).astype(np.float64)
    loud = np.flatnonzero(np.sqrt(np.mean(frames**2, axis=1)) > 300)
    loud = loud[loud * win / rate >= after_s]
    assert loud.size, "no speech on this channel"
    return float(loud[0] * win / rate)


async def test_a_recorded_call_is_announced_streamed_to_disk_split_by_side_and_served(
    models: Models, tmp_path: Path
) -> None:
    flow_file = tmp_path / "recorded_e2e.yaml"
    flow_file.write_text(FLOW, encoding="utf-8")
    threads_before = {t.ident for t in threading.enumerate()}
    async with Simulation.start(models, flow=str(flow_file), api_token=TOKEN) as sim:
        user = SimulatedUser(transcriber=models.transcriber, synthesizer=models.synthesizer)
        try:
            sim_call, _ = await sim.place_call(user)
            opening = await user.listen(timeout=25, quiet_s=1.0)
            path = Path(sim.runtime.recordings._live[sim_call.id].path)
            size_during = path.stat().st_size
            await user.say(CALLER)
            goodbye = await user.listen(timeout=20, quiet_s=1.0)
            record = await _finished(sim, sim_call.id)
            async with httpx.AsyncClient(base_url=sim.app_url, headers={"Authorization": f"Bearer {TOKEN}"}) as api:
                detail = (await api.get(f"/v1/calls/{sim_call.id}")).json()
                downloaded = await api.get(f"/v1/calls/{sim_call.id}/recording")
                file_bytes = path.read_bytes()
                deleted = await api.delete(f"/v1/calls/{sim_call.id}/recording")
                after = (await api.get(f"/v1/calls/{sim_call.id}")).json()
                again = await api.get(f"/v1/calls/{sim_call.id}/recording")
                codec, pcm = _read_bytes(tmp_path, downloaded.content)
            swept = await _retention_sweeps_an_old_copy(sim, path, downloaded.content)
        finally:
            await user.close()

    # The caller heard the notice before the greeting, then the flow went on as usual.
    assert wer(f"{NOTICE} {GREETING}", opening) <= 0.3, opening
    assert normalise(opening).startswith("this call is recorded"), opening
    assert wer(GOODBYE, goodbye) <= 0.3, goodbye

    # Written as the call went: a playable part of the file was on disk after the opening, and it grew.
    assert size_during > 0
    info = record["recording"]
    assert info is not None and info["path"] == str(path)
    assert info["bytes"] == len(file_bytes) > size_during
    assert 3.0 < info["duration_s"] < 60.0
    assert detail["recording"]["duration_s"] == info["duration_s"] and detail["recording"]["bytes"] == info["bytes"]

    # Served with the bearer token, as it is on disk; then deleted, file and reference.
    assert downloaded.status_code == 200 and downloaded.headers["content-type"] == "audio/ogg"
    assert downloaded.content == file_bytes
    assert deleted.status_code == 204 and not path.exists()
    assert after["recording"] is None and again.status_code == 404

    # Nothing of the call, its recording or the retention task is left running.
    await nothing_left_running(threads_before)

    # The runtime's retention (30 days by default) deleted a recording made 40 days ago, file and reference.
    assert swept

    # Stereo Opus: the caller on the left, the bot on the right, nothing of either on the other side.
    assert codec == "opus"
    left, right = pcm[0], pcm[1]
    heard_left = await models.transcriber.transcribe(left.astype(np.int16))
    heard_right = await models.transcriber.transcribe(right.astype(np.int16))
    assert wer(CALLER, heard_left) <= 0.3, heard_left
    assert wer(f"{NOTICE} {GREETING} {GOODBYE}", heard_right) <= 0.3, heard_right
    assert "recorded" not in normalise(heard_left) and "order" not in normalise(heard_right)
    # One timeline: the caller spoke after the opening ended and the goodbye came after the caller.
    bot_starts = _onset(right)
    caller_starts, caller_ends = _onset(left), _offset(left)
    goodbye_starts = _onset(right, after_s=caller_starts)
    assert bot_starts < 1.5, bot_starts  # the notice starts as media opens, and so does the recording
    assert caller_starts > bot_starts + 2.0, (bot_starts, caller_starts)
    assert 1.0 < caller_ends - caller_starts < 5.0, (caller_starts, caller_ends)
    assert caller_ends - 0.2 < goodbye_starts < caller_ends + 3.0, (caller_ends, goodbye_starts)


async def _retention_sweeps_an_old_copy(sim: Simulation, path: Path, content: bytes) -> bool:
    """The same recording as if made 40 days ago (its reference's start and its file's mtime): the runtime's own
    retention deletes it at its next sweep, which is run here rather than waited for."""
    old = path.with_name("old-call.ogg")
    old.write_bytes(content)
    then = datetime.now(UTC) - timedelta(days=40)
    os.utime(old, (then.timestamp(), then.timestamp()))
    store = sim.runtime.store
    store.save_recording(RecordingRecord(call_id="wacid.OLD", path=str(old), started_at=then, duration_s=5.0))
    await sim.runtime.recordings.sweep()
    return not old.exists() and store.get_recording("wacid.OLD") is None


def _offset(channel: np.ndarray, rate: int = 16000) -> float:
    """The end of the last 20 ms window loud enough to be speech."""
    win = rate // 50
    frames = channel[: channel.size // win * win].reshape(-1, win).astype(np.float64)
    loud = np.flatnonzero(np.sqrt(np.mean(frames**2, axis=1)) > 300)
    assert loud.size, "no speech on this channel"
    return float((loud[-1] + 1) * win / rate)


def _read_bytes(tmp_path: Path, content: bytes) -> tuple[str, np.ndarray]:
    copy = tmp_path / "downloaded.ogg"
    copy.write_bytes(content)
    return _read(copy)
