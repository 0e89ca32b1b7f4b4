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


WINDOW = 512  # Silero's window at 16 kHz (32 ms)
DECAY_MS = 36  # after the last sound, Silero's speech probability takes about one window to fall


class SileroEndpointCheck:
    """Asks Silero whether there is voice at the very end of the pause webrtcvad called silence.

    Silero is an acoustic detector: it cannot tell a finished sentence from one broken off mid-word (both
    fade the same way; measured on the bench's phrases), so it is asked only about the part of the pause
    after its own decay, where any voice it hears is the caller still talking softly.
    """

    def __init__(self, executor: concurrent.futures.Executor, *, threshold: float = 0.5) -> None:
        from faster_whisper.vad import get_vad_model

        self._executor = executor
        self._model = get_vad_model()
        self._threshold = threshold

    def still_talking_sync(self, audio16k: np.ndarray, silence_ms: int) -> bool:
        """True when Silero hears voice in the last `silence_ms` of the audio (minus its decay)."""
        samples = (min(audio16k.size, RATE * 2) // WINDOW) * WINDOW
        if samples == 0:
            return False
        window = np.asarray(audio16k[-samples:], dtype=np.float32)
        if audio16k.dtype == np.int16:
            window = window / 32768.0
        probs = np.asarray(self._model(window)).reshape(-1)
        tail = max(1, (silence_ms - DECAY_MS) * RATE // 1000 // WINDOW)
        return bool(probs[-tail:].max() >= self._threshold)

    async def still_talking(self, audio16k: np.ndarray, silence_ms: int) -> bool:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self.still_talking_sync, audio16k, silence_ms)
        except Exception:
            log.exception("Silero end-of-turn check failed; trusting webrtcvad")
            return False
