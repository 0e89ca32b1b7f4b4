"""JSON Schemas for flow files and their test files, for editors.

With the schema, VS Code's YAML extension autocompletes keys, shows what each one means on
hover and underlines typos while the author types, before ``wacall flows check`` runs. It
describes the YAML as authors write it (``say`` may be one line or a list, ``choices`` a
list or a mapping), which is why it is written out here rather than generated from the
pydantic models. The key lists come from the loader, and a test keeps the two in step.

Draft-07, because that is what editor tooling supports best. Names and phrases accept
numbers and true/false too: YAML turns an unquoted ``no`` into a boolean and the loader
deliberately takes it as the word.
"""

from __future__ import annotations

from typing import Any

from agent.dialogue.flow import (
    ASK_KEYS,
    BRANCH_KEYS,
    FAQ_KEYS,
    FLOW_KEYS,
    HANDOVER_KEYS,
    HOURS_KEYS,
    HTTP_KEYS,
    INTENT_KEYS,
    KEYPAD_ENTRY_KEYS,
    LLM_KEYS,
    NODE_KEYS,
    PARAM_TYPES,
    RECORDING_KEYS,
    TOOL_KEYS,
)
from agent.dialogue.model import HTTP_METHODS, SLOT_TYPES

__all__ = [
    "CONVERSATION_KEYS",
    "EXPECT_KEYS",
    "SCHEMA_ID",
    "STEP_KEYS",
    "TESTS_KEYS",
    "flow_schema",
    "flow_test_schema",
]

SCHEMA_ID = "https://wacall.dev/schemas/flow.schema.json"

_TEXT: dict[str, Any] = {"type": "string", "minLength": 1}
_NAME: dict[str, Any] = {"type": ["string", "number", "boolean"]}
_SCALAR: dict[str, Any] = {"type": ["string", "number", "boolean", "null"]}


def _d(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "description": description}


def _one_or_many(item: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [item, {"type": "array", "items": item}]}


def _object(properties: dict[str, Any], keys: tuple[str, ...], required: tuple[str, ...] = ()) -> dict[str, Any]:
    assert set(properties) == set(keys), set(properties) ^ set(keys)
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = list(required)
    return schema


