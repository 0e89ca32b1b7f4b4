"""A simulated caller's voice: caller-script lines rendered to audio, with real pauses between the words.

Each stretch of speech is synthesised on its own with piper at the script's pace (`length_scale`), its
leading and trailing silence trimmed, and the stretches are joined with exactly the pauses the script
asks for, as digital silence (the room's noise is added later, at the caller's microphone). That way a
`[pause 1.0]` is one second of no speech on the wire, which is what a bot's VAD must cope with.

The caller speaks with a piper voice of its own (not the bot's shared synthesiser): a phone is a separate
device, its synthesis must not queue behind the bot's work, and its speaking rate is set per stretch.
Synthesis is deterministic (piper's noise scales set to 0) so one seed always gives the same audio.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from agent.simulator.caller_script import CallerScript, Pause, Say, Speech, VoiceStyle
from agent.speech.audio import resample
from agent.speech.tts import Synthesizer

RATE = 48000
TRIM_AMPLITUDE = 200  # |sample| below this at the edges of a synthesised stretch is piper's padding
EDGE_MARGIN_S = 0.015  # kept around the trimmed speech, so soft onsets and endings are not clipped
FADE_S = 0.005
JOIN_GAP_S = 0.07  # between two stretches with no pause written between them (e.g. after a filler)


class CallerVoice(Protocol):
    """Speaks one stretch of words at a pace; returns int16 mono at 48 kHz."""

    async def speak(self, text: str, length_scale: float) -> np.ndarray: ...


class PiperCallerVoice:
    """A piper voice loaded for the caller, with a per-stretch length scale and a render cache.

    `cache_dir` keeps rendered stretches on disk between runs (synthesis is deterministic, so a stretch is
    a pure function of the voice file, the words and the pace): a bench run after the first synthesises
    nothing.
    """

    def __init__(
        self, model: str | Path | None = None, config: str | Path | None = None, *, cache_dir: Path | None = None
    ) -> None:
        from piper import PiperVoice  # heavy import (onnxruntime): only when a caller speaks

        from agent.speech.models import resolve_tts_voice

        model_path, config_path = resolve_tts_voice(
            None if model is None else str(model), None if config is None else str(config)
        )
        self._voice = PiperVoice.load(model_path, config_path=config_path)
        self._native_rate = int(self._voice.config.sample_rate)
        self._cache: dict[tuple[str, float], np.ndarray] = {}
        self._lock = threading.Lock()  # one onnxruntime session: one synthesis at a time
        self._disk = cache_dir
        stat = model_path.stat()
        self._voice_id = f"{model_path.name}:{stat.st_size}:{int(stat.st_mtime)}:{RATE}"

    async def speak(self, text: str, length_scale: float) -> np.ndarray:
        key = (text, round(length_scale, 3))
        cached = self._cache.get(key)
        if cached is None:
            cached = await asyncio.to_thread(self._load_or_speak, text, key[1])
            self._cache[key] = cached
        return cached.copy()

    def _load_or_speak(self, text: str, length_scale: float) -> np.ndarray:
        if self._disk is None:
            return self._speak_sync(text, length_scale)
        digest = hashlib.sha256(f"{self._voice_id}|{length_scale}|{text}".encode()).hexdigest()[:32]
        path = self._disk / f"{digest}.npy"
        with contextlib.suppress(OSError, ValueError):
            return np.load(path, allow_pickle=False)
        audio = self._speak_sync(text, length_scale)
        with contextlib.suppress(OSError):
            self._disk.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(f".{os.getpid()}.tmp.npy")
            np.save(partial, audio, allow_pickle=False)
            partial.replace(path)  # atomic: a parallel run never reads half a file
        return audio

    def _speak_sync(self, text: str, length_scale: float) -> np.ndarray:
        from piper import SynthesisConfig

        config = SynthesisConfig(length_scale=length_scale, noise_scale=0.0, noise_w_scale=0.0)
        with self._lock:
            chunks = [chunk.audio_int16_array for chunk in self._voice.synthesize(text, config)]
        if not chunks:
            return np.zeros(0, dtype=np.int16)
        return resample(np.concatenate(chunks), self._native_rate, RATE)


class SynthesizerVoice:
    """Any wacall `Synthesizer` as a caller voice; it has one fixed pace, so `length_scale` is ignored."""

    def __init__(self, synthesizer: Synthesizer) -> None:
        self._synth = synthesizer

    async def speak(self, text: str, length_scale: float) -> np.ndarray:
        pcm = await self._synth.synthesize(text)
        return pcm if self._synth.sample_rate == RATE else resample(pcm, self._synth.sample_rate, RATE)


@dataclass(frozen=True)
class SegmentSpan:
    """Where one segment of a rendered line sits, in seconds from the line's first sample."""

    kind: str  # "speech" | "filler" | "pause"
    text: str
    start_s: float
    end_s: float


