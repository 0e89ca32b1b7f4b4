"""Speech-to-text as a stream: feed audio while the caller talks, ask for a partial transcript, finish.

Whisper is a batch engine, so `BatchStream` adapts it the way speculative recognition works in a call: a
partial is a transcript of the audio so far, and `finish()` reuses the last one when no audio came after it
(the caller's pause became the end of the turn), so the end of a turn costs no second decode. A streaming
engine implements `start_stream()` itself and the conversation does not notice.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol, runtime_checkable

import numpy as np

from agent.speech.stt import Transcriber


@runtime_checkable
class SttStream(Protocol):
    def feed(self, audio16k: np.ndarray) -> None: ...

    async def partial(self) -> str: ...

    async def finish(self) -> str: ...

    def cancel(self) -> None: ...


@runtime_checkable
class StreamingTranscriber(Transcriber, Protocol):
    def start_stream(self) -> SttStream: ...


class BatchStream:
    """A stream over a batch `Transcriber`; one decode at a time, keyed by how much audio it covered."""

    def __init__(self, transcriber: Transcriber) -> None:
        self._transcriber = transcriber
        self._chunks: list[np.ndarray] = []
        self._samples = 0
        self._guess: tuple[int, asyncio.Task[str]] | None = None
        self.reused_partial = False  # finish() answered from a partial (for turn metrics)

    @property
    def samples(self) -> int:
        return self._samples

    def feed(self, audio16k: np.ndarray) -> None:
        chunk = np.asarray(audio16k).reshape(-1)
        if chunk.size:
            self._chunks.append(chunk)
            self._samples += chunk.size

    def _audio(self) -> np.ndarray:
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        return self._chunks[0] if self._chunks else np.zeros(0, dtype=np.int16)

    async def partial(self) -> str:
        """The transcript of everything fed so far; a partial already running for this much audio is shared."""
        if self._guess is None or self._guess[0] != self._samples:
            self._drop_guess()
            task = asyncio.ensure_future(self._transcriber.transcribe(self._audio()))
            self._guess = (self._samples, task)
        return (await asyncio.shield(self._guess[1])).strip()

    async def finish(self) -> str:
        """The final transcript: the last partial's when it covered all the audio, else a fresh decode."""
        if self._guess is not None and self._guess[0] == self._samples and not self._guess[1].cancelled():
            self.reused_partial = True
            return (await self._guess[1]).strip()
        self._drop_guess()
        if not self._samples:
            return ""
        return (await self._transcriber.transcribe(self._audio())).strip()

    def cancel(self) -> None:
        self._drop_guess()

    def _drop_guess(self) -> None:
        if self._guess is not None:
            task = self._guess[1]
            if not task.done():
                task.cancel()
            else:
                with contextlib.suppress(BaseException):
                    task.exception()  # retrieved, so a failed guess is not logged as never awaited
            self._guess = None


def start_stream(transcriber: Transcriber) -> SttStream:
    """The engine's own stream where it has one, else the batch adapter."""
    if isinstance(transcriber, StreamingTranscriber):
        return transcriber.start_stream()
    return BatchStream(transcriber)
