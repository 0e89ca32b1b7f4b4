"""Small records the engine keeps within a turn and between turns.

Kept apart from the engine so the question-handling code (:mod:`agent.dialogue.asking`) and
the engine core share them without importing each other, and so the public ones
(:class:`Expectation`, :class:`ClassificationRequest`) have an obvious home.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from agent.dialogue.effects import Action, LlmRequest
from agent.dialogue.model import Intent

__all__ = ["Check", "ClassificationRequest", "Expectation", "KeyEntry", "Turn"]


@dataclass
class Turn:
    """Everything one event makes the bot say and do, gathered across the nodes it passes."""

    lines: list[str] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    end: bool = False
    interruptible: bool = True
    llm: LlmRequest | None = None
    #: What the caller said, for questions reached in the same turn that it already answers
    #: ("tomorrow at half three" answers the time question after the day), and the slots it
    #: has filled already (never twice: a rejected value must be asked for again).
    carry: str | None = None
    carried: set[str] = field(default_factory=set)


@dataclass
class Check:
    """Something the bot asked the caller to confirm before acting on it.

    ``value``: a read-back of an answer (``slot``/``value``). ``suggestion``: a concrete value
    offered for a vague answer ("How about two o'clock?"), ``others`` being the next ones to
    offer. ``intent``: an intent that would end or hand over the call, matched loosely.
    """

    kind: Literal["value", "suggestion", "intent"]
    lines: list[str]
    slot: str | None = None
    value: Any = None
    others: tuple[Any, ...] = ()
    intent: Intent | None = None
    score: float = 0.0
    scores: dict[str, float] = field(default_factory=dict)
    refused: int = 0


@dataclass(frozen=True)
class Expectation:
    """What the current question expects, for the turn-taking layer (a caller reading out
    digits pauses between groups: wait longer before taking the turn)."""

    type: str
    #: Digits still expected when part of a number was heard (``None``: not a digit question).
    digits_missing: int | None = None
    #: Whether the bot is waiting for a yes or no to something it read back or suggested.
    confirming: bool = False


@dataclass(frozen=True)
class ClassificationRequest:
    """Offline matching was unsure: the names an LLM may pick from (intents, then FAQ
    entries), with a few of each one's example sentences to describe it. Pass the LLM's pick
    (or ``None``) to :meth:`FlowEngine.handle` as ``classified``."""

    text: str
    names: list[str]
    descriptions: dict[str, str]


@dataclass(frozen=True)
class KeyEntry:
    """What the current question does with keypad presses, for the layer that collects them
    (the engine has no clock, so the terminator, the count and the pause between keys are
    applied there, and the finished entry handed to ``FlowEngine.handle_keys``)."""

    #: The entry is complete after this many keys (1 at a menu: one key is one choice).
    max_digits: int
    #: The key that completes the entry early (not part of it); ``None``: none.
    terminator: str | None
    #: Seconds without a key after which the keys so far are the entry.
    timeout_s: float
    #: The answer is a PIN or the like: show it masked wherever the call is recorded.
    secret: bool = False
    #: Keys that are a whole entry when pressed first (an intent's ``*`` while a number is typed).
    instant: frozenset[str] = frozenset()
    #: Whether keys type an answer (``digits``/``number``) rather than pick a menu choice.
    typing: bool = False
    #: Whether the flow waits for the caller at all; when not (a lookup, an LLM turn), only the
    #: ``instant`` keys (global intents) mean anything, and other keys must not cut the bot short.
    waiting: bool = True
