"""A second opinion on "the caller has stopped talking", from the Silero model bundled with faster-whisper.

webrtcvad decides frame by frame and can take a soft, trailing word for silence. Where the turn would be
ended on weaker evidence (early, at a short pause), Silero looks at the utterance's tail first; it is
offline (faster_whisper/assets) and takes milliseconds for a second of audio, run in the inference pool.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging

import numpy as np

log = logging.getLogger(__name__)

RATE = 16000


class SileroEndpointCheck:
    def __init__(self, executor: concurrent.futures.Executor, *, threshold: float = 0.5) -> None:
        from faster_whisper.vad import VadOptions, get_speech_timestamps

        self._executor = executor
        self._detect = get_speech_timestamps
        self._options = VadOptions(
            threshold=threshold, min_speech_duration_ms=60, min_silence_duration_ms=60, speech_pad_ms=0
        )

    def still_talking_sync(self, audio16k: np.ndarray, silence_ms: int) -> bool:
        """True when Silero hears speech well inside the last `silence_ms`, which webrtcvad called silence."""
        window = np.asarray(audio16k[-RATE * 2 :], dtype=np.float32)
        if audio16k.dtype == np.int16:
            window = window / 32768.0
        segments = self._detect(window, self._options)
        if not segments:
            return False
        # Silero's segments end 20-50 ms after the last loud sample (its 32 ms windows), so only speech
        # reaching into the second half of the pause counts as the caller still talking.
        return int(segments[-1]["end"]) > window.size - (silence_ms // 2) * RATE // 1000

    async def still_talking(self, audio16k: np.ndarray, silence_ms: int) -> bool:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self.still_talking_sync, audio16k, silence_ms)
        except Exception:
            log.exception("Silero end-of-turn check failed; trusting webrtcvad")
            return False
