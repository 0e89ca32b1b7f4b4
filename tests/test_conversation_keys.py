"""Keypad presses in a live conversation (`Conversation.on_key`), with the fakes of tests/test_conversation.py.

A key press is unambiguous, so it stops an interruptible line at once (no barge-in wait); keys are collected
by the current question's rules (one key at a menu; digits until the terminator, the most digits or a pause at
a number question) and the entry is a turn like a spoken one. The pause between keys is a real (short) timer,
as in a call: the flows here use timeouts of a few hundredths of a second.
"""

# ruff: noqa: F811  (the harness's fixtures are imported by name, and pytest passes them back in)
from __future__ import annotations

import asyncio
from collections.abc import Callable

from agent.conversation import KEYS_PREFIX, ConversationConfig, ConversationHooks
from agent.dialogue.engine import FlowEngine
from agent.dialogue.flow import parse_flow
from agent.media.dtmf import KeyPress
from tests.test_conversation import (  # noqa: F401  (make_call is a fixture)
    GREETING,
    VAD,
    Call,
    FakeLlm,
    FakeSynthesizer,
    FakeTranscriber,
    done,
    make_call,
    sentence,
    until,
)

MENU = "Press 1 for orders, or 2 to enter your PIN."
ORDER_Q = "What is your order number?"
PIN_Q = "Please type your PIN, then press hash."
NOTICE = ["This call may be recorded.", "Please listen to the whole notice."]

KEY_FLOW = parse_flow(
    f"""
name: keys
start: menu
fallback: ["Sorry, that is not an option."]
global_intents:
  - name: agent
    key: "0"
    examples: ["talk to a person"]
    goto: agent
nodes:
  menu:
    say: "{MENU}"
    intents:
      - name: orders
        key: "1"
        examples: ["my order"]
        goto: order
      - name: pin
        key: "2"
        examples: ["my pin"]
        goto: pin
      - name: notice
        key: "3"
        examples: ["the notice"]
        goto: notice
  order:
    say: "{ORDER_Q}"
    ask:
      slot: order
      type: digits
      length: 5
      confirm: false
      keypad: {{timeout: 0.05}}
    next: thanks
  pin:
    say: "{PIN_Q}"
    ask:
      slot: pin
      type: digits
      length: {{min: 4, max: 6}}
      secret: true
      keypad: {{terminator: "#", timeout: 0.05}}
    next: thanks
  notice:
    say: {NOTICE}
    interruptible: false
    next: menu
  thanks:
    say: "Thank you."
    next: menu
  agent:
    say: "Connecting you."
    end: true
""",
    source="keys.yaml",
)


def keyed_call(make_call: Callable[..., Call], **kwargs: object) -> Call:
    call = make_call(**kwargs)
    call.engine = FlowEngine(KEY_FLOW)
    call.conv.policy = call.engine
    return call


def press(call: Call, keys: str) -> None:
    for digit in keys:
        call.clock.advance(0.2)
        call.conv.on_key(KeyPress(digit=digit, duration_ms=120, at=call.clock.now))


def caller_lines(call: Call) -> list[str]:
    return [e.text for e in call.conv.transcript if e.who == "caller"]


async def test_a_menu_key_stops_the_prompt_at_once_and_picks_the_intent(make_call: Callable[..., Call]) -> None:
    call = keyed_call(make_call)
    await call.start(play=False)
    assert call.conv.bot_talking and call.out.playing  # the menu is still playing

    press(call, "1")
    assert call.out.flushes >= 1 and not call.out.playing, "a key press must cut the prompt at once"
    assert call.conv.barge_ins == 1
    await call.turn(1)
    assert call.engine.node == "order"
    await call.hears([MENU, ORDER_Q])
    assert caller_lines(call) == [KEYS_PREFIX + "1"]
    assert call.conv.turns[0].transcript == KEYS_PREFIX + "1"
    assert call.conv.turns[0].reply == ORDER_Q
    await call.play_out()


async def test_a_key_that_picks_nothing_is_a_miss_with_the_fallback(make_call: Callable[..., Call]) -> None:
    call = keyed_call(make_call)
    await call.start()
    press(call, "9")
    await call.turn(1)
    await call.hears([MENU, "Sorry, that is not an option."])
    assert call.engine.node == "menu" and call.engine.misses == 1
    await call.play_out()


async def test_digits_are_answered_when_the_caller_pauses(make_call: Callable[..., Call]) -> None:
    call = keyed_call(make_call)
    await call.start()
    press(call, "1")
    await call.turn(1)
    await call.play_out()

    press(call, "4829")  # one short of five: the entry waits for more
    await asyncio.sleep(0.01)
    assert len(call.conv.turns) == 1
    await until(lambda: len(call.conv.turns) == 2, timeout=1.0, what="the pause to end the entry")
    # Four digits of five: not the answer (a miss that says so), but taken as an entry after the pause.
    assert call.conv.turns[1].transcript == KEYS_PREFIX + "4829"
    await call.play_out()

    press(call, "48291")  # five keys: complete at the last, no pause needed
    await call.turn(3)
    assert call.engine.slot_values["order"] == "48291"
    await call.hears([MENU, ORDER_Q, call.heard()[2], "Thank you.", MENU])
    await call.play_out()


