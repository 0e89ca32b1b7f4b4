"""Turn-taking for one call: listen, detect the end of the caller's turn, reply, and yield on barge-in.

It owns no sockets or models: audio comes in through `feed`, goes out through an `AudioOutput`, and the
models and policy are passed in, so its logic is testable and the same code serves every call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from agent.dialogue.engine import FlowEngine, Reply
from agent.speech.stt import Transcriber
from agent.speech.tts import Synthesizer
from agent.speech.vad import Endpointer, VadConfig

log = logging.getLogger(__name__)

SORRY_HEARING = "Sorry, I had trouble hearing that. Could you say it again?"
HANGUP_TAIL_S = 0.4
SORRY_TECHNICAL = "Sorry, something went wrong on our side. Please try again in a moment."


class AudioOutput(Protocol):
    """Where the bot's voice goes: the call's outbound track."""

    @property
    def playing(self) -> bool: ...
    def enqueue(self, pcm: np.ndarray) -> None: ...
    def flush(self) -> int: ...
    async def wait_idle(self) -> None: ...


@dataclass
class TurnMetrics:
    """Timestamps (monotonic seconds) of one exchange, so slow stages can be found per turn."""

    caller_speech_end: float | None = None
    transcript_ready: float | None = None
    reply_text_ready: float | None = None
    first_audio_synthesized: float | None = None
    first_audio_sent: float | None = None
    transcript: str = ""
    reply: str = ""
    interrupted: bool = False

    def as_dict(self) -> dict[str, float | str | bool | None]:
        base = self.caller_speech_end
        out: dict[str, float | str | bool | None] = {
            "transcript": self.transcript,
            "reply": self.reply,
            "interrupted": self.interrupted,
        }
        for name in ("transcript_ready", "reply_text_ready", "first_audio_synthesized", "first_audio_sent"):
            value = getattr(self, name)
            out[f"{name}_ms"] = None if value is None or base is None else round((value - base) * 1000, 1)
        return out


@dataclass
class TranscriptEntry:
    who: str  # "caller" | "bot"
    text: str
    t: float


@dataclass
class ConversationConfig:
    vad: VadConfig = field(default_factory=VadConfig)
    barge_in_min_ms: int = 300


class Conversation:
    """Runs one call's dialogue over audio."""

    def __init__(
        self,
        *,
        policy: FlowEngine,
        transcriber: Transcriber,
        synthesizer: Synthesizer,
        output: AudioOutput,
        on_hangup: Callable[[str], None],
        config: ConversationConfig | None = None,
        fallback_audio: np.ndarray | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self.transcriber = transcriber
        self.synthesizer = synthesizer
        self.output = output
        self.config = config or ConversationConfig()
        self._on_hangup = on_hangup
        self._fallback_audio = fallback_audio
        self._clock = clock
        self._endpointer = Endpointer(self.config.vad)
        self._utterances: asyncio.Queue[tuple[np.ndarray, float]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._speaking: asyncio.Task[None] | None = None
        self._speech_started_at: float | None = None
        self._interruptible = True
        self._closed = False
        self.transcript: list[TranscriptEntry] = []
        self.turns: list[TurnMetrics] = []
        self._current: TurnMetrics | None = None

    # lifecycle ----------------------------------------------------------------
    def start(self) -> None:
        """Greet the caller and start listening."""
        self._worker = asyncio.create_task(self._run(), name="conversation")

    async def close(self) -> None:
        self._closed = True
        for task in (self._speaking, self._worker):
            if task is not None:
                task.cancel()
        for task in (self._speaking, self._worker):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    def on_audio_sent(self, t: float) -> None:
        """The output track started playing a reply; closes the turn's latency record."""
        if self._current is not None and self._current.first_audio_sent is None:
            self._current.first_audio_sent = t

    # audio in -----------------------------------------------------------------
    def feed(self, pcm16k: np.ndarray, t: float) -> None:
        """Caller audio (16 kHz mono int16). Runs on the event loop: VAD is microseconds per frame."""
        if self._closed:
            return
        for event in self._endpointer.feed(pcm16k):
            if event.kind == "start":
                self._speech_started_at = t
            elif event.kind == "end":
                self._speech_started_at = None
                if event.audio is not None:
                    end_of_speech = t - self.config.vad.end_silence_ms / 1000
                    self._utterances.put_nowait((event.audio, end_of_speech))
        self._check_barge_in(t)

    def _check_barge_in(self, t: float) -> None:
        if self._speech_started_at is None or not self._interruptible:
            return
        if not (self.output.playing or (self._speaking is not None and not self._speaking.done())):
            return
        if (t - self._speech_started_at) * 1000 < self.config.barge_in_min_ms:
            return
        dropped = self.output.flush()
        if self._speaking is not None:
            self._speaking.cancel()
        if self._current is not None:
            self._current.interrupted = True
        log.info("barge-in: caller spoke over the bot, dropped %d ms of queued speech", dropped)
        self._speech_started_at = None

    # turns --------------------------------------------------------------------
    async def _run(self) -> None:
        greeting = self._policy_call(self.policy.start)
        await self._say(greeting)
        while not self._closed:
            audio, end_of_speech = await self._utterances.get()
            metrics = TurnMetrics(caller_speech_end=end_of_speech)
            try:
                text = await self.transcriber.transcribe(audio)
            except Exception:
                log.exception("speech-to-text failed; telling the caller")
                await self._say(Reply(lines=[SORRY_HEARING], node=self.policy.node))
                continue
            metrics.transcript_ready = self._clock()
            text = text.strip()
            if not text:
                continue
            metrics.transcript = text
            self.transcript.append(TranscriptEntry("caller", text, end_of_speech))
            reply = self._policy_call(lambda text=text: self.policy.handle(text))
            metrics.reply_text_ready = self._clock()
            metrics.reply = " ".join(reply.lines)
            self.turns.append(metrics)
            self._current = metrics
            await self._say(reply)

    def _policy_call(self, fn: Callable[[], Reply]) -> Reply:
        try:
            return fn()
        except Exception:
            log.exception("dialogue policy failed; speaking the fallback")
            return Reply(lines=[SORRY_TECHNICAL], node=getattr(self.policy, "node", "?"))

    async def _say(self, reply: Reply) -> None:
        """Speak a reply; waits for it to finish unless the caller barges in."""
        if self._speaking is not None and not self._speaking.done():
            self._speaking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._speaking
        self._interruptible = reply.interruptible
        self._speaking = asyncio.create_task(self._speak(reply), name="speak")
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(self._speaking)
        if reply.end_call and not self._speaking.cancelled():
            # Let the last words leave the jitter buffers before the media is torn down.
            await asyncio.sleep(HANGUP_TAIL_S)
            self._on_hangup("bot_ended")

    async def _speak(self, reply: Reply) -> None:
        metrics = self._current
        for line in reply.lines:
            self.transcript.append(TranscriptEntry("bot", line, self._clock()))
            try:
                async for chunk in self.synthesizer.stream(line):
                    if metrics is not None and metrics.first_audio_synthesized is None:
                        metrics.first_audio_synthesized = self._clock()
                    self.output.enqueue(chunk)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("text-to-speech failed for %r; playing the recorded fallback", line)
                if self._fallback_audio is not None:
                    self.output.enqueue(self._fallback_audio)
                break
        await self.output.wait_idle()
