"""The one YAML reader for flows and flow tests: positions for every value, mistakes in plain words.

Prompt authors are not programmers, so a YAML syntax error must say what to change and on which
line, not echo the parser ("mapping values are not allowed here", pointing at the line *after*
the mistake). This module owns that translation, and it is shared by :mod:`agent.dialogue.flow`
and :mod:`agent.dialogue.flowtest` so both files read YAML identically.

We compose with ruamel.yaml (its node tree keeps each node's line and column) but resolve
plain scalars with exactly PyYAML's YAML 1.1 rules, the rules flows were written against:
``yes``/``no`` are true/false, ``9:00`` is 540, while ``y``, ``n`` and ``1e3`` stay text.
Changing that would silently change what existing flows mean (``set: {paid: yes}``).
"""

from __future__ import annotations

import copy
import re
import warnings
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.resolver import BaseResolver

from agent.dialogue.model import FlowError

__all__ = [
    "MappingNode",
    "Marked",
    "MarkedDict",
    "MarkedList",
    "Node",
    "ScalarNode",
    "SequenceNode",
    "compose",
    "construct",
    "describe",
    "is_null",
    "load_marked",
    "plain_words",
    "tag_of",
]

_YAML = "tag:yaml.org,2002:"


class _Resolver(BaseResolver):
    """PyYAML's implicit YAML 1.1 resolvers, verbatim, so meaning does not change under ruamel."""

    def __init__(self, version: Any = None, loader: Any = None, loadumper: Any = None) -> None:
        super().__init__(loader or loadumper)

    @property
    def processing_version(self) -> Any:
        return (1, 1)


_Resolver.add_implicit_resolver_base(
    _YAML + "bool",
    re.compile(r"^(?:yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$", re.X),
    list("yYnNtTfFoO"),
)
_Resolver.add_implicit_resolver_base(
    _YAML + "float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?
        |\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?
        |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)
_Resolver.add_implicit_resolver_base(
    _YAML + "int",
    re.compile(
        r"""^(?:[-+]?0b[0-1_]+
        |[-+]?0[0-7_]+
        |[-+]?(?:0|[1-9][0-9_]*)
        |[-+]?0x[0-9a-fA-F_]+
        |[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)$""",
        re.X,
    ),
    list("-+0123456789"),
)
_Resolver.add_implicit_resolver_base(_YAML + "null", re.compile(r"^(?:~|null|Null|NULL|)$", re.X), ["~", "n", "N", ""])
_Resolver.add_implicit_resolver_base(
    _YAML + "timestamp",
    re.compile(
        r"""^(?:[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]
        |[0-9][0-9][0-9][0-9]-[0-9][0-9]?-[0-9][0-9]?
        (?:[Tt]|[ \t]+)[0-9][0-9]?
        :[0-9][0-9]:[0-9][0-9](?:\.[0-9]*)?
        (?:[ \t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?)$""",
        re.X,
    ),
    list("0123456789"),
)


def _reader() -> YAML:
    yaml = YAML(typ="safe", pure=True)
    yaml.Resolver = _Resolver
    return yaml


def tag_of(node: Node) -> str:
    """The short tag of a node: ``str``, ``int``, ``float``, ``bool``, ``null``, ``timestamp``, ``map``, ``seq``."""
    return str(node.tag).removeprefix(_YAML)


def is_null(node: Node | None) -> bool:
    return node is None or (isinstance(node, ScalarNode) and tag_of(node) == "null")


def describe(node: Node) -> str:
    """Name a YAML value the way a non-programmer would, for "expected X, got Y" messages."""
    if isinstance(node, MappingNode):
        return "a block of `key: value` lines"
    if isinstance(node, SequenceNode):
        return "a list"
    tag = tag_of(node)
    if tag == "null":
        return "nothing"
    if tag == "bool":
        return f"true/false ({node.value})"
    if tag in ("int", "float"):
        return f"a number ({node.value})"
    if tag == "str":
        return f"text ({node.value!r})"
    return f"a {tag.rsplit(':', 1)[-1]} ({node.value})"


def construct(node: Node) -> Any:
    """The Python value of a node (dates as ``datetime.date``, times of day as ints like PyYAML)."""
    constructor = _reader().constructor
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return constructor.construct_object(node, deep=True)


