"""Natural callers over the real WebRTC path: pauses mid-thought, fillers, self-corrections, silence.

Each caller is a script (agent/simulator/caller_script.py) spoken with piper through Opus over 127.0.0.1,
with room noise at its microphone; the shipped flows answer, their business systems are the simulator's
(agent/simulator/business_systems.py). What the caller lived through is measured at the caller; whether
the task was done is judged on what the call left behind (slots, the request the business got), as
bench/conversation.py judges it.
"""

from __future__ import annotations

import pytest

from agent.runtime import Models
from agent.simulator.caller_script import parse_script
from agent.simulator.caller_voice import PiperCallerVoice
from agent.simulator.judged_call import JudgedCall, judged_call
from agent.simulator.natural_caller import NaturalCaller
from tests.wer import wer

pytestmark = pytest.mark.e2e


async def call_with(models: Models, script_yaml: str, **overrides: object) -> JudgedCall:
    script = parse_script(script_yaml)
    caller = NaturalCaller(script, reply_timeout_s=12.0, end_wait_s=6.0)
    await caller.prepare(PiperCallerVoice())
    return await judged_call(models, script, caller, **overrides)


def explain(judged: JudgedCall) -> str:
    lines = [f"problems: {judged.problems}", "as the bot kept it:"]
    lines += [f"  {e.who}: {e.text}" for e in judged.transcript]
    return "\n".join(lines)


def caller_turns(judged: JudgedCall) -> list[str]:
    return [e.text for e in judged.transcript if e.who == "caller"]


# -- turn-taking (issue 12) ------------------------------------------------------------------------


async def test_one_long_sentence_with_two_pauses_gets_one_answer_to_the_whole_sentence(models: Models) -> None:
    sentence = "I am calling about an order I placed on Saturday, and it still has not come."
    judged = await call_with(
        models,
        """
        name: one sentence, two one-second pauses
        flow: demo
        seed: 7
        noise: {level_dbfs: -45}
        lines:
          - "I am calling about [pause 1.0] an order I placed on Saturday, [pause 1.0] and it still has not come."
          - say: "No, that is everything, thanks."
            answers: 'anything else'
        replies:
          - {when_bot_says: 'end the call', say: "Yes."}
        expect: {said: "Your order shipped", node: goodbye}
        """,
    )
    assert judged.completed, explain(judged)
    first = caller_turns(judged)[0]
    assert wer(sentence, first) <= 0.3, explain(judged)  # the bot answered the whole sentence, as one turn
    # Exactly one answer: the bot did not start answering a fragment (no false start) or re-prompt.
    shipped = [e for e in judged.transcript if e.who == "bot" and "shipped" in e.text.lower()]
    assert len(shipped) == 1, explain(judged)
    assert not any("sorry" in line.lower() for line in judged.outcome.bot_lines), explain(judged)
    assert judged.run.cut_off is None


async def test_caller_talking_over_the_goodbye_is_not_hung_up_on(models: Models) -> None:
    judged = await call_with(
        models,
        """
        name: one more question over the goodbye
        flow: demo
        seed: 8
        lines:
          - "Where is my order?"
          - say: "No, that's all."
            answers: 'anything else'
          - say: "Oh wait, one more thing, [pause 0.4] what time do you open on Saturday?"
            when: {barge_in: 0.8}
        replies:
          - {when_bot_says: 'end the call', say: "Yes."}
        expect: {said: "Monday to Saturday"}
        """,
    )
    assert judged.run.cut_off is None, explain(judged)
    assert judged.completed, explain(judged)


async def test_self_correction_ends_with_the_corrected_day(models: Models) -> None:
    judged = await call_with(
        models,
        """
        name: Tuesday, no, Wednesday
        flow: appointment_booking
        seed: 9
        noise: {level_dbfs: -44}
        lines:
          - "Hi, [um] I'd like to book a cleaning, please."
          - say: "Tuesday, [pause 0.4] no, sorry, [pause 0.3] Wednesday."
            answers: 'what day|which day|which other day'
          - say: "Ten in the morning."
            answers: 'what time'
          - say: "Yes, please."
            answers: 'wednesday.*shall i book'
        replies:
          - {when_bot_says: 'shall i book', say: "No, Wednesday at ten in the morning."}
          - {when_bot_says: 'the day, or the time', say: "The day.", max_uses: 1}
          - {when_bot_says: 'new appointment, or', say: "A new one.", max_uses: 1}
        expect:
          slots: {date: "weekday:wednesday", time: "10:00"}
          request: {method: POST, url: /api/appointments, json: {date: "weekday:wednesday"}}
        """,
    )
    assert judged.completed, explain(judged)


