"""Runs one call through a :class:`~agent.dialogue.flow.Flow`.

The engine is a pure state machine: text in, :class:`Reply` out. It does no I/O, no timing
and no speech, so the same engine drives a live WhatsApp call, ``wacall simulate`` and unit
tests, and a call's behaviour can be replayed exactly from its transcript.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from agent.dialogue.flow import PLACEHOLDER_RE, Flow, FlowError, check_flow
from agent.dialogue.nlu import DEFAULT_THRESHOLD, match_intent, normalize

__all__ = ["FlowEngine", "Reply", "render"]


@dataclass
class Reply:
    """What the bot does in response to one event (call start or one caller utterance).

    Structured rather than a bare string so the voice pipeline can act on it (hang up,
    disable barge-in) and later features (actions, slots) can add fields without breaking
    callers. On a fallback ``intent`` is ``None`` and ``score`` is the best (too low) match
    score, which is what one needs when tuning examples from call logs.
    """

    lines: list[str]
    node: str
    end_call: bool = False
    intent: str | None = None
    score: float = 0.0
    interruptible: bool = True


def render(template: str, context: Mapping[str, Mapping[str, str]]) -> str:
    """Fill ``{{caller.name}}``-style placeholders, never failing on missing data.

    A missing value becomes empty and the surrounding text is tidied ("Hi {{caller.name}},"
    -> "Hi,") because a caller hearing "Hi none" or a crashed call is worse than a slightly
    plainer sentence.
    """

    def fill(match: re.Match[str]) -> str:
        scope, _, key = match.group(1).partition(".")
        value = context.get(scope, {}).get(key)
        return "" if value is None else str(value).strip()

    text = PLACEHOLDER_RE.sub(fill, template)
    text = re.sub(r"\s+", " ", text)  # block scalars carry newlines TTS would pause on
    text = re.sub(r" +([,.!?;:])", r"\1", text)
    text = re.sub(r"^[\s,;:]+", "", text)
    text = re.sub(r",(?=[.!?])", "", text)
    return text.strip()


@dataclass
class _Entered:
    lines: list[str] = field(default_factory=list)
    end: bool = False
    interruptible: bool = True


class FlowEngine:
    """The state of one call: current node, retry count, transcript."""

    def __init__(self, flow: Flow, *, caller: Mapping[str, str] | None = None) -> None:
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
        self._context: dict[str, Mapping[str, str]] = {"caller": dict(caller or {})}
        self._started = False

    def start(self) -> Reply:
        """Enter the start node: the greeting, plus anything it flows into via ``next``."""
        if self._started:
            raise RuntimeError("FlowEngine.start() called twice for the same call")
        self._started = True
        entered = self._enter(self.flow.start)
        return self._reply(entered)

    def handle(self, text: str) -> Reply:
        """Advance the conversation by one caller utterance."""
        if not self._started:
            raise RuntimeError("FlowEngine.handle() called before start()")
        if self.ended:
            # Speech can still arrive while the goodbye plays; it must not restart the flow.
            return Reply(lines=[], node=self.node, end_call=True)
        if not normalize(text).strip():
            # Empty or punctuation-only transcripts are noise (a cough, a click), not a failed
            # attempt to answer, so they neither trigger "sorry?" nor count towards no_match.
            return Reply(lines=[], node=self.node, interruptible=self.flow.nodes[self.node].interruptible)
        self.history.append(("caller", text))

        node = self.flow.nodes[self.node]
        intent, score = match_intent(text, [*node.intents, *self.flow.global_intents], threshold=DEFAULT_THRESHOLD)
        if intent is not None:
            return self._reply(self._enter(intent.goto), intent=intent.name, score=score)

        self.misses += 1
        no_match = self.flow.no_match
        if self.misses > self.flow.max_retries and no_match is not None:
            return self._reply(self._enter(no_match), score=score)
        line = render(self.flow.fallback[(self.misses - 1) % len(self.flow.fallback)], self._context)
        self._say([line])
        return Reply(lines=[line] if line else [], node=self.node, score=score, interruptible=node.interruptible)

    # -- internals ---------------------------------------------------------------------

    def _enter(self, node_id: str) -> _Entered:
        """Move to ``node_id`` and follow ``next`` links, collecting everything said on the way.

        ``check_flow`` guarantees ``next`` chains terminate; the visited set is a last line of
        defence so a bug can never hang a live call.
        """
        entered = _Entered()
        visited: set[str] = set()
        current: str | None = node_id
        while current is not None and current not in visited:
            visited.add(current)
            node = self.flow.nodes[current]
            self.node = current
            self.misses = 0
            lines = [line for line in (render(t, self._context) for t in node.say) if line]
            entered.lines.extend(lines)
            entered.interruptible = entered.interruptible and node.interruptible
            if node.end:
                entered.end = True
                self.ended = True
                break
            current = node.next
        self._say(entered.lines)
        return entered

    def _say(self, lines: list[str]) -> None:
        self.history.extend(("bot", line) for line in lines if line)

    def _reply(self, entered: _Entered, *, intent: str | None = None, score: float = 0.0) -> Reply:
        return Reply(
            lines=entered.lines,
            node=self.node,
            end_call=entered.end,
            intent=intent,
            score=score,
            interruptible=entered.interruptible,
        )