async def test_the_terminator_ends_a_secret_entry_and_the_record_is_masked(make_call: Callable[..., Call]) -> None:
    call = keyed_call(make_call)
    await call.start()
    press(call, "2")
    await call.turn(1)
    await call.play_out()

    press(call, "1234")
    await asyncio.sleep(0.01)
    assert len(call.conv.turns) == 1  # no terminator yet; the pause timer is running
    press(call, "#")
    await call.turn(2)
    assert call.engine.slot_values["pin"] == "1234"
    assert call.engine.slots["pin"] == "\u2022\u2022\u2022\u2022"  # what records and the console get
    assert caller_lines(call) == [KEYS_PREFIX + "2", KEYS_PREFIX + "\u2022\u2022\u2022\u2022"]
    assert call.conv.turns[1].transcript == KEYS_PREFIX + "\u2022\u2022\u2022\u2022"
    assert not any("1234" in text for _, text in call.engine.history)
    await call.hears([MENU, PIN_Q, "Thank you.", MENU])
    await call.play_out()


async def test_a_pin_said_aloud_is_masked_too(make_call: Callable[..., Call]) -> None:
    call = keyed_call(make_call, stt=FakeTranscriber(["one two three four"]))
    await call.start()
    press(call, "2")
    await call.turn(1)
    await call.play_out()
    await call.say(1.0, then=1.6)  # digits read out: the turn waits out the longer hold
    await call.turn(2)
    assert call.engine.slot_values["pin"] == "1234"
    assert caller_lines(call)[-1] == "\u2022\u2022\u2022\u2022"
    assert call.conv.turns[1].transcript == "\u2022\u2022\u2022\u2022"
    await call.play_out()


async def test_keys_do_not_cut_a_line_that_must_be_heard_but_are_still_collected(
    make_call: Callable[..., Call],
) -> None:
    tts = FakeSynthesizer()
    call = keyed_call(make_call, tts=tts)
    await call.start()
    press(call, "3")
    await call.turn(1)
    await call.hears([MENU, *NOTICE, MENU])  # the notice, then its `next`: one reply, heard in full
    assert call.conv.bot_talking
    flushes = call.out.flushes

    press(call, "1")  # over the notice
    await asyncio.sleep(0.01)
    assert call.out.flushes == flushes and call.out.playing and call.conv.barge_ins == 0
    assert caller_lines(call) == [KEYS_PREFIX + "3", KEYS_PREFIX + "1"]  # collected
    assert len(call.conv.turns) == 1  # not answered over the notice
    await call.play_out()  # once the notice has been heard, the key is answered
    await call.turn(2)
    await call.hears([MENU, *NOTICE, MENU, ORDER_Q])
    assert call.engine.node == "order"
    await call.play_out()


async def test_keys_while_a_person_has_the_call_are_recorded_not_acted_on(make_call: Callable[..., Call]) -> None:
    seen: list[str] = []
    call = keyed_call(make_call)
    call.conv.hooks.on_keys = seen.append
    await call.start()
    call.conv.suspend()
    press(call, "12")
    await asyncio.sleep(0.01)
    assert seen == ["1", "2"]
    assert caller_lines(call) == [KEYS_PREFIX + "1", KEYS_PREFIX + "2"]
    assert call.conv.turns == [] and call.engine.node == "menu"


async def test_close_cancels_the_pause_timer(make_call: Callable[..., Call]) -> None:
    call = keyed_call(make_call)
    await call.start()
    press(call, "1")
    await call.turn(1)
    await call.play_out()
    press(call, "48")  # an entry in progress: its pause timer runs
    await call.conv.close()  # the fixture checks no task is left running
    await asyncio.sleep(0.1)
    assert len(call.conv.turns) == 1  # the timer never fired


async def test_a_global_key_works_at_a_menu(make_call: Callable[..., Call]) -> None:
    call = keyed_call(make_call, config=ConversationConfig(vad=VAD, continuation_window_s=0, silence_reprompt_s=None))
    await call.start()
    press(call, "0")  # at the menu: the agent intent
    await call.turn(1)
    assert call.engine.node == "agent"
    await call.play_out()


async def test_a_key_that_means_nothing_during_an_llm_answer_does_not_cut_it(make_call: Callable[..., Call]) -> None:
    # The unit flow of tests/test_conversation.py: no keys anywhere; "I have a question." starts an LLM turn.
    llm = FakeLlm([sentence("We are open until five."), sentence("Is there anything else?"), done()])
    call = make_call(stt=FakeTranscriber(["I have a question."]), hooks=ConversationHooks(llm=llm))
    await call.start()
    await call.say(1.0)
    await call.turn(1)
    await until(lambda: call.conv.bot_talking and len(call.heard()) == 3, what="the LLM's answer")
    flushes = call.out.flushes
    press(call, "5")
    await asyncio.sleep(0.01)
    assert call.out.flushes == flushes and call.conv.barge_ins == 0 and len(call.conv.turns) == 1
    await call.play_out()
    await call.hears([GREETING, "We are open until five.", "Is there anything else?"])
