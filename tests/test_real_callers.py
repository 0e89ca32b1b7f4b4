"""Turn-taking with callers who pause mid-thought, talk over goodbyes, or say nothing.

Same harness as tests/test_conversation.py (real FlowEngine and webrtcvad endpointer, fakes at the model
seams, a fake clock), with the production defaults for continuation turned on.
"""

# ruff: noqa: F811  (the harness's fixtures are imported by name, and pytest passes them back in)
from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from agent.conversation import ConversationConfig, ConversationHooks
from agent.dialogue.effects import Handover
from agent.dialogue.engine import FlowEngine
from agent.dialogue.flow import parse_flow
from tests.test_conversation import (  # noqa: F401  (make_call and short_hangup_tail are fixtures)
    GREETING,
    HOURS,
    RATE,
    VAD,
    Call,
    FakeLlm,
    FakeTranscriber,
    done,
    make_call,
    sentence,
    short_hangup_tail,
    silence,
    tool_call,
    until,
    voice,
)

SORRY = "Sorry, could you say that again?"


def real_config(**overrides: object) -> ConversationConfig:
    """The production defaults that matter here, with short real-time waits for the timers.

    The harness flow's re-prompt to "I got a letter." stands in for any answer to a fragment, so here it
    comes at the usual silence; the longer wait before a "sorry?" (`unclear_hold_ms`) has its own tests."""
    settings: dict[str, object] = {
        "vad": VAD,
        "continuation_window_s": 2.0,
        "unfinished_hold_ms": 1300,
        "unclear_hold_ms": 0,
        "closing_quiet_s": 0.2,
        "silence_reprompt_s": None,
    }
    settings.update(overrides)
    return ConversationConfig(**settings)  # type: ignore[arg-type]


def caller_lines(call: Call) -> list[str]:
    return [e.text for e in call.conv.transcript if e.who == "caller"]


async def test_caller_who_goes_on_after_a_pause_gets_one_answer_to_the_whole_thought(
    make_call: Callable[..., Call],
) -> None:
    stt = FakeTranscriber(["I got a letter.", "I got a letter, what are your opening hours?"])
    call = make_call(stt=stt, config=real_config())
    await call.start()
    await call.say(0.8)  # "I got a letter." then a one-second pause...
    await call.turn(1)
    await call.hears([GREETING, SORRY])  # the bot took the pause for the end of the turn
    await call.feed(voice(1.0))  # ... and the caller goes on with the same thought
    assert call.out.queue == [], "the bot kept talking over the rest of the sentence"
    await call.feed(silence(1.4))
    await call.turn(2)
    await call.play_out()
    assert call.heard() == [GREETING, SORRY, *HOURS]
    # The whole thought was recognised again as one piece of audio: both fragments and the gap.
    assert stt.calls[-1].size > (0.8 + 1.0) * RATE
    assert caller_lines(call) == ["I got a letter, what are your opening hours?"]
    assert call.conv.continuations == 1 and call.conv.false_starts == 1
    assert call.conv.turns[0].continued and not call.conv.turns[1].continued
    assert call.engine.misses == 0, "the fragment's re-prompt was counted as a miss"


async def test_caller_who_goes_on_before_the_answer_is_answered_once(make_call: Callable[..., Call]) -> None:
    stt = FakeTranscriber(["I got a letter.", "I got a letter, what are your opening hours?"])
    stt.hold = True  # the fragment is still being recognised when the caller goes on
    call = make_call(stt=stt, config=real_config())
    await call.start()
    await call.say(0.8)
    await call.feed(voice(0.5))
    stt.release.set()
    await call.feed(voice(0.5))
    await call.feed(silence(1.4))
    await call.turn(1)
    await call.play_out()
    assert call.heard() == [GREETING, *HOURS]
    assert len(call.conv.turns) == 1 and call.conv.false_starts == 0


async def test_a_cough_after_the_turn_does_not_drop_the_answer(make_call: Callable[..., Call]) -> None:
    call = make_call(stt=FakeTranscriber(["What are your opening hours?"]), config=real_config())
    await call.start()
    await call.say(1.0)
    await call.turn(1)
    await call.hears([GREETING, *HOURS])
    await call.feed(voice(0.1))  # a cough: the bot goes quiet at once...
    assert call.out.paused
    await call.feed(silence(1.4))  # ... and goes on when it was nothing
    assert not call.out.paused
    await call.play_out()
    assert call.heard() == [GREETING, *HOURS]
    assert call.conv.continuations == 0 and len(call.conv.turns) == 1


