"""Endpointing on real (deterministic) synthesised speech, in silence and in faint noise."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator

import numpy as np
import pytest

from agent.speech.audio import rms_dbfs
from agent.speech.models import resolve_tts_voice
from agent.speech.tts import PiperSynthesizer
from agent.speech.vad import Endpointer, VadConfig, VadEvent

RATE = 16000
SENTENCE = "Thanks for calling the support line, how can I help you today?"
TOL = 0.3
# The endpointer's mechanics are tested at a 400 ms end silence without pause events: the production
# tuning (agent/turn_config.py: 500 ms, pauses at 100 ms) is tested where it is used.
BARE = {"end_silence_ms": 400, "pause_ms": None}


def bare(**overrides: object) -> VadConfig:
    return VadConfig(**{**BARE, **overrides})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def speech() -> Iterator[np.ndarray]:
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    model, config = resolve_tts_voice()
    tts = PiperSynthesizer(model, config, executor=executor, output_rate=RATE, deterministic=True)
    yield tts.synthesize_sync(SENTENCE)
    executor.shutdown(wait=True)


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), dtype=np.int16)


def _with_noise(pcm: np.ndarray, dbfs: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(pcm.size) * 32768 * 10 ** (dbfs / 20)
    return np.clip(pcm.astype(np.float64) + noise, -32768, 32767).astype(np.int16)


def _speech_bounds(pcm: np.ndarray) -> tuple[float, float]:
    """Where the audible speech really is inside the clip (piper adds a little silence around it)."""
    loud = np.nonzero(np.abs(pcm.astype(np.int32)) > 500)[0]
    return loud[0] / RATE, loud[-1] / RATE


def _feed_in_odd_chunks(ep: Endpointer, pcm: np.ndarray, seed: int = 1) -> list[VadEvent]:
    """Network audio arrives in arbitrary sizes; frame alignment must be the Endpointer's job."""
    rng = np.random.default_rng(seed)
    events: list[VadEvent] = []
    i = 0
    while i < pcm.size:
        n = int(rng.integers(1, 700))
        events += ep.feed(pcm[i : i + n])
        i += n
    return events


def _two_utterances(speech: np.ndarray) -> tuple[np.ndarray, list[tuple[float, float]]]:
    s0, s1 = _speech_bounds(speech)
    second = 1.0 + speech.size / RATE + 1.5
    signal = np.concatenate([_silence(1.0), speech, _silence(1.5), speech, _silence(1.0)])
    return signal, [(1.0 + s0, 1.0 + s1), (second + s0, second + s1)]


def _check_two_utterances(events: list[VadEvent], truth: list[tuple[float, float]], cfg: VadConfig) -> None:
    assert [e.kind for e in events] == ["start", "end", "start", "end"]
    for (start, end), (t0, t1) in zip(zip(events[::2], events[1::2], strict=True), truth, strict=True):
        assert start.t == pytest.approx(t0, abs=TOL)
        # "end" fires end_silence_ms after the last voiced frame.
        assert end.t - cfg.end_silence_ms / 1000 == pytest.approx(t1, abs=TOL)
        assert end.audio is not None and end.audio.dtype == np.int16
        # The audio covers the speech plus a little padding, not the whole end-of-turn silence.
        assert (t1 - t0) <= end.audio.size / RATE <= (t1 - t0) + 2 * cfg.pre_roll_ms / 1000 + 0.1
        assert end.speech_ms >= 0.6 * (t1 - t0) * 1000
        assert not end.forced


def test_two_utterances_in_silence(speech: np.ndarray) -> None:
    signal, truth = _two_utterances(speech)
    cfg = bare()
    _check_two_utterances(_feed_in_odd_chunks(Endpointer(cfg), signal), truth, cfg)


@pytest.mark.parametrize("aggressiveness", [0, 3])
def test_two_utterances_in_faint_noise(speech: np.ndarray, aggressiveness: int) -> None:
    """Mode 0 alone merges everything in -70 dBFS noise (stack-notes §4); the energy gate prevents that."""
    signal, truth = _two_utterances(speech)
    cfg = bare(aggressiveness=aggressiveness)
    _check_two_utterances(_feed_in_odd_chunks(Endpointer(cfg), _with_noise(signal, -70)), truth, cfg)


def test_utterance_audio_starts_with_pre_roll(speech: np.ndarray) -> None:
    signal = np.concatenate([_silence(1.0), speech, _silence(1.0)])
    events = Endpointer(bare()).feed(signal)
    audio = events[-1].audio
    assert audio is not None
    lead = np.nonzero(np.abs(audio.astype(np.int32)) > 500)[0][0] / RATE
    s0, _ = _speech_bounds(speech)
    # Some quiet audio before the first loud sample is kept, so Whisper hears the word onset.
    assert 0.1 <= lead <= 0.2 + s0 + 0.1


