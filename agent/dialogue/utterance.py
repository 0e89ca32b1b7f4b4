"""What kind of turn a transcript is, before anyone tries to understand its content.

Callers do not answer in clean sentences. They hesitate ("um, so"), greet ("hi, sorry"),
check the line ("hello?"), ask something else ("what time do you open?") and correct
themselves ("Tuesday. No. Sorry. Wednesday."). Each of these needs a different reaction
from the engine, and none of them is a failed attempt to answer: counting them as misses
is what sends patient callers to ``no_match``. The rules here are plain word lists (see
:mod:`agent.dialogue.lexicon`), so they run offline and the same in tests as on a call.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from agent.dialogue.lexicon import (
    ACKNOWLEDGEMENTS,
    APOLOGIES,
    CONTINUATIONS,
    GREETINGS,
    HESITATIONS,
    HOLD_PHRASES,
    NEGATORS,
    NO_WORD_MARKERS,
    POLITENESS,
    PRESENCE_CHECKS,
    QUESTION_STARTS,
    REPLACEMENTS,
    RETRACTIONS,
)
from agent.dialogue.nlu import expand_contractions, normalize

__all__ = [
    "Clause",
    "Said",
    "Segment",
    "TurnKind",
    "acknowledgement",
    "is_question",
    "kind",
    "read",
]

#: ``content``: something to understand. ``hold``: "hang on", "one second" (the caller asks for a
#: moment). ``hesitation``: "um", "yeah so" and nothing after it (ask again). ``greeting``: "hi".
#: ``presence``: "hello?", "are you there". ``apology``: "sorry?", "excuse me", "what?" (say the
#: question again). ``empty``: noise.
TurnKind = Literal["empty", "hold", "hesitation", "greeting", "presence", "apology", "content"]

#: What may be left around a hold phrase ("oh, hang on a second, sorry").
_HOLD_LEFTOVERS = frozenset("a just second sec moment minute sorry oh okay ok yeah yes so me let there".split())
_MURMURED_ANSWERS = frozenset({"mhm", "mm hmm", "mmhmm", "uh huh", "uh uh", "mm mm", "hmm hmm"})
_NOISE = frozenset("uh uhh um umm uhm er erm ah eh hmm hm mm mhm oh".split())
_APOLOGY_WORDS = APOLOGIES | {"what", "i", "am", "me", "oh", "sorry", "come", "again"}


def _contains(words: list[str], phrase: str) -> bool:
    return f" {phrase} " in f" {' '.join(words)} "


def _without(words: list[str], phrases: tuple[str, ...]) -> list[str]:
    text = f" {' '.join(words)} "
    for phrase in sorted(phrases, key=len, reverse=True):
        text = text.replace(f" {phrase} ", " ")
    return text.split()


@lru_cache(maxsize=4096)
def kind(text: str) -> TurnKind:
    """Classify a caller's turn by form (see :data:`TurnKind`)."""
    words = normalize(text).split()
    if not words:
        return "empty"
    if " ".join(words) in _MURMURED_ANSWERS:
        return "content"  # "mhm" is a yes, "uh uh" a no
    meaningful = [w for w in words if w not in _NOISE]
    if not meaningful:
        return "hesitation"
    rest = _without(meaningful, HOLD_PHRASES)
    if len(rest) < len(meaningful) and not [w for w in rest if w not in _HOLD_LEFTOVERS and w not in POLITENESS]:
        return "hold"
    # "yeah so", "okay, and", "well": a sentence that has not started yet.
    if all(w in HESITATIONS for w in meaningful) and meaningful[-1] in CONTINUATIONS:
        return "hesitation"
    if any(_contains(meaningful, p) for p in PRESENCE_CHECKS if p != "hello"):
        leftover = _without(meaningful, PRESENCE_CHECKS)
        if all(w in GREETINGS or w in POLITENESS for w in leftover):
            return "presence"
    if all(w in GREETINGS for w in meaningful):
        return "presence" if text.strip().endswith("?") and "hello" in meaningful else "greeting"
    if all(w in GREETINGS or w in _APOLOGY_WORDS or w in POLITENESS for w in meaningful):
        return "apology"
    return "content"


