"""Offline intent matching over ASR-style transcripts."""

from __future__ import annotations

import pytest

from agent.dialogue.flow import Intent
from agent.dialogue.nlu import DEFAULT_THRESHOLD, content_tokens, match_intent, normalize, score_intent

ORDER = Intent(
    name="order",
    examples=["where is my order", "I want to check the status of my order", "my package has not arrived"],
    keywords=["order", "package", "delivery", "shipping"],
    goto="order_status",
)
BILLING = Intent(
    name="billing",
    examples=["I have a question about my bill", "I was charged twice"],
    keywords=["bill", "invoice", "payment"],
    goto="billing",
)
AGENT = Intent(
    name="agent",
    examples=["I want to talk to a person", "connect me to an agent"],
    keywords=["human", "representative", "talk to someone"],
    goto="agent",
)
GOODBYE = Intent(name="goodbye", examples=["goodbye", "bye", "that's all thanks"], goto="goodbye")
YES = Intent(name="yes", examples=["yes", "yeah", "sure"], goto="menu")
NO = Intent(name="no", examples=["no", "no thanks", "nope"], goto="goodbye")
MENU = [ORDER, BILLING, AGENT, GOODBYE]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Where's my ORDER?!", "where is my order"),
        ("I don't know, it isn't here", "i do not know it is not here"),
        ("I can't   find it", "i can not find it"),
        ("won't work", "will not work"),
        ("I\u2019m calling about my bill.", "i am calling about my bill"),
        ("whats up dont worry", "what is up do not worry"),
        ("", ""),
    ],
)
def test_normalize(text: str, expected: str) -> None:
    assert normalize(text) == expected


def test_content_tokens_drop_fillers_and_stop_words() -> None:
    assert content_tokens("uh, I want to check the status of my orders") == {"check", "status", "order"}
    assert content_tokens("yes please") == {"yes"}
    # Only function words left: keep them rather than compare nothing.
    assert content_tokens("what about it") == {"what", "about", "it"}


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("I want to check the status of my order.", "order"),
        ("i want to check the status of my order", "order"),
        ("where's my package", "order"),
        ("uh what about my bill", "billing"),
        ("um so I was charged twice I think", "billing"),
        ("my pakage has not arived", "order"),  # misheard words
        ("the status of my order please", "order"),
        ("can I talk to someone", "agent"),
        ("get me a human", "agent"),
        ("No, that's all. Goodbye.", "goodbye"),
        ("okay bye", "goodbye"),
    ],
)
def test_matches_intent(text: str, intent: str) -> None:
    matched, score = match_intent(text, MENU)
    assert matched is not None, (text, score)
    assert matched.name == intent
    assert score >= DEFAULT_THRESHOLD


@pytest.mark.parametrize(
    "text",
    [
        "the weather is lovely today",
        "can you tell me a joke",
        "what time is it",
        "my dog ate my homework",
        "is this the pizza place",
        "purple monkey dishwasher",
        "how are you doing today",
        "hello",
        "hmm",
        "I don't know",
        "",
    ],
)
def test_unrelated_text_does_not_match(text: str) -> None:
    matched, score = match_intent(text, MENU)
    assert matched is None, (text, matched, score)
    assert score < DEFAULT_THRESHOLD


@pytest.mark.parametrize(
    ("text", "intent"),
    [("yes", "yes"), ("Yeah.", "yes"), ("sure thing", "yes"), ("No.", "no"), ("nope", "no"), ("no thanks", "no")],
)
def test_short_answers(text: str, intent: str) -> None:
    matched, _ = match_intent(text, [YES, NO])
    assert matched is not None and matched.name == intent


def test_exact_example_scores_one() -> None:
    assert score_intent("Where is my order?", ORDER) == 1.0


def test_keyword_alone_is_enough_and_boosts() -> None:
    only_keyword = Intent(name="bill", keywords=["invoice"], goto="x")
    assert score_intent("about that invoice", only_keyword) >= DEFAULT_THRESHOLD
    assert score_intent("about that thing", only_keyword) == 0.0
    assert score_intent("invoice for my payment", BILLING) > score_intent("invoice for my thing", BILLING)


def test_multi_word_keyword_must_appear_in_order() -> None:
    intent = Intent(name="agent", keywords=["talk to someone"], goto="x")
    assert score_intent("I'd like to talk to someone", intent) >= DEFAULT_THRESHOLD
    assert score_intent("someone told me to talk", intent) == 0.0


def test_earlier_intent_wins_ties() -> None:
    local = Intent(name="local", examples=["help"], goto="a")
    glob = Intent(name="global", examples=["help"], goto="b")
    assert match_intent("help", [local, glob])[0] is local
    assert match_intent("help", [glob, local])[0] is glob


def test_threshold_is_respected() -> None:
    matched, score = match_intent("where's my package", [ORDER], threshold=0.99)
    assert matched is None and 0 < score < 0.99
    assert match_intent("where's my package", [ORDER], threshold=0.1)[0] is ORDER


def test_no_intents_means_no_match() -> None:
    assert match_intent("where is my order", []) == (None, 0.0)


def test_scores_are_bounded() -> None:
    for intent in MENU:
        for text in ["order order package delivery shipping", "", "bye bye bye"]:
            assert 0.0 <= score_intent(text, intent) <= 1.0