async def test_silent_caller_hears_a_prompt_then_a_goodbye(models: Models) -> None:
    judged = await call_with(
        models,
        """
        name: says nothing
        flow: demo
        seed: 10
        noise: {level_dbfs: -45}
        lines:
          - silence: 14
        """,
        turns={"silence_reprompt_s": 4.0},
    )
    said = " ".join(judged.outcome.bot_lines).lower()
    assert "are you still there" in said, explain(judged)
    assert "end the call" in said, explain(judged)
    assert judged.outcome.end_reason == "caller_silent", explain(judged)


# -- understanding (issue 13) ----------------------------------------------------------------------


async def test_order_number_read_in_two_groups_is_looked_up_whole(models: Models) -> None:
    judged = await call_with(
        models,
        """
        name: order number in two groups
        flow: support_triage
        seed: 11
        noise: {level_dbfs: -44}
        lines:
          - "Hi, I'm calling about an order."
          - say: "Seven three, [pause 0.9] five one six."
            answers: 'order number'
          - say: "No thanks, bye."
            answers: 'anything else'
        replies:
          - {when_bot_says: '(7\\W*3\\W*5\\W*1\\W*6|seven\\W+three\\W+five\\W+one\\W+six)\\W+is that', say: "Yes."}
          - {when_bot_says: 'is that right', say: "No. Seven three, five one six."}
          - {when_bot_says: 'an order, a repair, or a bill', say: "An order.", max_uses: 1}
          - {when_bot_says: 'end the call', say: "Yes."}
        expect:
          request: {method: GET, url: /api/orders/73516}
        """,
    )
    assert judged.completed, explain(judged)
    assert all("/api/orders/" not in r["url"] or r["url"].endswith("/73516") for r in judged.systems.requests)


async def test_half_three_books_half_past_three_in_the_afternoon(models: Models) -> None:
    judged = await call_with(
        models,
        """
        name: half three
        flow: appointment_booking
        seed: 12
        lines:
          - "Hello, I need a check up."
          - say: "Wednesday, please."
            answers: 'what day|which day|which other day'
          - say: "Half three, if you can."
            answers: 'what time'
          - say: "Yes, that's right."
            answers: 'wednesday.*(half past three|three thirty).*shall i book'
        replies:
          - {when_bot_says: 'shall i book', say: "No, Wednesday at half past three in the afternoon."}
          - {when_bot_says: 'the day, or the time', say: "The time.", max_uses: 1}
          - {when_bot_says: 'new appointment, or', say: "A new one.", max_uses: 1}
        expect:
          slots: {time: "15:30"}
          request: {method: POST, url: /api/appointments, json: {time: "15:30"}}
        """,
    )
    assert judged.completed, explain(judged)


async def test_when_i_get_paid_is_a_promise_not_a_payment(models: Models) -> None:
    judged = await call_with(
        models,
        """
        name: pays when the salary comes in
        flow: payment_followup
        direction: business_initiated
        seed: 13
        lines:
          - "Yes, speaking."
          - say: "Nineteen eighty four."
            answers: 'year you were born'
          - say: "Not today. I can pay on Friday, when I get paid."
            answers: 'pay it today'
          - say: "Yes, that's right."
            answers: 'friday[^?]*\\. is that right'
        replies:
          - {when_bot_says: 'is that right', say: "No, this Friday."}
          - {when_bot_says: 'what date|which date|which other date', say: "This Friday."}
        expect:
          slots: {promise_date: "weekday:friday"}
          request: {method: POST, url: /promises, json: {date: "weekday:friday"}}
        """,
    )
    assert judged.completed, explain(judged)


async def test_a_question_in_passing_is_answered_and_the_call_goes_on(models: Models) -> None:
    judged = await call_with(
        models,
        """
        name: asks the opening hours first
        flow: demo
        seed: 14
        lines:
          - "Oh, hang on, what time do you open tomorrow?"
          - "Okay. It's about my order."
          - say: "No, that's all, thanks."
            answers: 'anything else'
        replies:
          - {when_bot_says: 'end the call', say: "Yes."}
        expect: {said: ["nine in the morning", "Your order shipped"], node: goodbye}
        """,
    )
    assert judged.completed, explain(judged)
