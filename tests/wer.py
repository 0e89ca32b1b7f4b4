"""Word error rate with the normalisation our tests agree on: case, punctuation and spacing ignored."""

from __future__ import annotations

import re

import jiwer


def normalise(text: str) -> str:
    text = text.lower().replace("'", "")
    text = re.sub(r"[^a-z0-9 ]+", " ", text)
    return " ".join(text.split())


def wer(reference: str, hypothesis: str) -> float:
    return float(jiwer.wer(normalise(reference), normalise(hypothesis) or "<empty>"))
