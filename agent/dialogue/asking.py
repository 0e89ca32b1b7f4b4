"""How the engine handles a caller's turn at a question.

People do not answer the way a form expects. They hesitate, greet, ask something else,
correct themselves, read numbers in groups, answer "after lunch", and talk over the bot.
This module is the engine's side of all that: which of these a turn is, what to say back,
what to store, and what to check with the caller before acting on it (a read-back, a
suggestion, an intent that would end the call). It is a mixin of
:class:`agent.dialogue.engine.FlowEngine` and uses its state and its node-moving core
(``_run``, ``_reply``, ``_miss``, ``_follow``, ``_match``); nothing here does I/O.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from agent.dialogue import phrases
from agent.dialogue.answers import Answer, understand
from agent.dialogue.conditions import evaluate
from agent.dialogue.digits import speak_digits
from agent.dialogue.effects import LlmRequest, Reply
from agent.dialogue.model import Ask, FaqEntry, Flow, Intent, Node, Variants
from agent.dialogue.nlu import DEFAULT_THRESHOLD, explained, normalize, rank_intents, score_intent, topic_units
from agent.dialogue.state import Check, Turn
from agent.dialogue.structure import FlowFacts
from agent.dialogue.templates import render as _render
from agent.dialogue.templates import render_prompt
from agent.dialogue.tools import chat_messages
from agent.dialogue.utterance import TurnKind, acknowledgement, is_question, kind, read

__all__ = ["CLEAR_MARGIN", "LLM_CLASSIFIED_SCORE", "STRONG_MATCH", "VALUE_EVIDENCE_SCORE", "Asking"]

#: An intent must be this sure to override a parsed answer ("no, get me a person" to a
#: yes/no question) or to interrupt an LLM conversation; a plain match is not enough there,
#: because a free-text answer or an LLM turn would otherwise be hijacked by loose matches.
STRONG_MATCH = 0.8
#: How far ahead of the runner-up an intent that ends or hands over the call must be to be
#: followed without checking with the caller first.
CLEAR_MARGIN = 0.15
#: The score an intent named by an LLM classifier gets when offline matching was unsure.
LLM_CLASSIFIED_SCORE = 0.7
#: The score of an intent chosen because the caller already gave the value its path asks
#: for next: just above the threshold, so any real example or keyword match outranks it.
VALUE_EVIDENCE_SCORE = 0.56

#: A yes/no question, to read "yes"/"no" (with self-corrections) in any state.
_YES_NO = Ask(slot="_yes_no", type="yes_no")
#: Words that add nothing to a "no" ("no, sorry, thanks").
_NO_ONLY = frozenset("no nope nah not sorry thanks thank you please it is that oh um uh well".split())


_BUT = re.compile(r"\bbut\b", re.I)
_LEADING_NO = re.compile(r"^(?:\s*(?:no|nope|nah|sorry|wait|actually|i mean|i said|it is|it's)\b[\s,.!-]*)+", re.I)
#: Words that fix which day is meant, so a weekday is not moved into the week on offer.
_DAY_PINNED = frozenset("this next coming today tomorrow week month".split()) | frozenset(
    "january february march april may june july august september october november december".split()
)


class Asking:
    """The question-handling half of :class:`~agent.dialogue.engine.FlowEngine`."""

    # Provided by FlowEngine (declared here for readers and type checkers).
    flow: Flow
    node: str
    misses: int
    history: list[tuple[str, str]]
    _slots: dict[str, Any]
    _caller: dict[str, Any]
    _facts: FlowFacts
    _faq_intents: list[Intent]
    _check: Check | None
    _partial: str
    _unheard: list[str]
    _spoken: list[str]
    _digression: str | None
    _waiting: Any
    _last_said: list[str]
    _last_question: str | None
    _visits: Counter[str]
    _llm_available: bool
    today: Callable[[], dt.date]
    _run: Callable[[str | None, Turn], None]
    _reply: Callable[..., Reply]
    _quiet: Callable[..., Reply]
    _miss: Callable[..., Reply]
    _follow: Callable[..., Reply]
    _match: Callable[..., tuple[Intent | None, float, dict[str, float]]]
    _after: Callable[[Node], str | None]
    _say: Callable[[list[str]], None]
    _say_item: Callable[[Any, str], str]
    _speak: Callable[[Any], str]
    _text: Callable[[str], str]
    _context: Callable[[], dict[str, Mapping[str, Any]]]

    # -- answering a question ----------------------------------------------------------

    def _answer(self, node: Node, text: str, classified: str | None) -> Reply:
        """One caller turn at a question: fillers, asides, corrections, typed answers, intents."""
        unheard, self._unheard = self._unheard, []
        turn_kind = kind(text)
        if self._check is not None:
            return self._answer_check(node, text, turn_kind, classified)
        if turn_kind == "hold":
            # "hang on", "one second": the caller asked for a moment; never a miss.
            reply = self._speak_lines([phrases.TAKE_YOUR_TIME], node)
            self._unheard = unheard  # still unheard: "sure" is not what the caller missed
            return reply
        if turn_kind in ("hesitation", "greeting", "apology", "presence"):
            # "um", "hi", "sorry?", "hello?": the question again, never a miss.
            return self._say_again(node, unheard, presence=turn_kind == "presence")
        # At a yes/no question "no" is an answer, not a correction: "not today no, I get paid on
        # the 13th" is one thought.
        said = read(text, yes_no=node.ask is not None and node.ask.type == "yes_no")
        local = list(node.intents)
        candidates = [*local, *self.flow.global_intents]
        intent, score, scores = None, 0.0, {}
        if len(said.segments) > 1:
            # "book, no, change my appointment": what the caller settled on, if it is an intent.
            intent, score, scores = self._match(said.last, candidates, classified=classified)
        if intent is None:
            intent, score, scores = self._match(text, candidates, classified=classified)
        is_local = intent is not None and any(intent is c for c in local)
        faq, faq_score = self._match_faq(text, classified)
        # An aside asked as a question ("what time do you open tomorrow?") is answered even
        # when it happens to contain a value ("tomorrow") or brush an intent.
        faq_first = faq is not None and is_question(text) and (intent is None or faq_score >= score)
        missed = self._missed_information(unheard)

        if node.ask is not None:
            ask = node.ask
            if ask.type == "yes_no":
                corrected = self._correct_read_back(node, text)
                if corrected is not None:
                    return corrected
            answer = understand(ask, text, today=self.today(), hours=self.flow.business_hours, partial=self._partial)
            if faq_first and faq is not None:
                return self._answer_faq(node, faq, faq_score, unheard)
            if intent is not None and is_local and self._intent_over_answer(ask, answer, intent, score, text):
                return self._take(intent, score, scores, text, classified)
            typed = answer.kind not in ("none", "retracted") and ask.type not in ("yes_no", "text")
            strong = intent is not None and score >= STRONG_MATCH
            if missed and not typed and not strong:
                return self._say_again(node, unheard)
            if answer.kind == "retracted":
                self._partial = answer.digits
                return self._quiet(scores=scores)
            if ask.type == "yes_no" and answer.kind == "value":
                # "Yes, but I'm driving, can you call me later?": the point comes after "but".
                turned = self._after_but(text, candidates, classified)
                if turned is not None:
                    return turned
            if ask.type == "text" and intent is not None and not is_local and intent.goto is not None:
                if self._facts.ends_without_asking(intent.goto):
                    # Free text takes anything, but "it's an emergency" must still reach the on-call team.
                    return self._take(intent, score, scores, text, classified)
            if answer.kind != "none" and not strong:
                return self._use_answer(node, ask, answer, text, scores)
        elif faq_first and faq is not None:
            return self._answer_faq(node, faq, faq_score, unheard)
        if intent is not None:
            return self._take(intent, score, scores, text, classified)
        if faq is not None:
            return self._answer_faq(node, faq, faq_score, unheard)
        if missed:
            return self._say_again(node, unheard)
        if is_question(text) and self._llm_available and self.flow.persona:
            return self._digress(node)
        if acknowledgement(text):
            # "okay", "right, thanks": the caller took the question in and is about to answer.
            return self._quiet(score=score, scores=scores)
        return self._miss(node, score, scores)

    def _after_but(self, text: str, candidates: list[Intent], classified: str | None) -> Reply | None:
        parts = _BUT.split(text, maxsplit=1)
        if len(parts) < 2 or not parts[1].strip():
            return None
        intent, score, scores = self._match(parts[1], candidates, classified=classified)
        if intent is None:
            return None
        return self._take(intent, score, scores, text, classified)

    def _intent_over_answer(self, ask: Ask, answer: Answer, intent: Intent, score: float, text: str) -> bool:
        """A question's own intent wins over its typed answer ("a different day please" at a
        yes/no question), except that a clear yes or no beats an intent matched on a few of
        the caller's words ("yes, I can pay today" is a yes, not "already paid")."""
        if ask.type != "yes_no" or answer.kind != "value" or score >= STRONG_MATCH:
            return True
        # Words that only echo the question ("will you be able to pay it today?" - "yes, I
        # can pay today") are no evidence for an intent.
        asked = set(normalize(" ".join(self._question_lines(self.flow.nodes[self.node]))).split())
        own = " ".join(w for w in normalize(text).split() if w not in asked)
        return bool(topic_units(own)) and explained(own, intent) >= 0.5

    def _missed_information(self, unheard: list[str]) -> bool:
        """Whether the caller talked over more than the question itself (a status, an answer)."""
        if not unheard:
            return False
        return len(unheard) > 1 or len(re.findall(r"[.!?](?:\s|$)", unheard[0].strip())) > 1

    def _use_answer(self, node: Node, ask: Ask, answer: Answer, text: str, scores: dict[str, float]) -> Reply:
        if answer.kind == "partial":
            self._partial = answer.digits
            missing = ask.length.exact - len(answer.digits) if ask.length and ask.length.exact else None
            return self._speak_lines([phrases.missing_digits(speak_digits(answer.digits), missing)], node, scores)
        if answer.kind == "too_long":
            self._partial = ""
            assert ask.length is not None
            expected = str(ask.length.min) if ask.length.exact else f"{ask.length.min} to {ask.length.max}"
            return self._miss(node, 0.0, scores, lines=[phrases.too_many_digits(len(answer.digits), expected)])
        if answer.kind == "vague":
            return self._suggest(node, ask, answer.suggestions, scores)
        self._partial = ""
        return self._accept_or_read_back(node, ask, answer.value, text, scores)

    def _accept_or_read_back(
        self, node: Node, ask: Ask, value: Any, text: str, scores: dict[str, float] | None = None
    ) -> Reply:
        if ask.reads_back:
            line = self._read_back_line(ask, value)
            self._check = Check("value", [line], slot=ask.slot, value=value)
            return self._speak_lines([line], node, scores)
        return self._store(node, ask.slot, value, text, scores)

    def _store(self, node: Node, slot: str, value: Any, text: str, scores: dict[str, float] | None = None) -> Reply:
        """Keep an answer and move on; the rest of the turn may answer the next question too."""
        self._slots[slot] = value
        self._check = None
        self._partial = ""
        turn = Turn(carry=text, carried={slot})
        self._run(self._after(node), turn)
        return self._reply(turn, scores=scores)

    def _read_back_line(self, ask: Ask, value: Any) -> str:
        spoken = self._speak_answer(ask, value)
        if isinstance(ask.confirm, str):
            context = {**self._context(), "slots": {**self._slots, ask.slot: value}}

            def speak(v: Any) -> str:
                return spoken if v is value else self._speak(v)

            return _render(ask.confirm, context, speak=speak)
        return phrases.read_back(spoken)

    def _speak_answer(self, ask: Ask, value: Any) -> str:
        if ask.type == "digits" or (ask.type == "number" and ask.length is not None):
            return speak_digits(str(value))
        return self._speak(value)

    def _acceptable(self, node: Node, slot: str, value: Any) -> bool:
        """Whether the question's own branches would take ``value`` rather than send the
        caller back to it ("that is outside our opening hours")."""
        trial = {**self._slots, slot: value}
        for branch in node.branches:
            if evaluate(branch.condition, trial, self._caller, today=self.today()):
                return not self._facts.leads_back(branch.goto, node.id)
        return True

    def _suggest(
        self, node: Node, ask: Ask, suggestions: Sequence[Any], scores: dict[str, float] | None = None
    ) -> Reply:
        """Offer a concrete value for "after lunch" / "next week", the first the flow accepts."""
        options = [value for value in suggestions if self._acceptable(node, ask.slot, value)]
        if not options:
            lines = [self._text(node.reprompt[0])] if node.reprompt else self._question_lines(node)
            return self._speak_lines(lines, node, scores)
        line = phrases.suggest(self._speak_answer(ask, options[0]))
        self._check = Check("suggestion", [line], slot=ask.slot, value=options[0], others=tuple(options[1:]))
        return self._speak_lines([line], node, scores)

    def _answer_check(self, node: Node, text: str, turn_kind: TurnKind, classified: str | None) -> Reply:
        """The caller's answer to a read-back, a suggestion or an intent check."""
        check = self._check
        assert check is not None
        if turn_kind == "hold":
            return self._speak_lines([phrases.TAKE_YOUR_TIME], node)
        if turn_kind in ("hesitation", "greeting", "apology", "presence"):
            return self._speak_lines([*([phrases.HERE] if turn_kind == "presence" else []), *check.lines], node)
        yes_no = understand(_YES_NO, text, today=self.today())
        if check.kind == "intent":
            assert check.intent is not None
            if yes_no.kind == "retracted":
                return self._quiet()
            self._check = None
            # "Yes" (or "yes, I don't agree with it at all") confirms; "I can pay on Friday" is a new answer.
            if yes_no.kind == "value" and yes_no.value and not self._points_elsewhere(node, text, check.intent):
                return self._follow(check.intent, check.score, check.scores, carry=text)
            if yes_no.kind == "value" and not yes_no.value and not self._says_more_than_no(text):
                return self._speak_lines([phrases.SORRY_WRONG, *self._question_lines(node)], node)
            return self._answer(node, text, classified)  # something else: a fresh turn
        ask = node.ask
        assert ask is not None and check.slot is not None
        hours = self.flow.business_hours
        if ask.type == "text" and yes_no.kind == "value" and (yes_no.value or not self._says_more_than_no(text)):
            new = Answer("none")  # "yes" to a read-back of free text is an answer to the read-back
        elif ask.type == "text":
            new = Answer("value", value=_LEADING_NO.sub("", text).strip() or text.strip())  # "no, it's X"
        else:
            new = understand(ask, text, today=self.today(), hours=hours)
        if new.kind == "value":
            value = self._within_offer(check, new.value, text)
            if value == check.value:
                return self._store(node, check.slot, check.value, text)
            self._check = None  # a new value is a correction, never a yes to the old one
            return self._accept_or_read_back(node, ask, value, text)
        if new.kind == "vague":
            self._check = None
            return self._suggest(node, ask, new.suggestions)
        if new.kind in ("partial", "too_long") and check.kind == "value":
            patched = self._patch_digits(str(check.value), new.digits, text)
            self._check = None
            if patched is not None:
                return self._accept_or_read_back(node, ask, patched, text)
            return self._use_answer(node, ask, new, text, {})
        shifted = self._shift_time(node, ask, check.value, text)
        if shifted is not None:
            return shifted
        if yes_no.kind == "retracted" or (new.kind == "retracted" and yes_no.kind != "value"):
            return self._quiet()  # "no, wait": the caller is about to say the right value
        if yes_no.kind == "value" and yes_no.value:
            return self._store(node, check.slot, check.value, text)
        if yes_no.kind == "value":
            return self._refused(node, ask, check)
        faq, faq_score = self._match_faq(text, classified)
        if faq is not None and is_question(text):
            return self._answer_faq(node, faq, faq_score, check.lines)
        intent, score, scores = self._match(text, [*node.intents, *self.flow.global_intents], classified=classified)
        if intent is not None and intent.repeat:
            return self._follow(intent, score, scores)  # "say that again": the check stays open
        if intent is not None:
            self._check = None
            return self._take(intent, score, scores, text, classified)
        return self._miss(node, score, scores, lines=check.lines)

    def _points_elsewhere(self, node: Node, text: str, checked: Intent) -> bool:
        """Whether a "yes" to an intent check goes on to say something else: another intent, or
        an answer to the question itself."""
        if explained(text, checked) >= 0.5:
            return False
        other, _, _ = self._match(text, [*node.intents, *self.flow.global_intents])
        if other is not None and other.name != checked.name:
            return True
        if node.ask is None or node.ask.type in ("yes_no", "text"):
            return False
        answer = understand(node.ask, text, today=self.today(), hours=self.flow.business_hours, strict=True)
        return answer.kind in ("value", "partial", "vague")

    @staticmethod
    def _within_offer(check: Check, value: Any, text: str) -> Any:
        """ "How about Monday the ninth?" - "Wednesday": the Wednesday of the week on offer
        (unless the caller said which one: "this Wednesday", "the 4th")."""
        if check.kind != "suggestion" or not isinstance(value, dt.date):
            return value
        words = set(normalize(text).split())
        if words & _DAY_PINNED or any(word[:1].isdigit() for word in words):
            return value
        offered = [check.value, *check.others]
        if value in offered:
            return value
        same_day = [day for day in offered if isinstance(day, dt.date) and day.weekday() == value.weekday()]
        return same_day[0] if same_day else value

    def _refused(self, node: Node, ask: Ask, check: Check) -> Reply:
        """A "no" to a read-back or suggestion: offer one other value, else ask afresh."""
        self._partial = ""
        if check.kind == "suggestion" and check.others and check.refused == 0:
            value = check.others[0]
            line = phrases.suggest_other(self._speak_answer(ask, value))
            self._check = Check("suggestion", [line], slot=check.slot, value=value, others=check.others[1:], refused=1)
            return self._speak_lines([line], node)
        self._check = None
        if check.kind == "value":
            again = [self._text(node.reprompt[0])] if node.reprompt else self._question_lines(node)
            return self._speak_lines([phrases.SORRY_WRONG, *again], node)
        return self._speak_lines(self._question_lines(node), node)

    def _shift_time(self, node: Node, ask: Ask, value: Any, text: str) -> Reply | None:
        """ "A bit later?" / "earlier" about an offered or read-back time: offer the next one."""
        if ask.type != "time" or not isinstance(value, dt.time):
            return None
        words = set(normalize(text).split())
        step = 30 if words & {"bit", "little", "slightly"} else 60
        if "later" in words:
            sign = 1
        elif "earlier" in words or "sooner" in words:
            sign = -1
        else:
            return None
        minutes = value.hour * 60 + value.minute
        for k in range(1, 5):
            candidate = minutes + sign * step * k
            if not 0 <= candidate < 24 * 60:
                break
            shifted = dt.time(candidate // 60, candidate % 60)
            if self._acceptable(node, ask.slot, shifted):
                line = phrases.suggest(self._speak_answer(ask, shifted))
                self._check = Check("suggestion", [line], slot=ask.slot, value=shifted)
                return self._speak_lines([line], node)
        return None

    @staticmethod
    def _says_more_than_no(text: str) -> bool:
        words = [w for w in normalize(text).split() if w not in _NO_ONLY]
        return bool(words)

    @staticmethod
    def _patch_digits(old: str, new: str, text: str) -> str | None:
        """ "No, the last two are 9 2": change the end (or the start) of a read-back number."""
        if not new or len(new) >= len(old):
            return None
        words = set(normalize(text).split())
        if words & {"last", "end", "ends", "ending"}:
            return old[: len(old) - len(new)] + new
        if words & {"first", "start", "starts", "begins", "beginning"}:
            return new + old[len(new) :]
        return None

    def _correct_read_back(self, node: Node, text: str) -> Reply | None:
        """A new value said at a yes/no question that reads values back ("So that is Tuesday
        at three. Shall I book it?" - "Wednesday, please") corrects them: store it, check it
        as its own question would, and read everything back again."""
        slots = [slot for slot in self._facts.read_back_slots(node) if slot in self._slots]
        if not slots:
            return None
        hours = self.flow.business_hours
        changes: dict[str, Any] = {}
        for slot in slots:
            _, ask = self._facts.asks[slot]
            answer = understand(ask, text, today=self.today(), hours=hours, strict=True)
            if answer.kind == "value" and answer.value != self._slots[slot]:
                changes[slot] = answer.value
        if not changes and read(text).corrected:
            # "No, make it 4": a bare value is fine after a correction, if it fits one slot only.
            loose: dict[str, Any] = {}
            for slot in slots:
                _, ask = self._facts.asks[slot]
                answer = understand(ask, text, today=self.today(), hours=hours)
                if answer.kind == "value":
                    loose[slot] = answer.value
            if len(loose) == 1:
                [(slot, value)] = loose.items()
                if value != self._slots[slot]:
                    changes = loose
        if not changes:
            return None
        self._slots.update(changes)
        for slot in changes:
            asker = self.flow.nodes[self._facts.asks[slot][0]]
            for branch in asker.branches:
                if evaluate(branch.condition, self._slots, self._caller, today=self.today()):
                    if self._facts.leads_back(branch.goto, asker.id):
                        turn = Turn()
                        self._run(branch.goto, turn)
                        return self._reply(turn)
                    break
        turn = Turn()
        self._run(node.id, turn)
        return self._reply(turn)

    def _take(self, intent: Intent, score: float, scores: dict[str, float], text: str, classified: str | None) -> Reply:
        """Follow an intent, but check first when it would end or hand over the call on a
        match that is not clear-cut ("...on Friday, when I get paid" is not "already paid")."""
        if (
            intent.goto is not None
            and intent.confirm != ""
            and self._facts.ends_without_asking(intent.goto)
            and not self._clear_cut(text, intent, score, scores, classified)
        ):
            node = self.flow.nodes[self.node]
            line = self._intent_check_line(intent, text)
            self._check = Check("intent", [line], intent=intent, score=score, scores=scores)
            return self._speak_lines([line], node, scores)
        return self._follow(intent, score, scores, carry=text)

    def _clear_cut(
        self, text: str, intent: Intent, score: float, scores: dict[str, float], classified: str | None
    ) -> bool:
        if classified == intent.name:
            return True
        # Rivals that lead to the same place ("no, that's all" / "goodbye") are not doubts,
        # and a question's own intent beats a global one by design, so only its own rivals count.
        local = {i.name: i.goto for i in self.flow.nodes[self.node].intents}
        targets = {**{i.name: i.goto for i in self.flow.global_intents}, **local}
        rivals = local if intent.name in local else targets
        runner_up = max(
            (
                s
                for name, s in scores.items()
                if name in rivals and name != intent.name and targets[name] != intent.goto
            ),
            default=0.0,
        )
        if score - runner_up < CLEAR_MARGIN:
            return False
        return score >= STRONG_MATCH or explained(text, intent) >= 1.0

    def _intent_check_line(self, intent: Intent, text: str) -> str:
        if intent.confirm:
            return self._text(intent.confirm)
        assert intent.goto is not None
        if not intent.examples:
            return phrases.check_intent(intent.keywords[0] if intent.keywords else intent.name, True)

        def closeness(example: str) -> float:
            return score_intent(text, Intent(name=intent.name, examples=[example], goto=intent.goto))

        return phrases.check_intent(max(intent.examples, key=closeness), self._ends_call(intent.goto))

    def _ends_call(self, node_id: str) -> bool:
        node = self.flow.nodes.get(node_id)
        while node is not None and not node.end and node.handover is None and node.next and not node.is_question:
            node = self.flow.nodes.get(node.next)
        return node is not None and node.end

    # -- asides ----------------------------------------------------------------------------

    def _match_faq(self, text: str, classified: str | None = None) -> tuple[FaqEntry | None, float]:
        if not self.flow.faq:
            return None, 0.0
        by_name = {entry.name: entry for entry in self.flow.faq}
        if classified in by_name:
            return by_name[classified], LLM_CLASSIFIED_SCORE
        ranked = rank_intents(text, self._faq_intents)
        best, best_score = None, 0.0
        for candidate, score in ranked:
            if score > best_score:
                best, best_score = candidate, score
        if best is None or best_score < DEFAULT_THRESHOLD:
            return None, best_score
        return by_name[best.name], best_score

    def _answer_faq(self, node: Node, entry: FaqEntry, score: float, then: list[str]) -> Reply:
        """Answer an aside, then ask the pending question again (or say what was missed)."""
        self._visits[f"faq:{entry.name}"] += 1
        visit = self._visits[f"faq:{entry.name}"] - 1
        answer = [
            self._text(item.one_of[visit % len(item.one_of)] if isinstance(item, Variants) else item)
            for item in entry.answer
        ]
        lines = [line for line in [*answer, *(then or self._question_lines(node))] if line]
        self._say(lines)
        self._last_said = lines
        return Reply(
            lines=lines,
            node=self.node,
            intent=entry.name,
            score=score,
            interruptible=node.interruptible,
            slots=self.slots,
        )

    def _digress(self, node: Node) -> Reply:
        """An aside the flow has no answer for, with an LLM configured: it answers, then the
        engine asks the pending question again (:meth:`llm_result`)."""
        self._waiting = "llm"
        self._digression = node.id
        question = " ".join(self._question_lines(node))
        facts = " ".join(
            line for entry in self.flow.faq for line in (self._say_item(item, "") for item in entry.answer) if line
        )
        persona, call_data = render_prompt(self.flow.persona, self._context(), speak=self._speak)
        parts = [
            persona.strip(),
            "The caller asked something off the script while you were asking them: "
            f"{question!r}. Answer their question in one or two short sentences."
            + (f" Facts you may use: {facts}" if facts else "")
            + " If you do not know, say so and offer to pass the question on. Do not ask a question yourself: "
            "the call continues with the pending question afterwards.",
        ]
        request = LlmRequest(
            node=node.id,
            system_prompt="\n\n".join(part for part in parts if part),
            call_data=call_data,
            messages=chat_messages(self.history),
            tools=[],
            allowed_transitions=[],
        )
        return Reply(lines=[], node=self.node, interruptible=node.interruptible, slots=self.slots, llm=request)

    def _question_lines(self, node: Node) -> list[str]:
        """The current question as it was last put (same wording variant)."""
        lines = [line for line in (self._say_item(item, node.id) for item in node.say) if line]
        return lines or list(self._last_said)

    def _say_again(self, node: Node, unheard: list[str], *, presence: bool = False) -> Reply:
        """Say the question (or what the caller talked over) again, without counting a miss."""
        lines = [*([phrases.HERE] if presence else []), *(unheard or self._question_lines(node))]
        return self._speak_lines(lines, node)

    def _speak_lines(
        self, lines: list[str], node: Node, scores: dict[str, float] | None = None, *, score: float = 0.0
    ) -> Reply:
        self._say(lines)
        self._last_said = list(lines)
        return Reply(
            lines=list(lines),
            node=self.node,
            score=score,
            interruptible=node.interruptible,
            slots=self.slots,
            scores=scores or {},
        )

    def _carry(self, node: Node, ask: Ask, turn: Turn) -> str | None:
        """Use what the caller already said for a question reached in the same turn ("on
        Friday, when I get paid" answers "on what date?"); only clear values count. Returns the
        next node, ``None`` to wait (a read-back, a suggestion, the rest of a number), or ``""``
        when the turn does not answer this question."""
        assert turn.carry is not None
        answer = understand(ask, turn.carry, today=self.today(), hours=self.flow.business_hours, strict=True)
        if answer.kind not in ("value", "partial", "vague"):
            return ""
        if answer.kind == "vague":
            options = [value for value in answer.suggestions if self._acceptable(node, ask.slot, value)]
            if not options:
                return ""
            line = phrases.suggest(self._speak_answer(ask, options[0]))
            self._check = Check("suggestion", [line], slot=ask.slot, value=options[0], others=tuple(options[1:]))
        elif answer.kind == "partial":
            self._partial = answer.digits
            missing = ask.length.exact - len(answer.digits) if ask.length and ask.length.exact else None
            line = phrases.missing_digits(speak_digits(answer.digits), missing)
        elif ask.reads_back:
            line = self._read_back_line(ask, answer.value)
            self._check = Check("value", [line], slot=ask.slot, value=answer.value)
        else:
            turn.carried.add(ask.slot)
            self._slots[ask.slot] = answer.value
            return self._after(node)
        turn.carried.add(ask.slot)
        turn.lines.append(line)
        turn.interruptible = turn.interruptible and node.interruptible
        self._waiting = "answer"
        self._last_question = node.id
        return None
