"""STT and TTS with deadlines (issue 14): a failing, full or hung inference pool gives a spoken fallback from
memory, never dead air, and repeated failures end the call cleanly.

Same harness as tests/test_conversation.py: fakes at the model seams, the real endpointer and flow engine.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from agent.conversation import SORRY_HEARING, ConversationConfig
from tests import test_conversation as harness
from tests.test_conversation import FALLBACK, GREETING, HOURS, VAD, Call, FakeSynthesizer, FakeTranscriber, until

# The conversation tests' fixtures, used here by name.
make_call = harness.make_call
short_hangup_tail = harness.short_hangup_tail


def _config(**kw: float) -> ConversationConfig:
    return ConversationConfig(vad=VAD, continuation_window_s=0, silence_reprompt_s=None, **kw)  # type: ignore[arg-type]


async def test_hung_stt_asks_again_within_its_deadline(make_call: Callable[..., Call]) -> None:
    stt = FakeTranscriber(["What are your opening hours?", "What are your opening hours?"])
    stt.hold = True
    call = make_call(stt=stt, config=_config(stt_timeout_s=0.3))
    await call.start()
    started = time.monotonic()
    await call.say(1.0)
    await until(lambda: call.heard()[-1:] == [SORRY_HEARING], timeout=2.0, what="the apology")
    assert time.monotonic() - started < 1.0
    assert stt.cancelled >= 1  # the hung recognition was given up, not left waiting
    await call.play_out()
    stt.hold = False  # the pool recovers: the call goes on
    await call.say(1.0)
    await call.turn(1)
    await call.hears([GREETING, SORRY_HEARING, *HOURS])


async def test_repeated_stt_failures_end_the_call_after_the_recorded_apology(
    make_call: Callable[..., Call], short_hangup_tail: None
) -> None:
    stt = FakeTranscriber([RuntimeError("pool broken")] * 3)
    call = make_call(stt=stt, config=_config(max_speech_failures=2), fallback_audio=FALLBACK)
    await call.start()
    await call.say(1.0)
    await until(lambda: call.heard()[-1:] == [SORRY_HEARING], what="the first apology")
    await call.play_out()
    await call.say(1.0)
    await until(lambda: call.heard()[-1:] == ["<fallback>"], what="the recorded apology")
    await call.play_out()
    await until(lambda: call.hangups == ["speech_failed"], what="the hang-up")


async def test_hung_tts_plays_the_recorded_fallback_once_per_reply(make_call: Callable[..., Call]) -> None:
    tts = FakeSynthesizer(hold_after=1)  # the greeting is synthesised; every later line hangs
    call = make_call(
        stt=FakeTranscriber(["What are your opening hours?"]),
        tts=tts,
        config=_config(tts_first_audio_timeout_s=0.2),
        fallback_audio=FALLBACK,
    )
    await call.start()
    started = time.monotonic()
    await call.say(1.0)
    await until(lambda: call.heard()[-1:] == ["<fallback>"], timeout=2.0, what="the fallback")
    assert time.monotonic() - started < 1.0
    await call.play_out(timeout=3.0)
    assert call.heard() == [GREETING, "<fallback>"]  # the other hung lines add no second apology


async def test_tts_that_keeps_failing_ends_the_call(make_call: Callable[..., Call], short_hangup_tail: None) -> None:
    tts = FakeSynthesizer(fail=lambda text: text != GREETING)
    stt = FakeTranscriber(["What are your opening hours?", "What are your opening hours?"])
    call = make_call(stt=stt, tts=tts, config=_config(max_speech_failures=2), fallback_audio=FALLBACK)
    await call.start()
    await call.say(1.0)
    await call.turn(1)
    await call.play_out()
    assert call.hangups == []
    await call.say(1.0)
    await call.turn(2)
    await call.play_out()
    await until(lambda: call.hangups == ["speech_failed"], what="the hang-up")
    assert call.heard() == [GREETING, "<fallback>", "<fallback>"]


async def test_a_good_line_resets_the_failure_count(make_call: Callable[..., Call]) -> None:
    failing = {"on": True}
    tts = FakeSynthesizer(fail=lambda text: failing["on"] and text != GREETING)
    stt = FakeTranscriber(["What are your opening hours?"] * 3)
    call = make_call(stt=stt, tts=tts, config=_config(max_speech_failures=2), fallback_audio=FALLBACK)
    await call.start()
    await call.say(1.0)
    await call.turn(1)
    await call.play_out()
    failing["on"] = False
    await call.say(1.0)
    await call.turn(2)
    await call.play_out()
    failing["on"] = True
    await call.say(1.0)
    await call.turn(3)
    await call.play_out()
    await asyncio.sleep(0.05)
    assert call.hangups == []
