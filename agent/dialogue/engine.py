"""Runs one call through a :class:`~agent.dialogue.flow.Flow`.

The engine is a pure state machine: an event in (call start, caller utterance, LLM result,
business-system result), a :class:`Reply` out. It does no I/O, no timing and no speech, and
reads no clock except the injectable ``today`` used to understand "tomorrow", so the same
engine drives a live WhatsApp call, ``wacall simulate``, ``wacall flows chat``/``test`` and
unit tests, and a call's behaviour can be replayed exactly from its transcript.

Effects the runtime must carry out (hand over, HTTP request, call-permission request, LLM
turn) are described in the reply (:mod:`agent.dialogue.effects`); results come back through
:meth:`FlowEngine.action_result` and :meth:`FlowEngine.llm_result`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import re
import urllib.parse
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from agent.dialogue import slots as slot_parsing
from agent.dialogue.conditions import evaluate
from agent.dialogue.effects import (
    Action,
    Handover,
    HttpRequest,
    LlmRequest,
    Reply,
    RequestCallPermission,
    ToolCall,
    ToolCallLike,
)
from agent.dialogue.flow import Flow, FlowError, check_flow
from agent.dialogue.model import Intent, Node, SlotValue, Variants
from agent.dialogue.nlu import DEFAULT_THRESHOLD, normalize, rank_intents
from agent.dialogue.templates import iso, lookup, single_placeholder
from agent.dialogue.templates import render as _render
from agent.dialogue.tools import chat_messages, dig, tool_arguments, tool_schemas

__all__ = [
    "STRONG_MATCH",
    "Action",
    "Classifier",
    "FlowEngine",
    "Handover",
    "HttpRequest",
    "LlmRequest",
    "Reply",
    "RequestCallPermission",
    "ToolCall",
    "ToolCallLike",
    "render",
]

log = logging.getLogger(__name__)

#: An intent must be this sure to override a parsed answer ("no, get me a person" to a
#: yes/no question) or to interrupt an LLM conversation; a plain match is not enough there,
#: because a free-text answer or an LLM turn would otherwise be hijacked by loose matches.
STRONG_MATCH = 0.8
#: Nodes entered in one turn before the engine assumes a conditional loop and stops; far
#: above any real script, low enough that a bug can never hang a live call.
MAX_STEPS_PER_TURN = 50

#: Replaces offline matching: ``(text, intents) -> (best intent or None, confidence)``, the
#: same contract as :func:`agent.dialogue.nlu.match_intent` (an LLM classifier, typically).
Classifier = Callable[[str, Sequence[Intent]], tuple[Intent | None, float]]

Waiting = Literal["answer", "llm", "action"]

_ISO_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_CLOCK_RE = re.compile(r"\d{1,2}:\d{2}(?::\d{2})?")


def render(template: str, context: Mapping[str, Mapping[str, Any]]) -> str:
    """Fill ``{{caller.name}}`` / ``{{slot}}`` placeholders, never failing on missing data.

    A missing value becomes empty and the surrounding text is tidied ("Hi {{caller.name}},"
    -> "Hi,") because a caller hearing "Hi none" or a crashed call is worse than a slightly
    plainer sentence.
    """
    return _render(template, context, speak=slot_parsing.speak)


@dataclass
class _Turn:
    """Everything one event makes the bot say and do, gathered across the nodes it passes."""

    lines: list[str] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    end: bool = False
    interruptible: bool = True
    llm: LlmRequest | None = None


class FlowEngine:
    """The state of one call: current node, slots, retry count, transcript, pending effects."""

    def __init__(
        self,
        flow: Flow,
        *,
        caller: Mapping[str, Any] | None = None,
        slots: Mapping[str, Any] | None = None,
        today: dt.date | Callable[[], dt.date] | None = None,
        llm_available: bool = True,
        classifier: Classifier | None = None,
    ) -> None:
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
        self._slots: dict[str, Any] = {k: v for k, v in flow.slots.items() if v is not None}
        self._slots.update(slots or {})
        self._caller: dict[str, Any] = dict(caller or {})
        self._today = today
        self._llm_available = llm_available
        self._classifier = classifier
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

    # -- public state ------------------------------------------------------------------

    @property
    def slots(self) -> dict[str, Any]:
        """A copy of what the call has learnt so far."""
        return dict(self._slots)

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
        """Let another classifier (an LLM) pick intents; ``None`` restores offline matching.
        If it raises, the engine falls back to offline matching for that turn."""
        self._classifier = fn

    # -- events ------------------------------------------------------------------------

    def start(self) -> Reply:
        """Enter the start node: the greeting, plus anything it flows into."""
        if self._started:
            raise RuntimeError("FlowEngine.start() called twice for the same call")
        self._started = True
        turn = _Turn()
        self._run(self.flow.start, turn)
        return self._reply(turn)

    def handle(self, text: str) -> Reply:
        """Advance the conversation by one caller utterance."""
        if not self._started:
            raise RuntimeError("FlowEngine.handle() called before start()")
        if self.ended:
            # Speech can still arrive while the goodbye plays; it must not restart the flow.
            return self._quiet(end_call=self._hung_up)
        if not normalize(text).strip():
            # Empty or punctuation-only transcripts are noise (a cough, a click), not a failed
            # attempt to answer, so they neither trigger "sorry?" nor count towards no_match.
            return self._quiet()
        self.history.append(("caller", text))
        node = self.flow.nodes[self.node]

        if self._waiting == "action":
            # Only a global intent ("goodbye", "a person please") can cut a lookup short.
            intent, score, scores = self._match(text, self.flow.global_intents)
            if intent is None:
                return self._quiet(score=score, scores=scores)
            self._pending = None
            return self._follow(intent, score, scores)

        if self._waiting == "llm":
            intent, score, scores = self._match(text, self.flow.global_intents)
            if intent is not None and score >= STRONG_MATCH:
                return self._follow(intent, score, scores)
            reply = self._quiet(score=score, scores=scores)
            reply.llm = self._llm_request(node)
            return reply

        local = list(node.intents)
        intent, score, scores = self._match(text, [*local, *self.flow.global_intents])
        is_local = intent is not None and any(intent is c or intent == c for c in local)
        if node.ask is not None:
            value = slot_parsing.parse_slot(node.ask, text, today=self.today())
            if intent is not None and is_local:
                return self._follow(intent, score, scores)
            if value is not None and (intent is None or score < STRONG_MATCH):
                self._slots[node.ask.slot] = value
                turn = _Turn()
                self._run(self._after(node), turn)
                return self._reply(turn, scores=scores)
        if intent is not None:
            return self._follow(intent, score, scores)
        return self._miss(node, score, scores)

    def goto(self, node: str) -> Reply:
        """Continue the call at `node`: a human agent handing the call back, or a queue's fallback.

        A handover ends the engine's part of the call; this resumes it, as if the flow had moved there.
        """
        if node not in self.flow.nodes:
            raise KeyError(f"no node {node!r} in flow {self.flow.name!r}")
        self.ended = False
        self._hung_up = False
        self.misses = 0
        turn = _Turn()
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
        assert node.llm is not None
        if text.strip():
            self.history.append(("bot", text.strip()))
            self._last_said = [text.strip()]
        transition: Callable[[_Turn], None] | None = None
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
        turn = _Turn()
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
        turn = _Turn()
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

    def _match(self, text: str, intents: Sequence[Intent]) -> tuple[Intent | None, float, dict[str, float]]:
        if not intents:
            return None, 0.0, {}
        if self._classifier is not None:
            try:
                intent, score = self._classifier(text, intents)
            except Exception:
                log.warning("intent classifier failed; using offline matching for this turn", exc_info=True)
            else:
                return intent, score, ({intent.name: score} if intent is not None else {})
        ranked = rank_intents(text, intents)
        scores: dict[str, float] = {}
        best: Intent | None = None
        best_score = 0.0
        for intent, score in ranked:
            scores.setdefault(intent.name, score)
            if score > best_score:  # strict: earlier intents (the node's own) win ties
                best, best_score = intent, score
        if best is None or best_score < DEFAULT_THRESHOLD:
            return None, best_score, scores
        return best, best_score, scores

    def _follow(self, intent: Intent, score: float, scores: dict[str, float]) -> Reply:
        self._assign(intent.assign)
        if intent.repeat:
            reply = self.repeat()
            reply.intent, reply.score, reply.scores = intent.name, score, scores
            return reply
        assert intent.goto is not None
        self._waiting = None
        turn = _Turn()
        self._run(intent.goto, turn)
        return self._reply(turn, intent=intent.name, score=score, scores=scores)

    def _miss(self, node: Node, score: float, scores: dict[str, float]) -> Reply:
        self.misses += 1
        limit = node.max_retries if node.max_retries is not None else self.flow.max_retries
        target = node.no_match or self.flow.no_match
        if self.misses > limit and target is not None:
            turn = _Turn()
            self._run(target, turn)
            return self._reply(turn, score=score, scores=scores)
        lines = node.reprompt or self.flow.fallback
        line = self._text(lines[(self.misses - 1) % len(lines)])
        said = [line] if line else []
        self._say(said)
        if node.reprompt:
            self._last_said = said  # a rephrased question is worth repeating; "sorry?" is not
        return Reply(
            lines=said, node=self.node, score=score, interruptible=node.interruptible, slots=self.slots, scores=scores
        )

    # -- moving through nodes ------------------------------------------------------------

    def _run(self, node_id: str | None, turn: _Turn) -> None:
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

    def _enter(self, node_id: str, turn: _Turn) -> str | None:
        """Perform one node; return the next node to enter now, or ``None`` to wait/stop."""
        node = self.flow.nodes[node_id]
        self.node = node_id
        self.misses = 0
        self._waiting = None
        self._visits[node_id] += 1
        self._assign(node.assign)
        lines = [line for line in (self._say_item(item, node_id) for item in node.say) if line]
        turn.lines.extend(lines)
        turn.interruptible = turn.interruptible and node.interruptible
        if node.request_call_permission is not None:
            turn.actions.append(RequestCallPermission(reason=self._text(node.request_call_permission.reason)))
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
        return {"caller": self._caller, "slots": self._slots}

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
        parts = [
            _render(text, context, speak=self._speak, tidy=False).strip()
            for text in (self.flow.persona, node.llm.prompt)
            if text
        ]
        return LlmRequest(
            node=node.id,
            system_prompt="\n\n".join(parts),
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
            log.warning("LLM gave slot '%s' the value %r, which does not fit; ignored", name, value)
            return
        self._slots[str(name)] = coerced

    def _tool_transition(self, node: Node, name: str, args: dict[str, Any]) -> Callable[[_Turn], None] | None:
        """Validate a moving tool call; return how to perform it, or ``None`` if invalid."""
        llm = node.llm
        assert llm is not None
        if name == "end_call":

            def end(turn: _Turn) -> None:
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

            def handover(turn: _Turn) -> None:
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
                log.warning("LLM tool '%s' gave %s=%r, which does not fit; ignored", name, param, args.get(param))
                return None
            values[param] = value

        def declared_tool(turn: _Turn) -> None:
            self._slots.update(values)
            self._run(declared.goto, turn)

        return declared_tool

    # -- replies -------------------------------------------------------------------------

    def _say(self, lines: list[str]) -> None:
        self.history.extend(("bot", line) for line in lines if line)

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
        self, turn: _Turn, *, intent: str | None = None, score: float = 0.0, scores: dict[str, float] | None = None
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
