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

from agent.dialogue.lexicon import (
    ACKNOWLEDGEMENTS,
    CONCEPTS,
    FUTURE_MARKERS,
    IRREGULAR_PAST,
    NEGATORS,
    PAST_MARKERS,
    POLITENESS,
)
from agent.dialogue.model import Intent

__all__ = [
    "DEFAULT_THRESHOLD",
    "concepts",
    "content_tokens",
    "expand_contractions",
    "explained",
    "features",
    "match_intent",
    "normalize",
    "rank_intents",
    "score_intent",
    "tokens",
    "topic_units",
    "units",
    "vocabulary",
]

#: Minimum score for a match. Tuned so paraphrases and ASR-damaged versions of examples, and
#: any keyword hit, pass, while unrelated sentences sharing only function words stay below.
DEFAULT_THRESHOLD = 0.5

_TOKEN_WEIGHT = 0.7  # content-word agreement: robust to word order and extra words
_FUZZY_WEIGHT = 0.3  # whole-string similarity: rewards near-verbatim phrasings
_KEYWORD_FLOOR = 0.55  # a keyword hit alone lands just above the default threshold...
_KEYWORD_BONUS = 0.1  # ...and each hit (up to two) adds confidence over example-only rivals
_WORD_SIMILARITY = 0.8  # two words this similar are treated as an ASR variant of each other
_SHORT_WORD_SIMILARITY = 0.85  # ...or this similar, for words of five letters or fewer
_MIN_FUZZY_WORD = 4  # shorter words are too easy to confuse ("bill"/"bell" is not a typo)
_NEGATION_PENALTY = 0.4  # an example negated the other way ("I have not paid" vs "I paid") counts this much
_TENSE_PENALTY = 0.6  # an example in the other tense ("when I get paid" vs "I already paid") this much
_NEGATION_REACH = 3  # a "not" this many words before a keyword negates it
_EVIDENCE_BASE = 0.5  # words that point at just one intent land at the threshold...
_EVIDENCE_STEP = 0.06  # ...and each more such word than the runner-up adds a little

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


#: Words that never point at one intent: acknowledgements, politeness, yes/no, negations and
#: vague nouns ("something I bought" says nothing about *which* intent).
_NOT_EVIDENCE = frozenset(
    {
        *ACKNOWLEDGEMENTS,
        *POLITENESS,
        *NEGATORS,
        *"yes yeah yep no nope nah thank thing someth anyth everyth noth stuff sorry excuse".split(),
        *"hi hello hey bye".split(),
    }
)


