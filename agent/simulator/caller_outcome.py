"""Did the caller get what they called for? A caller script's `expect` checked against how the call ended.

A task counts as completed only by what the business would see afterwards: the slots the call filled,
the node it ended at (a goodbye, a handover to the right team), the requests sent to the business's
systems and the call-permission requests sent to the caller. What the bot said along the way is not
judged here; turn-taking figures are measured separately, at the caller.

    expect:
      slots: {date: tomorrow, time: "15:30", confirmed: yes}
      node: booked                       # or a list of acceptable end nodes
      handover: repairs                  # the queue of the handover node the call ended at
      request: {method: POST, url: /api/appointments, json: {date: tomorrow}}   # or a list
      permission_request: true
      said: "Your order shipped"         # the bot said a line containing this (or each of a list)

Dates are written relative to the day of the call, since scripts are replayed on any day: `today`,
`tomorrow`, `today+N`, `weekday:friday` (the first Friday after today) and `next:friday` (that one or
the one a week later: "next Friday" is read both ways by people). A time matches on hours and minutes.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

EXPECT_KEYS = frozenset({"slots", "node", "handover", "request", "permission_request", "said"})
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_TIME = re.compile(r"^\d{1,2}:\d{2}(:\d{2})?$")


@dataclass
class CallOutcome:
    """What a call left behind for the business."""

    slots: dict[str, Any] = field(default_factory=dict)
    final_node: str | None = None
    handover_queue: str | None = None  # the queue of the handover node the call ended at, if any
    end_reason: str | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)  # {method, url, json}
    permission_requests: int = 0
    bot_lines: list[str] = field(default_factory=list)  # what the bot said, line by line


def check_expectations(expect: Mapping[str, Any], outcome: CallOutcome, *, today: dt.date) -> list[str]:
    """Every unmet expectation, in words; an empty list means the task was completed."""
    problems: list[str] = []
    unknown = set(expect) - EXPECT_KEYS
    if unknown:
        problems.append(f"unknown expectation(s) {sorted(unknown)}")
    for slot, wanted in (expect.get("slots") or {}).items():
        if slot not in outcome.slots:
            problems.append(f"slot {slot} never filled (wanted {wanted})")
        elif not value_matches(wanted, outcome.slots[slot], today=today):
            problems.append(f"slot {slot} = {outcome.slots[slot]!r}, wanted {wanted}")
    if "node" in expect:
        nodes = _as_list(expect["node"])
        if outcome.final_node not in nodes:
            problems.append(f"ended at node {outcome.final_node}, wanted {' or '.join(map(str, nodes))}")
    if "handover" in expect and outcome.handover_queue != expect["handover"]:
        problems.append(f"handover to {outcome.handover_queue or 'nobody'}, wanted {expect['handover']}")
    for wanted in _as_list(expect.get("request")):
        if not any(request_matches(wanted, sent, today=today) for sent in outcome.requests):
            sent = ", ".join(f"{r['method']} {r['url']}" for r in outcome.requests) or "none"
            problems.append(f"no request like {wanted} (sent: {sent})")
    if "permission_request" in expect and bool(expect["permission_request"]) != (outcome.permission_requests > 0):
        problems.append(f"call-permission requests sent: {outcome.permission_requests}")
    for wanted in _as_list(expect.get("said")):
        if not any(str(wanted).lower() in line.lower() for line in outcome.bot_lines):
            problems.append(f"the bot never said {wanted!r}")
    return problems


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def request_matches(wanted: Mapping[str, Any], sent: Mapping[str, Any], *, today: dt.date) -> bool:
    if "method" in wanted and str(wanted["method"]).upper() != str(sent.get("method", "")).upper():
        return False
    if "url" in wanted and str(wanted["url"]) not in str(sent.get("url", "")):
        return False
    body = sent.get("json")
    for key, value in (wanted.get("json") or {}).items():
        if not isinstance(body, Mapping) or key not in body or not value_matches(value, body[key], today=today):
            return False
    return True


def value_matches(wanted: Any, actual: Any, *, today: dt.date) -> bool:
    """`actual` (a slot or a JSON value) is what the script's `wanted` means, on the day `today`."""
    if isinstance(wanted, bool) or isinstance(actual, bool):
        return _truth(wanted) is not None and _truth(wanted) == _truth(actual)
    if isinstance(wanted, dt.date):
        wanted = wanted.isoformat()
    if isinstance(wanted, str):
        dates = relative_dates(wanted, today)
        if dates is not None:
            return _as_date(actual) in dates
        if _TIME.match(wanted.strip()):
            return _hhmm(str(actual)) == _hhmm(wanted)
    if isinstance(wanted, int | float) and not isinstance(wanted, bool):
        try:
            return float(str(actual).replace(" ", "")) == float(wanted)
        except ValueError:
            return False
    return str(actual).strip().lower() == str(wanted).strip().lower()


def relative_dates(spec: str, today: dt.date) -> set[dt.date] | None:
    """The dates a written date means (see the module docstring); None when `spec` is not a date."""
    text = spec.strip().lower()
    if text == "today":
        return {today}
    if text == "tomorrow":
        return {today + dt.timedelta(days=1)}
    match = re.fullmatch(r"today\s*\+\s*(\d+)", text)
    if match:
        return {today + dt.timedelta(days=int(match.group(1)))}
    match = re.fullmatch(r"(weekday|next):(\w+)", text)
    if match and match.group(2) in WEEKDAYS:
        ahead = (WEEKDAYS.index(match.group(2)) - today.weekday()) % 7 or 7
        first = today + dt.timedelta(days=ahead)
        return {first} if match.group(1) == "weekday" else {first, first + dt.timedelta(days=7)}
    try:
        return {dt.date.fromisoformat(text)}
    except ValueError:
        return None


def _as_date(value: Any) -> dt.date | None:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value)[:10])
    except ValueError:
        return None


def _hhmm(text: str) -> str:
    hours, _, rest = text.strip().partition(":")
    return f"{int(hours):02d}:{rest[:2]}" if hours.isdigit() else text.strip()


def _truth(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("yes", "true", "1"):
        return True
    if text in ("no", "false", "0"):
        return False
    return None


def handover_queue(flow: Any, node: str | None) -> str | None:
    """The team a flow's node hands the call to, if that node is a handover."""
    nodes: Mapping[str, Any] = getattr(flow, "nodes", {}) or {}
    handover = getattr(nodes.get(node or ""), "handover", None)
    return None if handover is None else str(handover.queue)


def reprompt_lines(flow: Any) -> list[str]:
    """Every line a flow says when it did not understand: its fallback and each node's reprompts, cut at the
    first placeholder so a templated reprompt still matches what was said."""
    lines: list[str] = [*getattr(flow, "fallback", [])]
    for node in (getattr(flow, "nodes", {}) or {}).values():
        lines.extend(getattr(node, "reprompt", []) or [])
    out = []
    for line in lines:
        stem = line.split("{{", 1)[0].strip()
        if len(stem) >= 8 and stem not in out:
            out.append(stem)
    return out


def count_reprompts(bot_lines: Sequence[str], flow: Any) -> int:
    stems = [s.lower() for s in reprompt_lines(flow)]
    return sum(1 for line in bot_lines if any(line.strip().lower().startswith(stem) for stem in stems))
