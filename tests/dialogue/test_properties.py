"""Property-based tests: every slot type, said in generated ways, with fillers, politeness
and self-corrections thrown in, is read as the value the caller meant.

The generators build phrasings the way callers produce them (digits in groups, times as
"half three" or "quarter to five", dates as weekdays or "the 15th"), so a rule that only
works for the examples in the docs fails here.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.dialogue.answers import understand
from agent.dialogue.engine import FlowEngine
from agent.dialogue.flow import parse_flow
from agent.dialogue.model import Ask, DigitLength

TODAY = dt.date(2024, 12, 2)  # a Monday
# No example database: runs leave nothing behind in the work tree (CI starts from a clean clone anyway).
# WACALL_PROPERTY_EXAMPLES=2000 for a longer hunt after changing the parsers.
SETTINGS = settings(
    max_examples=int(os.environ.get("WACALL_PROPERTY_EXAMPLES", "150")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

_UNITS = "zero one two three four five six seven eight nine".split()
_TEENS = "ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_MONTHS = "January February March April May June July August September October November December".split()
_WEEKDAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
_ORDINALS = (
    "first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth thirteenth fourteenth "
    "fifteenth sixteenth seventeenth eighteenth nineteenth twentieth"
).split()


def words(n: int) -> str:
    """English words for 0 <= n < 10000, the way people say amounts."""
    if n < 10:
        return _UNITS[n]
    if n < 20:
        return _TEENS[n - 10]
    if n < 100:
        tens, unit = divmod(n, 10)
        return _TENS[tens] + (f" {_UNITS[unit]}" if unit else "")
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return f"{_UNITS[hundreds]} hundred" + (f" and {words(rest)}" if rest else "")
    thousands, rest = divmod(n, 1000)
    return f"{words(thousands)} thousand" + (f" {words(rest)}" if rest else "")


def ordinal_words(n: int) -> str:
    if n <= 20:
        return _ORDINALS[n - 1]
    tens, unit = divmod(n, 10)
    return "thirtieth" if n == 30 else f"{_TENS[tens]} {_ORDINALS[unit - 1]}" if unit else "twentieth"


def suffix(n: int) -> str:
    return "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")


FILLERS = st.sampled_from(["", "um", "uh", "er", "hmm", "well", "so", "um, so", "uh, well"])
POLITE = st.sampled_from(["", "please", "thanks", "thank you"])
MARKERS = st.sampled_from(
    [
        "no,",
        "sorry,",
        "no, sorry,",
        "wait,",
        "I mean",
        "actually",
        "no wait,",
        "make it",
        "\u2014 sorry,",
        ". No. Sorry.",
    ]
)


def around(core: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A phrase with hesitations before it and politeness after it."""
    return st.builds(lambda f, c, p: " ".join(x for x in (f, c, p) if x), FILLERS, core, POLITE)


