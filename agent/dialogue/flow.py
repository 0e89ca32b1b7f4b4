"""Call-flow model, YAML loader and validation.

Flows are written by prompt authors, not programmers, so the loader's main job is to turn
every mistake into a message that says *where* (``file:line:column``) and *what to do*. To
get positions we never let PyYAML build plain Python objects: we compose the node tree
(which keeps marks), walk it ourselves with a small schema, and remember the mark of every
key and value by its path (``("nodes", "welcome", "intents", 0, "goto")``). Cross-reference
checks (:func:`check_flow`) work on the finished model and report paths, which the loader
maps back to positions; that keeps those rules usable for flows built in code as well.

The models are deliberately "wide" already (intents are objects, nodes are objects with
optional behaviour flags) so later features (slots, ``ask``, conditions, actions) become new
optional fields rather than a new shape.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "DEFAULT_FALLBACK",
    "DEFAULT_MAX_RETRIES",
    "NO_MATCH_NODE",
    "PLACEHOLDER_RE",
    "Flow",
    "FlowError",
    "FlowIssue",
    "Intent",
    "Node",
    "check_flow",
    "load_flow",
    "parse_flow",
]

DEFAULT_FALLBACK = "Sorry, could you say that again?"
DEFAULT_MAX_RETRIES = 2
#: A node with this id, if the flow has one, takes over once the caller has not been
#: understood ``max_retries`` times in a row (a convention rather than a key, so authors
#: opt in just by writing the node).
NO_MATCH_NODE = "no_match"

#: ``{{ caller.name }}``-style placeholders; shared with the engine so validation and
#: rendering can never disagree about what counts as a placeholder.
PLACEHOLDER_RE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_CALLER_FIELD_RE = re.compile(r"caller\.[A-Za-z_][A-Za-z0-9_]*")

PathKey = tuple[str | int, ...]


class FlowError(ValueError):
    """A flow file that cannot be used, with the position of the problem when known.

    Subclasses ``ValueError`` so generic "bad input" handlers still catch it; the position
    is also kept as attributes so tools (an editor, a web UI) need not parse the message.
    """

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.reason = message
        self.source = source
        self.line = line
        self.column = column
        if source is not None and line is not None and column is not None:
            prefix = f"{source}:{line}:{column}: "
        elif source is not None:
            prefix = f"{source}: "
        else:
            prefix = ""
        super().__init__(prefix + message)


class _Model(BaseModel):
    # Frozen so one parsed flow can be shared by many concurrent calls without one call's
    # engine mutating another's script; extra="forbid" mirrors the loader's typo checks for
    # flows built in code.
    model_config = ConfigDict(frozen=True, extra="forbid")


class Intent(_Model):
    """Something the caller may say, and where the conversation goes when they do."""

    name: str
    examples: list[str] = Field(default_factory=list)
    keywords: list[str] = Field(default_factory=list)
    goto: str


class Node(_Model):
    """One step of the conversation: what the bot says, then how it moves on."""

    id: str
    say: list[str] = Field(default_factory=list)
    intents: list[Intent] = Field(default_factory=list)
    end: bool = False
    interruptible: bool = True
    next: str | None = None


class Flow(_Model):
    """A whole call script, as loaded from one YAML file."""

    name: str
    start: str
    fallback: list[str] = Field(default_factory=lambda: [DEFAULT_FALLBACK])
    max_retries: int = Field(default=DEFAULT_MAX_RETRIES, ge=0)
    nodes: dict[str, Node]
    global_intents: list[Intent] = Field(default_factory=list)
    source: str = "<string>"

    @property
    def no_match(self) -> str | None:
        """Id of the give-up node, so the engine does not hard-code the convention."""
        return NO_MATCH_NODE if NO_MATCH_NODE in self.nodes else None


@dataclass(frozen=True)
class FlowIssue:
    """A semantic problem found by :func:`check_flow`.

    ``path`` names the offending YAML location; ``at_key`` says whether to point at the key
    (e.g. the node id, where the author should add something) or at its value (e.g. a bad
    ``goto`` target, which is what must be fixed).
    """

    path: PathKey
    message: str
    at_key: bool = False


# --------------------------------------------------------------------------------------
# Semantic checks (shared by the loader and by flows built in code)
# --------------------------------------------------------------------------------------


def _did_you_mean(word: str, choices: list[str], *, list_all: bool) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if close:
        return f"; did you mean '{close[0]}'?"
    if list_all and choices:
        shown = ", ".join(choices[:12]) + (", ..." if len(choices) > 12 else "")
        return f" (choose one of: {shown})"
    return ""


def check_flow(flow: Flow) -> list[FlowIssue]:
    """Return every cross-reference / reachability problem in ``flow`` (empty = usable).

    These rules need the whole flow (all node ids) so they cannot live in per-field type
    validation; they are separate from the loader so engines can refuse hand-built flows
    that would dead-end or loop mid-call.
    """
    issues: list[FlowIssue] = []
    ids = list(flow.nodes)

    def ref(target: str, path: PathKey, what: str) -> None:
        if target not in flow.nodes:
            issues.append(
                FlowIssue(
                    path, f"{what} '{target}' is not a node in this flow" + _did_you_mean(target, ids, list_all=True)
                )
            )

    ref(flow.start, ("start",), "start node")
    for i, intent in enumerate(flow.global_intents):
        ref(intent.goto, ("global_intents", i, "goto"), f"goto of global intent '{intent.name}':")

    for node_id, node in flow.nodes.items():
        base: PathKey = ("nodes", node_id)
        if node.id != node_id:
            issues.append(FlowIssue(base, f"node stored as '{node_id}' has id '{node.id}'", at_key=True))
        for i, intent in enumerate(node.intents):
            ref(intent.goto, (*base, "intents", i, "goto"), f"goto of intent '{intent.name}':")
        if node.next is not None:
            ref(node.next, (*base, "next"), "next:")
        if node.end and node.next is not None:
            issues.append(
                FlowIssue(
                    (*base, "next"),
                    f"node '{node_id}' ends the call (end: true), so its `next` would never be used; "
                    "remove one of them",
                    at_key=True,
                )
            )
        if node.end and node.intents:
            issues.append(
                FlowIssue(
                    (*base, "intents"),
                    f"node '{node_id}' ends the call (end: true), so the caller never gets to answer "
                    "its intents; remove `end` or the intents",
                    at_key=True,
                )
            )
        if node.next is not None and node.intents and not node.end:
            issues.append(
                FlowIssue(
                    (*base, "intents"),
                    f"node '{node_id}' moves straight on to '{node.next}' (next), so the caller never "
                    "gets to answer its intents; remove `next` or the intents",
                    at_key=True,
                )
            )
        if not node.end and node.next is None and not node.intents:
            issues.append(
                FlowIssue(
                    base,
                    f"node '{node_id}' is a dead end: give it `intents` (what the caller can say next), "
                    "`next: <node>` (where to go after speaking) or `end: true` (hang up)",
                    at_key=True,
                )
            )

    start = flow.nodes.get(flow.start)
    if start is not None and not start.say:
        issues.append(
            FlowIssue(
                ("nodes", flow.start),
                f"the start node '{flow.start}' needs a `say`: it is the greeting the caller hears first",
                at_key=True,
            )
        )

    # A `next` cycle would make the engine talk forever without listening.
    reported: set[str] = set()
    for node_id in ids:
        chain = [node_id]
        current = flow.nodes[node_id]
        while current.next is not None and current.next in flow.nodes and not current.end:
            if current.next in chain:
                loop = chain[chain.index(current.next) :]
                if not reported.intersection(loop):
                    reported.update(loop)
                    issues.append(
                        FlowIssue(
                            ("nodes", chain[-1], "next"),
                            "these nodes pass to each other with `next` forever, so the caller never gets "
                            "to speak: " + " -> ".join([*loop, current.next]),
                        )
                    )
                break
            chain.append(current.next)
            current = flow.nodes[current.next]
    return issues


# --------------------------------------------------------------------------------------
# YAML reading with positions
# --------------------------------------------------------------------------------------

_TAG_STR = "tag:yaml.org,2002:str"
_TAG_NULL = "tag:yaml.org,2002:null"
_TAG_BOOL = "tag:yaml.org,2002:bool"
_TAG_INT = "tag:yaml.org,2002:int"

_FLOW_KEYS = ("name", "start", "fallback", "max_retries", "global_intents", "nodes")
_NODE_KEYS = ("say", "intents", "next", "end", "interruptible")
_INTENT_KEYS = ("name", "examples", "keywords", "goto")


def _describe(node: yaml.Node) -> str:
    """Name a YAML value the way a non-programmer would, for "expected X, got Y" messages."""
    if isinstance(node, yaml.MappingNode):
        return "a block of `key: value` lines"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    assert isinstance(node, yaml.ScalarNode)
    if node.tag == _TAG_NULL:
        return "nothing"
    if node.tag == _TAG_BOOL:
        return f"true/false ({node.value})"
    if node.tag in (_TAG_INT, "tag:yaml.org,2002:float"):
        return f"a number ({node.value})"
    if node.tag == _TAG_STR:
        return f"text ({node.value!r})"
    return f"a {node.tag.rsplit(':', 1)[-1]} ({node.value})"


def _is_null(node: yaml.Node | None) -> bool:
    return node is None or (isinstance(node, yaml.ScalarNode) and node.tag == _TAG_NULL)


class _Reader:
    """Turns a composed YAML tree into :class:`Flow` while recording marks per path."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.key_marks: dict[PathKey, yaml.Mark] = {}
        self.value_marks: dict[PathKey, yaml.Mark] = {}

    # -- errors ------------------------------------------------------------------------

    def error(self, mark: yaml.Mark, message: str, *, column_offset: int = 0) -> FlowError:
        return FlowError(message, source=self.source, line=mark.line + 1, column=mark.column + 1 + column_offset)

    def locate(self, issue: FlowIssue) -> FlowError:
        """Point a semantic issue at the closest recorded position on its path."""
        table = self.key_marks if issue.at_key else self.value_marks
        path = issue.path
        while path:
            mark = table.get(path) or self.value_marks.get(path)
            if mark is not None:
                return self.error(mark, issue.message)
            path = path[:-1]
        return FlowError(issue.message, source=self.source, line=1, column=1)

    # -- primitives --------------------------------------------------------------------

    def entries(
        self, node: yaml.Node, path: PathKey, what: str, allowed: tuple[str, ...] | None
    ) -> dict[str, yaml.Node]:
        """Read a mapping, rejecting duplicate and (when ``allowed`` is given) unknown keys.

        PyYAML silently keeps the last of two identical keys; for a flow that means a whole
        node quietly disappears, so duplicates are an error here.
        """
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node.start_mark, f"{what} must be a block of `key: value` lines, not {_describe(node)}")
        out: dict[str, yaml.Node] = {}
        first_seen: dict[str, yaml.Mark] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or _is_null(key_node):
                raise self.error(key_node.start_mark, f"keys in {what} must be plain words, not {_describe(key_node)}")
            key = str(key_node.value)
            if key in first_seen:
                raise self.error(
                    key_node.start_mark,
                    f"duplicate key '{key}' in {what} (already used on line {first_seen[key].line + 1}); "
                    "the earlier one would be silently lost",
                )
            if allowed is not None and key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
                hint = f"; did you mean '{close[0]}'?" if close else f" (allowed: {', '.join(allowed)})"
                raise self.error(key_node.start_mark, f"unknown key '{key}' in {what}{hint}")
            first_seen[key] = key_node.start_mark
            out[key] = value_node
            self.key_marks[(*path, key)] = key_node.start_mark
            self.value_marks[(*path, key)] = value_node.start_mark
        return out

    def identifier(self, node: yaml.Node, what: str) -> str:
        """Read a name/target.

        Unquoted ``yes``/``no``/``1`` are booleans/numbers to YAML, but a node called ``no``
        is perfectly reasonable in a yes/no flow, so any plain scalar is taken as written.
        """
        if not isinstance(node, yaml.ScalarNode) or _is_null(node):
            raise self.error(node.start_mark, f"{what} must be a name, not {_describe(node)}")
        value = str(node.value).strip()
        if not value:
            raise self.error(node.start_mark, f"{what} must not be empty")
        return value

    def phrase(self, node: yaml.Node, what: str) -> str:
        """Read an example/keyword; like identifiers, ``yes``/``no``/numbers are literal text."""
        if not isinstance(node, yaml.ScalarNode) or _is_null(node):
            raise self.error(node.start_mark, f"{what} must be text, not {_describe(node)}")
        value = str(node.value).strip()
        if not value:
            raise self.error(node.start_mark, f"{what} must not be empty")
        return value

    def spoken(self, node: yaml.Node, what: str) -> str:
        """Read a line the bot will speak, checking its placeholders.

        Unlike examples, a number or true/false here is almost surely a mistake (``say: 5``),
        so it is rejected with a hint to quote it.
        """
        if not isinstance(node, yaml.ScalarNode) or node.tag != _TAG_STR:
            hint = (
                " (put it in quotes if you really mean those words)"
                if isinstance(node, yaml.ScalarNode) and not _is_null(node)
                else ""
            )
            raise self.error(node.start_mark, f"{what} must be text, not {_describe(node)}{hint}")
        value = str(node.value).strip()
        if not value:
            raise self.error(node.start_mark, f"{what} must not be empty")
        self.check_placeholders(node, what)
        return value

    def check_placeholders(self, node: yaml.ScalarNode, what: str) -> None:
        text = str(node.value)

        def offset(index: int) -> int:
            # Exact column only when the scalar is one source line without escapes; otherwise
            # the scalar's start is the honest answer.
            if node.start_mark.line != node.end_mark.line:
                return 0
            if node.style is None:
                return index
            if node.style in ("'", '"') and "\\" not in text and "''" not in text:
                return index + 1
            return 0

        for match in PLACEHOLDER_RE.finditer(text):
            if not _CALLER_FIELD_RE.fullmatch(match.group(1)):
                raise self.error(
                    node.start_mark,
                    f"unknown placeholder {match.group(0)} in {what}; placeholders look like {{{{caller.name}}}}",
                    column_offset=offset(match.start()),
                )
        leftover = PLACEHOLDER_RE.sub("", text)
        for brace in ("{", "}"):
            if brace in leftover:
                # Find the stray brace in the original text for the column.
                index = next(
                    i
                    for i, ch in enumerate(text)
                    if ch == brace and not any(m.start() <= i < m.end() for m in PLACEHOLDER_RE.finditer(text))
                )
                raise self.error(
                    node.start_mark,
                    f"stray '{brace}' in {what}; placeholders use double braces, like {{{{caller.name}}}}",
                    column_offset=offset(index),
                )

    def one_or_many(
        self, node: yaml.Node, path: PathKey, what: str, read: Callable[[yaml.Node, str], str]
    ) -> list[str]:
        """Accept ``x`` or ``[x, y]`` so simple flows stay one-liners."""
        if isinstance(node, yaml.SequenceNode):
            items = []
            for i, item in enumerate(node.value):
                self.value_marks[(*path, i)] = item.start_mark
                items.append(read(item, f"item {i + 1} of {what}"))
            return items
        if isinstance(node, yaml.ScalarNode) and not _is_null(node):
            return [read(node, what)]
        raise self.error(node.start_mark, f"{what} must be text or a list of text, not {_describe(node)}")

    def boolean(self, node: yaml.Node, what: str) -> bool:
        if isinstance(node, yaml.ScalarNode) and node.tag == _TAG_BOOL:
            return bool(yaml.constructor.SafeConstructor().construct_object(node))
        raise self.error(node.start_mark, f"{what} must be true or false, not {_describe(node)}")

    def count(self, node: yaml.Node, what: str) -> int:
        if isinstance(node, yaml.ScalarNode) and node.tag == _TAG_INT:
            value = int(yaml.constructor.SafeConstructor().construct_object(node))
            if value >= 0:
                return value
        raise self.error(node.start_mark, f"{what} must be a whole number (0 or more), not {_describe(node)}")

    # -- structure ---------------------------------------------------------------------

    def intents(self, node: yaml.Node | None, path: PathKey, what: str) -> list[Intent]:
        if node is None or _is_null(node):
            return []
        if not isinstance(node, yaml.SequenceNode):
            raise self.error(
                node.start_mark, f"{what} must be a list (each item starting with '- '), not {_describe(node)}"
            )
        result: list[Intent] = []
        seen: dict[str, yaml.Mark] = {}
        for i, item in enumerate(node.value):
            item_path = (*path, i)
            self.value_marks[item_path] = item.start_mark
            fields = self.entries(item, item_path, f"intent {i + 1} of {what}", _INTENT_KEYS)
            if _is_null(fields.get("name")):
                raise self.error(item.start_mark, f"intent {i + 1} of {what} needs a `name`")
            name = self.identifier(fields["name"], "intent name")
            label = f"intent '{name}'"
            if name in seen:
                raise self.error(
                    fields["name"].start_mark,
                    f"duplicate {label} in {what} (already used on line {seen[name].line + 1})",
                )
            seen[name] = fields["name"].start_mark
            if _is_null(fields.get("goto")):
                raise self.error(item.start_mark, f"{label} needs a `goto`: the node to go to when it matches")
            goto = self.identifier(fields["goto"], f"goto of {label}")
            examples = self.optional_phrases(fields, "examples", item_path, label)
            keywords = self.optional_phrases(fields, "keywords", item_path, label)
            if not examples and not keywords:
                raise self.error(
                    item.start_mark,
                    f"{label} needs `examples` (things a caller might say) or `keywords`, otherwise it can never match",
                )
            result.append(Intent(name=name, examples=examples, keywords=keywords, goto=goto))
        return result

    def optional_phrases(self, fields: dict[str, yaml.Node], key: str, path: PathKey, label: str) -> list[str]:
        node = fields.get(key)
        if node is None or _is_null(node):
            return []
        return self.one_or_many(node, (*path, key), f"`{key}` of {label}", self.phrase)

    def node(self, node_id: str, value: yaml.Node) -> Node:
        path: PathKey = ("nodes", node_id)
        what = f"node '{node_id}'"
        fields = {} if _is_null(value) else self.entries(value, path, what, _NODE_KEYS)
        say: list[str] = []
        if not _is_null(fields.get("say")):
            say = self.one_or_many(fields["say"], (*path, "say"), f"`say` of {what}", self.spoken)
        intents = self.intents(fields.get("intents"), (*path, "intents"), f"`intents` of {what}")
        nxt = None if _is_null(fields.get("next")) else self.identifier(fields["next"], f"`next` of {what}")
        end = False if _is_null(fields.get("end")) else self.boolean(fields["end"], f"`end` of {what}")
        interruptible = (
            True
            if _is_null(fields.get("interruptible"))
            else self.boolean(fields["interruptible"], f"`interruptible` of {what}")
        )
        return Node(id=node_id, say=say, intents=intents, end=end, interruptible=interruptible, next=nxt)

    def flow(self, root: yaml.Node | None) -> Flow:
        if root is None:
            raise FlowError("the flow file is empty", source=self.source, line=1, column=1)
        fields = self.entries(root, (), "the flow", _FLOW_KEYS)
        for required in ("start", "nodes"):
            if _is_null(fields.get(required)):
                mark = self.key_marks.get((required,), root.start_mark)
                raise self.error(mark, f"the flow needs a `{required}`")

        name = (
            self.identifier(fields["name"], "`name`")
            if not _is_null(fields.get("name"))
            else Path(self.source).stem
            if not self.source.startswith("<")
            else "flow"
        )
        start = self.identifier(fields["start"], "`start`")
        fallback = [DEFAULT_FALLBACK]
        if not _is_null(fields.get("fallback")):
            fallback = self.one_or_many(fields["fallback"], ("fallback",), "`fallback`", self.spoken)
            if not fallback:
                raise self.error(fields["fallback"].start_mark, "`fallback` needs at least one line")
        max_retries = DEFAULT_MAX_RETRIES
        if not _is_null(fields.get("max_retries")):
            max_retries = self.count(fields["max_retries"], "`max_retries`")
        global_intents = self.intents(fields.get("global_intents"), ("global_intents",), "`global_intents`")

        node_map = self.entries(fields["nodes"], ("nodes",), "`nodes`", None)
        if not node_map:
            raise self.error(fields["nodes"].start_mark, "`nodes` must contain at least one node")
        nodes: dict[str, Node] = {}
        for node_id, value in node_map.items():
            nodes[node_id] = self.node(node_id, value)

        return Flow(
            name=name,
            start=start,
            fallback=fallback,
            max_retries=max_retries,
            nodes=nodes,
            global_intents=global_intents,
            source=self.source,
        )


