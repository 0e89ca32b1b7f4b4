"""Offline intent matching for caller transcripts.

The input is speech-recognition output, not typed text: casing and punctuation are
arbitrary, fillers ("uh", "um") appear, contractions may or may not keep their apostrophe
and words get misheard ("statis" for "status"). The matcher therefore compares *content
words* (stop-words carry little meaning and differ between phrasings), lets near-identical
words count as partial matches, and blends that with a whole-utterance character ratio that
rescues phrasings close to an example. Keywords let authors cover short or unusual
utterances ("billing?") without listing every sentence.

Everything is deterministic and dependency-free (difflib) so flows behave the same in tests,
in the simulator and on a live call, and work without any model or network.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from difflib import SequenceMatcher
from functools import lru_cache

from agent.dialogue.model import Intent

__all__ = [
    "DEFAULT_THRESHOLD",
    "content_tokens",
    "match_intent",
    "normalize",
    "rank_intents",
    "score_intent",
    "tokens",
]

#: Minimum score for a match. Tuned so paraphrases and ASR-damaged versions of examples, and
#: any keyword hit, pass, while unrelated sentences sharing only function words stay below.
DEFAULT_THRESHOLD = 0.5

_TOKEN_WEIGHT = 0.7  # content-word agreement: robust to word order and extra words
_FUZZY_WEIGHT = 0.3  # whole-string similarity: rewards near-verbatim phrasings
_KEYWORD_FLOOR = 0.55  # a keyword hit alone lands just above the default threshold...
_KEYWORD_BONUS = 0.1  # ...and each hit (up to two) adds confidence over example-only rivals
_WORD_SIMILARITY = 0.8  # two words this similar are treated as an ASR variant of each other
_MIN_FUZZY_WORD = 4  # shorter words are too easy to confuse ("bill"/"bell" is not a typo)

_IRREGULAR = {
    "won't": "will not",
    "can't": "can not",
    "cannot": "can not",
    "shan't": "shall not",
    "ain't": "is not",
    "let's": "let us",
}
# ASR often drops apostrophes; only unambiguous forms are listed ("its", "were", "well" are words).
_BARE = {
    "dont": "do not",
    "doesnt": "does not",
    "didnt": "did not",
    "isnt": "is not",
    "arent": "are not",
    "wasnt": "was not",
    "cant": "can not",
    "wont": "will not",
    "im": "i am",
    "ive": "i have",
    "whats": "what is",
    "wheres": "where is",
    "thats": "that is",
    "theres": "there is",
    "hows": "how is",
    "youre": "you are",
}
_SUFFIXES = (
    ("n't", " not"),
    ("'re", " are"),
    ("'ve", " have"),
    ("'ll", " will"),
    ("'d", " would"),
    ("'m", " am"),
    ("'s", " is"),
)

#: Hesitations that never carry meaning, dropped before any comparison.
_FILLERS = frozenset({"uh", "uhh", "um", "umm", "uhm", "er", "erm", "ah", "eh", "hmm", "hm", "mm", "mhm"})

#: Function words ignored when comparing meaning. Deliberately *not* included: yes/yeah/okay/
#: no/not, all/done/thanks/bye — those decide intents like "no, that's all".
_STOP_WORDS = frozenset(
    """
