"""The streaming STT interface over a batch engine: partials while the caller talks, and a finish that reuses
the last partial when no audio came after it (speculative recognition, as in a call)."""

from __future__ import annotations

import asyncio

import numpy as np

from agent.providers.streaming import BatchStream, StreamingTranscriber, SttStream, start_stream


class CountingTranscriber:
    """Says how many samples it heard, and counts its decodes."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls = 0
        self.delay = delay

    async def transcribe(self, audio16k: np.ndarray) -> str:
        self.calls += 1
        await asyncio.sleep(self.delay)
        return f" {audio16k.size} samples "


def chunk(n: int) -> np.ndarray:
    return np.ones(n, dtype=np.int16)


async def test_finish_reuses_a_partial_over_the_same_audio() -> None:
    stt = CountingTranscriber()
    stream = start_stream(stt)
    assert isinstance(stream, BatchStream) and isinstance(stream, SttStream)
    stream.feed(chunk(1600))
    stream.feed(chunk(1600))
    assert await stream.partial() == "3200 samples"
    assert await stream.finish() == "3200 samples"  # the pause became the end of the turn: no second decode
    assert stt.calls == 1 and stream.reused_partial


async def test_audio_after_a_partial_means_a_fresh_decode() -> None:
    stt = CountingTranscriber()
    stream = BatchStream(stt)
    stream.feed(chunk(1600))
    assert await stream.partial() == "1600 samples"
    stream.feed(chunk(800))  # the caller went on talking
    assert await stream.finish() == "2400 samples"
    assert stt.calls == 2 and not stream.reused_partial


async def test_a_running_partial_is_shared_and_a_stale_one_cancelled() -> None:
    stt = CountingTranscriber(delay=0.05)
    stream = BatchStream(stt)
    stream.feed(chunk(100))
    first, second = await asyncio.gather(stream.partial(), stream.partial())
    assert first == second == "100 samples" and stt.calls == 1
    pending = asyncio.ensure_future(stream.partial())
    await asyncio.sleep(0)
    stream.feed(chunk(100))
    assert await stream.finish() == "200 samples"
    assert pending.cancelled() or pending.done()


async def test_nothing_fed_is_an_empty_transcript_without_a_decode() -> None:
    stt = CountingTranscriber()
    assert await BatchStream(stt).finish() == "" and stt.calls == 0


async def test_an_engine_with_its_own_stream_is_used_as_is() -> None:
    class Native(CountingTranscriber):
        def start_stream(self) -> SttStream:
            return self.stream

    native = Native()
    native.stream = BatchStream(native)  # type: ignore[attr-defined]
    assert isinstance(native, StreamingTranscriber)
    assert start_stream(native) is native.stream  # type: ignore[attr-defined]