def parse_flow(text: str, source: str = "<string>") -> Flow:
    """Parse and fully validate a flow; ``source`` is only used to label error positions."""
    reader = _Reader(source)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.problem and exc.context and exc.context_mark is not None:
            # The context ("while scanning a quoted scalar") usually says where the real
            # mistake began, which can be far above the point where YAML gave up.
            where = f"line {exc.context_mark.line + 1}, column {exc.context_mark.column + 1}"
            problem += f" ({exc.context} at {where})"
        if "\\t" in problem:
            problem += " (indent with spaces, not tabs)"
        if mark is None:
            raise FlowError(problem, source=source) from exc
        raise reader.error(mark, problem) from exc
    except yaml.YAMLError as exc:  # e.g. a stream-level reader error without a mark
        raise FlowError(str(exc), source=source) from exc

    flow = reader.flow(root)
    issues = check_flow(flow)
    if issues:
        errors = [reader.locate(issue) for issue in issues]
        # Report the first problem in reading order: that is where the author will look first.
        raise min(errors, key=lambda e: (e.line or 0, e.column or 0))
    return flow


def load_flow(path: str | Path) -> Flow:
    """Read a flow file; I/O and decoding failures become :class:`FlowError` too so callers
    (CLI, server start-up) have a single exception to report to the author."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise FlowError(f"cannot read flow file: {exc}", source=source) from exc
    return parse_flow(text, source=source)
