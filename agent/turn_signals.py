"""What a caller's words say about turn-taking: a backchannel, or a finished turn.

Plain text rules, kept apart from the conversation loop so they can be tuned (and tested) on their own.
"""

from __future__ import annotations

import re

BACKCHANNELS = frozenset(
    {
        "uh huh", "uhhuh", "mhm", "mm hmm", "mmhmm", "hmm", "mm", "yeah", "yep", "yes", "ok", "okay",
        "right", "sure", "got it", "i see", "alright", "all right", "uh", "um", "ah", "oh", "cool", "great",
        "thanks", "thank you", "aha", "ah ha", "a ha", "uh uh huh", "hmm hmm", "mm mm", "oh ok", "oh okay",
        "yeah yeah", "ok ok", "okay okay", "yes yes", "i see i see", "oh i see", "yeah right", "yes please",
    }
)


# Short words that do mean "stop and listen to me", even when said over the bot.
TAKE_TURN_WORDS = frozenset({"stop", "wait", "no", "hold", "sorry", "excuse", "pardon", "what", "agent", "person"})


def _words(text: str) -> list[str]:
    return re.sub(r"[^a-z ]+", " ", text.lower().replace("-", " ")).split()


def is_backchannel(text: str) -> bool:
    """Words a listener says to show they are listening, not to take the turn.

    Known backchannels, and any one- or two-word murmur without a word that asks for the turn: said over
    the bot, "ah ha" or a misheard "a hat" is far more likely a backchannel than a request.
    """
    words = _words(text)
    if not words or " ".join(words) in BACKCHANNELS:
        return True
    return len(words) <= 2 and not TAKE_TURN_WORDS.intersection(words)


def is_known_backchannel(text: str) -> bool:
    """Only words listeners say to show they are listening ("uh-huh", "okay", "yes please"); unlike
    :func:`is_backchannel`, an unknown short word ("keeps") is not assumed to be one."""
    return " ".join(_words(text)) in BACKCHANNELS


def asks_for_the_turn(text: str) -> bool:
    """Words that ask the bot to stop and listen ("wait", "sorry?", "what?")."""
    return bool(TAKE_TURN_WORDS.intersection(_words(text)))


# A turn that ends on one of these is still going ("half past…", "book it for…"), whatever Whisper's full stop
# says: articles, prepositions, conjunctions, possessives and fillers.
_TRAILING_FILLERS = frozenset(
    "and but or so um uh because the a an to my your our their his her its is are was were i we "
    "at for of on in past from with about by into than like if".split()
)
# ... unless the word before closes it: "yes, it is", "I think so", "if you like", "hang on".
_CLOSED_BY = {
    "is": frozenset("it that this he she there what who which yes no".split()),
    "are": frozenset("you they we there yes no".split()),
    "was": frozenset("it that this he she there what who which yes no".split()),
    "were": frozenset("you they we there yes no".split()),
    "so": frozenset("think hope guess believe suppose said told thought expect".split()),
    "like": frozenset("you you'd".split()),
    "on": frozenset("hang hold go come carry".split()),
    "in": frozenset("come log sign pop drop".split()),
    "by": frozenset("stand pop drop".split()),
}


_PREPOSITIONS = frozenset("to for about of with from in on at by into".split())
_WH_WORDS = frozenset("where what who whom which".split())


def _open_ending(words: list[str]) -> bool:
    last = words[-1]
    if last not in _TRAILING_FILLERS:
        return False
    if last in _PREPOSITIONS and _WH_WORDS.intersection(words[:-2]):
        return False  # a preposition left at the end of a wh-clause: "…where they've got to", "what it's for"
    if last in ("is", "are", "was", "were") and len(words) < 3:
        return True  # "It was…" may be the start of anything
    return len(words) < 2 or words[-2] not in _CLOSED_BY.get(last, frozenset())


def looks_complete(text: str, min_words: int = 1) -> bool:
    """Whisper punctuates; a transcript ending in . ? or ! (and not in a filler) reads as a whole turn.

    `min_words` > 1 keeps one-word answers open: "No?" / "Yes." heard at a comma's pause is very often
    the start of "No, that's all" or "Yes, and…", and answering it talks over the rest of the sentence.
    """
    stripped = text.strip()
    if not stripped or stripped[-1] not in ".?!":
        return False
    words = re.sub(r"[^a-z' ]+", " ", stripped.lower()).split()  # digits read out ("… is 555.") go on
    return len(words) >= max(1, min_words) and not _open_ending(words) and not stripped.endswith("...")


_THINKING = frozenset("um uh erm er hmm mm ah".split())
_HESITATION = frozenset("um umm uh uhh erm er hmm".split())


def hesitates(text: str) -> bool:
    """A filler in the words ("Hi, um, I'd like…"): this caller thinks aloud and pauses mid-sentence."""
    return any(w in _HESITATION for w in re.sub(r"[^a-z ]+", " ", text.lower()).split())


