"""Facts about a flow's shape that the engine needs while a call runs.

Which node asks for a slot, which intents end or hand over the call without another
question, which branches of a question send the caller back to it (a rejected answer), which
slots a yes/no question reads back. Computed once per engine from the frozen flow, so the
per-turn code stays simple and the flow file needs no extra keys for any of it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from agent.dialogue.model import Ask, Flow, Node, Variants
from agent.dialogue.templates import parse_template

__all__ = ["FlowFacts"]

#: Slot types a caller can correct at a read-back by saying a new value.
CORRECTABLE = frozenset({"date", "time", "number", "digits", "choice"})


def _passes_on(node: Node) -> list[str]:
    """Where a node that does not wait leads (its ``next`` and every branch)."""
    if node.is_question or node.http is not None or node.llm is not None or node.end or node.handover:
        return []
    out = [branch.goto for branch in node.branches]
    if node.next is not None:
        out.append(node.next)
    return out


@dataclass
class FlowFacts:
    flow: Flow
    asks: dict[str, tuple[str, Ask]] = field(default_factory=dict)
    _final: dict[str, bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for node_id, node in self.flow.nodes.items():
            if node.ask is not None:
                self.asks.setdefault(node.ask.slot, (node_id, node.ask))

    def ends_without_asking(self, node_id: str) -> bool:
        """Whether entering ``node_id`` can end or hand over the call before the caller is
        asked anything again (so following an intent there deserves a check first)."""
        if node_id in self._final:
            return self._final[node_id]
        seen = {node_id}
        queue = deque([node_id])
        final = False
        while queue and not final:
            node = self.flow.nodes.get(queue.popleft())
            if node is None:
                continue
            if node.end or node.handover is not None:
                final = True
                break
            for target in _passes_on(node):
                if target not in seen:
                    seen.add(target)
                    queue.append(target)
        self._final[node_id] = final
        return final

    def first_ask(self, node_id: str) -> tuple[Node, Ask] | None:
        """The typed question the call reaches from ``node_id`` before waiting for anything
        else (the intent "book" leads straight to "what day?")."""
        seen = {node_id}
        queue = deque([node_id])
        while queue:
            node = self.flow.nodes.get(queue.popleft())
            if node is None:
                continue
            if node.ask is not None:
                return node, node.ask
            for target in _passes_on(node):
                if target not in seen:
                    seen.add(target)
                    queue.append(target)
        return None

    def leads_back(self, target: str, question: str) -> bool:
        """Whether going to ``target`` comes back to ``question`` without asking anything
        else: the branch rejected the answer ("that day has already passed")."""
        seen = {target}
        queue = deque([target])
        while queue:
            node_id = queue.popleft()
            if node_id == question:
                return True
            node = self.flow.nodes.get(node_id)
            if node is None:
                continue
            for nxt in _passes_on(node):
                if nxt not in seen:
                    seen.add(nxt)
                    queue.append(nxt)
        return False

    def read_back_slots(self, node: Node) -> list[str]:
        """Typed slots a yes/no question says aloud ("So that is {{date}} at {{time}}. Shall I
        book it?"): saying a new value there corrects them."""
        if node.ask is None or node.ask.type != "yes_no":
            return []
        found: list[str] = []
        texts = [t for item in node.say for t in (item.one_of if isinstance(item, Variants) else [item])]
        for text in texts:
            placeholders, _ = parse_template(text)
            for placeholder in placeholders:
                asked = self.asks.get(placeholder.name)
                if (
                    placeholder.scope == "slot"
                    and asked is not None
                    and asked[1].type in CORRECTABLE
                    and placeholder.name != node.ask.slot
                    and placeholder.name not in found
                ):
                    found.append(placeholder.name)
        return found
