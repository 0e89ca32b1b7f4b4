"""Whole-flow validation: references, contradictions, templates, slots and the call graph.

These rules need the whole flow (all node ids, every place a slot is set) so they cannot
live in per-field type validation. They run on the finished model and report *paths* (the
YAML keys leading to the problem, plus a character offset inside a text when it matters);
the loader maps paths back to ``file:line:column``. Keeping them apart from the loader lets
the engine refuse hand-built flows that would dead-end or trap a caller mid-call.

Graph rules (unreachable nodes, questions with no way out) only run once the references are
sound: on a flow with a misspelt target they would mostly repeat that one mistake.
"""

from __future__ import annotations

import difflib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from agent.dialogue.conditions import ConditionError, names, parse_condition
from agent.dialogue.model import (
    BUILTIN_TOOLS,
    HTTP_METHODS,
    IDENTIFIER_RE,
    KEYPAD_KEYS,
    MAX_NUMBER_DIGITS,
    Flow,
    Intent,
    Node,
    Variants,
)
from agent.dialogue.templates import parse_template

__all__ = ["FlowIssue", "check_flow", "slots_set", "successors"]

PathKey = tuple[str | int, ...]

_MAX_NUMBER_DIGITS = MAX_NUMBER_DIGITS
#: Meta's cap on a call button's payload (spec §6.1): a longer pattern could only ever match via a glob.
MAX_PAYLOAD_CHARS = 512
#: Longer keypad entries are no number a caller types (card numbers have 19 digits).
_MAX_KEYPAD_DIGITS = 32
#: A pause between keys longer than this is a caller who has stopped, not one still typing.
_MAX_KEY_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class FlowIssue:
    """A semantic problem found by :func:`check_flow`.

    ``path`` names the offending YAML location; ``at_key`` says whether to point at the key
    (e.g. the node id, where the author should add something) or at its value (e.g. a bad
    ``goto`` target, which is what must be fixed). ``offset`` is a character index inside
    the text at ``path`` (a placeholder in a line, a name in a condition).
    """

    path: PathKey
    message: str
    at_key: bool = False
    offset: int | None = None


def _did_you_mean(word: str, choices: list[str], *, list_all: bool) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if close:
        return f"; did you mean '{close[0]}'?"
    if list_all and choices:
        shown = ", ".join(choices[:12]) + (", ..." if len(choices) > 12 else "")
        return f" (choose one of: {shown})"
    return ""


# -- where slots are set and texts live ----------------------------------------------------


def slots_set(flow: Flow) -> set[str]:
    """Every slot some part of the flow can fill."""
    found = set(flow.slots)
    for intent in flow.global_intents:
        found.update(intent.assign)
    for node in flow.nodes.values():
        found.update(node.assign)
        for intent in node.intents:
            found.update(intent.assign)
        if node.ask is not None:
            found.add(node.ask.slot)
        if node.http is not None:
            found.update(node.http.store)
        if node.llm is not None:
            found.update(node.llm.slots)
            for tool in node.llm.tools:
                found.update(tool.parameters)
    return found