@dataclass
class RenderedLine:
    text: str
    pcm: np.ndarray  # int16 mono 48 kHz; pauses are digital silence
    spans: list[SegmentSpan]

    @property
    def duration_s(self) -> float:
        return self.pcm.size / RATE


def trim(pcm: np.ndarray) -> np.ndarray:
    """Cut piper's padding before and after the words, keeping a short margin and fading the cut edges."""
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > TRIM_AMPLITUDE)
    if loud.size == 0:
        return np.zeros(0, dtype=np.int16)
    margin = int(EDGE_MARGIN_S * RATE)
    out = pcm[max(0, int(loud[0]) - margin) : int(loud[-1]) + 1 + margin].astype(np.float64)
    fade = min(int(FADE_S * RATE), out.size // 2)
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        out[:fade] *= ramp
        out[-fade:] *= ramp[::-1]
    return np.rint(out).astype(np.int16)


def stretch_rng(seed: int, line: int) -> random.Random:
    """The random source of one line: the same script and seed always sound the same."""
    return random.Random(f"wacall-caller:{seed}:{line}")


async def render_line(say: Say, voice: CallerVoice, style: VoiceStyle, rng: random.Random) -> RenderedLine:
    """One caller line as audio: each stretch at the script's pace, pauses exactly as written."""
    parts: list[np.ndarray] = []
    spans: list[SegmentSpan] = []
    at = 0
    previous_was_speech = False
    for segment in say.segments:
        if isinstance(segment, Pause):
            n = round(segment.seconds * RATE)
            spans.append(SegmentSpan("pause", "", at / RATE, (at + n) / RATE))
            parts.append(np.zeros(n, dtype=np.int16))
            at += n
            previous_was_speech = False
            continue
        assert isinstance(segment, Speech)
        scale = style.length_scale * segment.rate
        if style.variation:
            scale *= 1 + rng.uniform(-style.variation, style.variation)
        audio = trim(await voice.speak(segment.text, scale))
        if audio.size == 0:
            continue
        if previous_was_speech:
            gap = round(JOIN_GAP_S * RATE)
            parts.append(np.zeros(gap, dtype=np.int16))
            at += gap
        kind = "filler" if segment.filler else "speech"
        spans.append(SegmentSpan(kind, segment.text, at / RATE, (at + audio.size) / RATE))
        parts.append(audio)
        at += audio.size
        previous_was_speech = True
    pcm = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)
    return RenderedLine(text=say.text, pcm=pcm, spans=spans)


async def render_script(script: CallerScript, voice: CallerVoice) -> list[RenderedLine | None]:
    """Every step of a script rendered ahead of the call (None for a silence): nothing is synthesised
    while the call runs, so the caller never hesitates because its own speech is still being made."""
    out: list[RenderedLine | None] = []
    for index, step in enumerate(script.lines):
        out.append(
            await render_line(step, voice, script.voice, stretch_rng(script.seed, index))
            if isinstance(step, Say)
            else None
        )
    return out


def voiced_gaps(pcm: np.ndarray, *, threshold: int = TRIM_AMPLITUDE, min_gap_s: float = 0.2) -> Sequence[float]:
    """Lengths (s) of the quiet stretches inside `pcm` of at least `min_gap_s`: the pauses a listener gets."""
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > threshold)
    if loud.size < 2:
        return []
    gaps = np.diff(loud) / RATE
    return [float(g) for g in gaps if g >= min_gap_s]
