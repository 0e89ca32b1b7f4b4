"""Reading call flows from YAML, with every mistake pointing at ``file:line:column``.

Flows are written by prompt authors, not programmers, so the loader's main job is to turn
every mistake into a message that says *where* and *what to do*. To get positions we never
let PyYAML build plain Python objects: we compose the node tree (which keeps marks), walk it
ourselves, and remember the YAML node of every key and value by its path
(``("nodes", "welcome", "intents", 0, "goto")``). Whole-flow rules live in
:mod:`agent.dialogue.checks` and report paths (plus a character offset inside a text); the
loader maps those back to positions, so the same rules serve flows built in code.

The data model lives in :mod:`agent.dialogue.model`; its names are re-exported here because
this module is where callers have always found them.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.dialogue.checks import FlowIssue, check_flow
from agent.dialogue.model import (
    DEFAULT_FALLBACK,
    DEFAULT_HTTP_TIMEOUT_S,
    DEFAULT_MAX_RETRIES,
    HTTP_METHODS,
    NO_MATCH_NODE,
    SLOT_TYPES,
    Ask,
    Branch,
    BusinessHours,
    CallButtonConfig,
    CallPermissionConfig,
    DigitLength,
    FaqEntry,
    Flow,
    FlowError,
    HandoverConfig,
    HttpConfig,
    Intent,
    Keypad,
    LlmConfig,
    LlmTool,
    Node,
    RecordingConfig,
    SayItem,
    SlotValue,
    ToolParam,
    Variants,
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


#: The keys each block accepts; shared with the JSON Schema so the two cannot drift apart.
FLOW_KEYS = (
    "name",
    "start",
    "persona",
    "fallback",
    "max_retries",
    "business_hours",
    "slots",
    "global_intents",
    "faq",
    "entry_points",
    "recording",
    "nodes",
)
NODE_KEYS = (
    "say",
    "ask",
    "intents",
    "branches",
    "next",
    "set",
    "reprompt",
    "max_retries",
    "no_match",
    "handover",
    "http",
    "request_call_permission",
    "send_call_button",
    "llm",
    "end",
    "interruptible",
)
INTENT_KEYS = ("name", "examples", "keywords", "key", "goto", "repeat", "set", "confirm")
ASK_KEYS = ("slot", "type", "choices", "min", "max", "length", "confirm", "keypad", "secret")
KEYPAD_ENTRY_KEYS = ("max_digits", "terminator", "timeout")
FAQ_KEYS = ("name", "examples", "keywords", "answer")
HOURS_KEYS = ("open", "close")
RECORDING_KEYS = ("enabled", "announce")
LENGTH_KEYS = ("min", "max")
BRANCH_KEYS = ("if", "goto")
HANDOVER_KEYS = ("queue", "skills", "reason")
HTTP_KEYS = ("method", "url", "headers", "json", "timeout", "store", "on_success", "on_error")
PERMISSION_KEYS = ("reason",)
CALL_BUTTON_KEYS = ("payload", "text")
LLM_KEYS = ("prompt", "transitions", "slots", "tools", "offline")
TOOL_KEYS = ("name", "description", "parameters", "goto")
PARAM_KEYS = ("type", "description")
PARAM_TYPES = ("yes_no", "number", "date", "time", "text")


class _Reader:
    """Turns a composed YAML tree into :class:`Flow` while recording YAML nodes per path."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.key_marks: dict[PathKey, Any] = {}
        self.value_nodes: dict[PathKey, YamlNode] = {}

    # -- errors ------------------------------------------------------------------------

    def error(self, mark: Any, message: str, *, column_offset: int = 0) -> FlowError:
        return FlowError(message, source=self.source, line=mark.line + 1, column=mark.column + 1 + column_offset)

    def position_in(self, node: YamlNode, index: int) -> tuple[int, int]:
        """1-based line/column of character ``index`` of a (stripped) text value.

        Exact for one-line plain or quoted texts and for ``|`` blocks; otherwise the start
        of the text, which is the honest answer once YAML has folded or unescaped it.
        """
        mark = node.start_mark
        if not isinstance(node, ScalarNode):
            return mark.line + 1, mark.column + 1
        raw = str(node.value)
        index += len(raw) - len(raw.lstrip())
        if node.style == "|" and mark.buffer is not None:
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

    def locate(self, issue: FlowIssue) -> FlowError:
        """Point a semantic issue at the closest recorded position on its path."""
        if issue.offset is not None and issue.path in self.value_nodes:
            line, column = self.position_in(self.value_nodes[issue.path], issue.offset)
            return FlowError(issue.message, source=self.source, line=line, column=column)
        path = issue.path
        while path:
            mark = self.key_marks.get(path) if issue.at_key else None
            if mark is None and path in self.value_nodes:
                mark = self.value_nodes[path].start_mark
            if mark is not None:
                return self.error(mark, issue.message)
            path = path[:-1]
        return FlowError(issue.message, source=self.source, line=1, column=1)

    # -- primitives --------------------------------------------------------------------

    def entries(self, node: YamlNode, path: PathKey, what: str, allowed: tuple[str, ...] | None) -> dict[str, YamlNode]:
        """Read a mapping, rejecting duplicate and (when ``allowed`` is given) unknown keys.

        PyYAML silently keeps the last of two identical keys; for a flow that means a whole
        node quietly disappears, so duplicates are an error here.
        """
        if not isinstance(node, MappingNode):
            raise self.error(node.start_mark, f"{what} must be a block of `key: value` lines, not {describe(node)}")
        out: dict[str, YamlNode] = {}
        first_seen: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode) or is_null(key_node):
                raise self.error(key_node.start_mark, f"keys in {what} must be plain words, not {describe(key_node)}")
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
            self.value_nodes[(*path, key)] = value_node
        return out

    def require(self, fields: dict[str, YamlNode], key: str, at: YamlNode, message: str) -> YamlNode:
        if is_null(fields.get(key)):
            raise self.error(at.start_mark, message)
        return fields[key]

    def identifier(self, node: YamlNode, what: str) -> str:
        """Read a name/target.

        Unquoted ``yes``/``no``/``1`` are booleans/numbers to YAML, but a node called ``no``
        is perfectly reasonable in a yes/no flow, so any plain scalar is taken as written.
        """
        if not isinstance(node, ScalarNode) or is_null(node):
            raise self.error(node.start_mark, f"{what} must be a name, not {describe(node)}")
        value = str(node.value).strip()
        if not value:
            raise self.error(node.start_mark, f"{what} must not be empty")
        return value

    def phrase(self, node: YamlNode, what: str) -> str:
        """Read an example/keyword; like identifiers, ``yes``/``no``/numbers are literal text."""
        if not isinstance(node, ScalarNode) or is_null(node):
            raise self.error(node.start_mark, f"{what} must be text, not {describe(node)}")
        value = str(node.value).strip()
        if not value:
            raise self.error(node.start_mark, f"{what} must not be empty")
        return value

    def spoken(self, node: YamlNode, what: str) -> str:
        """Read a line the bot will speak (or another text with placeholders).

        Unlike examples, a number or true/false here is almost surely a mistake (``say: 5``),
        so it is rejected with a hint to quote it. Placeholders are checked later, with the
        rest of the flow, so their errors can name slots set anywhere in the file.
        """
        if not isinstance(node, ScalarNode) or tag_of(node) != "str":
            hint = (
                " (put it in quotes if you really mean those words)"
                if isinstance(node, ScalarNode) and not is_null(node)
                else ""
            )
            raise self.error(node.start_mark, f"{what} must be text, not {describe(node)}{hint}")
        value = str(node.value).strip()
        if not value:
            raise self.error(node.start_mark, f"{what} must not be empty")
        return value

    def one_or_many(self, node: YamlNode, path: PathKey, what: str, read: Callable[[YamlNode, str], str]) -> list[str]:
        """Accept ``x`` or ``[x, y]`` so simple flows stay one-liners."""
        if isinstance(node, SequenceNode):
            items = []
            for i, item in enumerate(node.value):
                self.value_nodes[(*path, i)] = item
                items.append(read(item, f"item {i + 1} of {what}"))
            return items
        if isinstance(node, ScalarNode) and not is_null(node):
            self.value_nodes[(*path, 0)] = node
            return [read(node, what)]
        raise self.error(node.start_mark, f"{what} must be text or a list of text, not {describe(node)}")

    def boolean(self, node: YamlNode, what: str) -> bool:
        if isinstance(node, ScalarNode) and tag_of(node) == "bool":
            return bool(construct(node))
        raise self.error(node.start_mark, f"{what} must be true or false, not {describe(node)}")

    def count(self, node: YamlNode, what: str) -> int:
        if isinstance(node, ScalarNode) and tag_of(node) == "int":
            value = int(construct(node))
            if value >= 0:
                return value
        raise self.error(node.start_mark, f"{what} must be a whole number (0 or more), not {describe(node)}")

    def number(self, node: YamlNode, what: str) -> float:
        if isinstance(node, ScalarNode) and tag_of(node) in ("int", "float"):
            return float(construct(node))
        raise self.error(node.start_mark, f"{what} must be a number, not {describe(node)}")

    def choice_of(self, node: YamlNode, what: str, options: tuple[str, ...]) -> str:
        value = self.identifier(node, what)
        if value not in options:
            close = difflib.get_close_matches(value, options, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise self.error(node.start_mark, f"unknown {what} '{value}'{hint} (choose one of: {', '.join(options)})")
        return value

    def optional(self, fields: dict[str, YamlNode], key: str) -> YamlNode | None:
        node = fields.get(key)
        return None if is_null(node) else node

    def names(self, node: YamlNode, path: PathKey, what: str) -> list[str]:
        return self.one_or_many(node, path, what, self.identifier)

    def slot_value(self, node: YamlNode, what: str) -> SlotValue:
        if not isinstance(node, ScalarNode) or is_null(node):
            raise self.error(node.start_mark, f"{what} must be a single value (text, number, true/false or a date)")
        value = construct(node)
        if isinstance(value, dt.datetime):
            return value.date()
        if isinstance(value, bool | int | float | dt.date | str):
            return value.strip() if isinstance(value, str) else value
        return str(node.value)

    def assignments(self, node: YamlNode, path: PathKey, what: str) -> dict[str, SlotValue]:
        fields = self.entries(node, path, what, None)
        return {name: self.slot_value(value, f"slot '{name}' in {what}") for name, value in fields.items()}

    def plain(self, node: YamlNode, path: PathKey) -> Any:
        """Any YAML value as JSON-ready data (for request bodies), recording text positions."""
        self.value_nodes[path] = node
        if isinstance(node, MappingNode):
            fields = self.entries(node, path, "`json`", None)
            return {key: self.plain(value, (*path, key)) for key, value in fields.items()}
        if isinstance(node, SequenceNode):
            return [self.plain(item, (*path, i)) for i, item in enumerate(node.value)]
        value = construct(node)
        if isinstance(value, dt.date):
            return value.isoformat()
        return value

    # -- blocks ------------------------------------------------------------------------

    def say_items(self, node: YamlNode, path: PathKey, what: str) -> list[SayItem]:
        """Lines to speak; an item ``{one_of: [...]}`` is one line with alternative wordings."""
        items = node.value if isinstance(node, SequenceNode) else [node]
        if isinstance(node, MappingNode):
            items = [node]
        out: list[SayItem] = []
        for i, item in enumerate(items):
            item_path = (*path, i)
            self.value_nodes[item_path] = item
            label = what if len(items) == 1 and not isinstance(node, SequenceNode) else f"item {i + 1} of {what}"
            if isinstance(item, MappingNode):
                fields = self.entries(item, item_path, label, ("one_of",))
                variants_node = self.require(
                    fields, "one_of", item, f"{label} needs `one_of`: the alternative wordings"
                )
                variants = self.one_or_many(variants_node, (*item_path, "one_of"), f"`one_of` of {label}", self.spoken)
                if not variants:
                    raise self.error(variants_node.start_mark, f"`one_of` of {label} needs at least one line")
                out.append(Variants(one_of=variants))
            elif isinstance(item, ScalarNode) and not is_null(item):
                out.append(self.spoken(item, label))
            else:
                raise self.error(item.start_mark, f"{label} must be text, not {describe(item)}")
        return out

    def intents(self, node: YamlNode | None, path: PathKey, what: str) -> list[Intent]:
        if node is None or is_null(node):
            return []
        if not isinstance(node, SequenceNode):
            raise self.error(
                node.start_mark, f"{what} must be a list (each item starting with '- '), not {describe(node)}"
            )
        result: list[Intent] = []
        seen: dict[str, Any] = {}
        for i, item in enumerate(node.value):
            item_path = (*path, i)
            self.value_nodes[item_path] = item
            fields = self.entries(item, item_path, f"intent {i + 1} of {what}", INTENT_KEYS)
            if is_null(fields.get("name")):
                raise self.error(item.start_mark, f"intent {i + 1} of {what} needs a `name`")
            name = self.identifier(fields["name"], "intent name")
            label = f"intent '{name}'"
            if name in seen:
                raise self.error(
                    fields["name"].start_mark,
                    f"duplicate {label} in {what} (already used on line {seen[name].line + 1})",
                )
            seen[name] = fields["name"].start_mark
            repeat_node = self.optional(fields, "repeat")
            repeat = False if repeat_node is None else self.boolean(repeat_node, f"`repeat` of {label}")
            goto_node = self.optional(fields, "goto")
            if goto_node is None and not repeat:
                raise self.error(
                    item.start_mark,
                    f"{label} needs a `goto`: the node to go to when it matches (or `repeat: true` to say the last "
                    "thing again)",
                )
            if goto_node is not None and repeat:
                raise self.error(
                    self.key_marks[(*item_path, "repeat")], f"{label} has both `goto` and `repeat`; keep one"
                )
            goto = None if goto_node is None else self.identifier(goto_node, f"goto of {label}")
            examples = self.optional_phrases(fields, "examples", item_path, label)
            keywords = self.optional_phrases(fields, "keywords", item_path, label)
            key_node = fields.get("key")
            key = None if key_node is None else self.keypad_key(key_node, f"`key` of {label}")
            if not examples and not keywords and key is None:
                raise self.error(
                    item.start_mark,
                    f"{label} needs `examples` (things a caller might say), `keywords` or a keypad `key`, otherwise "
                    "it can never match",
                )
            set_node = self.optional(fields, "set")
            assign = {} if set_node is None else self.assignments(set_node, (*item_path, "set"), f"`set` of {label}")
            confirm_node = self.optional(fields, "confirm")
            confirm = None if confirm_node is None else self.confirmation(confirm_node, f"`confirm` of {label}")
            result.append(
                Intent(
                    name=name,
                    examples=examples,
                    keywords=keywords,
                    goto=goto,
                    repeat=repeat,
                    assign=assign,
                    confirm=None if confirm is True else "" if confirm is False else confirm,
                    key=key,
                )
            )
        return result

    def keypad_key(self, node: YamlNode, what: str) -> str:
        """A dialpad key as written: ``key: 1`` is the key 1, not a number; ``*`` and ``#`` need
        quotes in YAML (``#`` starts a comment), which is what an empty value usually means.
        Which keys are allowed is a whole-flow check, so flows built in code get it too."""
        if is_null(node):
            raise self.error(
                node.start_mark, f'{what} is empty; write the key in quotes, like key: "1" (a bare # starts a comment)'
            )
        if not isinstance(node, ScalarNode) or tag_of(node) not in ("str", "int"):
            raise self.error(node.start_mark, f'{what} must be one key of the dialpad, like "1", "*" or "#"')
        return str(node.value).strip()

    def keypad(self, node: YamlNode, path: PathKey, what: str) -> Keypad:
        """``keypad: {max_digits, terminator, timeout}`` or ``true`` (the defaults)."""
        if isinstance(node, ScalarNode) and tag_of(node) == "bool":
            if not self.boolean(node, what):
                raise self.error(
                    node.start_mark, f"{what}: a digits or number question always takes the keypad; remove `keypad`"
                )
            return Keypad()
        fields = self.entries(node, path, what, KEYPAD_ENTRY_KEYS)
        values: dict[str, Any] = {}
        max_node = self.optional(fields, "max_digits")
        if max_node is not None:
            values["max_digits"] = self.count(max_node, f"`max_digits` of {what}")
        if "terminator" in fields:
            term_node = fields["terminator"]
            if is_null(term_node) or (isinstance(term_node, ScalarNode) and tag_of(term_node) == "bool"):
                if isinstance(term_node, ScalarNode) and tag_of(term_node) == "bool" and construct(term_node):
                    raise self.error(term_node.start_mark, f'`terminator` of {what} must be a key, like "#", or false')
                values["terminator"] = None
            else:
                values["terminator"] = self.keypad_key(term_node, f"`terminator` of {what}")
        timeout_node = self.optional(fields, "timeout")
        if timeout_node is not None:
            values["timeout_s"] = self.number(timeout_node, f"`timeout` of {what}")
        return Keypad.model_construct(**{**Keypad().model_dump(), **values})

    def confirmation(self, node: YamlNode, what: str) -> bool | str:
        """``true``/``false``, or the line to say when checking."""
        if isinstance(node, ScalarNode) and tag_of(node) == "bool":
            return self.boolean(node, what)
        return self.spoken(node, f"{what} (true, false, or the line to say)")

    def faq(self, node: YamlNode | None, path: PathKey) -> list[FaqEntry]:
        if node is None or is_null(node):
            return []
        if not isinstance(node, SequenceNode):
            raise self.error(
                node.start_mark, f"`faq` must be a list (each item starting with '- '), not {describe(node)}"
            )
        out: list[FaqEntry] = []
        seen: dict[str, Any] = {}
        for i, item in enumerate(node.value):
            item_path = (*path, i)
            self.value_nodes[item_path] = item
            label = f"question {i + 1} of `faq`"
            fields = self.entries(item, item_path, label, FAQ_KEYS)
            name = f"faq_{i + 1}"
            if not is_null(fields.get("name")):
                name = self.identifier(fields["name"], f"`name` of {label}")
                if name in seen:
                    raise self.error(
                        fields["name"].start_mark,
                        f"duplicate name '{name}' in `faq` (already used on line {seen[name].line + 1})",
                    )
                seen[name] = fields["name"].start_mark
            examples = self.optional_phrases(fields, "examples", item_path, label)
            keywords = self.optional_phrases(fields, "keywords", item_path, label)
            if not examples and not keywords:
                raise self.error(
                    item.start_mark,
                    f"{label} needs `examples` (the ways callers ask it) or `keywords`, otherwise it can never match",
                )
            answer_node = self.require(fields, "answer", item, f"{label} needs an `answer`: what the bot says")
            answer = self.say_items(answer_node, (*item_path, "answer"), f"`answer` of {label}")
            out.append(FaqEntry(name=name, examples=examples, keywords=keywords, answer=answer))
        return out

    def clock(self, node: YamlNode, what: str) -> dt.time:
        """A clock time: "09:00" in quotes, or unquoted 09:00 (which YAML 1.1 reads as 540 minutes)."""
        if isinstance(node, ScalarNode) and tag_of(node) == "int":
            minutes = int(construct(node))
            if 0 <= minutes < 24 * 60 and ":" in str(node.value):
                return dt.time(minutes // 60, minutes % 60)
        if isinstance(node, ScalarNode) and tag_of(node) == "str":
            text = str(node.value).strip()
            if re.fullmatch(r"\d{1,2}:\d{2}", text):
                hour, minute = (int(part) for part in text.split(":"))
                if hour < 24 and minute < 60:
                    return dt.time(hour, minute)
        raise self.error(node.start_mark, f'{what} must be a clock time like "09:00", not {describe(node)}')

    def business_hours(self, node: YamlNode, path: PathKey) -> BusinessHours:
        fields = self.entries(node, path, "`business_hours`", HOURS_KEYS)
        values: dict[str, dt.time] = {}
        for key in HOURS_KEYS:
            value = self.optional(fields, key)
            if value is not None:
                values[key] = self.clock(value, f"`{key}` of `business_hours`")
        return BusinessHours(**values)

    def recording(self, node: YamlNode, path: PathKey) -> RecordingConfig:
        fields = self.entries(node, path, "`recording`", RECORDING_KEYS)
        enabled_node = self.optional(fields, "enabled")
        announce_node = self.optional(fields, "announce")
        announce = "" if announce_node is None else self.spoken(announce_node, "`announce` of `recording`")
        if "{{" in announce:
            assert announce_node is not None
            raise self.error(announce_node.start_mark, "`announce` of `recording` cannot use {{placeholders}}")
        return RecordingConfig(
            enabled=None if enabled_node is None else self.boolean(enabled_node, "`enabled` of `recording`"),
            announce=announce,
        )

    def length(self, node: YamlNode, path: PathKey, what: str) -> DigitLength:
        """``length: 5`` or ``length: {min: 6, max: 10}``."""
        if isinstance(node, MappingNode):
            fields = self.entries(node, path, what, LENGTH_KEYS)
            low = self.optional(fields, "min")
            high = self.optional(fields, "max")
            if low is None or high is None:
                raise self.error(node.start_mark, f"{what} needs both `min` and `max` (or one number: `length: 5`)")
            lo, hi = self.count(low, f"`min` of {what}"), self.count(high, f"`max` of {what}")
        else:
            lo = hi = self.count(node, what)
        if lo < 1 or hi < 1:
            raise self.error(node.start_mark, f"{what} must be at least 1 digit")
        return DigitLength(min=lo, max=hi)

    def optional_phrases(self, fields: dict[str, YamlNode], key: str, path: PathKey, label: str) -> list[str]:
        node = fields.get(key)
        if node is None or is_null(node):
            return []
        return self.one_or_many(node, (*path, key), f"`{key}` of {label}", self.phrase)

    def ask(self, node: YamlNode, path: PathKey, what: str) -> Ask:
        label = f"`ask` of {what}"
        fields = self.entries(node, path, label, ASK_KEYS)
        slot_node = self.require(fields, "slot", node, f"{label} needs a `slot`: the name to store the answer under")
        slot = self.identifier(slot_node, f"`slot` of {label}")
        type_node = self.optional(fields, "type")
        slot_type = "text" if type_node is None else self.choice_of(type_node, "slot type", SLOT_TYPES)
        choices: dict[str, list[str]] = {}
        choices_node = self.optional(fields, "choices")
        if choices_node is not None:
            choices = self.choices(choices_node, (*path, "choices"), f"`choices` of {label}")
        bounds: dict[str, float | None] = {"min": None, "max": None}
        for key in bounds:
            bound = self.optional(fields, key)
            if bound is not None:
                bounds[key] = self.number(bound, f"`{key}` of {label}")
        length_node = self.optional(fields, "length")
        length = None if length_node is None else self.length(length_node, (*path, "length"), f"`length` of {label}")
        confirm_node = self.optional(fields, "confirm")
        confirm = None if confirm_node is None else self.confirmation(confirm_node, f"`confirm` of {label}")
        keypad_node = self.optional(fields, "keypad")
        keypad = None if keypad_node is None else self.keypad(keypad_node, (*path, "keypad"), f"`keypad` of {label}")
        secret_node = self.optional(fields, "secret")
        secret = False if secret_node is None else self.boolean(secret_node, f"`secret` of {label}")
        return Ask(
            slot=slot,
            type=slot_type,  # type: ignore[arg-type]
            choices=choices,
            min=bounds["min"],
            max=bounds["max"],
            length=length,
            confirm=confirm,
            keypad=keypad,
            secret=secret,
        )

    def choices(self, node: YamlNode, path: PathKey, what: str) -> dict[str, list[str]]:
        if isinstance(node, MappingNode):
            fields = self.entries(node, path, what, None)
            return {
                value: ([] if is_null(syn) else self.one_or_many(syn, (*path, value), f"choice '{value}'", self.phrase))
                for value, syn in fields.items()
            }
        return {value: [] for value in self.one_or_many(node, path, what, self.phrase)}

    def branches(self, node: YamlNode, path: PathKey, what: str) -> list[Branch]:
        if not isinstance(node, SequenceNode):
            raise self.error(
                node.start_mark, f"{what} must be a list (each item starting with '- if:'), not {describe(node)}"
            )
        out = []
        for i, item in enumerate(node.value):
            item_path = (*path, i)
            self.value_nodes[item_path] = item
            label = f"branch {i + 1} of {what}"
            fields = self.entries(item, item_path, label, BRANCH_KEYS)
            condition_node = self.require(fields, "if", item, f"{label} needs an `if`: the condition to check")
            if not isinstance(condition_node, ScalarNode):
                raise self.error(condition_node.start_mark, f"`if` of {label} must be a condition like `size > 8`")
            condition = str(condition_node.value).strip()
            goto_node = self.require(fields, "goto", item, f"{label} needs a `goto`: where to go when `if` holds")
            out.append(Branch(condition=condition, goto=self.identifier(goto_node, f"goto of {label}")))
        return out

    def handover(self, node: YamlNode, path: PathKey, what: str) -> HandoverConfig:
        label = f"`handover` of {what}"
        fields = self.entries(node, path, label, HANDOVER_KEYS)
        queue = self.identifier(
            self.require(fields, "queue", node, f"{label} needs a `queue`: which team takes the call"), "`queue`"
        )
        skills_node = self.optional(fields, "skills")
        skills = (
            [] if skills_node is None else self.one_or_many(skills_node, (*path, "skills"), "`skills`", self.phrase)
        )
        reason_node = self.optional(fields, "reason")
        reason = "" if reason_node is None else self.spoken(reason_node, f"`reason` of {label}")
        return HandoverConfig(queue=queue, skills=skills, reason=reason)

    def http(self, node: YamlNode, path: PathKey, what: str) -> HttpConfig:
        label = f"`http` of {what}"
        fields = self.entries(node, path, label, HTTP_KEYS)
        method_node = self.optional(fields, "method")
        method = "GET"
        if method_node is not None:
            method = self.choice_of(method_node, "HTTP method", HTTP_METHODS + tuple(m.lower() for m in HTTP_METHODS))
            method = method.upper()
        url = self.spoken(self.require(fields, "url", node, f"{label} needs a `url`"), f"`url` of {label}")
        headers: dict[str, str] = {}
        headers_node = self.optional(fields, "headers")
        if headers_node is not None:
            for key, value in self.entries(headers_node, (*path, "headers"), f"`headers` of {label}", None).items():
                headers[key] = self.spoken(value, f"header '{key}'")
        json_node = self.optional(fields, "json")
        json_body = None if json_node is None else self.plain(json_node, (*path, "json"))
        timeout_node = self.optional(fields, "timeout")
        timeout = DEFAULT_HTTP_TIMEOUT_S
        if timeout_node is not None:
            timeout = self.number(timeout_node, f"`timeout` of {label}")
            if timeout <= 0:
                raise self.error(timeout_node.start_mark, f"`timeout` of {label} must be more than 0 seconds")
        store: dict[str, str] = {}
        store_node = self.optional(fields, "store")
        if store_node is not None:
            for slot, value in self.entries(store_node, (*path, "store"), f"`store` of {label}", None).items():
                store[slot] = self.phrase(value, f"where to find '{slot}' in the answer")
        targets = {}
        for key, meaning in (("on_success", "when the request works"), ("on_error", "when it fails or times out")):
            target_node = self.require(fields, key, node, f"{label} needs `{key}`: the node to go to {meaning}")
            targets[key] = self.identifier(target_node, f"`{key}` of {label}")
        return HttpConfig(
            method=method, url=url, headers=headers, json_body=json_body, timeout_s=timeout, store=store, **targets
        )

    def permission(self, node: YamlNode, path: PathKey, what: str) -> CallPermissionConfig:
        label = f"`request_call_permission` of {what}"
        if isinstance(node, ScalarNode):
            self.value_nodes[(*path, "reason")] = node
            return CallPermissionConfig(reason=self.spoken(node, label))
        fields = self.entries(node, path, label, PERMISSION_KEYS)
        reason_node = self.require(fields, "reason", node, f"{label} needs a `reason` the caller will see")
        return CallPermissionConfig(reason=self.spoken(reason_node, f"`reason` of {label}"))

    def call_button(self, node: YamlNode, path: PathKey, what: str) -> CallButtonConfig:
        """`send_call_button: <payload>` or `{payload, text}`; both may hold placeholders."""
        label = f"`send_call_button` of {what}"
        if isinstance(node, ScalarNode):
            self.value_nodes[(*path, "payload")] = node
            return CallButtonConfig(payload=self.spoken(node, label))
        fields = self.entries(node, path, label, CALL_BUTTON_KEYS)
        values = {
            key: self.spoken(value, f"`{key}` of {label}")
            for key in CALL_BUTTON_KEYS
            if (value := self.optional(fields, key)) is not None
        }
        return CallButtonConfig(**values)

    def llm(self, node: YamlNode, path: PathKey, what: str) -> LlmConfig:
        label = f"`llm` of {what}"
        fields = self.entries(node, path, label, LLM_KEYS)
        prompt = self.spoken(
            self.require(fields, "prompt", node, f"{label} needs a `prompt`: instructions for the LLM"),
            f"`prompt` of {label}",
        )
        lists: dict[str, list[str]] = {}
        for key in ("transitions", "slots"):
            value = self.optional(fields, key)
            lists[key] = [] if value is None else self.names(value, (*path, key), f"`{key}` of {label}")
        offline_node = self.optional(fields, "offline")
        offline = None if offline_node is None else self.identifier(offline_node, f"`offline` of {label}")
        tools: list[LlmTool] = []
        tools_node = self.optional(fields, "tools")
        if tools_node is not None:
            if not isinstance(tools_node, SequenceNode):
                raise self.error(
                    tools_node.start_mark, f"`tools` of {label} must be a list, not {describe(tools_node)}"
                )
            for i, item in enumerate(tools_node.value):
                tools.append(self.tool(item, (*path, "tools", i), f"tool {i + 1} of {label}"))
        return LlmConfig(
            prompt=prompt, transitions=lists["transitions"], slots=lists["slots"], tools=tools, offline=offline
        )

    def tool(self, node: YamlNode, path: PathKey, label: str) -> LlmTool:
        self.value_nodes[path] = node
        fields = self.entries(node, path, label, TOOL_KEYS)
        name = self.identifier(self.require(fields, "name", node, f"{label} needs a `name`"), "tool name")
        description_node = self.optional(fields, "description")
        description = "" if description_node is None else self.spoken(description_node, f"`description` of {label}")
        goto = self.identifier(
            self.require(fields, "goto", node, f"{label} needs a `goto`: where the call goes when the LLM uses it"),
            f"goto of tool '{name}'",
        )
        parameters: dict[str, ToolParam] = {}
        params_node = self.optional(fields, "parameters")
        if params_node is not None:
            for param, spec in self.entries(
                params_node, (*path, "parameters"), f"`parameters` of {label}", None
            ).items():
                param_label = f"parameter '{param}'"
                if isinstance(spec, MappingNode):
                    spec_fields = self.entries(spec, (*path, "parameters", param), param_label, PARAM_KEYS)
                    type_node = self.optional(spec_fields, "type")
                    param_type = (
                        "text" if type_node is None else self.choice_of(type_node, "parameter type", PARAM_TYPES)
                    )
                    desc_node = self.optional(spec_fields, "description")
                    desc = "" if desc_node is None else self.spoken(desc_node, f"`description` of {param_label}")
                    parameters[param] = ToolParam(type=param_type, description=desc)  # type: ignore[arg-type]
                else:
                    param_type = self.choice_of(spec, "parameter type", PARAM_TYPES)
                    parameters[param] = ToolParam(type=param_type)  # type: ignore[arg-type]
        return LlmTool(name=name, description=description, parameters=parameters, goto=goto)

    def node(self, node_id: str, value: YamlNode) -> Node:
        path: PathKey = ("nodes", node_id)
        what = f"node '{node_id}'"
        fields = {} if is_null(value) else self.entries(value, path, what, NODE_KEYS)

        def opt(key: str) -> YamlNode | None:
            return self.optional(fields, key)

        say_node = opt("say")
        say = [] if say_node is None else self.say_items(say_node, (*path, "say"), f"`say` of {what}")
        intents = self.intents(fields.get("intents"), (*path, "intents"), f"`intents` of {what}")
        reprompt_node = opt("reprompt")
        reprompt = (
            []
            if reprompt_node is None
            else self.one_or_many(reprompt_node, (*path, "reprompt"), f"`reprompt` of {what}", self.spoken)
        )
        retries_node = opt("max_retries")
        set_node = opt("set")
        branches_node = opt("branches")
        ask_node, handover_node, http_node = opt("ask"), opt("handover"), opt("http")
        permission_node, llm_node = opt("request_call_permission"), opt("llm")
        button_node = fields.get("send_call_button")
        nxt_node, no_match_node = opt("next"), opt("no_match")
        end_node, interruptible_node = opt("end"), opt("interruptible")
        return Node(
            id=node_id,
            say=say,
            intents=intents,
            end=False if end_node is None else self.boolean(end_node, f"`end` of {what}"),
            interruptible=(
                True if interruptible_node is None else self.boolean(interruptible_node, f"`interruptible` of {what}")
            ),
            next=None if nxt_node is None else self.identifier(nxt_node, f"`next` of {what}"),
            ask=None if ask_node is None else self.ask(ask_node, (*path, "ask"), what),
            branches=[]
            if branches_node is None
            else self.branches(branches_node, (*path, "branches"), f"`branches` of {what}"),
            assign={} if set_node is None else self.assignments(set_node, (*path, "set"), f"`set` of {what}"),
            reprompt=reprompt,
            max_retries=None if retries_node is None else self.count(retries_node, f"`max_retries` of {what}"),
            no_match=None if no_match_node is None else self.identifier(no_match_node, f"`no_match` of {what}"),
            handover=None if handover_node is None else self.handover(handover_node, (*path, "handover"), what),
            http=None if http_node is None else self.http(http_node, (*path, "http"), what),
            request_call_permission=(
                None
                if permission_node is None
                else self.permission(permission_node, (*path, "request_call_permission"), what)
            ),
            llm=None if llm_node is None else self.llm(llm_node, (*path, "llm"), what),
            send_call_button=(
                None if button_node is None else self.call_button(button_node, (*path, "send_call_button"), what)
            ),
        )

    def flow(self, root: YamlNode | None) -> Flow:
        if root is None:
            raise FlowError("the flow file is empty", source=self.source, line=1, column=1)
        fields = self.entries(root, (), "the flow", FLOW_KEYS)
        for required in ("start", "nodes"):
            if is_null(fields.get(required)):
                mark = self.key_marks.get((required,), root.start_mark)
                raise self.error(mark, f"the flow needs a `{required}`")

        name = (
            self.identifier(fields["name"], "`name`")
            if not is_null(fields.get("name"))
            else Path(self.source).stem
            if not self.source.startswith("<")
            else "flow"
        )
        start = self.identifier(fields["start"], "`start`")
        fallback = [DEFAULT_FALLBACK]
        if not is_null(fields.get("fallback")):
            fallback = self.one_or_many(fields["fallback"], ("fallback",), "`fallback`", self.spoken)
            if not fallback:
                raise self.error(fields["fallback"].start_mark, "`fallback` needs at least one line")
        max_retries = DEFAULT_MAX_RETRIES
        if not is_null(fields.get("max_retries")):
            max_retries = self.count(fields["max_retries"], "`max_retries`")
        persona = "" if is_null(fields.get("persona")) else self.spoken(fields["persona"], "`persona`")
        slots: dict[str, SlotValue | None] = {}
        if not is_null(fields.get("slots")):
            for slot, value in self.entries(fields["slots"], ("slots",), "`slots`", None).items():
                slots[slot] = None if is_null(value) else self.slot_value(value, f"slot '{slot}'")
        global_intents = self.intents(fields.get("global_intents"), ("global_intents",), "`global_intents`")
        faq = self.faq(fields.get("faq"), ("faq",))
        hours = BusinessHours()
        if not is_null(fields.get("business_hours")):
            hours = self.business_hours(fields["business_hours"], ("business_hours",))
        entry_points: dict[str, str] = {}
        if not is_null(fields.get("entry_points")):
            patterns = self.entries(fields["entry_points"], ("entry_points",), "`entry_points`", None)
            for pattern, target in patterns.items():
                entry_points[pattern] = self.identifier(target, f"the node for payload '{pattern}'")
        recording = RecordingConfig()
        if not is_null(fields.get("recording")):
            recording = self.recording(fields["recording"], ("recording",))

        node_map = self.entries(fields["nodes"], ("nodes",), "`nodes`", None)
        if not node_map:
            raise self.error(fields["nodes"].start_mark, "`nodes` must contain at least one node")
        nodes = {node_id: self.node(node_id, value) for node_id, value in node_map.items()}

        return Flow(
            name=name,
            start=start,
            fallback=fallback,
            max_retries=max_retries,
            nodes=nodes,
            global_intents=global_intents,
            slots=slots,
            persona=persona,
            faq=faq,
            business_hours=hours,
            entry_points=entry_points,
            recording=recording,
            source=self.source,
        )


def flow_errors(text: str, source: str = "<string>") -> tuple[Flow | None, list[FlowError]]:
    """Every problem in a flow text, in reading order (for ``wacall flows check``).

    A file that is not even well-formed stops at its first structural mistake; the
    whole-flow rules then report all their findings at once so an author can fix a batch.
    """
    reader = _Reader(source)
    try:
        flow = reader.flow(compose(text, source))
    except FlowError as exc:
        return None, [exc]
    except ValueError as exc:  # a model rule the reader did not anticipate
        return None, [FlowError(str(exc), source=source, line=1, column=1)]
    errors = [reader.locate(issue) for issue in check_flow(flow)]
    errors.sort(key=lambda e: (e.line or 0, e.column or 0))
    return (None, errors) if errors else (flow, [])


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
