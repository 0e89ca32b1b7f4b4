"""Reading callers' turns as people say them: kinds of turn, self-corrections, digits read in
groups, everyday times and dates, and intents that respect negation, tense and paraphrase."""

from __future__ import annotations

import datetime as dt

import pytest

from agent.dialogue.answers import understand
from agent.dialogue.digits import join_digits, read_digits, speak_digits
from agent.dialogue.flow import Intent
from agent.dialogue.model import Ask, BusinessHours, DigitLength
from agent.dialogue.nlu import DEFAULT_THRESHOLD, features, match_intent, rank_intents
from agent.dialogue.slots import has_time_cue, parse_date, parse_time, parse_yes_no
from agent.dialogue.utterance import acknowledgement, is_question, kind, read
from agent.dialogue.when import vague_date, vague_time

MONDAY = dt.date(2024, 12, 2)
DATE = Ask(slot="day", type="date")
TIME = Ask(slot="time", type="time")
YES_NO = Ask(slot="ok", type="yes_no")
NUMBER = Ask(slot="people", type="number")
ORDER = Ask(slot="order", type="digits", length=DigitLength(min=5, max=5))
PRODUCT = Ask(slot="product", type="choice", choices={"phone": ["mobile"], "laptop": ["notebook"], "tv": []})


def answer(ask: Ask, text: str, **kwargs: object):  # type: ignore[no-untyped-def]
    return understand(ask, text, today=MONDAY, **kwargs)  # type: ignore[arg-type]


# -- kinds of turn ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("um", "hesitation"),
        ("uh, hmm", "hesitation"),
        ("yeah so", "hesitation"),
        ("okay, and", "hesitation"),
        ("hang on", "hold"),
        ("let me see, um", "hold"),
        ("one second please", "hold"),
        ("hi", "greeting"),
        ("good morning", "greeting"),
        ("hello", "greeting"),
        ("hello?", "presence"),
        ("are you there?", "presence"),
        ("hello, can you hear me", "presence"),
        ("sorry", "apology"),
        ("Hi, sorry,", "apology"),
        ("sorry?", "apology"),
        ("what?", "apology"),
        ("excuse me", "apology"),
        ("yes", "content"),
        ("okay", "content"),
        ("mhm", "content"),
        ("sorry, can you repeat that", "content"),
        ("", "empty"),
        ("...", "empty"),
    ],
)
def test_kind_of_turn(text: str, expected: str) -> None:
    assert kind(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Oh, hang on, what time do you open tomorrow?", True),
        ("what time do you close", True),
        ("do you open on sundays", True),
        ("is there parking", True),
        ("how much is a check up", True),
        ("I was wondering if you sell phones", True),
        ("when I get paid", False),
        ("on Friday, when I get paid", False),
        ("tuesday", False),
        ("Tuesday?", False),
        ("what I said was Tuesday", False),
    ],
)
def test_questions_are_told_from_answers(text: str, expected: bool) -> None:
    assert is_question(text) is expected


def test_acknowledgements() -> None:
    assert acknowledgement("okay, thanks")
    assert acknowledgement("right, I see")
    assert not acknowledgement("okay, the laptop")


# -- self-corrections ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "last", "retracted", "corrected"),
    [
        ("Tuesday. No. Sorry. Wednesday.", "wednesday", False, True),
        ("Tuesday, no, Wednesday", "wednesday", False, True),
        ("Tuesday \u2014 sorry, Wednesday", "wednesday", False, True),
        ("Tuesday, wait, Wednesday", "wednesday", False, True),
        ("actually Wednesday", "wednesday", False, True),
        ("I mean Wednesday", "wednesday", False, True),
        ("make it Wednesday", "wednesday", False, True),
        ("Next Tuesday, no \u2014", "next tuesday", True, False),
        ("Tuesday, no, wait", "tuesday", True, False),
        ("Tuesday, sorry", "tuesday", False, False),
        ("Wednesday actually", "wednesday", False, False),
        ("Friday, I mean", "friday", False, False),
    ],
)
def test_self_corrections_split_the_turn(text: str, last: str, retracted: bool, corrected: bool) -> None:
    said = read(text)
    assert said.last == last
    assert (said.retracted, said.corrected) == (retracted, corrected)


def test_no_is_an_answer_at_a_yes_no_question() -> None:
    assert [s.text for s in read("No. Sorry. Yes.", yes_no=True).segments] == ["no", "yes"]
    held = read("No wait", yes_no=True)
    assert [s.text for s in held.segments] == ["no"] and held.retracted