async def test_a_cough_after_a_dropped_answer_gets_the_answer_after_all(make_call: Callable[..., Call]) -> None:
    stt = FakeTranscriber(["What are your opening hours?"])
    stt.hold = True
    call = make_call(stt=stt, config=real_config())
    await call.start()
    await call.say(1.0)
    await call.feed(voice(0.1))  # a cough while the turn is being recognised
    await call.feed(silence(1.4))
    stt.release.set()
    await call.turn(1)
    await call.play_out()
    assert call.heard() == [GREETING, *HOURS]
    assert len(stt.calls) == 1, "the words were recognised twice"


async def test_speech_after_the_window_is_a_new_turn(make_call: Callable[..., Call]) -> None:
    stt = FakeTranscriber(["What are your opening hours?", "Thanks, goodbye."])
    call = make_call(stt=stt, config=real_config(continuation_window_s=1.0))
    await call.start()
    await call.say(1.0)
    await call.turn(1)
    await call.play_out()
    await call.feed(silence(1.5))
    await call.say(1.0)
    await call.turn(2)
    assert call.conv.continuations == 0
    assert caller_lines(call) == ["What are your opening hours?", "Thanks, goodbye."]


async def test_caller_talking_over_the_goodbye_is_never_hung_up_on(
    make_call: Callable[..., Call], short_hangup_tail: None
) -> None:
    stt = FakeTranscriber(["Goodbye.", "Wait, one more thing, what are your opening hours?"])
    call = make_call(stt=stt, config=real_config(continuation_window_s=0))
    await call.start()
    await call.say(1.0)
    await call.turn(1)
    await call.hears([GREETING, "Goodbye."])
    await call.feed(voice(1.2))  # "wait, one more thing…" over the goodbye
    assert call.conv.barge_ins == 1
    await call.feed(silence(1.4))
    await call.turn(2)
    await asyncio.sleep(0.3)
    assert call.hangups == [], "hung up on a caller who was still talking"
    await call.play_out()
    assert call.heard()[-len(HOURS) :] == HOURS, call.heard()  # "wait, …" reopened the call and was answered
    await asyncio.sleep(0.3)
    assert call.hangups == []


async def test_caller_who_did_not_hear_the_goodbye_hears_it_again_then_the_call_ends(
    make_call: Callable[..., Call], short_hangup_tail: None
) -> None:
    stt = FakeTranscriber(["Goodbye.", "Thanks so much for your help today."])
    call = make_call(stt=stt, config=real_config(continuation_window_s=0))
    await call.start()
    await call.say(1.0)
    await call.turn(1)
    await call.hears([GREETING, "Goodbye."])
    await call.say(1.2)
    await call.turn(2)
    assert call.hangups == []
    await call.hears([GREETING, "Goodbye.", "Goodbye."])
    await call.play_out()
    await until(lambda: call.hangups == ["bot_ended"], what="the hang-up after the goodbye was heard")


async def test_goodbye_heard_in_full_waits_for_the_callers_last_words(make_call: Callable[..., Call]) -> None:
    stt = FakeTranscriber(["Goodbye.", "Bye bye."])
    call = make_call(stt=stt, config=real_config(continuation_window_s=0, closing_quiet_s=5.0))
    await call.start()
    await call.say(1.0)
    await call.turn(1)
    await call.hears([GREETING, "Goodbye."])
    call.out.drain()  # the goodbye has been played...
    await call.feed(voice(0.3))  # ... and the caller says "bye bye" before the line is torn down
    await asyncio.sleep(0.5)
    assert call.hangups == [], "hung up in the middle of the caller's words"
    await call.feed(silence(1.4))
    # The goodbye was heard in full: once the caller is done, the call ends without the long wait.
    await until(lambda: call.hangups == ["bot_ended"], timeout=2.0, what="the hang-up")


async def test_silent_caller_is_prompted_then_bid_goodbye(
    make_call: Callable[..., Call], short_hangup_tail: None
) -> None:
    call = make_call(config=real_config(silence_reprompt_s=0.1))
    await call.start()
    await until(lambda: len(call.heard()) > 1, what="the re-prompt")
    await call.play_out()
    assert call.heard()[1:] == ["Are you still there?", GREETING]
    await until(lambda: len(call.heard()) > 3, what="the goodbye")
    assert "end the call" in call.heard()[3]
    await call.play_out()
    await until(lambda: call.hangups == ["caller_silent"], what="the hang-up")


async def test_caller_who_answers_the_silence_prompt_is_heard(make_call: Callable[..., Call]) -> None:
    call = make_call(stt=FakeTranscriber(["What are your opening hours?"]), config=real_config(silence_reprompt_s=0.2))
    await call.start()
    await until(lambda: len(call.heard()) > 1, what="the re-prompt")
    await call.play_out()
    await call.say(1.0)
    await call.turn(1)
    await call.play_out()
    assert call.heard()[-len(HOURS) :] == HOURS
    await asyncio.sleep(0.1)
    assert call.hangups == []


