"""A streaming speech-to-text engine, chosen by the manifest's `engine:`, answers a whole simulated call.

The engine is registered the way a deployment adds one (a decorated factory) and decodes as the caller talks:
each stream re-decodes the audio heard so far with the real Whisper model every `EVERY_S` seconds of new
audio, and `finish()` gives the final transcript. The call is real (webhooks, WebRTC, Opus, the flow, Piper);
what is checked is that the conversation fed the engine while the caller was speaking, took each turn from
the engine's own stream, and understood the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.config import load_settings
from agent.providers import builtin, load
from agent.providers.registry import STT, EngineRequest
from agent.runtime import Models
from agent.simulator.session import DEFAULT_LINES, Line, run_call
from tests.wer import wer

pytestmark = pytest.mark.e2e

RATE = 16000
EVERY_S = 0.6


class IncrementalStream:
    """Re-decodes the growing audio in the background, one decode at a time, like a streaming recogniser's
    running hypothesis; `finish()` decodes whatever the last hypothesis did not cover."""

    def __init__(self, engine: IncrementalWhisper) -> None:
        self.engine = engine
        self.audio = np.zeros(0, dtype=np.int16)
        self.feeds = 0
        self.hypothesis: tuple[int, str] = (0, "")
        self.decodes_while_talking = 0
        self._running: asyncio.Task[None] | None = None

    def feed(self, audio16k: np.ndarray) -> None:
        self.audio = np.concatenate([self.audio, np.asarray(audio16k, dtype=np.int16)])
        self.feeds += 1
        running = self._running is not None and not self._running.done()
        if not running and self.audio.size - self.hypothesis[0] >= EVERY_S * RATE:
            self._running = asyncio.ensure_future(self._decode())

    async def _decode(self) -> None:
        covered = self.audio.size
        text = await self.engine.whisper.transcribe(self.audio[:covered])
        self.hypothesis = (covered, text.strip())
        self.decodes_while_talking += 1

    async def partial(self) -> str:
        return await self._final()

    async def finish(self) -> str:
        text = await self._final()
        self.engine.finished.append(self)
        return text

    async def _final(self) -> str:
        if self._running is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._running)
        if self.hypothesis[0] != self.audio.size:
            self.hypothesis = (self.audio.size, (await self.engine.whisper.transcribe(self.audio)).strip())
        return self.hypothesis[1]

    def cancel(self) -> None:
        if self._running is not None:
            self._running.cancel()


class IncrementalWhisper:
    def __init__(self, whisper: Any) -> None:
        self.whisper = whisper
        self.finished: list[IncrementalStream] = []

    def start_stream(self) -> IncrementalStream:
        return IncrementalStream(self)

    async def transcribe(self, audio16k: np.ndarray) -> str:
        return await self.whisper.transcribe(audio16k)  # what the simulated caller hears goes through here


@pytest.fixture
def incremental_engine() -> Iterator[None]:
    @STT.register("test-incremental-whisper")
    def incremental(request: EngineRequest) -> IncrementalWhisper:
        return IncrementalWhisper(builtin.faster_whisper(request))

    yield
    STT._factories.pop("test-incremental-whisper")


async def test_a_streaming_engine_picked_by_the_manifest_answers_a_call(
    models: Models, incremental_engine: None, tmp_path: Path
) -> None:
    manifest = tmp_path / "manifest.yaml"
    shipped = Path(load.__file__).resolve().parents[2] / "models" / "manifest.yaml"
    manifest.write_text(
        shipped.read_text(encoding="utf-8").replace("engine: faster-whisper", "engine: test-incremental-whisper"),
        encoding="utf-8",
    )
    settings = load_settings(env={"WACALL_SPEECH__MANIFEST": str(manifest)})
    engine = load.make_transcriber(settings, models.executor)
    assert isinstance(engine, IncrementalWhisper)

    streaming = Models(transcriber=engine, synthesizer=models.synthesizer, executor=models.executor)
    result = await run_call(streaming, [Line(text=t) for t in DEFAULT_LINES])

    summary = result.call_summary
    assert summary is not None and summary["end_reason"] == "bot_ended"
    heard = [e["text"] for e in summary["transcript"] if e["who"] == "caller"]
    assert len(heard) == len(DEFAULT_LINES)
    for said, understood in zip(DEFAULT_LINES, heard, strict=True):
        assert wer(said, understood) <= 0.2, (said, understood)
    # Every turn came from the engine's own stream, which heard the caller packet by packet and decoded
    # while they were still talking.
    assert len(engine.finished) >= len(DEFAULT_LINES)
    for stream in engine.finished[-len(DEFAULT_LINES) :]:
        assert stream.feeds >= 20 and stream.audio.size >= RATE
        assert stream.decodes_while_talking >= 1
