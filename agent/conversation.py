"""Turn-taking for one call: listen, decide when the caller's thought is over, reply, and yield the floor.

It owns no sockets or models: audio comes in through `feed`, goes out through an `AudioOutput`, and the
models and policy are passed in, so its logic is testable and the same code serves every call. What a
reply *does* (speak, LLM turn, business request, handover, end) is `agent.reply_runner`'s job; each reply
in flight is one `SpeechHandle`.

Latency: each utterance has one recognition stream (`agent.speech.utterance_stream`), fed as the caller
talks, so a streaming engine decodes along and a batch one (Whisper) is asked at the first short pause
("pause" from the endpointer): recognition overlaps the end-of-turn silence instead of following it, and
the end of the turn reuses that decode when nothing was said after it. A
that reads as a finished sentence ends the turn at once; one that sounds unfinished ("…for the", "um",
digits being read out) makes the turn wait for a longer silence.

One answer per thought: real callers pause mid-sentence. When the caller starts talking again within
`continuation_window_s` of the bot taking the turn, the bot drops its answer at once (as for a barge-in),
takes back what that fragment did to the flow (a miss, a node moved, a slot filled), and answers the whole
thought, recognised again as one piece of audio, once the caller is done.

Barge-in: when the caller starts talking over the bot, the bot goes quiet at once (paused, queue kept).
If the caller keeps talking past `barge_in_min_ms`, it is a real interruption: the queue is flushed and
synthesis cancelled. If it was only a backchannel ("uh-huh", "ok") or a noise, the bot resumes where it
stopped. Lines marked uninterruptible ignore the caller until they are done.

Keys: a key pressed on the caller's dialpad (`on_key`) is unambiguous, so it stops an interruptible line at
once, without the barge-in wait. Keys are collected into one entry by the current question's rules (a menu
takes one key; a number question takes digits until its terminator, its most digits or a pause, timed by
`agent.key_input.KeyCollector`), and the entry is a turn like a spoken one: a transcript entry (masked for a
secret question), turn metrics, and the flow's reply spoken. While a person has the call they are recorded only.

Never hung up on: a call ends only when its ending line has been heard and the caller is not speaking; a
caller who talks over a goodbye is listened to ("wait, one more thing" reopens the call), and the call ends
once they have been quiet for `closing_quiet_s`. A caller who says nothing is prompted, then bid goodbye.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from agent.actions import run_http
from agent.dialogue.effects import Handover, HttpRequest, SendCallButton
from agent.dialogue.engine import FlowEngine, Reply
from agent.dialogue.model import DEFAULT_KEY_TIMEOUT_S, KEYPAD_KEYS, MASK
from agent.dialogue.state import KeyEntry
from agent.key_input import KeyCollector
from agent.media.dtmf import KeyPress
from agent.providers.interfaces import EndpointCheck
from agent.reply_runner import (
    NO_AGENTS,
    SORRY_LLM,
    SORRY_TECHNICAL,
    AudioOutput,
    LlmStream,
    ReplyRunner,
)
from agent.speech.stt import Transcriber
from agent.speech.tts import Synthesizer
from agent.speech.utterance_stream import UtteranceStream, transcribe_once
from agent.speech.vad import Endpointer
from agent.speech_handle import SpeechHandle
from agent.turn_config import ConversationConfig
from agent.turn_record import TranscriptEntry, TurnMetrics
from agent.turn_signals import (
    DIGIT_WORDS,
    asks_for_the_turn,
    asks_to_wait,
    hesitates,
    is_backchannel,
    is_bare_yes_no,
    is_known_backchannel,
    is_opener,
    looks_complete,
    only_trails_off,
    sounds_unfinished,
)

__all__ = [
    "KEYS_PREFIX",
    "NO_AGENTS",
    "SORRY_HEARING",
    "SORRY_LLM",
    "SORRY_TECHNICAL",
    "AudioOutput",
    "Conversation",
    "ConversationConfig",
    "ConversationHooks",
    "EndpointCheck",
    "LlmStream",
]

log = logging.getLogger(__name__)

SORRY_HEARING = "Sorry, I had trouble hearing that. Could you say it again?"
#: How keypad entries appear in transcripts and call records ("[keys] 1", "[keys] ••••" for a PIN): a caller
#: line like any other, so every consumer of the transcript shows them without knowing about keys.
KEYS_PREFIX = "[keys] "
#: The rules for keys when the dialogue policy says nothing about them: one key, one choice.
_ONE_KEY = KeyEntry(max_digits=1, terminator=None, timeout_s=DEFAULT_KEY_TIMEOUT_S)
HANGUP_TAIL_S = 0.4
AUDIO_GAP_S = 0.25  # no caller audio this long while they are mid-utterance: their phone went quiet
AUDIO_GAP_CHECK_S = 0.05
ONSET_GATE_MAX_S = 0.15  # longest a reply's first sound waits for the VAD to tell whether the caller speaks
JOIN_GAP_S = 0.25  # silence put between two fragments of one thought before they are recognised together
# A pause where Silero heard voice at its start is looked at again this far in (before the usual end of turn).
SECOND_LOOK_MS = 260
HESITANT_MARGIN_MS = 300  # a hesitant caller's end of turn waits this much longer than their longest pause
SAMPLE_RATE = 16000


@dataclass
class ConversationHooks:
    """What the conversation may ask of its call, beyond hanging up."""

    llm: LlmStream | None = None
    on_handover: Callable[[Handover], None] | None = None
    on_permission_request: Callable[[str], None] | None = None
    on_call_button: Callable[[SendCallButton], None] | None = None
    endpoint_check: EndpointCheck | None = None  # second opinion before an early end of turn
    on_partial: Callable[[str], None] | None = None  # partial transcripts while the caller speaks
    # Keys pressed while a person has the call (for their console's live transcript); the bot ignores them.
    on_keys: Callable[[str], None] | None = None
    http: Callable[[HttpRequest], Awaitable[tuple[bool, Any]]] = run_http


@dataclass(eq=False)
class _Utterance:
    """One stretch of the caller's speech, as the endpointer cut it, and what became of it."""

    audio: np.ndarray  # this fragment and every earlier fragment of the same thought, joined
    end_of_speech: float
    speech_ms: int
    overlapped: bool  # started while the bot was talking
    confirmed_barge_in: bool
    taken_at: float  # when the bot took the turn (stream time)
    stream: UtteranceStream | None = None  # its recognition, fed while the caller spoke
    prefix: _Utterance | None = None  # the earlier fragment this one continues
    text: str | None = None
    continued: bool = False  # the caller went on talking: this fragment is part of a longer thought
    answer: SpeechHandle | None = None
    restore_point: Any = None  # the dialogue state before this thought was first acted on
    entry: TranscriptEntry | None = None
    metrics: TurnMetrics | None = None
    silence_s: float = 0.0  # the silence that ended it
    resumed_at: float | None = None  # when the caller went on after it (stream time)
    # Its answer (ended early, inside what may be a comma's pause) starts only once the caller has been silent
    # until then; still set if they went on, so the dropped answer counts as never heard.
    quiet_until: float | None = None
    # Said while the answer to this earlier fragment was playing: a reaction to it ("uh-huh") or the
    # caller's thought going on ("My TV… keeps…"); the words decide.
    reaction_to: _Utterance | None = None

    @property
    def seconds(self) -> float:
        return self.audio.size / SAMPLE_RATE

    @property
    def pause_after_ms(self) -> float | None:
        """How long the caller was silent before going on after this fragment (None until they do)."""
        return None if self.resumed_at is None else (self.resumed_at - self.end_of_speech) * 1000

    def chain(self) -> list[_Utterance]:
        out, u = [], self.prefix
        while u is not None:
            out.append(u)
            u = u.prefix
        return out