def corrected(wrong: st.SearchStrategy[str], right: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.builds(lambda w, m, r: f"{w} {m} {r}", wrong, MARKERS, right)


def read_value(ask: Ask, text: str) -> Any:
    result = understand(ask, text, today=TODAY)
    assert result.kind == "value", (text, result)
    return result.value


# -- numbers ----------------------------------------------------------------------------------

NUMBER = Ask(slot="n", type="number")


@st.composite
def spoken_numbers(draw: st.DrawFn) -> tuple[int, str]:
    n = draw(st.integers(min_value=0, max_value=9999))
    style = draw(st.sampled_from(["digits", "words", "comma"]))
    core = str(n) if style == "digits" else f"{n:,}" if style == "comma" else words(n)
    lead = draw(st.sampled_from(["", "it is", "about", "we are", "that would be"]))
    return n, f"{lead} {core}".strip()


@SETTINGS
@given(spoken_numbers(), FILLERS, POLITE)
def test_numbers_in_any_words(case: tuple[int, str], filler: str, polite: str) -> None:
    n, text = case
    assert read_value(NUMBER, f"{filler} {text} {polite}") == n


@SETTINGS
@given(spoken_numbers(), spoken_numbers(), MARKERS)
def test_a_corrected_number_is_the_last_one(wrong: tuple[int, str], right: tuple[int, str], marker: str) -> None:
    assert read_value(NUMBER, f"{wrong[1]} {marker} {right[1]}") == right[0]


# -- digits -----------------------------------------------------------------------------------


@st.composite
def read_out_digits(draw: st.DrawFn) -> tuple[str, str]:
    digits = draw(st.text(alphabet="0123456789", min_size=4, max_size=9))
    spoken = []
    for digit in digits:
        if digit == "0":
            spoken.append(draw(st.sampled_from(["zero", "oh", "0"])))
        else:
            spoken.append(draw(st.sampled_from([_UNITS[int(digit)], digit])))
    # Groups with pauses (commas, "um") between them.
    out: list[str] = []
    for i, word in enumerate(spoken):
        if i and draw(st.booleans()) and draw(st.booleans()):
            out.append(draw(st.sampled_from([",", "um", "...", "-"])))
        out.append(word)
    return digits, " ".join(out).replace(" ,", ",")


@SETTINGS
@given(read_out_digits(), st.sampled_from(["", "it's", "the number is", "yeah, it's", "my order number is"]))
def test_digits_read_out_in_groups(case: tuple[str, str], lead: str) -> None:
    digits, text = case
    ask = Ask(slot="code", type="digits", length=DigitLength(min=len(digits), max=len(digits)))
    assert read_value(ask, f"{lead} {text}") == digits


@SETTINGS
@given(read_out_digits(), st.integers(min_value=1, max_value=3))
def test_digits_in_two_turns_are_joined(case: tuple[str, str], cut: int) -> None:
    digits, _ = case
    ask = Ask(slot="code", type="digits", length=DigitLength(min=len(digits), max=len(digits)))
    head, tail = digits[:cut], digits[cut:]
    first = understand(ask, " ".join(_UNITS[int(d)] for d in head), today=TODAY)
    assert (first.kind, first.digits) == ("partial", head)
    second = understand(ask, " ".join(_UNITS[int(d)] for d in tail), today=TODAY, partial=first.digits)
    assert (second.kind, second.value) == ("value", digits)


# -- dates ------------------------------------------------------------------------------------


@st.composite
def spoken_dates(draw: st.DrawFn) -> tuple[dt.date, str]:
    offset = draw(st.integers(min_value=1, max_value=60))
    date = TODAY + dt.timedelta(days=offset)
    forms = ["the_nth_of_month", "month_nth", "month_digits", "iso"]
    if offset == 1:
        forms.append("tomorrow")
    if offset < 7:
        forms.append("weekday")
    if 7 <= offset - TODAY.weekday() < 14 and date.weekday() == offset % 7 and offset >= 7:
        forms.append("next_weekday")
    if date.month == TODAY.month:
        forms.append("the_nth")
    form = draw(st.sampled_from(forms))
    day, month = date.day, _MONTHS[date.month - 1]
    text = {
        "the_nth_of_month": f"the {ordinal_words(day)} of {month}",
        "month_nth": f"{month} {day}{suffix(day)}",
        "month_digits": f"{month} the {day}{suffix(day)}",
        "iso": date.isoformat(),
        "tomorrow": "tomorrow",
        "weekday": f"on {_WEEKDAYS[date.weekday()]}",
        "next_weekday": f"next {_WEEKDAYS[date.weekday()]}",
        "the_nth": draw(st.sampled_from([f"the {day}{suffix(day)}", f"the {day}", f"the {day}.", f"on the {day}"])),
    }[form]
    return date, text


DATE = Ask(slot="d", type="date")


@SETTINGS
@given(around(spoken_dates().map(lambda c: c[1])), spoken_dates())
def test_dates_said_many_ways(_: str, case: tuple[dt.date, str]) -> None:
    date, text = case
    assert read_value(DATE, text) == date


@SETTINGS
@given(spoken_dates(), FILLERS, POLITE)
def test_dates_with_fillers(case: tuple[dt.date, str], filler: str, polite: str) -> None:
    date, text = case
    assert read_value(DATE, f"{filler} {text} {polite}") == date


@SETTINGS
@given(spoken_dates(), spoken_dates(), MARKERS)
def test_a_corrected_date_is_the_last_one(wrong: tuple[dt.date, str], right: tuple[dt.date, str], marker: str) -> None:
    assert read_value(DATE, f"{wrong[1]} {marker} {right[1]}") == right[0]


# -- times ------------------------------------------------------------------------------------


def hour_words(hour: int) -> str:
    return words(hour % 12 or 12)


@st.composite
def spoken_times(draw: st.DrawFn) -> tuple[dt.time, str]:
    """Times inside business hours (9 to 5), said without am/pm as often as with it."""
    hour = draw(st.integers(min_value=9, max_value=16))
    minute = draw(st.sampled_from([0, 0, 15, 30, 45, 10, 20, 50, 5]))
    value = dt.time(hour, minute)
    h12 = hour % 12 or 12
    nxt = (hour + 1) % 12 or 12
    forms = ["digits", "words"]
    if minute == 0:
        forms += ["oclock", "bare"]
    if minute == 30:
        forms += ["half_past", "half_h"]
    if minute == 15:
        forms.append("quarter_past")
    if minute == 45:
        forms.append("quarter_to")
    if minute in (10, 20):
        forms.append("past")
    if minute in (50,):
        forms.append("to")
    form = draw(st.sampled_from(forms))
    text = {
        "digits": f"{h12}:{minute:02d}",
        "words": f"{hour_words(hour)} {words(minute) if minute >= 10 else 'oh ' + words(minute) if minute else ''}",
        "oclock": f"{hour_words(hour)} o'clock",
        "bare": f"at {hour_words(hour)}",
        "half_past": f"half past {hour_words(hour)}",
        "half_h": f"half {hour_words(hour)}",
        "quarter_past": f"quarter past {hour_words(hour)}",
        "quarter_to": f"quarter to {words(nxt)}",
        "past": f"{words(minute)} past {hour_words(hour)}",
        "to": f"ten to {words(nxt)}",
    }[form].strip()
    if draw(st.booleans()) and form not in ("digits",):
        text += " in the afternoon" if hour >= 12 else " in the morning"
    return value, text


TIME = Ask(slot="t", type="time")


@SETTINGS
@given(spoken_times(), FILLERS, POLITE)
def test_times_as_people_say_them(case: tuple[dt.time, str], filler: str, polite: str) -> None:
    value, text = case
    assert read_value(TIME, f"{filler} {text} {polite}") == value


@SETTINGS
@given(spoken_times(), spoken_times(), MARKERS)
def test_a_corrected_time_is_the_last_one(wrong: tuple[dt.time, str], right: tuple[dt.time, str], marker: str) -> None:
    assert read_value(TIME, f"{wrong[1]} {marker} {right[1]}") == right[0]


# -- yes / no ------------------------------------------------------------------------------------

YES = st.sampled_from(
    ["yes", "yeah", "yep", "sure", "of course", "that's right", "correct", "yes please", "absolutely", "mhm",
     "uh-huh", "I think so", "go ahead", "sounds good", "yeah that works", "that's correct"]
)  # fmt: skip
NO = st.sampled_from(
    ["no", "nope", "nah", "no thanks", "not really", "I don't think so", "no, that's wrong", "nah, I'm good",
     "not at the moment", "that's not right", "no thank you"]
)  # fmt: skip
YES_NO = Ask(slot="ok", type="yes_no")


@SETTINGS
@given(st.one_of(YES.map(lambda t: (True, t)), NO.map(lambda t: (False, t))), FILLERS, POLITE)
def test_yes_and_no(case: tuple[bool, str], filler: str, polite: str) -> None:
    value, text = case
    assert read_value(YES_NO, f"{filler} {text} {polite}") is value


@SETTINGS
@given(
    st.one_of(YES.map(lambda t: (True, t)), NO.map(lambda t: (False, t))),
    st.one_of(YES.map(lambda t: (True, t)), NO.map(lambda t: (False, t))),
    st.sampled_from(["sorry,", "wait,", "I mean", "actually", "no wait,", ". Sorry."]),
)
def test_a_corrected_yes_or_no_is_the_last_one(first: tuple[bool, str], last: tuple[bool, str], marker: str) -> None:
    assert read_value(YES_NO, f"{first[1]} {marker} {last[1]}") is last[0]


@SETTINGS
@given(st.sampled_from(["no wait", "no, hang on", "yes, no, wait", "no, sorry, wait"]))
def test_no_wait_is_never_a_plain_no(text: str) -> None:
    assert understand(YES_NO, text, today=TODAY).kind == "retracted"


# -- choices -------------------------------------------------------------------------------------

CHOICES = {
    "phone": ["mobile", "smartphone", "cell phone"],
    "laptop": ["notebook", "computer"],
    "television": ["tv", "telly"],
}
CHOICE = Ask(slot="product", type="choice", choices=CHOICES)


@st.composite
def named_choices(draw: st.DrawFn) -> tuple[str, str]:
    value = draw(st.sampled_from(sorted(CHOICES)))
    word = draw(st.sampled_from([value, *CHOICES[value]]))
    frame = draw(st.sampled_from(["{w}", "the {w}", "it's the {w}", "my {w}", "a {w}", "it's a {w}, yeah"]))
    return value, frame.format(w=word)


@SETTINGS
@given(named_choices(), FILLERS, POLITE)
def test_choices_by_any_of_their_names(case: tuple[str, str], filler: str, polite: str) -> None:
    value, text = case
    assert read_value(CHOICE, f"{filler} {text} {polite}") == value


@SETTINGS
@given(named_choices(), named_choices(), MARKERS)
def test_a_corrected_choice_is_the_last_one(wrong: tuple[str, str], right: tuple[str, str], marker: str) -> None:
    assert read_value(CHOICE, f"{wrong[1]} {marker} {right[1]}") == right[0]


# -- the engine never counts fillers as misses ---------------------------------------------------

FLOW = parse_flow(
    """
start: ask
nodes:
  ask:
    say: "Which day?"
    ask: {slot: day, type: date}
    next: done
  done:
    say: "Thanks."
    end: true
  no_match:
    say: "Bye."
    end: true
""",
    source="prop.yaml",
)


@SETTINGS
@given(
    st.lists(
        st.sampled_from(["um", "uh", "hi", "hello?", "sorry", "Hi, sorry,", "yeah so", "hang on", "okay", "hmm", "er"]),
        min_size=1,
        max_size=8,
    ),
    spoken_dates(),
)
def test_fillers_are_never_misses(fillers: list[str], case: tuple[dt.date, str]) -> None:
    engine = FlowEngine(FLOW, today=TODAY)
    engine.start()
    for filler in fillers:
        reply = engine.handle(filler)
        assert engine.misses == 0 and not reply.end_call, filler
    date, text = case
    reply = engine.handle(text)
    assert reply.slots["day"] == date and reply.end_call
