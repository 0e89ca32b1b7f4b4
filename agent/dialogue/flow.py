"""Reading call flows from YAML, with every mistake pointing at ``file:line:column``.

Flows are written by prompt authors, not programmers, so the loader's job is to turn every
mistake into a message that says *where* and *what to do*, and to report all of them at
once. It owns no knowledge of the language itself: the pydantic models in
:mod:`agent.dialogue.model` are the authored shape (keys, shorthand forms, types), so the
loader only

1. composes the YAML (:mod:`agent.dialogue.yamlsource`, which keeps every node's position),
2. turns it into plain data, keeping scalars YAML would re-type as written (``no`` stays a
   word where a name is expected),
3. validates that data with :class:`Flow` and words each pydantic error for an author,
   at the position of the YAML node its location leads to, and
4. runs the whole-flow rules of :mod:`agent.dialogue.checks`, whose paths map the same way.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from agent.dialogue import model as m
from agent.dialogue.checks import FlowIssue, check_flow
from agent.dialogue.model import (
    DEFAULT_FALLBACK,
    DEFAULT_MAX_RETRIES,
    NO_MATCH_NODE,
    Ask,
    Branch,
    Flow,
    FlowError,
    Intent,
    Node,
    Written,
    authored_keys,
)
from agent.dialogue.templates import PLACEHOLDER_RE
from agent.dialogue.yamlsource import (
    MappingNode,
    ScalarNode,
    SequenceNode,
    compose,
    construct,
    describe,
    is_null,
    tag_of,
)
from agent.dialogue.yamlsource import (
    Node as YamlNode,
)

__all__ = [
    "ASK_KEYS",
    "DEFAULT_FALLBACK",
    "DEFAULT_MAX_RETRIES",
    "FAQ_KEYS",
    "FLOW_KEYS",
    "HOURS_KEYS",
    "INTENT_KEYS",
    "KEYPAD_ENTRY_KEYS",
    "NODE_KEYS",
    "NO_MATCH_NODE",
    "PLACEHOLDER_RE",
    "Ask",
    "Branch",
    "Flow",
    "FlowError",
    "FlowIssue",
    "Intent",
    "Node",
    "check_flow",
    "flow_errors",
    "load_flow",
    "parse_flow",
]

PathKey = tuple[str | int, ...]

#: The keys each block accepts, derived from the models (kept as names for older callers).
FLOW_KEYS = authored_keys(m.Flow)
NODE_KEYS = authored_keys(m.Node)
INTENT_KEYS = authored_keys(m.Intent)
ASK_KEYS = authored_keys(m.Ask)
KEYPAD_ENTRY_KEYS = authored_keys(m.Keypad)
FAQ_KEYS = authored_keys(m.FaqEntry)
HOURS_KEYS = authored_keys(m.BusinessHours)

#: Blocks whose own keys are free (slot names, payloads, node ids): no "unknown key" there.
_FREE_KEYS = frozenset({"nodes", "slots", "set", "entry_points", "headers", "store", "parameters", "choices", "json"})


# -- YAML -> data, remembering nodes --------------------------------------------------------------


class _Document:
    """The composed YAML of one flow file, turned into data the models validate."""

    def __init__(self, source: str, root: YamlNode) -> None:
        self.source = source
        self.root = root
        self.errors: list[FlowError] = []

    def error(self, node_or_mark: Any, message: str) -> FlowError:
        mark = getattr(node_or_mark, "start_mark", node_or_mark)
        return FlowError(message, source=self.source, line=mark.line + 1, column=mark.column + 1)

    def data(self, node: YamlNode, what: str) -> Any:
        """Plain data; duplicate and non-word keys are reported here (YAML would keep the last)."""
        if isinstance(node, MappingNode):
            out: dict[str, Any] = {}
            first_seen: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, ScalarNode) or is_null(key_node):
                    self.errors.append(
                        self.error(key_node, f"keys in {what} must be plain words, not {describe(key_node)}")
                    )
                    continue
                key = str(key_node.value)
                if key in first_seen:
                    self.errors.append(
                        self.error(
                            key_node,
                            f"duplicate key '{key}' in {what} (already used on line {first_seen[key].line + 1}); "
                            "the earlier one would be silently lost",
                        )
                    )
                    continue
                first_seen[key] = key_node.start_mark
                out[key] = self.data(value_node, f"`{key}`")
            return out
        if isinstance(node, SequenceNode):
            return [self.data(item, what) for item in node.value]
        tag = tag_of(node)
        if tag == "null":
            return None
        if tag == "str":
            return str(node.value)
        return Written(str(node.value), construct(node))

    # -- paths -> YAML nodes --------------------------------------------------------------------

    def walk(self, path: PathKey) -> tuple[YamlNode, Any, int]:
        """The YAML node a path leads to, the mark of the last key on the way, and how much of the
        path was followed. Shorthand forms are followed too: an index 0 into a single value
        (``say: Hi``) and a key into a text (``request_call_permission: Why``) stay on that value."""
        node: YamlNode = self.root
        key_mark: Any = None
        used = 0
        for step in path:
            if isinstance(node, MappingNode) and isinstance(step, str):
                for key_node, value_node in node.value:
                    if isinstance(key_node, ScalarNode) and str(key_node.value) == step:
                        node, key_mark = value_node, key_node.start_mark
                        break
                else:
                    break
            elif isinstance(node, SequenceNode) and isinstance(step, int):
                if step >= len(node.value):
                    break
                node, key_mark = node.value[step], None
            elif step == 0 and not isinstance(node, SequenceNode):
                key_mark = None  # one value where a list is allowed
            elif isinstance(node, ScalarNode) and isinstance(step, str):
                pass  # `block: text` stands for `block: {key: text}`
            else:
                break
            used += 1
        return node, key_mark, used

    def locate(self, issue: FlowIssue) -> FlowError:
        """Point a whole-flow issue at the closest position on its path."""
        node, key_mark, used = self.walk(issue.path)
        if issue.offset is not None and used == len(issue.path):
            line, column = _position_in(node, issue.offset)
            return FlowError(issue.message, source=self.source, line=line, column=column)
        if issue.at_key and key_mark is not None and used == len(issue.path):
            return self.error(key_mark, issue.message)
        return self.error(node, issue.message)


def _position_in(node: YamlNode, index: int) -> tuple[int, int]:
    """1-based line/column of character ``index`` of a (stripped) text value.

    Exact for one-line plain or quoted texts and for ``|`` blocks; otherwise the start of the
    text, which is the honest answer once YAML has folded or unescaped it.
    """
    mark = node.start_mark
    if not isinstance(node, ScalarNode):
        return mark.line + 1, mark.column + 1
    raw = str(node.value)
    index += len(raw) - len(raw.lstrip())
    if node.style == "|" and getattr(mark, "buffer", None) is not None:
        before = raw[:index]
        line_in_block = before.count("\n")
        col_in_line = index - (before.rfind("\n") + 1)
        lines = mark.buffer.split("\n")
        first = mark.line + 1
        if first < len(lines):
            indent = len(lines[first]) - len(lines[first].lstrip(" "))
            return first + line_in_block + 1, indent + col_in_line + 1
    if mark.line != node.end_mark.line or "\n" in raw:
        return mark.line + 1, mark.column + 1
    if node.style is None:
        return mark.line + 1, mark.column + 1 + index
    if node.style in ("'", '"') and "\\" not in raw and "''" not in raw:
        return mark.line + 1, mark.column + 2 + index
    return mark.line + 1, mark.column + 1


# -- pydantic errors in an author's words ---------------------------------------------------------


_ITEM_KINDS = {
    "intents": "intent",
    "global_intents": "intent",
    "tools": "tool",
    "faq": "question",
    "branches": "branch",
}


def _label(path: PathKey, data: Any) -> str:
    """What a path is called in messages: "`end` of node 'a'", "intent 'yes'", "item 2 of `say`".

    Nodes, intents and tools are named by their names, which restart the label: "`goto` of
    intent 'yes'" is clear without the node it is in, and shorter to read.
    """
    parts: list[str] = ["the flow"]
    value = data
    previous: str | int | None = None
    for step in path:
        item = None
        if isinstance(value, dict):
            item = value.get(step)
        elif isinstance(value, list) and isinstance(step, int) and 0 <= step < len(value):
            item = value[step]
        if previous == "nodes" and len(parts) == 1:
            parts = [f"node '{step}'"]
        elif isinstance(step, int):
            kind = _ITEM_KINDS.get(str(previous))
            named = item.get("name") if isinstance(item, dict) else None
            if kind in ("intent", "tool") and isinstance(named, str):
                parts = [f"{kind} '{named}'"]
            else:
                parts[-1] = f"{kind or 'item'} {step + 1} of {parts[-1]}"
        else:
            parts.append(f"`{step}`")
        if parts[0] == "the flow" and len(parts) > 1:
            parts = parts[1:]
        previous = step
        value = item
    return " of ".join(reversed(parts))


def _suggest(key: str, model: type[BaseModel] | None, value: Any) -> str:
    """Close matches among the keys valid here, preferring those whose field takes such a value.

    Spelling alone cannot choose between ``say`` and ``set`` for ``sey``; the value can:
    ``sey: Hello`` holds text, which ``say`` takes and ``set`` does not.
    """
    if model is None:
        return ""
    allowed = authored_keys(model)
    close = difflib.get_close_matches(key, allowed, n=3, cutoff=0.6)
    if not close:
        return f" (allowed: {', '.join(allowed)})"
    fitting = [name for name in close if _fits(model, name, value)]
    return f"; did you mean '{(fitting or close)[0]}'?"


def _fits(model: type[BaseModel], key: str, value: Any) -> bool:
    field = next((f for n, f in model.model_fields.items() if (f.alias or n) == key), None)
    if field is None:
        return False
    probe = {key: value}
    try:
        model.model_validate(probe)
    except ValidationError as exc:
        return not any(err["loc"][:1] == (key,) for err in exc.errors())
    return True


def _model_at(shape: type[BaseModel], path: PathKey) -> type[BaseModel] | None:
    """The model whose keys are valid at ``path`` (for suggestions and "allowed:" lists)."""
    model: Any = shape
    i = 0
    while i < len(path):
        step = path[i]
        if isinstance(step, int):
            i += 1
            continue
        field = next((f for n, f in model.model_fields.items() if (f.alias or n) == step), None)
        if field is None:
            return None
        model = _model_in(field.annotation)
        if model is None:
            return None
        # A mapping of models (`nodes`, `parameters`): the next step is a name, not a key.
        i += 2 if get_origin(field.annotation) is dict else 1
        if i > len(path):
            return None
    return model


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    origin = getattr(annotation, "__origin__", None)
    if origin is not None and origin is not list and origin is not dict:
        return _model_in(origin)
    return None


_NEEDS = {
    ("Intent", "goto"): "the node to go to when it matches (or `repeat: true` to say the last thing again)",
    ("Ask", "slot"): "the name to store the answer under",
    ("Branch", "if"): "the condition to check",
    ("Branch", "goto"): "where to go when `if` holds",
    ("HandoverConfig", "queue"): "which team takes the call",
    ("HttpConfig", "on_success"): "the node to go to when the request works",
    ("HttpConfig", "on_error"): "the node to go to when it fails or times out",
    ("LlmConfig", "prompt"): "instructions for the LLM",
    ("LlmTool", "goto"): "where the call goes when the LLM uses it",
    ("FaqEntry", "answer"): "what the bot says",
    ("Variants", "one_of"): "the alternative wordings",
    ("CallPermissionConfig", "reason"): "the reason the caller will see",
}
_NO_ARTICLE = frozenset({"on_success", "on_error", "one_of"})
#: Model rules whose message starts with a verb; the subject is the label of where they apply.
_SUBJECTLESS = frozenset(
    {"intent_outcome", "never_matches", "keypad_off", "empty_key", "not_key", "clock", "terminator"}
)
_CHOICE_NAMES = {"type": "slot type", "method": "HTTP method"}


class _Wording:
    """Turns each pydantic error into one :class:`FlowError` at the YAML node it concerns."""

    def __init__(self, document: _Document, data: Any, shape: type[Flow]) -> None:
        self.doc = document
        self.data = data
        self.shape = shape

    def message(self, error: ErrorDetails) -> FlowError:
        kind = error["type"]
        path = _data_path(tuple(error["loc"]), self.data, kind)
        node, key_mark, _ = self.doc.walk(path)
        if kind == "extra_forbidden" and path:
            parent = path[:-1]
            key = str(path[-1])
            hint = _suggest(key, _model_at(self.shape, parent), error.get("input"))
            return self.doc.error(key_mark or node, f"unknown key '{key}' in {_label(parent, self.data)}{hint}")
        if kind == "missing" and path:
            parent, key = path[:-1], str(path[-1])
            parent_node, _, _ = self.doc.walk(parent)
            owner = _model_at(self.shape, parent)
            why = _NEEDS.get((owner.__name__ if owner else "", key))
            label = _label(parent, self.data)
            if owner is m.DigitLength:
                return self.doc.error(parent_node, f"{label} needs both `min` and `max` (or one number: `length: 5`)")
            article = "" if key in _NO_ARTICLE else "an " if key[0] in "aeiou" else "a "
            key_node = self.doc.walk(path)
            at = key_node[1] if key_node[2] == len(path) else parent_node if parent else self.doc.root
            return self.doc.error(at, f"{label} needs {article}`{key}`" + (f": {why}" if why else ""))
        label = _label(path, self.data)
        target = node
        seen = describe(node)
        custom = {
            "not_text": f"{label} must be text, not {seen}"
            + (" (put it in quotes if you really mean those words)" if isinstance(node, ScalarNode) else ""),
            "bool_type": f"{label} must be true or false, not {seen}",
            "bool_parsing": f"{label} must be true or false, not {seen}",
            "int_type": f"{label} must be a whole number (0 or more), not {seen}",
            "int_parsing": f"{label} must be a whole number (0 or more), not {seen}",
            "int_from_float": f"{label} must be a whole number (0 or more), not {seen}",
            "float_type": f"{label} must be a number, not {seen}",
            "float_parsing": f"{label} must be a number, not {seen}",
            "string_type": f"{label} must be text, not {seen}",
            "dict_type": f"{label} must be a block of `key: value` lines, not {seen}",
            "model_type": f"{label} must be a block of `key: value` lines, not {seen}",
            "model_attributes_type": f"{label} must be a block of `key: value` lines, not {seen}",
            "list_type": f"{label} must be a list (each item starting with '- '), not {seen}",
            "empty": f"{label} must not be empty",
            "not_single": f"{label} must be a single value (text, number, true/false or a date)",
        }
        if kind in custom:
            return self.doc.error(target, custom[kind])
        ctx = error.get("ctx") or {}
        if kind == "duplicate_name":
            listed = (*path, ctx["list"])
            name_node, _, _ = self.doc.walk((*listed, ctx["index"], "name"))
            first, _, _ = self.doc.walk((*listed, ctx["first"], "name"))
            where = _label(listed, self.data)
            line = first.start_mark.line + 1
            return self.doc.error(
                name_node, f"duplicate {ctx['what']} '{ctx['name']}' in {where} (already used on line {line})"
            )
        if kind == "intent_both":
            repeat_node = self.doc.walk((*path, "repeat"))
            return self.doc.error(repeat_node[1] or target, f"{label} {error['msg']}")
        if kind in _SUBJECTLESS:
            return self.doc.error(target, f"{label} {error['msg']}")
        if kind == "literal_error" and path:
            value = str(node.value) if isinstance(node, ScalarNode) else str(error.get("input"))
            options = [str(o).strip("'") for o in str(error.get("ctx", {}).get("expected", "")).split(" or ")]
            options = [o.strip("'") for part in options for o in part.split(", ")]
            close = difflib.get_close_matches(value, options, n=1, cutoff=0.5)
            what = _CHOICE_NAMES.get(str(path[-1]), "parameter type" if "parameters" in path else f"`{path[-1]}`")
            hint = f"; did you mean '{close[0]}'?" if close else ""
            return self.doc.error(target, f"unknown {what} '{value}'{hint} (choose one of: {', '.join(options)})")
        if kind in ("greater_than_equal", "greater_than") and path:
            limit = error.get("ctx", {}).get("ge", error.get("ctx", {}).get("gt"))
            limit = int(limit) if isinstance(limit, float) and limit.is_integer() else limit
            if "length" in path:
                return self.doc.error(
                    target, f"{_label(path[: path.index('length') + 1], self.data)} must be at least 1 digit"
                )
            if str(path[-1]) in ("timeout",):
                return self.doc.error(target, f"{label} must be more than {limit} seconds")
            if str(path[-1]) == "max_retries":
                return self.doc.error(target, f"{label} must be a whole number (0 or more), not {seen}")
            return self.doc.error(target, f"{label} must be at least {limit}")
        if kind == "too_short" and path:
            if path and path[-1] == "nodes":
                return self.doc.error(target, "`nodes` must contain at least one node")
            return self.doc.error(target, f"{label} needs at least one line")
        text = str(error["msg"]).removeprefix("Value error, ")
        return self.doc.error(target, text if not path or text.startswith(label) else f"{label}: {text}")


def _data_path(loc: tuple[Any, ...], data: Any, kind: str) -> PathKey:
    """The YAML path of an error location.

    Errors inside a union or a shorthand carry steps that are no YAML keys (``str``,
    ``function-before[...]``, ``Variants``, an index 0 into a single value); a step counts
    only if it leads somewhere in the data, except the key a "missing" error names.
    """
    path: list[str | int] = []
    value = data
    for i, step in enumerate(loc):
        if isinstance(value, dict) and step in value:
            path.append(step)
            value = value[step]
        elif isinstance(value, list) and isinstance(step, int) and 0 <= step < len(value):
            path.append(step)
            value = value[step]
        elif i == len(loc) - 1 and kind == "missing":
            path.append(step)
    return tuple(path)


# -- the loader ------------------------------------------------------------------------------------


def flow_errors(
    text: str, source: str = "<string>", *, shape: type[Flow] = Flow
) -> tuple[Flow | None, list[FlowError]]:
    """Every problem in a flow text, in reading order (for ``wacall flows check``).

    ``shape`` is the model the text must fit; only tests pass another (a :class:`Flow`
    with one more key, to show the loader needs no change for it).

    Structural mistakes (unknown keys, wrong types, missing keys) are all reported; the
    whole-flow rules run once the structure is sound, and report all their findings too.
    """
    try:
        root = compose(text, source)
    except FlowError as exc:
        return None, [exc]
    if root is None:
        return None, [FlowError("the flow file is empty", source=source, line=1, column=1)]
    document = _Document(source, root)
    if not isinstance(root, MappingNode):
        return None, [document.error(root, f"the flow must be a block of `key: value` lines, not {describe(root)}")]
    data = document.data(root, "the flow")
    nodes = data.get("nodes")
    if isinstance(nodes, dict):
        for node_id, node in nodes.items():
            if isinstance(node, dict) and "id" in node:  # the model's own field, not a key authors write
                del node["id"]
                key_mark = document.walk(("nodes", node_id, "id"))[1]
                message = f"unknown key 'id' in node '{node_id}' (a node's id is its name under `nodes`)"
                document.errors.append(document.error(key_mark, message))
    if data.get("name") is None:
        data["name"] = Path(source).stem if not source.startswith("<") else "flow"
    data["source"] = source
    errors = list(document.errors)
    flow: Flow | None = None
    try:
        flow = shape.model_validate(data, context={"authored": True})
    except ValidationError as exc:
        wording = _Wording(document, data, shape)
        found = _one_per_union(_without_typo_echoes(exc.errors(include_url=False)), data)
        # An unknown key first: at one position it is usually the cause of the rest.
        found.sort(key=lambda error: error["type"] != "extra_forbidden")
        errors += [wording.message(error) for error in found]
    if not errors and flow is not None:
        errors = [document.locate(issue) for issue in check_flow(flow)]
    errors = _unique(errors)
    errors.sort(key=lambda e: (e.line or 0, e.column or 0))
    return (None, errors) if errors else (flow, [])


_SHAPE_ERRORS = frozenset({"model_type", "model_attributes_type", "dict_type", "list_type"})


def _one_per_union(errors: list[ErrorDetails], data: Any) -> list[ErrorDetails]:
    """A value that fits no form of a union (``say: 5``: neither a line nor ``{one_of}``) gets one
    message: the one for the form it looks like, not "must be a block" for a plain value."""
    by_path: dict[PathKey, list[ErrorDetails]] = {}
    for error in errors:
        by_path.setdefault(_data_path(tuple(error["loc"]), data, error["type"]), []).append(error)
    kept = []
    for error in errors:
        siblings = by_path[_data_path(tuple(error["loc"]), data, error["type"])]
        if len(siblings) > 1 and error["type"] in _SHAPE_ERRORS and not isinstance(error.get("input"), dict | list):
            if any(other["type"] not in _SHAPE_ERRORS for other in siblings):
                continue
        kept.append(error)
    return kept


def _without_typo_echoes(errors: list[ErrorDetails]) -> list[ErrorDetails]:
    """A misspelt required key is one mistake, not two: keep "unknown key 'gotoo'", drop "needs a `goto`"."""
    unknown: dict[tuple[Any, ...], list[str]] = {}
    for error in errors:
        if error["type"] == "extra_forbidden":
            unknown.setdefault(tuple(error["loc"][:-1]), []).append(str(error["loc"][-1]))
    kept = []
    for error in errors:
        parent, key = tuple(error["loc"][:-1]), "".join(str(step) for step in error["loc"][-1:])
        if error["type"] == "missing" and difflib.get_close_matches(key, unknown.get(parent, []), n=1, cutoff=0.5):
            continue
        kept.append(error)
    return kept


def _unique(errors: list[FlowError]) -> list[FlowError]:
    seen: set[str] = set()
    out = []
    for error in errors:
        if str(error) not in seen:
            seen.add(str(error))
            out.append(error)
    return out


def parse_flow(text: str, source: str = "<string>") -> Flow:
    """Parse and fully validate a flow; ``source`` is only used to label error positions."""
    flow, errors = flow_errors(text, source)
    if errors:
        # Report the first problem in reading order: that is where the author will look first.
        raise errors[0]
    assert flow is not None
    return flow


def read_flow_text(path: str | Path) -> str:
    """The text of a flow file; I/O and decoding failures become :class:`FlowError`."""
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise FlowError(f"cannot read flow file: {exc}", source=str(path)) from exc


def load_flow(path: str | Path) -> Flow:
    """Read a flow file; I/O and decoding failures become :class:`FlowError` too so callers
    (CLI, server start-up) have a single exception to report to the author."""
    return parse_flow(read_flow_text(path), source=str(path))
