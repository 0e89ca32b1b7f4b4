"""Speech-to-text with faster-whisper, kept off the event loop.

One model instance is shared by all calls: with ``num_workers=2, cpu_threads=1`` two transcriptions run
truly in parallel on 2 cores (stack-notes §3/§6), so the executor should have about that many threads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from agent.speech.audio import int16_to_float32, rms_dbfs
from agent.speech.models import ModelNotFoundError

if TYPE_CHECKING:
    from agent.providers.streaming import SttStream

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
HOP = 160  # samples per feature frame (10 ms)
FULL_WINDOW_FRAMES = 3000
SHORT_WINDOW_TAIL_FRAMES = 300  # ≥ 3 s of padding after the speech lets the decoder find the end
SHORT_WINDOW_MIN_FRAMES = 20  # under 0.2 s there are no words to find
SHORT_WINDOW_RETRY = 1.5  # a window that looped is tried once this much longer before the full one
# Tokens a turn may take: speech runs at 3-6 tokens a second, a decoder stuck in a loop far faster.
MAX_TOKENS_BASE = 10
MAX_TOKENS_PER_S = 8


def first_of_restarts(text: str) -> str | None:
    """The first sentence, when everything after it is that sentence again (or its start), else None.

    With a shortened window Whisper sometimes reaches the end of the speech and starts over from the top
    ("Where is my order? Where is my order"); the first pass is the transcript, and decoding again with the
    full window would cost several times as much.
    """
    parts = [p.strip() for p in re.split(r"(?<=[.?!])\s+", text.strip()) if p.strip()]
    if len(parts) < 2:
        return None
    first = _words(parts[0])
    if not first:
        return None
    for part in parts[1:]:
        words = _words(part)
        if not words or words != first[: len(words)]:
            return None
    return parts[0]


def _words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def looks_degenerate(text: str) -> bool:
    """True when a phrase (≤ 8 words) repeats three times in a row, or the text is one phrase twice."""
    words = text.lower().replace(",", " ").replace(".", " ").replace("?", " ").split()
    half = len(words) // 2
    if len(words) >= 2 and len(words) % 2 == 0 and words[:half] == words[half:]:
        return True
    # A short turn that says the same three words twice is the decoder starting over, not the caller.
    grams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    if len(grams) != len(set(grams)):
        return True
    for size in range(1, 9):
        for start in range(len(words) - 3 * size + 1):
            chunk = words[start : start + size]
            if chunk == words[start + size : start + 2 * size] == words[start + 2 * size : start + 3 * size]:
                return True
    return False


@runtime_checkable
class Transcriber(Protocol):
    """Anything that turns one utterance into text; lets tests and alternative engines plug in."""

    async def transcribe(self, audio16k: np.ndarray) -> str: ...


class WhisperTranscriber:
    """faster-whisper (CPU or CUDA), tuned for short conversational turns rather than long recordings.

    Whisper invents text for near-silence ("Thank you.", "Bye."), and on a phone call that text would be
    answered as if the user had said it. So very short or very quiet audio is rejected before decoding,
    and segments the model itself thinks are non-speech (``no_speech_prob``) are dropped.
    """

    def __init__(
        self,
        model_dir: Path,
        *,
        executor: concurrent.futures.Executor,
        device: str = "cpu",
        compute_type: str = "int8",
        cpu_threads: int = 1,
        num_workers: int = 2,
        beam_size: int = 1,
        language: str = "en",
        min_duration_s: float = 0.2,
        energy_floor_dbfs: float = -60.0,
        no_speech_threshold: float = 0.6,
        short_window_s: int | None = 10,
    ) -> None:
        # faster-whisper treats any string that is not an existing folder as a hub model name and tries
        # to download it, so refuse anything that is not a real local model folder.
        model_dir = Path(model_dir)
        if not (model_dir / "model.bin").is_file():
            raise ModelNotFoundError(f"no faster-whisper model (model.bin) in {model_dir}")
        from faster_whisper import WhisperModel  # heavy import; keep `import agent.speech.stt` cheap

        t0 = time.perf_counter()
        self._model = WhisperModel(
            str(model_dir),
            device=device,
            compute_type=compute_type,
            cpu_threads=cpu_threads,
            num_workers=num_workers,
            local_files_only=True,
        )
        logger.info(
            "loaded whisper model %s (%s on %s) in %.2fs", model_dir, compute_type, device, time.perf_counter() - t0
        )
        if not self._model.model.is_multilingual and language != "en":
            # An English-only model (*.en) would silently transcribe every other language as English.
            raise ValueError(f"whisper model {model_dir} is English-only, but the language is {language!r}")
        self._executor = executor
        self._beam_size = beam_size
        self._language = language
        self._min_samples = int(min_duration_s * SAMPLE_RATE)
        self._energy_floor_dbfs = energy_floor_dbfs
        self._no_speech_threshold = no_speech_threshold
        self._short_window_frames = short_window_s * 100 if short_window_s else 0
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        self._tokenizer = Tokenizer(
            self._model.hf_tokenizer, self._model.model.is_multilingual, task="transcribe", language=language
        )
        self._suppress_tokens = list(get_suppressed_tokens(self._tokenizer, [-1]))

    def start_stream(self) -> SttStream:
        """Whisper decodes whole utterances: a stream is the batch adapter (speculative recognition)."""
        from agent.providers.streaming import BatchStream

        return BatchStream(self)

    async def transcribe(self, audio16k: np.ndarray) -> str:
        """Transcribe in the executor; the event loop only waits."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.transcribe_sync, audio16k)

    def transcribe_sync(self, audio16k: np.ndarray) -> str:
        """Blocking transcription, for the executor, warm-up at startup and offline tools."""
        audio = self._to_float32(audio16k)
        if audio.size < self._min_samples:
            return ""
        level = rms_dbfs(audio)
        if level < self._energy_floor_dbfs:
            logger.debug("skipping STT: %.1f dBFS is below the floor", level)
            return ""
        t0 = time.perf_counter()
        if self._short_window_frames:
            fast = self._transcribe_short_window(audio)
            if fast is not None:
                logger.debug(
                    "STT (short window) %.2fs -> %r in %.3fs", audio.size / SAMPLE_RATE, fast, time.perf_counter() - t0
                )
                return fast
        segments, _info = self._model.transcribe(
            audio,
            language=self._language,
            beam_size=self._beam_size,
            condition_on_previous_text=False,
            vad_filter=False,
            without_timestamps=True,
        )
        # The generator is lazy: decoding happens while iterating, so it must be consumed right here,
        # inside the worker thread.
        parts: list[str] = []
        for seg in segments:
            if seg.no_speech_prob > self._no_speech_threshold:
                logger.debug("dropping likely non-speech segment %r (p=%.2f)", seg.text, seg.no_speech_prob)
                continue
            parts.append(seg.text)
        text = " ".join(p.strip() for p in parts if p.strip())
        logger.debug("STT %.2fs audio -> %r in %.3fs", audio.size / SAMPLE_RATE, text, time.perf_counter() - t0)
        return text

    def _transcribe_short_window(self, audio: np.ndarray) -> str | None:
        """Decode a short utterance with a shortened encoder window, or None to use the full 30 s window.

        Whisper always encodes 30 s, so a 2 s turn costs as much as a 30 s one; CTranslate2 accepts a shorter
        window, which here cuts a turn's recognition time to about a third (a longer turn takes the longer
        one). The window is padded the way Whisper pads its own: digital silence in the audio, so the
        padding's features are what the model saw in training (zeros in feature space read as noise,
        made the model unsure of short words and sent every "yes" to the slow path). A short window can
        make the decoder loop ("yes, yes, yes…") on very short words; a loop is retried once with a
        longer window, then the full one decides.
        """
        n_frames = audio.size // HOP + 1
        if n_frames < SHORT_WINDOW_MIN_FRAMES:
            return None
        for window in (self._short_window_frames, round(self._short_window_frames * SHORT_WINDOW_RETRY)):
            if n_frames + SHORT_WINDOW_TAIL_FRAMES > min(window, FULL_WINDOW_FRAMES - 1):
                continue  # too long for this window
            text = self._decode_window(audio, window, n_frames)
            if text is not None:
                return text
        return None

    def _decode_window(self, audio: np.ndarray, window: int, n_frames: int) -> str | None:
        import ctranslate2

        padded = np.zeros(window * HOP, dtype=np.float32)
        padded[: audio.size] = audio
        features = self._model.feature_extractor(padded)[:, :window]
        encoded = self._model.model.encode(
            ctranslate2.StorageView.from_array(np.ascontiguousarray(features[None])), to_cpu=False
        )
        duration = n_frames / 100
        budget = int(MAX_TOKENS_BASE + MAX_TOKENS_PER_S * duration)
        tokenizer = self._tokenizer
        prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
        result = self._model.model.generate(
            encoded,
            [prompt],
            beam_size=self._beam_size,
            # CTranslate2 stops at about half of max_length here (measured: 41 gave 20 tokens), so the
            # budget is checked on the tokens themselves below, never trusted to the limit.
            max_length=len(prompt) + 2 * budget + 8,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=self._suppress_tokens,
        )[0]
        if result.no_speech_prob > self._no_speech_threshold:
            logger.debug("short window unsure (no_speech_prob %.2f); decoding the full window", result.no_speech_prob)
            return None
        tokens = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
        text = tokenizer.decode(tokens).strip()
        restarted = first_of_restarts(text)
        if restarted is not None:
            logger.debug("short window started over (%r); keeping the first pass", text)
            return restarted
        if len(tokens) > budget or looks_degenerate(text):
            logger.debug("short window (%d frames) looped (%r)", window, text)
            return None
        return text

    @staticmethod
    def _to_float32(audio16k: np.ndarray) -> np.ndarray:
        arr = np.asarray(audio16k).reshape(-1)
        if arr.dtype == np.int16:
            return int16_to_float32(arr)
        if np.issubdtype(arr.dtype, np.floating):
            return arr.astype(np.float32, copy=False)
        raise TypeError(f"expected int16 or float audio, got {arr.dtype}")
