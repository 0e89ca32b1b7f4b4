"""Turn-taking for one call: listen, detect the end of the caller's turn, reply, and yield on barge-in.

It owns no sockets or models: audio comes in through `feed`, goes out through an `AudioOutput`, and the
models and policy are passed in, so its logic is testable and the same code serves every call.

Latency: recognition starts at the first short pause ("pause" from the endpointer), so it overlaps the
end-of-turn silence instead of following it; if the caller goes on talking the guess is dropped.

Barge-in: when the caller starts talking over the bot, the bot goes quiet at once (paused, queue kept).
If the caller keeps talking past `barge_in_min_ms`, it is a real interruption: the queue is flushed and
synthesis cancelled. If it was only a backchannel ("uh-huh", "ok") or a noise, the bot resumes where it
stopped. Lines marked uninterruptible ignore the caller until they are done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from agent.actions import run_http
from agent.dialogue.effects import Handover, HttpRequest, LlmRequest, RequestCallPermission, ToolCall
from agent.dialogue.engine import FlowEngine, Reply
from agent.speech.stt import Transcriber
from agent.speech.tts import Synthesizer
from agent.speech.vad import Endpointer, VadConfig
from agent.turn_record import TranscriptEntry, TurnMetrics
from agent.turn_signals import is_backchannel, looks_complete

log = logging.getLogger(__name__)

SORRY_HEARING = "Sorry, I had trouble hearing that. Could you say it again?"
SORRY_TECHNICAL = "Sorry, something went wrong on our side. Please try again in a moment."
SORRY_LLM = "Sorry, give me a moment. Could you say that again?"
NO_AGENTS = "Sorry, nobody is available to take your call right now. Please call us again later. Goodbye."
HANGUP_TAIL_S = 0.4
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


@dataclass
class ConversationConfig:
    vad: VadConfig = field(default_factory=VadConfig)
    barge_in_min_ms: int = 600  # talking over the bot this long is an interruption, not a backchannel
    speculative_stt: bool = True
    # An LLM that has not produced a first sentence this long after the caller stopped talking is replaced
    # by a spoken fallback: never dead air.
    llm_first_sentence_budget_s: float = 1.5
    # End the turn at the first pause when its transcript is a finished sentence ("…my order." / "…?"),
    # instead of waiting out the whole end-of-turn silence.
    early_end_on_complete_sentence: bool = True
    early_end_min_words: int = 2  # a one-word "No." at a pause is often "No, that's all…": wait it out
    # Partial transcripts while the caller is still talking, every this much speech (None: off; costs CPU).
    partial_stt_every_ms: int | None = None


class EndpointCheck(Protocol):
    async def still_talking(self, audio16k: np.ndarray, silence_ms: int) -> bool: ...


class LlmStream(Protocol):
    def stream_reply(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> Any: ...


@dataclass
class ConversationHooks:
    """What the conversation may ask of its call, beyond hanging up."""

    llm: LlmStream | None = None
    on_handover: Callable[[Handover], None] | None = None
    on_permission_request: Callable[[str], None] | None = None
    endpoint_check: EndpointCheck | None = None  # second opinion before an early end of turn
    on_partial: Callable[[str], None] | None = None  # partial transcripts while the caller speaks
    http: Callable[[HttpRequest], Awaitable[tuple[bool, Any]]] = run_http


@dataclass
class _Utterance:
    audio: np.ndarray
    end_of_speech: float
    speech_ms: int
    overlapped: bool  # started while the bot was talking
    confirmed_barge_in: bool
    guess: asyncio.Task[str] | None = None  # the transcript started at this utterance's last pause


async def _close_quietly(closer: Callable[[], Awaitable[Any]]) -> None:
    with contextlib.suppress(Exception):
        await closer()


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
        hooks: ConversationHooks | None = None,
    ) -> None:
        self.hooks = hooks or ConversationHooks()
        self._http = self.hooks.http
        self._suspended = False
        self._barged_in = False
        self._finished_replies: set[int] = set()
        self._side_tasks: set[asyncio.Task[Any]] = set()
        self._partial: asyncio.Task[None] | None = None
        self._partial_at_ms = 0
        self.partial_transcript = ""
        self.policy = policy
        self.transcriber = transcriber
        self.synthesizer = synthesizer
        self.output = output
        self.config = config or ConversationConfig()
        self._on_hangup = on_hangup
        self._fallback_audio = fallback_audio
        self._clock = clock
        self._endpointer = Endpointer(self.config.vad)
        self._utterances: asyncio.Queue[_Utterance] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._speaking: asyncio.Task[None] | None = None
        self._speculation: tuple[int, asyncio.Task[str]] | None = None
        self._speech_started_at: float | None = None
        self._overlapped = False
        self._barge_confirmed = False
        self._interruptible = True
        self._closed = False
        self.transcript: list[TranscriptEntry] = []
        self.turns: list[TurnMetrics] = []
        self._current: TurnMetrics | None = None
        self.barge_ins = 0
        self.false_interruptions = 0

    # lifecycle ----------------------------------------------------------------
    def start(self) -> None:
        """Say the greeting (queued even before media opens, so it plays from the first frame) and listen."""
        self._worker = asyncio.create_task(self._run(), name="conversation")

    async def close(self) -> None:
        self._closed = True
        tasks = [
            self._speaking,
            self._worker,
            self._speculation[1] if self._speculation else None,
            self._partial,
            *self._side_tasks,
        ]
        for task in tasks:
            if task is not None:
                task.cancel()
        for task in tasks:
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    def on_audio_sent(self, t: float) -> None:
        """The output track started playing a reply; closes the turn's latency record."""
        if self._current is not None and self._current.first_audio_sent is None:
            self._current.first_audio_sent = t

    @property
    def bot_talking(self) -> bool:
        return self.output.playing or (self._speaking is not None and not self._speaking.done())

    # audio in -----------------------------------------------------------------
    def feed(self, pcm16k: np.ndarray, t: float) -> None:
        """Caller audio (16 kHz mono int16). Runs on the event loop: VAD is microseconds per frame."""
        if self._closed or self._suspended:
            return
        for event in self._endpointer.feed(pcm16k):
            if event.kind == "start":
                self._speech_started_at = t
                self._overlapped = self.bot_talking
                self._barge_confirmed = False
                if self._overlapped and not self._interruptible:
                    log.debug("caller spoke during an uninterruptible line; ignoring it")
            elif event.kind == "pause" and event.audio is not None:
                self._on_pause(event.audio, event.speech_ms, t)
            elif event.kind == "end":
                self._on_end(event.audio, event.speech_ms, t)
        self._check_barge_in(t)
        self._maybe_partial()

    def _maybe_partial(self) -> None:
        """While the caller talks, transcribe what they said so far every `partial_stt_every_ms` of speech
        (one at a time): the console shows it live and flows can see where the caller is going."""
        every = self.config.partial_stt_every_ms
        ep = self._endpointer
        if not every or not ep.in_speech or (self._partial is not None and not self._partial.done()):
            return
        if ep.voiced_ms < self._partial_at_ms + every:
            return
        self._partial_at_ms = ep.voiced_ms
        audio = ep.current_audio()
        if audio is not None:
            self._partial = asyncio.create_task(self._transcribe_partial(audio), name="stt-partial")

    async def _transcribe_partial(self, audio: np.ndarray) -> None:
        try:
            text = await self._transcribe(audio)
        except Exception:
            return
        if text and self._endpointer.in_speech:
            self.partial_transcript = text
            log.debug("partial transcript: %r", text)
            if self.hooks.on_partial is not None:
                self.hooks.on_partial(text)

    def _on_pause(self, audio: np.ndarray, speech_ms: int, t: float) -> None:
        if self._overlapped and not self._barge_confirmed and self.output.paused:
            # A short burst over the bot ("uh-huh"): let it go on while we find out what was said.
            self.output.resume()
        if self.config.speculative_stt and not (self._overlapped and not self._interruptible):
            self._drop_speculation()
            task = asyncio.create_task(self._transcribe(audio), name="stt-speculative")
            self._speculation = (speech_ms, task)
            if self.config.early_end_on_complete_sentence and not self._overlapped:
                early = asyncio.create_task(self._try_end_early(task, speech_ms, t, audio), name="early-end")
                self._side_tasks.add(early)
                early.add_done_callback(self._side_tasks.discard)

    async def _try_end_early(
        self, task: asyncio.Task[str], speech_ms: int, paused_at: float, audio: np.ndarray
    ) -> None:
        """The guess came back while the caller is still silent: if it reads as a finished sentence (and
        Silero, as a second opinion, hears no speech in the pause), the turn is over now. Speech that
        resumed in the meantime (more voiced audio) cancels this. Silero runs alongside the recognition
        (the pool has a thread for each), so the second opinion costs no extra wait."""
        check = self.hooks.endpoint_check
        opinion = (
            asyncio.ensure_future(check.still_talking(audio, self._endpointer.pause_ms)) if check is not None else None
        )
        try:
            try:
                await asyncio.shield(task)
            except Exception:
                return
            if self._closed or task.cancelled() or self._speculation is None or self._speculation[1] is not task:
                return
            if not looks_complete(task.result(), self.config.early_end_min_words):
                return
            if opinion is not None and await opinion:
                log.debug("Silero hears speech in the pause; waiting for the full end-of-turn silence")
                return
        finally:
            if opinion is not None and not opinion.done():
                opinion.cancel()
        self._maybe_end_early(task, speech_ms, paused_at)

    def _maybe_end_early(self, task: asyncio.Task[str], speech_ms: int, paused_at: float) -> None:
        if self._speculation is None or self._speculation[1] is not task:
            return
        ep = self._endpointer
        if not ep.in_speech or ep.voiced_now or ep.voiced_ms != speech_ms:
            return
        event = ep.end_now()
        if event is not None:
            log.debug("early end of turn on a complete sentence: %r", task.result())
            self._on_end(event.audio, event.speech_ms, paused_at, silence_s=self._endpointer.pause_ms / 1000)

    def _on_end(self, audio: np.ndarray | None, speech_ms: int, t: float, silence_s: float | None = None) -> None:
        overlapped, confirmed = self._overlapped, self._barge_confirmed
        self._partial_at_ms = 0
        self.partial_transcript = ""
        self._speech_started_at = None
        self._overlapped = self._barge_confirmed = False
        if self.output.paused and not confirmed:
            self.output.resume()
        if audio is None or (overlapped and not self._interruptible):
            self._drop_speculation()
            return
        if silence_s is None:
            silence_s = self.config.vad.end_silence_ms / 1000
        end_of_speech = t - silence_s
        # The guess belongs to this utterance only if it was made on exactly this audio; hand it over now,
        # before the next utterance's pause can replace it.
        guess = None
        if self._speculation is not None:
            guessed_ms, task = self._speculation
            self._speculation = None
            if guessed_ms == speech_ms and not task.cancelled():
                guess = task
            else:
                task.cancel()
        self._utterances.put_nowait(_Utterance(audio, end_of_speech, speech_ms, overlapped, confirmed, guess))

    def _check_barge_in(self, t: float) -> None:
        if self._speech_started_at is None or not self._overlapped or not self._interruptible:
            return
        if self._barge_confirmed or not self.bot_talking:
            return
        if self._endpointer.voiced_now and not self.output.paused:
            self.output.pause()
        if (t - self._speech_started_at) * 1000 >= self.config.barge_in_min_ms and self._endpointer.voiced_now:
            self._interrupt("caller kept talking over the bot")
            self._barge_confirmed = True

    def _interrupt(self, why: str) -> None:
        dropped = self.output.flush()
        if self._speaking is not None and not self._speaking.done():
            self._barged_in = True
            self._speaking.cancel()
        if self._current is not None:
            self._current.interrupted = True
        self.barge_ins += 1
        log.info("barge-in (%s): dropped %d ms of queued speech", why, dropped)

    # recognition --------------------------------------------------------------
    async def _transcribe(self, audio: np.ndarray) -> str:
        return (await self.transcriber.transcribe(audio)).strip()

    def _drop_speculation(self) -> None:
        if self._speculation is not None:
            self._speculation[1].cancel()
            self._speculation = None

    async def _recognise(self, utterance: _Utterance, metrics: TurnMetrics) -> str:
        if utterance.guess is not None and not utterance.guess.cancelled():
            metrics.speculative = True
            return await utterance.guess
        return await self._transcribe(utterance.audio)

    # turns --------------------------------------------------------------------
    async def _run(self) -> None:
        self._start_speaking(self._policy_call(self.policy.start))
        while not self._closed:
            utterance = await self._utterances.get()
            metrics = TurnMetrics(caller_speech_end=utterance.end_of_speech)
            try:
                text = await self._recognise(utterance, metrics)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("speech-to-text failed; telling the caller")
                self._start_speaking(Reply(lines=[SORRY_HEARING], node=self.policy.node))
                continue
            metrics.transcript_ready = self._clock()
            if self._suspended:
                continue  # a human took the call while this was being recognised: not ours to answer
            if utterance.overlapped and not utterance.confirmed_barge_in:
                if is_backchannel(text):
                    self.false_interruptions += 1
                    log.debug("backchannel %r while the bot spoke; carrying on", text)
                    continue
                self._interrupt(f"caller said {text!r}")
            if not text:
                continue
            metrics.transcript = text
            self.transcript.append(TranscriptEntry("caller", text, utterance.end_of_speech))
            reply = self._policy_call(lambda text=text: self.policy.handle(text))
            metrics.reply_text_ready = self._clock()
            metrics.reply = " ".join(reply.lines)
            self.turns.append(metrics)
            log.info("turn: %r -> %r (node %s)", text, metrics.reply, reply.node)
            self._current = metrics
            if reply.lines or reply.end_call or reply.llm is not None or reply.actions:
                self._start_speaking(reply)

    def _policy_call(self, fn: Callable[[], Reply]) -> Reply:
        try:
            return fn()
        except Exception:
            log.exception("dialogue policy failed; speaking the fallback")
            return Reply(lines=[SORRY_TECHNICAL], node=getattr(self.policy, "node", "?"))

    def _start_speaking(self, reply: Reply) -> None:
        if self._speaking is not None and not self._speaking.done():
            self._speaking.cancel()
            self.output.flush()
        self._interruptible = reply.interruptible
        self._barged_in = False
        self._speaking = asyncio.create_task(self._perform(reply), name="speak")

    async def _perform(self, reply: Reply, depth: int = 0) -> None:
        """Speak a reply, then carry out what it asks for: LLM turn, http call, handover, permission, end."""
        if depth > MAX_FOLLOW_UPS:
            log.error("flow kept chaining replies (%d deep); stopping here", depth)
            return
        try:
            await self._perform_steps(reply, depth)
        except asyncio.CancelledError:
            if self._barged_in:
                self._finish_after_interruption(reply)
            raise

    def _finish_after_interruption(self, reply: Reply) -> None:
        """The caller talked over the bot: its words are dropped, but a handover or hang-up still happens."""
        if id(reply) in self._finished_replies:
            return
        self._finished_replies.add(id(reply))
        handover = next((a for a in reply.actions if isinstance(a, Handover)), None)
        if handover is not None and self.hooks.on_handover is not None:
            self.hooks.on_handover(handover)
        elif reply.end_call:
            self._on_hangup("bot_ended")

    async def _perform_steps(self, reply: Reply, depth: int) -> None:
        self._interruptible = reply.interruptible
        await self._say_lines(reply.lines)
        if reply.llm is not None and (reply.llm.messages or [{}])[-1].get("role") == "user":
            # Only a caller's words start an LLM turn; entering an LLM node waits for them.
            follow = await self._llm_turn(reply.llm)
            await self._perform(follow, depth + 1)
            return
        for action in reply.actions:
            if isinstance(action, HttpRequest):
                ok, data = await self._http(action)
                follow = self._policy_call(
                    lambda action=action, ok=ok, data=data: self.policy.action_result(
                        action.id, ok, data if isinstance(data, dict) else None
                    )
                )
                await self._perform(follow, depth + 1)
                return
            if isinstance(action, Handover):
                await self.output.wait_idle()
                self._interruptible = True
                if self.hooks.on_handover is not None:
                    self.hooks.on_handover(action)
                    return
                # No desk to hand over to: say so rather than leave the caller in silence.
                log.warning("flow asked for a handover to %r but handover is not configured", action.queue)
                await self._say_text(NO_AGENTS)
                await self.output.wait_idle()
                await asyncio.sleep(HANGUP_TAIL_S)
                self._on_hangup("no_handover")
                return
            if isinstance(action, RequestCallPermission) and self.hooks.on_permission_request is not None:
                self.hooks.on_permission_request(action.reason)
        await self.output.wait_idle()
        self._interruptible = True
        if reply.end_call:
            # Let the last words leave the jitter buffers before the media is torn down.
            await asyncio.sleep(HANGUP_TAIL_S)
            self._on_hangup("bot_ended")

    async def _say_lines(self, lines: list[str]) -> None:
        for line in lines:
            await self._say_text(line)

    async def _say_text(self, line: str) -> None:
        metrics = self._current
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

    async def _llm_turn(self, request: LlmRequest) -> Reply:
        """Stream the LLM's answer sentence by sentence into speech; tools are applied by the engine."""
        llm = self.hooks.llm
        if llm is None:
            log.error("flow node %s needs an LLM but none is configured (WACALL_LLM_BASE_URL)", request.node)
            await self._say_text(SORRY_TECHNICAL)
            return self._policy_call(lambda: self.policy.llm_result("", []))
        messages = [{"role": "system", "content": request.system_prompt}, *request.messages]
        spoken: list[str] = []
        tools: list[ToolCall] = []
        metrics = self._current
        # The caller's silence budget runs from the end of their speech, not from our request: whatever
        # endpointing and STT took is already spent.
        start = metrics.caller_speech_end if metrics and metrics.caller_speech_end else self._clock()
        deadline = start + self.config.llm_first_sentence_budget_s
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
                    await self._say_text(SORRY_LLM)
                    break
                if event.kind == "sentence" and event.text:
                    if metrics is not None and metrics.reply_text_ready is None:
                        metrics.reply_text_ready = self._clock()
                    spoken.append(event.text)
                    await self._say_text(event.text)
                elif event.kind == "tool_call" and event.tool_call is not None:
                    tools.append(ToolCall(event.tool_call.name, dict(event.tool_call.arguments)))
                elif event.kind == "error":
                    log.warning("LLM failed on node %s: %s; speaking the fallback", request.node, event.error)
                    if not spoken:
                        await self._say_text(SORRY_LLM)
                    break
        except asyncio.CancelledError:
            interrupted = True
            if self._barged_in:
                # Keep the engine in step with what the caller heard, and honour a hang-up or handover.
                self._finish_after_interruption(
                    self._policy_call(lambda: self.policy.llm_result(" ".join(spoken), tools))
                )
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
        return self._policy_call(lambda: self.policy.llm_result(" ".join(spoken), tools))

    # handover -----------------------------------------------------------------
    def suspend(self) -> None:
        """A human takes over: the bot stops talking and stops treating the caller's words as turns."""
        self._suspended = True
        if self._speaking is not None:
            self._speaking.cancel()
        self.output.flush()
        self._drop_speculation()

    def resume(self, reply: Reply) -> None:
        """Back to the bot (agent handed the call back, or the queue gave up): say `reply` and listen."""
        self._suspended = False
        self._endpointer.reset()
        while not self._utterances.empty():
            self._utterances.get_nowait()
        self._start_speaking(reply)

    async def say(self, text: str, *, interruptible: bool = True) -> None:
        """Speak outside the flow (hold messages, queue position); waits until it has been played."""
        self._interruptible = interruptible
        await self._say_text(text)
        await self.output.wait_idle()