@pytest.mark.parametrize("dbfs", [-70.0, -60.0])
def test_white_noise_alone_is_ignored(dbfs: float) -> None:
    ep = Endpointer(bare())
    assert _feed_in_odd_chunks(ep, _with_noise(_silence(5.0), dbfs)) == []
    assert not ep.in_speech


def test_digital_silence_is_ignored() -> None:
    assert Endpointer(bare()).feed(_silence(3.0)) == []


def test_short_blip_gives_end_without_audio(speech: np.ndarray) -> None:
    """A start was announced, so an end must follow (the caller may have paused playback)."""
    levels = [rms_dbfs(speech[i : i + 1600]) for i in range(0, speech.size - 1600, 160)]
    loudest = int(np.argmax(levels)) * 160
    blip = speech[loudest : loudest + int(0.1 * RATE)]
    ep = Endpointer(bare())
    events = ep.feed(np.concatenate([_silence(1.0), blip, _silence(1.0)]))
    assert [e.kind for e in events] == ["start", "end"]
    assert events[0].t == pytest.approx(1.0, abs=0.1)
    assert events[1].audio is None
    assert 0 < events[1].speech_ms < bare().min_speech_ms
    assert not ep.in_speech


def test_in_speech_tracks_events(speech: np.ndarray) -> None:
    ep = Endpointer(bare())
    assert ep.feed(_silence(1.0)) == [] and not ep.in_speech
    assert [e.kind for e in ep.feed(speech[: RATE // 2])] == ["start"]
    assert ep.in_speech
    assert [e.kind for e in ep.feed(_silence(1.0))] == ["end"]
    assert not ep.in_speech


def test_max_utterance_forces_an_end(speech: np.ndarray) -> None:
    cfg = bare(max_utterance_s=1.0)
    events = Endpointer(cfg).feed(np.concatenate([_silence(0.5), speech, _silence(1.0)]))
    kinds = [e.kind for e in events]
    assert kinds[:2] == ["start", "end"]
    assert events[1].forced and events[1].audio is not None
    assert events[1].t - events[0].t == pytest.approx(1.0, abs=0.15)
    # Speech goes on, so a new utterance starts right after the cut, and every start has its end.
    assert kinds[2] == "start" and events[2].t - events[1].t < 0.2
    assert kinds.count("start") == kinds.count("end")


def test_reset_drops_partial_utterance_and_keeps_clock(speech: np.ndarray) -> None:
    ep = Endpointer(bare())
    ep.feed(_silence(1.0))
    assert [e.kind for e in ep.feed(speech[: RATE // 2])] == ["start"]
    ep.feed(np.zeros(100, np.int16))  # leave a partial frame pending
    ep.reset()
    assert not ep.in_speech
    assert ep.time == pytest.approx(1.5 + 100 / RATE)
    events = ep.feed(np.concatenate([_silence(0.5), speech, _silence(1.0)]))
    assert [e.kind for e in events] == ["start", "end"]
    assert events[0].t == pytest.approx(ep.time - 1.0 - speech.size / RATE, abs=TOL)


def test_rejects_bad_input_and_config() -> None:
    with pytest.raises(TypeError):
        Endpointer(bare()).feed(np.zeros(320, np.float32))
    with pytest.raises(ValueError):
        Endpointer(bare(frame_ms=25))
    with pytest.raises(ValueError):
        Endpointer(bare(onset_frames=6, onset_window=5))


def _events(ep: Endpointer, *parts: np.ndarray) -> list[str]:
    return [e.kind for part in parts for e in ep.feed(part)]


def test_a_held_pause_lasts_until_the_caller_speaks_again(speech: np.ndarray) -> None:
    """A hold is for one pause ("I want to… [pause]"); the sentence's later pauses get the usual silence."""
    ep = Endpointer(bare(end_silence_ms=400))
    word = speech[: 16000 * 6 // 10]
    assert _events(ep, word) == ["start"]
    ep.hold_end(1200)
    assert _events(ep, _silence(0.8)) == []  # held: 0.8 s is no end
    assert ep.holding
    assert _events(ep, word) == []  # speaking again...
    assert not ep.holding
    assert _events(ep, _silence(0.6)) == ["end"]  # ... and the next pause ends at the usual 400 ms


def test_a_longer_end_silence_holds_for_every_later_turn(speech: np.ndarray) -> None:
    ep = Endpointer(bare(end_silence_ms=400))
    ep.set_end_silence(1000)
    word = speech[: 16000 * 6 // 10]
    for _ in range(2):
        assert _events(ep, word, _silence(0.8)) == ["start"]
        assert _events(ep, _silence(0.4)) == ["end"]