async def test_two_interrupted_replies_each_carry_out_their_handover(make_call: Callable[..., Call]) -> None:
    """Regression: interrupted replies were remembered by id(), which CPython reuses at once."""
    handovers: list[Handover] = []
    llm = FakeLlm([sentence("Let me pass you to a colleague."), tool_call("handover", queue="support"), done()])
    call = make_call(
        stt=FakeTranscriber(["I have a question.", "Hello? Is anyone there?"] * 2),
        hooks=ConversationHooks(llm=llm, on_handover=handovers.append),
        config=real_config(continuation_window_s=0),
    )
    await call.start()
    for n in (1, 2):
        await call.say(1.0)
        await call.turn(2 * n - 1)
        await until(lambda: call.heard()[-1] == "Let me pass you to a colleague.", what="the handover line")
        await call.say(0.8)  # talked over: the handover still happens
        await until(lambda n=n: len(handovers) == n, what=f"handover {n}")
        call.engine.goto("hello")  # an agent hands the call back
        llm.events = [sentence("Let me pass you to a colleague."), tool_call("handover", queue="support"), done()]
        await call.play_out()
    assert len(handovers) == 2


async def test_flow_state_is_restored_when_a_fragment_moved_it(make_call: Callable[..., Call]) -> None:
    stt = FakeTranscriber(["What are your opening hours?", "What are your opening hours, and a person please?"])
    call = make_call(stt=stt, config=real_config())
    await call.start()
    await call.say(1.0)
    await call.turn(1)
    assert call.engine.node == "more"
    await call.feed(voice(1.0))
    await call.feed(silence(1.4))
    await call.turn(2)
    await call.play_out()
    # Handled from the greeting's question again, as one utterance (not from "more", where the fragment led).
    assert [text for who, text in call.engine.history if who == "caller"] == [
        "What are your opening hours, and a person please?"
    ]


async def test_an_answer_the_caller_talked_over_is_offered_again(make_call: Callable[..., Call]) -> None:
    stt = FakeTranscriber(["What are your opening hours?", "Yes."])
    call = make_call(stt=stt, config=real_config(continuation_window_s=0))
    await call.start()
    await call.say(1.0)
    await call.turn(1)
    await call.hears([GREETING, *HOURS])  # queued, none of it played yet
    await call.say(0.8)  # "yes" over it, long enough to be an interruption
    assert call.conv.barge_ins == 1
    await call.turn(2)
    await call.play_out()
    # The caller never heard the hours: a bare "yes" gets them again instead of moving on.
    assert call.heard()[-len(HOURS) :] == HOURS, call.heard()


class ClassifyingLlm(FakeLlm):
    """An LLM that also classifies (LlmClient.classify's contract): picks `pick` among the names offered."""

    def __init__(self, pick: str) -> None:
        super().__init__()
        self.pick = pick
        self.asked: list[tuple[str, list[str]]] = []

    async def classify(self, text: str, intents: list[str]) -> str | None:
        self.asked.append((text, intents))
        return self.pick if self.pick in intents else None


async def test_an_llm_classifies_only_when_offline_matching_is_unsure(make_call: Callable[..., Call]) -> None:
    llm = ClassifyingLlm("hours")
    stt = FakeTranscriber(["When can I swing by the shop?", "What are your opening hours?"])
    call = make_call(stt=stt, hooks=ConversationHooks(llm=llm), config=real_config(continuation_window_s=0))
    await call.start()
    await call.say(1.0)
    await call.turn(1)
    await call.play_out()
    assert llm.asked and llm.asked[0][0] == "When can I swing by the shop?"
    assert "hours" in llm.asked[0][1]
    assert call.heard()[1 : 1 + len(HOURS)] == HOURS, call.heard()  # the LLM's pick was followed
    await call.say(1.0)
    await call.turn(2)
    assert len(llm.asked) == 1, "asked the LLM about words the offline matcher understood"


async def test_after_a_held_pause_a_full_stop_does_not_end_the_turn(make_call: Callable[..., Call]) -> None:
    """A caller who paused mid-sentence once ("I'm calling about…") gets the same patience at the next pause,
    even when Whisper puts a full stop there ("…an order I placed on Saturday.")."""
    stt = FakeTranscriber(["I am calling about", "I am calling about an order I placed on Saturday."])
    call = make_call(stt=stt, config=real_config(continuation_window_s=0))
    await call.start()
    await call.feed(voice(0.8))
    await call.feed(silence(1.0))  # held: "about" is no end
    await call.feed(voice(0.8))
    await call.feed(silence(0.8))  # a complete-looking sentence at this pause
    await asyncio.sleep(0.01)
    assert call.conv.turns == [], "took the turn at the second pause"
    await call.feed(silence(0.7))
    await call.turn(1)


