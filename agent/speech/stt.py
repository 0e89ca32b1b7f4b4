"""Speech-to-text with faster-whisper, kept off the event loop.

One model instance is shared by all calls: with ``num_workers=2, cpu_threads=1`` two transcriptions run
truly in parallel on 2 cores (stack-notes §3/§6), so the executor should have about that many threads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from agent.speech.audio import int16_to_float32, rms_dbfs
from agent.speech.models import ModelNotFoundError

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000


@runtime_checkable
class Transcriber(Protocol):
    """Anything that turns one utterance into text; lets tests and alternative engines plug in."""

    async def transcribe(self, audio16k: np.ndarray) -> str: ...


class WhisperTranscriber:
    """faster-whisper on CPU, tuned for short conversational turns rather than long recordings.

    Whisper invents text for near-silence ("Thank you.", "Bye."), and on a phone call that text would be
    answered as if the user had said it. So very short or very quiet audio is rejected before decoding,
    and segments the model itself thinks are non-speech (``no_speech_prob``) are dropped.
    """

    def __init__(
        self,
        model_dir: Path,
        *,
        executor: concurrent.futures.Executor,
        compute_type: str = "int8",
        cpu_threads: int = 1,
        num_workers: int = 2,
        beam_size: int = 1,
        language: str = "en",
        min_duration_s: float = 0.2,
        energy_floor_dbfs: float = -60.0,
        no_speech_threshold: float = 0.6,
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
            device="cpu",
            compute_type=compute_type,
            cpu_threads=cpu_threads,
            num_workers=num_workers,
            local_files_only=True,
        )
        logger.info("loaded whisper model %s (%s) in %.2fs", model_dir, compute_type, time.perf_counter() - t0)
        self._executor = executor
        self._beam_size = beam_size
        self._language = language
        self._min_samples = int(min_duration_s * SAMPLE_RATE)
        self._energy_floor_dbfs = energy_floor_dbfs
        self._no_speech_threshold = no_speech_threshold

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

    @staticmethod
    def _to_float32(audio16k: np.ndarray) -> np.ndarray:
        arr = np.asarray(audio16k).reshape(-1)
        if arr.dtype == np.int16:
            return int16_to_float32(arr)
        if np.issubdtype(arr.dtype, np.floating):
            return arr.astype(np.float32, copy=False)
        raise TypeError(f"expected int16 or float audio, got {arr.dtype}")
