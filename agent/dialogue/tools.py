"""The LLM side of an LLM node: tool schemas offered, chat history, and reading calls back.

Pure helpers kept out of the engine's state machine. Tools are OpenAI function schemas with
enums wherever the flow knows the valid values (transitions, settable slots, queues), so a
model is steered away from inventing a node or a team; the engine still validates every
call, because models do not always follow schemas.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from agent.dialogue.effects import ToolCallLike
from agent.dialogue.model import LlmConfig

__all__ = ["chat_messages", "dig", "tool_arguments", "tool_schemas"]

log = logging.getLogger(__name__)

_PARAM_SCHEMAS: dict[str, dict[str, Any]] = {
    "yes_no": {"type": "boolean"},
    "number": {"type": "number"},
    "date": {"type": "string", "description": "A date as YYYY-MM-DD."},
    "time": {"type": "string", "description": "A time as HH:MM (24 hours)."},
    "text": {"type": "string"},
}


def _function(name: str, description: str, properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": properties,
                "required": list(properties),
                "additionalProperties": False,
            },
        },
    }


def tool_schemas(llm: LlmConfig, queues: Iterable[str]) -> list[dict[str, Any]]:
    """Built-in tools (``end_call``, ``handover``; ``set_slot`` and ``goto`` when the node
    allows any) followed by the node's declared tools."""
    queue: dict[str, Any] = {"type": "string", "description": "The team to transfer to."}
    known = sorted(queues)
    if known:
        queue["enum"] = known
    tools = [
        _function("end_call", "End the call. Say goodbye in your reply before calling this.", {}),
        _function(
            "handover",
            "Transfer the caller to a human agent when they ask for one or you cannot help.",
            {"queue": queue, "reason": {"type": "string", "description": "One sentence for the agent."}},
        ),
    ]
    if llm.slots:
        tools.append(
            _function(
                "set_slot",
                "Remember a detail the caller gave you.",
                {
                    "name": {"type": "string", "enum": list(llm.slots)},
                    "value": {"type": ["string", "number", "boolean"]},
                },
            )
        )
    if llm.transitions:
        tools.append(
            _function(
                "goto",
                "Move the conversation to another step of the script.",
                {"node": {"type": "string", "enum": list(llm.transitions)}},
            )
        )
    for declared in llm.tools:
        properties = {
            name: {**_PARAM_SCHEMAS[p.type], **({"description": p.description} if p.description else {})}
            for name, p in declared.parameters.items()
        }
        tools.append(_function(declared.name, declared.description or declared.name.replace("_", " "), properties))
    return tools


def chat_messages(history: Iterable[tuple[str, str]]) -> list[dict[str, str]]:
    """The call so far as OpenAI chat messages; consecutive lines of one speaker are joined,
    as the caller heard them as one turn."""
    messages: list[dict[str, str]] = []
    for who, text in history:
        role = "assistant" if who == "bot" else "user"
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"] += " " + text
        else:
            messages.append({"role": role, "content": text})
    return messages


def tool_arguments(call: ToolCallLike) -> dict[str, Any] | None:
    """A call's arguments as a dict (clients differ: some pass the raw JSON text), or
    ``None`` with a warning when they cannot be read."""
    args: Any = call.arguments
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError:
            log.warning("LLM tool '%s' sent arguments that are not JSON; ignored", call.name)
            return None
    if args is None:
        args = {}
    if not isinstance(args, dict):
        log.warning("LLM tool '%s' sent arguments that are not an object; ignored", call.name)
        return None
    return args


def dig(data: Any, path: str) -> tuple[bool, Any]:
    """Follow a dotted path (``customer.name``, ``items.0.id``) into decoded JSON; a missing
    or null value counts as not found, so the flow takes its error branch."""
    current = data
    for part in path.split("."):
        if isinstance(current, Mapping) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.lstrip("-").isdigit() and -len(current) <= int(part) < len(current):
            current = current[int(part)]
        else:
            return False, None
    return current is not None, current