_UNFINISHED_PHRASES = re.compile(
    r"\b(i want to|i would like to|i'd like to|i need to|it's about|going to|gonna|wanna|let me|what about|"
    r"how about|and then|and also|make that|make it|no wait|i mean|actually|just|any|some|sorry no|no sorry|"
    # words that ask the bot to wait while the caller thinks or finds something
    r"(?:hang on|hold on|wait)(?: a (?:sec|second|minute|moment))?|(?:one|just a) (?:sec|second|moment|minute)|"
    r"bear with me|"
    # a verb that wants its object or its -ing: "I'd like to book…", "my TV keeps…"
    r"(?:want to|would like to|'d like to|need to|wanted to|hoping to|trying to) (?:book|make|change|move|order|"
    r"report|check|ask|get|have|buy|arrange|schedule|know|find|discuss|sort|set up|talk about|ask about|return|"
    r"cancel|exchange|update|reschedule|rebook|replace|speak to|talk to|pick up)|"
    r"keeps|keep on|kept|"
    r"let me think|let me see|let me check|"
    # a question that stops before its object: "Could I do…", "Can we make…"
    r"(?:could|can|may|might|shall|should|would|will) (?:i|we|you) (?:do|have|get|make|book|move|change|come|go|"
    r"take|ask|pay|see|try|say|speak to|talk to|put))\W*$"
)


def sounds_unfinished(text: str) -> bool:
    """Words that stop where a sentence cannot: the caller is pausing mid-thought, so wait longer.

    A last word that is an article, preposition, conjunction, possessive or filler ("…for the", "my",
    "and", "um"), a trailing ellipsis or comma, a phrase that announces more ("I want to"), or digits being
    read out ("four eight", "48", Whisper's "for eight") — a number is often read in groups with pauses.
    Finished sentences are untouched, so they stay fast.
    """
    stripped = text.strip()
    if not stripped:
        return False
    lowered = stripped.lower()
    if lowered.endswith(("...", "…", ",", "-", "—", ";", ":")):
        return True
    words = re.sub(r"[^a-z0-9' ]+", " ", lowered.replace("-", " ")).split()
    if not words:
        return False
    last = words[-1]
    if _open_ending(words) or last in _THINKING:
        return True
    if _UNFINISHED_PHRASES.search(re.sub(r"[.?!]+$", "", lowered)):
        return True
    if last.isdigit():
        return True
    # "four eight" is a number being read out; "the small one" is not.
    return last in DIGIT_WORDS and len(words) > 1 and (words[-2].isdigit() or words[-2] in DIGIT_WORDS | {"is"})


DIGIT_WORDS = frozenset("zero oh one two three four five six seven eight nine".split())

_ASKS_TO_WAIT = re.compile(
    r"\b(?:(?:hang on|hold on|wait)(?: a (?:sec|second|minute|moment))?|(?:one|just a) (?:sec|second|moment|minute)|"
    r"bear with me|let me (?:think|see|check))\W*$"
)


_SELF_CORRECTION = re.compile(r"\b(?:no|oh|sorry)\W+(?:wait|hang on|hold on)\W*$")


def asks_to_wait(text: str) -> bool:
    """The words so far end by asking the bot to wait ("Hang on.", "Let me check…"): the turn is held, but
    that is a request, not a sign the caller breaks off mid-sentence (they may go on at once)."""
    lowered = text.strip().lower()
    if _SELF_CORRECTION.search(lowered):
        return False  # "…my bill, no wait": the caller is correcting themselves mid-thought
    return bool(_ASKS_TO_WAIT.search(lowered))


_TRAILING_MARKS = re.compile(r"[\s.…,;:\-—]+$")


def only_trails_off(text: str) -> bool:
    """Only the punctuation says the words go on ("Not today... No..."): Whisper writes an ellipsis or a
    comma where the audio ends in a pause, so it is worth a wait, not proof of a caller who stops mid-thought
    (the words themselves, "…for the", "I want to", are)."""
    words = _TRAILING_MARKS.sub("", text.strip())
    return bool(words) and words != text.strip() and sounds_unfinished(text) and not sounds_unfinished(words)


# Words that open a turn without answering anything: greetings, and reactions to what the bot just said.
_GREETINGS = frozenset("hi hello hey hiya there good morning afternoon evening".split())
_REACTIONS = frozenset(
    "oh ah well so um uh er erm hmm mm right okay ok alright brilliant great lovely perfect cool nice good "
    "sorry hang on wait actually just then thanks thank you cheers".split()
)
_YES_NO = frozenset("yes yeah yep yup no nope nah sure please fine".split())
_BARE_ANSWERS = _YES_NO | {"okay", "ok", "right", "alright"}


def is_bare_yes_no(text: str) -> bool:
    """A lone "Yes." / "No," / "Sure.": a whole answer, and very often the start of a longer one."""
    words = _words(text)
    return len(words) == 1 and words[0] in _BARE_ANSWERS


def is_opener(text: str, *, yes_no: bool) -> bool:
    """Only a greeting or a reaction so far ("Hi there.", "Yeah, hi.", "Okay, brilliant."): people go on
    to say what they want, so a pause after it is not the end of the turn.

    `yes_no`: the bot asked a yes/no question, where "Yes, please." or "Great." is a whole answer; there
    only greetings count (a "Hello?" answers nothing).
    """
    words = re.sub(r"[^a-z' ]+", " ", text.lower().replace("-", " ")).split()
    if not words:
        return False
    if yes_no:
        return all(w in _GREETINGS for w in words) and any(w in _GREETINGS - {"good", "there"} for w in words)
    return all(w in _GREETINGS or w in _REACTIONS or w in _YES_NO for w in words)
