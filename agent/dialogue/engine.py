"""Runs one call through a :class:`~agent.dialogue.flow.Flow`.

The engine is a pure state machine: an event in (call start, caller utterance, LLM result,
business-system result), a :class:`Reply` out. It does no I/O, no timing and no speech, and
reads no clock except the injectable ``today`` used to understand "tomorrow", so the same
engine drives a live WhatsApp call, ``wacall simulate``, ``wacall flows chat``/``test`` and
unit tests, and a call's behaviour can be replayed exactly from its transcript.

Effects the runtime must carry out (hand over, HTTP request, call-permission request, LLM
turn) are described in the reply (:mod:`agent.dialogue.effects`); results come back through
:meth:`FlowEngine.action_result` and :meth:`FlowEngine.llm_result`.

How a caller's turn at a question is understood (hesitations, asides, self-corrections,
read-backs, suggestions, checks before ending the call) lives in :mod:`agent.dialogue.asking`;
this module is the node-moving core. The conversation layer may also tell the engine that a
line was talked over (:meth:`FlowEngine.on_interrupted`), ask whether a partial transcript is
an unfinished answer (:meth:`FlowEngine.answer_incomplete`, :attr:`FlowEngine.expecting`) and
let an LLM help where offline matching is unsure (:meth:`FlowEngine.classification_request`).

Keypad presses arrive as whole entries (:meth:`FlowEngine.handle_keys`): the conversation
collects them by the rules :attr:`FlowEngine.keypad` gives for the current question, since
only it has a clock for the pause between keys.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import logging
import re
import urllib.parse
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from agent.dialogue import phrases
from agent.dialogue import slots as slot_parsing
from agent.dialogue.answers import understand
from agent.dialogue.asking import CLEAR_MARGIN, LLM_CLASSIFIED_SCORE, STRONG_MATCH, VALUE_EVIDENCE_SCORE, Asking
from agent.dialogue.conditions import evaluate
from agent.dialogue.effects import (
    Action,
    Handover,
    HttpRequest,
    LlmRequest,
    Reply,
    RequestCallPermission,
    SendCallButton,
    ToolCall,
    ToolCallLike,
)
from agent.dialogue.flow import Flow, FlowError, check_flow
from agent.dialogue.model import DEFAULT_KEY_TIMEOUT_S, MASK, Ask, Intent, Node, SlotValue, Variants
from agent.dialogue.nlu import DEFAULT_THRESHOLD, normalize, rank_intents
from agent.dialogue.state import Check, ClassificationRequest, Expectation, KeyEntry, Turn
from agent.dialogue.structure import FlowFacts
from agent.dialogue.templates import iso, lookup, render_prompt, single_placeholder
from agent.dialogue.templates import render as _render
from agent.dialogue.tools import chat_messages, dig, tool_arguments, tool_schemas
from agent.dialogue.utterance import kind, read

__all__ = [
    "STRONG_MATCH",
    "Action",
    "ClassificationRequest",
    "Classifier",
    "Expectation",
    "FlowEngine",
    "Handover",
    "HttpRequest",
    "KeyEntry",
    "LlmRequest",
    "Reply",
    "RequestCallPermission",
    "SendCallButton",
    "ToolCall",
    "ToolCallLike",
    "render",
]

log = logging.getLogger(__name__)

#: Nodes entered in one turn before the engine assumes a conditional loop and stops; far
#: above any real script, low enough that a bug can never hang a live call.
MAX_STEPS_PER_TURN = 50

#: Helps offline matching where it is unsure: ``(text, intents) -> (best intent or None,
#: confidence)``, the same contract as :func:`agent.dialogue.nlu.match_intent`.
Classifier = Callable[[str, Sequence[Intent]], tuple[Intent | None, float]]

Waiting = Literal["answer", "llm", "action"]

#: Words with which a caller holds back a call that is ending ("wait", "one more thing", "hang on").
_WAIT_RE = re.compile(
    r"\b(wait|hold on|hang on|one more thing|another thing|another question|one more question|before you go|"
    r"actually|just a (second|sec|moment|minute))\b"
)
_ISO_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_CLOCK_RE = re.compile(r"\d{1,2}:\d{2}(?::\d{2})?")


def render(template: str, context: Mapping[str, Mapping[str, Any]]) -> str:
    """Fill ``{{caller.name}}`` / ``{{slot}}`` placeholders, never failing on missing data.

    A missing value becomes empty and the surrounding text is tidied ("Hi {{caller.name}},"
    -> "Hi,") because a caller hearing "Hi none" or a crashed call is worse than a slightly
    plainer sentence.
    """
    return _render(template, context, speak=slot_parsing.speak)


class FlowEngine(Asking):
    """The state of one call: current node, slots, retry count, transcript, pending effects."""

    def __init__(
        self,
        flow: Flow,
        *,
        caller: Mapping[str, Any] | None = None,
        call: Mapping[str, Any] | None = None,
        slots: Mapping[str, Any] | None = None,
        today: dt.date | Callable[[], dt.date] | None = None,
        llm_available: bool = True,
        classifier: Classifier | None = None,
        recorded: bool | None = None,
    ) -> None:
        """`recorded`: whether this call is being recorded (the runtime decides, from the flow and the
        server's settings); None takes the flow's own `recording.enabled`, as `wacall flows test` does."""
        # Flows from load_flow are already checked; this catches hand-built ones before a
        # caller hits a dead end mid-call.
        issues = check_flow(flow)
        if issues:
            raise FlowError(issues[0].message, source=flow.source)
        self.flow = flow
        self.node: str = flow.start
        self.ended = False
        self.history: list[tuple[str, str]] = []
        self.misses = 0  # unmatched utterances in a row at the current node
        # The flow ran out of retries and went to its `no_match` node: whatever that node says, the caller's
        # task was not done by the bot (reports leave the call out of containment).
        self.gave_up = False
        self._slots: dict[str, Any] = {k: v for k, v in flow.slots.items() if v is not None}
        self._slots.update(slots or {})
        self._caller: dict[str, Any] = dict(caller or {})
        # What started the call ({{call.payload}}, {{call.payload_source}}); the payload picks the entry point.
        self._call: dict[str, Any] = dict(call or {})
        self.node = self.entry_node
        self._today = today
        self._llm_available = llm_available
        self._classifier = classifier
        self._recorded = bool(flow.recording.enabled) if recorded is None else recorded
        self._slot_types = flow.slot_types()
        self._queues: dict[str, list[str]] = {}
        for node in flow.nodes.values():
            if node.handover is not None:
                self._queues.setdefault(node.handover.queue, list(node.handover.skills))
        self._visits: Counter[str] = Counter()
        self._waiting: Waiting | None = None
        self._pending: HttpRequest | None = None
        self._action_count = 0
        self._last_said: list[str] = []
        self._hung_up = False
        self._started = False
        self._last_question: str | None = None  # where "wait, one more thing" over a goodbye goes back to
        self._facts = FlowFacts(flow)
        # FAQ entries are matched like intents (the goto is never followed).
        self._faq_intents = [
            Intent(name=entry.name, examples=entry.examples, keywords=entry.keywords, goto=entry.name)
            for entry in flow.faq
        ]
        self._check: Check | None = None  # a read-back, suggestion or intent the caller must confirm
        self._partial = ""  # digits heard so far at the current question
        self._unheard: list[str] = []  # lines the caller talked over before they were finished
        self._spoken: list[str] = []  # the lines of the latest reply that said anything
        self._digression: str | None = None  # the question to return to after an LLM answered an aside
        self._secret_slots = frozenset(
            node.ask.slot for node in flow.nodes.values() if node.ask is not None and node.ask.secret
        )

    # -- public state ------------------------------------------------------------------

    @property
    def slots(self) -> dict[str, Any]:
        """A copy of what the call has learnt so far, as it may be shown and recorded: answers to
        `secret` questions (a PIN) are masked, since this is what call records, the agent console
        and logs get. The flow itself (requests, conditions) uses the real values."""
        out = dict(self._slots)
        for name in self._secret_slots.intersection(out):
            out[name] = MASK
        return out

    @property
    def slot_values(self) -> dict[str, Any]:
        """A copy of what the call has learnt, secrets unmasked (flow tests check them)."""
        return dict(self._slots)

    @property
    def secret(self) -> bool:
        """Whether the caller's next answer is a secret (a PIN): to be masked wherever it is recorded."""
        if not self._started or self.ended or self._waiting != "answer":
            return False
        ask = self.flow.nodes[self.node].ask
        return ask is not None and ask.secret

    @property
    def keypad(self) -> KeyEntry | None:
        """How keys pressed now are collected into one entry (``None`` before the call starts or
        after it ended). A question that takes a number takes its digits; anywhere else one key
        is one choice (an intent's `key`; a key that picks nothing is a miss)."""
        if not self._started or self.ended:
            return None
        node = self.flow.nodes[self.node]
        if self._waiting != "answer":
            # A lookup or an LLM turn: only a global key ("0 for a person") means anything now.
            keys = frozenset(intent.key for intent in self.flow.global_intents if intent.key)
            return KeyEntry(1, None, DEFAULT_KEY_TIMEOUT_S, instant=keys, waiting=False)
        ask = node.ask
        if ask is None or not ask.takes_digits:
            return KeyEntry(1, None, DEFAULT_KEY_TIMEOUT_S, secret=ask is not None and ask.secret)
        entry = ask.keypad_entry()
        keys = {intent.key for intent in [*node.intents, *self.flow.global_intents] if intent.key}
        instant = frozenset(key for key in keys if not key.isdigit() and key != entry.terminator)
        return KeyEntry(
            entry.max_digits or 1, entry.terminator, entry.timeout_s, secret=ask.secret, instant=instant, typing=True
        )

    @property
    def waiting_for(self) -> Waiting | None:
        """What the engine needs next: the caller's ``answer``, an ``llm`` result or an
        ``action`` result (``None`` once the call is over)."""
        return None if self.ended else self._waiting

    @property
    def pending_action(self) -> HttpRequest | None:
        return self._pending

    def today(self) -> dt.date:
        if isinstance(self._today, dt.date):
            return self._today
        return (self._today or dt.date.today)()

    def classify_with(self, fn: Classifier | None) -> None:
        """Let another classifier (an LLM) help pick intents; ``None`` restores offline-only
        matching. It is asked only when offline matching is unsure (no intent clearly ahead),
        never instead of it; if it raises, offline matching decides that turn.

        A live call's LLM is asynchronous: use :meth:`classification_request` and pass the
        model's pick to :meth:`handle` as ``classified`` instead."""
        self._classifier = fn

    @property
    def expecting(self) -> Expectation | None:
        """What the current question expects (``None`` when no answer is awaited), so the
        turn-taking layer can wait longer for a caller who is reading out a number."""
        if not self._started or self.ended or self._waiting != "answer":
            return None
        if self._check is not None:
            return Expectation("yes_no", confirming=True)
        ask = self.flow.nodes[self.node].ask
        if ask is None:
            return Expectation("intent")
        missing: int | None = None
        if ask.type == "digits" or (ask.type == "number" and ask.length is not None):
            missing = max(ask.length.min - len(self._partial), 0) if ask.length is not None else None
        return Expectation(ask.type, digits_missing=missing)

    def answer_incomplete(self, text: str) -> bool:
        """Whether ``text`` (a transcript so far) is an answer the caller has not finished:
        part of a number read out ("four eight two" of five digits), or a value just taken
        back ("Tuesday, no —", "no, wait"). Pure: the call does not change."""
        if not self._started or self.ended or self._waiting != "answer" or not normalize(text).strip():
            return False
        ask = self.flow.nodes[self.node].ask
        yes_no = self._check is not None or (ask is not None and ask.type == "yes_no")
        words = normalize(text).split()
        if len(words) >= 2 and read(text, yes_no=yes_no).retracted:
            return True  # "Tuesday, no —"; a bare "No." is an answer
        if ask is not None and self._check is None and (ask.type == "digits" or ask.length is not None):
            answer = understand(ask, text, today=self.today(), hours=self.flow.business_hours, partial=self._partial)
            if answer.kind == "partial":
                return True
            # One or two words that are neither digits nor anything else the flow knows ("Borry" for "four
            # eight"): most likely the first group of the number, misheard; the rest is on its way.
            return answer.kind == "none" and len(words) <= 2 and not self._matches_an_intent(text)
        return False

    def answer_taken(self, text: str) -> bool:
        """Whether ``text`` gives the current question (a day, a time, a choice, a number) a value as it is,
        with nothing taken back: "Tomorrow.", "The laptop." The turn-taking layer may then end a one-word
        turn early, as it does a finished sentence. Yes/no questions and checks are left to their own rules
        (a bare yes is so often the start of a sentence). Pure: the call does not change."""
        if not self._started or self.ended or self._waiting != "answer" or self._check is not None:
            return False
        ask = self.flow.nodes[self.node].ask
        if ask is None or ask.type == "yes_no" or not normalize(text).strip():
            return False
        answer = understand(ask, text, today=self.today(), hours=self.flow.business_hours, partial=self._partial)
        return answer.kind == "value" and not read(text, yes_no=False).retracted

    def would_miss(self, text: str) -> bool:
        """Whether ``text`` (a transcript so far) would get a "sorry?" at the current question: words the
        flow can make nothing of. Heard at a pause, they are more likely half a sentence ("I'd like to…",
        misheard as "I'd like to vote.") than a whole one, so the turn-taking layer waits longer before
        re-prompting. Pure: the turn is tried on a snapshot and the call is put back as it was."""
        if not self._started or self.ended or self._waiting != "answer" or kind(text) != "content":
            return False
        state = self.snapshot()
        misses = self.misses
        try:
            self.handle(text)
            return self.misses > misses
        except Exception:
            return False
        finally:
            self.restore(state)

    def _matches_an_intent(self, text: str) -> bool:
        candidates = [*self.flow.nodes[self.node].intents, *self.flow.global_intents]
        return any(score >= DEFAULT_THRESHOLD for _, score in rank_intents(text, candidates))

    def answer_complete(self, text: str) -> bool:
        """Whether ``text`` is a whole answer to a number question that no further word could
        extend: all the digits of a fixed-length number ("four eight two nine one" of five), or
        a number whose next digit would pass the question's ``max`` ("1984" for a year). The
        turn-taking layer may then answer at once instead of waiting out a caller who "might be
        reading more digits". Pure: the call does not change."""
        if not self._started or self.ended or self._waiting != "answer" or self._check is not None:
            return False
        ask = self.flow.nodes[self.node].ask
        if ask is None or ask.type not in ("number", "digits") or not normalize(text).strip():
            return False
        answer = understand(ask, text, today=self.today(), hours=self.flow.business_hours, partial=self._partial)
        if answer.kind != "value" or read(text, yes_no=False).retracted:
            return False
        if ask.type == "digits" or ask.length is not None:
            digits = re.sub(r"\D", "", str(answer.value))
            return ask.length is not None and len(digits) >= ask.length.max
        value = answer.value
        if not isinstance(value, int | float) or ask.max is None or value < 0:
            return False
        return (ask.min is None or value >= ask.min) and value * 10 > ask.max

    def on_interrupted(self, line: str) -> None:
        """The caller talked over ``line`` (one of the latest reply's ``lines``) and it was
        cut off before it finished playing.

        The engine then treats that line and the ones after it as unheard: on the caller's
        next turn, unless that turn clearly goes somewhere (an intent, a typed answer, an FAQ
        question), it says them again instead of taking, say, a "yes" said over a delivery
        status as the answer to a question the caller never heard. A line that is not part of
        the latest reply is ignored, so a late call is harmless.
        """
        if self.ended or not self._spoken:
            return
        wanted = " ".join(line.split())
        for index, said in enumerate(self._spoken):
            if " ".join(said.split()) == wanted:
                self._unheard = list(self._spoken[index:])
                return

    def classification_request(self, text: str) -> ClassificationRequest | None:
        """What an LLM should classify ``text`` among, when offline matching is unsure; ``None``
        when the offline path already has a clear answer (or the engine is not waiting for
        one). Pure: the call does not change.

        The runtime awaits its model on ``request.names`` (bounded by a short timeout) and
        passes the pick to ``handle(text, classified=name)``; ``None`` or an unknown name is
        fine: the offline path then decides alone.
        """
        if not self._started or self.ended or self._waiting != "answer" or self._check is not None:
            return None
        if kind(text) != "content":
            return None
        node = self.flow.nodes[self.node]
        if node.ask is not None:
            answer = understand(
                node.ask, text, today=self.today(), hours=self.flow.business_hours, partial=self._partial
            )
            if answer.kind != "none":
                return None
        candidates = [*node.intents, *self.flow.global_intents]
        ranked = sorted((score for _, score in rank_intents(text, candidates)), reverse=True)
        best = ranked[0] if ranked else 0.0
        runner_up = ranked[1] if len(ranked) > 1 else 0.0
        if best >= STRONG_MATCH and best - runner_up >= CLEAR_MARGIN:
            return None
        names: list[str] = []
        descriptions: dict[str, str] = {}
        for item in [*candidates, *self.flow.faq]:
            if item.name in descriptions:
                continue
            names.append(item.name)
            descriptions[item.name] = "; ".join([*item.examples[:3], *item.keywords[:3]])
        return ClassificationRequest(text=text, names=names, descriptions=descriptions) if names else None

    # -- events ------------------------------------------------------------------------

    @property
    def entry_node(self) -> str:
        """Where this call starts: the flow's entry point for the call's payload, else ``start``."""
        payload = self._call.get("payload")
        return self.flow.entry_node(payload if isinstance(payload, str) else None)

    def start(self) -> Reply:
        """Enter the start node: the greeting, plus anything it flows into."""
        if self._started:
            raise RuntimeError("FlowEngine.start() called twice for the same call")
        self._started = True
        turn = Turn()
        self._run(self.entry_node, turn)
        reply = self._reply(turn)
        announce = self.flow.recording.announce
        if self._recorded and announce:
            # Kept out of what the engine counts as said, so "say that again" repeats the greeting, not the
            # notice; the whole opening is not interruptible so a caller's "hello?" cannot cut the notice off.
            reply.lines = [announce, *reply.lines]
            reply.interruptible = False
        return reply

    def handle(self, text: str, *, classified: str | None = None) -> Reply:
        """Advance the conversation by one caller utterance.

        ``classified`` is an LLM's pick for this turn (see :meth:`classification_request`);
        it only counts where offline matching was unsure."""
        if not self._started:
            raise RuntimeError("FlowEngine.handle() called before start()")
        if self.ended:
            # Speech can still arrive while the goodbye plays; it must not restart the flow.
            return self._quiet(end_call=self._hung_up)
        if not normalize(text).strip():
            # Empty or punctuation-only transcripts are noise (a cough, a click), not a failed
            # attempt to answer, so they neither trigger "sorry?" nor count towards no_match.
            return self._quiet()
        self.history.append(("caller", MASK if self.secret else text))
        node = self.flow.nodes[self.node]

        if self._waiting == "action":
            # Only a global intent ("goodbye", "a person please") can cut a lookup short.
            intent, score, scores = self._match(text, self.flow.global_intents)
            if intent is None:
                return self._quiet(score=score, scores=scores)
            self._pending = None
            return self._follow(intent, score, scores)

        if self._waiting == "llm" and self._digression is not None:
            # The caller spoke again while the LLM answered an aside: take the new turn.
            self._digression = None
            self._waiting = "answer"
        if self._waiting == "llm":
            intent, score, scores = self._match(text, self.flow.global_intents)
            if intent is not None and score >= STRONG_MATCH:
                return self._follow(intent, score, scores)
            reply = self._quiet(score=score, scores=scores)
            reply.llm = self._llm_request(node)
            return reply

        return self._answer(node, text, classified)

    def handle_keys(self, keys: str) -> Reply:
        """Advance the conversation by one keypad entry, as a spoken answer would.

        ``keys`` is the entry as collected by the rules of :attr:`keypad` ("1" at a menu,
        "48291#" for an order number; a trailing terminator is dropped). A key that picks an
        intent follows it at once (a key press is never ambiguous, so no check first); digits
        answer a number question; anything else is a miss, like words not understood."""
        if not self._started:
            raise RuntimeError("FlowEngine.handle_keys() called before start()")
        if self.ended:
            return self._quiet(end_call=self._hung_up)
        keys = "".join(keys.split())
        if not keys:
            return self._quiet()
        entry = self.keypad
        self.history.append(("caller", f"[keys] {MASK if entry is not None and entry.secret else keys}"))
        global_keys = {intent.key: intent for intent in self.flow.global_intents if intent.key}
        if self._waiting in ("action", "llm"):
            # Like words, only a global intent ("0 for a person") cuts a lookup or an LLM turn short.
            intent = global_keys.get(keys)
            if intent is None:
                return self._quiet()
            self._pending = None
            self._digression = None
            return self._follow(intent, 1.0, {intent.name: 1.0})
        node = self.flow.nodes[self.node]
        self._unheard = []  # a key press goes somewhere: nothing to say again first
        own_keys = {intent.key: intent for intent in node.intents if intent.key}
        ask = node.ask
        if ask is not None and ask.takes_digits and entry is not None and keys not in entry.instant:
            if entry.terminator is not None and keys.endswith(entry.terminator):
                keys = keys[: -len(entry.terminator)]
            return self._keyed_answer(node, ask, keys)
        intent = own_keys.get(keys) or global_keys.get(keys)
        if intent is not None:
            return self._follow(intent, 1.0, {intent.name: 1.0})
        self._check = None
        return self._miss(node, 0.0, {})

    def _keyed_answer(self, node: Node, ask: Ask, digits: str) -> Reply:
        """Digits typed at a number question: checked against its `length`, `min` and `max`, then
        read back or stored like a spoken answer (never carried on to the next question: keys
        answer one question)."""
        self._check = None
        if not digits.isdigit():
            self._partial = ""
            return self._miss(node, 0.0, {})
        if ask.length is not None and self._partial and not ask.length.fits(len(digits)):
            # "four eight two" said, then the rest typed: one number.
            if ask.length.fits(len(self._partial + digits)):
                digits = self._partial + digits
        self._partial = ""
        if ask.length is not None and not ask.length.fits(len(digits)):
            expected = str(ask.length.min) if ask.length.exact else f"{ask.length.min} to {ask.length.max}"
            return self._miss(node, 0.0, {}, lines=[phrases.keyed_wrong_length(len(digits), expected)])
        value: Any = digits
        if ask.type == "number":
            value = int(digits)
            if (ask.min is not None and value < ask.min) or (ask.max is not None and value > ask.max):
                return self._miss(node, 0.0, {})
        if ask.reads_back:
            line = self._read_back_line(ask, value)
            self._check = Check("value", [line], slot=ask.slot, value=value)
            return self._speak_lines([line], node)
        self._slots[ask.slot] = value
        turn = Turn()
        self._run(self._after(node), turn)
        return self._reply(turn)

    # -- turn-taking support: take back a turn, reopen an ending ------------------------

    #: Attributes shared with other calls or fixed for the call: never copied by :meth:`snapshot`.
    _SHARED_STATE = frozenset(
        {"flow", "_classifier", "_today", "_slot_types", "_facts", "_faq_intents", "_secret_slots"}
    )

    def snapshot(self) -> dict[str, Any]:
        """The call's state as it is now, for :meth:`restore`.

        The conversation takes one before each caller turn: when the caller turns out to have only paused
        mid-thought, the fragment's effect on the flow (a node moved, a miss counted, a slot filled) is taken
        back and the whole thought is handled instead. Copies every attribute but the shared ones, so state
        added to the engine later is covered without touching this method.
        """
        return {k: copy.deepcopy(v) for k, v in vars(self).items() if k not in self._SHARED_STATE}

    def restore(self, state: Mapping[str, Any]) -> None:
        """Go back to a :meth:`snapshot` taken earlier in this call."""
        for key, value in state.items():
            setattr(self, key, copy.deepcopy(value))

    def reopen(self, text: str) -> Reply | None:
        """The caller spoke over the ending of the call: a turn that goes somewhere is followed.

        A global intent that leads on ("a person, please") is followed; words that ask the bot to wait
        ("wait, one more thing") go back to the last question the caller was asked. Anything else is
        ``None``: the call may end.
        """
        if not self._started or not self.ended or not normalize(text).strip():
            return None
        intent, score, scores = self._match(text, self.flow.global_intents)
        if intent is not None and intent.goto is not None and not self._ends_at(intent.goto):
            self.ended = self._hung_up = False
            self.history.append(("caller", text))
            return self._follow(intent, score, scores)
        if _WAIT_RE.search(normalize(text)) and self._last_question is not None:
            before = self.snapshot()
            self.goto(self._last_question)
            answer = self.handle(text)  # "wait, what are your opening hours?" is answered at once
            if self.misses == 0:
                return answer
            self.restore(before)
            self.history.append(("caller", text))
            return self.goto(self._last_question)
        return None

    def _ends_at(self, node_id: str) -> bool:
        node = self.flow.nodes.get(node_id)
        return node is not None and node.end

    def goto(self, node: str) -> Reply:
        """Continue the call at `node`: a human agent handing the call back, or a queue's fallback.

        A handover ends the engine's part of the call; this resumes it, as if the flow had moved there.
        """
        if node not in self.flow.nodes:
            raise KeyError(f"no node {node!r} in flow {self.flow.name!r}")
        self.ended = False
        self._hung_up = False
        self.misses = 0
        turn = Turn()
        self._run(node, turn)
        return self._reply(turn)

    def repeat(self) -> Reply:
        """Say the last thing again (the global "repeat that"), without moving or counting
        it as a misunderstanding."""
        if not self._started:
            raise RuntimeError("FlowEngine.repeat() called before start()")
        if self.ended:
            return self._quiet(end_call=self._hung_up)
        lines = list(self._last_said)
        self._say(lines)
        return Reply(
            lines=lines,
            node=self.node,
            interruptible=self.flow.nodes[self.node].interruptible,
            slots=self.slots,
        )

    def llm_result(self, text: str, tool_calls: Sequence[ToolCallLike]) -> Reply:
        """Take the LLM's turn: ``text`` was already streamed to the caller; tool calls may set
        slots and move the call. Invalid tool calls are logged and ignored, never raised: a
        model's mistake must not end a live call."""
        if self.ended or self._waiting != "llm":
            log.warning("llm_result at node '%s' which is not waiting for an LLM; ignored", self.node)
            return self._quiet(end_call=self.ended and self._hung_up)
        node = self.flow.nodes[self.node]
        if self._digression is not None:
            # The LLM answered an aside; its tools are not offered there. Back to the question.
            self._digression = None
            self._waiting = "answer"
            if text.strip():
                self.history.append(("bot", text.strip()))
            return self._speak_lines(self._question_lines(node), node)
        assert node.llm is not None
        if text.strip():
            self.history.append(("bot", text.strip()))
            self._last_said = [text.strip()]
        transition: Callable[[Turn], None] | None = None
        for call in tool_calls:
            args = tool_arguments(call)
            if args is None:
                continue
            if call.name == "set_slot":
                self._tool_set_slot(node, args)
                continue
            step = self._tool_transition(node, call.name, args)
            if step is None:
                continue
            if transition is not None:
                log.warning("LLM called '%s' after another transition in the same turn; ignored", call.name)
                continue
            transition = step
        turn = Turn()
        if transition is not None:
            transition(turn)
        return self._reply(turn)

    def action_result(self, action_id: str, ok: bool, data: Mapping[str, Any] | None = None) -> Reply:
        """Continue after a business-system request: store the answer's fields and go to
        ``on_success``, or go to ``on_error`` (failure, timeout, or fields missing)."""
        pending = self._pending
        if self.ended or pending is None or pending.id != action_id:
            log.warning("result for action '%s' that is not pending (call moved on?); ignored", action_id)
            return self._quiet(end_call=self.ended and self._hung_up)
        node = self.flow.nodes[self.node]
        assert node.http is not None
        self._pending = None
        self._waiting = None
        stored: dict[str, Any] = {}
        if ok:
            for slot, path in pending.store.items():
                found, value = dig(data, path)
                if not found:
                    log.warning("action '%s': answer has no '%s' for slot '%s'; taking on_error", action_id, path, slot)
                    ok = False
                    break
                stored[slot] = self._from_json(slot, value)
        if ok:
            self._slots.update(stored)
        turn = Turn()
        self._run(node.http.on_success if ok else node.http.on_error, turn)
        return self._reply(turn)

    def _from_json(self, slot: str, value: Any) -> Any:
        """Type a value from a business system's JSON: the slot's declared type if it has one,
        else ISO dates ("2024-12-05") and clock times ("14:30") become real dates and times, so
        they are spoken naturally and compare correctly in conditions."""
        slot_type = self._slot_types.get(slot)
        if slot_type is not None:
            coerced = slot_parsing.coerce(value, slot_type, today=self.today())
            return value if coerced is None else coerced
        if isinstance(value, str):
            text = value.strip()
            if _ISO_DATE_RE.fullmatch(text):
                with contextlib.suppress(ValueError):
                    return dt.date.fromisoformat(text)
            if _CLOCK_RE.fullmatch(text):
                with contextlib.suppress(ValueError):
                    return dt.time.fromisoformat(text if len(text.split(":")[0]) == 2 else "0" + text)
        return value

    # -- understanding -----------------------------------------------------------------

    def _match(
        self, text: str, intents: Sequence[Intent], *, classified: str | None = None
    ) -> tuple[Intent | None, float, dict[str, float]]:
        """The best intent for ``text`` offline; an LLM's pick (``classified``, or the
        :meth:`classify_with` classifier) only decides when offline matching is unsure."""
        if not intents:
            return None, 0.0, {}
        ranked = rank_intents(text, intents)
        scores: dict[str, float] = {}
        best: Intent | None = None
        best_score = 0.0
        for intent, score in ranked:
            scores.setdefault(intent.name, score)
            if score > best_score:  # strict: earlier intents (the node's own) win ties
                best, best_score = intent, score
        if best is None or best_score < DEFAULT_THRESHOLD:
            lifted = self._value_evidence(text, intents, scores)
            if lifted is not None and lifted[1] > best_score:
                best, best_score = lifted
                scores[best.name] = best_score
        runner_up = max((s for name, s in scores.items() if best is None or name != best.name), default=0.0)
        sure = best is not None and best_score >= STRONG_MATCH and best_score - runner_up >= CLEAR_MARGIN
        if not sure:
            picked = self._pick(text, intents, classified)
            if picked is not None:
                intent, score = picked
                score = max(score, scores.get(intent.name, 0.0))
                scores[intent.name] = score
                return intent, score, scores
        if best is None or best_score < DEFAULT_THRESHOLD:
            return None, best_score, scores
        return best, best_score, scores

    def _value_evidence(
        self, text: str, intents: Sequence[Intent], scores: dict[str, float]
    ) -> tuple[Intent, float] | None:
        """A caller who answers the menu with a value ("an appointment tomorrow at half
        three") points at the one intent whose path asks for that kind of value next."""
        owners: list[Intent] = []
        for intent in intents:
            if intent.goto is None:
                continue
            found = self._facts.first_ask(intent.goto)
            if found is None or found[1].type in ("yes_no", "text"):
                continue
            answer = understand(found[1], text, today=self.today(), hours=self.flow.business_hours, strict=True)
            if answer.kind in ("value", "partial", "vague"):
                owners.append(intent)
        if not owners or len({intent.goto for intent in owners}) > 1:
            return None
        lift = round(max(scores.get(owners[0].name, 0.0), VALUE_EVIDENCE_SCORE), 4)
        return owners[0], lift

    def _pick(self, text: str, intents: Sequence[Intent], classified: str | None) -> tuple[Intent, float] | None:
        if classified is not None:
            found = next((intent for intent in intents if intent.name == classified), None)
            return (found, LLM_CLASSIFIED_SCORE) if found is not None else None
        if self._classifier is None:
            return None
        try:
            intent, score = self._classifier(text, intents)
        except Exception:
            log.warning("intent classifier failed; using offline matching for this turn", exc_info=True)
            return None
        return (intent, score) if intent is not None else None

    def _follow(self, intent: Intent, score: float, scores: dict[str, float], *, carry: str | None = None) -> Reply:
        self._assign(intent.assign)
        if intent.repeat:
            reply = self.repeat()
            reply.intent, reply.score, reply.scores = intent.name, score, scores
            return reply
        assert intent.goto is not None
        self._waiting = None
        self._check = None
        turn = Turn(carry=carry)
        self._run(intent.goto, turn)
        return self._reply(turn, intent=intent.name, score=score, scores=scores)

    def _miss(self, node: Node, score: float, scores: dict[str, float], *, lines: list[str] | None = None) -> Reply:
        self.misses += 1
        limit = node.max_retries if node.max_retries is not None else self.flow.max_retries
        target = node.no_match or self.flow.no_match
        if self.misses > limit and target is not None:
            self.gave_up = True
            turn = Turn()
            self._run(target, turn)
            return self._reply(turn, score=score, scores=scores)
        if lines is not None:
            said = [line for line in lines if line]
        else:
            options = node.reprompt or self.flow.fallback
            line = self._text(options[(self.misses - 1) % len(options)])
            said = [line] if line else []
        self._say(said)
        if node.reprompt or lines is not None:
            self._last_said = said  # a rephrased question is worth repeating; "sorry?" is not
        return Reply(
            lines=said, node=self.node, score=score, interruptible=node.interruptible, slots=self.slots, scores=scores
        )

    # -- moving through nodes ------------------------------------------------------------

    def _run(self, node_id: str | None, turn: Turn) -> None:
        """Enter ``node_id`` and keep going through nodes that do not wait, collecting
        what is said and done on the way."""
        steps = 0
        current = node_id
        while current is not None:
            steps += 1
            if steps > MAX_STEPS_PER_TURN:
                log.error(
                    "flow '%s': more than %d nodes in one turn at '%s'; stopping",
                    self.flow.name,
                    MAX_STEPS_PER_TURN,
                    current,
                )
                self._waiting = "answer"
                break
            current = self._enter(current, turn)
        if turn.lines:
            self._last_said = list(turn.lines)
        self._say(turn.lines)

    def _enter(self, node_id: str, turn: Turn) -> str | None:
        """Perform one node; return the next node to enter now, or ``None`` to wait/stop."""
        node = self.flow.nodes[node_id]
        self.node = node_id
        self.misses = 0
        self._waiting = None
        self._check = None
        self._partial = ""
        self._visits[node_id] += 1
        self._assign(node.assign)
        if node.ask is not None and turn.carry is not None and node.ask.slot not in turn.carried:
            carried = self._carry(node, node.ask, turn)
            if carried != "":
                return carried
        lines = [line for line in (self._say_item(item, node_id) for item in node.say) if line]
        turn.lines.extend(lines)
        turn.interruptible = turn.interruptible and node.interruptible
        if node.request_call_permission is not None:
            turn.actions.append(RequestCallPermission(reason=self._text(node.request_call_permission.reason)))
        if (button := node.send_call_button) is not None:
            turn.actions.append(
                SendCallButton(
                    payload=None if button.payload is None else self._text(button.payload),
                    text=None if button.text is None else self._text(button.text),
                )
            )
        if node.handover is not None:
            spec = node.handover
            skills = [skill for skill in (self._text(s) for s in spec.skills) if skill]
            turn.actions.append(Handover(queue=spec.queue, skills=skills, reason=self._text(spec.reason)))
            self.ended = True
            return None
        if node.end:
            turn.end = True
            self.ended = True
            self._hung_up = True
            return None
        if node.http is not None:
            request = self._http_request(node_id, node)
            turn.actions.append(request)
            self._pending = request
            self._waiting = "action"
            return None
        if node.llm is not None:
            if not self._llm_available and node.llm.offline is not None:
                return node.llm.offline
            self._waiting = "llm"
            if not turn.lines:
                turn.llm = self._llm_request(node)  # nothing said yet this turn: the LLM opens
            return None
        if node.is_question:
            self._waiting = "answer"
            self._last_question = node_id
            return None
        return self._after(node)

    def _after(self, node: Node) -> str | None:
        """Where a node leads once it is done: the first branch whose condition holds, else ``next``."""
        for branch in node.branches:
            if evaluate(branch.condition, self._slots, self._caller, today=self.today()):
                return branch.goto
        return node.next

    def _say_item(self, item: str | Variants, node_id: str) -> str:
        if isinstance(item, Variants):
            item = item.one_of[(self._visits[node_id] - 1) % len(item.one_of)]
        return self._text(item)

    # -- rendering -----------------------------------------------------------------------

    def _context(self) -> dict[str, Mapping[str, Any]]:
        return {"caller": self._caller, "call": self._call, "slots": self._slots}

    def _speak(self, value: Any) -> str:
        return slot_parsing.speak(value, today=self.today())

    def _text(self, template: str) -> str:
        return _render(template, self._context(), speak=self._speak)

    def _data(self, value: Any, *, quote: bool = False) -> Any:
        """Fill placeholders in request data; a field that is exactly one placeholder keeps
        the slot's type (a number stays a number in the JSON body)."""
        if isinstance(value, str):
            inner = single_placeholder(value)
            if inner is not None and not quote:
                return iso(lookup(inner, self._context()))

            def as_text(v: Any) -> str:
                text = str(iso(v)) if not isinstance(v, bool) else ("true" if v else "false")
                return urllib.parse.quote(text, safe="") if quote else text

            return _render(value, self._context(), speak=as_text, tidy=False)
        if isinstance(value, dict):
            return {key: self._data(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self._data(item) for item in value]
        return value

    def _assign(self, assign: Mapping[str, SlotValue]) -> None:
        for name, value in assign.items():
            self._slots[name] = self._data(value) if isinstance(value, str) else value

    def _http_request(self, node_id: str, node: Node) -> HttpRequest:
        spec = node.http
        assert spec is not None
        self._action_count += 1
        return HttpRequest(
            id=f"{node_id}#{self._action_count}",
            method=spec.method,
            url=self._data(spec.url, quote=True),
            headers={key: str(self._data(value)) for key, value in spec.headers.items()},
            json_body=self._data(spec.json_body),
            timeout_s=spec.timeout_s,
            store=dict(spec.store),
        )

    # -- LLM -------------------------------------------------------------------------------

    def _llm_request(self, node: Node) -> LlmRequest:
        assert node.llm is not None
        context = self._context()
        # Caller-controlled values (profile name, slots) go to the model as data, never inside its instructions.
        parts: list[str] = []
        call_data: dict[str, Any] = {}
        for text in (self.flow.persona, node.llm.prompt):
            if text:
                rendered, data = render_prompt(text, context, speak=self._speak)
                parts.append(rendered.strip())
                call_data.update(data)
        return LlmRequest(
            node=node.id,
            system_prompt="\n\n".join(parts),
            call_data=call_data,
            messages=chat_messages(self.history),
            tools=tool_schemas(node.llm, self._queues),
            allowed_transitions=list(node.llm.transitions),
        )

    def _tool_set_slot(self, node: Node, args: dict[str, Any]) -> None:
        assert node.llm is not None
        name, value = args.get("name"), args.get("value")
        if name not in node.llm.slots:
            log.warning("LLM tried to set slot %r, not one of %s; ignored", name, node.llm.slots)
            return
        coerced = slot_parsing.coerce(value, self._slot_types.get(str(name)), today=self.today())
        if coerced is None:
            log.warning("LLM gave slot '%s' a value which does not fit; ignored", name)
            log.debug("LLM's value for slot '%s': %r", name, value)
            return
        self._slots[str(name)] = coerced

    def _tool_transition(self, node: Node, name: str, args: dict[str, Any]) -> Callable[[Turn], None] | None:
        """Validate a moving tool call; return how to perform it, or ``None`` if invalid."""
        llm = node.llm
        assert llm is not None
        if name == "end_call":

            def end(turn: Turn) -> None:
                turn.end = True
                self.ended = True
                self._hung_up = True

            return end
        if name == "handover":
            queue = str(args.get("queue") or "").strip()
            if not queue or (self._queues and queue not in self._queues):
                # The caller asked for a person; a vague or invented team name must not stop that.
                default = next(iter(self._queues), "default")
                if queue:
                    log.warning("LLM asked for unknown queue %r; handing over to '%s'", queue, default)
                queue = default
            reason = str(args.get("reason") or "").strip()

            def handover(turn: Turn) -> None:
                skills = [skill for skill in (self._text(s) for s in self._queues.get(queue, [])) if skill]
                turn.actions.append(Handover(queue=queue, skills=skills, reason=reason))
                self.ended = True

            return handover
        if name == "goto":
            target = args.get("node")
            if target not in llm.transitions:
                log.warning("LLM tried to go to %r, not one of %s; ignored", target, llm.transitions)
                return None
            return lambda turn: self._run(str(target), turn)
        declared = next((tool for tool in llm.tools if tool.name == name), None)
        if declared is None:
            log.warning("LLM called unknown tool %r at node '%s'; ignored", name, node.id)
            return None
        values: dict[str, Any] = {}
        for param, spec in declared.parameters.items():
            value = slot_parsing.coerce(args.get(param), spec.type, today=self.today())
            if value is None:
                log.warning("LLM tool '%s' gave a value of %s which does not fit; ignored", name, param)
                log.debug("LLM tool '%s': %s=%r", name, param, args.get(param))
                return None
            values[param] = value

        def declared_tool(turn: Turn) -> None:
            self._slots.update(values)
            self._run(declared.goto, turn)

        return declared_tool

    # -- replies -------------------------------------------------------------------------

    def _say(self, lines: list[str]) -> None:
        self.history.extend(("bot", line) for line in lines if line)
        if any(lines):
            self._spoken = [line for line in lines if line]
            self._unheard = []  # whatever was talked over before is superseded by what is said now

    def _quiet(self, *, end_call: bool = False, score: float = 0.0, scores: dict[str, float] | None = None) -> Reply:
        return Reply(
            lines=[],
            node=self.node,
            end_call=end_call,
            score=score,
            interruptible=self.flow.nodes[self.node].interruptible,
            slots=self.slots,
            scores=scores or {},
        )

    def _reply(
        self, turn: Turn, *, intent: str | None = None, score: float = 0.0, scores: dict[str, float] | None = None
    ) -> Reply:
        return Reply(
            lines=turn.lines,
            node=self.node,
            end_call=turn.end,
            intent=intent,
            score=score,
            interruptible=turn.interruptible,
            slots=self.slots,
            actions=turn.actions,
            llm=turn.llm,
            scores=scores or {},
        )