def _join(prefix: _Utterance, audio: np.ndarray) -> np.ndarray:
    gap = np.zeros(int(JOIN_GAP_S * SAMPLE_RATE), dtype=np.int16)
    return np.concatenate([prefix.audio, gap, audio]) if audio.size else prefix.audio


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
        self.policy = policy
        self.transcriber = transcriber
        self.synthesizer = synthesizer
        self.output = output
        self.config = config or ConversationConfig()
        self._on_hangup = on_hangup
        self._clock = clock
        self._runner = ReplyRunner(
            self,
            synthesizer=synthesizer,
            output=output,
            clock=clock,
            llm=self.hooks.llm,
            http=self.hooks.http,
            llm_first_sentence_budget_s=self.config.llm_first_sentence_budget_s,
            fallback_audio=fallback_audio,
            tts_timeout_s=self.config.tts_first_audio_timeout_s,
        )
        self._endpointer = Endpointer(self.config.vad)
        self._utterances: asyncio.Queue[_Utterance] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._speech: SpeechHandle | None = None  # what the bot is saying now
        self._interruptible = True  # the line being spoken may be interrupted
        self._suspended = False
        self._closed = False
        self._hung_up = False
        # The caller's current utterance.
        self._speech_started_at: float | None = None
        self._overlapped = False
        self._barge_confirmed = False
        self._continuing: _Utterance | None = None  # the earlier fragment the current speech continues
        self._last_fed_at: float | None = None  # when caller audio last came in (clock time)
        self._gap_filler: asyncio.Task[None] | None = None
        self._gated_since: float | None = None  # a reply's start waits: the caller may be starting to speak
        self._held: _Utterance | None = None  # the early-ended utterance whose answer waits for quiet
        self._continuation_confirmed = False  # ... with enough speech to be words, not a cough
        self._listening: UtteranceStream | None = None  # the current utterance's recognition
        self._speculation: tuple[int, asyncio.Task[str]] | None = None
        self._partial: asyncio.Task[None] | None = None
        self._partial_at_ms = 0
        self.partial_transcript = ""
        # Turns.
        self._last_taken: _Utterance | None = None
        self._recognising = 0  # utterances taken but not yet answered or dropped
        self._closing: SpeechHandle | None = None  # an ending the caller talked over
        self._closing_heard = False  # ... which had been heard in full
        self._closing_repeated = False
        self._closing_timer: asyncio.Task[None] | None = None
        self._silence_timer: asyncio.Task[None] | None = None
        self._silence_stage = 0
        self._side_tasks: set[asyncio.Task[Any]] = set()
        self._current: TurnMetrics | None = None
        self.transcript: list[TranscriptEntry] = []
        self.turns: list[TurnMetrics] = []
        self.barge_ins = 0
        self.false_interruptions = 0
        self.continuations = 0  # fragments joined into a longer thought
        self.false_starts = 0  # answers whose audio had started and was dropped because the caller went on
        # The caller pauses mid-thought (went on after the bot took the turn, or hesitates with "um"): from
        # then on each turn waits for a longer silence and never ends early on a full stop.
        self.hesitant = False
        self._longest_pause_ms = 0  # the longest silence this caller went on talking after, mid-thought
        self._resumes_seen = 0
        self.silence_prompts = 0
        self._failures: dict[str, int] = {}  # speech failures in a row, by kind ("stt", "tts")
        self._keys = KeyCollector(self._keys_entered)
        self.key_presses = 0

    # lifecycle ----------------------------------------------------------------
    def start(self) -> None:
        """Say the greeting (queued even before media opens, so it plays from the first frame) and listen."""
        self._worker = asyncio.create_task(self._run(), name="conversation")
        self._gap_filler = asyncio.create_task(self._fill_gaps(), name="caller-audio-gaps")

    async def _fill_gaps(self) -> None:
        """A caller whose phone stops sending audio (Opus DTX in silence, a muted or idle microphone, lost
        packets) is silent: while they are mid-utterance, a gap in their audio is fed to the endpointer as
        the silence it is, so their turn still ends instead of waiting for the next packet."""
        while not self._closed:
            await asyncio.sleep(AUDIO_GAP_CHECK_S)
            last = self._last_fed_at
            if last is None:
                continue
            gap = self._clock() - last
            if not self._endpointer.in_speech:
                if self._held is not None and gap >= AUDIO_GAP_S:
                    self._gate_reply_start(self._clock())  # no packets since (DTX): the silence is real
                continue
            if gap >= AUDIO_GAP_S:
                self.feed(np.zeros(int(gap * SAMPLE_RATE), dtype=np.int16), last + gap)

    async def close(self) -> None:
        self._closed = True
        self._stop_listening()
        key_timer = self._keys.close()
        tasks = [
            key_timer,
            self._speech.task if self._speech else None,
            self._worker,
            self._gap_filler,
            self._speculation[1] if self._speculation else None,
            self._partial,
            self._closing_timer,
            self._silence_timer,
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
        return self.output.playing or (self._speech is not None and not self._speech.done())

    # what the reply runner asks of us ---------------------------------------------
    @property
    def current_metrics(self) -> TurnMetrics | None:
        return self._current

    def set_interruptible(self, allowed: bool) -> None:
        self._interruptible = allowed

    def policy_call(self, fn: Callable[[], Reply]) -> Reply:
        try:
            return fn()
        except Exception:
            log.exception("dialogue policy failed; speaking the fallback")
            return Reply(lines=[SORRY_TECHNICAL], node=getattr(self.policy, "node", "?"))

    def handover(self, handle: SpeechHandle, handover: Handover) -> bool:
        handle.effects_done = True
        if self.hooks.on_handover is None:
            return False
        self.hooks.on_handover(handover)
        return True

    def speech_failed(self, kind: str) -> bool:
        """Count a failure of STT or TTS; True when there have been too many in a row to go on."""
        count = self._failures[kind] = self._failures.get(kind, 0) + 1
        log.warning("%s failed (%d in a row)", kind, count)
        return count >= self.config.max_speech_failures

    def speech_ok(self, kind: str) -> None:
        self._failures[kind] = 0

    def _give_up(self) -> None:
        """Speech keeps failing: a caller who can neither be heard nor answered is better off calling back
        than in a loop of apologies. The recorded fallback (no TTS needed) is the last thing they hear."""
        log.error("speech keeps failing; ending the call after the recorded apology")
        handle = self._start_speaking(Reply(lines=[], node=getattr(self.policy, "node", "?"), end_call=True))
        handle.fallback_first = True
        handle.end_reason = "speech_failed"

    def permission_request(self, reason: str) -> None:
        if self.hooks.on_permission_request is not None:
            self.hooks.on_permission_request(reason)

    def call_button(self, button: SendCallButton) -> None:
        if self.hooks.on_call_button is not None:
            self.hooks.on_call_button(button)

    async def end_call(self, handle: SpeechHandle, reason: str) -> None:
        """The reply's last words are out: hang up, unless the caller has the floor."""
        if not self._caller_has_floor():
            # Let the last words leave the jitter buffers before the media is torn down.
            await asyncio.sleep(HANGUP_TAIL_S)
        if self._caller_has_floor():
            log.info("the caller is talking over the end of the call; listening before hanging up")
            self._start_closing(handle, heard_in_full=True)
            return
        self._hang_up(handle, handle.end_reason or reason)

    def _hang_up(self, handle: SpeechHandle | None, reason: str) -> None:
        if handle is not None:
            handle.committed = handle.effects_done = True
        if self._hung_up:
            return
        self._hung_up = True
        self._on_hangup(reason)

    def _caller_has_floor(self) -> bool:
        """The caller is speaking, or said something the bot has not answered yet."""
        return self._endpointer.in_speech or self._recognising > 0 or not self._utterances.empty()

    # keys in ------------------------------------------------------------------
    def on_key(self, press: KeyPress) -> None:
        """A key pressed on the caller's dialpad (the call hands on each RFC 4733 event once). Runs on the
        event loop and never waits: the entry's pause timer is a task this conversation owns."""
        if self._closed or self._hung_up:
            return
        digit = press.digit
        if digit not in KEYPAD_KEYS:
            log.debug("key %r is on no phone's dialpad; ignored", digit)
            return
        self.key_presses += 1
        if self._suspended:
            # A person has the call: the keys are theirs to act on (they see them), and the record keeps them.
            self.transcript.append(TranscriptEntry("caller", KEYS_PREFIX + digit, press.at))
            if self.hooks.on_keys is not None:
                self.hooks.on_keys(digit)
            return
        self._cancel_silence_timer()
        self._silence_stage = 0
        if self._closing is not None:
            log.debug("key pressed over the ending of the call; ignored")
            return
        rules = self._key_rules()
        if rules is None or (not rules.waiting and digit not in rules.instant):
            # Before the greeting, or during a lookup or an LLM turn where the key picks nothing: cutting the bot
            # short would leave the caller in silence.
            log.debug("key pressed when the flow takes no keys; ignored")
            return
        if self._interruptible and self.bot_talking:
            # A key press is never a backchannel or a cough: stop the line now, without the barge-in wait.
            self._interrupt("caller pressed a key")
        self._keys.press(digit, rules)

    def _key_rules(self) -> KeyEntry | None:
        if not hasattr(self.policy, "handle_keys"):
            return None
        rules = getattr(self.policy, "keypad", _ONE_KEY)
        return rules if isinstance(rules, KeyEntry) else None

    def _keys_entered(self, keys: str, rules: KeyEntry) -> None:
        """A finished keypad entry: one caller turn, recorded and answered like a spoken one."""
        if self._closed or self._suspended:
            return
        now = self._clock()
        shown = KEYS_PREFIX + (MASK if rules.secret else keys)
        metrics = TurnMetrics(caller_speech_end=now, transcript=shown, transcript_ready=now)
        entry = TranscriptEntry("caller", shown, now)
        self.transcript.append(entry)
        # Words after the keys are a turn of their own, never the rest of an earlier spoken fragment.
        self._last_taken = None
        if self._closing is not None:
            return
        turn = _Utterance(np.zeros(0, dtype=np.int16), now, 0, False, True, now, text=shown, entry=entry)
        speech = self._speech
        if speech is not None and not speech.done() and not speech.allow_interruptions:
            # Typed over a line that must be heard in full (a notice): answered once it has been.
            later = asyncio.create_task(self._answer_keys_after(speech, keys, turn, metrics), name="keys-after-line")
            self._side_tasks.add(later)
            later.add_done_callback(self._side_tasks.discard)
            return
        self._answer_keys(keys, turn, metrics)

    async def _answer_keys_after(self, speech: SpeechHandle, keys: str, turn: _Utterance, metrics: TurnMetrics) -> None:
        if speech.task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.shield(speech.task)
        if self._closed or self._suspended or self._closing is not None or self._hung_up:
            return
        self._answer_keys(keys, turn, metrics)

    def _answer_keys(self, keys: str, turn: _Utterance, metrics: TurnMetrics) -> None:
        policy = self.policy
        reply = self.policy_call(lambda: policy.handle_keys(keys))
        log.info("keypad entry of %d key(s) at node %s", len(keys), reply.node)
        self._answer_with(turn, reply, metrics)

    # audio in -----------------------------------------------------------------
    def feed(self, pcm16k: np.ndarray, t: float) -> None:
        """Caller audio (16 kHz mono int16). Runs on the event loop: VAD is microseconds per frame."""
        self._last_fed_at = t
        if self._closed or self._suspended:
            return
        for event in self._endpointer.feed(pcm16k):
            if event.kind == "start":
                self._on_start(t)
            elif event.kind == "pause" and event.audio is not None:
                self._on_pause(event.audio, event.speech_ms, t)
            elif event.kind == "end":
                self._on_end(event.audio, event.speech_ms, t)
        if self._listening is not None and self._endpointer.in_speech:
            self._listening.feed_more(self._endpointer.kept_audio_after(self._listening.fed))
        if self._endpointer.resumes != self._resumes_seen:
            self._resumes_seen = self._endpointer.resumes
            self._went_on_after(self._endpointer.resumed_after_ms)
        self._gate_reply_start(t)
        self._check_continuation()
        self._check_barge_in(t)
        self._maybe_partial()

    def _gate_reply_start(self, t: float) -> None:
        """A reply about to start while the caller may be starting to speak waits the few frames the VAD
        needs to tell: a caller going on after a pause then hears no blip of an answer that is dropped."""
        held = self._held
        if held is not None:
            if self._endpointer.in_speech:
                self._held = None  # they went on: the continuation rules own the paused answer
            elif held.quiet_until is None or (t >= held.quiet_until and not self._endpointer.onset_pending):
                self._held = None
                held.quiet_until = None
                if self.output.paused:
                    self.output.resume()
            return
        if self._gated_since is not None:
            if self._endpointer.in_speech:
                self._gated_since = None  # speech: the turn-taking rules own the pause from here
            elif not self._endpointer.onset_pending or t - self._gated_since > ONSET_GATE_MAX_S:
                self._gated_since = None
                if self.output.paused:
                    self.output.resume()
            return
        if (
            self._endpointer.onset_pending
            and self._interruptible
            and self.output.playing
            and not self.output.paused
            and self._current is not None
            and self._current.first_audio_sent is None
        ):
            self._gated_since = t
            self.output.pause()

    def _on_start(self, t: float) -> None:
        self._speech_started_at = t
        self._barge_confirmed = False
        self._silence_stage = 0
        self._cancel_silence_timer()
        prefix = self._continuation_of(t)
        self._start_listening(prefix)
        if prefix is not None:
            # The caller's own thought going on, not an interruption of the bot: go quiet at once, and drop
            # the answer as soon as this is more than a cough.
            self._continuing = prefix
            self._continuation_confirmed = False
            prefix.resumed_at = t - self.config.vad.onset_frames * self.config.vad.frame_ms / 1000
            self._overlapped = False
            prefix.continued = True  # an answer not yet given waits for the rest
            if prefix.answer is not None and not prefix.answer.done() and not self.output.paused:
                self.output.pause()
            return
        self._overlapped = self.bot_talking
        if self._overlapped and not self._interruptible:
            log.debug("caller spoke during an uninterruptible line; ignoring it")

    def _continuation_of(self, t: float) -> _Utterance | None:
        """The fragment the caller's new speech continues, if it comes soon enough to be the same thought."""
        window = self.config.continuation_window_s
        last = self._last_taken
        if window <= 0 or last is None or self._continuing is not None or self._closing is not None:
            return None
        if t - last.taken_at > window or last.seconds > self.config.max_thought_s:
            return None
        answer = last.answer
        if answer is not None and answer.committed:
            return None
        heard_since = last.metrics.first_audio_sent if last.metrics is not None else None
        if answer is not None and heard_since is not None and t - heard_since > self.config.continuation_heard_s:
            return None  # "uh-huh", "okay", "wait, what?" after hearing part of the answer: about the answer
        # An answer that must be heard in full (a handover notice, terms) is still dropped here: it answers
        # half a sentence the caller is still saying, and the whole thought's answer will say it again.
        return last

    def _check_continuation(self) -> None:
        fragment = self._continuing
        if fragment is None or self._continuation_confirmed:
            return
        # Before the answer is heard, any words go on with the thought. Once it plays, a short "uh-huh" is a
        # reaction to it: only as much speech as a barge-in needs drops it.
        needed = self.config.barge_in_min_ms if self._answer_audible(fragment) else self.config.vad.min_speech_ms
        if self._endpointer.voiced_ms >= needed:
            self._continuation_confirmed = True
            self._take_back(fragment)

    @staticmethod
    def _answer_audible(fragment: _Utterance) -> bool:
        metrics = fragment.metrics
        return fragment.answer is not None and metrics is not None and metrics.first_audio_sent is not None

    def _take_back(self, fragment: _Utterance) -> None:
        """Drop the bot's answer to a fragment at once; the whole thought will be answered instead."""
        self.continuations += 1
        if fragment.pause_after_ms is not None:
            self._went_on_after(fragment.pause_after_ms)
        answer = fragment.answer
        if answer is None:
            log.debug("the caller went on talking before the bot answered %r", fragment.text)
            return
        heard = answer.audio_started and fragment.quiet_until is None  # queued behind the quiet: not heard
        if answer.interrupt("continuation"):
            self.output.flush()
        if heard:
            self.false_starts += 1
        if fragment.metrics is not None:
            fragment.metrics.interrupted = True
            fragment.metrics.continued = True
        log.info("caller went on talking: dropped the answer to their fragment")
        log.debug("dropped the answer to %r", fragment.text)

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
        if self._listening is not None:
            self._partial = asyncio.create_task(self._transcribe_partial(self._listening), name="stt-partial")

    async def _transcribe_partial(self, listening: UtteranceStream) -> None:
        try:
            text = await listening.partial()
        except Exception:
            return
        if getattr(self.policy, "secret", False) is True:
            return  # words towards a PIN are not shown live either
        if text and self._endpointer.in_speech:
            self.partial_transcript = text
            log.debug("partial transcript: %r", text)
            if self.hooks.on_partial is not None:
                self.hooks.on_partial(text)

    def _on_pause(self, audio: np.ndarray, speech_ms: int, t: float) -> None:
        if self._overlapped and not self._barge_confirmed and self.output.paused:
            # A short burst over the bot ("uh-huh"): let it go on while we find out what was said.
            self.output.resume()
        if not self.config.speculative_stt or (self._overlapped and not self._interruptible):
            return
        if self._listening is None:
            return
        # A continued thought's stream already heard its earlier fragments; Silero, asked about the end of
        # the pause, needs only this one's audio.
        self._listening.catch_up(audio)
        self._drop_speculation()
        task = asyncio.create_task(self._listening.partial(), name="stt-speculative")
        self._speculation = (speech_ms, task)
        if not self._overlapped:
            judge = asyncio.create_task(self._judge_pause(task, speech_ms, t, audio), name="end-of-turn")
            self._side_tasks.add(judge)
            judge.add_done_callback(self._side_tasks.discard)

    async def _judge_pause(self, task: asyncio.Task[str], speech_ms: int, paused_at: float, audio: np.ndarray) -> None:
        """The guess came back while the caller is still silent. Words that sound unfinished make the turn
        wait for a longer silence; a finished sentence (with Silero, as a second opinion, hearing no speech
        in the pause) ends the turn now. Speech that resumed in the meantime (more voiced audio) cancels
        this. Silero runs alongside the recognition (the pool has a thread for each), so the second opinion
        costs no extra wait."""
        check = self.hooks.endpoint_check if self.config.early_end_on_complete_sentence else None
        opinion = (
            asyncio.ensure_future(check.still_talking(audio, self._endpointer.pause_ms)) if check is not None else None
        )
        try:
            try:
                await asyncio.shield(task)
            except Exception:
                return
            if not self._guess_still_current(task, speech_ms):
                return
            text = task.result()
            if hesitates(text):
                self._mark_hesitant(f"hesitated: {text!r}")
            before = self._continuing.restore_point if self._continuing is not None else None
            _, unfinished = self._judge_words(text, before)
            if unfinished is not None:
                hold_ms = self._hold_ms(unfinished)
                log.debug("%r sounds unfinished (%s); waiting up to %d ms", text, unfinished, hold_ms)
                self._endpointer.hold_end(hold_ms)
                if unfinished == "mid-sentence":
                    self._mark_hesitant(f"paused mid-sentence: {text!r}")
                return
            if is_bare_yes_no(text) and self.config.yes_no_end_silence_ms:
                # "Yes. [pause] That's me.", "No, [pause] he's not home": a bare yes or no is very often the
                # start of the caller's sentence, so it waits a little longer (still well short of a hold).
                self._endpointer.hold_end(self.config.yes_no_end_silence_ms)
            if not self.config.early_end_on_complete_sentence:
                return
            if self.hesitant or self._went_on_after_long_pause():
                return  # this caller pauses mid-sentence: a full stop is no proof (a thought continued
                # after a comma's pause is no such sign: its full stop ends it as early as any other)
            # A complete number skips the wait for more digits, not the usual silence: "1983, [pause] no,
            # sorry, 84" is common, and a number alone is no sentence. One word the question takes as its
            # value ("Tomorrow.", "Thursday.") is a whole answer: if the caller goes on within a comma's pause
            # they hear nothing of the reply (`early_end_min_silence_ms`), and later words join the thought.
            min_words = self.config.early_end_min_words
            if min_words > 1 and not is_bare_yes_no(text) and self._policy_says("answer_taken", text):
                min_words = 1
            if not looks_complete(text, min_words):
                return
            if opinion is not None and await opinion and not await self._silent_at_second_look(task, speech_ms):
                log.debug("Silero hears speech in the pause; waiting for the full end-of-turn silence")
                return
        finally:
            if opinion is not None and not opinion.done():
                opinion.cancel()
        if not self._guess_still_current(task, speech_ms):
            return
        event = self._endpointer.end_now()
        if event is not None:
            log.debug("early end of turn on a complete sentence: %r", task.result())
            silence_s = self._endpointer.pause_ms / 1000
            self._on_end(event.audio, event.speech_ms, paused_at, silence_s=silence_s)
            self._keep_quiet_until(paused_at - silence_s + self.config.early_end_min_silence_ms / 1000)

    async def _silent_at_second_look(self, task: asyncio.Task[str], speech_ms: int) -> bool:
        """Silero heard voice early in the pause: often the fade of a final "s" or "z", not more words.
        Later in the same pause (still before the usual end of turn), it is asked about the newest audio
        only; silence there lets the complete sentence end the turn after all."""
        check = self.hooks.endpoint_check
        ep = self._endpointer
        if check is None:
            return False
        wait_s = (SECOND_LOOK_MS - ep.silence_ms) / 1000
        if wait_s > 0:
            await asyncio.sleep(wait_s)
        if not self._guess_still_current(task, speech_ms):
            return False
        audio = ep.current_audio()
        newest_ms = ep.silence_ms - ep.pause_ms
        if audio is None or newest_ms <= 0:
            return False
        return not await check.still_talking(audio, newest_ms)

    def _keep_quiet_until(self, t: float) -> None:
        """The turn was taken inside what may be a comma's pause: the answer is prepared now and starts
        playing once the silence has lasted to `t` (speech before then continues the thought instead)."""
        taken = self._last_taken
        if taken is None or self.config.early_end_min_silence_ms <= 0:
            return
        if self._last_fed_at is not None and self._last_fed_at >= t:
            return
        taken.quiet_until = t
        self._held = taken
        self._gated_since = None
        if not self.output.paused:
            self.output.pause()

    def _went_on_after(self, pause_ms: float) -> None:
        """The caller went on talking after a silence inside their thought (held by the bot, or after it had
        taken the turn): one long enough shows a caller who stops to think, and how long they stop for."""
        if pause_ms < self.config.hesitant_min_pause_ms:
            return
        self._longest_pause_ms = max(self._longest_pause_ms, int(pause_ms))
        if self.hesitant:
            self._endpointer.set_end_silence(self._hesitant_silence_ms())
        else:
            self._mark_hesitant(f"went on after a {pause_ms:.0f} ms pause")

    def _went_on_after_long_pause(self) -> bool:
        """The caller is going on with a thought after a pause long enough to show hesitance. Seen before the
        continuation is confirmed (short words over an audible answer may still be a reaction to it), so that
        its first pause is not ended early on a full stop."""
        pause_ms = self._continuing.pause_after_ms if self._continuing is not None else None
        return pause_ms is not None and pause_ms >= self.config.hesitant_min_pause_ms

    def _hesitant_silence_ms(self) -> int:
        """The hesitant caller's end-of-turn silence: at least the configured one, and longer than the longest
        pause they went on after (by a margin), up to the configured most."""
        fitted = self._longest_pause_ms + HESITANT_MARGIN_MS if self._longest_pause_ms else 0
        ceiling = max(self.config.hesitant_max_end_silence_ms, self.config.hesitant_end_silence_ms)
        return min(max(self.config.hesitant_end_silence_ms, fitted), ceiling)

    def _mark_hesitant(self, why: str) -> None:
        if self.hesitant or not self.config.hesitant_end_silence_ms:
            return
        self.hesitant = True
        silence_ms = self._hesitant_silence_ms()
        self._endpointer.set_end_silence(silence_ms)
        log.info("caller pauses mid-thought: waiting %d ms for the end of each turn from now on", silence_ms)
        log.debug("marked hesitant: %s", why)  # may quote the caller's words

    def _unfinished(self, text: str) -> str | None:
        """Why the words so far are no whole turn: they stop mid-sentence ("…for the", "I want to"), the
        flow knows the answer is unfinished (part of a number it expects, "Tuesday, no —"), or they are
        only a greeting or reaction so far ("Hi there.", "Okay, brilliant."); None when they may be."""
        if sounds_unfinished(text):
            last = text.strip().rstrip(".,?!").split()[-1:] or [""]
            if last[0].isdigit() or last[0].lower() in DIGIT_WORDS:
                return "number"
            if asks_to_wait(text):
                return "asked to wait"
            return "trailing off" if only_trails_off(text) else "mid-sentence"
        if self._policy_says("answer_incomplete", text):
            return "answer"
        if self.config.unclear_hold_ms and self._policy_says("would_miss", text):
            return "not understood"
        # Where nothing says an open answer is expected, "Yes." or "No?" may be the whole answer.
        expecting = getattr(self.policy, "expecting", None)
        return "opener" if is_opener(text, yes_no=getattr(expecting, "type", "yes_no") == "yes_no") else None

    def _judge_words(self, text: str, before: Any = None) -> tuple[bool, str | None]:
        """Whether the words so far are a complete answer, or why they are unfinished. `before`: the flow's
        state before this thought's first fragment was answered; the words are judged against the question
        the caller is answering, not against where the fragment's answer moved the flow."""
        restore = getattr(self.policy, "restore", None)
        now = self._snapshot() if before is not None and restore is not None else None
        if now is not None:
            restore(before)
        try:
            complete = self._policy_says("answer_complete", text)
            return complete, None if complete else self._unfinished(text)
        finally:
            if now is not None:
                restore(now)

    def _hold_ms(self, why: str) -> int:
        return self.config.unclear_hold_ms if why == "not understood" else self.config.unfinished_hold_ms

    def _policy_says(self, question: str, text: str) -> bool:
        """Ask the dialogue policy a yes/no question about a transcript so far (policies without it say no)."""
        check = getattr(self.policy, question, None)
        try:
            return bool(check(text)) if check is not None else False
        except Exception:
            log.exception("%s failed on %r", question, text)
            return False

    def _guess_still_current(self, task: asyncio.Task[str], speech_ms: int) -> bool:
        if self._closed or task.cancelled() or self._speculation is None or self._speculation[1] is not task:
            return False
        ep = self._endpointer
        return ep.in_speech and not ep.voiced_now and ep.voiced_ms == speech_ms

    def _on_end(self, audio: np.ndarray | None, speech_ms: int, t: float, silence_s: float | None = None) -> None:
        overlapped, confirmed = self._overlapped, self._barge_confirmed
        prefix, self._continuing = self._continuing, None
        self._partial_at_ms = 0
        self.partial_transcript = ""
        self._speech_started_at = None
        self._overlapped = self._barge_confirmed = False
        if self.output.paused and not confirmed and prefix is None:
            self.output.resume()
        if silence_s is None:
            silence_s = self._endpointer.last_end_silence_ms / 1000
        end_of_speech = t - silence_s
        listening, self._listening = self._listening, None
        if audio is None or (overlapped and not self._interruptible):
            self._drop_speculation()
            if listening is not None:
                listening.cancel()
            if prefix is not None:
                self._after_a_cough(prefix, t)
            return
        # The stream has heard exactly this audio (it is fed only what the endpointer keeps); the pause's
        # guess is its partial, which the turn's finish() reuses when nothing was said after it.
        if listening is not None:
            listening.catch_up(audio)
        self._speculation = None  # the guess task lives on inside the stream; judging it is over
        if prefix is not None and not self._continuation_confirmed:
            if self._answer_audible(prefix):
                # Short words while the caller hears the answer: a reaction to it (handled like speech over
                # the bot: a backchannel lets it go on, a question interrupts it) or the rest of their
                # thought. What they said decides, once recognised alone.
                prefix.continued = False
                if listening is not None:
                    listening.cancel()  # it heard the whole thought; these words are judged alone
                    listening = None
                if self.output.paused:
                    self.output.resume()
                reaction = _Utterance(audio, end_of_speech, speech_ms, True, confirmed, t, reaction_to=prefix)
                reaction.silence_s = silence_s
                self._take(reaction)
                return
            self._take_back(prefix)
        joined = _join(prefix, audio) if prefix is not None else audio
        utterance = _Utterance(joined, end_of_speech, speech_ms, overlapped, confirmed, t, listening, prefix=prefix)
        utterance.silence_s = silence_s
        self._take(utterance)

    def _after_a_cough(self, fragment: _Utterance, t: float) -> None:
        """The "continuation" was a cough or a click: the answer goes on, or is given after all."""
        answer = fragment.answer
        if answer is not None and not answer.interrupted:
            fragment.continued = False
            if self.output.paused:
                self.output.resume()
            return
        # Its answer was dropped or never started: answer the words heard before, as they were heard.
        self._take(_Utterance(fragment.audio, fragment.end_of_speech, 0, False, False, t, prefix=fragment))

    def _take(self, utterance: _Utterance) -> None:
        self._last_taken = utterance
        self._recognising += 1
        self._utterances.put_nowait(utterance)

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
        if self._speech is not None:
            cut = self._speech.line_at_cut(dropped)
            on_interrupted = getattr(self.policy, "on_interrupted", None)
            if cut is not None and on_interrupted is not None:
                on_interrupted(cut)  # the flow offers what the caller did not hear again
            self._speech.interrupt("barge_in")
        if self._current is not None:
            self._current.interrupted = True
        self.barge_ins += 1
        log.info("barge-in (%s): dropped %d ms of queued speech", why, dropped)

    # recognition --------------------------------------------------------------
    async def _transcribe(self, audio: np.ndarray) -> str:
        return await transcribe_once(self.transcriber, audio)

    def _start_listening(self, prefix: _Utterance | None) -> None:
        """A new utterance: a new recognition stream, which first hears the fragment it continues."""
        self._stop_listening()
        lead_in = None
        if prefix is not None:  # as `_join` lays the thought out: the fragment, a short gap, the new words
            lead_in = np.concatenate([prefix.audio, np.zeros(int(JOIN_GAP_S * SAMPLE_RATE), dtype=np.int16)])
        self._listening = UtteranceStream(self.transcriber, lead_in)
        self._listening.feed_more(self._endpointer.kept_audio_after(0))

    def _stop_listening(self) -> None:
        if self._listening is not None:
            self._listening.cancel()
            self._listening = None

    def _drop_speculation(self) -> None:
        if self._speculation is not None:
            self._speculation[1].cancel()
            self._speculation = None

    async def _recognise(self, utterance: _Utterance, metrics: TurnMetrics) -> str:
        if utterance.speech_ms == 0 and utterance.prefix is not None and utterance.prefix.text is not None:
            return utterance.prefix.text  # nothing new was said: the earlier words stand as they were heard
        stream, utterance.stream = utterance.stream, None
        if stream is not None:
            text = await stream.finish()
            metrics.speculative = stream.reused_partial
            return text
        return await self._transcribe(utterance.audio)

    # turns --------------------------------------------------------------------
    async def _run(self) -> None:
        self._start_speaking(self.policy_call(self.policy.start))
        while not self._closed:
            utterance = await self._utterances.get()
            try:
                await self._answer(utterance)
            finally:
                self._recognising -= 1

    async def _hear(self, utterance: _Utterance, metrics: TurnMetrics) -> str:
        text = await self._recognise(utterance, metrics)
        if utterance.reaction_to is not None:
            text = await self._reaction_or_more(utterance, text)
        return text

    async def _answer(self, utterance: _Utterance) -> None:
        metrics = TurnMetrics(caller_speech_end=utterance.end_of_speech)
        try:
            # Bounded: a full or hung inference pool must not leave the caller in silence.
            text = await asyncio.wait_for(self._hear(utterance, metrics), self.config.stt_timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if isinstance(exc, TimeoutError):
                log.error("speech-to-text took over %.1f s; asking the caller again", self.config.stt_timeout_s)
            else:
                log.exception("speech-to-text failed; telling the caller")
            if self._last_taken is utterance:
                self._last_taken = None  # what they say next is the repeat we asked for, not a continuation
            if self.speech_failed("stt"):
                self._give_up()
            else:
                # SORRY_HEARING is in the TTS cache since warm-up: it plays without the inference pool.
                self._start_speaking(Reply(lines=[SORRY_HEARING], node=self.policy.node))
            return
        self.speech_ok("stt")
        prefix = utterance.prefix
        if not text and prefix is not None and prefix.text:
            text = prefix.text  # the rest was a murmur: the words heard before stand
        utterance.text = text
        # What the flow must be taken back to before this thought is acted on: the state before its first
        # fragment was answered (only a fragment that was answered changed anything).
        utterance.restore_point = prefix.restore_point if prefix is not None else None
        metrics.transcript_ready = self._clock()
        if self._suspended:
            return  # a human took the call while this was being recognised: not ours to answer
        if not utterance.continued and not utterance.overlapped:
            await self._hold_if_unfinished(utterance, text)
        if utterance.continued:
            log.debug("holding %r: the caller went on talking", text)
            return
        if utterance.overlapped and not utterance.confirmed_barge_in:
            if is_backchannel(text):
                self.false_interruptions += 1
                log.debug("backchannel %r while the bot spoke; carrying on", text)
                return
            self._interrupt(f"caller said {text!r}")
        if not text:
            return
        if prefix is not None:
            self._forget_fragments(utterance)
        # A PIN said aloud is as secret as one typed: the record gets the mask, the flow the words.
        shown = MASK if getattr(self.policy, "secret", False) is True else text
        metrics.transcript = shown
        utterance.entry = TranscriptEntry("caller", shown, utterance.end_of_speech)
        self.transcript.append(utterance.entry)
        utterance.metrics = metrics
        if self._closing is not None:
            self._answer_over_ending(utterance, text, metrics)
            return
        classified = await self._classify(text)
        if utterance.continued or self._suspended:
            return  # the caller went on (or a human took over) while the LLM was asked
        if utterance.restore_point is not None:
            self.policy.restore(utterance.restore_point)
        else:
            utterance.restore_point = self._snapshot()
        if classified is not None:
            reply = self.policy_call(lambda: self.policy.handle(text, classified=classified))
        else:
            reply = self.policy_call(lambda: self.policy.handle(text))
        self._answer_with(utterance, reply, metrics)

    async def _reaction_or_more(self, utterance: _Utterance, text: str) -> str:
        """Words said while the answer to the caller's last fragment plays: a known backchannel or a
        request ("what?") is about the answer; anything else ("…keeps switching itself off") is the
        thought going on, so the answer is dropped and the whole thought recognised and answered once."""
        fragment, utterance.reaction_to = utterance.reaction_to, None
        answer = fragment.answer if fragment is not None else None
        if fragment is None or answer is None or answer.done() or answer.committed or self._closing is not None:
            return text
        if not text or is_known_backchannel(text) or asks_for_the_turn(text):
            return text
        self._continuation_confirmed = True
        self._take_back(fragment)
        utterance.prefix, utterance.overlapped = fragment, False
        utterance.audio = _join(fragment, utterance.audio)
        whole = await self._transcribe(utterance.audio)
        log.debug("%r goes on from %r: heard as %r", text, fragment.text, whole)
        return whole or text

    async def _hold_if_unfinished(self, utterance: _Utterance, text: str) -> None:
        """Words that sound unfinished wait for the longer silence even when their transcript came too late
        to hold the turn (a slow or retried recognition): speech within it continues the thought."""
        if not text or self._closing is not None:
            return
        complete, unfinished = self._judge_words(text, utterance.restore_point)
        if complete:
            return
        hold_s = self._hold_ms(unfinished) / 1000 if unfinished is not None else 0.0
        if utterance.silence_s >= hold_s:
            return
        deadline = utterance.end_of_speech + hold_s
        log.debug("%r sounds unfinished; waiting until %.0f ms of silence", text, hold_s * 1000)
        while not utterance.continued and not self._closed and self._clock() < deadline:
            await asyncio.sleep(0.02)

    async def _classify(self, text: str) -> str | None:
        """Where an LLM is configured and offline matching is unsure, the LLM's pick of intent; the
        offline path decides alone on any failure (the client bounds the wait by its first-token timeout)."""
        classify = getattr(self.hooks.llm, "classify", None)
        request_for = getattr(self.policy, "classification_request", None)
        if classify is None or request_for is None:
            return None
        try:
            request = request_for(text)
            if request is None:
                return None
            pick = await classify(text, list(request.names))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("LLM classification failed; matching offline")
            return None
        return pick if isinstance(pick, str) else None

    def _answer_with(self, utterance: _Utterance, reply: Reply, metrics: TurnMetrics) -> None:
        metrics.reply_text_ready = self._clock()
        metrics.reply = " ".join(reply.lines)
        self.turns.append(metrics)
        # What callers say (and numbers they read out) is personal data: words only at DEBUG.
        log.info("turn answered at node %s", reply.node)
        log.debug("turn: %r -> %r (node %s)", utterance.text, metrics.reply, reply.node)
        self._current = metrics
        if reply.lines or reply.end_call or reply.llm is not None or reply.actions:
            utterance.answer = self._start_speaking(reply, answers=utterance)
        else:
            self._arm_silence_timer()

    def _forget_fragments(self, utterance: _Utterance) -> None:
        """The fragments of this thought were heard as turns of their own: the record keeps the whole."""
        for fragment in utterance.chain():
            if fragment.entry is not None and fragment.entry in self.transcript:
                self.transcript.remove(fragment.entry)
            fragment.entry = None

    def _snapshot(self) -> Any:
        snapshot = getattr(self.policy, "snapshot", None)
        return snapshot() if snapshot is not None else None

    def _start_speaking(self, reply: Reply, *, answers: _Utterance | None = None) -> SpeechHandle:
        if self._speech is not None and self._speech.interrupt("replaced"):
            self.output.flush()
        self._cancel_silence_timer()
        handle = SpeechHandle(reply, answers=answers)
        self._interruptible = reply.interruptible
        handle.task = asyncio.create_task(self._perform(handle), name="speak")
        self._speech = handle
        return handle

    async def _perform(self, handle: SpeechHandle) -> None:
        try:
            await self._runner.perform(handle)
        except asyncio.CancelledError:
            if handle.interrupted_by == "barge_in":
                self._finish_after_interruption(handle)
            raise
        finally:
            handle.mark_finished()
        if self._speech is handle and not handle.current.end_call:
            self._arm_silence_timer()

    def _finish_after_interruption(self, handle: SpeechHandle) -> None:
        """The caller talked over the bot: its words are dropped, but a handover still happens, and an
        ending waits until the caller is done."""
        if handle.effects_done:
            return
        handle.effects_done = True
        reply = handle.current
        if reply.handover is not None and self.hooks.on_handover is not None:
            self.hooks.on_handover(reply.handover)
        elif reply.end_call:
            self._start_closing(handle, heard_in_full=False)

    # endings the caller talks over --------------------------------------------------------
    def _start_closing(self, handle: SpeechHandle, *, heard_in_full: bool) -> None:
        self._closing = handle
        self._closing_heard = heard_in_full
        handle.effects_done = True
        self._cancel_closing_timer()
        self._closing_timer = asyncio.create_task(self._close_when_quiet(), name="closing")

    def _cancel_closing_timer(self) -> None:
        if self._closing_timer is not None and self._closing_timer is not asyncio.current_task():
            self._closing_timer.cancel()
        self._closing_timer = None

    async def _close_when_quiet(self) -> None:
        """Hang up once the caller has finished: at once if the ending was heard in full, else after
        `closing_quiet_s` of quiet. Their words in the meantime are answered first (they may reopen the call)."""
        loop = asyncio.get_running_loop()
        quiet_since: float | None = None
        while True:
            await asyncio.sleep(0.05)
            if self._caller_has_floor():
                quiet_since = None
                continue
            now = loop.time()
            quiet_since = now if quiet_since is None else quiet_since
            needed = HANGUP_TAIL_S if self._closing_heard else self.config.closing_quiet_s
            if now - quiet_since >= needed:
                break
        log.info("the caller is done after the ending; hanging up")
        closing = self._closing
        self._closing_timer = None
        self._hang_up(closing, (closing.end_reason if closing else None) or "bot_ended")

    def _answer_over_ending(self, utterance: _Utterance, text: str, metrics: TurnMetrics) -> None:
        """The caller spoke over (or right after) the ending: follow a turn that goes somewhere; otherwise
        say the last words once more, or let the call end once the caller is quiet."""
        closing = self._closing
        assert closing is not None
        reopen = getattr(self.policy, "reopen", None)
        reply = self.policy_call(lambda: reopen(text)) if reopen is not None else None  # type: ignore[arg-type, return-value]
        if reply is not None and (reply.lines or reply.actions or reply.llm is not None):
            log.info("caller went on over the ending: the call goes on")
            log.debug("words over the ending: %r", text)
            self._closing = None
            self._cancel_closing_timer()
            self._answer_with(utterance, reply, metrics)
            return
        if not self._closing_heard and not self._closing_repeated and closing.current.lines:
            # They did not hear the goodbye: say its last words again (once), and end when those are heard.
            self._closing_repeated = True
            self._closing = None
            self._cancel_closing_timer()
            goodbye = Reply(lines=closing.current.lines[-1:], node=closing.current.node, end_call=True)
            self._answer_with(utterance, goodbye, metrics)
            if utterance.answer is not None:
                utterance.answer.end_reason = closing.end_reason
        # Otherwise the closing timer ends the call once they are quiet.

    # the caller's silence --------------------------------------------------------------------------
    def _cancel_silence_timer(self) -> None:
        if self._silence_timer is not None and self._silence_timer is not asyncio.current_task():
            self._silence_timer.cancel()
        self._silence_timer = None

    def _arm_silence_timer(self) -> None:
        after = self.config.silence_reprompt_s
        if after is None or self._closed or self._suspended or self._closing is not None or self._hung_up:
            return
        if getattr(self.policy, "waiting_for", "answer") not in ("answer", "llm"):
            return
        self._cancel_silence_timer()
        self._silence_timer = asyncio.create_task(self._prompt_after_silence(after), name="caller-silence")

    async def _prompt_after_silence(self, after: float) -> None:
        await asyncio.sleep(after)
        self._silence_timer = None
        if self._caller_has_floor() or self.bot_talking or self._closing is not None:
            return
        self._silence_stage += 1
        self.silence_prompts += 1
        node = getattr(self.policy, "node", "?")
        if self._silence_stage == 1:
            log.info("caller silent for %.0f s; prompting", after)
            reply = Reply(lines=[self.config.silence_reprompt, *self._last_question()], node=node)
            self._start_speaking(reply)
        else:
            log.info("caller still silent; saying goodbye")
            reply = Reply(lines=[self.config.silence_goodbye], node=node, end_call=True)
            self._start_speaking(reply).end_reason = "caller_silent"

    def _last_question(self) -> list[str]:
        repeat = getattr(self.policy, "repeat", None)
        if repeat is None:
            return []
        lines = self.policy_call(repeat).lines
        return lines[-1:]

    # handover -----------------------------------------------------------------
    def suspend(self) -> None:
        """A human takes over: the bot stops talking and stops treating the caller's words as turns."""
        self._suspended = True
        if self._speech is not None:
            self._speech.interrupt("suspended")
        self._cancel_silence_timer()
        self._held = None  # the person's voice is never held back for the bot's turn-taking
        self.output.flush()
        self._drop_speculation()
        self._keys.reset()  # keys typed for the bot's question are not the person's to answer
        self._continuing = self._last_taken = None

    def resume(self, reply: Reply) -> None:
        """Back to the bot (agent handed the call back, or the queue gave up): say `reply` and listen."""
        self._suspended = False
        self._endpointer.reset()
        while not self._utterances.empty():
            self._utterances.get_nowait()
            self._recognising -= 1
        self._start_speaking(reply)

    async def say(self, text: str, *, interruptible: bool = True) -> None:
        """Speak outside the flow (hold messages, queue position); waits until it has been played."""
        self._interruptible = interruptible
        await self._runner.say_text(text)
        await self.output.wait_idle()
