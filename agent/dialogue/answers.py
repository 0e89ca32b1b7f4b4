"""One caller turn read as the answer to an ``ask``: self-corrections, partial digit
groups and vague windows included.

The plain parsers (:mod:`agent.dialogue.slots`) read a value from clean text. Callers give
more than that: "Tuesday, no, Wednesday" (take the last), "Tuesday doesn't work, how about
Thursday" (not the negated one), "four eight two" when the number has five digits (ask for
the rest), "after lunch" (offer a time). :func:`understand` says which of these a turn is,
so the engine can store, ask for the rest, suggest, or wait.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from agent.dialogue.digits import join_digits, read_digits
from agent.dialogue.lexicon import RETRACTIONS
from agent.dialogue.model import Ask, BusinessHours
from agent.dialogue.slots import (
    has_time_cue,
    parse_choice,
    parse_date,
    parse_number,
    parse_text,
    parse_time,
    parse_yes_no,
)
from agent.dialogue.utterance import Said, Segment, read
from agent.dialogue.when import vague_date, vague_time

__all__ = ["Answer", "AnswerKind", "parse_value", "understand"]

#: ``value``: a usable answer. ``partial``: some digits, more to come. ``too_long``: more
#: digits than the number has. ``vague``: a window to offer a value from. ``retracted``: the
#: caller took the value back and is about to give another. ``none``: not an answer.
AnswerKind = Literal["value", "partial", "too_long", "vague", "retracted", "none"]

_DATE_WORDS = re.compile(
    r"\b(?:today|tomorrow|tonight|yesterday|week|weeks|month|fortnight|monday|tuesday|wednesday|thursday|friday|"
    r"saturday|sunday|january|february|march|april|may|june|july|august|september|october|november|december|"
    r"jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec|the \d{1,2}|\d{1,2}(?:st|nd|rd|th)|first|second|third|"
    r"fourth|fifth|sixth|seventh|eighth|ninth|tenth|\d{4}-\d{2}-\d{2})\b"
)


@dataclass(frozen=True)
class Answer:
    kind: AnswerKind
    value: Any = None
    #: Digits heard so far (``partial`` and ``too_long``), to join with the next group.
    digits: str = ""
    #: Values to offer for a ``vague`` answer, best first.
    suggestions: tuple[Any, ...] = field(default_factory=tuple)
    #: The turn replaced a value the caller had just said ("Tuesday, no, Wednesday", "actually 3").
    corrected: bool = False


#: Words of correction markers that really replace what came before ("sorry" alone may be politeness).
_REPLACING = frozenset(w for m in RETRACTIONS for w in m.split()) - {"i", "it", "that", "to", "us", "oh", "or"}


def _strong_marker(marker: str) -> bool:
    return any(word in _REPLACING for word in marker.split())


def parse_value(
    ask: Ask, text: str, *, today: dt.date, hours: BusinessHours | None = None, strict: bool = False
) -> Any:
    """One value of ``ask``'s type from a stretch of text, or ``None``.

    ``strict`` is for values found in an answer to another question ("tomorrow at 3" at a
    date question also names the time): only clear cues count there, so "December 5" is
    never taken as five o'clock.
    """
    if ask.type == "yes_no":
        return None if strict else parse_yes_no(text)
    if ask.type in ("digits",) or (ask.type == "number" and ask.length is not None):
        digits = read_digits(text, ask.length.exact if ask.length else None).text
        if not digits or (strict and len(digits) < 3):
            return None
        return digits
    if ask.type == "number":
        if strict:
            return None
        value = parse_number(text)
        if value is not None and (
            (ask.min is not None and value < ask.min) or (ask.max is not None and value > ask.max)
        ):
            return None
        return value
    if ask.type == "date":
        if strict and not _DATE_WORDS.search(text.lower()):
            return None
        return parse_date(text, today)
    if ask.type == "time":
        if strict and not has_time_cue(text):
            return None
        return parse_time(text, hours)
    if ask.type == "choice":
        return parse_choice(text, ask.choices)
    return None if strict else parse_text(text)


def _finish_digits(ask: Ask, digits: str, said: Said, partial: str) -> Answer:
    length = ask.length
    restart = said.corrected or len(said.segments) > 1
    joined = digits if restart or not partial else join_digits(partial, digits, length.max if length else None)
    if length is None or length.fits(len(joined)):
        value: Any = joined
        if ask.type == "number":
            value = int(joined)
            if (ask.min is not None and value < ask.min) or (ask.max is not None and value > ask.max):
                return Answer("none")
        return Answer("value", value=value, digits=joined, corrected=said.corrected)
    if len(joined) < length.min:
        return Answer("partial", digits=joined, corrected=said.corrected)
    return Answer("too_long", digits=joined, corrected=said.corrected)


def _corrected_tail(ask: Ask, segments: list[Segment], *, today: dt.date, hours: BusinessHours | None) -> Any:
    """ "Nineteen eighty three, no, eighty four" / "4 8 2 9 1, no, 9 2": a correction that only
    says the end of a number replaces the end of the number said before it."""
    if ask.type not in ("number", "digits") or len(segments) < 2:
        return None
    digit_like = ask.type == "digits" or ask.length is not None
    if digit_like:
        expected = ask.length.min if ask.length is not None else None
        last = read_digits(segments[-1].usable, None).text
        before = read_digits(segments[-2].usable, expected).text
        if not last or not before or len(last) >= len(before) or (expected and len(before) < expected):
            return None
        return before[: len(before) - len(last)] + last
    last_value = parse_number(segments[-1].usable)
    before_value = parse_number(segments[-2].usable)
    if (
        last_value is None
        or before_value is None
        or not float(last_value).is_integer()
        or not float(before_value).is_integer()
        or parse_value(ask, segments[-1].usable, today=today, hours=hours) is not None
    ):
        return None  # the correction is a whole number on its own ("two, no, three")
    last_digits, before_digits = str(int(last_value)), str(int(before_value))
    if len(last_digits) >= len(before_digits):
        return None
    value = int(before_digits[: len(before_digits) - len(last_digits)] + last_digits)
    if (ask.min is not None and value < ask.min) or (ask.max is not None and value > ask.max):
        return None
    return value


def understand(
    ask: Ask,
    text: str,
    *,
    today: dt.date,
    hours: BusinessHours | None = None,
    partial: str = "",
    strict: bool = False,
) -> Answer:
    """Read ``text`` as the answer to ``ask`` (see :data:`AnswerKind`).

    ``partial`` holds digits from earlier turns of the same question; a caller who starts
    over or corrects themselves replaces them.
    """
    if ask.type == "text":
        value = None if strict else parse_text(text)
        return Answer("value", value=value) if value is not None else Answer("none")
    said = read(text, yes_no=ask.type == "yes_no")
    segments = list(said.segments)
    tail = _corrected_tail(ask, segments, today=today, hours=hours)
    if tail is not None and not said.retracted:
        if ask.type == "digits" or ask.length is not None:
            return _finish_digits(ask, tail, said, "")
        return Answer("value", value=tail, corrected=True)
    for index in range(len(segments) - 1, -1, -1):
        segment = segments[index]
        source = segment.text if ask.type == "yes_no" else segment.usable
        if not source:
            continue
        value = parse_value(ask, source, today=today, hours=hours, strict=strict)
        if value is not None:
            if ask.type == "digits" or (ask.type == "number" and ask.length is not None):
                if said.retracted and index == len(segments) - 1:
                    return Answer("retracted", digits=partial)
                return _finish_digits(ask, str(value), said, partial)
            if said.retracted and index == len(segments) - 1:
                return Answer("retracted")
            return Answer("value", value=value, corrected=said.corrected)
        if index == len(segments) - 1:
            vague = vague_time(source, hours) if ask.type == "time" else None
            if ask.type == "date":
                vague = vague_date(source, today)
            if vague is not None:
                return Answer("vague", suggestions=vague.suggestions, corrected=said.corrected)
        if index == len(segments) - 1 and _strong_marker(segment.marker):
            break  # the correction itself is not understood: never fall back to what it replaced
    if said.retracted:
        return Answer("retracted", digits=partial)
    return Answer("none")