def _definitions() -> dict[str, Any]:
    say_item = {
        "anyOf": [
            _TEXT,
            {
                "type": "object",
                "properties": {"one_of": _d("Alternative wordings, used in turn on each visit.", _one_or_many(_TEXT))},
                "required": ["one_of"],
                "additionalProperties": False,
            },
        ]
    }
    assignments = {"type": "object", "additionalProperties": _SCALAR}
    intent = _object(
        {
            "name": _d("A short name for what the caller means (shown in logs and tests).", _NAME),
            "examples": _d("Whole sentences a caller might say.", _one_or_many(_NAME)),
            "keywords": _d("Single words or short phrases that signal this intent.", _one_or_many(_NAME)),
            "key": _d(
                'The keypad key that picks this intent, like saying it: "0" to "9", "*" or "#" (in quotes).',
                {"type": ["string", "integer"], "pattern": "^[0-9*#]$", "minimum": 0, "maximum": 9},
            ),
            "goto": _d("The node to go to when this intent matches.", _NAME),
            "repeat": _d("Say the last thing again instead of moving (for 'repeat that').", {"type": "boolean"}),
            "set": _d("Slots to set when this intent matches.", assignments),
            "confirm": _d(
                "For an intent that ends or hands over the call: the question asked first when the match is not "
                "clear-cut (true: a built-in line, false: never ask).",
                {"type": ["string", "boolean"]},
            ),
        },
        INTENT_KEYS,
        ("name",),
    )
    ask = _object(
        {
            "slot": _d("The slot name to store the answer under.", _NAME),
            "type": _d("What kind of answer to expect.", {"enum": list(SLOT_TYPES)}),
            "choices": _d(
                "For type choice: the allowed values, as a list or as value: [other words for it].",
                {
                    "anyOf": [
                        {"type": "array", "items": _NAME},
                        {
                            "type": "object",
                            "additionalProperties": {
                                "anyOf": [_NAME, {"type": "null"}, {"type": "array", "items": _NAME}]
                            },
                        },
                    ]
                },
            ),
            "min": _d("For type number: the smallest accepted answer.", {"type": "number"}),
            "max": _d("For type number: the largest accepted answer.", {"type": "number"}),
            "length": _d(
                "For type digits or number: how many digits (5), or {min, max}. Groups read in separate breaths "
                "are joined and missing digits asked for.",
                {
                    "anyOf": [
                        {"type": "integer", "minimum": 1},
                        {
                            "type": "object",
                            "properties": {
                                "min": {"type": "integer", "minimum": 1},
                                "max": {"type": "integer", "minimum": 1},
                            },
                            "required": ["min", "max"],
                            "additionalProperties": False,
                        },
                    ]
                },
            ),
            "confirm": _d(
                "Read the answer back before moving on: true, false, or the line to say (on by default for digits).",
                {"type": ["string", "boolean"]},
            ),
            "keypad": _d(
                "For type digits or number (which take the keypad anyway): how keys are collected; true: the defaults.",
                {
                    "anyOf": [
                        {"const": True},
                        _object(
                            {
                                "max_digits": _d(
                                    "The entry ends after this many keys (default: the `length`, else 20).",
                                    {"type": "integer", "minimum": 1, "maximum": 32},
                                ),
                                "terminator": _d(
                                    'The key that ends the entry: "#" (default) or "*"; false: none.',
                                    {"anyOf": [{"enum": ["#", "*"]}, {"const": False}, {"type": "null"}]},
                                ),
                                "timeout": _d(
                                    "Seconds without a key after which the entry ends (default 5).",
                                    {"type": "number", "exclusiveMinimum": 0, "maximum": 30},
                                ),
                            },
                            KEYPAD_ENTRY_KEYS,
                        ),
                    ]
                },
            ),
            "secret": _d(
                "A PIN or the like: masked in transcripts, call records and the console, never read back.",
                {"type": "boolean"},
            ),
        },
        ASK_KEYS,
        ("slot",),
    )
    branch = _object(
        {
            "if": _d(
                "A condition, like `party_size > 8`, `confirmed`, `reason is 'dispute'`.",
                {"type": ["string", "boolean"]},
            ),
            "goto": _d("Where to go when the condition holds.", _NAME),
        },
        BRANCH_KEYS,
        ("if", "goto"),
    )
    handover = _object(
        {
            "queue": _d("The team (queue) that takes the call.", _NAME),
            "skills": _d("Skills the human agent needs.", _one_or_many(_NAME)),
            "reason": _d("Why the call is handed over, shown to the agent.", _TEXT),
        },
        HANDOVER_KEYS,
        ("queue",),
    )
    http = _object(
        {
            "method": _d("HTTP method.", {"enum": [*HTTP_METHODS, *(m.lower() for m in HTTP_METHODS)]}),
            "url": _d("The address to call; placeholders are filled in.", _TEXT),
            "headers": _d("Extra request headers.", {"type": "object", "additionalProperties": {"type": "string"}}),
            "json": _d("A JSON body; text fields may use placeholders.", {}),
            "timeout": _d("Seconds to wait before taking on_error.", {"type": "number", "exclusiveMinimum": 0}),
            "store": _d(
                "slot: path in the JSON answer (customer.name, items.0.id).",
                {"type": "object", "additionalProperties": {"type": ["string", "number"]}},
            ),
            "on_success": _d("The node to go to when the request works.", _NAME),
            "on_error": _d("The node to go to when it fails or times out.", _NAME),
        },
        HTTP_KEYS,
        ("url", "on_success", "on_error"),
    )
    permission = {
        "anyOf": [
            _TEXT,
            {"type": "object", "properties": {"reason": _TEXT}, "required": ["reason"], "additionalProperties": False},
        ]
    }
    param = {
        "anyOf": [
            {"enum": list(PARAM_TYPES)},
            {
                "type": "object",
                "properties": {"type": {"enum": list(PARAM_TYPES)}, "description": _TEXT},
                "additionalProperties": False,
            },
        ]
    }
    tool = _object(
        {
            "name": _d("The tool's name (one word).", _NAME),
            "description": _d("When the LLM should use it.", _TEXT),
            "parameters": _d(
                "name: type of each argument; they become slots.", {"type": "object", "additionalProperties": param}
            ),
            "goto": _d("The node to go to when the LLM uses it.", _NAME),
        },
        TOOL_KEYS,
        ("name", "goto"),
    )
    llm = _object(
        {
            "prompt": _d("Instructions for the LLM at this node.", _TEXT),
            "transitions": _d("Nodes the LLM may move the call to.", _one_or_many(_NAME)),
            "slots": _d("Slots the LLM may fill.", _one_or_many(_NAME)),
            "tools": _d("Extra tools; their arguments become slots.", {"type": "array", "items": tool}),
            "offline": _d("Where to go instead when no LLM is configured.", _NAME),
        },
        LLM_KEYS,
        ("prompt",),
    )
    node = _object(
        {
            "say": _d("What the bot says on arriving here: a line, or a list of lines.", _one_or_many(say_item)),
            "ask": _d("Ask for a typed answer and store it in a slot.", ask),
            "intents": _d(
                "What the caller may answer, and where each answer leads.", {"type": "array", "items": intent}
            ),
            "branches": _d(
                "Conditions checked in order; the first that holds decides.", {"type": "array", "items": branch}
            ),
            "next": _d("Where to go next (after the answer, for a question).", _NAME),
            "set": _d("Slots to set on arriving here.", assignments),
            "reprompt": _d("What to say when the answer was not understood.", _one_or_many(_TEXT)),
            "max_retries": _d("Misunderstandings allowed before no_match.", {"type": "integer", "minimum": 0}),
            "no_match": _d("Where to go when the caller is still not understood.", _NAME),
            "handover": _d("Transfer the call to a human team.", handover),
            "http": _d("Call a business system and store parts of its answer.", http),
            "request_call_permission": _d("Ask the caller for permission to call them back.", permission),
            "send_call_button": _d(
                "Send the caller a WhatsApp call button; its payload comes back with the call it starts.",
                {
                    "anyOf": [
                        _TEXT,
                        {
                            "type": "object",
                            "properties": {"payload": _TEXT, "text": _TEXT},
                            "additionalProperties": False,
                        },
                    ]
                },
            ),
            "llm": _d("Let an LLM hold the conversation here.", llm),
            "end": _d("Hang up after speaking.", {"type": "boolean"}),
            "interruptible": _d("Whether the caller can talk over this node's lines.", {"type": "boolean"}),
        },
        NODE_KEYS,
    )
    faq = _object(
        {
            "name": _d("A short name for the question (shown in logs and tests).", _NAME),
            "examples": _d("Ways callers ask it.", _one_or_many(_NAME)),
            "keywords": _d("Words or short phrases that signal it.", _one_or_many(_NAME)),
            "answer": _d("What the bot answers, before asking its pending question again.", _one_or_many(say_item)),
        },
        FAQ_KEYS,
        ("answer",),
    )
    clock = {"type": ["string", "integer"], "description": 'A clock time in quotes, like "09:00".'}
    hours = _object(
        {"open": _d("Opening time.", clock), "close": _d("Closing time.", clock)},
        HOURS_KEYS,
    )
    return {
        "intent": intent,
        "node": {"anyOf": [node, {"type": "null"}]},
        "say": _one_or_many(say_item),
        "faq": faq,
        "business_hours": hours,
    }


