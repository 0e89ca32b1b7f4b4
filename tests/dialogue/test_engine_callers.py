"""The engine with callers who talk like people: they correct themselves, read numbers in
groups, answer vaguely, hesitate, ask something else, and talk over the bot."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path
from typing import Any

import pytest

from agent.dialogue.effects import HttpRequest
from agent.dialogue.engine import FlowEngine, Reply
from agent.dialogue.flow import Flow, load_flow, parse_flow

PROMPTS = Path(__file__).resolve().parents[2] / "prompts"
MONDAY = dt.date(2024, 12, 2)
ACCOUNT = {"name": "Ana Lopez", "balance": 120, "due_date": "2024-11-20", "birth_year": 1984}


@pytest.fixture(scope="module")
def booking() -> Flow:
    return load_flow(PROMPTS / "appointment_booking.yaml")


@pytest.fixture(scope="module")
def triage() -> Flow:
    return load_flow(PROMPTS / "support_triage.yaml")


@pytest.fixture(scope="module")
def payment() -> Flow:
    return load_flow(PROMPTS / "payment_followup.yaml")


@pytest.fixture(scope="module")
def after_hours() -> Flow:
    return load_flow(PROMPTS / "after_hours.yaml")


def flow_from(text: str) -> Flow:
    return parse_flow(textwrap.dedent(text).lstrip("\n"), source="test.yaml")


def call(flow: Flow, *turns: str, **options: Any) -> tuple[FlowEngine, Reply]:
    engine = FlowEngine(flow, caller={"name": "Ana", "number": "15551234567"}, today=MONDAY, **options)
    reply = engine.start()
    for turn in turns:
        reply = engine.handle(turn)
    return engine, reply


def http(reply: Reply) -> HttpRequest:
    request = next(action for action in reply.actions if isinstance(action, HttpRequest))
    return request


def paying(payment: Flow, *turns: str, **options: Any) -> tuple[FlowEngine, Reply]:
    engine, reply = call(payment, **options)
    assert engine.pending_action is not None
    reply = engine.action_result(engine.pending_action.id, True, ACCOUNT)
    for turn in turns:
        reply = engine.handle(turn)
    return engine, reply


# -- self-corrections ------------------------------------------------------------------------


def test_a_self_corrected_day_is_the_day_booked(booking: Flow) -> None:
    engine, reply = call(booking, "I'd like to book", "Tuesday. No. Sorry. Wednesday.", "half three")
    assert reply.node == "confirm"
    assert reply.slots["date"] == dt.date(2024, 12, 4)
    reply = engine.handle("yep")
    assert http(reply).json_body == {"phone": "15551234567", "name": "Ana", "date": "2024-12-04", "time": "15:30"}


def test_a_value_taken_back_waits_for_the_new_one_without_a_miss(booking: Flow) -> None:
    engine, reply = call(booking, "book please", "Next Tuesday, no \u2014")
    assert reply.lines == [] and reply.node == "ask_date" and engine.misses == 0
    assert "date" not in reply.slots
    reply = engine.handle("wait, next Wednesday")
    assert reply.slots["date"] == dt.date(2024, 12, 11) and reply.node == "ask_time"


def test_a_new_value_at_a_read_back_is_a_correction_not_a_yes(booking: Flow) -> None:
    engine, reply = call(booking, "book", "next tuesday", "ten thirty")
    assert reply.node == "confirm"
    reply = engine.handle("no, wait, next Wednesday")
    assert reply.node == "confirm"
    assert reply.lines == [
        "So that is Wednesday the eleventh of December at ten thirty in the morning. Shall I book it?"
    ]
    reply = engine.handle("yep")
    assert http(reply).json_body["date"] == "2024-12-11"


def test_a_corrected_time_is_read_back_before_the_yes_counts(booking: Flow) -> None:
    engine, reply = call(booking, "book", "tomorrow", "eleven")
    reply = engine.handle("make it half past two")
    assert reply.slots["time"] == dt.time(14, 30) and reply.node == "confirm"
    assert "two thirty in the afternoon" in reply.lines[0]


def test_a_corrected_value_is_checked_like_its_own_question(booking: Flow) -> None:
    engine, reply = call(booking, "book", "tomorrow", "eleven")
    reply = engine.handle("no, the day is yesterday")
    assert reply.lines == ["That day has already passed.", "Which other day would suit you?"]
    assert reply.node == "ask_date"


def test_no_wait_at_a_yes_no_question_is_not_a_no(payment: Flow) -> None:
    engine, reply = paying(payment, "yes", "1984", "No wait")
    assert reply.lines == [] and reply.node == "ask_pay_today" and engine.misses == 0
    reply = engine.handle("yes I can pay today")
    assert reply.node == "send_payment_link"


# -- numbers and digits -------------------------------------------------------------------------


def test_a_number_read_in_two_groups_is_joined_and_read_back(triage: Flow) -> None:
    engine, reply = call(triage, "where is my order", "It's for eight")
    assert reply.lines == ["I got 4 8. What are the last three digits?"]
    assert engine.expecting is not None and engine.expecting.digits_missing == 3
    reply = engine.handle("two nine one")
    assert reply.lines == ["That is order 4 8 2, 9 1. Is that right?"]
    assert "order_number" not in reply.slots  # nothing is acted on before the caller agrees
    reply = engine.handle("yep")
    assert http(reply).url.endswith("/orders/48291")


def test_a_read_back_number_can_be_fixed_at_its_end(triage: Flow) -> None:
    engine, reply = call(triage, "where is my parcel", "four eight two nine one", "no, the last two are nine two")
    assert reply.lines == ["That is order 4 8 2, 9 2. Is that right?"]
    assert http(engine.handle("yes")).url.endswith("/orders/48292")


def test_no_to_a_read_back_asks_again_without_a_miss(triage: Flow) -> None:
    engine, reply = call(triage, "where is my parcel", "four eight two nine one", "no")
    assert reply.lines == ["Sorry about that.", "Please say the order number, one digit at a time."]
    assert engine.misses == 0 and "order_number" not in reply.slots
    reply = engine.handle("4 8 2 9 2")
    assert reply.lines == ["That is order 4 8 2, 9 2. Is that right?"]


def test_too_many_digits_are_not_guessed_at(triage: Flow) -> None:
    engine, reply = call(triage, "where is my parcel", "4 8 2 9 1 7")
    assert reply.lines == [
        "Sorry, I heard six digits, but it should have 5. Could you say it again, one digit at a time?"
    ]
    assert engine.misses == 1


def test_a_number_in_the_first_sentence_is_used(triage: Flow) -> None:
    _, reply = call(triage, "I want to check on order 42719")
    assert reply.intent == "order"
    assert reply.lines == ["That is order 4 2 7, 1 9. Is that right?"]


def test_answer_incomplete_tells_the_turn_taking_to_wait(triage: Flow, booking: Flow) -> None:
    engine, _ = call(triage, "where is my order")
    assert engine.answer_incomplete("four eight two")
    assert not engine.answer_incomplete("four eight two nine one")
    assert engine.answer_incomplete("Borry")  # the first group, misheard: the rest is on its way
    assert not engine.answer_incomplete("I don't know it")
    engine, _ = call(booking, "book")
    assert engine.answer_incomplete("next Tuesday, no")
    assert not engine.answer_incomplete("next Tuesday")
    assert engine.node == "ask_date" and "date" not in engine.slots  # asking changed nothing


def test_would_miss_tells_the_turn_taking_what_the_flow_cannot_use(booking: Flow) -> None:
    engine, _ = call(booking)
    assert engine.would_miss("Hi, I'd like to vote.")  # "I'd like to book…", cut at a pause and misheard
    assert not engine.would_miss("I'd like to book a check up for my son.")
    assert not engine.would_miss("um")  # a filler is no miss at all
    assert engine.node == call(booking)[0].node and engine.misses == 0 and engine.history == call(booking)[0].history


def test_answer_complete_lets_a_whole_number_through_at_once(triage: Flow, payment: Flow) -> None:
    engine, _ = call(triage, "where is my order")
    assert engine.answer_complete("four eight two nine one")  # all five digits: nothing more can come
    assert not engine.answer_complete("four eight two")
    assert not engine.answer_complete("four eight two nine one, no")
    engine, _ = paying(payment, "yes")  # the year of birth: 1900-2025
    assert engine.answer_complete("1984")  # one more digit would pass 2025
    assert engine.answer_complete("nineteen eighty four")
    assert not engine.answer_complete("nineteen")  # 19 may become 1984
    assert not engine.answer_complete("yes")
    assert engine.node == "verify" and "said_birth_year" not in engine.slots  # asking changed nothing


def test_answer_taken_says_one_word_already_answers_the_question(booking: Flow, payment: Flow) -> None:
    engine, _ = call(booking, "book")  # "What day would you like to come in?"
    assert engine.answer_taken("Tomorrow.")
    assert engine.answer_taken("Thursday.")
    assert not engine.answer_taken("Thursday, no")  # taken back: the rest is coming
    assert not engine.answer_taken("Hmm.")
    assert engine.node == call(booking, "book")[0].node and "date" not in engine.slots  # asking changed nothing
    engine, _ = call(payment)  # "Am I speaking with John Smith?": a yes/no question has its own rules
    assert not engine.answer_taken("Yes.")


# -- times and dates ------------------------------------------------------------------------


def test_after_lunch_gets_a_concrete_offer(booking: Flow) -> None:
    engine, reply = call(booking, "book", "tomorrow", "sometime after lunch")
    assert reply.lines == ["How about two o'clock in the afternoon?"]
    assert engine.expecting is not None and engine.expecting.confirming
    reply = engine.handle("sure")
    assert reply.slots["time"] == dt.time(14, 0) and reply.node == "confirm"


def test_an_offer_can_be_refused_or_moved(booking: Flow) -> None:
    engine, reply = call(booking, "book", "tomorrow", "in the afternoon", "no")
    assert reply.lines == ["Or would three o'clock in the afternoon suit you?"]
    reply = engine.handle("a bit later")
    assert reply.lines == ["How about three thirty in the afternoon?"]
    reply = engine.handle("no")
    assert reply.node == "ask_time" and engine.misses == 0
    reply = engine.handle("quarter to four")
    assert reply.slots["time"] == dt.time(15, 45)


def test_offers_respect_the_questions_own_limits(booking: Flow) -> None:
    # The clinic's last appointment is at half past four: "end of the day" offers that, not five.
    _, reply = call(booking, "book", "tomorrow", "at the end of the day")
    assert reply.lines == ["How about four o'clock in the afternoon?"]
    _, reply = call(booking, "book", "tomorrow", "in the evening")
    assert reply.lines == ["How about four thirty in the afternoon?"]


def test_a_date_and_time_in_one_answer_fill_both_questions(booking: Flow) -> None:
    _, reply = call(booking, "book", "tomorrow at half three")
    assert reply.node == "confirm"
    assert (reply.slots["date"], reply.slots["time"]) == (dt.date(2024, 12, 3), dt.time(15, 30))
    _, reply = call(booking, "hi, I need an appointment for tomorrow at half three")
    assert reply.node == "confirm"


def test_a_promise_said_with_its_reason_is_a_promise(payment: Flow) -> None:
    engine, reply = paying(payment, "yes", "1984", "Oh, on Friday, when I get paid")
    assert reply.intent == "later"
    assert reply.node == "confirm_promise"
    assert reply.slots["promise_date"] == dt.date(2024, 12, 6)
    reply = engine.handle("yes")
    assert http(reply).json_body == {"date": "2024-12-06", "amount": 120}


# -- intents that end or redirect the call ----------------------------------------------------


def test_a_loose_match_that_would_end_the_call_is_checked_first(payment: Flow) -> None:
    engine, reply = paying(payment, "yes", "1984", "I think my husband paid it")
    assert reply.lines == ["Just to check: you have already paid this balance?"]
    assert reply.intent is None and not reply.end_call
    reply = engine.handle("no, no")
    assert reply.node == "ask_pay_today" and not reply.end_call and engine.misses == 0
    reply = engine.handle("I already paid it last week")
    assert reply.intent == "already_paid" and reply.end_call  # clear-cut: no question


def test_yes_to_the_check_follows_the_intent(payment: Flow) -> None:
    engine, _ = paying(payment, "yes", "1984", "I think my husband paid it")
    reply = engine.handle("yes")
    assert reply.intent == "already_paid" and reply.node == "already_paid" and reply.end_call


def test_an_answer_instead_of_yes_or_no_to_the_check_is_taken_as_a_fresh_turn(payment: Flow) -> None:
    engine, _ = paying(payment, "yes", "1984", "I think my husband paid it")
    reply = engine.handle("actually I can pay on Friday")
    assert reply.node == "confirm_promise"


def test_confirm_false_never_asks() -> None:
    flow = flow_from("""
        start: a
        nodes:
          a:
            say: Anything else?
            intents:
              - {name: done, examples: [that is all for today], keywords: [done], goto: bye, confirm: false}
              - {name: more, examples: [one more question], goto: a}
          bye:
            say: Bye.
            end: true
    """)
    _, reply = call(flow, "done I guess, the thing is sorted")
    assert reply.end_call


@pytest.mark.parametrize("text", ["Hi, sorry,", "sorry", "hi"])
def test_sorry_and_hi_are_not_repeat_and_not_a_miss(triage: Flow, text: str) -> None:
    engine, reply = call(triage, text)
    assert reply.intent is None and engine.misses == 0
    assert reply.lines == ["In a few words, what is your call about? For example an order, a repair, or a bill."]


def test_fillers_never_use_up_the_retries(triage: Flow) -> None:
    engine, reply = call(triage, "um", "yeah so", "okay", "uh, hmm", "hello?")
    assert engine.misses == 0 and reply.node == "triage"
    assert reply.lines[0] == "Yes, I am here."
    reply = engine.handle("something I bought stopped working")
    assert reply.intent == "repair"


def test_nah_i_am_good_is_a_no(triage: Flow) -> None:
    engine, reply = call(triage, "my phone is broken", "no", "yes that fixed it")
    assert reply.node == "anything_else"
    reply = engine.handle("nah, I'm good")
    assert reply.end_call


# -- asides -----------------------------------------------------------------------------------


def test_a_question_at_a_yes_no_question_is_answered_and_the_question_asked_again(after_hours: Flow) -> None:
    engine, reply = call(after_hours, "Oh, hang on, what time do you open tomorrow?")
    assert reply.intent == "opening_hours"
    assert reply.lines == [
        "We are open Monday to Friday, from nine in the morning to six in the evening.",
        "Would you like us to call you back?",
    ]
    assert reply.node == "offer_callback" and engine.misses == 0
    assert "wants_callback" not in reply.slots
    assert engine.handle("yes please").node == "ask_topic"


def test_a_question_with_a_date_in_it_is_not_the_date(booking: Flow) -> None:
    _, reply = call(booking, "book", "what time do you open on Friday?")
    assert reply.intent == "opening_hours" and reply.node == "ask_date"
    assert "date" not in reply.slots


def test_an_aside_during_a_read_back_returns_to_the_read_back(triage: Flow) -> None:
    engine, reply = call(triage, "where is my parcel", "four eight two nine one", "how long does delivery take?")
    assert reply.lines == [
        "Delivery usually takes two to four working days.",
        "That is order 4 8 2, 9 1. Is that right?",
    ]
    assert http(engine.handle("yes")).url.endswith("/48291")


def test_without_an_answer_the_llm_takes_the_aside_and_the_question_comes_back(triage: Flow) -> None:
    engine, reply = call(triage, "my phone is broken", "do you sell phone cases?")
    assert reply.llm is not None and reply.llm.tools == [] and reply.lines == []
    assert "do not ask a question" in reply.llm.system_prompt.lower()
    assert engine.waiting_for == "llm"
    reply = engine.llm_result("Yes, we sell cases for most phones.", [])
    assert reply.lines == ["Have you already tried switching your phone off and on again?"]
    assert engine.waiting_for == "answer"
    assert engine.handle("yes").handover is not None


def test_without_an_llm_an_unknown_aside_is_a_miss(triage: Flow) -> None:
    engine, reply = call(triage, "my phone is broken", "do you sell phone cases?", llm_available=False)
    assert reply.llm is None and engine.misses == 1


# -- talked over ---------------------------------------------------------------------------------


def test_an_interrupted_status_is_said_again_unless_the_caller_moves_on(triage: Flow) -> None:
    engine, _ = call(triage, "where is my parcel", "four eight two nine one", "yes")
    assert engine.pending_action is not None
    status = engine.action_result(engine.pending_action.id, True, {"status": "shipped", "delivery_date": "2024-12-05"})
    assert status.lines[0].startswith("Your order is on its way")
    engine.on_interrupted(status.lines[0])
    reply = engine.handle("yes")  # said over the status: not an answer to "anything else?"
    assert reply.lines == status.lines and reply.node == "anything_else" and engine.misses == 0
    assert engine.handle("no thanks").end_call


def test_an_interruption_that_goes_somewhere_is_followed(triage: Flow) -> None:
    engine, _ = call(triage, "where is my parcel", "four eight two nine one", "yes")
    assert engine.pending_action is not None
    status = engine.action_result(engine.pending_action.id, True, {"status": "shipped", "delivery_date": "2024-12-05"})
    engine.on_interrupted(status.lines[0])
    reply = engine.handle("can I talk to a person please")
    assert reply.handover is not None


def test_interrupting_only_the_question_is_a_normal_answer(triage: Flow) -> None:
    engine, _ = call(triage, "my phone is broken", "no")
    reply = engine.handle("yes it works")
    engine.on_interrupted(reply.lines[-1])
    assert engine.handle("no").end_call


def test_a_line_not_from_the_last_reply_is_ignored(triage: Flow) -> None:
    engine, _ = call(triage)
    engine.on_interrupted("something the bot never said")
    assert engine.handle("no idea").lines == ["Sorry, is it about an order, a repair, or a bill?"]


# -- an LLM may help classify ------------------------------------------------------------------


def test_no_classification_is_needed_when_offline_matching_is_sure(triage: Flow, booking: Flow) -> None:
    engine, _ = call(triage)
    assert engine.classification_request("I want to check the status of my order") is None
    assert engine.classification_request("um") is None
    engine, _ = call(booking, "book")
    assert engine.classification_request("next tuesday") is None


def test_an_llm_pick_decides_only_where_offline_matching_is_unsure(triage: Flow) -> None:
    engine, _ = call(triage)
    text = "the gizmo you sent me makes a weird noise"
    request = engine.classification_request(text)
    assert request is not None and "repair" in request.names and "opening_hours" in request.names
    assert "my phone is broken" in request.descriptions["repair"]
    reply = engine.handle(text, classified="repair")
    assert reply.intent == "repair" and reply.node == "ask_product"
    engine, _ = call(triage)
    assert engine.handle("where is my order", classified="billing").intent == "order"  # offline was sure
    engine, _ = call(triage)
    assert engine.handle(text, classified="no_such_intent").intent is None


def test_an_llm_pick_can_name_an_faq_entry(triage: Flow) -> None:
    engine, _ = call(triage)
    reply = engine.handle("hmm, the thing about sending stuff back", classified="returns")
    assert reply.intent == "returns" and reply.lines[0].startswith("Returns are free")


def test_state_with_a_pending_check_can_be_taken_back(triage: Flow) -> None:
    engine, _ = call(triage, "where is my parcel", "four eight two nine one")
    before = engine.snapshot()
    engine.handle("yes")
    assert engine.pending_action is not None
    engine.restore(before)
    assert engine.pending_action is None
    assert engine.handle("no").lines[0] == "Sorry about that."


def test_free_text_can_be_read_back_and_corrected() -> None:
    flow = flow_from("""
        start: a
        nodes:
          a:
            say: What is it about?
            ask: {slot: topic, type: text, confirm: true}
            next: done
          done:
            say: "Noted: {{topic}}."
            end: true
    """)
    engine, reply = call(flow, "my phone keeps restarting")
    assert reply.lines == ["Just to check: my phone keeps restarting. Is that right?"]
    reply = engine.handle("no, it's my laptop that keeps restarting")
    assert reply.lines == ["Just to check: my laptop that keeps restarting. Is that right?"]
    reply = engine.handle("yes")
    assert reply.lines == ["Noted: my laptop that keeps restarting."]


def test_yes_but_the_point_comes_after_but(payment: Flow, after_hours: Flow) -> None:
    engine, _ = call(payment)
    assert engine.pending_action is not None
    engine.action_result(engine.pending_action.id, True, ACCOUNT)
    reply = engine.handle("Yes, but I'm driving right now, can you ring me back later?")
    assert reply.node == "confirm_person" and reply.lines == ["Would you rather we call you again another day?"]
    assert engine.handle("yes").node == "call_later"
    _, reply = call(after_hours, "Yes, but honestly this is urgent, there's water leaking everywhere")
    assert reply.lines == ["Is it urgent, so that I should put you through to our on call team now?"]


def test_an_emergency_said_as_free_text_still_reaches_the_on_call_team(after_hours: Flow) -> None:
    engine, reply = call(after_hours, "yes please", "water is leaking everywhere, it's an emergency")
    assert reply.lines == ["Is it urgent, so that I should put you through to our on call team now?"]
    assert engine.handle("yes it really is").handover is not None


def test_a_yes_that_goes_on_about_the_same_thing_confirms(payment: Flow) -> None:
    engine, reply = paying(payment, "yes", "1984", "that can't be right, I've never used that much electricity")
    assert reply.lines == ["Just to check: you do not agree with this balance?"]
    assert engine.handle("Yes, I don't agree with it at all.").handover is not None


def test_a_paid_day_is_not_a_promise(payment: Flow) -> None:
    engine, reply = paying(payment, "yes", "1984", "I actually paid that on Monday, it should be showing by now.")
    assert reply.lines == ["Just to check: you have already paid this balance?"]
    assert engine.handle("Yes, I paid it already.").node == "already_paid"


def test_a_caller_who_asks_for_a_moment_gets_it(triage: Flow) -> None:
    engine, reply = call(triage, "hang on a second")
    assert reply.lines == ["Sure, take your time."] and engine.misses == 0
    reply = engine.handle("um")
    assert reply.lines == ["In a few words, what is your call about? For example an order, a repair, or a bill."]
    assert engine.misses == 0
