"""Backchannels and complete turns, as the turn-taking loop reads a transcript."""

from __future__ import annotations

import pytest

from agent.turn_signals import (
    asks_for_the_turn,
    asks_to_wait,
    is_backchannel,
    is_bare_yes_no,
    is_known_backchannel,
    is_opener,
    looks_complete,
    only_trails_off,
    sounds_unfinished,
)


@pytest.mark.parametrize("text", ["Uh-huh.", "mm hmm", "Okay.", "Yeah", "ah ha", "", "Right, right."])
def test_backchannels(text: str) -> None:
    assert is_backchannel(text)


@pytest.mark.parametrize("text", ["Stop.", "Wait a second", "No.", "What is your address?", "I want a person"])
def test_words_that_take_the_turn(text: str) -> None:
    assert not is_backchannel(text)


@pytest.mark.parametrize(
    ("text", "complete"),
    [
        ("I want to check the status of my order.", True),
        ("Can I talk to a person?", True),
        ("I want to check the status of my", False),
        ("I'd like to book it and", False),
        ("So um.", False),
        ("Half past.", False),
        ("I'd like to book it for.", False),
        ("Well...", False),
        ("", False),
    ],
)
def test_complete_turns(text: str, complete: bool) -> None:
    assert looks_complete(text) is complete


@pytest.mark.parametrize(
    ("text", "complete"),
    [("No?", False), ("Yes.", False), ("No, thanks.", True), ("Where is my order?", True), ("Hm, no.", True)],
)
def test_one_word_answers_stay_open_when_two_words_are_asked_for(text: str, complete: bool) -> None:
    assert looks_complete(text, min_words=2) is complete


def test_digits_read_out_do_not_make_a_sentence_complete() -> None:
    assert not looks_complete("My order number is 555.")
    assert not looks_complete("My order number is 555.", min_words=2)


@pytest.mark.parametrize(
    "text",
    [
        "I'd like to book an appointment for the",
        "and",
        "Um,",
        "so I was wondering...",
        "My order number is 4 8",
        "My order number is four eight",
        "Tuesday, no,",
        "make that",
        "I want to",
        "Hang on.",  # asks the bot to wait
        "Hold on a second.",
        "Could I do.",  # a question that stops before its object
        "Hi, I'd like to book.",  # a verb that wants its object
        "My TV keeps.",
        "I want to return.",
    ],
)
def test_words_that_stop_mid_sentence_sound_unfinished(text: str) -> None:
    assert sounds_unfinished(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Thank you.",
        "Yes please.",
        "I want the small one.",
        "What are your opening hours?",
        "No, that's all.",
        "Yes, that's it.",
        "Yes, it is.",
        "I think so.",
        "Okay, nine then.",
        "Yeah, go on then.",
        "I'm wondering where they've got to.",
        "I don't know what it's for.",
        "It just stopped.",
        "I'd like to pay.",
        "I want to book an appointment.",
    ],
)
def test_finished_sentences_do_not_sound_unfinished(text: str) -> None:
    assert not sounds_unfinished(text)


@pytest.mark.parametrize(
    "text", ["Hi there.", "Yeah, hi.", "Okay, brilliant.", "Good morning.", "Sorry, yes.", "Hi, um"]
)
def test_a_greeting_or_reaction_alone_opens_a_turn(text: str) -> None:
    assert is_opener(text, yes_no=False)


@pytest.mark.parametrize("text", ["Yes, please.", "Great.", "No, thanks.", "Okay."])
def test_at_a_yes_no_question_yes_or_a_reaction_is_the_answer(text: str) -> None:
    assert not is_opener(text, yes_no=True)
    assert is_opener("Hello?", yes_no=True)


@pytest.mark.parametrize("text", ["It's about my bill.", "No, that's all.", "Tuesday.", "I'd like a refund."])
def test_words_that_say_something_are_no_opener(text: str) -> None:
    assert not is_opener(text, yes_no=False)


def test_only_known_backchannels_are_known() -> None:
    """While the caller hears an answer to their own fragment, "keeps" goes on with the thought."""
    assert is_known_backchannel("Uh-huh.") and is_known_backchannel("Yes please.")
    assert not is_known_backchannel("Keeps.") and is_backchannel("Keeps.")


@pytest.mark.parametrize(("text", "asks"), [("What?", True), ("Sorry?", True), ("Keeps.", False), ("Okay.", False)])
def test_words_that_ask_for_the_turn(text: str, asks: bool) -> None:
    assert asks_for_the_turn(text) is asks


@pytest.mark.parametrize(
    ("text", "bare"),
    [
        ("Yes.", True),
        ("No,", True),
        ("Nope.", True),
        ("Goodbye.", False),
        ("Yes, that's me.", False),
        ("Tuesday.", False),
    ],
)
def test_a_bare_yes_or_no(text: str, bare: bool) -> None:
    assert is_bare_yes_no(text) is bare


@pytest.mark.parametrize(
    ("text", "only_marks"),
    [
        ("Not today... No...", True),
        ("Okay, brilliant,", True),
        ("I want to...", False),
        ("and the,", False),
        ("It is 48...", False),
        ("So...", False),
        ("Yes.", False),
    ],
)
def test_punctuation_alone_trailing_off(text: str, only_marks: bool) -> None:
    assert only_trails_off(text) is only_marks


@pytest.mark.parametrize(
    ("text", "asks"),
    [
        ("Hang on.", True),
        ("Hang on, let me check...", True),
        ("Wait a second.", True),
        ("one sec", True),
        ("Hold on, I need to", False),
        ("I want to", False),
        ("Hang on, that can't be right.", False),
        ("It's about my bill, no wait.", False),
        ("It's about my bill. No, wait.", False),
    ],
)
def test_words_that_ask_the_bot_to_wait(text: str, asks: bool) -> None:
    assert asks_to_wait(text) is asks
