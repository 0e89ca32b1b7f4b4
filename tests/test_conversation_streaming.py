"""A speech-to-text engine with its own stream plugs into a call: the conversation feeds it the caller's
audio as it comes and asks it, never the batch `transcribe`, for partials and the turn's transcript.

Same harness as tests/test_conversation.py (real FlowEngine and webrtcvad endpointer, a fake clock); the
engine here is a stand-in that records what it was fed. tests/e2e/test_streaming_stt_call.py runs a
streaming engine built on Whisper through a whole simulated call.
"""

# ruff: noqa: F811  (the harness's fixtures are imported by name, and pytest passes them back in)
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from agent.conversation import ConversationConfig
from agent.speech.utterance_stream import UtteranceStream
from agent.speech.vad import Endpointer
from tests.test_conversation import (  # noqa: F401  (make_call is a fixture)
    GREETING,
    HOURS,
    RATE,
    VAD,
    Call,
    make_call,
    silence,
    voice,
)
from tests.test_real_callers import real_config


class RecordingStream:
    """Answers with its engine's script; remembers every chunk it was fed and every question it was asked."""

    def __init__(self, engine: StreamingEngine) -> None:
        self.engine = engine
        self.chunks: list[np.ndarray] = []
        self.partials = 0
        self.finished = False
        self.cancelled = False

    @property
    def samples(self) -> int:
        return sum(c.size for c in self.chunks)

    def feed(self, audio16k: np.ndarray) -> None:
        assert not self.finished, "audio fed after finish()"
        self.chunks.append(np.asarray(audio16k).copy())

    async def partial(self) -> str:
        self.partials += 1
        return self.engine.text_for(self.samples)

    async def finish(self) -> str:
        self.finished = True
        return self.engine.text_for(self.samples)

    def cancel(self) -> None:
        self.cancelled = True


class StreamingEngine:
    """A `StreamingTranscriber`: its transcripts depend on how much audio its stream heard."""

    def __init__(self, texts: list[tuple[float, str]]) -> None:
        self.texts = texts  # (at least this many seconds heard, the transcript), longest last
        self.streams: list[RecordingStream] = []
        self.batch_calls = 0
        self.calls: list[np.ndarray] = []  # the harness's FakeTranscriber interface, unused here

    def text_for(self, samples: int) -> str:
        return next((text for seconds, text in reversed(self.texts) if samples >= seconds * RATE), "")

    def start_stream(self) -> RecordingStream:
        stream = RecordingStream(self)
        self.streams.append(stream)
        return stream

    async def transcribe(self, audio16k: np.ndarray) -> str:
        self.batch_calls += 1
        raise AssertionError("the conversation used the batch path of a streaming engine")


async def test_a_streaming_engine_hears_the_caller_as_they_talk_and_answers_the_turn(
    make_call: Callable[..., Call],
) -> None:
    engine = StreamingEngine([(0.5, "what are your opening hours")])
    call = make_call(stt=engine)  # type: ignore[arg-type]
    await call.start()
    await call.feed(voice(1.0))
    stream = engine.streams[-1]
    assert stream.samples >= 0.9 * RATE, "the engine heard nothing while the caller was talking"
    assert len(stream.chunks) >= 20  # fed packet by packet, not once at the end
    await call.feed(silence(0.6))
    await call.turn(1)

    assert stream.finished and stream.partials >= 1  # a partial at the pause, the turn from finish()
    turn = call.conv.turns[0]
    assert turn.transcript == "what are your opening hours"
    # Fed the utterance as the endpointer keeps it: the voice and a short tail, never the end-of-turn silence.
    assert 1.0 * RATE <= stream.samples <= 1.0 * RATE + VAD.pre_roll_ms * RATE // 1000 + VAD.pause_ms * RATE // 1000
    assert engine.batch_calls == 0
    await call.hears([GREETING, *HOURS])
    await call.play_out()


async def test_a_continued_thought_streams_the_earlier_fragment_first(make_call: Callable[..., Call]) -> None:
    engine = StreamingEngine([(0.3, "I got a letter."), (1.5, "I got a letter, what are your opening hours?")])
    call = make_call(stt=engine, config=real_config())  # type: ignore[arg-type]
    await call.start()
    await call.say(0.8)
    await call.turn(1)
    first = engine.streams[-1]
    await call.feed(voice(1.0))  # the caller goes on with the same thought
    second = engine.streams[-1]
    assert second is not first and first.finished
    # The new stream heard the fragment (and a short gap) before the new words, as one piece of audio.
    assert second.chunks[0].size > first.samples
    assert np.array_equal(second.chunks[0][: first.samples], np.concatenate(first.chunks))
    await call.feed(silence(1.4))
    await call.turn(2)
    await call.play_out()
    assert [e.text for e in call.conv.transcript if e.who == "caller"] == [
        "I got a letter, what are your opening hours?"
    ]
    assert engine.batch_calls == 0


async def test_a_blip_drops_its_stream_and_closing_cancels_the_current_one(make_call: Callable[..., Call]) -> None:
    engine = StreamingEngine([(0.5, "hello")])
    call = make_call(stt=engine, config=ConversationConfig(vad=VAD, continuation_window_s=0))  # type: ignore[arg-type]
    await call.start()
    await call.say(0.1)  # a click: no turn
    assert engine.streams and engine.streams[-1].cancelled and call.conv.turns == []
    await call.feed(voice(0.5))
    talking = engine.streams[-1]
    await call.conv.close()
    assert talking.cancelled


def test_the_endpointer_hands_a_stream_only_growing_audio_without_the_closing_silence() -> None:
    ep = Endpointer(VAD)
    stream_audio: list[np.ndarray] = []
    fed = 0
    end_audio = None
    for chunk in np.array_split(np.concatenate([silence(0.2), voice(0.6), silence(0.1), voice(0.4), silence(0.8)]), 97):
        for event in ep.feed(chunk):
            if event.kind == "end":
                end_audio = event.audio
        more = ep.kept_audio_after(fed)
        if more is not None:
            stream_audio.append(more)
            fed += more.size
    assert end_audio is not None
    assert np.array_equal(np.concatenate(stream_audio), end_audio)


async def test_utterance_stream_catches_up_from_a_lead_in() -> None:
    engine = StreamingEngine([(0.1, "x")])
    stream = UtteranceStream(engine, lead_in=np.ones(800, dtype=np.int16))  # type: ignore[arg-type]
    stream.catch_up(np.ones(1600, dtype=np.int16))
    stream.catch_up(np.ones(1200, dtype=np.int16))  # nothing new
    stream.feed_more(np.ones(400, dtype=np.int16))
    recorded = engine.streams[-1]
    assert [c.size for c in recorded.chunks] == [800, 1600, 400] and stream.fed == 2000
    assert await stream.finish() == "x" and not stream.reused_partial