def flow_schema() -> dict[str, Any]:
    """The JSON Schema of a flow file (``wacall flows schema``)."""
    definitions = _definitions()
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$id": SCHEMA_ID,
        "title": "wacall call flow",
        "description": "A call script for the wacall WhatsApp voice agent. See prompts/README.md.",
        "definitions": definitions,
        **_object(
            {
                "name": _d("The flow's name (defaults to the file name).", _NAME),
                "start": _d("The node the call starts at.", _NAME),
                "persona": _d("Who the bot is; every LLM prompt starts with this.", _TEXT),
                "fallback": _d("What to say when the caller was not understood.", _one_or_many(_TEXT)),
                "max_retries": _d(
                    "Misunderstandings in a row before the no_match node.", {"type": "integer", "minimum": 0}
                ),
                "business_hours": _d(
                    "When the business is open: decides am or pm for 'at three', and what 'first thing' or "
                    "'end of the day' mean. Default 09:00 to 17:00.",
                    {"$ref": "#/definitions/business_hours"},
                ),
                "slots": _d(
                    "Slots and their starting values (empty: filled by the system).",
                    {"type": "object", "additionalProperties": _SCALAR},
                ),
                "global_intents": _d(
                    "Intents that work from every node.", {"type": "array", "items": {"$ref": "#/definitions/intent"}}
                ),
                "faq": _d(
                    "Questions callers ask in passing, answered from any question; the bot then asks its "
                    "question again.",
                    {"type": "array", "items": {"$ref": "#/definitions/faq"}},
                ),
                "entry_points": _d(
                    "Where a call starts when it came from a call button or deep link: the payload (exactly, or "
                    "a pattern like 'summer-*') -> the node. Other calls start at `start`.",
                    {"type": "object", "additionalProperties": _NAME},
                ),
                "recording": _d(
                    "Call recording for this flow: `enabled` (default: the server's recordings.enabled) and "
                    "`announce`, a line said before the greeting on every recorded call.",
                    _object(
                        {
                            "enabled": _d("Record this flow's calls (overrides the server).", {"type": "boolean"}),
                            "announce": _d("Said first on a recorded call, without barge-in.", _TEXT),
                        },
                        RECORDING_KEYS,
                    ),
                ),
                "nodes": _d(
                    "The steps of the call, by name.",
                    {"type": "object", "minProperties": 1, "additionalProperties": {"$ref": "#/definitions/node"}},
                ),
            },
            FLOW_KEYS,
            ("start", "nodes"),
        ),
    }