async def test_uh_huh_while_the_answer_plays_is_a_backchannel_not_a_continuation(
    make_call: Callable[..., Call],
) -> None:
    stt = FakeTranscriber(["What are your opening hours?", "Uh-huh."])
    call = make_call(stt=stt, config=real_config())
    await call.start()
    await call.say(1.0)
    await call.turn(1)
    await call.hears([GREETING, *HOURS])
    call.conv.on_audio_sent(call.clock.now)  # the caller is hearing the answer
    await call.feed(voice(0.4))  # "uh-huh", shorter than a barge-in
    assert call.out.paused  # quiet at once, as for any speech over the bot...
    await call.feed(silence(1.4))
    await until(lambda: len(stt.calls) >= 2, what="the uh-huh to be recognised")
    await asyncio.sleep(0.02)
    assert not call.out.paused  # ... and on again: the answer was not dropped
    await call.play_out()
    assert call.heard() == [GREETING, *HOURS]
    assert call.conv.continuations == 0 and call.conv.false_interruptions == 1


async def test_words_while_the_answer_plays_still_join_the_thought_when_long_enough(
    make_call: Callable[..., Call],
) -> None:
    stt = FakeTranscriber(["I got a letter.", "I got a letter, what are your opening hours?"])
    call = make_call(stt=stt, config=real_config())
    await call.start()
    await call.say(0.8)
    await call.turn(1)
    await call.hears([GREETING, SORRY])
    call.conv.on_audio_sent(call.clock.now)
    await call.feed(voice(1.0))  # longer than a barge-in: the caller is going on with the thought
    assert call.out.queue == []
    await call.feed(silence(1.4))
    await call.turn(2)
    await call.play_out()
    assert call.heard() == [GREETING, SORRY, *HOURS]
    assert call.conv.continuations == 1


async def test_speech_after_hearing_a_second_of_the_answer_is_about_the_answer(
    make_call: Callable[..., Call],
) -> None:
    stt = FakeTranscriber(["What are your opening hours?", "Uh-huh, right, okay then."])
    call = make_call(stt=stt, config=real_config())
    await call.start()
    await call.say(1.0)
    await call.turn(1)
    call.conv.on_audio_sent(call.clock.now)
    await call.feed(silence(1.2))  # the caller listens to the answer for a while
    await call.feed(voice(0.4))
    await call.feed(silence(1.4))
    assert call.conv.continuations == 0


async def test_an_answer_that_must_be_heard_in_full_is_still_dropped_for_the_rest_of_the_thought(
    make_call: Callable[..., Call],
) -> None:
    """A handover notice or terms (`interruptible: false`) answer half a sentence the caller is still
    saying: the rest of the thought drops them, as it drops any answer, before the caller has heard it."""
    stt = FakeTranscriber(["Read me the notice.", "Read me the notice? No, what are your opening hours?"])
    call = make_call(stt=stt, config=real_config())
    await call.start()
    await call.say(0.8)
    await call.turn(1)
    await call.hears([GREETING, "This call may be recorded.", "Please listen to the whole notice.", "Anything else?"])
    call.conv.on_audio_sent(call.clock.now)
    await call.feed(voice(1.0))  # the caller goes on, less than a second into the notice
    assert call.out.queue == [], "the bot kept reading the notice over the rest of the sentence"
    await call.feed(silence(1.4))
    await call.turn(2)
    await call.play_out()
    assert call.conv.continuations == 1
    assert call.heard()[-len(HOURS) :] == HOURS


async def _hesitant_callers_next_line(call: Call, speech_s: float, *, pause_s: float) -> int:
    """A caller marked hesitant says their next line and pauses: the turns answered by then."""
    assert call.conv.hesitant
    await call.feed(silence(3.0))
    await call.feed(voice(speech_s))
    await call.feed(silence(pause_s))
    await asyncio.sleep(0.01)
    return len(call.conv.turns)


async def test_a_caller_who_paused_mid_thought_gets_a_longer_end_of_turn_from_then_on(
    make_call: Callable[..., Call],
) -> None:
    """Once a caller has gone on after the bot took the turn, their later pauses are waited out too: a
    slower answer for this caller, instead of talking over the rest of each sentence."""
    stt = FakeTranscriber(
        ["I got a letter.", "I got a letter, what are your opening hours?", "Thanks, and the notice?"]
    )
    call = make_call(stt=stt, config=real_config(hesitant_end_silence_ms=1000))
    await call.start()
    await call.say(0.8)
    await call.turn(1)
    await call.feed(voice(1.0))  # goes on with the same thought
    await call.feed(silence(1.4))
    await call.turn(2)
    await call.play_out()
    # past the usual 500 ms end of turn, and a full stop in the guess
    assert await _hesitant_callers_next_line(call, 1.0, pause_s=0.7) == 2, "answered at the usual 500 ms pause"
    await call.feed(silence(0.5))
    await call.turn(3)


