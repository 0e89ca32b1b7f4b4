"""Turn-taking of one call (`agent.conversation.Conversation`), with fakes only at its seams.

The transcriber, synthesizer, audio output, LLM and business-system hooks are fakes; the dialogue policy
is a real `FlowEngine` over a small flow, and the caller's audio goes through the real webrtcvad
endpointer. The caller's "voice" is a harmonic buzz (a glottal-like pulse train, -20 dBFS): webrtcvad in
mode 3 marks every 20 ms frame of it voiced, and digital silence is below the energy gate, so speech
boundaries fall on exact frames and the tests need no models. Caller audio is fed in 20 ms chunks on a
fake clock, far faster than real time; the only real waits are a few short, bounded ones.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from agent import conversation as conversation_module
from agent.actions import run_http
from agent.conversation import (
    SORRY_HEARING,
    SORRY_LLM,
    SORRY_TECHNICAL,
    Conversation,
    ConversationConfig,
    ConversationHooks,
)
from agent.dialogue.effects import Handover, HttpRequest, Reply
from agent.dialogue.engine import FlowEngine
from agent.dialogue.flow import parse_flow
from agent.speech.vad import VadConfig

RATE = 16000
FRAME = RATE // 50  # 20 ms
OUT_RATE = 48000
# As configured by default in production (agent/config.py): STT starts 200 ms into a silence.
VAD = VadConfig(pause_ms=200, end_silence_ms=500)
FALLBACK = np.full(960, -7, dtype=np.int16)

GREETING = "Hello, how can I help?"
HOURS = ["We open at nine.", "We close at five.", "On Sundays we are closed.", "Anything else?"]
NOTICE = ["This call may be recorded.", "Please listen to the whole notice.", "Anything else?"]

FLOW = """
name: unit
start: hello
fallback: ["Sorry, could you say that again?"]
global_intents:
  - name: goodbye
    examples: ["goodbye", "bye bye", "that is all thanks"]
    keywords: [goodbye]
    goto: bye
nodes:
  hello:
    say: "Hello, how can I help?"
    intents: &menu
      - name: hours
        examples: ["what are your opening hours", "when are you open"]
        keywords: [hours, opening]
        goto: hours
      - name: notice
        examples: ["read me the notice", "tell me the terms"]
        keywords: [notice, terms]
        goto: notice
      - name: question
        examples: ["I have a question", "can I ask you something"]
        keywords: [question]
        goto: assistant
      - name: order
        examples: ["where is my order", "track my order"]
        keywords: [order]
        goto: lookup
      - name: person
        examples: ["talk to a person", "a human please"]
        keywords: [person, human]
        goto: transfer
  more:
    say: "Anything else?"
    intents: *menu
  hours:
    say: ["We open at nine.", "We close at five.", "On Sundays we are closed."]
    next: more
  notice:
    say: ["This call may be recorded.", "Please listen to the whole notice."]
    interruptible: false
    next: more
  assistant:
    llm:
      prompt: "Answer questions about the shop."
      transitions: [more]
  lookup:
    say: "Let me check."
    http:
      method: GET
      url: "https://shop.example.com/orders/42"
      store: {status: status}
      on_success: found
      on_error: failed
  found:
    say: "Your order is {{status}}."
    next: more
  failed:
    say: "I cannot reach the order system."
    next: more
  transfer:
    say: "Passing you to a colleague."
    handover: {queue: support, reason: "asked for a person"}
  bye:
    say: "Goodbye."
    end: true
"""
PARSED_FLOW = parse_flow(FLOW, source="unit.yaml")


# -- synthetic caller audio ----------------------------------------------------------------


def voice(seconds: float, f0: int = 150, dbfs: float = -20.0) -> np.ndarray:
    """A harmonic buzz at pitch `f0`: voiced in every frame for webrtcvad mode 3."""
    t = np.arange(round(seconds * RATE)) / RATE
    x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 3400 // f0 + 1))
    x = x / np.sqrt(np.mean(x**2)) * 32768 * 10 ** (dbfs / 20)
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * RATE), dtype=np.int16)


def pitch_of(audio: np.ndarray) -> int:
    """The buzz's pitch (the strongest line between 80 and 400 Hz), to the nearest 10 Hz."""
    spectrum = np.abs(np.fft.rfft(audio.astype(np.float64)))
    freqs = np.fft.rfftfreq(audio.size, 1 / RATE)
    band = (freqs > 80) & (freqs < 400)
    return int(round(freqs[band][np.argmax(spectrum[band])], -1))


# -- fakes at the seams --------------------------------------------------------------------


class FakeClock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, dt: float) -> None:
        self.now = round(self.now + dt, 6)


class FakeTranscriber:
    """Scripted transcripts, one per call (an exception instance is raised); or, with `by_pitch`, the
    words belonging to the pitch of the audio. `hold` makes every call wait for `release`."""

    def __init__(self, script: list[str | Exception] | None = None, *, by_pitch: dict[int, str] | None = None) -> None:
        self.script = list(script or [])
        self.by_pitch = by_pitch
        self.calls: list[np.ndarray] = []
        self.cancelled = 0
        self.hold = False
        self.release = asyncio.Event()

    async def transcribe(self, audio16k: np.ndarray) -> str:
        self.calls.append(audio16k)
        result: str | Exception = ""
        if self.by_pitch is not None:
            result = self.by_pitch[pitch_of(audio16k)]
        elif self.script:
            result = self.script.pop(0)
        try:
            if self.hold:
                await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if isinstance(result, Exception):
            raise result
        return result


