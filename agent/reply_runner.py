"""Carries out one reply: speaks its lines, then what it asks for (LLM turn, HTTP request, handover, end).

Kept apart from turn-taking (`agent.conversation`): this module knows what a reply *does*; the conversation
decides *when* the bot may speak and when the caller has the floor. What the runner may not decide alone,
it asks its host: whether the call may hang up now (never while the caller is speaking), and how the
caller's silence budget runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import numpy as np

from agent.dialogue.effects import (
    Handover,
    HttpRequest,
    LlmRequest,
    RequestCallPermission,
    SendCallButton,
    ToolCall,
    unsafe_url,
)
from agent.dialogue.engine import Reply
from agent.providers.interfaces import LlmStream
from agent.speech.tts import Synthesizer
from agent.speech_handle import SpeechHandle
from agent.turn_record import TranscriptEntry, TurnMetrics

log = logging.getLogger(__name__)

SORRY_TECHNICAL = "Sorry, something went wrong on our side. Please try again in a moment."
SORRY_LLM = "Sorry, give me a moment. Could you say that again?"
NO_AGENTS = "Sorry, nobody is available to take your call right now. Please call us again later. Goodbye."
MAX_FOLLOW_UPS = 8


class AudioOutput(Protocol):
    """Where the bot's voice goes: the call's outbound track."""

    @property
    def playing(self) -> bool: ...
    @property
    def paused(self) -> bool: ...
    def enqueue(self, pcm: np.ndarray) -> None: ...
    def flush(self) -> int: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...
    async def wait_idle(self) -> None: ...


class RunnerHost(Protocol):
    """What the runner needs from the conversation that owns it."""

    policy: Any
    transcript: list[TranscriptEntry]

    @property
    def current_metrics(self) -> TurnMetrics | None: ...
    def policy_call(self, fn: Callable[[], Reply]) -> Reply: ...
    async def end_call(self, handle: SpeechHandle, reason: str) -> None: ...
    def handover(self, handle: SpeechHandle, handover: Handover) -> bool: ...
    def permission_request(self, reason: str) -> None: ...
    def call_button(self, button: SendCallButton) -> None: ...
    def set_interruptible(self, allowed: bool) -> None: ...
    def speech_failed(self, kind: str) -> bool: ...
    def speech_ok(self, kind: str) -> None: ...


class SpeechGaveUp(Exception):
    """Text-to-speech failed too often in a row: the reply stops and the call ends after the fallback."""


async def _close_quietly(closer: Callable[[], Awaitable[Any]]) -> None:
    with contextlib.suppress(Exception):
        await closer()


class ReplyRunner:
    def __init__(
        self,
        host: RunnerHost,
        *,
        synthesizer: Synthesizer,
        output: AudioOutput,
        clock: Callable[[], float],
        llm: LlmStream | None,
        http: Callable[[HttpRequest], Awaitable[tuple[bool, Any]]],
        llm_first_sentence_budget_s: float,
        fallback_audio: np.ndarray | None = None,
        tts_timeout_s: float | None = None,
    ) -> None:
        self._host = host
        self._tts_timeout_s = tts_timeout_s
        self.synthesizer = synthesizer
        self.output = output
        self._clock = clock
        self._llm = llm
        self._http = http
        self._llm_budget_s = llm_first_sentence_budget_s
        self._fallback_audio = fallback_audio

    async def perform(self, handle: SpeechHandle) -> None:
        """Carry out the handle's reply; when speech keeps failing, end the call once the fallback is heard."""
        try:
            if handle.fallback_first:
                self.play_fallback(handle)
            await self._perform(handle, handle.reply, 0)
        except SpeechGaveUp:
            log.error("text-to-speech keeps failing; ending the call after the recorded apology")
            handle.end_reason = "speech_failed"
            await self.output.wait_idle()
            await self._host.end_call(handle, "speech_failed")

    async def _perform(self, handle: SpeechHandle, reply: Reply, depth: int) -> None:
        """Speak `reply`, then carry out what it asks for (follow-ups recurse)."""
        if depth > MAX_FOLLOW_UPS:
            log.error("flow kept chaining replies (%d deep); stopping here", depth)
            return
        host = self._host
        handle.current = reply
        host.set_interruptible(reply.interruptible)
        await self.say_lines(reply.lines, handle)
        if reply.llm is not None and (reply.llm.messages or [{}])[-1].get("role") == "user":
            # Only a caller's words start an LLM turn; entering an LLM node waits for them.
            follow = await self._llm_turn(reply.llm, handle)
            await self._perform(handle, follow, depth + 1)
            return
        for action in reply.actions:
            if isinstance(action, HttpRequest):
                handle.committed = True  # the business system will act on it: no taking this turn back
                problem = unsafe_url(action.url)
                if problem is not None:
                    log.error("flow http step %s refused: %s (%s)", action.id, problem, action.url)
                    ok, data = False, None
                else:
                    ok, data = await self._http(action)
                follow = host.policy_call(
                    lambda action=action, ok=ok, data=data: host.policy.action_result(
                        action.id, ok, data if isinstance(data, dict) else None
                    )
                )
                await self._perform(handle, follow, depth + 1)
                return
            if isinstance(action, Handover):
                await self.output.wait_idle()
                host.set_interruptible(True)
                handle.committed = True
                if host.handover(handle, action):
                    return
                # No desk to hand over to: say so rather than leave the caller in silence.
                log.warning("flow asked for a handover to %r but handover is not configured", action.queue)
                await self.say_text(NO_AGENTS, handle)
                await self.output.wait_idle()
                await host.end_call(handle, "no_handover")
                return
            if isinstance(action, RequestCallPermission):
                host.permission_request(action.reason)
            if isinstance(action, SendCallButton):
                host.call_button(action)
        await self.output.wait_idle()
        host.set_interruptible(True)
        if reply.end_call:
            await host.end_call(handle, "bot_ended")

    async def say_lines(self, lines: list[str], handle: SpeechHandle | None = None) -> None:
        for line in lines:
            await self.say_text(line, handle)

    async def say_text(self, line: str, handle: SpeechHandle | None = None) -> None:
        """Synthesise and queue one line. Each piece of audio must come within the TTS deadline: a failing,
        full or hung pool gives the recorded fallback instead of dead air (once per reply)."""
        host = self._host
        metrics = host.current_metrics
        host.transcript.append(TranscriptEntry("bot", line, self._clock()))
        stream = self.synthesizer.stream(line)
        try:
            while True:
                try:
                    chunk = await asyncio.wait_for(anext(stream), self._tts_timeout_s)
                except StopAsyncIteration:
                    break
                if metrics is not None and metrics.first_audio_synthesized is None:
                    metrics.first_audio_synthesized = self._clock()
                self.output.enqueue(chunk)
                if handle is not None:
                    handle.audio_started = True
                    handle.enqueued(line, chunk.size * 1000 // self.synthesizer.sample_rate)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if isinstance(exc, TimeoutError):
                log.error(
                    "text-to-speech gave no audio within %.1f s for %r; playing the recorded fallback",
                    self._tts_timeout_s or 0.0,
                    line,
                )
            else:
                log.exception("text-to-speech failed for %r; playing the recorded fallback", line)
            if handle is None or not handle.fallback_played:
                self.play_fallback(handle)
                # Only a reply can end the call; a line said outside one (`Conversation.say`) just counts.
                if host.speech_failed("tts") and handle is not None:
                    raise SpeechGaveUp from exc
            return
        finally:
            # Already finished when an exception (a timeout, a barge-in) went through it: then this is instant.
            closer = getattr(stream, "aclose", None)
            if closer is not None:
                await _close_quietly(closer)
        host.speech_ok("tts")

    def play_fallback(self, handle: SpeechHandle | None = None) -> None:
        """Queue the recorded apology: synthesised at warm-up, it needs neither the TTS nor the pool."""
        if handle is not None:
            handle.fallback_played = True
        if self._fallback_audio is None:
            log.error("no recorded fallback line (warm-up failed): the caller hears nothing for this reply")
            return
        self.output.enqueue(self._fallback_audio)
        if handle is not None:
            handle.audio_started = True

    async def _llm_turn(self, request: LlmRequest, handle: SpeechHandle) -> Reply:
        """Stream the LLM's answer sentence by sentence into speech; tools are applied by the engine."""
        host = self._host
        llm = self._llm
        if llm is None:
            log.error("flow node %s needs an LLM but none is configured (WACALL_LLM_BASE_URL)", request.node)
            await self.say_text(SORRY_TECHNICAL, handle)
            return host.policy_call(lambda: host.policy.llm_result("", []))
        messages = request.chat_messages()  # caller-controlled facts go apart from the instructions
        spoken: list[str] = []
        tools: list[ToolCall] = []
        metrics = host.current_metrics
        # The caller's silence budget runs from the end of their speech, not from our request: whatever
        # endpointing and STT took is already spent.
        start = metrics.caller_speech_end if metrics and metrics.caller_speech_end else self._clock()
        deadline = start + self._llm_budget_s
        stream = llm.stream_reply(messages, request.tools or None)
        interrupted = False
        try:
            while True:
                wait = None if spoken else max(0.05, deadline - self._clock())
                try:
                    event = await asyncio.wait_for(anext(stream), wait)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    log.warning("LLM silent past the caller's budget on node %s; speaking the fallback", request.node)
                    await self.say_text(SORRY_LLM, handle)
                    break
                if event.kind == "sentence" and event.text:
                    if metrics is not None and metrics.reply_text_ready is None:
                        metrics.reply_text_ready = self._clock()
                    spoken.append(event.text)
                    await self.say_text(event.text, handle)
                elif event.kind == "tool_call" and event.tool_call is not None:
                    tools.append(ToolCall(event.tool_call.name, dict(event.tool_call.arguments)))
                elif event.kind == "error":
                    log.warning("LLM failed on node %s: %s; speaking the fallback", request.node, event.error)
                    if not spoken:
                        await self.say_text(SORRY_LLM, handle)
                    break
        except asyncio.CancelledError:
            interrupted = True
            if handle.interrupted_by == "barge_in":
                # Keep the engine in step with what the caller heard; a hang-up or handover the model asked
                # for is honoured by the conversation, through the reply recorded on the handle.
                handle.current = host.policy_call(lambda: host.policy.llm_result(" ".join(spoken), tools))
            raise
        finally:
            closer = getattr(stream, "aclose", None)
            if closer is not None and not interrupted:
                with contextlib.suppress(Exception):
                    await closer()
            elif closer is not None:
                asyncio.get_running_loop().create_task(_close_quietly(closer))
        if metrics is not None:
            metrics.reply = " ".join(spoken)
        return host.policy_call(lambda: host.policy.llm_result(" ".join(spoken), tools))