def acknowledgement(text: str) -> bool:
    """Only "okay", "right", "I see", "thanks": the caller heard the question, not an answer."""
    words = [w for w in normalize(text).split() if w not in _NOISE]
    return bool(words) and all(w in ACKNOWLEDGEMENTS or w in POLITENESS or w in _SEEING for w in words)


_SEEING = frozenset("i see got it understood alright".split())
_WH = frozenset("what when where which who why how".split())
_AFTER_WH = frozenset(
    "do does did is are was were will would can could should time day days hours kind sort about much many long late "
    "early often type".split()
)
_AUX = QUESTION_STARTS - _WH
_SUBJECT = frozenset("you i we they it there he she my your the this that anyone somebody someone".split())
_LEADS = frozenset(
    "oh and so also sorry hang on hold wait just quick question by the way actually one more thing but um uh "
    "hey hi hello".split()
)


def is_question(text: str) -> bool:
    """Whether the caller is asking something ("what time do you open tomorrow?"), as
    opposed to answering: a question mark from the recogniser, or a sentence that starts
    like a question once lead-ins ("oh, hang on,") are skipped. "When I get paid" is not
    one: a question word must be followed by a verb or a question noun."""
    if text.strip().endswith("?") and len(normalize(text).split()) > 1:
        return True
    words = normalize(text).split()
    while words and words[0] in _LEADS:
        words = words[1:]
    if len(words) < 2:
        return False
    first, second = words[0], words[1]
    if first in _WH:
        return second in _AFTER_WH
    if first in _AUX:
        return second in _SUBJECT
    return _contains(words, "i was wondering") or _contains(words, "can you tell me")


# -- self-corrections ------------------------------------------------------------------------

_SEPARATOR = r"[\s,.;:!?\u2026\-\u2013\u2014]+"


def _marker_pattern(phrases: tuple[str, ...]) -> re.Pattern[str]:
    ordered = sorted(set(phrases), key=lambda p: (-len(p.split()), -len(p)))
    alternatives = [_SEPARATOR.join(re.escape(w) for w in p.split()) for p in ordered]
    return re.compile(r"(?<![\w'])(?:" + "|".join(alternatives) + r")(?![\w'])")


_ALL_MARKERS = (*RETRACTIONS, *REPLACEMENTS)
_VALUE_MARKERS = _marker_pattern(_ALL_MARKERS)
_NO_WORDS = frozenset(w for m in NO_WORD_MARKERS for w in m.split()) - {"oh", "that", "it"}
#: At a yes/no question "no" is an answer, so markers made with it are not markers there.
_YES_NO_MARKERS = _marker_pattern(
    tuple(m for m in _ALL_MARKERS if m not in NO_WORD_MARKERS and not _NO_WORDS.intersection(m.split()))
)
#: Said last, these leave the value standing ("Friday, I mean." / "Wednesday, actually.").
_TRAILING_NEUTRAL = frozenset({*REPLACEMENTS, "i mean", "i meant", "rather", "or rather"})
_CLAUSE_BREAK = re.compile(
    r"[;!?\u2026\u2013\u2014]|(?<!\d),|,(?!\d)|(?<!\d)[.:](?!\d)|\s-\s"
    r"|\b(?:but|so|maybe|perhaps|how about|what about|instead)\b"
)
#: A negation right before "make it" is "I can't make it", not a correction.
_NEGATED_BEFORE = re.compile(r"\b(?:not|never|cannot)\W+(?:\w+\W+)?$")


@dataclass(frozen=True)
class Clause:
    """Part of a segment between commas or "but"; ``negated`` when it denies ("not
    Tuesday", "Tuesday does not work for me"), so a value in it is not the answer."""

    text: str
    negated: bool


@dataclass(frozen=True)
class Segment:
    """What the caller said between two correction markers; ``marker`` is the one before it."""

    text: str
    marker: str
    clauses: tuple[Clause, ...]

    @property
    def usable(self) -> str:
        """The segment without its negated clauses: where an answer may be found."""
        return ", ".join(c.text for c in self.clauses if not c.negated)


