"""JSON Schemas for flow files and their test files, for editors.

With the schema, VS Code's YAML extension autocompletes keys, shows what each one means on
hover and underlines typos while the author types, before ``wacall flows check`` runs.

The flow schema is generated from the models in :mod:`agent.dialogue.model`, which are the
authored shape (aliases are the YAML keys; shorthand forms are declared as each validator's
input type), so a key added to a model is in the schema without touching this file. A test
keeps it equal to what the loader accepts. Names and phrases accept numbers and true/false
too: YAML turns an unquoted ``no`` into a boolean and the loader deliberately takes it as the word.

The test-file schema is written out below: flow tests are a small fixed format of their own.
Draft-07 layout (``definitions``), because that is what editor tooling supports best.
"""

from __future__ import annotations

from typing import Any

from agent.dialogue.model import Flow

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


#: Definitions under the names editors and older tooling know them by.
_NAMES = {"Node": "node", "Intent": "intent", "FaqEntry": "faq", "BusinessHours": "business_hours"}


def _draft7(schema: Any) -> Any:
    """pydantic's ``$defs`` as draft-07 ``definitions``, under stable lower-case names."""
    if isinstance(schema, dict):
        out = {("definitions" if key == "$defs" else key): _draft7(value) for key, value in schema.items()}
        if "definitions" in out:
            out["definitions"] = {_NAMES.get(name, name): value for name, value in out["definitions"].items()}
        if "$ref" in out:
            name = out["$ref"].rsplit("/", 1)[-1]
            out["$ref"] = f"#/definitions/{_NAMES.get(name, name)}"
        return out
    if isinstance(schema, list):
        return [_draft7(item) for item in schema]
    return schema


def flow_schema(shape: type[Flow] = Flow) -> dict[str, Any]:
    """The JSON Schema of a flow file (``wacall flows schema``), generated from :class:`Flow`
    (``shape``: a variant of it, for tests)."""
    generated = shape.model_json_schema(by_alias=True, mode="validation")
    generated.pop("title", None)
    generated.pop("description", None)
    schema = _draft7(generated)
    # A node with nothing under it (``b:``) is a valid stub while a flow is being written.
    node = schema["properties"]["nodes"]["additionalProperties"]["$ref"].rsplit("/", 1)[-1]
    schema["definitions"][node] = {"anyOf": [schema["definitions"][node], {"type": "null"}]}
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$id": SCHEMA_ID,
        "title": "wacall call flow",
        "description": "A call script for the wacall WhatsApp voice agent. See prompts/README.md.",
        **schema,
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
