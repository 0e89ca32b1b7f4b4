"""Answers that name a window instead of a value: "after lunch", "sometime in the
afternoon", "first thing", "end of the day", "next week", "whenever suits you".

A person would not re-ask here; they would offer something concrete ("How about two
o'clock?") and let the caller agree. This module turns such phrases into a short list of
suggestions, best first, within the business hours; the engine offers the first one the
flow accepts (see ``FlowEngine``) and the caller confirms or says another.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from agent.dialogue.model import BusinessHours
from agent.dialogue.nlu import normalize

__all__ = ["Vague", "vague_date", "vague_time"]


@dataclass(frozen=True)
class Vague:
    """A window the caller named; ``suggestions`` are values to offer, best first."""

    phrase: str
    suggestions: tuple[Any, ...]


def _at(minutes: int) -> dt.time:
    minutes = max(0, min(minutes, 23 * 60 + 59))
    return dt.time(minutes // 60, minutes % 60)


def _m(value: dt.time) -> int:
    return value.hour * 60 + value.minute


_HOUR = 60

#: (pattern, how to pick suggestions from the opening hours), most specific first.
_TIME_WINDOWS: tuple[tuple[str, str], ...] = (
    (r"first thing|as early as (?:possible|you can)|earliest|early (?:in the )?morning|when you open", "first"),
    (r"late (?:in the )?morning|before lunch", "late_morning"),
    (r"after lunch|early (?:in the )?afternoon", "after_lunch"),
    (r"lunch ?time|over lunch|around lunch|at lunch|midday-ish", "lunch"),
    (r"late (?:in the )?afternoon", "late_afternoon"),
    (r"end of (?:the )?(?:day|business)|close of business|before you close|last thing|as late as", "end"),
    (r"\bevening|after work\b", "evening"),
    (r"\bafternoon\b", "afternoon"),
    (r"\bmorning\b", "morning"),
    (r"any ?time|whenever|does not matter|do not mind|no preference|you choose|up to you|whatever suits", "any"),
)


def _time_suggestions(kind: str, hours: BusinessHours) -> list[int]:
    opening, closing = _m(hours.open), _m(hours.close)
    table: dict[str, list[int]] = {
        "first": [opening, opening + 30],
        "late_morning": [11 * _HOUR, 11 * _HOUR + 30, 10 * _HOUR + 30],
        "lunch": [12 * _HOUR + 30, 12 * _HOUR, 13 * _HOUR],
        "after_lunch": [14 * _HOUR, 13 * _HOUR + 30, 14 * _HOUR + 30],
        "afternoon": [14 * _HOUR, 15 * _HOUR, 13 * _HOUR, 16 * _HOUR],
        "late_afternoon": [16 * _HOUR, 15 * _HOUR + 30, 16 * _HOUR + 30],
        "end": [closing - _HOUR, closing - 30, closing - 90],
        "evening": [max(closing - _HOUR, 17 * _HOUR), 18 * _HOUR, closing - 30],
        "morning": [10 * _HOUR, opening, 11 * _HOUR],
        "any": [10 * _HOUR, 14 * _HOUR, opening],
    }
    return table[kind]


def vague_time(text: str, hours: BusinessHours | None = None) -> Vague | None:
    """Suggestions for a time window ("after lunch" -> 14:00 first), or ``None``."""
    plain = normalize(text)
    hours = hours or BusinessHours()
    for pattern, kind in _TIME_WINDOWS:
        match = re.search(pattern, plain)
        if match:
            seen: list[dt.time] = []
            for minutes in _time_suggestions(kind, hours):
                value = _at(minutes)
                if value not in seen:
                    seen.append(value)
            return Vague(match.group(), tuple(seen))
    return None


_DATE_WINDOWS: tuple[tuple[str, str], ...] = (
    (r"early next week|beginning of next week|start of next week", "next_week"),
    (r"next week|the week after", "next_week"),
    (r"later this week|this week|later in the week", "this_week"),
    (r"next month|early next month", "next_month"),
    (r"as soon as (?:possible|you can)|asap|earliest|soonest|first (?:available|free)", "soon"),
    (r"any ?day|any ?time|whenever|does not matter|do not mind|no preference|you choose|up to you", "soon"),
)


def _weekdays(start: dt.date, count: int, *, until: dt.date | None = None) -> list[dt.date]:
    out = []
    day = start
    while len(out) < count and (until is None or day <= until):
        if day.weekday() < 5:
            out.append(day)
        day += dt.timedelta(days=1)
    return out


def vague_date(text: str, today: dt.date) -> Vague | None:
    """Suggestions for a date window ("next week" -> its Monday first), working days only, or ``None``."""
    plain = normalize(text)
    for pattern, kind in _DATE_WINDOWS:
        match = re.search(pattern, plain)
        if not match:
            continue
        if kind == "next_week":
            monday = today + dt.timedelta(days=7 - today.weekday())
            days = _weekdays(monday, 5)
        elif kind == "this_week":
            friday = today + dt.timedelta(days=4 - today.weekday())
            days = _weekdays(today + dt.timedelta(days=1), 4, until=friday) or _weekdays(today, 1)
        elif kind == "next_month":
            first = dt.date(today.year + (today.month == 12), today.month % 12 + 1, 1)
            days = _weekdays(first, 5)
        else:
            days = _weekdays(today + dt.timedelta(days=1), 5)
        return Vague(match.group(), tuple(days))
    return None