@dataclass(frozen=True)
class Said:
    """A turn split at its self-corrections.

    ``segments`` holds the parts with content, in order; the answer is in the last one that
    has a value. ``retracted``: the turn ends on a correction marker with nothing after it
    ("Tuesday, no —"), so the caller has taken the value back and is about to give another.
    ``corrected``: a later part replaces an earlier one, or the turn opens with a
    correction ("actually, make it Wednesday"); at a read-back this is a change, not a yes.
    """

    text: str
    segments: tuple[Segment, ...]
    retracted: bool
    corrected: bool

    @property
    def last(self) -> str:
        """The part that counts when the caller changed their mind (else the whole turn)."""
        return self.segments[-1].text if self.segments else ""


def _has_content(text: str) -> bool:
    # "oh" counts here (in "oh four two" it is a zero), and so do "mhm", "uh huh" (a yes).
    plain = f" {normalize(text)} "
    if any(f" {murmur} " in plain for murmur in _MURMURED_ANSWERS):
        return True
    return any((w not in _NOISE or w == "oh") and w not in POLITENESS for w in plain.split())


#: Words that do not start the meaning of a clause ("it's not Tuesday" starts at "not").
_CLAUSE_LEAD = frozenset("it is its that this i am was but no oh um uh well so and then".split())
#: After a negation, these make it a refusal of the value ("Tuesday does not work for me",
#: "I can not make it then"), unlike "my laptop will not turn on", which only describes.
_REFUSING = frozenset(
    "work works suit suits good ok okay make do free available possible fine want like prefer right correct".split()
)


_WHEN_WORDS = frozenset(
    "today tomorrow tonight then monday tuesday wednesday thursday friday saturday sunday morning afternoon evening "
    "week weekend".split()
)


def _refuses(words: list[str]) -> bool:
    """Whether a clause takes a value back: "not Tuesday", "Tuesday does not suit me"."""
    meaningful = [w for w in words if w not in _CLAUSE_LEAD and w not in _NOISE]
    if meaningful and meaningful[0] in NEGATORS:
        return True
    for i, word in enumerate(words):
        if word in NEGATORS and any(w in _REFUSING or w in _WHEN_WORDS for w in words[i + 1 : i + 4]):
            return True  # "I can't today", "Tuesday doesn't suit me"
    return False


def _clauses(text: str, *, negation: bool) -> tuple[Clause, ...]:
    parts = [p.strip() for p in _CLAUSE_BREAK.split(text)]
    out = []
    for part in parts:
        if not part or not _has_content(part):
            continue
        out.append(Clause(part, negation and _refuses(normalize(part).split())))
    return tuple(out)


@lru_cache(maxsize=4096)
def read(text: str, *, yes_no: bool = False) -> Said:
    """Split a turn at its self-corrections ("X, no, Y", "X — sorry, Y", "X. No. Sorry. Y.",
    "X, wait, Y", "actually Y", "I mean Y", "make it Y").

    For a yes/no question, "no" and its kin are the answer rather than markers ("No. Sorry.
    Yes." is a yes, "No wait" is not a no) and negation is left to the yes/no parser.
    """
    lowered = expand_contractions(text)
    pattern = _YES_NO_MARKERS if yes_no else _VALUE_MARKERS
    pieces: list[tuple[str, str]] = []  # (marker before, text)
    marker = ""
    position = 0
    for match in pattern.finditer(lowered):
        found = " ".join(re.split(_SEPARATOR, match.group()))
        if found in ("make it", "make that") and _NEGATED_BEFORE.search(lowered[: match.start()]):
            continue
        pieces.append((marker, lowered[position : match.start()]))
        marker = found
        position = match.end()
    pieces.append((marker, lowered[position:]))

    segments: list[Segment] = []
    trailing: list[str] = []
    pending_markers: list[str] = []
    for before, piece in pieces:
        if before:
            pending_markers.append(before)
        if _has_content(piece):
            joined = " ".join(pending_markers)
            segments.append(
                Segment(piece.strip(" ,.;:!?-\u2013\u2014\u2026"), joined, _clauses(piece, negation=not yes_no))
            )
            pending_markers = []
    trailing = pending_markers
    retracted = any(m not in _TRAILING_NEUTRAL for m in trailing)
    corrected = len(segments) > 1 or (
        bool(segments) and bool(segments[0].marker) and segments[0].marker not in ("sorry", "i am sorry")
    )
    return Said(text=text, segments=tuple(segments), retracted=retracted, corrected=corrected)
