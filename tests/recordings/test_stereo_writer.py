"""The recording's stereo file: caller left, bot right, one timeline, real Ogg/Opus read back with PyAV."""

from __future__ import annotations

import asyncio
from pathlib import Path

import av
import numpy as np

from agent.recordings.recorder import CallRecorder, RecordingInfo
from agent.recordings.timeline import RATE, StereoTimeline

FRAME = 960


def tone(seconds: float, hz: float = 440.0, amplitude: int = 8000) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (np.sin(2 * np.pi * hz * t) * amplitude).astype(np.int16)


def caller_frame(mono: np.ndarray) -> av.AudioFrame:
    """What aiortc's Opus decoder hands out: packed stereo s16 at 48 kHz."""
    stereo = np.repeat(mono, 2).reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(stereo, format="s16", layout="stereo")
    frame.sample_rate = RATE
    return frame


def read_back(path: Path) -> tuple[str, int, np.ndarray]:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        name, channels = stream.codec_context.name, stream.codec_context.channels
        resampler = av.AudioResampler(format="s16p", layout="stereo", rate=RATE)
        parts = [out.to_ndarray() for f in container.decode(stream) for out in resampler.resample(f)]
    return name, channels, np.concatenate(parts, axis=1).astype(np.float64)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) if x.size else 0.0


async def record(path: Path, left: np.ndarray | None, right: np.ndarray | None, seconds: float) -> RecordingInfo:
    """Feed both taps in 20 ms steps on a fake clock, as a live call would."""
    now = [100.0]
    recorder = CallRecorder(path, clock=lambda: now[0])
    for i in range(int(seconds * RATE) // FRAME):
        now[0] += FRAME / RATE
        span = slice(i * FRAME, (i + 1) * FRAME)
        if left is not None:
            recorder.caller_frame(caller_frame(left[span]), now[0])
        recorder.sent_frame(None if right is None else right[span], now[0])
    return await recorder.finish()


async def test_a_tone_from_the_caller_is_on_the_left_and_silence_on_the_right(tmp_path: Path) -> None:
    path = tmp_path / "call.ogg"
    info = await record(path, tone(2.0), None, 2.0)
    name, channels, pcm = read_back(path)
    assert (name, channels) == ("opus", 2)
    assert abs(pcm.shape[1] / RATE - 2.0) < 0.1, pcm.shape
    assert abs(info.duration_s - 2.0) < 0.1 and info.complete and info.bytes == path.stat().st_size
    left, right = pcm[0, 4800:-4800], pcm[1, 4800:-4800]
    assert rms(left) > 3000, rms(left)  # the tone's rms is 8000/sqrt(2)
    assert rms(right) < 50, rms(right)


async def test_the_bots_frames_are_on_the_right(tmp_path: Path) -> None:
    path = tmp_path / "call.ogg"
    await record(path, np.zeros(RATE * 2, dtype=np.int16), tone(2.0, hz=300), 2.0)
    _, _, pcm = read_back(path)
    assert rms(pcm[1, 4800:-4800]) > 3000
    assert rms(pcm[0, 4800:-4800]) < 50


async def test_the_file_grows_while_the_call_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "call.ogg"
    now = [0.0]
    recorder = CallRecorder(path, clock=lambda: now[0])
    sizes = []
    for second in range(3):
        for _ in range(50):
            now[0] += 0.02
            recorder.sent_frame(tone(0.02), now[0])
        for _ in range(100):  # the writer thread catches up
            size = path.stat().st_size if path.exists() else 0
            if size > (sizes[-1] if sizes else 0) and second:
                break
            await asyncio.sleep(0.01)
        sizes.append(path.stat().st_size if path.exists() else 0)
    await recorder.finish()
    assert sizes[1] < sizes[2] < path.stat().st_size, sizes


def test_a_silent_caller_is_padded_so_both_sides_stay_in_step() -> None:
    """The caller's phone sends nothing for a second (DTX): their next words land a second later, not at once."""
    timeline = StereoTimeline(0.0)
    out = []
    t = 0.0
    for i in range(150):  # 3 s of bot frames; caller speaks 20 ms at 0.5 s, then again at 2.0 s
        t += 0.02
        if i in (25, 100):
            timeline.push(timeline.left, np.full(FRAME, 1000, dtype=np.int16), t)
        timeline.push(timeline.right, np.zeros(FRAME, dtype=np.int16), t)
        block = timeline.ready(t)
        if block is not None:
            out.append(block)
    rest = timeline.drain()
    if rest is not None:
        out.append(rest)
    pcm = np.concatenate(out)
    loud = np.flatnonzero(pcm[:, 0])
    starts = [loud[0], loud[np.flatnonzero(np.diff(loud) > 1)[0] + 1]]
    assert abs(starts[0] / RATE - 0.5) < 0.03 and abs(starts[1] / RATE - 2.0) < 0.03, [s / RATE for s in starts]
    assert abs(pcm.shape[0] / RATE - 3.0) < 0.05


async def test_a_file_that_cannot_be_written_costs_the_recording_not_the_call(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the recordings folder should be")
    info = await record(blocker / "call.ogg", tone(0.5), None, 0.5)  # every frame still accepted, no hang
    assert info.complete is False and info.bytes == 0


def test_one_side_stopping_never_holds_the_others_audio_in_memory() -> None:
    timeline = StereoTimeline(0.0)
    written = 0
    for i in range(1, 101):  # two seconds of the caller; the bot's track has stopped sending
        timeline.push(timeline.left, np.full(FRAME, 500, dtype=np.int16), i * 0.02)
        block = timeline.ready(i * 0.02)
        written += 0 if block is None else block.shape[0]
    assert abs(written / RATE - (2.0 - 0.3)) < 0.05, written / RATE
    assert timeline.left.pending <= 0.35 * RATE
