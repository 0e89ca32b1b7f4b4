"""``{{placeholders}}`` in spoken lines, prompts and HTTP requests: find, check and fill them.

One module decides what a placeholder is, so the loader's error columns, the "slot used but
never set" check and the engine's rendering can never disagree. Three kinds exist:
``{{caller.name}}`` (details the runtime knows about the caller), ``{{call.payload}}`` (what
started the call: a call button's or deep link's payload) and ``{{slot_name}}`` (something
the call has learnt).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from agent.dialogue.model import IDENTIFIER_RE

__all__ = [
    "CALL_FIELDS",
    "PLACEHOLDER_RE",
    "Placeholder",
    "TemplateProblem",
    "iso",
    "lookup",
    "parse_template",
    "render",
    "render_prompt",
    "single_placeholder",
]

#: ``{{ caller.name }}``-style placeholders; shared with the engine so validation and
#: rendering can never disagree about what counts as a placeholder.
PLACEHOLDER_RE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_CALLER_RE = re.compile(r"caller\.([A-Za-z_][A-Za-z0-9_]*)")
_CALL_RE = re.compile(r"call\.([A-Za-z_][A-Za-z0-9_]*)")
#: The ``{{call.*}}`` details; unlike the caller's, a fixed set, so a misspelling is caught when the flow loads.
CALL_FIELDS = ("payload", "payload_source")


@dataclass(frozen=True)
class Placeholder:
    """A well-formed placeholder; ``start`` is its index in the text (for error columns)."""

    start: int
    scope: str  # "caller", "call" or "slot"
    name: str


@dataclass(frozen=True)
class TemplateProblem:
    start: int
    message: str


def parse_template(text: str) -> tuple[list[Placeholder], list[TemplateProblem]]:
    """Split a template into usable placeholders and authoring mistakes.

    Mistakes are reported rather than raised so the loader can attach positions and the
    checks can report them for flows built in code too.
    """
    found: list[Placeholder] = []
    problems: list[TemplateProblem] = []
    spans: list[tuple[int, int]] = []
    for match in PLACEHOLDER_RE.finditer(text):
        spans.append((match.start(), match.end()))
        inner = match.group(1)
        caller = _CALLER_RE.fullmatch(inner)
        call = _CALL_RE.fullmatch(inner)
        if caller:
            found.append(Placeholder(match.start(), "caller", caller.group(1)))
        elif call and call.group(1) in CALL_FIELDS:
            found.append(Placeholder(match.start(), "call", call.group(1)))
        elif call:
            problems.append(
                TemplateProblem(
                    match.start(),
                    f"unknown placeholder {match.group(0)}; the call's details are "
                    + " and ".join(f"{{{{call.{name}}}}}" for name in CALL_FIELDS),
                )
            )
        elif IDENTIFIER_RE.fullmatch(inner):
            found.append(Placeholder(match.start(), "slot", inner))
        else:
            problems.append(
                TemplateProblem(
                    match.start(),
                    f"unknown placeholder {match.group(0)}; placeholders look like {{{{caller.name}}}} "
                    "or {{slot_name}} (one word: letters, digits and _)",
                )
            )
    for index, ch in enumerate(text):
        if ch in "{}" and not any(start <= index < end for start, end in spans):
            problems.append(
                TemplateProblem(
                    index, f"stray '{ch}'; placeholders use double braces, like {{{{caller.name}}}} or {{{{date}}}}"
                )
            )
            break
    return found, problems


def lookup(inner: str, context: Mapping[str, Mapping[str, Any]]) -> Any:
    """The value a placeholder's inside (``caller.name`` / ``slot``) names, or ``None``."""
    scope, dot, key = inner.strip().partition(".")
    if dot:
        return context.get(scope, {}).get(key)
    return context.get("slots", {}).get(scope)


def single_placeholder(text: str) -> str | None:
    """The inside of ``text`` when it is exactly one placeholder, so a request body field
    ``"{{party_size}}"`` can keep the slot's type instead of becoming text."""
    match = PLACEHOLDER_RE.fullmatch(text.strip())
    return match.group(1) if match else None


def _plain(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value).strip()


def render(
    template: str,
    context: Mapping[str, Mapping[str, Any]],
    *,
    speak: Callable[[Any], str] | None = None,
    tidy: bool = True,
) -> str:
    """Fill ``{{caller.name}}`` / ``{{slot}}`` placeholders, never failing on missing data.

    Slots are looked up in ``context["slots"]``; values become text through ``speak`` (so
    dates and times read naturally, or are URL-quoted in a URL). A missing value becomes
    empty and, with ``tidy``, the surrounding text is tidied ("Hi {{caller.name}}," -> "Hi,")
    because a caller hearing "Hi none" or a crashed call is worse than a slightly plainer
    sentence. ``tidy=False`` is for URLs and
    request bodies, where whitespace and punctuation are data.
    """
    to_text = speak or _plain

    def fill(match: re.Match[str]) -> str:
        value = lookup(match.group(1), context)
        return "" if value is None else to_text(value)

    text = PLACEHOLDER_RE.sub(fill, template)
    if not tidy:
        return text
    text = re.sub(r"\s+", " ", text)  # block scalars carry newlines TTS would pause on
    text = re.sub(r" +([,.!?;:])", r"\1", text)
    text = re.sub(r"^[\s,;:]+", "", text)
    text = re.sub(r",(?=[.!?])", "", text)
    return text.strip()


def render_prompt(
    template: str,
    context: Mapping[str, Mapping[str, Any]],
    *,
    speak: Callable[[Any], str] | None = None,
) -> tuple[str, dict[str, Any]]:
    """Render LLM instructions without putting caller-controlled text in them.

    Each placeholder becomes a reference to the call data (``the caller's name is call data
    "caller.name"``) and its value goes into the returned dict, which the runtime sends as a separate,
    JSON-encoded, data-only message (``LlmRequest.call_data``). A caller who sets their WhatsApp name to
    "Ignore all previous instructions…" then gives the model a name to read, not an order to follow.
    """
    to_text = speak or _plain
    data: dict[str, Any] = {}

    def refer(match: re.Match[str]) -> str:
        inner = match.group(1).strip()
        value = lookup(inner, context)
        key = inner if "." in inner else f"slots.{inner}"
        data[key] = None if value is None else to_text(value)
        return f'call data "{key}"'

    text = PLACEHOLDER_RE.sub(refer, template)
    return text, data


def iso(value: Any) -> Any:
    """JSON-friendly form of a slot value (dates and times as ISO text) for HTTP bodies."""
    if isinstance(value, dt.time):
        return value.strftime("%H:%M")
    if isinstance(value, dt.date):
        return value.isoformat()
    return value