STEP_KEYS = ("caller", "keys", "action_result", "llm", "expect")
EXPECT_KEYS = (
    "say",
    "say_contains",
    "say_matches",
    "silent",
    "node",
    "intent",
    "slots",
    "handover",
    "end",
    "actions",
    "llm",
    "interruptible",
)
CONVERSATION_KEYS = ("name", "caller_info", "slots", "today", "llm_available", "steps")
TESTS_KEYS = ("flow", "today", "caller_info", "conversations")


def flow_test_schema() -> dict[str, Any]:
    """The JSON Schema of a flow's test file (``*.test.yaml``)."""
    expect = _object(
        {
            "say": _d("The bot's whole reply (a text, or the list of lines).", _one_or_many({"type": "string"})),
            "say_contains": _d("Text(s) the reply must contain (any case).", _one_or_many(_TEXT)),
            "say_matches": _d("A regular expression the reply must match.", _TEXT),
            "silent": _d("The bot says nothing this turn.", {"type": "boolean"}),
            "node": _d("The node the call is at after the reply.", _NAME),
            "intent": _d("The intent that matched (null: none).", {"type": ["string", "number", "boolean", "null"]}),
            "slots": _d("Slot values (null: not set).", {"type": "object", "additionalProperties": _SCALAR}),
            "handover": _d("true, false, or the expected queue/skills/reason.", {"type": ["boolean", "object"]}),
            "end": _d("Whether the bot hangs up.", {"type": "boolean"}),
            "actions": _d(
                "Actions in order: http, handover, request_call_permission, send_call_button.", {"type": "array"}
            ),
            "llm": _d("Whether the turn is handed to the LLM.", {"type": "boolean"}),
            "interruptible": _d("Whether the caller may talk over the reply.", {"type": "boolean"}),
        },
        EXPECT_KEYS,
    )
    step = _object(
        {
            "caller": _d("What the caller says.", {"type": ["string", "number", "boolean"]}),
            "keys": _d(
                'Keys the caller presses, as one entry: "1" at a menu, "48291#" for a number.',
                {"type": ["string", "integer"]},
            ),
            "action_result": _d(
                "The business system's answer: ok and data.",
                {
                    "type": "object",
                    "properties": {"ok": {"type": "boolean"}, "data": {}},
                    "additionalProperties": False,
                },
            ),
            "llm": _d(
                "What the LLM says and which tools it calls.",
                {
                    "type": "object",
                    "properties": {"text": {"type": "string"}, "tool_calls": {"type": "array"}},
                    "additionalProperties": False,
                },
            ),
            "expect": _d("What must be true after this step.", expect),
        },
        STEP_KEYS,
    )
    conversation = _object(
        {
            "name": _d("What this conversation checks.", _TEXT),
            "caller_info": _d("Caller details ({{caller.*}}).", {"type": "object"}),
            "slots": _d("Slot values the system provides before the call.", {"type": "object"}),
            "today": _d("The date to pretend it is (YYYY-MM-DD).", {"type": "string"}),
            "llm_available": _d("false: behave as if no LLM were configured.", {"type": "boolean"}),
            "steps": _d(
                "The conversation, in order; a first step without `caller` checks the greeting.",
                {"type": "array", "items": step},
            ),
        },
        CONVERSATION_KEYS,
        ("steps",),
    )
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "wacall flow tests",
        **_object(
            {
                "flow": _d("The flow file (default: this file's name without .test).", _TEXT),
                "today": _d("The date to pretend it is (YYYY-MM-DD).", {"type": "string"}),
                "caller_info": _d("Default caller details for every conversation.", {"type": "object"}),
                "conversations": _d("The test conversations.", {"type": "array", "items": conversation}),
            },
            TESTS_KEYS,
            ("conversations",),
        ),
    }
