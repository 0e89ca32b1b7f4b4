"""Typed slot values from spoken answers, and back to words for the bot's lines.

Transcripts spell numbers either way ("25", "twenty five", "twenty-five"), say dates the way
people talk ("next tuesday", "the fifth of december", "tomorrow") and times in half a dozen
styles ("half past three", "three thirty pm", "fifteen hundred"). Parsing them here, without
a model, is what lets a flow run fully offline and behave identically in tests and calls.

Every parser returns ``None`` when it is not confident, so the engine re-prompts instead of
storing a guess. Relative dates are resolved against an injected ``today``: the module never
reads the clock.

Conventions (documented for authors in prompts/README.md):

- "friday" / "this friday": the next Friday after today ("Monday" said on a Monday is next
  week's); "next friday": the Friday of next week (weeks start on Monday).
- a date without a year is the next such date from today on.
- a time without "am"/"pm"/"morning" is the one inside the business hours (default 9 to 5),
  else the one closest to them: "at three" is 15:00, "at eight" 08:00, "half three" 15:30.
- "the 15" (a bare day number after "the", or a lone number) is that day of the month.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agent.dialogue.model import DEFAULT_CLOSE, DEFAULT_OPEN, Ask, BusinessHours, Intent
from agent.dialogue.nlu import match_intent, normalize

__all__ = [
    "number_runs",
    "parse_choice",
    "parse_date",
    "parse_number",
    "parse_slot",
    "parse_text",
    "parse_time",
    "parse_yes_no",
    "speak",
]


def _indexed(words: str, start: int = 0, step: int = 1) -> dict[str, int]:
    return {word: start + i * step for i, word in enumerate(words.split())}


_UNITS = _indexed("zero one two three four five six seven eight nine")
_TEENS = _indexed("ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen", 10)
_TENS = {**_indexed("twenty thirty forty fifty sixty seventy eighty ninety", 20, 10), "fourty": 40}
_SCALES = {"hundred": 100, "thousand": 1000, "million": 1_000_000}
_ORDINAL_UNITS = _indexed("first second third fourth fifth sixth seventh eighth ninth", 1)
_ORDINAL_TEENS = _indexed(
    "tenth eleventh twelfth thirteenth fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth", 10
)
_ORDINAL_TENS = {"twentieth": 20, "thirtieth": 30}
_MONTHS = {
    **_indexed("january february march april may june july august september october november december", 1),
    **_indexed("jan feb mar apr", 1),
    **{"jun": 6, "jul": 7, "aug": 8, "sep": 9, "sept": 9, "oct": 10, "nov": 11, "dec": 12},
}
_WEEKDAYS = {
    **_indexed("monday tuesday wednesday thursday friday saturday sunday"),
    **_indexed("mondays tuesdays wednesdays thursdays fridays saturdays sundays"),
    # Whisper's hearing of a weekday said alone on a phone line ("Could I do thirsty instead?")
    "thirsty": 3,
    "thirstday": 3,
    "wensday": 2,
}
_DIGIT_ORDINAL_RE = re.compile(r"(\d+)(st|nd|rd|th)")


# -- tokens and number runs ------------------------------------------------------------------


def _words(text: str) -> list[str]:
    """Lowercase word/number tokens; keeps "3:30" and "25.5" whole, joins "p m" into "pm"."""
    text = text.lower().replace("\u2019", "'")
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)  # 2,500 -> 2500
    text = re.sub(r"\b([ap])\.?\s?m\b\.?", r"\1m", text)  # a.m. / a m -> am
    text = re.sub(r"\bo'?\s?clock\b", " oclock ", text)
    text = text.replace("-", " ")
    return re.findall(r"\d+(?::\d+|\.\d+)?(?:st|nd|rd|th)?|[a-z]+", text)


@dataclass
class _Chunk:
    """One spoken number ("twenty five", "fifteen hundred", "5th") within a run of them."""

    start: int  # token index
    end: int  # token index after the last word
    value: float
    ordinal: bool = False
    digits: str = ""  # how the number is written, for "nineteen eighty four" -> 1984


def _number_runs(words: Sequence[str]) -> list[list[_Chunk]]:
    """Group number words into runs of chunks.

    A new chunk starts where English would not combine two number words ("three thirty" is
    3 then 30; "twenty five" is one 25), so callers can read a run either as one number
    (digits spoken in groups: "four five six", "nineteen eighty four") or as parts (a time).
    """
    runs: list[list[_Chunk]] = []
    run: list[_Chunk] = []
    total = current = 0
    last = ""  # kind of the previous number word
    start = 0
    ordinal = False

    def close(end: int) -> None:
        nonlocal total, current, last, ordinal
        if last:
            value = total + current
            run.append(_Chunk(start, end, value, ordinal, str(value)))
        total = current = 0
        last = ""
        ordinal = False

    def end_run(end: int) -> None:
        nonlocal run
        close(end)
        if run:
            runs.append(run)
        run = []

    i = 0
    while i < len(words):
        word = words[i]
        nxt = words[i + 1] if i + 1 < len(words) else ""
        kind, value, is_ord = "", 0, False
        if word in _UNITS:
            kind, value = "unit", _UNITS[word]
        elif word in ("oh", "o") and last and nxt in (*_UNITS, *_TEENS):
            kind, value = "unit", 0
        elif word in _TEENS:
            kind, value = "teen", _TEENS[word]
        elif word in _TENS:
            kind, value = "tens", _TENS[word]
        elif word in _ORDINAL_UNITS:
            kind, value, is_ord = "unit", _ORDINAL_UNITS[word], True
        elif word in _ORDINAL_TEENS:
            kind, value, is_ord = "teen", _ORDINAL_TEENS[word], True
        elif word in _ORDINAL_TENS:
            kind, value, is_ord = "tens", _ORDINAL_TENS[word], True
        elif word in _SCALES and (last or word == "hundred"):
            kind = "scale"
        elif word == "a" and nxt in _SCALES:
            kind, value = "unit", 1
        elif word == "and" and last == "scale" and (nxt in _UNITS or nxt in _TEENS or nxt in _TENS):
            i += 1
            continue
        elif re.fullmatch(r"\d+(\.\d+)?", word):
            close(i)
            start = i
            number = float(word) if "." in word else int(word)
            run.append(_Chunk(i, i + 1, number, False, word))
            i += 1
            continue
        elif (m := _DIGIT_ORDINAL_RE.fullmatch(word)) is not None:
            close(i)
            run.append(_Chunk(i, i + 1, int(m.group(1)), True, m.group(1)))
            i += 1
            continue

        if not kind:
            end_run(i)
            i += 1
            continue
        if kind == "scale":
            scale = _SCALES[word]
            if scale == 100:
                current = (current or 1) * 100
            else:
                total += (current or 1) * scale
                current = 0
            last = "scale"
            i += 1
            continue
        combines = (kind == "unit" and last in ("tens",) and current % 10 == 0) or (
            last == "scale" and kind in ("unit", "teen", "tens")
        )
        if last and not combines:
            close(i)
        if not last:
            start = i
        current += value
        last = kind
        if is_ord:  # "the third one" is 3, not 31: an ordinal ends the number
            ordinal = True
            end_run(i + 1)
        i += 1
    end_run(len(words))
    return runs


def number_runs(words: Sequence[str]) -> list[list[_Chunk]]:
    """Runs of spoken numbers in ``words`` (public for :mod:`agent.dialogue.digits`)."""
    return _number_runs(words)


def _run_as_number(run: Sequence[_Chunk]) -> float | None:
    if len(run) == 1:
        return run[0].value
    if any(isinstance(c.value, float) and not float(c.value).is_integer() for c in run):
        return None
    return int("".join(str(int(c.value)) for c in run))


# -- yes / no ------------------------------------------------------------------------------------

_UNSURE = ("not sure", "do not know", "no idea", "maybe", "perhaps", "i am unsure", "not certain")
#: Said alone these do not answer a yes/no question ("I'm good" may be a yes or a "no thanks"),
#: so they are set aside: "nah, I'm good" is the "nah".
_NEUTRAL = (
    *("i am good", "i am fine", "i am ok", "i am okay", "i am alright", "i am all right", "that is it"),
    *("all good", "i am here", "i am listening", "right now", "right away", "right here", "right there"),
)
#: "I will." answers "Will you...?", but "I can pay on the 10th" is not a yes: these count only
#: at the end of the turn.
_SHORT_YES = ("i do", "i would", "i will", "i can", "i am", "i have", "i did", "we do", "we can", "we will")
_YES_PHRASES = (
    *("no problem", "no worries", "not a problem", "of course", "go ahead", "sounds good", "that works"),
    *("that is right", "that is correct", "please do"),
    *("uh huh", "mm hmm", "mmhmm", "mhm", "why not", "you bet", "all right", "yes please"),
    *("that is me", "it is me", "this is me", "speaking"),
    *("i think so", "i guess so", "i suppose so", "go for it", "do it", "book it", "works for me", "that would be"),
    *("sounds great", "sounds perfect", "that is fine", "that is great", "that is perfect", "spot on"),
)
_NO_PHRASES = (
    *("not really", "i do not", "do not", "not now", "i would not", "i can not", "can not", "not right"),
    *("not correct", "rather not", "no thanks", "no thank you", "i will not", "not at all", "i am not"),
    *("not okay", "not ok", "not yet", "uh uh", "nothing else", "that is all", "that will be all", "all set"),
    *("that is everything", "no need", "not necessary", "not needed", "not at the moment", "not today"),
    *("i am good thanks", "i am good thank you", "i am fine thanks", "i am fine thank you", "i am ok thanks"),
    *("absolutely not", "definitely not", "certainly not", "of course not", "no way", "not quite"),
)
_HESITATION_WORDS = frozenset("um uh er erm hmm well oh so ah".split())
_YES_WORDS = frozenset(
    "yes yeah yea yep yup ya yah sure ok okay correct right absolutely definitely certainly affirmative "
    "alright fine indeed exactly perfect yess aye great lovely brilliant excellent wonderful awesome cool good".split()
)
_NO_WORDS = frozenset("no nope nah negative incorrect wrong never nay".split())


def _mask(plain: str, phrases: Sequence[str]) -> tuple[str, list[int]]:
    """Blank out every phrase (longest first) so its words are not read again; return where."""
    found: list[int] = []
    for phrase in sorted(phrases, key=len, reverse=True):
        needle = f" {phrase} "
        while (at := plain.find(needle)) >= 0:
            found.append(at)
            plain = plain[:at] + " " + "#" * (len(needle) - 2) + " " + plain[at + len(needle) :]
    return plain, found


def parse_yes_no(text: str) -> bool | None:
    """``True``/``False`` for a clear yes or no ("yeah", "sure", "nope", "that's not right",
    "nah, I'm good"), ``None`` when unsure ("I'm not sure") or contradictory ("yes... no")."""
    plain = f" {normalize(text)} "
    for phrase in _UNSURE:
        if f" {phrase} " in plain:
            return None
    cues: list[tuple[int, bool]] = []
    plain, murmured = _mask(plain, ("uh huh", "mm hmm"))  # before "uh uh" (a no) can take "uh, uh-huh"
    cues.extend((at, True) for at in murmured)
    plain, no_at = _mask(plain, _NO_PHRASES)
    cues.extend((at, False) for at in no_at)
    plain, _ = _mask(plain, _NEUTRAL)
    plain, yes_at = _mask(plain, _YES_PHRASES)
    cues.extend((at, True) for at in yes_at)
    ending = re.sub(r"(?: (?:please|thanks|thank you|yes|yeah|sure|too|of course|#+))+ $", " ", plain)
    for phrase in _SHORT_YES:
        if ending.endswith(f" {phrase} "):
            cues.append((len(ending) - len(phrase) - 1, True))
    words = [w for w in re.findall(r"[a-z]+", plain) if w not in _HESITATION_WORDS]
    if words and (words[0] in _YES_WORDS or words[0] in _NO_WORDS):
        # A bare answer word said first decides ("nah, I'll send a message" is a no), unless
        # another bare word contradicts it ("yeah, no").
        first = words[0] in _YES_WORDS
        opposite = _NO_WORDS if first else _YES_WORDS
        if not any(w in opposite for w in words[1:]):
            return first
    for match in re.finditer(r"[a-z]+", plain):
        word = match.group()
        if word in _YES_WORDS:
            cues.append((match.start(), True))
        elif word in _NO_WORDS:
            cues.append((match.start(), False))
    polarities = {polarity for _, polarity in cues}
    return polarities.pop() if len(polarities) == 1 else None


# -- numbers ------------------------------------------------------------------------------------


def parse_number(text: str) -> int | float | None:
    """The first number in the answer: "25", "2,500", "twenty five", "one hundred and twenty",
    "fifteen hundred", "three point five", "four five six" (digits one by one)."""
    words = _words(text)
    negative = False
    for run in _number_runs(words):
        first = run[0].start
        negative = first > 0 and words[first - 1] in ("minus", "negative")
        point = run[-1].end
        value = _run_as_number(run)
        if value is None:
            continue
        if point < len(words) and words[point] == "point":
            decimals = [r for r in _number_runs(words[point + 1 :]) if r and r[0].start == 0]
            if decimals:
                digits = "".join(str(int(c.value)) for c in decimals[0])
                value = float(f"{int(value)}.{digits}")
        if isinstance(value, float) and value.is_integer() and "." not in "".join(c.digits for c in run):
            value = int(value)
        return -value if negative else value
    return None


# -- dates ---------------------------------------------------------------------------------------


def _next_weekday(today: dt.date, weekday: int, modifier: str) -> dt.date:
    """ "next friday": the Friday of next week; "friday" or "this friday": the coming one after
    today (said on a Monday, "Monday" means next week's: today would be "today")."""
    if modifier == "next":
        monday_next_week = today + dt.timedelta(days=7 - today.weekday())
        return monday_next_week + dt.timedelta(days=weekday)
    return today + dt.timedelta(days=(weekday - today.weekday()) % 7 or 7)


def _safe_date(year: int, month: int, day: int) -> dt.date | None:
    try:
        return dt.date(year, month, day)
    except ValueError:
        return None


def _year_from(run: Sequence[_Chunk]) -> int | None:
    value = _run_as_number(run)
    if value is not None and 1900 <= value <= 2200 and float(value).is_integer():
        return int(value)
    return None


def _month_day(words: list[str], runs: list[list[_Chunk]], today: dt.date) -> tuple[bool, dt.date | None]:
    """``(named, date)``: whether a month with a day was said, and the date if it exists
    ("february 30th" is named but no date, and must not fall back to "the 30th")."""
    for index, word in enumerate(words):
        month = _MONTHS.get(word)
        if month is None or (word == "may" and not _near_number(words, index)):
            continue
        day: int | None = None
        year: int | None = None
        for run in runs:
            # "the fifth of december", "5th december", "5 december"
            before = run[-1].end in (index, index - 1) and (run[-1].end == index or words[index - 1] == "of")
            # "december fifth", "december the 5th", "december 5"
            after = run[0].start in (index + 1, index + 2) and (run[0].start == index + 1 or words[index + 1] == "the")
            if before and 1 <= run[-1].value <= 31:
                day = int(run[-1].value)
                following = [r for r in runs if r[0].start in (index + 1, index + 2)]
                if following:
                    year = _year_from(following[0])
                break
            if after and 1 <= run[0].value <= 31:
                day = int(run[0].value)
                if len(run) > 1:
                    year = _year_from(run[1:])
                else:
                    later = [r for r in runs if r[0].start in (run[0].end, run[0].end + 1)]
                    year = _year_from(later[0]) if later else None
                break
        if day is None:
            continue
        if year is not None:
            return True, _safe_date(year, month, day)
        candidate = _safe_date(today.year, month, day)
        if candidate is not None and candidate < today:
            candidate = _safe_date(today.year + 1, month, day)
        return True, candidate
    return False, None


def _near_number(words: list[str], index: int) -> bool:
    """ "may" is a month only next to a day number ("may fifth", not "may I")."""

    def numeric(word: str) -> bool:
        return (
            word in _ORDINAL_UNITS
            or word in _ORDINAL_TEENS
            or word in _ORDINAL_TENS
            or word in _TENS
            or bool(re.fullmatch(r"\d+(st|nd|rd|th)?", word))
        )

    neighbours = words[max(0, index - 2) : index] + words[index + 1 : index + 3]
    return any(numeric(w) for w in neighbours)


def parse_date(text: str, today: dt.date) -> dt.date | None:
    """A calendar date from a spoken answer, relative to ``today``."""
    iso = re.search(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b", text)
    if iso:
        return _safe_date(int(iso.group(1)), int(iso.group(2)), int(iso.group(3)))
    numeric = _numeric_date(text, today)
    if numeric is not None:
        return numeric
    words = _words(text)
    joined = " ".join(words)
    if re.search(r"\bday after tomorrow\b", joined):
        return today + dt.timedelta(days=2)
    runs = _number_runs(words)
    named, explicit = _month_day(words, runs, today)
    if named:
        return explicit
    relative = re.search(r"\bin (\w+(?: \w+)?) (day|days|week|weeks)\b", joined) or re.search(
        r"\b(\w+(?: \w+)?) (day|days|week|weeks) from (?:now|today)\b", joined
    )
    if relative:
        amount_words = relative.group(1).split()
        amount = 1 if amount_words[-1] in ("a", "one") else parse_number(" ".join(amount_words))
        if amount is not None and float(amount).is_integer() and amount > 0:
            unit = 7 if relative.group(2).startswith("week") else 1
            return today + dt.timedelta(days=int(amount) * unit)
    if "fortnight" in words:
        return today + dt.timedelta(days=14)
    end_of = re.search(r"\b(?:end|close) of (?:the |this )?(next )?(week|month)\b", joined)
    if end_of:
        return _end_of(today, end_of.group(2), bool(end_of.group(1)))
    if "tomorrow" in words:
        return today + dt.timedelta(days=1)
    if "today" in words or "tonight" in words:
        return today
    if "yesterday" in words:
        return today - dt.timedelta(days=1)
    month_shift = 1 if re.search(r"\bof next month\b|\bnext month on the\b", joined) else 0
    by_number = _numbered_day(words, runs, today, month_shift)
    next_week = bool(re.search(r"\b(?:next week|week after next|following week)\b", joined))
    for index, word in enumerate(words):
        if word in _WEEKDAYS:
            if by_number is not None and by_number.weekday() == _WEEKDAYS[word]:
                return by_number  # "Friday the 13th"
            modifier = "next" if next_week else (words[index - 1] if index > 0 else "")
            day = _next_weekday(today, _WEEKDAYS[word], modifier)
            following = words[index + 1] if index + 1 < len(words) else ""
            # "Wednesday week" / "a week on Wednesday": a week on from the coming Wednesday.
            a_week_on = modifier == "on" and words[max(index - 3, 0) : index - 1] == ["a", "week"]
            week_on = following == "week" or a_week_on
            return day + dt.timedelta(days=7) if week_on and modifier != "next" else day
    return by_number


def _numeric_date(text: str, today: dt.date) -> dt.date | None:
    """ "12/10", "12.10.", "15/12/2026": day first, as most of the world writes it, unless only the other
    order is a date ("12/15"). A date without a year is the next one from ``today``."""
    match = re.search(r"(?<![\d/.])(\d{1,2})/(\d{1,2})(?:/(\d{2}|\d{4}))?(?![\d/])", text) or re.search(
        r"(?<![\d.])(\d{1,2})\.(\d{1,2})(?:\.(\d{4})|\.)(?!\d)",
        text,  # "12.10." or "12.10.2026"; "3.30" is a time
    )
    if match is None:
        return None
    first, second = int(match.group(1)), int(match.group(2))
    day, month = (second, first) if first <= 12 < second else (first, second)
    if match.group(3) is not None:
        year = int(match.group(3))
        return _safe_date(year + 2000 if year < 100 else year, month, day)
    this_year = _safe_date(today.year, month, day)
    if this_year is None or this_year >= today:
        return this_year
    return _safe_date(today.year + 1, month, day)


def _numbered_day(words: list[str], runs: list[list[_Chunk]], today: dt.date, month_shift: int) -> dt.date | None:
    """ "the 15th", "the 15", "on the first", or a lone "15": that day of the month."""
    for run in runs:
        chunk = run[0]
        if len(run) != 1 or not float(chunk.value).is_integer() or not 1 <= chunk.value <= 31:
            continue
        before = words[chunk.start - 1] if chunk.start > 0 else ""
        after = words[chunk.end] if chunk.end < len(words) else ""
        if after in _NOT_A_DAY_AFTER:
            continue
        lone = all(w in _DAY_LEAD_INS for i, w in enumerate(words) if not chunk.start <= i < chunk.end)
        written = words[chunk.start].isdigit()  # "the 15", not "the one after"
        if (chunk.ordinal and before in ("the", "on", "")) or (written and before == "the") or lone:
            return _day_of_month(today, int(chunk.value), month_shift)
    return None


#: A number followed by one of these is not a day of the month ("first thing", "3 people").
_NOT_A_DAY_AFTER = frozenset(
    "thing time available slot opening one ones week weeks day days people person hour hours minute minutes "
    "month months year years oclock am pm".split()
)
#: Words that may surround a lone day number ("on the 15th please").
_DAY_LEAD_INS = frozenset("on the um uh er please its it is that would be say maybe of".split())


def _day_of_month(today: dt.date, day: int, month_shift: int = 0) -> dt.date | None:
    """The next date with this day number (this month if still to come, else next month)."""
    month = (today.month - 1 + month_shift) % 12 + 1
    year = today.year + (today.month - 1 + month_shift) // 12
    candidate = _safe_date(year, month, day)
    if month_shift == 0 and (candidate is None or candidate < today):
        month = today.month % 12 + 1
        candidate = _safe_date(today.year + (month == 1), month, day)
    return candidate


def _end_of(today: dt.date, unit: str, following: bool) -> dt.date:
    """ "end of the week": Friday; "end of the month": its last day (of the next one with "next")."""
    if unit == "week":
        friday = today + dt.timedelta(days=(4 - today.weekday()) % 7)
        return friday + dt.timedelta(days=7) if following else friday
    month = today.month % 12 + 1 if following else today.month
    year = today.year + (1 if following and month == 1 else 0)
    first_of_next = dt.date(year + (month == 12), month % 12 + 1, 1)
    return first_of_next - dt.timedelta(days=1)


# -- times ---------------------------------------------------------------------------------------

_AM_WORDS = ("am", "morning")
_PM_WORDS = ("pm", "afternoon", "evening", "night", "tonight")


def _meridiem(words: Sequence[str]) -> str:
    if any(w in _PM_WORDS for w in words):
        return "pm"
    # "I am free at 3": the "am" of "I am" is no morning.
    if any(w in _AM_WORDS and not (w == "am" and i > 0 and words[i - 1] == "i") for i, w in enumerate(words)):
        return "am"
    return ""


def _minutes(value: dt.time) -> int:
    return value.hour * 60 + value.minute


def _business_hour(hour: int, minute: int, hours: BusinessHours | None) -> int:
    """Morning or afternoon for a bare "at three": the reading inside the opening hours, else
    the one nearer to them (morning on a tie)."""
    if hour == 12:
        return 12
    opening = _minutes(hours.open) if hours else _minutes(DEFAULT_OPEN)
    closing = _minutes(hours.close) if hours else _minutes(DEFAULT_CLOSE)

    def distance(h: int) -> int:
        t = h * 60 + minute
        return 0 if opening <= t <= closing else min(abs(t - opening), abs(t - closing))

    morning, afternoon = hour, hour + 12
    return morning if distance(morning) <= distance(afternoon) else afternoon


def _clock(hour: int, minute: int, meridiem: str, hours: BusinessHours | None = None) -> dt.time | None:
    if not (0 <= minute < 60 and 0 <= hour < 24):
        return None
    if meridiem == "pm" and 1 <= hour < 12:
        hour += 12
    elif meridiem == "am" and hour == 12:
        hour = 0
    elif not meridiem and 1 <= hour <= 12:
        hour = _business_hour(hour, minute, hours)  # "at three" on a business line means the afternoon
    return dt.time(hour, minute)


_TIME_CUE_RE = re.compile(
    r"\b(?:\d{1,2}:\d{2}|am|pm|oclock|noon|midday|midnight|hundred hours|(?:half|quarter|minutes?) (?:past|to|after)"
    r"|half (?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|\d{1,2})\b"
    r"|(?:at|around|about|by|from|after|before|until) (?:\d{1,2}|one|two|three|four|five|six|seven|eight|nine|ten"
    r"|eleven|twelve)\b|(?:past|to) (?:\d{1,2}|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve)\b"
    r"|in the (?:morning|afternoon|evening))"
)


_HOUR_WORDS = r"(?:\d{1,2}|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve)"
# Whisper's spellings of a spoken time (tiny.en, measured): "have three" / "halve three" for "half three",
# "half pass two" / "have passed four" for "half past".
_HALF_HEARD_RE = re.compile(rf"\b(?:have|halve)\b(?=\s+(?:(?:pass|passed|past)\s+)?{_HOUR_WORDS}\b)")
_PAST_HEARD_RE = re.compile(rf"\b(half|quarter)\s+(?:pass|passed)\b(?=\s+{_HOUR_WORDS}\b)")
# ... and "free 30" / "free o'clock" for "three thirty" / "three o'clock".
_THREE_HEARD_RE = re.compile(
    r"\bfree\b(?=\s+(?:\d{1,2}\b|o ?clock|oclock|thirty|fifteen|forty|fifty|twenty|ten|am|pm))"
)


# ... "4 it clock" / "for a clock" for "four o'clock" ("o'" heard as a short word), and "order to five" for
# "quarter to five".
_OCLOCK_HEARD_RE = re.compile(r"\b(?:a|of|it|the|o) clock\b")
_FOUR_HEARD_RE = re.compile(r"\bfor\b(?= oclock\b)")
_QUARTER_HEARD_RE = re.compile(rf"\b(?:order|corner|quarters?)\s+(to|past)\b(?=\s+{_HOUR_WORDS}\b)")


def _time_words(text: str) -> list[str]:
    """The words of ``text`` with Whisper's mishearings of "half", "past", "o'clock" and "quarter" put right."""
    joined = " ".join(_words(text))
    joined = _OCLOCK_HEARD_RE.sub("oclock", joined)
    joined = _FOUR_HEARD_RE.sub("four", joined)
    joined = _QUARTER_HEARD_RE.sub(r"quarter \1", joined)
    joined = _HALF_HEARD_RE.sub("half", joined)
    joined = _PAST_HEARD_RE.sub(r"\1 past", joined)
    joined = _THREE_HEARD_RE.sub("three", joined)
    return joined.split()


def has_time_cue(text: str) -> bool:
    """Whether ``text`` clearly names a clock time ("at 3", "half past two", "10 am"), as
    opposed to a number that may be a day ("December 5"): a time is only taken from an
    answer to another question when it does."""
    return bool(_TIME_CUE_RE.search(" ".join(_time_words(text))))


def parse_time(text: str, hours: BusinessHours | None = None) -> dt.time | None:
    """A clock time: "half past three", "quarter to four", "three thirty pm", "3:30",
    "15:30", "fifteen hundred", "ten in the morning", "noon", "half three" (3:30).

    Without "am"/"pm", ``hours`` (the business's opening hours, default 9 to 5) decide."""
    words = _time_words(text)
    meridiem = _meridiem(words)
    if "noon" in words or "midday" in words:
        return dt.time(12, 0)
    if "midnight" in words:
        return dt.time(0, 0)
    for word in words:
        clock = re.fullmatch(r"(\d{1,2})[:.](\d{2})", word)  # "3:30", and "3.30" as Whisper writes it
        if clock:
            return _clock(int(clock.group(1)), int(clock.group(2)), meridiem, hours)
    runs = [run for run in _number_runs(words) if not run[0].ordinal]
    joined = " ".join(words)
    for relative in re.finditer(
        r"\b(half|quarter|[a-z0-9 ]+?) (?:minutes? )?(past|after|to|before) ([a-z0-9]+)\b", joined
    ):
        hour = parse_number(relative.group(3))
        what = relative.group(1).split()[-2:] if relative.group(1) not in ("half", "quarter") else [relative.group(1)]
        minutes = {"half": 30, "quarter": 15}.get(what[-1]) or parse_number(" ".join(what))
        if (
            hour is not None
            and minutes is not None
            and float(hour).is_integer()
            and 0 <= hour <= 24
            and 0 < minutes < 60
        ):
            hour, minutes = int(hour), int(minutes)
            if relative.group(2) in ("to", "before"):
                hour, minutes = (hour - 1) % 24, 60 - minutes
                if hour == 0:
                    hour = 12  # "quarter to one" is 12:45 (or 00:45 with "in the morning"/"am")
            return _clock(hour, minutes, meridiem, hours)
    # "half three" (British): half past three; not "half an hour", not "half past".
    half = re.search(r"\bhalf (\d{1,2}|[a-z]+)\b", joined)
    if half and half.group(1) not in ("past", "an", "a", "after", "to"):
        hour = parse_number(half.group(1))
        if hour is not None and float(hour).is_integer() and 1 <= hour <= 12:
            return _clock(int(hour), 30, meridiem, hours)
    for run in runs:
        values = [c.value for c in run]
        if any(not float(v).is_integer() for v in values):
            continue
        parts = [int(v) for v in values]
        if len(parts) == 1:
            value = parts[0]
            if value >= 100:  # "fifteen hundred", "930", "1530"
                return _clock(value // 100, value % 100, meridiem, hours)
            return _clock(value, 0, meridiem, hours)
        if len(parts) == 2:
            return _clock(parts[0], parts[1], meridiem, hours)
        if len(parts) == 3 and parts[1] == 0 and parts[2] < 10:  # "nine oh five"
            return _clock(parts[0], parts[2], meridiem, hours)
    return None


# -- choices and text -----------------------------------------------------------------------


def parse_choice(text: str, choices: Mapping[str, Sequence[str]]) -> str | None:
    """The choice the caller named (or a synonym of it), tolerant of misrecognition; reuses
    intent matching so choices and intents behave alike."""
    candidates = [
        Intent(name=value, examples=[value, *synonyms], keywords=[value, *synonyms], goto=value)
        for value, synonyms in choices.items()
    ]
    matched, _score = match_intent(text, candidates)
    return matched.name if matched is not None else None


def parse_text(text: str) -> str | None:
    cleaned = " ".join(text.split())
    return cleaned or None


def parse_slot(ask: Ask, text: str, *, today: dt.date) -> Any:
    """Parse ``text`` as the answer to ``ask``; ``None`` means "not understood"."""
    value: Any
    if ask.type == "yes_no":
        value = parse_yes_no(text)
    elif ask.type == "number":
        value = parse_number(text)
        if value is not None and (
            (ask.min is not None and value < ask.min) or (ask.max is not None and value > ask.max)
        ):
            return None
    elif ask.type == "date":
        value = parse_date(text, today)
    elif ask.type == "time":
        value = parse_time(text)
    elif ask.type == "choice":
        value = parse_choice(text, ask.choices)
    else:
        value = parse_text(text)
    return value


def coerce(value: Any, slot_type: str | None, *, today: dt.date) -> Any:
    """Bring a value from an LLM tool call (JSON: text, number, true/false) to the slot's type;
    ``None`` when it does not fit, so a bad tool argument is refused instead of stored."""
    if slot_type is None or slot_type in ("text", "choice"):
        return value if not isinstance(value, str) else (value.strip() or None)
    if slot_type == "yes_no":
        return value if isinstance(value, bool) else parse_yes_no(str(value))
    if slot_type == "number":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value
        return parse_number(str(value))
    if slot_type == "date":
        if isinstance(value, dt.date):
            return value
        return parse_date(str(value), today)
    if slot_type == "time":
        if isinstance(value, dt.time):
            return value
        text = str(value).strip()
        match = re.fullmatch(r"(\d{1,2}):(\d{2})(?::\d{2})?", text)
        if match:
            hour, minute = int(match.group(1)), int(match.group(2))
            return dt.time(hour, minute) if hour < 24 and minute < 60 else None
        return parse_time(text)
    return value


# -- speaking values -------------------------------------------------------------------------

_SMALL = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen"
).split()
_TENS_WORDS = ["", "", "twenty", "thirty", "forty", "fifty"]
_ORDINAL_WORDS = [
    "",
    *"first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth thirteenth".split(),
    *"fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth twentieth".split(),
]
_MONTH_NAMES = ["", *"January February March April May June July August September October November December".split()]
_DAY_NAMES = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def _under_sixty(n: int) -> str:
    if n < 20:
        return _SMALL[n]
    tens, units = divmod(n, 10)
    return _TENS_WORDS[tens] + (f" {_SMALL[units]}" if units else "")


def _ordinal(n: int) -> str:
    if n <= 20:
        return _ORDINAL_WORDS[n]
    tens, units = divmod(n, 10)
    if units == 0:
        return "thirtieth"
    return f"{_TENS_WORDS[tens]} {_ORDINAL_WORDS[units]}"


def _speak_time(value: dt.time) -> str:
    if value.hour == 12 and value.minute == 0:
        return "noon"
    if value.hour == 0 and value.minute == 0:
        return "midnight"
    hour12 = value.hour % 12 or 12
    if value.minute == 0:
        clock = f"{_SMALL[hour12]} o'clock"
    elif value.minute < 10:
        clock = f"{_SMALL[hour12]} oh {_SMALL[value.minute]}"
    else:
        clock = f"{_SMALL[hour12]} {_under_sixty(value.minute)}"
    if value.hour < 12:
        part = "in the morning"
    elif value.hour < 17:
        part = "in the afternoon"
    else:
        part = "in the evening"
    return f"{clock} {part}"


def speak(value: Any, *, today: dt.date | None = None) -> str:
    """Words a text-to-speech voice reads naturally: "Tuesday the third of December",
    "three thirty in the afternoon", "yes"; numbers stay digits (voices read those well)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dt.datetime):
        value = value.date()
    if isinstance(value, dt.date):
        text = f"{_DAY_NAMES[value.weekday()]} the {_ordinal(value.day)} of {_MONTH_NAMES[value.month]}"
        if today is None or value.year != today.year:
            text += f" {value.year}"
        return text
    if isinstance(value, dt.time):
        return _speak_time(value)
    if isinstance(value, float):
        return f"{value:.2f}".rstrip("0").rstrip(".") if not value.is_integer() else str(int(value))
    return str(value).strip()
