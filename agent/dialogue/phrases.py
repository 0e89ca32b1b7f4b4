"""Lines the engine says on its own: read-backs, suggestions, asking for missing digits,
checking an intent that would end the call.

Flows can replace the read-back (``ask.confirm``) and the intent check (``intent.confirm``);
the rest are short, neutral and English like the default ``fallback``. Kept together so a
translation or a change of tone touches one file.
"""

from __future__ import annotations

import re

__all__ = [
    "ANYTHING_MORE",
    "HERE",
    "OFFER_AGAIN",
    "SORRY_WRONG",
    "TAKE_YOUR_TIME",
    "check_intent",
    "keyed_wrong_length",
    "missing_digits",
    "read_back",
    "suggest",
    "suggest_other",
    "too_many_digits",
]

HERE = "Yes, I am here."
TAKE_YOUR_TIME = "Sure, take your time."
SORRY_WRONG = "Sorry about that."
OFFER_AGAIN = "Sorry, you may have missed that."
ANYTHING_MORE = "Go on, I am listening."

_COUNTS = ["no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


def _count(n: int) -> str:
    return _COUNTS[n] if 0 <= n < len(_COUNTS) else str(n)


def read_back(spoken: str) -> str:
    return f"Just to check: {spoken}. Is that right?"


def suggest(spoken: str) -> str:
    return f"How about {spoken}?"


def suggest_other(spoken: str) -> str:
    return f"Or would {spoken} suit you?"


def missing_digits(spoken: str, missing: int | None) -> str:
    """ "I got 4 8 2. What are the last two digits?" (``None``: the count is not fixed)."""
    if missing is None:
        return f"I got {spoken}. Please go on with the rest of the number."
    if missing == 1:
        return f"I got {spoken}. What is the last digit?"
    return f"I got {spoken}. What are the last {_count(missing)} digits?"


def too_many_digits(heard: int, expected: str) -> str:
    return (
        f"Sorry, I heard {_count(heard)} digits, but it should have {expected}. "
        "Could you say it again, one digit at a time?"
    )


def keyed_wrong_length(typed: int, expected: str) -> str:
    digits = "one digit" if typed == 1 else f"{_count(typed)} digits"
    return f"Sorry, that was {digits}, but it should have {expected}. Could you enter it again?"


_SWAPS = {
    "i": "you",
    "me": "you",
    "my": "your",
    "mine": "yours",
    "myself": "yourself",
    "am": "are",
    "i'm": "you're",
    "i've": "you've",
    "i'd": "you'd",
    "i'll": "you'll",
    "we": "you",
    "our": "your",
    "us": "you",
}


def _second_person(sentence: str) -> str:
    """ "I already paid" -> "you already paid", so an example can be read back to the caller."""
    words = sentence.strip().rstrip(".!?").split()
    swapped = [_SWAPS.get(w.lower(), w) for w in words]
    text = " ".join(swapped)
    return re.sub(r"\byou was\b", "you were", text)


def check_intent(example: str, ends_call: bool) -> str:
    """The default question before following an intent that ends or hands over the call."""
    if ends_call and len(example.split()) <= 2:
        return "Do you want to end the call?"
    return f"Just to be sure: {_second_person(example)}. Is that right?"