def _json_texts(value: Any, path: PathKey) -> Iterator[tuple[PathKey, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _json_texts(item, (*path, str(key)))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _json_texts(item, (*path, i))


def _assign_texts(assign: dict[str, Any], path: PathKey) -> Iterator[tuple[PathKey, str]]:
    for key, value in assign.items():
        if isinstance(value, str):
            yield (*path, key), value


def _intent_texts(intent: Intent, path: PathKey) -> Iterator[tuple[PathKey, str]]:
    yield from _assign_texts(intent.assign, (*path, "set"))
    if intent.confirm:
        yield (*path, "confirm"), intent.confirm


def _say_texts(items: list[Any], path: PathKey) -> Iterator[tuple[PathKey, str]]:
    for i, item in enumerate(items):
        if isinstance(item, Variants):
            for j, text in enumerate(item.one_of):
                yield (*path, i, "one_of", j), text
        else:
            yield (*path, i), item


def templated_texts(flow: Flow) -> Iterator[tuple[PathKey, str]]:
    """Every text in which ``{{placeholders}}`` are filled in, with its YAML path."""
    for i, line in enumerate(flow.fallback):
        yield ("fallback", i), line
    if flow.persona:
        yield ("persona",), flow.persona
    for i, intent in enumerate(flow.global_intents):
        yield from _intent_texts(intent, ("global_intents", i))
    for i, entry in enumerate(flow.faq):
        yield from _say_texts(entry.answer, ("faq", i, "answer"))
    for node_id, node in flow.nodes.items():
        base: PathKey = ("nodes", node_id)
        yield from _say_texts(node.say, (*base, "say"))
        if node.ask is not None and isinstance(node.ask.confirm, str):
            yield (*base, "ask", "confirm"), node.ask.confirm
        for i, line in enumerate(node.reprompt):
            yield (*base, "reprompt", i), line
        yield from _assign_texts(node.assign, (*base, "set"))
        for i, intent in enumerate(node.intents):
            yield from _intent_texts(intent, (*base, "intents", i))
        if node.handover is not None:
            yield (*base, "handover", "reason"), node.handover.reason
            for i, skill in enumerate(node.handover.skills):
                yield (*base, "handover", "skills", i), skill
        if node.request_call_permission is not None:
            yield (*base, "request_call_permission", "reason"), node.request_call_permission.reason
        if node.send_call_button is not None:
            for key in ("payload", "text"):
                if (text := getattr(node.send_call_button, key)) is not None:
                    yield (*base, "send_call_button", key), text
        if node.http is not None:
            yield (*base, "http", "url"), node.http.url
            for key, value in node.http.headers.items():
                yield (*base, "http", "headers", key), value
            yield from _json_texts(node.http.json_body, (*base, "http", "json"))
        if node.llm is not None:
            yield (*base, "llm", "prompt"), node.llm.prompt


# -- the graph ----------------------------------------------------------------------------


def waits(node: Node) -> bool:
    """Whether the call pauses at this node (for the caller, an LLM or a business system)."""
    return node.is_question or node.llm is not None or node.http is not None


def ends(node: Node) -> bool:
    return node.end or node.handover is not None


def successors(flow: Flow, node: Node) -> list[str]:
    """Nodes the call can move to from ``node`` (including global intents while it waits)."""
    out: list[str] = []
    if node.next is not None:
        out.append(node.next)
    out.extend(branch.goto for branch in node.branches)
    out.extend(intent.goto for intent in node.intents if intent.goto is not None)
    if node.is_question:
        target = node.no_match or flow.no_match
        if target is not None:
            out.append(target)
    if node.http is not None:
        out.extend((node.http.on_success, node.http.on_error))
    if node.llm is not None:
        out.extend(node.llm.transitions)
        out.extend(tool.goto for tool in node.llm.tools)
        if node.llm.offline is not None:
            out.append(node.llm.offline)
    if waits(node):
        out.extend(intent.goto for intent in flow.global_intents if intent.goto is not None)
    return [target for target in out if target in flow.nodes]


def _graph_issues(flow: Flow) -> list[FlowIssue]:
    issues: list[FlowIssue] = []
    entries = [flow.start, *(t for t in flow.entry_points.values() if t in flow.nodes)]
    reachable = set(entries)
    queue = deque(reachable)
    while queue:
        for target in successors(flow, flow.nodes[queue.popleft()]):
            if target not in reachable:
                reachable.add(target)
                queue.append(target)
    for node_id in flow.nodes:
        if node_id not in reachable:
            issues.append(
                FlowIssue(
                    ("nodes", node_id),
                    f"node '{node_id}' can never be reached: no `start`, `entry_points`, `next`, `goto` or other link "
                    "leads to it; "
                    "link it from another node or remove it",
                    at_key=True,
                )
            )

    # Which nodes can still lead to a goodbye or a handover? An LLM node always can (its
    # end_call and handover tools), so it counts as a way out.
    predecessors: dict[str, set[str]] = {node_id: set() for node_id in flow.nodes}
    for node_id, node in flow.nodes.items():
        for target in successors(flow, node):
            predecessors[target].add(node_id)
    can_leave = {node_id for node_id, node in flow.nodes.items() if ends(node) or node.llm is not None}
    queue = deque(can_leave)
    while queue:
        for source in predecessors[queue.popleft()]:
            if source not in can_leave:
                can_leave.add(source)
                queue.append(source)
    trapped = [node_id for node_id in flow.nodes if node_id in reachable and node_id not in can_leave]
    questions = [node_id for node_id in trapped if flow.nodes[node_id].is_question]
    for node_id in questions or trapped[:1]:
        kind = "question at node" if node_id in questions else "node"
        issues.append(
            FlowIssue(
                ("nodes", node_id),
                f"{kind} '{node_id}' has no way out: whatever the caller says, the call never reaches a node "
                "that ends it (`end: true`) or hands it over; give one of its answers (or a `no_match`) a path "
                "to a goodbye",
                at_key=True,
            )
        )
    return issues


# -- per-node rules -------------------------------------------------------------------------


class _Checker:
    def __init__(self, flow: Flow) -> None:
        self.flow = flow
        self.issues: list[FlowIssue] = []
        self.ids = list(flow.nodes)
        self.global_keys: dict[str, str] = {}

    def add(self, path: PathKey, message: str, *, at_key: bool = False, offset: int | None = None) -> None:
        self.issues.append(FlowIssue(path, message, at_key=at_key, offset=offset))

    def ref(self, target: str, path: PathKey, what: str) -> None:
        if target not in self.flow.nodes:
            self.add(
                path, f"{what} '{target}' is not a node in this flow" + _did_you_mean(target, self.ids, list_all=True)
            )

    def identifier(self, name: str, path: PathKey, what: str, *, at_key: bool = False) -> None:
        if not IDENTIFIER_RE.fullmatch(name):
            self.add(path, f"{what} '{name}' must be one word (letters, digits and _)", at_key=at_key)

    def run(self) -> list[FlowIssue]:
        flow = self.flow
        self.ref(flow.start, ("start",), "start node")
        hours = flow.business_hours
        if hours.open >= hours.close:
            self.add(
                ("business_hours", "close"),
                f"`close` ({hours.close:%H:%M}) must be later than `open` ({hours.open:%H:%M})",
            )
        for i, entry in enumerate(flow.faq):
            self.identifier(entry.name, ("faq", i, "name"), "faq name")
        self.entry_points()
        for i, intent in enumerate(flow.global_intents):
            if intent.goto is not None:
                self.ref(intent.goto, ("global_intents", i, "goto"), f"goto of global intent '{intent.name}':")
        self.global_keys = self.intent_keys(flow.global_intents, ("global_intents",), {})
        for name in flow.slots:
            self.identifier(name, ("slots", name), "slot name", at_key=True)
        for node_id, node in flow.nodes.items():
            self.node(node_id, node)
        start = flow.nodes.get(flow.start)
        if start is not None and not start.say:
            self.add(
                ("nodes", flow.start),
                f"the start node '{flow.start}' needs a `say`: it is the greeting the caller hears first",
                at_key=True,
            )
        self.next_loops()
        self.templates_and_conditions()
        return self.issues

    def entry_points(self) -> None:
        """Each payload pattern must be one a payload can match, and lead to a node that greets the caller."""
        for pattern, target in self.flow.entry_points.items():
            path: PathKey = ("entry_points", pattern)
            if not pattern.strip() or len(pattern) > MAX_PAYLOAD_CHARS:
                shown = pattern[:40]
                self.add(path, f"payload pattern '{shown}' must be 1 to {MAX_PAYLOAD_CHARS} characters", at_key=True)
            self.ref(target, path, f"entry point for payload '{pattern}':")
            node = self.flow.nodes.get(target)
            if node is not None and not node.say:
                self.add(
                    path,
                    f"the entry point '{target}' needs a `say`: it is the greeting callers with payload '{pattern}' "
                    "hear first",
                )

    def node(self, node_id: str, node: Node) -> None:
        base: PathKey = ("nodes", node_id)
        if node.id != node_id:
            self.add(base, f"node stored as '{node_id}' has id '{node.id}'", at_key=True)
        for i, intent in enumerate(node.intents):
            if intent.goto is not None:
                self.ref(intent.goto, (*base, "intents", i, "goto"), f"goto of intent '{intent.name}':")
        if node.next is not None:
            self.ref(node.next, (*base, "next"), "next:")
        for i, branch in enumerate(node.branches):
            self.ref(branch.goto, (*base, "branches", i, "goto"), "goto of branch:")
        if node.no_match is not None:
            self.ref(node.no_match, (*base, "no_match"), "no_match:")
        if node.http is not None:
            self.ref(node.http.on_success, (*base, "http", "on_success"), "on_success:")
            self.ref(node.http.on_error, (*base, "http", "on_error"), "on_error:")
            if node.http.method.upper() not in HTTP_METHODS:
                self.add((*base, "http", "method"), f"unknown HTTP method '{node.http.method}'")
            for slot in node.http.store:
                self.identifier(slot, (*base, "http", "store", slot), "slot name", at_key=True)
        if node.llm is not None:
            self.llm(base, node)
        if node.ask is not None:
            self.ask(base, node)
        self.node_keys(base, node)
        for name in node.assign:
            self.identifier(name, (*base, "set", name), "slot name", at_key=True)
        self.shape(node_id, node, base)

    def ask(self, base: PathKey, node: Node) -> None:
        ask = node.ask
        assert ask is not None
        path = (*base, "ask")
        self.identifier(ask.slot, (*path, "slot"), "slot name")
        if ask.type == "choice" and not ask.choices:
            self.add((*path, "type"), "a `choice` question needs `choices`: the answers the caller can pick from")
        if ask.type != "choice" and ask.choices:
            self.add((*path, "choices"), f"`choices` only apply to `type: choice`, not `{ask.type}`", at_key=True)
        if ask.type != "number" and (ask.min is not None or ask.max is not None):
            key = "min" if ask.min is not None else "max"
            hint = " (for `digits`, say how many with `length`)" if ask.type == "digits" else ""
            self.add((*path, key), f"`{key}` only applies to `type: number`{hint}", at_key=True)
        if ask.min is not None and ask.max is not None and ask.min > ask.max:
            self.add((*path, "max"), f"`max` ({ask.max:g}) is smaller than `min` ({ask.min:g})")
        if ask.type == "yes_no" and ask.confirm not in (None, False):
            self.add(
                (*path, "confirm"),
                "a yes or no is not read back (`confirm` is for numbers, digits, dates, times, choices and text); "
                "remove it",
                at_key=True,
            )
        if ask.length is not None:
            if ask.type not in ("digits", "number"):
                self.add(
                    (*path, "length"),
                    f"`length` only applies to `type: digits` or `number`, not `{ask.type}`",
                    at_key=True,
                )
            elif ask.length.min > ask.length.max:
                self.add(
                    (*path, "length", "max"),
                    f"`max` ({ask.length.max}) of `length` is smaller than its `min` ({ask.length.min})",
                )
            elif ask.type == "number" and ask.length.max > _MAX_NUMBER_DIGITS:
                self.add(
                    (*path, "length"),
                    f"a number of more than {_MAX_NUMBER_DIGITS} digits is a code, not an amount: use `type: digits`, "
                    "which also keeps leading zeros",
                )

    def intent_keys(
        self, intents: list[Intent], path: PathKey, taken: dict[str, str], *, digits_typed: bool = False
    ) -> dict[str, str]:
        """Check each intent's keypad key; returns key -> intent name. ``taken``: keys already
        owned (the global intents'), which a node's own intent must not reuse: one key press
        must mean one thing."""
        owners: dict[str, str] = {}
        for i, intent in enumerate(intents):
            key = intent.key
            if key is None:
                continue
            where = (*path, i, "key")
            if len(key) != 1:
                self.add(where, f"`key` of intent '{intent.name}' is one key (0-9, * or #), not '{key}'")
                continue
            if key not in KEYPAD_KEYS:
                self.add(where, f"'{key}' is not a key of the phone's dialpad; use 0-9, * or #")
                continue
            if key in owners:
                self.add(where, f"key '{key}' is already the key of intent '{owners[key]}' here; one key, one choice")
                continue
            if key in taken:
                self.add(where, f"key '{key}' is already the key of global intent '{taken[key]}'; choose another key")
                continue
            if digits_typed and key.isdigit():
                self.add(
                    where,
                    f"this question takes its answer on the keypad, so key '{key}' would be read as part of the "
                    f"number; give intent '{intent.name}' * or # (or drop the keypad from the question)",
                )
                continue
            owners[key] = intent.name
        return owners

    def node_keys(self, base: PathKey, node: Node) -> None:
        ask = node.ask
        digits_typed = ask is not None and ask.takes_digits
        own = self.intent_keys(node.intents, (*base, "intents"), self.global_keys, digits_typed=digits_typed)
        if ask is None:
            return
        path = (*base, "ask")
        if ask.secret and ask.confirm not in (None, False):
            self.add((*path, "confirm"), "a `secret` answer is never read back aloud; remove `confirm`", at_key=True)
        if ask.keypad is None:
            return
        if not ask.takes_digits:
            self.add(
                (*path, "keypad"),
                f"`keypad` only applies to `type: digits` or `number`, not `{ask.type}` (for a menu, give the "
                "intents a `key`)",
                at_key=True,
            )
            return
        entry = ask.keypad_entry()
        assert entry.max_digits is not None
        keypad: PathKey = (*path, "keypad")
        term = entry.terminator
        if term is not None:
            if len(term) != 1 or term not in KEYPAD_KEYS:
                self.add((*keypad, "terminator"), f"`terminator` must be * or #, not '{term}'")
            elif term.isdigit():
                self.add(
                    (*keypad, "terminator"),
                    f"`terminator` '{term}' is a digit the answer could need; use # or *",
                )
            elif term in own or term in self.global_keys:
                owner = own.get(term) or self.global_keys[term]
                self.add((*keypad, "terminator"), f"`terminator` '{term}' is also the key of intent '{owner}'")
        if entry.max_digits < 1 or entry.max_digits > _MAX_KEYPAD_DIGITS:
            self.add((*keypad, "max_digits"), f"`max_digits` must be between 1 and {_MAX_KEYPAD_DIGITS}")
        elif ask.length is not None and entry.max_digits < ask.length.min:
            self.add(
                (*keypad, "max_digits"),
                f"`max_digits` ({entry.max_digits}) is fewer than the {ask.length.min} digits the answer needs",
            )
        elif ask.type == "number" and entry.max_digits > _MAX_NUMBER_DIGITS:
            self.add(
                (*keypad, "max_digits"),
                f"a number of more than {_MAX_NUMBER_DIGITS} digits is a code, not an amount: use `type: digits`",
            )
        if not 0 < entry.timeout_s <= _MAX_KEY_TIMEOUT_S:
            self.add(
                (*keypad, "timeout"),
                f"`timeout` (seconds between keys) must be more than 0 and at most {_MAX_KEY_TIMEOUT_S:g}",
            )

    def llm(self, base: PathKey, node: Node) -> None:
        llm = node.llm
        assert llm is not None
        path = (*base, "llm")
        for i, target in enumerate(llm.transitions):
            self.ref(target, (*path, "transitions", i), "transition")
        if llm.offline is not None:
            self.ref(llm.offline, (*path, "offline"), "offline:")
        for i, slot in enumerate(llm.slots):
            self.identifier(slot, (*path, "slots", i), "slot name")
        seen: set[str] = set()
        for i, tool in enumerate(llm.tools):
            tool_path = (*path, "tools", i)
            self.identifier(tool.name, (*tool_path, "name"), "tool name")
            if tool.name in BUILTIN_TOOLS:
                self.add((*tool_path, "name"), f"tool name '{tool.name}' is built in; choose another name")
            if tool.name in seen:
                self.add((*tool_path, "name"), f"duplicate tool '{tool.name}'")
            seen.add(tool.name)
            self.ref(tool.goto, (*tool_path, "goto"), f"goto of tool '{tool.name}':")
            for param in tool.parameters:
                self.identifier(param, (*tool_path, "parameters", param), "parameter name", at_key=True)

    def shape(self, node_id: str, node: Node, base: PathKey) -> None:
        """Combinations of keys that contradict each other or leave the call stuck."""
        what = f"node '{node_id}'"
        terminal = "ends the call (end: true)" if node.end else "hands the call over (handover)"
        if node.end and node.handover is not None:
            self.add(
                (*base, "end"),
                f"{what} hands the call over, which already ends the bot's part; remove `end`",
                at_key=True,
            )
            return
        if node.end and node.next is not None:
            self.add(
                (*base, "next"),
                f"{what} ends the call (end: true), so its `next` would never be used; remove one of them",
                at_key=True,
            )
        if node.end and node.intents:
            self.add(
                (*base, "intents"),
                f"{what} ends the call (end: true), so the caller never gets to answer its intents; "
                "remove `end` or the intents",
                at_key=True,
            )
        if node.handover is not None or node.end:
            for key, present in (
                ("next", node.handover is not None and node.next is not None),
                ("intents", node.handover is not None and bool(node.intents)),
                ("ask", node.ask is not None),
                ("branches", bool(node.branches)),
                ("http", node.http is not None),
                ("llm", node.llm is not None),
            ):
                if present:
                    self.add((*base, key), f"{what} {terminal}, so its `{key}` would never be used", at_key=True)
            return
        if node.http is not None:
            for key, present in (
                ("next", node.next is not None),
                ("intents", bool(node.intents)),
                ("ask", node.ask is not None),
                ("branches", bool(node.branches)),
                ("llm", node.llm is not None),
            ):
                if present:
                    self.add(
                        (*base, key),
                        f"{what} calls a business system (http) and continues with its `on_success`/`on_error`, "
                        f"so its `{key}` would never be used; move it to another node",
                        at_key=True,
                    )
            return
        if node.llm is not None:
            for key, present in (
                ("next", node.next is not None),
                ("intents", bool(node.intents)),
                ("ask", node.ask is not None),
                ("branches", bool(node.branches)),
            ):
                if present:
                    self.add(
                        (*base, key),
                        f"{what} lets the LLM decide where to go (its `transitions` and tools), so its `{key}` "
                        "would never be used; remove it",
                        at_key=True,
                    )
            return
        if node.ask is None and node.intents and node.next is not None:
            self.add(
                (*base, "intents"),
                f"{what} moves straight on to '{node.next}' (next), so the caller never gets to answer its intents; "
                "remove `next` or the intents",
                at_key=True,
            )
        if node.ask is None and node.intents and node.branches:
            self.add(
                (*base, "branches"),
                f"{what} waits for one of its intents, so its `branches` would never be used; "
                "put them in the node the intent goes to",
                at_key=True,
            )
        if not node.is_question:
            for key, present in (
                ("no_match", node.no_match is not None),
                ("reprompt", bool(node.reprompt)),
                ("max_retries", node.max_retries is not None),
            ):
                if present:
                    self.add(
                        (*base, key),
                        f"`{key}` only applies to questions (nodes with `ask` or `intents`), and {what} asks nothing",
                        at_key=True,
                    )
        if node.branches and node.next is None and (node.ask is not None or not node.intents):
            self.add(
                (*base, "branches"),
                f"{what} has `branches` but no `next` for when none of them applies; add `next: <node>`",
                at_key=True,
            )
            return
        if node.ask is not None and node.next is None and not node.branches:
            self.add(
                (*base, "ask"),
                f"question at {what} has no way out once answered: add `next: <node>` (where to go after the "
                f"caller gives their {node.ask.slot}) or `branches`",
                at_key=True,
            )
            return
        if not node.end and node.next is None and not node.intents and not node.branches and node.ask is None:
            self.add(
                base,
                f"{what} is a dead end: give it `intents` (what the caller can say next), `ask` (a question), "
                "`next: <node>` (where to go after speaking) or `end: true` (hang up)",
                at_key=True,
            )

    def next_loops(self) -> None:
        """A `next` cycle through nodes that never wait would make the engine talk forever."""
        flow = self.flow

        def passes_on(node_id: str) -> str | None:
            node = flow.nodes[node_id]
            if waits(node) or ends(node) or node.next not in flow.nodes:
                return None
            return node.next

        reported: set[str] = set()
        for node_id in self.ids:
            chain = [node_id]
            nxt = passes_on(node_id)
            while nxt is not None:
                if nxt in chain:
                    loop = chain[chain.index(nxt) :]
                    if not reported.intersection(loop):
                        reported.update(loop)
                        self.add(
                            ("nodes", chain[-1], "next"),
                            "these nodes pass to each other with `next` forever, so the caller never gets "
                            "to speak: " + " -> ".join([*loop, nxt]),
                        )
                    break
                chain.append(nxt)
                nxt = passes_on(nxt)

    def templates_and_conditions(self) -> None:
        known = slots_set(self.flow)
        hint_names = sorted(known)

        def never_set(name: str, path: PathKey, offset: int, extra: str = "") -> None:
            self.add(
                path,
                f"slot '{name}' is used here but never set: no `ask`, `set`, `store` or LLM tool fills it"
                + _did_you_mean(name, hint_names, list_all=False)
                + extra,
                offset=offset,
            )

        for path, text in templated_texts(self.flow):
            placeholders, problems = parse_template(text)
            for problem in problems:
                self.add(path, problem.message, offset=problem.start)
            for placeholder in placeholders:
                if placeholder.scope == "slot" and placeholder.name not in known:
                    never_set(placeholder.name, path, placeholder.start)
        for node_id, node in self.flow.nodes.items():
            for i, branch in enumerate(node.branches):
                path = ("nodes", node_id, "branches", i, "if")
                try:
                    expr = parse_condition(branch.condition)
                except ConditionError as exc:
                    self.add(path, f"cannot read condition: {exc.message}", offset=exc.offset)
                    continue
                for name in names(expr):
                    if name.scope == "slot" and name.name not in known:
                        never_set(name.name, path, name.start, " (to compare with text, put it in quotes: 'text')")


def check_flow(flow: Flow) -> list[FlowIssue]:
    """Return every problem in ``flow`` (empty = usable), references and slots first, then
    the call graph (unreachable nodes, questions with no way out)."""
    issues = _Checker(flow).run()
    if not issues:
        issues = _graph_issues(flow)
    return issues