def compose(text: str, source: str) -> Node | None:
    """The node tree of one YAML document; syntax errors become a :class:`FlowError` in plain words."""
    try:
        root = _reader().compose(text)
    except MarkedYAMLError as exc:
        raise plain_words(exc, text, source) from exc
    except YAMLError as exc:  # e.g. a stream-level reader error without a mark
        raise FlowError(str(exc), source=source) from exc
    if root is not None:
        _place_empty_values(root)
    return root


def _place_empty_values(node: Node) -> None:
    """Put an empty value (``key:`` with nothing after it) right after its colon.

    The parser dates an empty value at the next token, often on the following line; authors
    look for the problem where they left the value out.
    """
    if isinstance(node, MappingNode):
        for key, value in node.value:
            if isinstance(value, ScalarNode) and value.value == "" and tag_of(value) == "null":
                mark = copy.copy(key.end_mark)
                mark.column += 1
                mark.index += 1
                value.start_mark = value.end_mark = mark
            _place_empty_values(value)
    elif isinstance(node, SequenceNode):
        for item in node.value:
            _place_empty_values(item)


# -- syntax errors in plain words -----------------------------------------------------------------

_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<dash>- +)?(?P<key>[A-Za-z_][\w-]*):(?: +(?P<value>.*))?$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _meaningful(lines: list[str], index: int) -> bool:
    stripped = lines[index].strip()
    return bool(stripped) and not stripped.startswith("#")


def _quoted(value: str) -> str:
    if '"' not in value:
        return f'"{value}"'
    return "'" + value.replace("'", "''") + "'"


def _unquoted_colon(lines: list[str], first: int, last: int) -> FlowError | None:
    """A plain text value holding ': ' (``say: Hello: welcome``): YAML reads a second key."""
    for number in range(first, last + 1):
        match = _KEY_LINE.match(lines[number].rstrip())
        value = (match["value"] or "") if match else ""
        value = value.split(" #", 1)[0].rstrip()
        if not value or value[0] in "\"'|>{[&*!":
            continue
        if ": " in value or value.endswith(":"):
            key = match["key"] if match else ""
            return FlowError(
                f"the text after `{key}:` contains ': ' — put the whole line in quotes: {key}: {_quoted(value)}",
                line=number + 1,
                column=len(match["indent"]) + len(match["dash"] or "") + 1 if match else 1,
            )
    return None


def _key_of(line: str) -> str:
    return line.strip().removeprefix("- ").split(":")[0]


def _bad_indent(lines: list[str], at: int) -> FlowError | None:
    """The first line, up to ``at``, whose indentation matches neither its siblings nor a new block."""
    open_levels: list[tuple[int, int]] = []  # (indent, line index) of each enclosing block start
    previous: int | None = None
    for number in range(at + 1):
        if number >= len(lines) or not _meaningful(lines, number):
            continue
        indent = _indent(lines[number])
        body = lines[number].strip()
        if previous is not None:
            prev_line = lines[previous].rstrip()
            prev_indent = _indent(prev_line)
            opens = prev_line.endswith(":") or prev_line.lstrip().startswith("- ") or prev_line.endswith("|")
            opens = opens or prev_line.endswith(">")
            if indent > prev_indent and not opens and not body.startswith("- "):
                return FlowError(
                    f"line {number + 1} is indented more than line {previous + 1} above it "
                    f"({indent} spaces instead of {prev_indent}); line it up with `{_key_of(prev_line)}:`"
                    " if it belongs to the same block",
                    line=number + 1,
                    column=indent + 1,
                )
            if indent < prev_indent:
                inner = None
                while open_levels and open_levels[-1][0] > indent:
                    inner = open_levels.pop()
                if open_levels and open_levels[-1][0] != indent:
                    outer = open_levels[-1]
                    inside = f" and the lines inside it {inner[0]}" if inner is not None else ""
                    return FlowError(
                        f"line {number + 1} is indented by {indent} spaces, which lines it up with no block above: "
                        f"`{_key_of(lines[outer[1]])}:` on line {outer[1] + 1} uses {outer[0]} spaces{inside}; "
                        "keys of one block need the same number of spaces",
                        line=number + 1,
                        column=indent + 1,
                    )
        if open_levels and open_levels[-1][0] == indent:
            open_levels[-1] = (indent, number)
        elif not open_levels or open_levels[-1][0] < indent:
            open_levels.append((indent, number))
        previous = number
    return None