@lru_cache(maxsize=4096)
def expand_contractions(text: str) -> str:
    """Lowercase and spell out contractions ("can't" -> "can not"), keeping punctuation and
    digits as they are, for rules that need the sentence's commas ("Tuesday, no, Wednesday")
    or its numbers ("3:30", "12.50")."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("`", "'")
    for short, full in _IRREGULAR.items():
        text = re.sub(rf"\b{re.escape(short)}\b", full, text)
    for suffix, full in _SUFFIXES:
        text = re.sub(rf"(?<=\w){re.escape(suffix)}\b", full, text)
    return text


@lru_cache(maxsize=4096)
def normalize(text: str) -> str:
    """Lowercase, expand contractions and strip punctuation, so "Where's my ORDER?!" and
    "where is my order" compare equal."""
    text = re.sub(r"[^\w\s]|_", " ", expand_contractions(text))
    words = [_BARE.get(word, word) for word in text.split()]
    return " ".join(words)


def _stem(word: str) -> str:
    """Very light suffix stripping so "billing"/"bill" and "orders"/"order" meet; a real
    stemmer would be a new dependency and over-stems short spoken words. Irregular past forms
    stay as they are: "paid" and "pay" differ in exactly what an intent like "already paid"
    is about."""
    stem = word
    if len(word) > 4 and word.endswith("ies"):
        stem = word[:-3] + "y"
    elif len(word) > 5 and word.endswith("ing"):
        stem = word[:-3]
    elif len(word) > 5 and word.endswith("ed"):
        stem = word[:-2]
    elif len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        stem = word[:-1]
    if stem is not word and len(stem) > 3 and stem[-1] == stem[-2] and stem[-1] not in "lsz":
        stem = stem[:-1]  # "stopped"/"stopping" -> "stop", "shipped" -> "ship"
    return stem


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


# -- paraphrases, negation and tense -----------------------------------------------------------


def _phrase_table() -> dict[str, list[tuple[tuple[str, ...], str]]]:
    """Concept phrases by their first (stemmed) word, longest first, so finding them costs one
    look-up per word of the sentence."""
    table: dict[str, list[tuple[tuple[str, ...], str]]] = {}
    for phrase, concept in CONCEPTS.items():
        words = tuple(_stem(w) for w in phrase.split())
        table.setdefault(words[0], []).append((words, concept))
    for entries in table.values():
        entries.sort(key=lambda item: -len(item[0]))
    return table


_CONCEPT_PHRASES = _phrase_table()


@lru_cache(maxsize=4096)
def _concepts_and_rest(text: str) -> tuple[frozenset[str], tuple[str, ...]]:
    """The everyday concepts in ``text`` ("it stopped working" -> ``~broken``), and its
    words with those phrases taken out (so "not working" no longer reads as a negation)."""
    words = list(tokens(text))
    found: set[str] = set()
    i = 0
    rest: list[str] = []
    while i < len(words):
        for phrase, concept in _CONCEPT_PHRASES.get(words[i], ()):
            if tuple(words[i : i + len(phrase)]) == phrase:
                found.add(concept)
                i += len(phrase)
                break
        else:
            rest.append(words[i])
            i += 1
    return frozenset(found), tuple(rest)


def concepts(text: str) -> frozenset[str]:
    """Everyday meanings found in ``text`` (see :data:`agent.dialogue.lexicon.CONCEPTS`)."""
    return _concepts_and_rest(text)[0]


_PAST_FORMS = frozenset(IRREGULAR_PAST)
#: "when I *get paid*", "it will *be sent*": a past participle that speaks of the future.
_NOT_PAST_BEFORE = frozenset({"get", "getting", "gets", "be", "will", "to"})
_NOT_PAST_ED = frozenset("need feed speed seed bed red shed bleed breed".split())
_SUBJECTS = frozenset("i it we they you he she have has had".split())


@lru_cache(maxsize=4096)
def features(text: str) -> tuple[bool, str | None]:
    """``(negated, tense)`` of a sentence: whether it says something did *not* happen, and
    whether it speaks of the past or the future (``None``: neither, or both).

    Crude on purpose (a few cue words), yet enough to keep "when I get paid" away from "I
    already paid" and "I haven't paid" away from "I paid".
    """
    _, rest = _concepts_and_rest(text)
    plain = normalize(text).split()
    negated = any(w in NEGATORS for w in rest)
    past = any(w in PAST_MARKERS for w in plain)
    future = any(w in FUTURE_MARKERS for w in plain)  # not weekdays: "I paid on Monday" is past
    for i, word in enumerate(plain):
        before = plain[i - 1] if i else ""
        if word in _PAST_FORMS and before not in _NOT_PAST_BEFORE:
            past = True
        elif word in _PAST_FORMS:
            future = True  # "when I get paid", "it will be sent": not done yet
        elif len(word) > 4 and word.endswith("ed") and word not in _NOT_PAST_ED and before in _SUBJECTS:
            past = True
    if "going" in plain and "to" in plain:
        future = True
    tense = "past" if past and not future else "future" if future and not past else None
    return negated, tense


def _conflict_factor(utterance: str, example: str) -> float:
    """How much to trust an example match given negation and tense: 1 when they agree."""
    said_negated, said_tense = features(utterance)
    ex_negated, ex_tense = features(example)
    factor = 1.0
    if said_negated != ex_negated:
        factor *= _NEGATION_PENALTY
    if said_tense and ex_tense and said_tense != ex_tense:
        factor *= _TENSE_PENALTY
    return factor


@lru_cache(maxsize=16384)
def _word_similarity(a: str, b: str) -> float:
    if a == b:
        return 1.0
    if min(len(a), len(b)) < _MIN_FUZZY_WORD:
        return 0.0
    ratio = SequenceMatcher(None, a, b).ratio()
    # Five letters with one changed is another word as often as a typo ("crack"/"track").
    needed = _WORD_SIMILARITY if min(len(a), len(b)) > 5 else _SHORT_WORD_SIMILARITY
    return ratio if ratio >= needed else 0.0


def _coverage(words: frozenset[str], other: frozenset[str]) -> float:
    """Soft count of ``words`` that appear (or nearly appear) in ``other``."""
    return sum(max((_word_similarity(w, o) for o in other), default=0.0) for w in words)


@lru_cache(maxsize=16384)
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
    return (_TOKEN_WEIGHT * token_score + _FUZZY_WEIGHT * fuzzy) * _conflict_factor(utterance, example)


def _keyword_hits(text: str, keywords: Sequence[str]) -> int:
    """Keywords found in ``text``; a keyword under a negation the keyword itself lacks ("I
    have *not* paid it" for "paid it") or in the wrong tense ("when I get paid" for "already
    paid") does not count."""
    said = tokens(text)
    _, said_tense = features(text)
    hits = 0
    for keyword in keywords:
        phrase = tokens(keyword)
        if not phrase or len(phrase) > len(said):
            continue
        kw_negated, kw_tense = features(keyword)
        if said_tense and kw_tense and said_tense != kw_tense:
            continue
        for start in range(len(said) - len(phrase) + 1):
            if all(_word_similarity(said[start + i], part) for i, part in enumerate(phrase)):
                negated_here = any(w in NEGATORS for w in said[max(0, start - _NEGATION_REACH) : start])
                if negated_here and not kw_negated:
                    continue
                hits += 1
                break
    return hits


def score_intent(text: str, intent: Intent) -> float:
    """Confidence in ``[0, 1]`` that ``text`` expresses ``intent`` (best example, plus keywords)."""
    best = max((_example_score(text, example) for example in intent.examples), default=0.0)
    hits = _keyword_hits(text, intent.keywords)
    if hits:
        best = max(best, _KEYWORD_FLOOR) + _KEYWORD_BONUS * min(hits, 2)
    return round(min(best, 1.0), 4)


@lru_cache(maxsize=1024)
def _vocabulary(phrases: tuple[str, ...]) -> frozenset[str]:
    """Every content word and concept of an intent's examples and keywords."""
    words: set[str] = set()
    for phrase in phrases:
        words.update(content_tokens(phrase))
        words.update(concepts(phrase))
    return frozenset(words)


def vocabulary(intent: Intent) -> frozenset[str]:
    return _vocabulary((*intent.examples, *intent.keywords))


def _owned(word: str, vocabulary: frozenset[str]) -> bool:
    if word.startswith("~"):
        return word in vocabulary
    return any(_word_similarity(word, known) for known in vocabulary if not known.startswith("~"))


_ANSWER_CONCEPTS = frozenset({"~yes", "~no"})


def topic_units(text: str) -> frozenset[str]:
    """:func:`units` without "yes"/"no", which say nothing about what the caller wants."""
    return units(text) - _ANSWER_CONCEPTS


def units(text: str) -> frozenset[str]:
    """The caller's meaningful units: concepts (a phrase like "stopped working" is one unit)
    and the remaining content words."""
    found, rest = _concepts_and_rest(text)
    stop = {_stem(w) for w in _STOP_WORDS}
    words = {w for w in rest if w not in stop and w not in _NOT_EVIDENCE and len(w) > 2}
    return frozenset(words | found)


def explained(text: str, intent: Intent) -> float:
    """Share of the caller's meaningful words that the intent's own words account for: 1.0
    when "billing" answers a question about billing, low when an intent matched on one
    loose word of a longer sentence."""
    said = topic_units(text)
    if not said:
        return 1.0
    known = vocabulary(intent)
    covered = sum(1 for unit in said if _owned(unit, known))
    return covered / len(said)


def rank_intents(text: str, intents: Sequence[Intent], *, paraphrase: bool = True) -> list[tuple[Intent, float]]:
    """Every intent with its score, in the given order; what ``wacall flows chat`` shows so
    authors can see which examples almost matched.

    With ``paraphrase``, words and everyday concepts that belong to just one of the intents
    ("laptop" when only the repair intent mentions devices; "stopped working" ~ "broken") are
    evidence for it even when no example is close, which is how callers who say things their
    own way still reach the right place. That evidence alone lands just above the threshold,
    so a real example or keyword match always outranks it.
    """
    scored = [(intent, score_intent(text, intent)) for intent in intents]
    if not paraphrase or len(intents) < 1:
        return scored
    words = units(text)
    if not words:
        return scored
    vocabularies = [vocabulary(intent) for intent in intents]
    evidence = [0.0] * len(intents)
    for word in words:
        owners = [i for i, vocab in enumerate(vocabularies) if _owned(word, vocab)]
        # Intents that lead to the same place are one owner ("no" and "goodbye" both end the call).
        if len({intents[i].goto or intents[i].name for i in owners}) == 1:
            # A shared everyday meaning is strong evidence; one plain word is half of it
            # ("never mind" must not make "I do not mind" a goodbye).
            evidence[owners[0]] += 1.0 if word.startswith("~") else 0.5
    best = max(evidence)
    if best < 1.0 or evidence.count(best) > 1:
        return scored
    winner = evidence.index(best)
    runner_up = max((e for i, e in enumerate(evidence) if i != winner), default=0.0)
    lift = _EVIDENCE_BASE + _EVIDENCE_STEP * min(best - runner_up, 3.0)
    intent, score = scored[winner]
    scored[winner] = (intent, round(max(score, lift), 4))
    return scored


def match_intent(
    text: str, intents: Sequence[Intent], *, threshold: float = DEFAULT_THRESHOLD, paraphrase: bool = True
) -> tuple[Intent | None, float]:
    """Pick the best-scoring intent, or ``None`` when nothing reaches ``threshold``.

    Earlier intents win ties, so callers control precedence by order (the engine lists a
    node's own intents before the global ones). The best score is returned even on a miss so
    logs can show how close the caller came.
    """
    best: Intent | None = None
    best_score = 0.0
    for intent, score in rank_intents(text, intents, paraphrase=paraphrase):
        if score > best_score:
            best, best_score = intent, score
    if best is None or best_score < threshold:
        return None, best_score
    return best, best_score
