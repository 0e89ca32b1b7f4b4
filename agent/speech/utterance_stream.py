"""The recognition stream of one caller utterance, fed while the caller talks.

The conversation owns one per utterance and hands it to the turn when the utterance ends. A streaming engine
decodes as the audio comes; Whisper's batch adapter decodes at the pause (speculative recognition) and the end
of the turn reuses that decode when nothing was said after it. Either way the conversation asks the same
three things: `partial()` at a pause or for the console, `finish()` for the turn, `cancel()` when dropped.
"""

from __future__ import annotations

import numpy as np

from agent.providers.streaming import SttStream, start_stream
from agent.speech.stt import Transcriber


class UtteranceStream:
    """A stream plus how much of this utterance's own audio it has heard (the lead-in is a joined fragment)."""

    def __init__(self, transcriber: Transcriber, lead_in: np.ndarray | None = None) -> None:
        self.stream: SttStream = start_stream(transcriber)
        if lead_in is not None and lead_in.size:
            self.stream.feed(lead_in)
        self.fed = 0  # samples of the utterance's own audio fed so far

    def catch_up(self, audio: np.ndarray | None) -> None:
        """Feed what `audio` (the utterance's kept audio so far, which only grows) has beyond what was fed."""
        if audio is not None and audio.size > self.fed:
            self.stream.feed(audio[self.fed :])
            self.fed = audio.size

    def feed_more(self, chunk: np.ndarray | None) -> None:
        if chunk is not None and chunk.size:
            self.stream.feed(chunk)
            self.fed += chunk.size

    async def partial(self) -> str:
        return (await self.stream.partial()).strip()

    async def finish(self) -> str:
        return (await self.stream.finish()).strip()

    @property
    def reused_partial(self) -> bool:
        """The final transcript came from the pause's partial (no second decode): the turn was speculative."""
        return bool(getattr(self.stream, "reused_partial", False))

    def cancel(self) -> None:
        self.stream.cancel()


async def transcribe_once(transcriber: Transcriber, audio: np.ndarray) -> str:
    """Recognise audio already complete (a joined thought, a reaction judged alone) through the same stream
    interface, so an engine that only streams works everywhere the conversation recognises speech."""
    stream = UtteranceStream(transcriber)
    stream.feed_more(audio)
    return await stream.finish()