def test_i_cannot_make_it_is_not_a_correction() -> None:
    said = read("I can't make it on Tuesday, how about Wednesday")
    assert len(said.segments) == 1
    assert said.segments[0].usable == "wednesday"


@pytest.mark.parametrize(
    ("ask", "text", "expected"),
    [
        (DATE, "Tuesday. No. Sorry. Wednesday.", dt.date(2024, 12, 4)),
        (DATE, "next tuesday, sorry, next wednesday", dt.date(2024, 12, 11)),
        (DATE, "not Tuesday but Wednesday", dt.date(2024, 12, 4)),
        (DATE, "Wednesday, not Tuesday", dt.date(2024, 12, 4)),
        (DATE, "Tuesday doesn't work for me, how about Thursday?", dt.date(2024, 12, 5)),
        (TIME, "at 3, sorry, 4", dt.time(16, 0)),
        (TIME, "half past two, no, quarter to three", dt.time(14, 45)),
        (NUMBER, "two, no, three of us", 3),
        (YES_NO, "No. Sorry. Yes.", True),
        (YES_NO, "yes, no, I mean no", False),
        (PRODUCT, "a phone, no, the laptop", "laptop"),
        (PRODUCT, "make it the notebook", "laptop"),
        (PRODUCT, "my mobile won't turn on", "phone"),
        (ORDER, "4 8 2 9 1, no, 4 8 2 9 2", "48292"),
    ],
)
def test_the_corrected_value_is_taken(ask: Ask, text: str, expected: object) -> None:
    result = answer(ask, text)
    assert (result.kind, result.value) == ("value", expected)


@pytest.mark.parametrize(
    ("ask", "text"), [(DATE, "Next Tuesday, no \u2014"), (YES_NO, "No wait"), (TIME, "at three, hang on")]
)
def test_a_value_taken_back_is_not_an_answer(ask: Ask, text: str) -> None:
    assert answer(ask, text).kind == "retracted"


def test_a_correction_that_is_not_understood_never_falls_back_to_the_old_value() -> None:
    assert answer(DATE, "Tuesday, no, the one after the holidays").kind == "none"


# -- digits -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "length", "expected"),
    [
        ("four eight two nine one", 5, "48291"),
        ("for eight, two nine one", 5, "48291"),
        ("It's for eight two nine one.", 5, "48291"),
        ("4a 2 9 1", 5, "48291"),  # Whisper glued a half-heard "eight" to the four
        ("for 48291", 5, "48291"),  # "for" is a word here: five digits without it
        ("forty eight, two ninety one", 5, "48291"),
        ("48,291", 5, "48291"),
        ("4-8-2-9-1", None, "48291"),
        ("oh four two", 3, "042"),
        ("zero zero seven", 3, "007"),
        ("double four seven", None, "447"),
        ("four eight to nine one", 5, "48291"),  # Whisper's "to" for two
        ("I want to check 4 8 2", 5, "482"),
        ("my order number is 4 8 2 9 1 from the 5th", 5, "48291"),
        ("forty eight thousand two hundred ninety one", 5, "48291"),
        ("I don't have it here", 5, ""),
    ],
)
def test_digits_as_read_out(text: str, length: int | None, expected: str) -> None:
    assert read_digits(text, length).text == expected


def test_digit_groups_from_separate_turns_are_joined() -> None:
    assert join_digits("482", "91", 5) == "48291"
    assert join_digits("482", "291", 5) == "48291"  # the second group repeats the end of the first
    assert join_digits("482", "48291", 5) == "48291"  # the caller started over
    assert join_digits("48", "2", 5) == "482"


def test_digits_are_read_back_in_groups() -> None:
    assert speak_digits("48291") == "4 8 2, 9 1"
    assert speak_digits("4829") == "4 8 2 9"


def test_a_number_with_too_few_digits_is_partial_and_the_rest_joins_it() -> None:
    first = answer(ORDER, "four eight two")
    assert (first.kind, first.digits) == ("partial", "482")
    second = answer(ORDER, "nine one", partial=first.digits)
    assert (second.kind, second.value) == ("value", "48291")
    assert answer(ORDER, "4 8 2 9 1 2").kind == "too_long"
    restarted = answer(ORDER, "sorry, 4 8 3 9 1", partial="482")
    assert restarted.value == "48391"


def test_a_number_with_a_length_keeps_its_type() -> None:
    year = Ask(slot="year", type="number", length=DigitLength(min=4, max=4))
    assert answer(year, "nineteen eighty four").value == 1984
    assert answer(year, "nineteen").kind == "partial"


