"""The few lines an agent reads before picking up a handed-over caller.

The offline summary needs no model, so the console always shows something useful even with no LLM configured
or when the LLM is slow or down: the reason, what the flow already collected, and the caller's last words in
their own phrasing (what they said matters more than what the bot said). An LLM summariser can replace it
through `Summariser`; the runtime should fall back to `build_summary` on any error or timeout.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

MAX_TURN_CHARS = 160


class Summariser(Protocol):
    """An optional LLM summary, e.g. via the OpenAI-compatible client the flow engine already uses."""

    async def __call__(self, reason: str, slots: Mapping[str, Any], transcript: Sequence[tuple[str, str]]) -> str: ...


def build_summary(
    reason: str,
    slots: Mapping[str, Any],
    transcript: Sequence[tuple[str, str]],
    max_turns: int = 3,
) -> str:
    """A short plain paragraph; empty slots are left out, since "order number: None" only wastes a glance."""
    parts: list[str] = []
    reason = reason.strip()
    if reason:
        parts.append(_sentence(reason))
    known = [f"{_label(name)}: {_value(value)}" for name, value in slots.items() if _filled(value)]
    if known:
        parts.append("Known: " + "; ".join(known) + ".")
    said = [text.strip() for who, text in transcript if who == "caller" and text.strip()]
    if said and max_turns > 0:
        quoted = " / ".join(f"“{_clip(text)}”" for text in said[-max_turns:])
        parts.append(f"Caller said: {quoted}")
    return " ".join(parts) or "No details collected before the handover."


def _sentence(text: str) -> str:
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def _label(name: str) -> str:
    return name.replace("_", " ").strip()


def _filled(value: Any) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip())


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value).strip()


def _clip(text: str) -> str:
    """Long rambles get cut at a word boundary: the agent can open the full transcript if they need it."""
    text = " ".join(text.split())
    if len(text) <= MAX_TURN_CHARS:
        return text
    return text[:MAX_TURN_CHARS].rsplit(" ", 1)[0] + "…"