a an the and or but if so then than too very just also really actually
i me my mine myself we us our ours you your yours he him his she her it its they them their
is am are was were be been being do does did doing have has had having
to of in on at by for with about from into onto over up down out off as
this that these those there here what which who whom whose where when why how
can could would should will shall may might must
want wanted wanna need needed like get got go going gonna know let
please hi hello hey oh well um uh some any
""".split()
)


@lru_cache(maxsize=4096)
def normalize(text: str) -> str:
    """Lowercase, expand contractions and strip punctuation, so "Where's my ORDER?!" and
    "where is my order" compare equal."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("`", "'")
    for short, full in _IRREGULAR.items():
        text = re.sub(rf"\b{re.escape(short)}\b", full, text)
    for suffix, full in _SUFFIXES:
        text = re.sub(rf"(?<=\w){re.escape(suffix)}\b", full, text)
    text = re.sub(r"[^\w\s]|_", " ", text)
    words = [_BARE.get(word, word) for word in text.split()]
    return " ".join(words)


def _stem(word: str) -> str:
    """Very light suffix stripping so "billing"/"bill" and "orders"/"order" meet; a real
    stemmer would be a new dependency and over-stems short spoken words."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 5 and word.endswith("ing"):
        return word[:-3]
    if len(word) > 5 and word.endswith("ed"):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


@lru_cache(maxsize=4096)
def tokens(text: str) -> tuple[str, ...]:
    """Normalised, stemmed words without fillers (order kept, for keyword phrases)."""
    return tuple(_stem(w) for w in normalize(text).split() if w not in _FILLERS)


@lru_cache(maxsize=4096)
def content_tokens(text: str) -> frozenset[str]:
    """The meaning-bearing words; falls back to all words when a phrase is *only* function
    words ("yes please" still needs something to compare)."""
    words = [w for w in normalize(text).split() if w not in _FILLERS]
    content = frozenset(_stem(w) for w in words if w not in _STOP_WORDS)
    return content or frozenset(_stem(w) for w in words)


@lru_cache(maxsize=16384)
def _word_similarity(a: str, b: str) -> float:
    if a == b:
        return 1.0
    if min(len(a), len(b)) < _MIN_FUZZY_WORD:
        return 0.0
    ratio = SequenceMatcher(None, a, b).ratio()
    return ratio if ratio >= _WORD_SIMILARITY else 0.0


def _coverage(words: frozenset[str], other: frozenset[str]) -> float:
    """Soft count of ``words`` that appear (or nearly appear) in ``other``."""
    return sum(max((_word_similarity(w, o) for o in other), default=0.0) for w in words)


def _example_score(utterance: str, example: str) -> float:
    said, wanted = content_tokens(utterance), content_tokens(example)
    if not said or not wanted:
        return 0.0
    covered_example = _coverage(wanted, said)
    covered_said = _coverage(said, wanted)
    dice = (covered_example + covered_said) / (len(wanted) + len(said))
    recall = covered_example / len(wanted)
    token_score = 0.5 * dice + 0.5 * recall
    plain_said = " ".join(w for w in normalize(utterance).split() if w not in _FILLERS)
    plain_wanted = " ".join(w for w in normalize(example).split() if w not in _FILLERS)
    fuzzy = SequenceMatcher(None, plain_said, plain_wanted).ratio()
    return _TOKEN_WEIGHT * token_score + _FUZZY_WEIGHT * fuzzy


def _keyword_hits(said: tuple[str, ...], keywords: Sequence[str]) -> int:
    hits = 0
    for keyword in keywords:
        phrase = tokens(keyword)
        if not phrase or len(phrase) > len(said):
            continue
        for start in range(len(said) - len(phrase) + 1):
            if all(_word_similarity(said[start + i], part) for i, part in enumerate(phrase)):
                hits += 1
                break
    return hits


def score_intent(text: str, intent: Intent) -> float:
    """Confidence in ``[0, 1]`` that ``text`` expresses ``intent`` (best example, plus keywords)."""
    best = max((_example_score(text, example) for example in intent.examples), default=0.0)
    hits = _keyword_hits(tokens(text), intent.keywords)
    if hits:
        best = max(best, _KEYWORD_FLOOR) + _KEYWORD_BONUS * min(hits, 2)
    return round(min(best, 1.0), 4)


def rank_intents(text: str, intents: Sequence[Intent]) -> list[tuple[Intent, float]]:
    """Every intent with its score, in the given order; what ``wacall flows chat`` shows so
    authors can see which examples almost matched."""
    return [(intent, score_intent(text, intent)) for intent in intents]


def match_intent(
    text: str, intents: Sequence[Intent], *, threshold: float = DEFAULT_THRESHOLD
) -> tuple[Intent | None, float]:
    """Pick the best-scoring intent, or ``None`` when nothing reaches ``threshold``.

    Earlier intents win ties, so callers control precedence by order (the engine lists a
    node's own intents before the global ones). The best score is returned even on a miss so
    logs can show how close the caller came.
    """
    best: Intent | None = None
    best_score = 0.0
    for intent, score in rank_intents(text, intents):
        if score > best_score:
            best, best_score = intent, score
    if best is None or best_score < threshold:
        return None, best_score
    return best, best_score