def plain_words(exc: MarkedYAMLError, text: str, source: str) -> FlowError:
    """Explain a YAML syntax error by its likely cause, at the line where the mistake is.

    The parser only notices a problem where it can no longer go on, which is often a line
    later; each rule below looks back from there for the mistake authors actually make.
    """
    mark = exc.problem_mark or exc.context_mark
    problem = str(exc.problem or exc.context or "invalid YAML")
    lines = text.split("\n")
    at = mark.line if mark is not None else len(lines) - 1

    def located(error: FlowError) -> FlowError:
        reason = error.reason if error.reason.startswith("line ") else f"line {error.line}: {error.reason}"
        return FlowError(reason, source=source, line=error.line, column=error.column)

    for number in range(min(at, len(lines) - 1) + 1):
        raw = lines[number]
        if "\t" in raw[: len(raw) - len(raw.lstrip(" \t"))] or ("\t" in raw and "\\t" in problem):
            return located(
                FlowError(
                    f"line {number + 1} is indented with a tab: indent with spaces, not tabs (2 per level)",
                    line=number + 1,
                    column=1,
                )
            )
    context = str(exc.context or "")
    if "quoted scalar" in context and exc.context_mark is not None:
        start = exc.context_mark
        quote = text[start.index] if start.index < len(text) else '"'
        return located(
            FlowError(
                f"the text starting with {quote} at column {start.column + 1} is never closed; "
                f"add the closing {quote} at the end of that text",
                line=start.line + 1,
                column=start.column + 1,
            )
        )
    if "alias" in problem + str(exc.context or ""):
        return FlowError(
            problem + ' (a * starts a YAML alias: put keypad keys in quotes, like key: "*")',
            source=source,
            line=at + 1,
            column=(mark.column + 1) if mark is not None else 1,
        )
    first = max(0, (exc.context_mark.line if exc.context_mark is not None else at) - 1)
    found = _unquoted_colon(lines, min(first, at), min(at, len(lines) - 1))
    if found is None and any(word in problem for word in ("mapping values", "block", "expected key")):
        found = _bad_indent(lines, min(at, len(lines) - 1))
    if found is not None:
        return located(found)
    where = problem
    if exc.problem and exc.context and exc.context_mark is not None:
        where += f" ({exc.context} at line {exc.context_mark.line + 1}, column {exc.context_mark.column + 1})"
    return FlowError(
        f"the YAML is not well-formed: {where}",
        source=source,
        line=at + 1,
        column=(mark.column + 1) if mark is not None else 1,
    )


# -- plain data with positions (flow tests) ---------------------------------------------------------


class Marked:
    """Where a value was written: 0-based ``line``/``column`` like the parser's marks."""

    __slots__ = ("column", "line")

    def __init__(self, line: int, column: int) -> None:
        self.line = line
        self.column = column


class MarkedDict(dict[Any, Any]):
    """A mapping that remembers where each key and value was written."""

    def __init__(self) -> None:
        super().__init__()
        self.mark: Any = None
        self.key_marks: dict[Any, Any] = {}
        self.value_marks: dict[Any, Any] = {}
        self.raw: dict[Any, str] = {}  # scalars as written ("no" stays "no", not False)


class MarkedList(list[Any]):
    def __init__(self) -> None:
        super().__init__()
        self.mark: Any = None
        self.item_marks: list[Any] = []


def _marked(node: Node, source: str) -> Any:
    if isinstance(node, MappingNode):
        out = MarkedDict()
        out.mark = node.start_mark
        for key_node, value_node in node.value:
            key = construct(key_node) if isinstance(key_node, ScalarNode) else None
            if not isinstance(key_node, ScalarNode):
                raise FlowError(
                    "keys must be plain words",
                    source=source,
                    line=key_node.start_mark.line + 1,
                    column=key_node.start_mark.column + 1,
                )
            if key in out:
                raise FlowError(
                    f"duplicate key '{key}' (already used on line {out.key_marks[key].line + 1})",
                    source=source,
                    line=key_node.start_mark.line + 1,
                    column=key_node.start_mark.column + 1,
                )
            out[key] = _marked(value_node, source)
            out.key_marks[key] = key_node.start_mark
            out.value_marks[key] = value_node.start_mark
            if isinstance(value_node, ScalarNode):
                out.raw[key] = str(value_node.value)
        return out
    if isinstance(node, SequenceNode):
        items = MarkedList()
        items.mark = node.start_mark
        for child in node.value:
            items.append(_marked(child, source))
            items.item_marks.append(child.start_mark)
        return items
    value = construct(node)
    return value


def load_marked(text: str, source: str) -> Any:
    """Plain Python data whose mappings and lists remember the position of each entry."""
    root = compose(text, source)
    return None if root is None else _marked(root, source)
