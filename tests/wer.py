"""Word error rate with the normalisation our tests agree on: case, punctuation and spacing ignored.

Whisper writes some spoken words more than one way ("goodbye", "good bye", "bye bye" for the same
farewell piper speaks). Those spellings are folded into one before counting, as Whisper's own English
normaliser does for spellings: a different spelling of the word the caller heard is not an error.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import jiwer

_SAME_WORD = [
    (re.compile(r"\b(?:good bye|bye bye|bye-bye|goodbye)\b"), "goodbye"),
    (re.compile(r"\bokay\b"), "ok"),
    (re.compile(r"\bo k\b"), "ok"),
]


def normalise(text: str) -> str:
    text = text.lower().replace("'", "")
    text = re.sub(r"[^a-z0-9 ]+", " ", text)
    text = " ".join(text.split())
    for pattern, word in _SAME_WORD:
        text = pattern.sub(word, text)
    return text


def wer(reference: str, hypothesis: str) -> float:
    return float(jiwer.wer(normalise(reference), normalise(hypothesis) or "<empty>"))


def best_wer(references: Iterable[str], hypothesis: str) -> float:
    """The WER against the closest of the lines the bot could have said at that point."""
    return min(wer(reference, hypothesis) for reference in references)


def wer_within(reference: str, hypothesis: str, slack: int = 3) -> float:
    """The WER of a line heard among others ("Please hold. <the line> You are number one…"): against the
    closest run of the hypothesis's words, of the reference's length give or take `slack`."""
    ref, words = normalise(reference), normalise(hypothesis).split()
    size = len(ref.split())
    if not words:
        return wer(reference, "")
    spans = (
        " ".join(words[start : start + length])
        for length in range(max(1, size - slack), size + slack + 1)
        for start in range(max(1, len(words) - length + 1))
    )
    return min(float(jiwer.wer(ref, span)) for span in spans)