async def test_going_on_after_a_long_held_pause_marks_the_caller_hesitant(make_call: Callable[..., Call]) -> None:
    """ "It's nineteen [0.8 s] eighty four": the bot held the pause (unfinished words) and never took the turn,
    yet a caller who stops that long mid-thought will do it again, on words that look finished."""
    stt = FakeTranscriber(["I want to", "I want to know your opening hours"])
    call = make_call(stt=stt, config=real_config())
    await call.start()
    await call.feed(voice(0.8))
    await call.feed(silence(0.8))  # held: "I want to" sounds unfinished
    await call.feed(voice(0.8))
    assert call.conv.hesitant and call.conv.turns == []
    await call.feed(silence(1.4))
    await call.turn(1)
    assert call.conv.continuations == 0 and call.conv.false_starts == 0


async def test_a_caller_who_stops_long_to_think_gets_an_end_of_turn_that_fits(make_call: Callable[..., Call]) -> None:
    """A caller seen going on after 1.5 s of silence mid-thought is waited for 1.8 s (their pause and a
    margin) on later turns, up to `hesitant_max_end_silence_ms`; a 1.2 s wait would talk over them again."""
    stt = FakeTranscriber(
        ["I want to", "I want to know your opening hours", "Read me the notice.", "Read me the notice."]
    )
    call = make_call(stt=stt, config=real_config(unfinished_hold_ms=2000, hesitant_max_end_silence_ms=2000))
    await call.start()
    await call.feed(voice(0.8))
    await call.feed(silence(1.5))  # held for the unfinished words; the caller thinks for 1.5 s
    await call.feed(voice(0.8))
    await call.feed(silence(2.0))
    await call.turn(1)
    await call.play_out()
    # a pause as long as before, after words the guess cannot call unfinished
    turns = await _hesitant_callers_next_line(call, 0.8, pause_s=1.5)
    assert turns == 1, "answered at the 1.2 s hesitant silence, shorter than this caller's pauses"
    await call.feed(silence(0.4))
    await call.turn(2)


async def test_a_hesitant_callers_wait_has_a_ceiling(make_call: Callable[..., Call]) -> None:
    stt = FakeTranscriber(["I want to", "I want to know your opening hours"])
    call = make_call(stt=stt, config=real_config(unfinished_hold_ms=4000, hesitant_max_end_silence_ms=1600))
    await call.start()
    await call.feed(voice(0.8))
    await call.feed(silence(3.0))
    await call.feed(voice(0.8))
    assert call.conv.hesitant
    await call.feed(silence(1.7))  # the ceiling, not the 3.3 s the caller's pause would call for
    await call.turn(1)


async def test_a_filler_marks_the_caller_as_hesitant(make_call: Callable[..., Call]) -> None:
    call = make_call(stt=FakeTranscriber(["Um, what are your opening hours?"]), config=real_config())
    await call.start()
    await call.say(1.0, then=1.2)
    await call.turn(1)
    assert call.conv.hesitant


async def test_a_short_word_that_goes_on_with_the_thought_drops_the_playing_answer(
    make_call: Callable[..., Call],
) -> None:
    """A caller says "My TV… [the bot starts answering] keeps… switching itself off": a short word that is
    no backchannel ("keeps") is the thought going on, even once the answer is audible; the whole thought is
    answered once."""
    stt = FakeTranscriber(["I got a letter.", "Keeps.", "I got a letter, what are your opening hours?"])
    call = make_call(stt=stt, config=real_config(speculative_stt=False))
    await call.start()
    await call.say(0.8)
    await call.turn(1)
    await call.hears([GREETING, SORRY])
    call.conv.on_audio_sent(call.clock.now)  # the caller is hearing the answer
    await call.feed(voice(0.4))  # shorter than a barge-in
    await call.feed(silence(1.4))
    await call.turn(2)
    await call.play_out()
    assert call.heard() == [GREETING, SORRY, *HOURS]
    assert stt.calls[-1].size > (0.8 + 0.4) * RATE, "the whole thought was not recognised again"
    assert caller_lines(call) == ["I got a letter, what are your opening hours?"]
    assert call.conv.continuations == 1 and call.conv.false_interruptions == 0


