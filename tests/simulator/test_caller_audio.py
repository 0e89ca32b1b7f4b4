"""A natural caller's audio: real piper speech, pauses as long as written, room noise at the level asked for.

Measured on the rendered audio and, for the noise, on what a phone's Opus encoder really sends (decoded
again), since that is what the bot's VAD hears.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from agent.media.opus_out import FRAME_SAMPLES, OpusFrameEncoder
from agent.simulator.caller_script import Say, VoiceStyle, parse_markup
from agent.simulator.caller_voice import PiperCallerVoice, RenderedLine, render_line, stretch_rng, voiced_gaps
from agent.simulator.room_noise import NoisyMicrophone, RoomNoise, dbfs

RATE = 48000


@pytest.fixture(scope="module")
def voice() -> Iterator[PiperCallerVoice]:
    yield PiperCallerVoice()


async def render(voice: PiperCallerVoice, text: str, *, seed: int = 1, style: VoiceStyle | None = None) -> RenderedLine:
    return await render_line(Say(tuple(parse_markup(text))), voice, style or VoiceStyle(), stretch_rng(seed, 0))


async def test_pauses_are_as_long_as_written_and_digitally_silent(voice: PiperCallerVoice) -> None:
    line = await render(voice, "I'd like to book [pause 1.0] an appointment [pause 0.4] for Tuesday")
    pauses = [s for s in line.spans if s.kind == "pause"]
    assert [round(p.end_s - p.start_s, 3) for p in pauses] == [1.0, 0.4]
    for pause in pauses:
        assert not line.pcm[round(pause.start_s * RATE) : round(pause.end_s * RATE)].any()
    # Heard as a listener would: the quiet between the words, piper's own padding trimmed away.
    gaps = voiced_gaps(line.pcm, min_gap_s=0.25)
    assert len(gaps) == 2, gaps
    assert 1.0 <= gaps[0] <= 1.08 and 0.4 <= gaps[1] <= 0.48, gaps
    # No pause at the start or end of the line: it begins and ends with speech.
    loud = np.flatnonzero(np.abs(line.pcm.astype(np.int32)) > 200)
    assert loud[0] / RATE < 0.05 and (line.pcm.size - loud[-1]) / RATE < 0.05


async def test_a_filler_is_its_own_drawn_out_stretch(voice: PiperCallerVoice) -> None:
    line = await render(voice, "so [um] yes")
    kinds = [s.kind for s in line.spans]
    assert kinds == ["speech", "filler", "speech"]
    filler = line.spans[1]
    plain = await render(voice, "um")
    assert filler.end_s - filler.start_s > 1.3 * plain.duration_s


async def test_speaking_rate_follows_the_length_scale(voice: PiperCallerVoice) -> None:
    text = "Could I move my check up to Thursday afternoon"
    normal = await render(voice, text, style=VoiceStyle(length_scale=1.0))
    slow = await render(voice, text, style=VoiceStyle(length_scale=1.3))
    # piper stretches phoneme durations by the scale; the trimmed edges and short pauses stretch less.
    assert 1.1 <= slow.duration_s / normal.duration_s <= 1.4, (normal.duration_s, slow.duration_s)


async def test_the_same_seed_gives_the_same_audio(voice: PiperCallerVoice) -> None:
    style = VoiceStyle(length_scale=1.0, variation=0.1)
    text = "Tuesday, [pause 0.5] no, Wednesday"
    first = await render(voice, text, seed=7, style=style)
    again = await render(voice, text, seed=7, style=style)
    other = await render(voice, text, seed=8, style=style)
    assert np.array_equal(first.pcm, again.pcm)
    assert first.pcm.size != other.pcm.size  # the seed picks each stretch's pace


@pytest.mark.parametrize("level", [-50.0, -40.0, -30.0])
@pytest.mark.parametrize("color", ["pink", "white", "brown"])
def test_room_noise_has_the_level_asked_for(level: float, color: str) -> None:
    room = RoomNoise(level, color, seed=3)
    assert abs(dbfs(room.take(RATE * 3)) - level) < 0.3
    # The loop has no seam: the level holds over any stretch, also across the buffer's end.
    assert abs(dbfs(room.take(RATE * 9)) - level) < 0.3


def test_room_noise_is_seeded() -> None:
    assert np.array_equal(RoomNoise(-40, seed=1).take(4800), RoomNoise(-40, seed=1).take(4800))
    assert not np.array_equal(RoomNoise(-40, seed=1).take(4800), RoomNoise(-40, seed=2).take(4800))


def _decode(packets: list[av.Packet]) -> np.ndarray:
    decoder = av.CodecContext.create("libopus", "r")
    decoder.sample_rate = RATE
    decoder.layout = "mono"
    out: list[np.ndarray] = []
    for packet in packets:
        for frame in decoder.decode(packet):
            samples = frame.to_ndarray()
            out.append(samples.mean(axis=0) if samples.ndim == 2 and samples.shape[0] > 1 else samples.reshape(-1))
    pcm = np.concatenate(out)
    if pcm.dtype.kind == "f":
        pcm = pcm * 32768.0
    return pcm.astype(np.float64)


async def test_noise_goes_out_under_speech_in_pauses_and_between_lines(voice: PiperCallerVoice) -> None:
    """What the caller's phone really sends: the line through the noisy microphone and Opus, decoded."""
    level = -40.0
    line = await render(voice, "I'd like to book [pause 1.0] for Tuesday")
    mic = NoisyMicrophone(RoomNoise(level, "pink", seed=5))
    idle_frames = 50  # one second of the caller saying nothing before the line
    frames: list[np.ndarray | None] = [None] * idle_frames
    padded = np.concatenate([line.pcm, np.zeros(-line.pcm.size % FRAME_SAMPLES, dtype=np.int16)])
    frames += list(padded.reshape(-1, FRAME_SAMPLES))
    packets = [mic.packet(f, i * FRAME_SAMPLES) for i, f in enumerate(frames)]
    heard = _decode(packets)
    skip = 10 * FRAME_SAMPLES  # the decoder's first frames settle
    idle = heard[skip : idle_frames * FRAME_SAMPLES]
    pause = next(s for s in line.spans if s.kind == "pause")
    start = idle_frames * FRAME_SAMPLES + round((pause.start_s + 0.1) * RATE)
    in_pause = heard[start : start + round(0.8 * RATE)]
    speech = line.spans[0]
    words = heard[idle_frames * FRAME_SAMPLES : idle_frames * FRAME_SAMPLES + round(speech.end_s * RATE)]
    # Opus at 32 kbit/s takes a little off the noise's top end (about 2 dB of pink noise): the level the
    # bot hears stays within 3 dB of the one asked for, in the idle time and inside the line's pause alike.
    assert abs(dbfs(idle) - level) < 3.0, dbfs(idle)
    assert abs(dbfs(in_pause) - level) < 3.0, dbfs(in_pause)
    assert abs(dbfs(idle) - dbfs(in_pause)) < 1.0
    assert dbfs(words) > level + 12, dbfs(words)


def test_without_a_room_the_phone_sends_digital_silence() -> None:
    """The reference the noisy microphone is compared with: a plain encoder sends canned silence."""
    encoder = OpusFrameEncoder()
    packets = [encoder.packet(None, i * FRAME_SAMPLES) for i in range(20)]
    assert encoder.encoded == 0 and not _decode(packets).any()


async def test_rendered_speech_is_kept_on_disk_between_runs(tmp_path: Path) -> None:
    first = PiperCallerVoice(cache_dir=tmp_path)
    line = await render(first, "Four eight [pause 0.5] two nine one")
    assert len(list(tmp_path.glob("*.npy"))) == 2
    second = PiperCallerVoice(cache_dir=tmp_path)
    second._speak_sync = None  # type: ignore[assignment,method-assign]  # a second run must not synthesise
    again = await render(second, "Four eight [pause 0.5] two nine one")
    assert np.array_equal(line.pcm, again.pcm)
