"""The four provider interfaces in one place: what the call loop needs from each engine, and no more.

Speech-to-text may also stream (`StreamingTranscriber`); a batch engine gets `BatchStream`.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from agent.providers.streaming import StreamingTranscriber, SttStream
from agent.speech.stt import Transcriber
from agent.speech.tts import Synthesizer

__all__ = ["EndpointCheck", "LlmStream", "StreamingTranscriber", "SttStream", "Synthesizer", "Transcriber"]


class LlmStream(Protocol):
    """Streams a reply's text (and tool calls) for the messages so far (agent/dialogue/llm.py)."""

    def stream_reply(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> Any: ...


class EndpointCheck(Protocol):
    """A second opinion before an early end of turn: is the caller still talking in this pause?"""

    async def still_talking(self, audio16k: np.ndarray, silence_ms: int) -> bool: ...