async def test_going_on_after_a_long_pause_is_not_ended_early_at_its_next_full_stop(
    make_call: Callable[..., Call],
) -> None:
    """ "My TV. [0.8 s, the answer starts] keeps [pause]": a caller going on after that long a pause is
    hesitant, which is known as they go on, before the short word is told from a reaction to the answer; so a
    full stop in the guess at the next pause does not end the turn there."""
    stt = FakeTranscriber(
        ["I got a letter.", "I got a letter today.", "Keeps.", "I got a letter, what are your opening hours?"]
    )
    call = make_call(stt=stt, config=real_config())
    await call.start()
    await call.feed(voice(0.8))
    await call.feed(silence(0.26))  # ended early on the full stop
    await call.turn(1)
    await call.feed(silence(0.14))
    await until(lambda: not call.out.paused, what="the answer to play")
    call.conv.on_audio_sent(call.clock.now)  # the caller is hearing it
    await call.feed(silence(0.4))
    await call.feed(voice(0.4))  # "keeps", 0.8 s after their last word; shorter than a barge-in
    await call.feed(silence(0.26))  # a full stop in the guess of the whole thought so far
    await asyncio.sleep(0.02)
    assert len(call.conv.turns) == 1, "ended a hesitant caller's turn early on a full stop"
    await call.feed(silence(1.4))
    await call.turn(2)
    assert caller_lines(call) == ["I got a letter, what are your opening hours?"]
    assert call.conv.hesitant


async def test_unfinished_words_recognised_after_the_end_of_turn_still_wait(make_call: Callable[..., Call]) -> None:
    """A slow recognition ("I'd like to book" came back after the usual end-of-turn silence) still gets the
    longer wait for unfinished words: the caller going on within it is the same thought."""
    stt = FakeTranscriber(["I'd like to book", "I'd like to book, what are your opening hours?"])
    call = make_call(stt=stt, config=real_config(speculative_stt=False))
    await call.start()
    await call.feed(voice(0.8))
    await call.feed(silence(0.9))  # past the usual end of turn: recognised, and still no answer
    await asyncio.sleep(0.05)
    assert call.conv.turns == [] and call.out.queue == []
    await call.feed(voice(0.8))
    await call.feed(silence(1.4))
    await call.turn(1)
    await call.play_out()
    assert call.heard() == [GREETING, *HOURS]
    assert caller_lines(call) == ["I'd like to book, what are your opening hours?"]


async def test_unfinished_words_are_answered_after_the_longer_silence(make_call: Callable[..., Call]) -> None:
    stt = FakeTranscriber(["What are your opening hours and"])
    call = make_call(stt=stt, config=real_config(speculative_stt=False))
    await call.start()
    await call.feed(voice(0.8))
    await call.feed(silence(0.9))
    await asyncio.sleep(0.05)
    assert call.conv.turns == []
    await call.feed(silence(0.6))
    await call.turn(1)


async def test_a_reply_about_to_start_waits_while_the_caller_may_be_starting_to_speak(
    make_call: Callable[..., Call],
) -> None:
    """The answer is ready just as the caller draws breath to go on: its first sound waits the few frames
    the VAD needs to tell speech from a click, so a dropped answer is never heard as a blip."""
    call = make_call(stt=FakeTranscriber(["I got a letter."]), config=real_config())
    await call.start()
    await call.say(0.8)
    await call.turn(1)
    await call.hears([GREETING, SORRY])  # queued, its first frame not sent yet
    await call.feed(voice(0.04))  # two voiced frames: too few to call it speech yet
    assert call.out.paused, "the answer starts over what may be the caller going on"
    await call.feed(silence(0.2))  # only a click
    assert not call.out.paused


async def test_an_answer_already_heard_is_not_held_back_by_a_click(make_call: Callable[..., Call]) -> None:
    call = make_call(stt=FakeTranscriber(["I got a letter."]), config=real_config())
    await call.start()
    await call.say(0.8)
    await call.turn(1)
    await call.hears([GREETING, SORRY])
    call.conv.on_audio_sent(call.clock.now)  # the answer is audible: no waiting any more
    await call.feed(voice(0.04))
    assert not call.out.paused


async def test_going_on_after_a_breath_is_a_continuation_but_not_a_hesitant_caller(
    make_call: Callable[..., Call],
) -> None:
    """An early end of turn caught a comma's breath ("No, that was it, [0.3 s] thanks a lot"): the answer
    is dropped for the whole thought, but this caller keeps the fast end of turn, and the continued thought
    ends at its own full stop like any other, well short of the usual 500 ms."""
    stt = FakeTranscriber(["I got a letter today.", "I got a letter today, what are your opening hours?"])
    call = make_call(stt=stt, config=real_config())
    await call.start()
    await call.feed(voice(1.0))
    await call.feed(silence(0.26))  # the early end comes at the pause
    await call.turn(1)
    await call.feed(silence(0.06))
    await call.feed(voice(1.0))
    await call.feed(silence(0.26))
    await call.turn(2)
    assert call.conv.continuations == 1
    assert not call.conv.hesitant