# -- times and dates as people say them -------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("half three", dt.time(15, 30)),
        ("half 3", dt.time(15, 30)),
        ("half seven", dt.time(7, 30)),
        ("quarter to five", dt.time(16, 45)),
        ("quarter past two", dt.time(14, 15)),
        ("ten to six", dt.time(17, 50)),
        ("noon", dt.time(12, 0)),
        ("midday", dt.time(12, 0)),
        ("at 6", dt.time(18, 0)),
        ("at 8", dt.time(8, 0)),
    ],
)
def test_times_people_say(text: str, expected: dt.time) -> None:
    assert parse_time(text) == expected


def test_am_or_pm_follows_the_business_hours() -> None:
    evening_shop = BusinessHours(open=dt.time(12, 0), close=dt.time(22, 0))
    assert parse_time("at eight", evening_shop) == dt.time(20, 0)
    assert parse_time("at eight") == dt.time(8, 0)
    assert parse_time("half ten", evening_shop) == dt.time(22, 30)
    assert parse_time("at eight in the morning", evening_shop) == dt.time(8, 0)


def test_half_an_hour_is_not_a_time() -> None:
    assert parse_time("in half an hour") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("the 15th", dt.date(2024, 12, 15)),
        ("the 15", dt.date(2024, 12, 15)),
        ("the 15.", dt.date(2024, 12, 15)),
        ("15", dt.date(2024, 12, 15)),
        ("on the 1st", dt.date(2025, 1, 1)),
        ("the 15th of next month", dt.date(2025, 1, 15)),
        ("first thing tomorrow", dt.date(2024, 12, 3)),
        ("Tuesday next week", dt.date(2024, 12, 10)),
        ("next week Tuesday", dt.date(2024, 12, 10)),
        ("Friday the 13th", dt.date(2024, 12, 13)),
        ("end of the month", dt.date(2024, 12, 31)),
        ("end of next week", dt.date(2024, 12, 13)),
        ("in a fortnight", dt.date(2024, 12, 16)),
    ],
)
def test_dates_people_say(text: str, expected: dt.date) -> None:
    assert parse_date(text, MONDAY) == expected


@pytest.mark.parametrize("text", ["I have 2 questions", "first thing", "3 people"])
def test_numbers_that_are_not_days(text: str) -> None:
    assert parse_date(text, MONDAY) is None


def test_vague_times_give_suggestions_within_the_opening_hours() -> None:
    hours = BusinessHours(open=dt.time(8, 0), close=dt.time(18, 0))
    assert vague_time("sometime after lunch", hours).suggestions[0] == dt.time(14, 0)  # type: ignore[union-attr]
    assert vague_time("sometime in the afternoon", hours).suggestions[0] == dt.time(14, 0)  # type: ignore[union-attr]
    assert vague_time("first thing", hours).suggestions[0] == dt.time(8, 0)  # type: ignore[union-attr]
    assert vague_time("end of the day", hours).suggestions[0] == dt.time(17, 0)  # type: ignore[union-attr]
    assert vague_time("ten in the morning") is not None  # a window word; the exact parse runs first
    assert answer(TIME, "ten in the morning").value == dt.time(10, 0)
    assert vague_time("the blue one") is None


def test_vague_dates_suggest_working_days() -> None:
    next_week = vague_date("sometime next week", MONDAY)
    assert next_week is not None and next_week.suggestions[0] == dt.date(2024, 12, 9)
    assert all(day.weekday() < 5 for day in next_week.suggestions)
    soon = vague_date("as soon as possible", dt.date(2024, 12, 6))  # a Friday
    assert soon is not None and soon.suggestions[0] == dt.date(2024, 12, 9)


def test_time_cues_for_values_in_other_answers() -> None:
    assert has_time_cue("tomorrow at half three")
    assert has_time_cue("the 5th at 10")
    assert not has_time_cue("December 5")
    assert not has_time_cue("next tuesday")


def test_strict_reading_only_takes_clear_values() -> None:
    assert answer(TIME, "December 5", strict=True).kind == "none"
    assert answer(TIME, "tomorrow at 3", strict=True).value == dt.time(15, 0)
    assert answer(DATE, "15", strict=True).kind == "none"
    assert answer(DATE, "the 15th", strict=True).value == dt.date(2024, 12, 15)
    assert answer(NUMBER, "2 people", strict=True).kind == "none"
    assert answer(YES_NO, "yes", strict=True).kind == "none"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nah, I'm good", False),
        ("I'm good thanks", False),
        ("that's all", False),
        ("nothing else", False),
        ("I don't think so", False),
        ("uh-uh", False),
        ("I think so", True),
        ("mhm", True),
        ("uh-huh", True),
        ("yes I'm good", True),
        ("that would be great", True),
        ("I'm good", None),
    ],
)
def test_yes_and_no_as_people_say_them(text: str, expected: bool | None) -> None:
    assert parse_yes_no(text) is expected