class FakeSynthesizer:
    """One short chunk per line, tagged with the line so tests can tell what was enqueued.

    `fail(text)` makes a line raise; lines after the first `hold_after` wait for `release`."""

    sample_rate = OUT_RATE

    def __init__(self, *, fail: Callable[[str], bool] | None = None, hold_after: int | None = None) -> None:
        self.fail = fail
        self.hold_after = hold_after
        self.release = asyncio.Event()
        self.texts: list[str] = []  # every line asked for
        self.done: list[str] = []  # lines whose audio was produced
        self.cancelled: list[str] = []
        self._codes: dict[str, int] = {}

    def code(self, text: str) -> int:
        return self._codes.setdefault(text, len(self._codes) + 1)

    def text_of(self, chunk: np.ndarray) -> str:
        if chunk is FALLBACK or (chunk.size and chunk[0] == FALLBACK[0]):
            return "<fallback>"
        return next(text for text, code in self._codes.items() if code == chunk[0])

    async def stream(self, text: str) -> AsyncIterator[np.ndarray]:
        self.texts.append(text)
        if self.fail is not None and self.fail(text):
            raise RuntimeError(f"piper failed on {text!r}")
        try:
            if self.hold_after is not None and len(self.texts) > self.hold_after:
                await self.release.wait()
            else:
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            self.cancelled.append(text)
            raise
        self.done.append(text)
        yield np.full(OUT_RATE // 100, self.code(text), dtype=np.int16)  # 10 ms

    async def synthesize(self, text: str) -> np.ndarray:
        return np.concatenate([chunk async for chunk in self.stream(text)])


class FakeOutput:
    """The `AudioOutput` protocol: a queue that only plays when the test says so (`drain`)."""

    def __init__(self) -> None:
        self.queue: list[np.ndarray] = []
        self.enqueued: list[np.ndarray] = []
        self.played: list[np.ndarray] = []
        self._paused = False
        self.pauses = 0
        self.resumes = 0
        self.flushes = 0
        self.dropped_ms = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def playing(self) -> bool:
        return bool(self.queue)

    @property
    def paused(self) -> bool:
        return self._paused

    def enqueue(self, pcm: np.ndarray) -> None:
        if pcm.size == 0:
            return
        self.queue.append(pcm)
        self.enqueued.append(pcm)
        self._idle.clear()

    def pause(self) -> None:
        self._paused = True
        self.pauses += 1

    def resume(self) -> None:
        self._paused = False
        self.resumes += 1

    def flush(self) -> int:
        dropped = sum(chunk.size for chunk in self.queue) * 1000 // OUT_RATE
        self.queue.clear()
        self._paused = False  # as the real outbound track does
        self._idle.set()
        self.flushes += 1
        self.dropped_ms += dropped
        return dropped

    def drain(self) -> None:
        """The test plays out everything queued."""
        assert not self._paused, "a paused output does not play"
        self.played.extend(self.queue)
        self.queue.clear()
        self._idle.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()


def sentence(text: str) -> SimpleNamespace:
    return SimpleNamespace(kind="sentence", text=text)


def tool_call(name: str, **arguments: Any) -> SimpleNamespace:
    return SimpleNamespace(kind="tool_call", text="", tool_call=SimpleNamespace(name=name, arguments=arguments))


def done(text: str = "") -> SimpleNamespace:
    return SimpleNamespace(kind="done", text=text)


def error(message: str = "HTTP 500") -> SimpleNamespace:
    return SimpleNamespace(kind="error", text="", error=message)


class FakeLlm:
    """`hooks.llm`: streams the scripted events, or (hang=True) nothing, ever."""

    def __init__(self, events: list[SimpleNamespace] | None = None, *, hang: bool = False) -> None:
        self.events = list(events or [])
        self.hang = hang
        self.requests: list[tuple[list[dict[str, Any]], list[dict[str, Any]] | None]] = []
        self.closed = 0

    def stream_reply(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> Any:
        self.requests.append((messages, tools))
        return self._stream()

    async def _stream(self) -> AsyncIterator[SimpleNamespace]:
        try:
            if self.hang:
                await asyncio.Event().wait()
            for event in self.events:
                await asyncio.sleep(0)
                yield event
        finally:
            self.closed += 1


# -- harness -------------------------------------------------------------------------------


async def until(predicate: Callable[[], bool], timeout: float = 1.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


class Call:
    """One conversation wired to fakes, on a fake clock."""

    def __init__(
        self,
        *,
        stt: FakeTranscriber | None = None,
        tts: FakeSynthesizer | None = None,
        config: ConversationConfig | None = None,
        hooks: ConversationHooks | None = None,
        fallback_audio: np.ndarray | None = None,
    ) -> None:
        self.clock = FakeClock()
        self.stt = stt or FakeTranscriber()
        self.tts = tts or FakeSynthesizer()
        self.out = FakeOutput()
        self.engine = FlowEngine(PARSED_FLOW)
        self.hangups: list[str] = []
        self.http_requests: list[HttpRequest] = []
        hooks = hooks or ConversationHooks()
        if hooks.http is run_http:  # never the network in a unit test
            hooks.http = self._no_http
        self.conv = Conversation(
            policy=self.engine,
            transcriber=self.stt,
            synthesizer=self.tts,
            output=self.out,
            on_hangup=self.hangups.append,
            # Continuation is off unless a test turns it on: these tests speak again right after a turn on
            # a fake clock, which in a real call is the caller still finishing their sentence.
            config=config or ConversationConfig(vad=VAD, continuation_window_s=0, silence_reprompt_s=None),
            fallback_audio=fallback_audio,
            clock=self.clock,
            hooks=hooks,
        )

    async def _no_http(self, request: HttpRequest) -> tuple[bool, Any]:
        self.http_requests.append(request)
        return False, None

    def heard(self) -> list[str]:
        """Every line whose audio reached the output, in order."""
        return [self.tts.text_of(chunk) for chunk in self.out.enqueued]

    async def hears(self, expected: list[str], timeout: float = 1.0) -> None:
        """Wait until exactly `expected` has reached the output (synthesis runs in the background)."""
        try:
            await until(lambda: self.heard() == expected, timeout=timeout)
        except AssertionError:
            assert self.heard() == expected
            raise

    async def start(self, *, play: bool = True) -> None:
        self.conv.start()
        await until(lambda: self.out.enqueued, what="the greeting")
        if play:
            await self.play_out()

    async def feed(self, pcm: np.ndarray) -> None:
        """The caller's audio in 20 ms chunks; the loop runs between chunks, as with a real track."""
        for i in range(0, pcm.size, FRAME):
            self.clock.advance(FRAME / RATE)
            self.conv.feed(pcm[i : i + FRAME], self.clock.now)
            await asyncio.sleep(0)

    async def say(self, seconds: float = 1.0, *, then: float = 0.6, f0: int = 150) -> None:
        """The caller talks for `seconds`, then is silent for `then` (past the end-of-turn silence)."""
        await self.feed(voice(seconds, f0))
        await self.feed(silence(then))

    async def play_out(self, timeout: float = 1.0) -> None:
        """Play whatever the bot queues until it has stopped talking."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            await asyncio.sleep(0.001)
            self.out.drain()
            await asyncio.sleep(0)
            if not self.conv.bot_talking:
                return
            if loop.time() > deadline:
                raise AssertionError("the bot never stopped talking")

    async def turn(self, n: int) -> None:
        """Wait until the conversation has had `n` turns."""
        await until(lambda: len(self.conv.turns) >= n, what=f"turn {n}")


def _live_tasks() -> set[asyncio.Task[Any]]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()}


@pytest.fixture
async def make_call() -> AsyncIterator[Callable[..., Call]]:
    before = _live_tasks()
    calls: list[Call] = []

    def make(**kwargs: Any) -> Call:
        call = Call(**kwargs)
        calls.append(call)
        return call

    yield make
    for call in calls:
        await call.conv.close()
    await asyncio.sleep(0)
    assert _live_tasks() - before == set(), "the conversation left tasks running after close()"


@pytest.fixture
def short_hangup_tail(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(conversation_module, "HANGUP_TAIL_S", 0.01)
    yield


# -- greeting and plain turns --------------------------------------------------------------


async def test_greeting_is_spoken_at_start_before_any_caller_audio(make_call: Callable[..., Call]) -> None:
    call = make_call()
    await call.start(play=False)
    await call.hears([GREETING])
    assert call.conv.bot_talking  # queued, waiting to be played
    assert [(e.who, e.text) for e in call.conv.transcript] == [("bot", GREETING)]
    await call.play_out()
    assert not call.conv.bot_talking
    assert call.stt.calls == [] and call.conv.turns == []


async def test_utterance_is_transcribed_and_answered(make_call: Callable[..., Call]) -> None:
    call = make_call(
        stt=FakeTranscriber(["What are your opening hours?"]),
        config=ConversationConfig(vad=VAD, speculative_stt=False),
    )
    await call.start()
    await call.feed(silence(0.2))
    await call.feed(voice(1.0))
    speech_end = call.clock.now
    await call.feed(silence(0.48))
    assert call.stt.calls == []  # the turn is not over yet
    await call.feed(silence(0.1))
    await call.turn(1)

    assert len(call.stt.calls) == 1
    # The utterance with a little pre-roll and tail, not the whole silence around it.
    assert 1.0 <= call.stt.calls[0].size / RATE <= 1.0 + 2 * VAD.pre_roll_ms / 1000 + 0.02
    await call.hears([GREETING, *HOURS])
    metrics = call.conv.turns[0]
    assert metrics.transcript == "What are your opening hours?"
    assert metrics.reply == " ".join(HOURS)
    assert not metrics.speculative and not metrics.interrupted
    assert metrics.caller_speech_end == pytest.approx(speech_end)
    assert metrics.transcript_ready is not None and metrics.reply_text_ready is not None
    assert metrics.first_audio_synthesized is not None
    assert call.engine.node == "more"
    assert ("caller", "What are your opening hours?") in [(e.who, e.text) for e in call.conv.transcript]

    call.conv.on_audio_sent(call.clock.now + 0.25)
    assert metrics.as_dict()["first_audio_sent_ms"] == pytest.approx(
        (call.clock.now + 0.25 - speech_end) * 1000, abs=0.1
    )
    await call.play_out()


async def test_speech_too_short_to_be_words_is_no_turn(make_call: Callable[..., Call]) -> None:
    call = make_call(stt=FakeTranscriber(["Cough."]))
    await call.start()
    await call.say(0.1)  # under min_speech_ms: a click, not a turn
    await asyncio.sleep(0.01)
    assert call.stt.calls == [] and call.conv.turns == []


# -- speculative STT and early end of turn ---------------------------------------------------


async def test_speculative_transcript_is_used_when_the_caller_stays_silent(make_call: Callable[..., Call]) -> None:
    # No final punctuation: not a "complete sentence", so the turn ends on the silence as usual.
    call = make_call(stt=FakeTranscriber(["what are your opening hours"]))
    await call.start()
    await call.feed(voice(1.0))
    await call.feed(silence(0.3))
    assert len(call.stt.calls) == 1  # started at the pause, while the caller is still silent
    assert call.conv.turns == []
    await call.feed(silence(0.3))
    await call.turn(1)

    assert len(call.stt.calls) == 1  # the guess was used, not redone
    assert call.conv.turns[0].speculative
    assert call.conv.turns[0].transcript == "what are your opening hours"
    await call.hears([GREETING, *HOURS])
    await call.play_out()


async def test_speculation_is_discarded_when_the_caller_goes_on_talking(make_call: Callable[..., Call]) -> None:
    stt = FakeTranscriber(["I want to", "I want to know your opening hours"])
    stt.hold = True  # the first guess is still running when the caller carries on
    call = make_call(stt=stt)
    await call.start()
    await call.feed(voice(0.8))
    await call.feed(silence(0.3))
    assert len(stt.calls) == 1
    await call.feed(voice(0.6))
    await call.feed(silence(0.6))
    assert len(stt.calls) == 2
    assert stt.cancelled == 1  # the stale guess was dropped at the next pause
    assert stt.calls[1].size > stt.calls[0].size + 0.5 * RATE
    stt.release.set()
    await call.turn(1)

    assert [t.transcript for t in call.conv.turns] == ["I want to know your opening hours"]
    assert call.conv.turns[0].speculative  # the second guess covered the whole utterance
    await call.hears([GREETING, *HOURS])
    await call.play_out()


async def test_speculation_is_not_used_without_a_pause(make_call: Callable[..., Call]) -> None:
    call = make_call(
        stt=FakeTranscriber(["What are your opening hours?"]),
        config=ConversationConfig(vad=VadConfig(end_silence_ms=500, pause_ms=None)),
    )
    await call.start()
    await call.say(1.0)
    await call.turn(1)
    assert len(call.stt.calls) == 1 and not call.conv.turns[0].speculative
    await call.play_out()


async def test_complete_sentence_ends_the_turn_before_the_end_silence(make_call: Callable[..., Call]) -> None:
    call = make_call(stt=FakeTranscriber(["What are your opening hours?"]))
    await call.start()
    await call.feed(voice(1.0))
    speech_end = call.clock.now
    await call.feed(silence(0.26))  # the pause comes at 0.2 s; the end-of-turn silence is 0.5 s
    await call.turn(1)
    assert call.clock.now - speech_end < VAD.end_silence_ms / 1000

    metrics = call.conv.turns[0]
    assert metrics.speculative and metrics.transcript == "What are your opening hours?"
    assert metrics.caller_speech_end == pytest.approx(speech_end)
    await call.hears([GREETING, *HOURS])
    # The rest of the silence closes no second turn, and nothing is transcribed again.
    await call.feed(silence(0.6))
    await asyncio.sleep(0.01)
    assert len(call.conv.turns) == 1 and len(call.stt.calls) == 1
    await call.play_out()


@pytest.mark.parametrize(
    ("transcript", "early_end"),
    [
        ("What are your opening hours", True),  # no final punctuation
        ("What are your opening hours?", False),  # early end switched off
        ("Billing?", True),  # one word: "No?" at a comma's pause is very often "No, that's all…"
    ],
)
async def test_no_early_end_unless_the_sentence_is_complete(
    make_call: Callable[..., Call], transcript: str, early_end: bool
) -> None:
    call = make_call(
        stt=FakeTranscriber([transcript]),
        config=ConversationConfig(
            vad=VAD, early_end_on_complete_sentence=early_end, continuation_window_s=0, unclear_hold_ms=0
        ),
    )
    await call.start()
    await call.feed(voice(1.0))
    await call.feed(silence(0.3))
    await asyncio.sleep(0.01)
    assert len(call.stt.calls) == 1 and call.conv.turns == []
    await call.feed(silence(0.3))
    await call.turn(1)
    assert call.conv.turns[0].speculative
    await call.play_out()


@pytest.mark.parametrize(
    "transcript",
    [
        "What are your opening hours and",  # ends in a conjunction
        "What are your opening hours and...",  # trails off
        "I want to know your opening hours and.",  # a full stop after a filler is no end
        "I'd like to book it for the",
        "My order number is 4 8",  # digits being read out, in groups
        "Um,",
        "Hi there.",  # a greeting opens the turn: what the caller wants comes next
        "Okay, brilliant.",  # a reaction to the last answer, at an open question
    ],
)
async def test_words_that_sound_unfinished_wait_for_a_longer_silence(
    make_call: Callable[..., Call], transcript: str
) -> None:
    call = make_call(
        stt=FakeTranscriber([transcript]),
        config=ConversationConfig(vad=VAD, unfinished_hold_ms=1300, continuation_window_s=0),
    )
    await call.start()
    await call.feed(voice(1.0))
    await call.feed(silence(0.3))
    await asyncio.sleep(0.01)
    await call.feed(silence(0.6))  # past the usual 500 ms end of turn
    await asyncio.sleep(0.01)
    assert call.conv.turns == [], "answered a sentence that was not finished"
    await call.feed(silence(0.6))  # 1.5 s in all: the caller was done after all
    await call.turn(1)
    assert call.conv.turns[0].speculative
    await call.play_out()


async def test_complete_guess_arriving_after_the_caller_resumed_does_not_end_the_turn(
    make_call: Callable[..., Call],
) -> None:
    stt = FakeTranscriber(["I need help.", "I need help with the opening hours."])
    stt.hold = True
    call = make_call(stt=stt)
    await call.start()
    await call.feed(voice(0.8))
    await call.feed(silence(0.3))  # pause: the guess starts
    await call.feed(voice(0.3))  # ... and the caller carries on before it is back
    stt.release.set()  # "I need help." is complete, but the caller is talking again
    await asyncio.sleep(0.01)
    assert call.conv.turns == []
    await call.feed(voice(0.3))
    await call.feed(silence(0.6))
    await call.turn(1)
    assert [t.transcript for t in call.conv.turns] == ["I need help with the opening hours."]
    await call.play_out()


async def test_each_utterance_gets_its_own_transcript_while_stt_is_busy(make_call: Callable[..., Call]) -> None:
    """Three utterances of equal length arrive while the first is still being transcribed."""
    stt = FakeTranscriber(by_pitch={120: "what are your opening hours", 170: "alpha", 220: "bravo"})
    stt.hold = True
    # "alpha" and "bravo" mean nothing to the flow: answered at the usual silence here (see unclear_hold_ms).
    config = ConversationConfig(
        vad=VAD, early_end_on_complete_sentence=False, continuation_window_s=0, unclear_hold_ms=0
    )
    call = make_call(stt=stt, config=config)
    await call.start()
    await call.say(0.6, f0=120)  # ended; its transcription is held
    await call.say(0.6, f0=170)  # ended, queued behind the first
    await call.feed(voice(0.6, f0=220))
    await call.feed(silence(0.3))  # paused: a guess for the third starts
    stt.release.set()
    await call.feed(silence(0.3))
    await call.turn(3)
    await asyncio.sleep(0.01)
    assert [t.transcript for t in call.conv.turns] == ["what are your opening hours", "alpha", "bravo"]


# -- barge-in ----------------------------------------------------------------------------------


async def test_barge_in_pauses_at_once_then_flushes_and_answers_the_interruption(
    make_call: Callable[..., Call],
) -> None:
    # The hours reply: the first line is synthesised and queued, the second is still being synthesised.
    tts = FakeSynthesizer(hold_after=2)
    call = make_call(stt=FakeTranscriber(["What are your opening hours?", "Read me the notice."]), tts=tts)
    await call.start()
    await call.say(1.0)
    await call.turn(1)
    await until(lambda: len(tts.texts) == 3, what="the second line to be in synthesis")
    await call.hears([GREETING, HOURS[0]])
    assert call.conv.bot_talking and call.out.playing

    await call.feed(voice(0.06))  # three voiced frames: the caller has started talking
    assert call.out.paused, "the bot must go quiet as soon as the caller talks over it"
    assert call.out.flushes == 0 and call.out.playing  # only paused: it may be a backchannel
    await call.feed(voice(0.5))
    assert call.out.flushes == 0 and call.conv.barge_ins == 0
    await call.feed(voice(0.14))  # past barge_in_min_ms of talking over the bot: a real interruption
    assert call.out.flushes == 1 and not call.out.playing
    assert call.out.dropped_ms == 10  # the line it had paused in (10 ms of fake audio)
    assert call.conv.barge_ins == 1
    await asyncio.sleep(0)
    assert tts.cancelled == [HOURS[1]], "synthesis of the rest of the reply must stop"
    assert call.conv.turns[0].interrupted

    await call.feed(voice(0.4))
    await call.feed(silence(0.6))
    await call.turn(2)
    tts.release.set()
    await until(lambda: call.heard()[-1] == NOTICE[-1], what="the answer to the interruption")
    await call.hears([GREETING, HOURS[0], *NOTICE])
    assert HOURS[2] not in tts.texts
    assert call.conv.turns[1].transcript == "Read me the notice."
    assert call.conv.false_interruptions == 0
    await call.play_out()


async def test_backchannel_resumes_the_bot_and_is_no_turn(make_call: Callable[..., Call]) -> None:
    call = make_call(stt=FakeTranscriber(["Uh-huh."]))
    await call.start(play=False)  # the greeting is still playing
    await call.feed(voice(0.3))
    assert call.out.paused
    await call.feed(silence(0.6))
    await until(lambda: call.conv.false_interruptions == 1, what="the backchannel to be recognised")

    assert not call.out.paused and call.out.flushes == 0
    assert call.out.playing and call.heard() == [GREETING]  # carries on from where it stopped
    assert call.conv.turns == [] and call.conv.barge_ins == 0
    assert call.engine.history == [("bot", GREETING)]  # the policy never saw it
    await call.play_out()
    assert not call.conv.bot_talking


async def test_short_request_to_take_the_turn_interrupts_after_recognition(make_call: Callable[..., Call]) -> None:
    call = make_call(stt=FakeTranscriber(["Hold on."]))
    await call.start(play=False)
    await call.say(0.4)  # shorter than barge_in_min_ms, but "hold on" is not a backchannel
    await call.turn(1)
    assert call.out.flushes >= 1 and call.conv.barge_ins == 1
    assert call.conv.turns[0].transcript == "Hold on."
    await call.hears([GREETING, "Sure, take your time."])
    assert call.out.queue and call.tts.text_of(call.out.queue[0]) == "Sure, take your time."
    await call.play_out()


async def test_click_over_the_bot_resumes_it(make_call: Callable[..., Call]) -> None:
    call = make_call(stt=FakeTranscriber(["Click."]))
    await call.start(play=False)
    await call.feed(voice(0.1))  # a start, but under min_speech_ms: no words
    assert call.out.paused
    await call.feed(silence(0.6))
    await asyncio.sleep(0.01)
    assert not call.out.paused and call.out.flushes == 0 and call.out.playing
    assert call.stt.calls == [] and call.conv.turns == []
    await call.play_out()


async def test_uninterruptible_reply_ignores_speech_over_it(make_call: Callable[..., Call]) -> None:
    call = make_call(stt=FakeTranscriber(["Read me the notice.", "What are your opening hours?"]))
    await call.start()
    await call.say(1.0)
    await call.turn(1)
    await until(lambda: call.heard()[-1] == NOTICE[-1], what="the notice")
    assert call.conv.bot_talking and not call.out.paused
    pauses = call.out.pauses  # the early answer waited for a comma's pause to pass, before any of this

    await call.say(1.0)  # talking over the notice
    await asyncio.sleep(0.01)
    assert call.out.pauses == pauses and call.out.flushes == 0 and not call.out.paused
    assert len(call.stt.calls) == 1 and len(call.conv.turns) == 1
    assert call.conv.barge_ins == 0 and call.conv.false_interruptions == 0
    await call.hears([GREETING, *NOTICE])

    await call.play_out()  # once the notice is over, the caller is heard again
    await call.say(1.0)
    await call.turn(2)
    assert call.conv.turns[1].transcript == "What are your opening hours?"
    await call.hears([GREETING, *NOTICE, *HOURS])
    await call.play_out()


# -- LLM turns -----------------------------------------------------------------------------------


def _llm_call(make_call: Callable[..., Call], llm: FakeLlm | None, **config: Any) -> Call:
    return make_call(
        stt=FakeTranscriber(["I have a question."]),
        hooks=ConversationHooks(llm=llm),
        config=ConversationConfig(vad=VAD, **config),
    )


async def test_llm_sentences_are_spoken_in_order(make_call: Callable[..., Call]) -> None:
    llm = FakeLlm([sentence("We are open until five."), sentence("Is there anything else?"), done()])
    call = _llm_call(make_call, llm)
    await call.start()
    await call.say(1.0)
    await call.turn(1)
    await call.play_out()

    await call.hears([GREETING, "We are open until five.", "Is there anything else?"])
    messages, tools = llm.requests[0]
    assert messages[0]["role"] == "system" and "Answer questions about the shop." in messages[0]["content"]
    assert messages[-1] == {"role": "user", "content": "I have a question."}
    assert tools is not None and {t["function"]["name"] for t in tools} >= {"end_call", "handover", "goto"}
    assert llm.closed == 1
    assert call.conv.turns[0].reply == "We are open until five. Is there anything else?"
    assert call.engine.history[-1] == ("bot", "We are open until five. Is there anything else?")
    assert call.engine.waiting_for == "llm" and call.hangups == []


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        ([error()], [SORRY_LLM]),
        ([sentence("We are open until five."), error()], ["We are open until five."]),
    ],
    ids=["before-any-sentence", "after-a-sentence"],
)
async def test_llm_error_speaks_the_fallback_only_if_nothing_was_said(
    make_call: Callable[..., Call], events: list[SimpleNamespace], expected: list[str]
) -> None:
    llm = FakeLlm(events)
    call = _llm_call(make_call, llm)
    await call.start()
    await call.say(1.0)
    await call.turn(1)
    await call.play_out()
    await call.hears([GREETING, *expected])
    assert llm.closed == 1


async def test_silent_llm_is_replaced_by_the_fallback_within_the_budget(make_call: Callable[..., Call]) -> None:
    llm = FakeLlm(hang=True)
    call = _llm_call(make_call, llm, llm_first_sentence_budget_s=0.2)
    await call.start()
    loop = asyncio.get_running_loop()
    await call.say(1.0)
    ended = loop.time()
    await until(lambda: call.heard()[-1] == SORRY_LLM, timeout=1.0, what="the LLM fallback")
    assert loop.time() - ended <= 0.2 + 0.1
    await until(lambda: llm.closed == 1, what="the LLM stream to be closed")
    await call.play_out()
    await call.hears([GREETING, SORRY_LLM])


async def test_llm_budget_runs_from_the_end_of_the_callers_speech(make_call: Callable[..., Call]) -> None:
    # 0.7 s from the end of speech, of which the 0.5 s end-of-turn silence is already spent (the fake clock
    # stands still while we wait): about 0.2 s of real waiting is left, not 0.7 s.
    llm = FakeLlm(hang=True)
    call = _llm_call(make_call, llm, llm_first_sentence_budget_s=0.7, speculative_stt=False)
    await call.start()
    loop = asyncio.get_running_loop()
    await call.say(1.0, then=0.5)  # the turn ends on the last chunk fed
    ended = loop.time()
    await until(lambda: call.heard()[-1] == SORRY_LLM, timeout=1.5, what="the LLM fallback")
    assert 0.15 <= loop.time() - ended <= 0.45
    await call.play_out()


async def test_llm_end_call_tool_hangs_up_after_the_goodbye(
    make_call: Callable[..., Call], short_hangup_tail: None
) -> None:
    llm = FakeLlm([sentence("Goodbye, have a nice day."), tool_call("end_call"), done()])
    call = _llm_call(make_call, llm)
    await call.start()
    await call.say(1.0)
    await call.turn(1)
    await until(lambda: call.heard()[-1] == "Goodbye, have a nice day.", what="the goodbye")
    await asyncio.sleep(0.05)
    assert call.hangups == [], "hang up only once the goodbye has been played"
    await call.play_out()
    await until(lambda: call.hangups == ["bot_ended"], what="the hang-up")
    assert call.engine.ended


async def test_llm_goto_tool_continues_the_flow(make_call: Callable[..., Call]) -> None:
    llm = FakeLlm([sentence("We close at five."), tool_call("goto", node="more"), done()])
    call = _llm_call(make_call, llm)
    await call.start()
    await call.say(1.0)
    await call.turn(1)
    await call.play_out()
    await call.hears([GREETING, "We close at five.", "Anything else?"])
    assert call.engine.node == "more"


async def test_llm_node_without_an_llm_says_so(make_call: Callable[..., Call]) -> None:
    call = _llm_call(make_call, None)
    await call.start()
    await call.say(1.0)
    await call.turn(1)
    await call.play_out()
    await call.hears([GREETING, SORRY_TECHNICAL])


# -- flow actions --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        ((True, {"status": "shipped"}), ["Your order is shipped.", "Anything else?"]),
        ((True, {"other": 1}), ["I cannot reach the order system.", "Anything else?"]),
        ((False, None), ["I cannot reach the order system.", "Anything else?"]),
    ],
    ids=["found", "field-missing", "failed"],
)
async def test_http_action_result_follows_the_flow(
    make_call: Callable[..., Call], result: tuple[bool, Any], expected: list[str]
) -> None:
    requests: list[tuple[HttpRequest, list[str]]] = []
    call: Call

    async def http(request: HttpRequest) -> tuple[bool, Any]:
        requests.append((request, call.heard()))
        await asyncio.sleep(0)
        return result

    call = make_call(stt=FakeTranscriber(["Where is my order?"]), hooks=ConversationHooks(http=http))
    await call.start()
    await call.say(1.0)
    await call.turn(1)
    await call.play_out()

    [(request, heard_then)] = requests
    assert (request.method, request.url) == ("GET", "https://shop.example.com/orders/42")
    assert heard_then == [GREETING, "Let me check."]  # the holding line comes first
    await call.hears([GREETING, "Let me check.", *expected])
    assert call.engine.node == "more"


async def test_handover_happens_after_its_lines_are_played(make_call: Callable[..., Call]) -> None:
    handovers: list[Handover] = []
    call = make_call(
        stt=FakeTranscriber(["Can I talk to a person?"]), hooks=ConversationHooks(on_handover=handovers.append)
    )
    await call.start()
    await call.say(1.0)
    await call.turn(1)
    await until(lambda: call.heard()[-1] == "Passing you to a colleague.", what="the handover line")
    await asyncio.sleep(0.02)
    assert handovers == []
    await call.play_out()
    assert handovers == [Handover(queue="support", skills=[], reason="asked for a person")]
    assert call.hangups == []


async def test_handover_survives_a_barge_in_over_its_last_words(make_call: Callable[..., Call]) -> None:
    handovers: list[Handover] = []
    llm = FakeLlm(
        [
            sentence("Let me pass you to a colleague."),
            tool_call("handover", queue="support", reason="wants a person"),
            done(),
        ]
    )
    call = make_call(
        stt=FakeTranscriber(["I have a question.", "Hello? Is anyone there?"]),
        hooks=ConversationHooks(llm=llm, on_handover=handovers.append),
    )
    await call.start()
    await call.say(1.0)
    await call.turn(1)
    await call.hears([GREETING, "Let me pass you to a colleague."])
    await asyncio.sleep(0.01)  # the handover waits for that line to be played
    await call.say(0.8)  # the caller talks over it: a real interruption
    assert call.conv.barge_ins == 1
    await until(lambda: len(call.stt.calls) == 2, what="the interruption to be recognised")
    await asyncio.sleep(0.02)
    await call.play_out()
    assert handovers == [Handover(queue="support", skills=[], reason="wants a person")]


async def test_goodbye_interrupted_by_noise_still_hangs_up_once_the_caller_is_quiet(
    make_call: Callable[..., Call], short_hangup_tail: None
) -> None:
    config = ConversationConfig(vad=VAD, continuation_window_s=0, silence_reprompt_s=None, closing_quiet_s=0.2)
    call = make_call(stt=FakeTranscriber(["Goodbye.", ""]), config=config)
    await call.start()
    await call.say(1.0)
    await call.turn(1)
    await call.hears([GREETING, "Goodbye."])
    await call.say(0.8)  # noise over the goodbye, long enough to count as an interruption
    assert call.conv.barge_ins == 1
    await until(lambda: len(call.stt.calls) == 2, what="the noise to be transcribed")
    assert call.hangups == [], "hung up while the caller was making noise"
    await until(lambda: call.hangups == ["bot_ended"], what="the hang-up once the caller is quiet")


async def test_words_recognised_after_a_handover_do_not_cut_the_hold_message(make_call: Callable[..., Call]) -> None:
    hold = "Please hold, you are number one in the queue."
    stt = FakeTranscriber(["Can I talk to a person?", "Thank you very much."])
    said: list[asyncio.Task[None]] = []
    call: Call

    def on_handover(handover: Handover) -> None:  # what the handover service does
        call.conv.suspend()
        said.append(asyncio.create_task(call.conv.say(hold)))

    call = make_call(stt=stt, hooks=ConversationHooks(on_handover=on_handover))
    await call.start()
    await call.say(1.0)
    await call.turn(1)
    await call.hears([GREETING, "Passing you to a colleague."])
    stt.hold = True
    await call.say(0.4)  # "thank you very much", over the line, shorter than barge_in_min_ms
    assert not call.out.paused
    call.out.drain()  # the handover line has been played: the handover starts
    await until(lambda: call.heard()[-1] == hold, what="the hold message")
    stt.release.set()
    await asyncio.sleep(0.02)
    assert call.out.queue and call.tts.text_of(call.out.queue[-1]) == hold, "the hold message was flushed"
    assert call.conv.barge_ins == 0
    call.out.drain()
    await asyncio.wait_for(said[0], 1.0)


async def test_flow_end_hangs_up_after_the_goodbye(make_call: Callable[..., Call], short_hangup_tail: None) -> None:
    call = make_call(stt=FakeTranscriber(["Goodbye."]))
    await call.start()
    await call.say(1.0)
    await call.turn(1)
    await asyncio.sleep(0.05)
    await call.hears([GREETING, "Goodbye."])
    assert call.hangups == []
    await call.play_out()
    await until(lambda: call.hangups == ["bot_ended"], what="the hang-up")


# -- failures --------------------------------------------------------------------------------------


@pytest.mark.parametrize("speculative", [True, False])
async def test_stt_failure_asks_the_caller_to_repeat(make_call: Callable[..., Call], speculative: bool) -> None:
    stt = FakeTranscriber([RuntimeError("whisper crashed"), "What are your opening hours?"])
    call = make_call(stt=stt, config=ConversationConfig(vad=VAD, speculative_stt=speculative))
    await call.start()
    await call.say(1.0)
    await until(lambda: call.heard()[-1] == SORRY_HEARING, what="the apology")
    assert call.conv.turns == []
    await call.play_out()
    await call.say(1.0)  # and the call goes on
    await call.turn(1)
    await call.hears([GREETING, SORRY_HEARING, *HOURS])
    await call.play_out()


async def test_policy_failure_speaks_the_technical_apology(make_call: Callable[..., Call]) -> None:
    call = make_call(stt=FakeTranscriber(["What are your opening hours?"]))

    def broken(text: str) -> Reply:
        raise KeyError("slot")

    call.engine.handle = broken  # type: ignore[method-assign]
    await call.start()
    await call.say(1.0)
    await call.turn(1)
    await call.hears([GREETING, SORRY_TECHNICAL])
    await call.play_out()


async def test_tts_failure_plays_the_recorded_fallback(make_call: Callable[..., Call]) -> None:
    tts = FakeSynthesizer(fail=lambda text: "nine" in text)
    call = make_call(stt=FakeTranscriber(["What are your opening hours?"]), tts=tts, fallback_audio=FALLBACK)
    await call.start()
    await call.say(1.0)
    await call.turn(1)
    await call.play_out()
    await call.hears([GREETING, "<fallback>", *HOURS[1:]])
    assert any(chunk is FALLBACK for chunk in call.out.enqueued)


async def test_tts_failure_without_fallback_audio_goes_on(make_call: Callable[..., Call]) -> None:
    call = make_call(tts=FakeSynthesizer(fail=lambda text: True))
    call.conv.start()
    await until(lambda: call.tts.texts == [GREETING], what="the greeting attempt")
    await call.play_out()
    assert call.out.enqueued == []
    assert [(e.who, e.text) for e in call.conv.transcript] == [("bot", GREETING)]


# -- suspend, resume, say, close -----------------------------------------------------------------


async def test_suspend_stops_turns_and_resume_restarts(make_call: Callable[..., Call]) -> None:
    tts = FakeSynthesizer(hold_after=2)
    call = make_call(stt=FakeTranscriber(["What are your opening hours?", "Read me the notice."]), tts=tts)
    await call.start()
    await call.say(1.0)
    await call.turn(1)
    await until(lambda: len(tts.texts) == 3, what="the reply to be in synthesis")
    await call.feed(voice(0.3))  # the caller is mid-utterance (over the bot) when a person takes over

    call.conv.suspend()
    await asyncio.sleep(0)
    assert call.out.flushes >= 1 and not call.out.playing and not call.out.paused
    assert tts.cancelled == [HOURS[1]]
    assert not call.conv.bot_talking
    await call.say(1.0)  # words to the human agent are not turns
    await call.feed(silence(0.6))
    await asyncio.sleep(0.01)
    assert len(call.stt.calls) == 1 and len(call.conv.turns) == 1

    tts.release.set()
    call.conv.resume(Reply(lines=["Welcome back."], node="more"))
    await until(lambda: call.heard()[-1] == "Welcome back.", what="the welcome back")
    await call.play_out()
    await call.feed(silence(0.6))  # what was said before and during the suspension is gone
    await asyncio.sleep(0.01)
    assert len(call.stt.calls) == 1
    await call.say(1.0)
    await call.turn(2)
    assert call.conv.turns[1].transcript == "Read me the notice."
    await call.hears([GREETING, HOURS[0], "Welcome back.", *NOTICE])
    await call.play_out()


async def test_suspend_while_a_turn_is_being_transcribed_does_not_answer_it(make_call: Callable[..., Call]) -> None:
    stt = FakeTranscriber(["What are your opening hours?"])
    stt.hold = True
    call = make_call(stt=stt)
    await call.start()
    await call.say(1.0)
    await until(lambda: len(stt.calls) == 1, what="the transcription")
    call.conv.suspend()  # a person takes the call while the caller's last words are still being recognised
    stt.release.set()
    await asyncio.sleep(0.02)
    assert call.heard() == [GREETING], "the bot answered a turn after it was suspended"
    assert call.conv.turns == []


async def test_say_speaks_outside_the_flow_and_waits_until_played(make_call: Callable[..., Call]) -> None:
    call = make_call()
    await call.start()
    call.conv.suspend()
    said = asyncio.create_task(call.conv.say("You are number two in the queue."))
    await until(lambda: call.heard()[-1] == "You are number two in the queue.", what="the hold line")
    await asyncio.sleep(0.01)
    assert not said.done()
    call.out.drain()
    await asyncio.wait_for(said, 1.0)
    assert call.conv.transcript[-1].text == "You are number two in the queue."


async def test_close_cancels_everything_in_flight(make_call: Callable[..., Call]) -> None:
    tts = FakeSynthesizer(hold_after=2)
    stt = FakeTranscriber(["what are your opening hours", "and"])
    call = make_call(stt=stt, tts=tts)
    await call.start()
    await call.say(1.0)
    await call.turn(1)
    await until(lambda: len(tts.texts) == 3, what="the reply to be in synthesis")
    stt.hold = True
    await call.feed(voice(0.4))  # over the bot, too short to interrupt it
    await call.feed(silence(0.3))  # a guess is running
    assert call.conv.barge_ins == 0 and call.out.flushes == 0
    assert len(stt.calls) == 2
    own = _live_tasks()
    assert {t.get_name() for t in own} >= {"conversation", "speak", "stt-speculative"}

    await call.conv.close()
    await asyncio.sleep(0)
    assert not any(not t.done() for t in own)
    assert tts.cancelled == [HOURS[1]] and stt.cancelled == 1
    await call.say(1.0)  # audio after close is ignored
    await asyncio.sleep(0.01)
    assert len(stt.calls) == 2 and len(call.conv.turns) == 1


async def test_close_before_start_is_harmless(make_call: Callable[..., Call]) -> None:
    call = make_call()
    await call.conv.close()
    call.conv.feed(voice(0.5), 1.0)
    assert call.out.enqueued == []


async def test_llm_turn_is_cancelled_by_a_barge_in(make_call: Callable[..., Call]) -> None:
    llm = FakeLlm([sentence("Let me explain our opening hours in detail."), sentence("We open at nine."), done()])
    tts = FakeSynthesizer(hold_after=2)
    call = make_call(stt=FakeTranscriber(["I have a question.", "Goodbye."]), tts=tts, hooks=ConversationHooks(llm=llm))
    await call.start()
    await call.say(1.0)
    await call.turn(1)
    await until(lambda: len(tts.texts) == 3, what="the second sentence in synthesis")
    await call.feed(voice(0.8))
    assert call.conv.barge_ins == 1
    await until(lambda: llm.closed == 1, what="the LLM stream to be closed")
    assert "We open at nine." in tts.cancelled
    await call.feed(silence(0.6))
    await call.turn(2)
    tts.release.set()
    await until(lambda: call.heard()[-1] == "Goodbye.", what="the goodbye")


class FakeEndpointCheck:
    """Silero stand-in: says, look by look, whether the caller is still talking in the pause."""

    def __init__(self, *still_talking: bool) -> None:
        self.answers = list(still_talking)
        self.looked_at_ms: list[int] = []

    @property
    def asked(self) -> int:
        return len(self.looked_at_ms)

    async def still_talking(self, audio16k: np.ndarray, silence_ms: int) -> bool:
        self.looked_at_ms.append(silence_ms)
        return self.answers[min(len(self.looked_at_ms), len(self.answers)) - 1]


@pytest.mark.parametrize(("looks", "ended_early"), [((False,), True), ((True, False), True), ((True, True), False)])
async def test_second_opinion_can_hold_back_an_early_end(
    make_call: Callable[..., Call], looks: tuple[bool, ...], ended_early: bool
) -> None:
    check = FakeEndpointCheck(*looks)
    hooks = ConversationHooks(endpoint_check=check)
    call = make_call(stt=FakeTranscriber(["What are your opening hours?"]), hooks=hooks)
    await call.start()
    await call.feed(voice(1.0))
    await call.feed(silence(0.2))
    await asyncio.sleep(0.02)
    assert check.asked == 1
    assert len(call.conv.turns) == (1 if looks == (False,) else 0)
    # Voice heard at the start of the pause (a fading "s") is looked at again later in it, newest audio only.
    await call.feed(silence(0.1))
    await asyncio.sleep(0.3)
    assert check.asked == len(looks)
    if len(looks) > 1:
        assert check.looked_at_ms[1] < check.looked_at_ms[0] + 100
    # Without the second opinion's lasting doubt the turn ended in the pause; with it, after the full silence.
    assert len(call.conv.turns) == (1 if ended_early else 0)
    await call.feed(silence(0.4))
    await call.turn(1)
    await call.play_out()


async def test_partial_transcripts_while_the_caller_talks(make_call: Callable[..., Call]) -> None:
    partials: list[str] = []
    call = make_call(
        stt=FakeTranscriber(["What are", "What are your", "What are your opening", "What are your opening hours?"]),
        config=ConversationConfig(vad=VAD, partial_stt_every_ms=400, speculative_stt=False),
        hooks=ConversationHooks(on_partial=partials.append),
    )
    await call.start()
    for _ in range(5):
        await call.feed(voice(0.25))
        await asyncio.sleep(0.01)
    assert partials and partials[0] == "What are"
    assert call.conv.partial_transcript in partials
    await call.feed(silence(0.6))
    await call.turn(1)
    assert call.conv.partial_transcript == ""
    await call.play_out()