@pytest.mark.parametrize("words", ["Not today... No...", "Hang on."])
async def test_words_that_hold_the_turn_without_marking_the_caller_hesitant(
    make_call: Callable[..., Call], words: str
) -> None:
    """Whisper writes "…" where the audio ends in a pause ("Not today... No..."), and "Hang on." asks the bot to
    wait: both are worth the longer wait, but neither proves a caller who breaks off mid-sentence, whose every
    later turn would wait over a second. (Going on after a long pause still shows that.)"""
    stt = FakeTranscriber([words, "Hang on, that can't be right."])
    call = make_call(stt=stt, config=real_config())
    await call.start()
    await call.feed(voice(1.0))
    await call.feed(silence(0.7))  # held past the usual end of turn
    await asyncio.sleep(0.01)
    assert call.conv.turns == [] and not call.conv.hesitant
    await call.feed(silence(0.7))
    await call.turn(1)


async def test_an_early_answer_stays_silent_through_a_commas_pause(make_call: Callable[..., Call]) -> None:
    """ "Okay, brilliant. [0.25 s] Nope, that's it": the turn is taken early on a finished sentence and its
    answer is ready at once, but not a sound of it is heard before 350 ms of silence; the caller going on
    inside that drops it unheard, and the whole thought gets the one answer."""
    stt = FakeTranscriber(["I got a letter today.", "I got a letter today, what are your opening hours?"])
    call = make_call(stt=stt, config=real_config(early_end_min_silence_ms=350))
    await call.start()
    await call.feed(voice(1.0))
    await call.feed(silence(0.22))  # the early end comes at the pause (200 ms here)
    await call.turn(1)
    await call.hears([GREETING, SORRY])  # prepared...
    assert call.out.paused  # ... and held
    await call.feed(silence(0.08))
    assert call.out.paused
    await call.feed(voice(1.0))  # the caller goes on 300 ms into the silence
    await call.feed(silence(1.4))
    await call.turn(2)
    await call.play_out()
    assert [e.text for e in call.conv.transcript if e.who == "caller"] == [
        "I got a letter today, what are your opening hours?"
    ]
    assert call.conv.continuations == 1 and call.conv.false_starts == 0
    assert call.out.played[-len(HOURS) :] and call.heard()[-len(HOURS) :] == HOURS


async def _early_answer_held(make_call: Callable[..., Call]) -> Call:
    """A finished question, a pause, and the turn taken early: its answer queued but held for quiet."""
    stt = FakeTranscriber(["What are your opening hours?"])
    call = make_call(stt=stt, config=real_config(early_end_min_silence_ms=350))
    await call.start()
    await call.feed(voice(1.0))
    await call.feed(silence(0.22))
    await call.turn(1)
    await until(lambda: call.out.queue != [], what="the answer queued")
    assert call.out.paused
    return call


async def test_an_early_answer_plays_once_the_silence_outlasts_a_comma(make_call: Callable[..., Call]) -> None:
    call = await _early_answer_held(make_call)
    taken = call.clock.now
    while call.out.paused:
        await call.feed(silence(0.02))
        assert call.clock.now - taken < 0.3, "the early answer was held past the comma's pause"
    # Resumed 350 ms after the caller's last word (the VAD's end of speech), not at the full 500 ms.
    assert call.clock.now - (taken - 0.22) == pytest.approx(0.36, abs=0.03)
    await call.play_out()
    assert call.heard() == [GREETING, *HOURS]


async def test_an_early_answer_held_for_quiet_plays_when_the_phone_stops_sending(
    make_call: Callable[..., Call],
) -> None:
    """Opus DTX: after the caller's last word no packets come at all; the held answer still plays."""
    call = await _early_answer_held(make_call)
    call.clock.advance(0.6)  # nothing arrives
    await until(lambda: not call.out.paused, what="the held answer to play")


async def test_a_person_taking_the_call_is_never_held_back_by_an_early_answers_quiet(
    make_call: Callable[..., Call],
) -> None:
    call = await _early_answer_held(make_call)
    call.conv.suspend()  # a person takes the call while the bot's answer waits for quiet
    assert not call.out.paused
    await call.feed(silence(0.5))  # past the quiet: nothing of the bot's turn-taking touches the output
    assert not call.out.paused


async def test_a_caller_hanging_up_mid_word_while_an_early_answer_is_held(make_call: Callable[..., Call]) -> None:
    """The caller goes on ("…and—") inside the held answer's quiet and hangs up mid-word: the answer is
    never heard, and closing the call leaves nothing running (the fixture checks for stray tasks)."""
    call = await _early_answer_held(make_call)
    await call.feed(voice(0.12))  # a word begins inside the comma's pause
    assert call.out.paused
    await call.conv.close()  # the caller hung up
    await call.feed(silence(0.6))  # audio after close is ignored: no quiet to release the answer
    await asyncio.sleep(0.02)
    assert call.out.paused, "the held answer was released after the caller hung up"
    assert call.conv.false_starts == 0 and len(call.conv.turns) == 1