# -- intents: negation, tense, paraphrase ---------------------------------------------------

ALREADY_PAID = Intent(
    name="already_paid",
    examples=["I already paid", "I paid it last week", "it has been paid"],
    keywords=["already paid", "paid it", "have paid"],
    goto="x",
)
LATER = Intent(
    name="later",
    examples=["not today, but next week", "I can pay on Friday", "can I pay later"],
    keywords=["later", "next week"],
    goto="y",
)
REPAIR = Intent(
    name="repair",
    examples=["my phone is broken", "my laptop does not turn on", "the television is not working"],
    keywords=["broken", "repair", "not working"],
    goto="repair",
)
ORDERS = Intent(
    name="order",
    examples=["where is my order", "my package has not arrived"],
    keywords=["order", "package", "tracking"],
    goto="order",
)
BILLING = Intent(name="billing", examples=["I have a question about my bill"], keywords=["bill"], goto="bill")


def test_tense_and_negation_are_read() -> None:
    assert features("when I get paid") == (False, "future")
    assert features("I already paid") == (False, "past")
    assert features("I haven't paid") == (True, "past")
    assert features("it stopped working")[0] is False  # "not working"-like phrases are a meaning, not a denial


@pytest.mark.parametrize(
    "text", ["on Friday, when I get paid", "I haven't paid it yet", "I am going to pay it when I get paid"]
)
def test_already_paid_needs_a_caller_who_says_they_paid(text: str) -> None:
    matched, _ = match_intent(text, [ALREADY_PAID, LATER])
    assert matched is None or matched.name != "already_paid", text


def test_paid_meets_pay() -> None:
    matched, _ = match_intent("I paid the bill last Tuesday", [ALREADY_PAID, LATER])
    assert matched is not None and matched.name == "already_paid"


@pytest.mark.parametrize(
    "text",
    ["something I bought stopped working", "it's the laptop", "the telly keeps crashing", "my mobile died"],
)
def test_paraphrases_reach_the_repair_intent(text: str) -> None:
    matched, score = match_intent(text, [ORDERS, REPAIR, BILLING])
    assert matched is not None and matched.name == "repair", (text, score)
    assert score >= DEFAULT_THRESHOLD


def test_words_shared_by_two_intents_are_no_evidence() -> None:
    scores = dict((i.name, s) for i, s in rank_intents("the weather is lovely", [ORDERS, REPAIR, BILLING]))
    assert max(scores.values()) < DEFAULT_THRESHOLD


def test_crack_is_not_track() -> None:
    matched, _ = match_intent("my screen is cracked", [ORDERS, REPAIR])
    assert matched is not None and matched.name == "repair"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("3.30", dt.time(15, 30)), ("3.30pm", dt.time(15, 30)), ("At 3.30.", dt.time(15, 30)), ("15.30", dt.time(15, 30))],
)
def test_times_as_whisper_writes_them(text: str, expected: dt.time) -> None:
    assert parse_time(text) == expected


def test_a_bare_weekday_is_never_today() -> None:
    assert parse_date("Monday", MONDAY) == dt.date(2024, 12, 9)
    assert parse_date("this Monday", MONDAY) == dt.date(2024, 12, 9)
    assert parse_date("today", MONDAY) == MONDAY
    assert parse_date("Wednesday week", MONDAY) == dt.date(2024, 12, 11)


@pytest.mark.parametrize("text", ["Absolutely not.", "of course not", "definitely not"])
def test_emphatic_noes(text: str) -> None:
    assert parse_yes_no(text) is False


@pytest.mark.parametrize(
    ("ask", "text", "expected"),
    [
        (Ask(slot="year", type="number", min=1900, max=2025), "Nineteen eighty three, no, sorry, eighty four.", 1984),
        (ORDER, "4 8 2 9 1, no, 9 2", "48292"),
        (NUMBER, "twenty, no, twenty five", 25),
    ],
)
def test_a_correction_that_only_says_the_end_of_a_number(ask: Ask, text: str, expected: object) -> None:
    assert answer(ask, text).value == expected


def test_a_day_refused_is_not_the_answer() -> None:
    assert answer(DATE, "I can't today, could I do next Tuesday?").value == dt.date(2024, 12, 10)
