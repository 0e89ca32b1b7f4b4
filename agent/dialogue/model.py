"""The call-flow data model: what a parsed flow file *is*, independent of YAML.

Kept apart from the loader so the engine, the checks, the JSON Schema and flows built in code
all share one definition, and so the loader's positional bookkeeping never leaks into it.
The models are frozen: one parsed flow is shared by every concurrent call.

Field names follow the YAML keys except where a key is a Python keyword or builtin
(``if`` -> ``condition``, ``set`` -> ``assign``, ``json`` -> ``json_body``, ``timeout`` ->
``timeout_s``); the loader does that mapping.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

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

#: What a slot can hold. Text values may contain ``{{placeholders}}``.
SlotValue = bool | int | float | dt.date | dt.time | str


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


class Variants(_Model):
    """One spoken line with alternative wordings, rotated on each visit so a node the
    caller hears twice does not sound like a recording."""

    one_of: list[str] = Field(min_length=1)


SayItem = str | Variants


class Intent(_Model):
    """Something the caller may say, and what happens when they do."""

    name: str
    examples: list[str] = Field(default_factory=list)
    keywords: list[str] = Field(default_factory=list)
    goto: str | None = None
    #: Say the last thing again instead of moving ("repeat that").
    repeat: bool = False
    #: Slots to set when this intent matches (YAML key ``set``).
    assign: dict[str, SlotValue] = Field(default_factory=dict)
    #: The question asked before following an intent that ends or hands over the call when
    #: the match is not clear-cut ("Just to check: you have already paid?"). ``None``: a
    #: line made from the intent's closest example; ``""`` (YAML ``confirm: false``): never ask.
    confirm: str | None = None
    #: The keypad key that picks this intent, like saying it ("press 1 for orders").
    key: str | None = None

    @model_validator(mode="after")
    def _one_outcome(self) -> Intent:
        if (self.goto is None) == (not self.repeat):
            raise ValueError(f"intent '{self.name}' needs exactly one of `goto` or `repeat: true`")
        return self


class DigitLength(_Model):
    """How many digits a ``digits`` (or ``number``) answer has: exactly ``min`` when the two
    are equal, else between them."""

    min: int = Field(ge=1)
    max: int = Field(ge=1)

    @property
    def exact(self) -> int | None:
        return self.min if self.min == self.max else None

    def fits(self, count: int) -> bool:
        return self.min <= count <= self.max


class Keypad(_Model):
    """How a number question takes keypad entry: keys are collected until the
    ``terminator``, ``max_digits`` keys, or ``timeout_s`` without a key, whichever is first.

    The collecting is the conversation's (the engine has no clock); the engine only says
    what the current question expects (:attr:`agent.dialogue.engine.FlowEngine.keypad`)."""

    #: ``None``: the question's ``length`` (its most digits), else a default for the type.
    max_digits: int | None = Field(default=None, ge=1)
    #: ``None``: no key ends the entry (only ``max_digits`` or the pause do).
    terminator: str | None = DEFAULT_TERMINATOR
    timeout_s: float = Field(default=DEFAULT_KEY_TIMEOUT_S, gt=0)


class Ask(_Model):
    """A question whose answer is parsed into a typed slot."""

    slot: str
    type: SlotType = "text"
    #: For ``choice``: each allowed value and other words callers use for it.
    choices: dict[str, list[str]] = Field(default_factory=dict)
    #: For ``number``: answers outside the range count as not understood.
    min: float | None = None
    max: float | None = None
    #: For ``digits`` and ``number``: how many digits the answer has (an order number has
    #: five), so groups read in separate breaths are joined and missing digits asked for.
    length: DigitLength | None = None
    #: Read the answer back before moving on: ``True`` (a built-in line), ``False``, or the
    #: line to say (with ``{{slot}}`` for the value heard). ``None``: on for ``digits``.
    confirm: bool | str | None = None
    #: Keypad entry for ``digits``/``number`` (``None``: the defaults, which such a
    #: question always takes; other types take no digits).
    keypad: Keypad | None = None
    #: A PIN or the like: masked in transcripts, records and the console, never read back.
    secret: bool = False

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


class Branch(_Model):
    """Go to ``goto`` when ``condition`` (YAML key ``if``) holds."""

    condition: str
    goto: str


class HandoverConfig(_Model):
    queue: str
    skills: list[str] = Field(default_factory=list)
    reason: str = ""


class HttpConfig(_Model):
    method: str = "GET"
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    json_body: Any = None
    timeout_s: float = Field(default=DEFAULT_HTTP_TIMEOUT_S, gt=0)
    #: slot name -> dotted path into the JSON answer (``customer.name``, ``items.0.id``).
    store: dict[str, str] = Field(default_factory=dict)
    on_success: str
    on_error: str


class CallPermissionConfig(_Model):
    reason: str


class CallButtonConfig(_Model):
    """A WhatsApp call button sent to the caller (spec §6); `payload` comes back with the call it starts."""

    payload: str | None = None
    text: str | None = None


class ToolParam(_Model):
    type: Literal["yes_no", "number", "date", "time", "text"] = "text"
    description: str = ""


class LlmTool(_Model):
    """A tool the LLM may call: its arguments become slots and the call moves to ``goto``.

    Declarative on purpose: authors get "transition with data" without writing Python.
    """

    name: str
    description: str = ""
    parameters: dict[str, ToolParam] = Field(default_factory=dict)
    goto: str


class LlmConfig(_Model):
    prompt: str
    #: Nodes the LLM may move the call to with its ``goto`` tool.
    transitions: list[str] = Field(default_factory=list)
    #: Slots the LLM may fill with its ``set_slot`` tool.
    slots: list[str] = Field(default_factory=list)
    tools: list[LlmTool] = Field(default_factory=list)
    #: Where to go instead when the runtime has no LLM, so the flow still works offline.
    offline: str | None = None


class Node(_Model):
    """One step of the conversation: what the bot says and does, then how it moves on."""

    id: str
    say: list[SayItem] = Field(default_factory=list)
    intents: list[Intent] = Field(default_factory=list)
    end: bool = False
    interruptible: bool = True
    next: str | None = None
    ask: Ask | None = None
    branches: list[Branch] = Field(default_factory=list)
    #: Slots set on entering the node (YAML key ``set``).
    assign: dict[str, SlotValue] = Field(default_factory=dict)
    reprompt: list[str] = Field(default_factory=list)
    max_retries: int | None = Field(default=None, ge=0)
    no_match: str | None = None
    handover: HandoverConfig | None = None
    http: HttpConfig | None = None
    request_call_permission: CallPermissionConfig | None = None
    send_call_button: CallButtonConfig | None = None
    llm: LlmConfig | None = None

    @property
    def is_question(self) -> bool:
        """Whether the node waits for the caller and can fail to understand them."""
        return self.ask is not None or bool(self.intents)


class FaqEntry(_Model):
    """A question callers ask in passing ("what time do you open?") and its answer; matched
    at any question, answered, and then the pending question is asked again."""

    name: str
    examples: list[str] = Field(default_factory=list)
    keywords: list[str] = Field(default_factory=list)
    answer: list[SayItem] = Field(min_length=1)


class BusinessHours(_Model):
    """When the business works; decides am or pm for "at three" and what "first thing" or
    "end of the day" mean."""

    open: dt.time = DEFAULT_OPEN
    close: dt.time = DEFAULT_CLOSE


class RecordingConfig(_Model):
    """Whether this flow's calls are recorded, and the line that tells the caller so.

    ``enabled`` None follows the server's ``recordings.enabled``; a flow may force it either way (a flow
    for a sensitive line can refuse recording whatever the server does). ``announce`` is spoken first,
    before the greeting and without barge-in, on every call that is recorded.
    """

    enabled: bool | None = None
    announce: str = ""


class Flow(_Model):
    """A whole call script, as loaded from one YAML file."""

    name: str
    start: str
    fallback: list[str] = Field(default_factory=lambda: [DEFAULT_FALLBACK])
    max_retries: int = Field(default=DEFAULT_MAX_RETRIES, ge=0)
    nodes: dict[str, Node]
    global_intents: list[Intent] = Field(default_factory=list)
    #: Initial slot values; ``None`` declares a slot the runtime fills (``FlowEngine(slots=...)``).
    slots: dict[str, SlotValue | None] = Field(default_factory=dict)
    #: Background every LLM node's prompt starts with (who the bot is, tone).
    persona: str = ""
    #: Questions callers ask in passing, answered from any question node.
    faq: list[FaqEntry] = Field(default_factory=list)
    business_hours: BusinessHours = Field(default_factory=BusinessHours)
    #: Where a call starts when it carries a call button's or deep link's payload: payload pattern (exact, or
    #: a glob such as ``summer-*``) -> node. Exact patterns win over globs; globs are tried in file order.
    entry_points: dict[str, str] = Field(default_factory=dict)
    recording: RecordingConfig = Field(default_factory=RecordingConfig)
    source: str = "<string>"

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