DAY_FLOW = """
name: day
start: day
nodes:
  day:
    say: "What day would you like to come in?"
    ask: {slot: date, type: date}
    next: noted
  noted:
    say: "Noted."
    end: true
"""


async def test_one_word_that_answers_the_question_ends_the_turn_early(make_call: Callable[..., Call]) -> None:
    """ "Tomorrow." to "What day?" is a whole answer: it gets the early end (held for a comma's pause), not
    the full end-of-turn silence that an unclear one-word turn waits out."""
    call = make_call(stt=FakeTranscriber(["Tomorrow.", "Tomorrow."]), config=real_config())
    call.engine = call.conv.policy = FlowEngine(parse_flow(DAY_FLOW, source="day.yaml"))  # before it starts
    await call.start()
    await call.feed(voice(0.6))
    await call.feed(silence(0.22))  # the pause (200 ms here), well short of the 500 ms end of turn
    await call.turn(1)
    assert call.conv.turns[0].speculative and call.conv.turns[0].transcript == "Tomorrow."


async def test_words_the_flow_cannot_use_wait_longer_before_the_sorry(make_call: Callable[..., Call]) -> None:
    """A caller's "Hi, I'd like to [pause] book a check-up" heard at the pause as "I got a letter.": nothing
    the flow can use, so more likely half a sentence than a whole one. The caller going on is answered once."""
    stt = FakeTranscriber(["I got a letter.", "I got a letter, what are your opening hours?"])
    call = make_call(stt=stt, config=real_config(unclear_hold_ms=1000))
    await call.start()
    await call.feed(voice(0.8))
    await call.feed(silence(0.8))  # past the usual end of turn
    await asyncio.sleep(0.05)
    assert call.conv.turns == [] and call.heard() == [GREETING], "re-prompted a caller who may go on"
    await call.feed(voice(0.8))
    await call.feed(silence(1.4))
    await call.turn(1)
    await call.play_out()
    assert call.heard() == [GREETING, *HOURS]
    assert call.engine.misses == 0 and call.conv.false_starts == 0


async def test_words_the_flow_cannot_use_are_re_prompted_after_the_longer_silence(
    make_call: Callable[..., Call],
) -> None:
    call = make_call(stt=FakeTranscriber(["I got a letter."]), config=real_config(unclear_hold_ms=1000))
    await call.start()
    await call.feed(voice(0.8))
    await call.feed(silence(0.8))
    await asyncio.sleep(0.05)
    assert call.conv.turns == []
    await call.feed(silence(0.4))
    await call.turn(1)
    await call.hears([GREETING, SORRY])


async def test_words_the_flow_understands_keep_the_usual_end_of_turn(make_call: Callable[..., Call]) -> None:
    call = make_call(stt=FakeTranscriber(["What are your opening hours"]), config=real_config(unclear_hold_ms=1000))
    await call.start()
    await call.feed(voice(0.8))
    await call.feed(silence(0.6))
    await call.turn(1)


async def test_a_bare_yes_waits_a_little_longer_for_the_rest_of_the_sentence(make_call: Callable[..., Call]) -> None:
    """A caller says "No, [0.6 s] he is not home": a lone yes or no waits 0.8 s, not the usual 0.5 s."""
    stt = FakeTranscriber(["No.", "No, what are your opening hours?"])
    call = make_call(stt=stt, config=real_config(yes_no_end_silence_ms=800))
    await call.start()
    await call.feed(voice(0.4))
    await call.feed(silence(0.6))  # past the usual end of turn
    await asyncio.sleep(0.05)
    assert call.conv.turns == [], "answered a bare 'No.' at the usual silence"
    await call.feed(voice(0.8))
    await call.feed(silence(1.4))  # going on after 0.6 s shows a caller who pauses: their turns wait 1.2 s now
    await call.turn(1)
    await call.play_out()
    assert call.heard() == [GREETING, *HOURS] and call.conv.false_starts == 0
    assert call.conv.hesitant


async def test_a_caller_whose_phone_stops_sending_audio_is_silent(make_call: Callable[..., Call]) -> None:
    """Opus DTX, a muted microphone, lost packets: no audio at all after the words is silence, so the
    turn ends as it would on silent packets instead of waiting for the next one."""
    call = make_call(stt=FakeTranscriber(["What are your opening hours"]), config=real_config())
    await call.start()
    await call.feed(voice(0.8))
    call.clock.advance(1.0)  # nothing arrives for a second
    await call.turn(1)
    await call.hears([GREETING, *HOURS])
