"""Digit strings read out on the phone: order numbers, account numbers, codes.

People read long numbers in groups, with pauses, and mix styles ("forty eight, two nine
one"); Whisper then writes some digits as words that sound the same ("for eight" for
"four eight", "to" for "two", "oh" for zero). A number is therefore read as the digits it
is spoken as, homophones count next to other digits, and when the flow says how many digits
to expect, the reading that fits that length wins. Leading zeros are kept: the value is
text, not an integer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agent.dialogue.lexicon import DIGIT_HOMOPHONES
from agent.dialogue.nlu import expand_contractions
from agent.dialogue.slots import number_runs

__all__ = ["Digits", "join_digits", "read_digits", "speak_digits"]

_UNIT_WORDS = "zero one two three four five six seven eight nine".split()
_REPEATS = {"double": 2, "triple": 3}
#: Words that may sit between digit groups without ending the number.
_GLUE = frozenset("uh um umm er erm ah and dash hyphen then comma".split())
_WORD_RE = re.compile(r"\d+|[a-z]+")
_OH = frozenset({"oh", "o"})


@dataclass(frozen=True)
class Digits:
    """The digits heard in one turn: ``text`` ("48291"), empty when none."""

    text: str

    def __len__(self) -> int:
        return len(self.text)


def _tokens(text: str) -> list[str]:
    lowered = expand_contractions(text).replace("'", "")
    # Whisper glues an "eight" it half heard to the digit before it: "four eight" written "4a".
    lowered = re.sub(r"\b(\d+)a\b", r"\1 8", lowered)
    return _WORD_RE.findall(lowered)


def _strong(word: str) -> bool:
    return word.isdigit() or word in _UNIT_WORDS or word in _REPEATS or _is_number_word(word)


def _is_number_word(word: str) -> bool:
    return bool(number_runs([word]))


def _next_word(words: list[str], i: int, step: int) -> int | None:
    """The index of the nearest word that is not glue ("um", "and") in one direction."""
    j = i + step
    while 0 <= j < len(words) and words[j] in _GLUE:
        j += step
    return j if 0 <= j < len(words) else None


def _with_homophones(words: list[str]) -> list[str]:
    """Turn sound-alike words into digit words where they sit next to digits."""
    out = list(words)
    accepted = [_strong(w) for w in words]
    changed = True
    while changed:
        changed = False
        for i, word in enumerate(words):
            if accepted[i] or word not in DIGIT_HOMOPHONES:
                continue
            neighbours = [j for j in (_next_word(words, i, -1), _next_word(words, i, 1)) if j is not None]
            # "oh oh seven": zeros said as "oh" also vouch for each other.
            zeros = word in _OH and any(words[j] in _OH for j in neighbours)
            if zeros or any(accepted[j] for j in neighbours):
                accepted[i] = True
                out[i] = _UNIT_WORDS[int(DIGIT_HOMOPHONES[word])]
                changed = True
    return out


def _expand_repeats(words: list[str]) -> list[str]:
    """ "double four" -> "four four", "triple 0" -> "0 0 0"."""
    out: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        if (
            word in _REPEATS
            and i + 1 < len(words)
            and (words[i + 1] in _UNIT_WORDS or re.fullmatch(r"\d", words[i + 1]))
        ):
            out.extend([words[i + 1]] * _REPEATS[word])
            i += 2
            continue
        out.append(word)
        i += 1
    return out


def _groups(words: list[str]) -> list[str]:
    """Digit strings of each stretch of spoken numbers (glue words do not break a stretch)."""
    words = [w for w in _expand_repeats(words)]
    stretches: list[list[str]] = [[]]
    for word in words:
        if word in _GLUE and stretches[-1]:
            continue
        if word.isdigit() or _is_number_word(word) or word in ("hundred", "thousand", "oh", "o"):
            stretches[-1].append(word)
        elif stretches[-1]:
            stretches.append([])
    out = []
    for stretch in stretches:
        if not stretch:
            continue
        digits = ""
        for run in number_runs(stretch):
            if any(chunk.ordinal for chunk in run):
                continue
            digits += "".join(chunk.digits if chunk.digits.isdigit() else str(int(chunk.value)) for chunk in run)
        if digits:
            out.append(digits)
    return out


def _best(groups: list[str]) -> str:
    return max(reversed(groups), key=len) if groups else ""


def read_digits(text: str, length: int | None = None) -> Digits:
    """The digits the caller read out; with ``length``, the reading (with or without the
    sound-alike words) that has exactly that many digits, else the longer one that does not
    exceed it."""
    words = _tokens(text)
    strict = _best(_groups(words))
    loose = _best(_groups(_with_homophones(words)))
    if length is None:
        return Digits(strict or loose)
    for candidate in (loose, strict):
        if len(candidate) == length:
            return Digits(candidate)
    fitting = [c for c in (loose, strict) if len(c) < length]
    if fitting:
        return Digits(max(fitting, key=len))
    return Digits(min((loose, strict), key=len))


def join_digits(before: str, after: str, length: int | None) -> str:
    """Put two groups read in separate turns together; a caller who starts over ("4 8 2 9 1"
    after "4 8 2") replaces the first group, and a group that repeats the end of the first
    one ("2 9 1" after "4 8 2") overlaps it."""
    if length is None:
        return before + after
    if len(after) >= length or not before:
        return after
    joined = before + after
    if len(joined) <= length:
        return joined
    for overlap in range(min(len(before), len(after)), 0, -1):
        if before.endswith(after[:overlap]) and len(before) + len(after) - overlap == length:
            return before + after[overlap:]
    return joined


def speak_digits(digits: str) -> str:
    """Digits one by one, in groups of three, so a voice reads them back the way people
    check a number: "4 8 2, 9 1"."""
    if len(digits) <= 4:
        return " ".join(digits)
    groups = [digits[i : i + 3] for i in range(0, len(digits), 3)]
    if len(groups[-1]) == 1:
        groups[-2:] = [groups[-2][:2], groups[-2][2:] + groups[-1]]
    return ", ".join(" ".join(group) for group in groups)
