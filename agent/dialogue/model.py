"""The call-flow language: what a flow file may say, and what a parsed flow *is*.

These models are the one definition of the language. Field aliases are the YAML keys
(``if`` -> ``condition``, ``set`` -> ``assign``, ``json`` -> ``json_body``, ``timeout`` ->
``timeout_s``, where the key is a Python keyword or would shadow a builtin), before-validators
accept the shorthand forms authors write, and field descriptions are what editors show. The
loader (:mod:`agent.dialogue.flow`) validates YAML with them, ``wacall flows schema`` is
generated from them, and the engine runs the result, so a new key is one new field here
(``tests/dialogue/test_flow_definition.py`` shows one added without touching anything else).

The models are frozen: one parsed flow is shared by every concurrent call. Flows built in
code use the Python names (``Branch(condition=...)``); both names are accepted.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import re
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, WithJsonSchema, model_validator
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

__all__ = [
    "BUILTIN_TOOLS",
    "DEFAULT_FALLBACK",
    "DEFAULT_HTTP_TIMEOUT_S",
    "DEFAULT_KEY_TIMEOUT_S",
    "DEFAULT_MAX_DIGITS",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_TERMINATOR",
    "HTTP_METHODS",
    "IDENTIFIER_RE",
    "KEYPAD_KEYS",
    "MASK",
    "MAX_NUMBER_DIGITS",
    "NO_MATCH_NODE",
    "SLOT_TYPES",
    "Ask",
    "Branch",
    "BusinessHours",
    "CallButtonConfig",
    "CallPermissionConfig",
    "DigitLength",
    "FaqEntry",
    "Flow",
    "FlowError",
    "HandoverConfig",
    "HttpConfig",
    "Intent",
    "Keypad",
    "LlmConfig",
    "LlmTool",
    "Node",
    "SayItem",
    "SlotType",
    "SlotValue",
    "ToolParam",
    "Variants",
]

DEFAULT_FALLBACK = "Sorry, could you say that again?"
DEFAULT_MAX_RETRIES = 2
DEFAULT_HTTP_TIMEOUT_S = 5.0
#: A node with this id, if the flow has one, takes over once the caller has not been
#: understood ``max_retries`` times in a row (a convention rather than a key, so authors
#: opt in just by writing the node; a question can still name its own ``no_match``).
NO_MATCH_NODE = "no_match"

SlotType = Literal["yes_no", "number", "digits", "date", "time", "text", "choice"]
SLOT_TYPES: tuple[str, ...] = ("yes_no", "number", "digits", "date", "time", "text", "choice")
#: Opening hours assumed when a flow gives none: they decide whether "at three" is 3 pm and
#: what "first thing" or "end of the day" mean.
DEFAULT_OPEN = dt.time(9, 0)
DEFAULT_CLOSE = dt.time(17, 0)
HTTP_METHODS: tuple[str, ...] = ("GET", "POST", "PUT", "PATCH", "DELETE")
#: Tools every LLM node gets (or may get); declared tools must not reuse these names.
BUILTIN_TOOLS: tuple[str, ...] = ("end_call", "handover", "set_slot", "goto")
IDENTIFIER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: The keys of a phone's dialpad a flow can use (A-D exist in the protocol but on no phone).
KEYPAD_KEYS = "0123456789*#"
#: Keypad entry defaults: "#" ends an entry, 5 s without a key ends it too, and an answer
#: without a `length` takes up to 20 digits (more is a caller leaning on the keypad).
DEFAULT_TERMINATOR = "#"
DEFAULT_KEY_TIMEOUT_S = 5.0
DEFAULT_MAX_DIGITS = 20
#: More digits than this in a `number` is an identifier (and would lose leading zeros).
MAX_NUMBER_DIGITS = 15
#: How secret answers appear in transcripts, call records and the console.
MASK = "\u2022\u2022\u2022\u2022"


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


# -- the authored shape -------------------------------------------------------------------------
#
# The models below *are* the flow language: field names or aliases are the YAML keys, and
# before-validators accept the shorthand forms authors write (one line instead of a list,
# ``length: 5``, ``keypad: true``...). The loader, the JSON Schema (``wacall flows schema``)
# and the engine all read these classes, so adding a key means adding one field here.


class Written(str):
    """A YAML scalar that YAML reads as something other than text (``yes``, ``5``, ``9:00``),
    kept as written.

    Names and phrases keep the words (a node or an intent called ``no`` is reasonable in a
    yes/no flow), while every other field gets :attr:`value`, the value YAML gives it.
    """

    value: Any

    def __new__(cls, text: str, value: Any) -> Written:
        written = super().__new__(cls, text)
        written.value = value
        return written


class _Keep:
    """Metadata marking a field that wants :class:`Written` scalars as written."""


_KEEP = _Keep()


def _unwrap(value: Any) -> Any:
    if isinstance(value, Written):
        return value.value
    if isinstance(value, dict):
        return {key: _unwrap(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_unwrap(item) for item in value]
    return value


def _keeps_written(annotation: Any) -> bool:
    if any(meta is _KEEP for meta in getattr(annotation, "__metadata__", ())):
        return True
    return any(_keeps_written(arg) for arg in get_args(annotation))


def _accepts_none(annotation: Any) -> bool:
    return annotation is None or type(None) in get_args(annotation) or annotation is Any


def _authored_text(info: ValidationInfo) -> bool:
    """Whether the data comes from a flow file, where ``key:`` with nothing after it is a slip
    (``key: #`` is a comment), rather than from code, where ``None`` means "not given"."""
    return bool(info.context and info.context.get("authored"))


def _as_name(value: Any) -> Any:
    """Names and phrases are taken as written; YAML's ``no`` is still the word no."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float) or isinstance(value, str):
        text = str(value).strip()
        if not text:
            raise PydanticCustomError("empty", "must not be empty")
        return text
    return value


def _as_text(value: Any) -> Any:
    """A line the bot speaks: a number or true/false here is almost surely a mistake (``say: 5``)."""
    if isinstance(value, Written) or isinstance(value, bool | int | float):
        raise PydanticCustomError("not_text", "must be text (put it in quotes if you really mean those words)")
    if isinstance(value, str):
        if not value.strip():
            raise PydanticCustomError("empty", "must not be empty")
        return value.strip()
    return value


def _spoken(value: Any, info: ValidationInfo) -> Any:
    # Code may pass "" for "none" (``persona=""``); in a flow file an empty line is a slip.
    if value == "" and not _authored_text(info):
        return value
    return _as_text(value)


def _listed(value: Any) -> Any:
    """``x`` or ``[x, y]``, so simple flows stay one-liners."""
    if value is None:
        return []
    return value if isinstance(value, list | tuple) else [value]


def _none_list(value: Any) -> Any:
    return [] if value is None else value


def _mapping(value: Any) -> Any:
    return {} if value is None else value


Name = Annotated[str, _KEEP, BeforeValidator(_as_name), WithJsonSchema({"type": ["string", "number", "boolean"]})]
Text = Annotated[str, _KEEP, BeforeValidator(_spoken), WithJsonSchema({"type": "string", "minLength": 1})]
Names = Annotated[list[Name], BeforeValidator(_listed, json_schema_input_type=Name | list[Name])]
Texts = Annotated[list[Text], BeforeValidator(_listed, json_schema_input_type=Text | list[Text])]


def _slot_value(value: Any) -> Any:
    value = _unwrap(value)
    if value is None or isinstance(value, dict | list):
        raise PydanticCustomError("not_single", "must be a single value (text, number, true/false or a date)")
    if isinstance(value, dt.datetime):
        return value.date()
    return value.strip() if isinstance(value, str) else value


#: What a slot can hold. Text values may contain ``{{placeholders}}``.
SlotValue = Annotated[
    bool | int | float | dt.date | dt.time | str,
    BeforeValidator(_slot_value),
    WithJsonSchema({"type": ["string", "number", "boolean"]}),
]
Assignments = Annotated[dict[str, SlotValue], BeforeValidator(_mapping)]


def _keypad_key(value: Any) -> Any:
    """``key: 1`` is the key 1, not a number (which keys are allowed is a whole-flow check)."""
    if value is None:
        raise PydanticCustomError(
            "empty_key", 'is empty; write the key in quotes, like key: "1" (a bare # starts a comment)'
        )
    if isinstance(value, Written) and isinstance(value.value, int) and not isinstance(value.value, bool):
        return str(value).strip()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, Written) or not isinstance(value, str):
        raise PydanticCustomError("not_key", 'must be one key of the dialpad, like "1", "*" or "#"')
    return value.strip()


def _written_out(value: Any, info: ValidationInfo) -> Any:
    if value is None and not _authored_text(info):
        return None
    return _keypad_key(value)


KeypadKey = Annotated[
    str,
    _KEEP,
    BeforeValidator(_keypad_key),
    WithJsonSchema({"type": ["string", "integer"], "pattern": "^[0-9*#]$", "minimum": 0, "maximum": 9}),
]


def _clock(value: Any) -> Any:
    """A clock time: "09:00" in quotes, or unquoted 9:00 (which YAML 1.1 reads as 540 minutes)."""
    if isinstance(value, Written):
        if isinstance(value.value, int) and ":" in value and 0 <= value.value < 24 * 60:
            return dt.time(value.value // 60, value.value % 60)
        raise PydanticCustomError("clock", 'must be a clock time like "09:00"')
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d{1,2}:\d{2}", text):
            hour, minute = (int(part) for part in text.split(":"))
            if hour < 24 and minute < 60:
                return dt.time(hour, minute)
        raise PydanticCustomError("clock", 'must be a clock time like "09:00"')
    return value


Clock = Annotated[
    dt.time,
    _KEEP,
    BeforeValidator(_clock),
    WithJsonSchema({"type": ["string", "integer"], "description": 'A clock time in quotes, like "09:00".'}),
]


class _Model(BaseModel):
    # Frozen so one parsed flow can be shared by many concurrent calls without one call's
    # engine mutating another's script; extra="forbid" is the typo check for flows built in
    # code. Fields are filled by YAML key (alias) or by Python name alike.
    model_config = ConfigDict(frozen=True, extra="forbid", validate_by_name=True, validate_by_alias=True)

    @model_validator(mode="before")
    @classmethod
    def _authored(cls, data: Any) -> Any:
        """An empty YAML value (``key:``) means "not given"; YAML scalars become values except where kept."""
        if not isinstance(data, dict):
            return data
        out = {}
        for key, value in data.items():
            field = cls.model_fields.get(key) or next((f for f in cls.model_fields.values() if f.alias == key), None)
            if field is None:
                out[key] = value
                continue
            if value is None and not _accepts_none(field.annotation):
                continue
            keep = _keeps_written(field.annotation) or any(meta is _KEEP for meta in field.metadata)
            out[key] = value.value if isinstance(value, Written) and not keep else value
        return out


def authored_keys(model: type[BaseModel]) -> tuple[str, ...]:
    """The YAML keys a block accepts, from its model (the one definition of the language)."""
    return tuple(
        field.alias or name
        for name, field in model.model_fields.items()
        if not (
            field.json_schema_extra
            and isinstance(field.json_schema_extra, dict)
            and field.json_schema_extra.get("internal")
        )
    )


_INTERNAL: dict[str, Any] = {"internal": True}


class Variants(_Model):
    """One spoken line with alternative wordings, rotated on each visit so a node the
    caller hears twice does not sound like a recording."""

    one_of: Texts = Field(min_length=1, description="Alternative wordings, used in turn on each visit.")


SayItem = Text | Variants


def _say(value: Any) -> Any:
    return _listed(value)


SayItems = Annotated[list[SayItem], BeforeValidator(_say, json_schema_input_type=SayItem | list[SayItem])]


def _intent_confirm(value: Any, info: ValidationInfo) -> Any:
    """``true``: a line made from the intent's examples (None); ``false``: never ask ("")."""
    if isinstance(value, Written) and isinstance(value.value, bool):
        value = value.value
    if value is True or value is None:
        return None
    if value is False:
        return ""
    return _spoken(value, info)


class Intent(_Model):
    """Something the caller may say, and what happens when they do."""

    name: Name = Field(description="A short name for what the caller means (shown in logs and tests).")
    examples: Names = Field(default_factory=list, description="Whole sentences a caller might say.")
    keywords: Names = Field(default_factory=list, description="Single words or short phrases that signal this intent.")
    key: Annotated[KeypadKey | None, BeforeValidator(_written_out)] = Field(
        default=None,
        description='The keypad key that picks this intent, like saying it: "0" to "9", "*" or "#" (in quotes).',
    )
    goto: Name | None = Field(default=None, description="The node to go to when this intent matches.")
    #: Say the last thing again instead of moving ("repeat that").
    repeat: bool = Field(
        strict=True, default=False, description="Say the last thing again instead of moving (for 'repeat that')."
    )
    #: Slots to set when this intent matches (YAML key ``set``).
    assign: Assignments = Field(default_factory=dict, alias="set", description="Slots to set when this intent matches.")
    #: The question asked before following an intent that ends or hands over the call when
    #: the match is not clear-cut ("Just to check: you have already paid?"). ``None``: a
    #: line made from the intent's closest example; ``""`` (YAML ``confirm: false``): never ask.
    confirm: Annotated[
        str | None,
        _KEEP,
        BeforeValidator(_intent_confirm, json_schema_input_type=str | bool),
    ] = Field(
        default=None,
        description="For an intent that ends or hands over the call: the question asked first when the match is not "
        "clear-cut (true: a built-in line, false: never ask).",
    )

    @model_validator(mode="after")
    def _one_outcome(self) -> Intent:
        if self.goto is None and not self.repeat:
            raise PydanticCustomError(
                "intent_outcome",
                "needs a `goto`: the node to go to when it matches (or `repeat: true` to say the "
                "last thing again; an intent takes exactly one of `goto` or `repeat: true`)",
                {"name": self.name},
            )
        if self.goto is not None and self.repeat:
            raise PydanticCustomError("intent_both", "has both `goto` and `repeat`; keep one", {"name": self.name})
        if not self.examples and not self.keywords and self.key is None:
            raise PydanticCustomError(
                "never_matches",
                "needs `examples` (things a caller might say), `keywords` or a keypad `key`, "
                "otherwise it can never match",
                {"name": self.name},
            )
        return self


class DigitLength(_Model):
    """How many digits a ``digits`` (or ``number``) answer has: exactly ``min`` when the two
    are equal, else between them."""

    min: int = Field(ge=1, strict=True)
    max: int = Field(ge=1, strict=True)

    @property
    def exact(self) -> int | None:
        return self.min if self.min == self.max else None

    def fits(self, count: int) -> bool:
        return self.min <= count <= self.max


def _length(value: Any) -> Any:
    """``length: 5`` is ``{min: 5, max: 5}``."""
    value = _unwrap(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return {"min": value, "max": value}
    return value


def _terminator(value: Any) -> Any:
    value = value.value if isinstance(value, Written) and isinstance(value.value, bool) else value
    if value is False or value is None:
        return None
    if value is True:
        raise PydanticCustomError("terminator", 'must be a key, like "#", or false')
    return _keypad_key(value)


class Keypad(_Model):
    """How a number question takes keypad entry: keys are collected until the
    ``terminator``, ``max_digits`` keys, or ``timeout_s`` without a key, whichever is first.

    The collecting is the conversation's (the engine has no clock); the engine only says
    what the current question expects (:attr:`agent.dialogue.engine.FlowEngine.keypad`)."""

    #: ``None``: the question's ``length`` (its most digits), else a default for the type.
    max_digits: int | None = Field(
        default=None,
        ge=1,
        strict=True,
        description="The entry ends after this many keys (default: the `length`, else 20).",
    )
    #: ``None``: no key ends the entry (only ``max_digits`` or the pause do).
    terminator: Annotated[
        str | None,
        _KEEP,
        BeforeValidator(_terminator),
        WithJsonSchema({"anyOf": [{"enum": ["#", "*"]}, {"const": False}, {"type": "null"}]}),
    ] = Field(default=DEFAULT_TERMINATOR, description='The key that ends the entry: "#" (default) or "*"; false: none.')
    timeout_s: float = Field(
        default=DEFAULT_KEY_TIMEOUT_S,
        gt=0,
        strict=True,
        alias="timeout",
        description="Seconds without a key after which the entry ends (default 5).",
    )


def _keypad(value: Any) -> Any:
    """``keypad: true`` is the defaults."""
    value = _unwrap(value) if isinstance(value, Written) else value
    if value is True:
        return {}
    if value is False:
        raise PydanticCustomError(
            "keypad_off", "must not be false: a digits or number question always takes the keypad; remove `keypad`"
        )
    return value


def _choices(value: Any) -> Any:
    """``choices: [a, b]`` or ``choices: {a: [other words], b: ...}``."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(key): _listed(words) for key, words in value.items()}
    return {_as_name(choice): [] for choice in _listed(value)}


class Ask(_Model):
    """A question whose answer is parsed into a typed slot."""

    slot: Name = Field(description="The slot name to store the answer under.")
    type: SlotType = Field(default="text", description="What kind of answer to expect.")
    #: For ``choice``: each allowed value and other words callers use for it.
    choices: Annotated[
        dict[str, list[Name]],
        BeforeValidator(_choices, json_schema_input_type=list[Name] | dict[str, Name | list[Name] | None]),
    ] = Field(
        default_factory=dict,
        description="For type choice: the allowed values, as a list or as value: [other words for it].",
    )
    #: For ``number``: answers outside the range count as not understood.
    min: float | None = Field(default=None, strict=True, description="For type number: the smallest accepted answer.")
    max: float | None = Field(default=None, strict=True, description="For type number: the largest accepted answer.")
    #: For ``digits`` and ``number``: how many digits the answer has (an order number has
    #: five), so groups read in separate breaths are joined and missing digits asked for.
    length: Annotated[DigitLength | None, BeforeValidator(_length, json_schema_input_type=int | DigitLength)] = Field(
        default=None,
        description="For type digits or number: how many digits (5), or {min, max}. Groups read in separate breaths "
        "are joined and missing digits asked for.",
    )
    #: Read the answer back before moving on: ``True`` (a built-in line), ``False``, or the
    #: line to say (with ``{{slot}}`` for the value heard). ``None``: on for ``digits``.
    confirm: Annotated[bool | Text | None, BeforeValidator(_bool_as_read)] = Field(
        default=None,
        description="Read the answer back before moving on: true, false, or the line to say (on by default for "
        "digits).",
    )
    #: Keypad entry for ``digits``/``number`` (``None``: the defaults, which such a
    #: question always takes; other types take no digits).
    keypad: Annotated[Keypad | None, BeforeValidator(_keypad, json_schema_input_type=Literal[True] | Keypad)] = Field(
        default=None,
        description="For type digits or number (which take the keypad anyway): how keys are collected; true: the "
        "defaults.",
    )
    #: A PIN or the like: masked in transcripts, records and the console, never read back.
    secret: bool = Field(
        strict=True,
        default=False,
        description="A PIN or the like: masked in transcripts, call records and the console.",
    )

    @property
    def reads_back(self) -> bool:
        if self.secret:
            return False
        if self.confirm is None:
            return self.type == "digits"
        return self.confirm is not False

    @property
    def takes_digits(self) -> bool:
        """Whether keys typed at this question are its answer (rather than a menu choice)."""
        return self.type in ("digits", "number")

    def keypad_entry(self) -> Keypad:
        """The keypad rules in force, with ``max_digits`` filled in: the author's, else the
        ``length``, else as many digits as such an answer can sensibly have."""
        entry = self.keypad or Keypad()
        if entry.max_digits is not None:
            return entry
        if self.length is not None:
            most = self.length.max
        else:
            most = MAX_NUMBER_DIGITS if self.type == "number" else DEFAULT_MAX_DIGITS
        return entry.model_copy(update={"max_digits": most})


def _bool_as_read(value: Any) -> Any:
    """``true``/``false`` (``yes``/``no``) as YAML reads them, or the text as written."""
    return value.value if isinstance(value, Written) and isinstance(value.value, bool) else value


def _condition(value: Any) -> Any:
    if isinstance(value, bool):
        return str(value).lower()
    return value.strip() if isinstance(value, str) else value


class Branch(_Model):
    """Go to ``goto`` when ``condition`` (YAML key ``if``) holds."""

    condition: Annotated[str, _KEEP, BeforeValidator(_condition), WithJsonSchema({"type": ["string", "boolean"]})] = (
        Field(alias="if", description="A condition, like `party_size > 8`, `confirmed`, `reason is 'dispute'`.")
    )
    goto: Name = Field(description="Where to go when the condition holds.")


class HandoverConfig(_Model):
    """Transfer the call to a human team."""

    queue: Name = Field(description="The team (queue) that takes the call.")
    skills: Names = Field(default_factory=list, description="Skills the human agent needs.")
    reason: Text = Field(default="", description="Why the call is handed over, shown to the agent.")


def _method(value: Any) -> Any:
    return (
        value.upper()
        if isinstance(value, str) and value in (*HTTP_METHODS, *(m.lower() for m in HTTP_METHODS))
        else value
    )


def _json_body(value: Any) -> Any:
    value = _unwrap(value)
    if isinstance(value, dict):
        return {str(key): _json_body(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_body(item) for item in value]
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


class HttpConfig(_Model):
    """Call a business system and store parts of its answer."""

    method: Annotated[
        Literal["GET", "POST", "PUT", "PATCH", "DELETE"],
        BeforeValidator(_method),
        WithJsonSchema({"enum": [*HTTP_METHODS, *(m.lower() for m in HTTP_METHODS)]}),
    ] = Field(default="GET", description="HTTP method.")
    url: Text = Field(description="The address to call; placeholders are filled in.")
    headers: Annotated[dict[str, Text], BeforeValidator(_mapping)] = Field(
        default_factory=dict, description="Extra request headers."
    )
    json_body: Annotated[Any, BeforeValidator(_json_body)] = Field(
        default=None, alias="json", description="A JSON body; text fields may use placeholders."
    )
    timeout_s: float = Field(
        default=DEFAULT_HTTP_TIMEOUT_S,
        gt=0,
        strict=True,
        alias="timeout",
        description="Seconds to wait before taking on_error.",
    )
    #: slot name -> dotted path into the JSON answer (``customer.name``, ``items.0.id``).
    store: Annotated[dict[str, Name], BeforeValidator(_mapping)] = Field(
        default_factory=dict, description="slot: path in the JSON answer (customer.name, items.0.id)."
    )
    on_success: Name = Field(description="The node to go to when the request works.")
    on_error: Name = Field(description="The node to go to when it fails or times out.")


def _shorthand(key: str) -> Any:
    """``block: text`` is ``block: {key: text}``."""

    def expand(value: Any) -> Any:
        return {key: value} if isinstance(value, str) else value

    return expand


class CallPermissionConfig(_Model):
    """Ask the caller for permission to call them back (``request_call_permission: <reason>`` for short)."""

    reason: Text = Field(description="Why, shown to the caller.")

    _short = model_validator(mode="before")(classmethod(lambda cls, data: _shorthand("reason")(data)))


class CallButtonConfig(_Model):
    """A WhatsApp call button sent to the caller (spec §6); `payload` comes back with the call it starts."""

    payload: Text | None = Field(default=None, description="Comes back with the call the button starts.")
    text: Text | None = Field(default=None, description="The message shown with the button.")

    _short = model_validator(mode="before")(classmethod(lambda cls, data: _shorthand("payload")(data)))


ParamType = Literal["yes_no", "number", "date", "time", "text"]


class ToolParam(_Model):
    """One argument of an LLM tool (``name: type`` for short); it becomes a slot."""

    type: ParamType = Field(default="text", description="The slot type of the argument.")
    description: Text = Field(default="", description="What the argument is, for the LLM.")

    _short = model_validator(mode="before")(classmethod(lambda cls, data: _shorthand("type")(data)))


class LlmTool(_Model):
    """A tool the LLM may call: its arguments become slots and the call moves to ``goto``.

    Declarative on purpose: authors get "transition with data" without writing Python.
    """

    name: Name = Field(description="The tool's name (one word).")
    description: Text = Field(default="", description="When the LLM should use it.")
    parameters: Annotated[dict[str, ToolParam], BeforeValidator(_mapping)] = Field(
        default_factory=dict, description="name: type of each argument; they become slots."
    )
    goto: Name = Field(description="The node to go to when the LLM uses it.")


class LlmConfig(_Model):
    """Let an LLM hold the conversation at a node."""

    prompt: Text = Field(description="Instructions for the LLM at this node.")
    #: Nodes the LLM may move the call to with its ``goto`` tool.
    transitions: Names = Field(default_factory=list, description="Nodes the LLM may move the call to.")
    #: Slots the LLM may fill with its ``set_slot`` tool.
    slots: Names = Field(default_factory=list, description="Slots the LLM may fill.")
    tools: Annotated[list[LlmTool], BeforeValidator(_none_list)] = Field(
        default_factory=list, description="Extra tools; their arguments become slots."
    )
    #: Where to go instead when the runtime has no LLM, so the flow still works offline.
    offline: Name | None = Field(default=None, description="Where to go instead when no LLM is configured.")


def _given(value: Any, info: ValidationInfo) -> Any:
    """``send_call_button:`` with nothing after it is a payload left out, not "no button"."""
    if value is None and _authored_text(info):
        raise PydanticCustomError("not_text", "must be text (the payload) or a block with `payload` and `text`")
    return value


def _distinct(items: list[Any], key: str, what: str) -> None:
    """Two intents (or faq entries) of one name: tests, logs and the call records could not tell them apart."""
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        if item.name in seen:
            raise PydanticCustomError(
                "duplicate_name",
                "duplicate {what} '{name}'",
                {"what": what, "name": item.name, "list": key, "index": i, "first": seen[item.name]},
            )
        seen[item.name] = i


class Node(_Model):
    """One step of the conversation: what the bot says and does, then how it moves on."""

    id: SkipJsonSchema[str] = Field(default="", json_schema_extra=_INTERNAL)
    say: SayItems = Field(
        default_factory=list, description="What the bot says on arriving here: a line, or a list of lines."
    )
    ask: Ask | None = Field(default=None, description="Ask for a typed answer and store it in a slot.")
    intents: Annotated[list[Intent], BeforeValidator(_none_list)] = Field(
        default_factory=list, description="What the caller may answer, and where each answer leads."
    )
    branches: list[Branch] = Field(
        default_factory=list, description="Conditions checked in order; the first that holds decides."
    )
    next: Name | None = Field(default=None, description="Where to go next (after the answer, for a question).")
    #: Slots set on entering the node (YAML key ``set``).
    assign: Assignments = Field(default_factory=dict, alias="set", description="Slots to set on arriving here.")
    reprompt: Texts = Field(default_factory=list, description="What to say when the answer was not understood.")
    max_retries: int | None = Field(
        default=None, ge=0, strict=True, description="Misunderstandings allowed before no_match."
    )
    no_match: Name | None = Field(default=None, description="Where to go when the caller is still not understood.")
    handover: HandoverConfig | None = Field(default=None, description="Transfer the call to a human team.")
    http: HttpConfig | None = Field(default=None, description="Call a business system and store parts of its answer.")
    request_call_permission: Annotated[
        CallPermissionConfig | None, BeforeValidator(lambda v: v, json_schema_input_type=Text | CallPermissionConfig)
    ] = Field(default=None, description="Ask the caller for permission to call them back.")
    send_call_button: Annotated[
        CallButtonConfig | None, BeforeValidator(_given, json_schema_input_type=Text | CallButtonConfig)
    ] = Field(
        default=None,
        description="Send the caller a WhatsApp call button; its payload comes back with the call it starts.",
    )
    llm: LlmConfig | None = Field(default=None, description="Let an LLM hold the conversation here.")
    end: bool = Field(strict=True, default=False, description="Hang up after speaking.")
    interruptible: bool = Field(
        strict=True, default=True, description="Whether the caller can talk over this node's lines."
    )

    @model_validator(mode="after")
    def _distinct_intents(self) -> Node:
        _distinct(self.intents, "intents", "intent")
        return self

    @property
    def is_question(self) -> bool:
        """Whether the node waits for the caller and can fail to understand them."""
        return self.ask is not None or bool(self.intents)


class FaqEntry(_Model):
    """A question callers ask in passing ("what time do you open?") and its answer; matched
    at any question, answered, and then the pending question is asked again."""

    name: Name = Field(default="", description="A short name for the question (shown in logs and tests).")
    examples: Names = Field(default_factory=list, description="Ways callers ask it.")
    keywords: Names = Field(default_factory=list, description="Words or short phrases that signal it.")
    answer: SayItems = Field(
        min_length=1, description="What the bot answers, before asking its pending question again."
    )

    @model_validator(mode="after")
    def _can_match(self) -> FaqEntry:
        if not self.examples and not self.keywords:
            raise PydanticCustomError(
                "never_matches",
                "needs `examples` (the ways callers ask it) or `keywords`, otherwise it can never match",
            )
        return self


class BusinessHours(_Model):
    """When the business works; decides am or pm for "at three" and what "first thing" or
    "end of the day" mean."""

    open: Clock = Field(default=DEFAULT_OPEN, description="Opening time.")
    close: Clock = Field(default=DEFAULT_CLOSE, description="Closing time.")


class RecordingConfig(_Model):
    """Whether this flow's calls are recorded, and the line that tells the caller so.

    ``enabled`` None follows the server's ``recordings.enabled``; a flow may force it either way (a flow
    for a sensitive line can refuse recording whatever the server does). ``announce`` is spoken first,
    before the greeting and without barge-in, on every call that is recorded.
    """

    enabled: bool | None = Field(
        default=None, strict=True, description="Record this flow's calls (overrides the server)."
    )
    announce: Text = Field(default="", description="Said first on a recorded call, without barge-in.")

    @model_validator(mode="after")
    def _plain_announcement(self) -> RecordingConfig:
        # Said before the flow has run a single step, when no slot can have a value yet.
        if "{{" in self.announce:
            raise PydanticCustomError("announce_placeholders", "`announce` of `recording` cannot use {{placeholders}}")
        return self


def _nodes(value: Any) -> Any:
    """Each node's id is its key; an empty node (``b:`` with nothing under it) is a valid stub."""
    if not isinstance(value, dict):
        return value
    return {
        str(key): {"id": str(key)} if node is None else {**node, "id": str(key)} if isinstance(node, dict) else node
        for key, node in value.items()
    }


def _faq(value: Any) -> Any:
    """An faq entry without a `name` is called ``faq_<n>`` in logs and tests."""
    items = _none_list(value)
    if not isinstance(items, list):
        return items
    return [
        {**item, "name": f"faq_{i + 1}"} if isinstance(item, dict) and item.get("name") is None else item
        for i, item in enumerate(items)
    ]


class Flow(_Model):
    """A whole call script, as loaded from one YAML file."""

    name: Name = Field(default="flow", description="The flow's name (defaults to the file name).")
    start: Name = Field(description="The node the call starts at.")
    #: Background every LLM node's prompt starts with (who the bot is, tone).
    persona: Text = Field(default="", description="Who the bot is; every LLM prompt starts with this.")
    fallback: Texts = Field(
        default_factory=lambda: [DEFAULT_FALLBACK],
        min_length=1,
        description="What to say when the caller was not understood.",
    )
    max_retries: int = Field(
        default=DEFAULT_MAX_RETRIES,
        ge=0,
        strict=True,
        description="Misunderstandings in a row before the no_match node.",
    )
    business_hours: BusinessHours = Field(
        default_factory=BusinessHours,
        description="When the business is open: decides am or pm for 'at three', and what 'first thing' or "
        "'end of the day' mean. Default 09:00 to 17:00.",
    )
    #: Initial slot values; ``None`` declares a slot the runtime fills (``FlowEngine(slots=...)``).
    slots: Annotated[dict[str, SlotValue | None], BeforeValidator(_mapping)] = Field(
        default_factory=dict, description="Slots and their starting values (empty: filled by the system)."
    )
    global_intents: Annotated[list[Intent], BeforeValidator(_none_list)] = Field(
        default_factory=list, description="Intents that work from every node."
    )
    #: Questions callers ask in passing, answered from any question node.
    faq: Annotated[list[FaqEntry], BeforeValidator(_faq)] = Field(
        default_factory=list,
        description="Questions callers ask in passing, answered from any question; the bot then asks its "
        "question again.",
    )
    #: Where a call starts when it carries a call button's or deep link's payload: payload pattern (exact, or
    #: a glob such as ``summer-*``) -> node. Exact patterns win over globs; globs are tried in file order.
    entry_points: Annotated[dict[str, Name], BeforeValidator(_mapping)] = Field(
        default_factory=dict,
        description="Where a call starts when it came from a call button or deep link: the payload (exactly, or "
        "a pattern like 'summer-*') -> the node. Other calls start at `start`.",
    )
    recording: RecordingConfig = Field(
        default_factory=RecordingConfig,
        description="Call recording for this flow: `enabled` (default: the server's recordings.enabled) and "
        "`announce`, a line said before the greeting on every recorded call.",
    )
    nodes: Annotated[dict[str, Node], BeforeValidator(_nodes)] = Field(
        min_length=1, description="The steps of the call, by name."
    )
    source: SkipJsonSchema[str] = Field(default="<string>", json_schema_extra=_INTERNAL)

    @model_validator(mode="after")
    def _distinct_names(self) -> Flow:
        _distinct(self.global_intents, "global_intents", "intent")
        _distinct(self.faq, "faq", "name")
        return self

    def entry_node(self, payload: str | None) -> str:
        """The node a call with this payload starts at: its entry point, else ``start``."""
        if payload is None:
            return self.start
        exact = self.entry_points.get(payload)
        if exact is not None:
            return exact
        for pattern, node in self.entry_points.items():
            if fnmatch.fnmatchcase(payload, pattern):
                return node
        return self.start

    @property
    def no_match(self) -> str | None:
        """Id of the give-up node, so the engine does not hard-code the convention."""
        return NO_MATCH_NODE if NO_MATCH_NODE in self.nodes else None

    def slot_types(self) -> dict[str, str]:
        """Declared type of each typed slot (from ``ask`` and LLM tool parameters), so
        values arriving from an LLM can be coerced the same way spoken answers are."""
        types: dict[str, str] = {}
        for node in self.nodes.values():
            if node.ask is not None:
                types.setdefault(node.ask.slot, node.ask.type)
            if node.llm is not None:
                for tool in node.llm.tools:
                    for name, param in tool.parameters.items():
                        types.setdefault(name, param.type)
        return types
